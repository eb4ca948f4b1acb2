//! The `docker` provisioner: a workspace is a container with its home on a named volume,
//! driven through the Docker Engine API (bollard; `DOCKER_HOST` and the usual TLS variables
//! choose the engine, which may be another machine's).
//!
//! Start: the image (pulled when missing, progress in the build log), the home volume
//! (persistent, made once), a fresh container (ephemeral; one an earlier try left is removed
//! first), the archive of `archive.rs` uploaded into it, then the container starts with the
//! agent as its main process under Docker's init. Stop: stop and remove the container. Delete:
//! the container, then the volume, last. Every object carries the `outpost.*` labels; delete
//! also removes whatever else carries the workspace's id (what a crashed build left).

pub mod archive;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use bollard::models::{ContainerCreateBody, HostConfig, VolumeCreateRequest};
use bollard::query_parameters as q;
use bollard::Docker;
use futures_util::StreamExt;
use outpost_api::*;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, OnceCell};

use super::{workspace_env, JobLog};
use crate::server::host_of;
use crate::template::settings::{self, Resolved};

pub const LABEL_WORKSPACE_ID: &str = "outpost.workspace_id";
pub const LABEL_WORKSPACE: &str = "outpost.workspace";
pub const LABEL_OWNER: &str = "outpost.owner";
pub const LABEL_TEMPLATE: &str = "outpost.template";
pub const LABEL_ROLE: &str = "outpost.role";

/// The network every workspace container joins: a bridge with inter-container traffic off, so
/// one workspace cannot reach another's ports (they reach control and the outside through the
/// host).
pub const NETWORK: &str = "outpost-workspaces";
const ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";

/// The host name containers reach control's agent API at (Docker's `host-gateway`).
pub const HOST_GATEWAY_NAME: &str = "host.docker.internal";

pub struct DockerProvisioner {
    pub agent_binary: Option<PathBuf>,
    /// The agent API URL containers use; default: control's, with its host replaced by
    /// `host.docker.internal` (the Docker host's gateway address).
    pub agent_url: Option<String>,
    pub stop_grace: Duration,
    pub engine: OnceCell<Docker>,
    /// The id of the [`NETWORK`] in use.
    network: OnceCell<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct DockerState {
    #[serde(default)]
    container: Option<String>,
}

fn container_name(id: &str) -> String {
    format!("outpost-{id}")
}

fn volume_name(id: &str) -> String {
    format!("outpost-{id}-home")
}

fn not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

/// Is the engine on this machine (so a host path may be mounted)?
fn engine_is_local() -> bool {
    docker_host().starts_with("unix://")
}

impl DockerProvisioner {
    pub fn new(
        agent_binary: Option<PathBuf>,
        agent_url: Option<String>,
        stop_grace: Duration,
    ) -> Self {
        DockerProvisioner {
            agent_binary,
            agent_url,
            stop_grace,
            engine: OnceCell::new(),
            network: OnceCell::new(),
        }
    }

    /// The workspaces' network, made when missing. Servers racing to make it may make two of
    /// the same name (Docker allows that): all settle on the lowest id and remove the others.
    async fn network(&self, docker: &Docker) -> anyhow::Result<String> {
        self.network
            .get_or_try_init(|| async {
                if networks_named(docker).await?.is_empty() {
                    let made = docker
                        .create_network(bollard::models::NetworkCreateRequest {
                            name: NETWORK.to_string(),
                            driver: Some("bridge".into()),
                            options: Some(HashMap::from([(
                                ICC_OPTION.to_string(),
                                "false".to_string(),
                            )])),
                            labels: Some(HashMap::from([(
                                LABEL_ROLE.to_string(),
                                "network".to_string(),
                            )])),
                            ..Default::default()
                        })
                        .await;
                    if let Err(e) = made {
                        tracing::debug!(error = %e, "creating the workspaces' network");
                    }
                }
                let ours = networks_named(docker).await?;
                let Some(keep) = ours.first() else {
                    bail!("could not make the Docker network {NETWORK}");
                };
                for extra in &ours[1..] {
                    if let Some(id) = &extra.id {
                        let _ = docker.remove_network(id).await;
                    }
                }
                let icc = keep
                    .options
                    .as_ref()
                    .and_then(|o| o.get(ICC_OPTION))
                    .map(String::as_str);
                if icc != Some("false") {
                    bail!("the Docker network {NETWORK} lets containers reach each other; remove it (docker network rm {NETWORK}) and Outpost makes it again without");
                }
                keep.id.clone().context("a Docker network without an id")
            })
            .await
            .cloned()
    }

