//! `outpost groups`, `outpost orgs`, `outpost quotas`, `outpost replicas`.

use anyhow::Context;
use outpost_api::*;

use super::ctx::*;
use crate::config::*;

fn enc(s: &str) -> String {
    outpost_api::percent_encode(s)
}

fn print_group(g: &Group) {
    println!(
        "{}/{}  budget {}  ({})  members: {}",
        g.organization,
        g.name,
        g.quota_budget
            .map(|b| b.to_string())
            .unwrap_or_else(|| "none".into()),
        g.source,
        if g.members.is_empty() {
            "-".to_string()
        } else {
            g.members.join(", ")
        }
    );
}

fn budget(s: &str) -> anyhow::Result<Option<i64>> {
    if s == "none" {
        return Ok(None);
    }
    Ok(Some(s.parse().with_context(|| {
        format!("{s:?} is not a number of cost units (or none)")
    })?))
}

pub(crate) async fn groups(ctx: &Ctx, cmd: GroupsCmd) -> anyhow::Result<()> {
    let c = ctx.client()?;
    match cmd {
        GroupsCmd::List => {
            let gs: Vec<Group> = c.get("/api/v1/groups").await?;
            ctx.print(&gs, || gs.iter().for_each(print_group))
        }
        GroupsCmd::Create {
            name,
            budget,
            organization,
        } => {
            let g: Group = c
                .post(
                    "/api/v1/groups",
                    &CreateGroupRequest {
                        name,
                        organization,
                        quota_budget: budget,
                    },
                )
                .await?;
            ctx.print(&g, || print_group(&g))
        }
        GroupsCmd::Delete { name } => {
            let g: Group = c.delete(&format!("/api/v1/groups/{}", enc(&name))).await?;
            ctx.print(&g, || println!("deleted group {}", g.name))
        }
        GroupsCmd::Add { name, users } | GroupsCmd::Remove { name, users } if users.is_empty() => {
            anyhow::bail!("name the users to add to or remove from {name}")
        }
        GroupsCmd::Add { name, users } => {
            let mut g = None;
            for u in users {
                let r: Group = c
                    .post(
                        &format!("/api/v1/groups/{}/members", enc(&name)),
                        &MemberRequest { username: u },
                    )
                    .await?;
                g = Some(r);
            }
            let g = g.context("no users")?;
            ctx.print(&g, || print_group(&g))
        }
        GroupsCmd::Remove { name, users } => {
            let mut g = None;
            for u in users {
                let r: Group = c
                    .delete(&format!(
                        "/api/v1/groups/{}/members/{}",
                        enc(&name),
                        enc(&u)
                    ))
                    .await?;
                g = Some(r);
            }
            let g = g.context("no users")?;
            ctx.print(&g, || print_group(&g))
        }
        GroupsCmd::Budget { name, budget: b } => {
            let g: Group = c
                .put(
                    &format!("/api/v1/groups/{}/budget", enc(&name)),
                    &SetBudgetRequest {
                        quota_budget: budget(&b)?,
                    },
                )
                .await?;
            ctx.print(&g, || print_group(&g))
        }
    }
}

pub(crate) async fn orgs(ctx: &Ctx, cmd: OrgsCmd) -> anyhow::Result<()> {
    let c = ctx.client()?;
    let show = |o: &Organization| println!("{}  members: {}", o.name, o.members.join(", "));
    match cmd {
        OrgsCmd::List => {
            let os: Vec<Organization> = c.get("/api/v1/organizations").await?;
            ctx.print(&os, || os.iter().for_each(show))
        }
        OrgsCmd::Create { name } => {
            let o: Organization = c
                .post("/api/v1/organizations", &CreateOrganizationRequest { name })
                .await?;
            ctx.print(&o, || show(&o))
        }
        OrgsCmd::Add { name, users } | OrgsCmd::Remove { name, users } if users.is_empty() => {
            anyhow::bail!("name the users to add to or remove from {name}")
        }
        OrgsCmd::Add { name, users } => {
            let mut last = None;
            for u in users {
                let o: Organization = c
                    .post(
                        &format!("/api/v1/organizations/{}/members", enc(&name)),
                        &MemberRequest { username: u },
                    )
                    .await?;
                last = Some(o);
            }
            let o = last.context("no users")?;
            ctx.print(&o, || show(&o))
        }
        OrgsCmd::Remove { name, users } => {
            let mut last = None;
            for u in users {
                let o: Organization = c
                    .delete(&format!(
                        "/api/v1/organizations/{}/members/{}",
                        enc(&name),
                        enc(&u)
                    ))
                    .await?;
                last = Some(o);
            }
            let o = last.context("no users")?;
            ctx.print(&o, || show(&o))
        }
    }
}

pub(crate) async fn quotas(ctx: &Ctx, cmd: QuotasCmd) -> anyhow::Result<()> {
    let c = ctx.client()?;
    match cmd {
        QuotasCmd::Show => {
            let q: QuotaUsage = c.get("/api/v1/quotas/me").await?;
            ctx.print(&q, || {
                println!(
                    "Workspaces  {} of {}",
                    q.workspaces,
                    q.workspaces_limit
                        .map(|l| l.to_string())
                        .unwrap_or_else(|| "no limit".into())
                );
                println!(
                    "Cost units  {} in use of {}",
                    q.cost_in_use,
                    q.budget
                        .map(|b| format!("a budget of {b}"))
                        .unwrap_or_else(|| "no budget (no limit)".into())
                );
            })
        }
        QuotasCmd::Set {
            workspaces_per_user,
        } => {
            let q: QuotaSettings = c
                .put(
                    "/api/v1/quotas",
                    &QuotaSettings {
                        workspaces_per_user: budget(&workspaces_per_user)?,
                    },
                )
                .await?;
            ctx.print(&q, || {
                println!("workspaces per user: {:?}", q.workspaces_per_user)
            })
        }
    }
}

pub(crate) async fn replicas(ctx: &Ctx) -> anyhow::Result<()> {
    let rs: Vec<Replica> = ctx.client()?.get("/api/v1/replicas").await?;
    ctx.print(&rs, || {
        for r in &rs {
            println!(
                "{}{}  {}  api {}  agents {}  replicas {}  v{}",
                r.id,
                if r.leader { " (leader)" } else { "" },
                r.hostname,
                r.api_url,
                r.agent_url,
                r.replica_url,
                r.version
            );
        }
    })
}
