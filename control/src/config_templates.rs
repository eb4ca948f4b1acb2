//! `outpost templates ...`: the template commands' arguments (parsed with the rest in
//! `config.rs`).

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum TemplatesCmd {
    /// Upload a directory (template.toml plus files) as a new version.
    Push {
        dir: PathBuf,
        /// Template name (default: the directory's name).
        #[arg(long)]
        name: Option<String>,
        /// Keep the current active version.
        #[arg(long)]
        no_activate: bool,
        /// The organization of a new template (default: `default`).
        #[arg(long = "org")]
        organization: Option<String>,
    },
    /// Restrict a template to groups (`--groups devs,ops`; `--groups ''` opens it to its
    /// whole organization again).
    Groups {
        name: String,
        #[arg(long)]
        groups: String,
    },
    List,
    Show {
        name: String,
    },
    /// Make another version the active one (admins): new workspaces use it and `outpost update`
    /// moves existing ones to it; activating an older version rolls back.
    Activate {
        name: String,
        /// The version number (`outpost templates show NAME` lists them).
        #[arg(value_name = "VERSION")]
        number: i64,
    },
    /// Change a template's schedule (admins). Durations like `8h`, `30m`, `7d`; `0` or `off`
    /// turns a setting off.
    Edit(TemplateEditArgs),
}

#[derive(Args, Debug, Default)]
pub struct TemplateEditArgs {
    pub name: String,
    /// Time without activity before a workspace is stopped.
    #[arg(long, value_name = "DURATION")]
    pub default_autostop: Option<String>,
    /// How far activity pushes a workspace's deadline (default 1h).
    #[arg(long, value_name = "DURATION")]
    pub activity_bump: Option<String>,
    /// Days on which workspaces must stop in their owner's quiet hours: daily, saturday,
    /// sunday or off.
    #[arg(long, value_name = "DAYS")]
    pub autostop_requirement: Option<String>,
    /// Every how many weeks (1-16; 1 with daily).
    #[arg(long, value_name = "N")]
    pub autostop_requirement_weeks: Option<u32>,
    /// Days on which autostart may start workspaces (`mon,tue,wed,thu,fri`, or `all`).
    #[arg(long, value_name = "DAYS")]
    pub autostart_days: Option<String>,
    #[arg(long, value_name = "BOOL")]
    pub allow_user_autostart: Option<bool>,
    #[arg(long, value_name = "BOOL")]
    pub allow_user_autostop: Option<bool>,
    /// Time in `failed` before a workspace is stopped.
    #[arg(long, value_name = "DURATION")]
    pub failure_cleanup: Option<String>,
    /// Time without any use before a workspace becomes dormant.
    #[arg(long, value_name = "DURATION")]
    pub dormancy_threshold: Option<String>,
    /// Time dormant before a workspace is deleted, home and all.
    #[arg(long, value_name = "DURATION")]
    pub dormancy_auto_deletion: Option<String>,
}