    async fn engine(&self) -> anyhow::Result<&Docker> {
        self.engine
            .get_or_try_init(|| async {
                let connected = async {
                    Docker::connect_with_defaults()?.negotiate_version().await
                };
                connected.await.with_context(|| {
                    format!(
                        "cannot reach Docker at {}: start dockerd there, or set DOCKER_HOST (and DOCKER_TLS_VERIFY, DOCKER_CERT_PATH) for the provisioner",
                        docker_host()
                    )
                })
            })
            .await
    }

    pub async fn run(
        &self,
        job: &ProvisionerJob,
        log: &JobLog,
        cancel: watch::Receiver<bool>,
    ) -> anyhow::Result<(Vec<Resource>, serde_json::Value)> {
        let docker = self.engine().await?;
        let id = &job.workspace_id;
        let cname = container_name(id);
        let vname = volume_name(id);
        match job.transition {
            Transition::Start => {
                let s = settings::resolve(&job.manifest.provisioner_settings, &job.parameters)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                self.ensure_image(docker, &s.image, log).await?;
                if *cancel.borrow() {
                    bail!("canceled before start");
                }
                if self
                    .remove_container(docker, &cname, Duration::ZERO)
                    .await?
                {
                    log.info(
                        "provision",
                        format!("removed container {cname} left by an earlier try"),
                    )
                    .await;
                }
                self.ensure_volume(docker, job, &vname, log).await?;
                self.create_container(docker, job, &s, &cname, &vname, log)
                    .await?;
                docker
                    .start_container(&cname, None::<q::StartContainerOptions>)
                    .await
                    .with_context(|| format!("starting container {cname}"))?;
                log.info(
                    "agent",
                    format!("started container {cname}; waiting for its agent to connect"),
                )
                .await;
                Ok((
                    vec![
                        container_resource(&cname, &s),
                        volume_resource(&vname, &s.user),
                    ],
                    serde_json::to_value(DockerState {
                        container: Some(cname),
                    })?,
                ))
            }
            Transition::Stop => {
                log.info("agent", format!("stopping container {cname}"))
                    .await;
                self.remove_container(docker, &cname, self.stop_grace)
                    .await?;
                log.info(
                    "provision",
                    format!("removed container {cname}; volume {vname} is kept"),
                )
                .await;
                let user = settings::resolve(&job.manifest.provisioner_settings, &job.parameters)
                    .map(|s| s.user)
                    .unwrap_or_else(|_| settings::DEFAULT_USER.into());
                Ok((
                    vec![volume_resource(&vname, &user)],
                    serde_json::to_value(DockerState::default())?,
                ))
            }
            Transition::Delete => {
                self.remove_container(docker, &cname, self.stop_grace)
                    .await?;
                // Whatever else carries the workspace's id: what a crashed build left.
                let filters = HashMap::from([(
                    "label".to_string(),
                    vec![format!("{LABEL_WORKSPACE_ID}={id}")],
                )]);
                let stray = docker
                    .list_containers(Some(q::ListContainersOptions {
                        all: true,
                        filters: Some(filters.clone()),
                        ..Default::default()
                    }))
                    .await?;
                for c in stray {
                    if let Some(cid) = c.id {
                        self.remove_container(docker, &cid, Duration::ZERO).await?;
                    }
                }
                log.info("provision", format!("removed container {cname}"))
                    .await;
                let mut volumes = vec![vname.clone()];
                if let Some(vs) = docker
                    .list_volumes(Some(q::ListVolumesOptions {
                        filters: Some(filters),
                    }))
                    .await?
                    .volumes
                {
                    volumes.extend(vs.into_iter().map(|v| v.name));
                }
                volumes.sort();
                volumes.dedup();
                for v in volumes {
                    match docker
                        .remove_volume(&v, Some(q::RemoveVolumeOptions { force: true }))
                        .await
                    {
                        Ok(()) => log.info("provision", format!("removed volume {v}")).await,
                        Err(e) if not_found(&e) => {}
                        Err(e) => return Err(e).with_context(|| format!("removing volume {v}")),
                    }
                }
                Ok((Vec::new(), serde_json::Value::Null))
            }
        }
    }

    async fn ensure_image(&self, docker: &Docker, image: &str, log: &JobLog) -> anyhow::Result<()> {
        match docker.inspect_image(image).await {
            Ok(_) => {
                log.info("provision", format!("image {image} is present"))
                    .await;
                return Ok(());
            }
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(e).with_context(|| format!("inspecting image {image}")),
        }
        log.info("provision", format!("pulling image {image}"))
            .await;
        // NAME:TAG, NAME (latest) or NAME@sha256:DIGEST (pulled as written).
        let (name, tag) = match image.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
            _ if image.contains('@') => (image.to_string(), None),
            Some((n, t)) => (n.to_string(), Some(t.to_string())),
            None => (image.to_string(), Some("latest".to_string())),
        };
        let mut pull = docker.create_image(
            Some(q::CreateImageOptions {
                from_image: Some(name),
                tag,
                ..Default::default()
            }),
            None,
            None,
        );
        let mut last = String::new();
        while let Some(item) = pull.next().await {
            match item {
                Ok(info) => {
                    if let Some(err) = info.error_detail.and_then(|d| d.message) {
                        bail!("image {image} could not be pulled: {err}. Build it on the Docker host (see templates/docker/) or fix `image` in the template");
                    }
                    let line = [info.id.unwrap_or_default(), info.status.unwrap_or_default()]
                        .join(" ")
                        .trim()
                        .to_string();
                    if !line.is_empty() && line != last {
                        log.info("pull", line.clone()).await;
                        last = line;
                    }
                }
                Err(e) => {
                    // The progress stream can break after the pull is done ("bytes remaining
                    // on stream", seen in CI): what counts is whether the image is there.
                    if docker.inspect_image(image).await.is_ok() {
                        log.info(
                            "pull",
                            format!(
                                "the pull's progress stream ended early ({}); the image is there",
                                docker_error_text(&e)
                            ),
                        )
                        .await;
                        return Ok(());
                    }
                    bail!(
                        "image {image} is not on the Docker host and could not be pulled: {}. Build it there (see templates/docker/) or fix `image` in the template",
                        docker_error_text(&e)
                    )
                }
            }
        }
        docker
            .inspect_image(image)
            .await
            .with_context(|| format!("image {image} is still missing after the pull"))?;
        Ok(())
    }

    async fn ensure_volume(
        &self,
        docker: &Docker,
        job: &ProvisionerJob,
        vname: &str,
        log: &JobLog,
    ) -> anyhow::Result<()> {
        match docker.inspect_volume(vname).await {
            Ok(v) => {
                if v.labels.get(LABEL_WORKSPACE_ID) != Some(&job.workspace_id) {
                    bail!("a volume named {vname} exists that is not this workspace's home; remove it or rename it");
                }
                log.info("provision", format!("home (persistent): volume {vname}"))
                    .await;
                Ok(())
            }
            Err(e) if not_found(&e) => {
                docker
                    .create_volume(VolumeCreateRequest {
                        name: Some(vname.to_string()),
                        labels: Some(labels(job, "home")),
                        ..Default::default()
                    })
                    .await
                    .with_context(|| format!("creating volume {vname}"))?;
                log.info(
                    "provision",
                    format!("home (persistent): created volume {vname}"),
                )
                .await;
                Ok(())
            }
            Err(e) => Err(e).with_context(|| format!("inspecting volume {vname}")),
        }
    }

    async fn create_container(
        &self,
        docker: &Docker,
        job: &ProvisionerJob,
        s: &Resolved,
        cname: &str,
        vname: &str,
        log: &JobLog,
    ) -> anyhow::Result<()> {
        let bundle = job
            .bootstrap
            .as_ref()
            .context("start job without a bootstrap bundle")?;
        let mut bundle = bundle.clone();
        bundle.agent_url = self.container_agent_url(&bundle.agent_url);
        if let Some(h) = host_of(&bundle.agent_url)
            .filter(|h| h == "127.0.0.1" || h == "localhost" || h == "::1")
        {
            log.line("provision", "warn", format!("agents reach control at {h}, which is the container itself: start the server with --docker-agent-url (and --agent-listen on the Docker bridge)")).await;
        }
        let bin = super::local::find_agent_binary(self.agent_binary.as_deref())?;
        let network = self.network(docker).await?;
        let mount_agent = engine_is_local();
        let home = format!("/home/{}", s.user);
        let mut binds = vec![format!("{vname}:{home}")];
        if mount_agent {
            binds.push(format!("{}:{}:ro", bin.display(), archive::AGENT_PATH));
        }
        let mut env: Vec<String> = workspace_env::identity(job)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        env.extend([
            format!("HOME={home}"),
            format!("USER={}", s.user),
            format!("LOGNAME={}", s.user),
            format!("{TEMPLATE_DIR_ENV}={}", archive::TEMPLATE_DIR),
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            "LANG=C.UTF-8".to_string(),
        ]);
        let body = ContainerCreateBody {
            image: Some(s.image.clone()),
            user: Some(format!("{}:{}", s.uid, s.uid)),
            hostname: Some(job.workspace_name.chars().take(63).collect()),
            cmd: Some(vec![
                archive::AGENT_PATH.to_string(),
                "--bootstrap-file".into(),
                format!("{}/bootstrap.json", archive::RUN_DIR),
                "--state-dir".into(),
                format!("{}/agent", archive::RUN_DIR),
            ]),
            entrypoint: Some(Vec::new()),
            env: Some(env),
            working_dir: Some(home.clone()),
            labels: Some(labels(job, "workspace")),
            host_config: Some(HostConfig {
                binds: Some(binds),
                init: Some(true),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges".into()]),
                memory: s.memory_bytes,
                memory_swap: s.memory_bytes,
                nano_cpus: s.nano_cpus,
                pids_limit: Some(4096),
                extra_hosts: Some(vec![format!("{HOST_GATEWAY_NAME}:host-gateway")]),
                network_mode: Some(network),
                ..Default::default()
            }),
            ..Default::default()
        };
        docker
            .create_container(
                Some(q::CreateContainerOptions {
                    name: Some(cname.to_string()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "creating container {cname} from {}: {}",
                    s.image,
                    docker_error_text(&e)
                )
            })?;

        // The image's accounts, with the workspace user added.
        let passwd = self.read_file(docker, cname, "/etc/passwd").await?;
        let group = self
            .read_file(docker, cname, "/etc/group")
            .await
            .unwrap_or_default();
        let shell = if self.read_file(docker, cname, "/bin/bash").await.is_ok() {
            "/bin/bash"
        } else {
            "/bin/sh"
        };
        let (passwd, group) = archive::account_lines(&passwd, &group, &s.user, s.uid, shell)?;
        let mut a = archive::Archive::new();
        if let Some(p) = passwd {
            a.file("etc/passwd", 0, 0o644, p.as_bytes())?;
        }
        if let Some(g) = group {
            a.file("etc/group", 0, 0o644, g.as_bytes())?;
        }
        a.dir(&home[1..], s.uid, 0o700)?;
        a.dir(archive::OPT, 0, 0o755)?;
        a.dir(&format!("{}/bin", archive::OPT), 0, 0o755)?;
        if !mount_agent {
            let bytes = tokio::fs::read(&bin)
                .await
                .with_context(|| format!("reading {}", bin.display()))?;
            a.file(&archive::AGENT_PATH[1..], 0, 0o755, &bytes)?;
        }
        a.dir(&archive::RUN_DIR[1..], s.uid, 0o700)?;
        a.file(
            &format!("{}/bootstrap.json", &archive::RUN_DIR[1..]),
            s.uid,
            0o600,
            &serde_json::to_vec(&bundle)?,
        )?;
        a.template(&job.files)?;
        let tar = a.finish()?;
        docker
            .upload_to_container(
                cname,
                Some(q::UploadToContainerOptions {
                    path: "/".into(),
                    ..Default::default()
                }),
                bollard::body_full(tar.into()),
            )
            .await
            .with_context(|| format!("copying the agent's files into {cname}"))?;
        log.info(
            "provision",
            format!(
                "container {cname} (ephemeral): image {}, user {} (uid {}), cpus {}, memory {}",
                s.image,
                s.user,
                s.uid,
                s.nano_cpus
                    .map(|n| format!("{}", n as f64 / 1e9))
                    .unwrap_or_else(|| "unlimited".into()),
                s.memory_bytes
                    .map(|m| format!("{} MiB", m >> 20))
                    .unwrap_or_else(|| "unlimited".into()),
            ),
        )
        .await;
        Ok(())
    }

    async fn read_file(&self, docker: &Docker, cname: &str, path: &str) -> anyhow::Result<String> {
        let mut stream = docker.download_from_container(
            cname,
            Some(q::DownloadFromContainerOptions { path: path.into() }),
        );
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.with_context(|| format!("reading {path} in {cname}"))?);
            if bytes.len() > 16 << 20 {
                bail!("{path} in {cname} is too large");
            }
        }
        archive::first_file(&bytes)
    }

    /// Stops (after `grace`, SIGTERM first) and removes a container; false when there was none.
    async fn remove_container(
        &self,
        docker: &Docker,
        name: &str,
        grace: Duration,
    ) -> anyhow::Result<bool> {
        if !grace.is_zero() {
            match docker
                .stop_container(
                    name,
                    Some(q::StopContainerOptions {
                        t: Some(grace.as_secs().max(1) as i32),
                        ..Default::default()
                    }),
                )
                .await
            {
                Ok(()) => {}
                Err(e) if not_found(&e) => return Ok(false),
                // 304: already stopped.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 304, ..
                }) => {}
                Err(e) => return Err(e).with_context(|| format!("stopping container {name}")),
            }
        }
        match docker
            .remove_container(
                name,
                Some(q::RemoveContainerOptions {
                    force: true,
                    v: false,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("removing container {name}")),
        }
    }

    fn container_agent_url(&self, control_agent_url: &str) -> String {
        if let Some(u) = &self.agent_url {
            return u.clone();
        }
        match host_of(control_agent_url) {
            Some(h) => control_agent_url.replacen(&h, HOST_GATEWAY_NAME, 1),
            None => control_agent_url.to_string(),
        }
    }
}

/// The networks named exactly [`NETWORK`] (Docker's name filter also matches substrings),
/// lowest id first.
async fn networks_named(
    docker: &Docker,
) -> Result<Vec<bollard::models::Network>, bollard::errors::Error> {
    let all = docker
        .list_networks(Some(q::ListNetworksOptions {
            filters: Some(HashMap::from([(
                "name".to_string(),
                vec![NETWORK.to_string()],
            )])),
        }))
        .await?;
    let mut ours: Vec<_> = all
        .into_iter()
        .filter(|n| n.name.as_deref() == Some(NETWORK))
        .collect();
    ours.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(ours)
}

fn docker_error_text(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn labels(job: &ProvisionerJob, role: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_WORKSPACE_ID.to_string(), job.workspace_id.clone()),
        (LABEL_WORKSPACE.to_string(), job.workspace_name.clone()),
        (LABEL_OWNER.to_string(), job.owner.clone()),
        (LABEL_TEMPLATE.to_string(), job.template.clone()),
        (LABEL_ROLE.to_string(), role.to_string()),
    ])
}

fn container_resource(name: &str, s: &Resolved) -> Resource {
    let mut details = BTreeMap::from([
        ("container".to_string(), name.to_string()),
        ("image".to_string(), s.image.clone()),
        ("user".to_string(), format!("{} (uid {})", s.user, s.uid)),
        ("isolation".to_string(), "container".to_string()),
    ]);
    if let Some(n) = s.nano_cpus {
        details.insert("cpus".into(), format!("{}", n as f64 / 1e9));
    }
    if let Some(m) = s.memory_bytes {
        details.insert("memory".into(), format!("{} MiB", m >> 20));
        details.insert("memory_bytes".into(), m.to_string());
    }
    Resource {
        name: "container".into(),
        kind: "docker_container".into(),
        persistent: false,
        details,
    }
}

fn volume_resource(name: &str, user: &str) -> Resource {
    Resource {
        name: "home".into(),
        kind: "docker_volume".into(),
        persistent: true,
        details: BTreeMap::from([
            ("volume".to_string(), name.to_string()),
            ("mountpoint".to_string(), format!("/home/{user}")),
            ("isolation".to_string(), "container".to_string()),
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_urls() {
        assert_eq!(
            host_of("https://127.0.0.1:7443").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(host_of("https://[::1]:7443/x").as_deref(), Some("::1"));
        assert_eq!(
            host_of("https://ctl.example").as_deref(),
            Some("ctl.example")
        );
    }
}
