use std::path::PathBuf;

use anyhow::Result;

use super::{parse_sets, RegistryArgs};
use crate::deploy::{self, InstallOutcome, InstallRequest, Layout};
use crate::supervise::plan::{OnUnhealthy, ReadyMode};
use crate::systemd::{HostManager, ServiceManager as _};

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct InstallOpts {
    /// Container name (default: the image's last path component, plus -TAG unless the tag is latest).
    #[arg(long)]
    pub name: Option<String>,
    /// Set a template variable, KEY=VALUE (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// OCI runtime to run the container with (default: runc).
    #[arg(long)]
    pub runtime: Option<PathBuf>,
    /// Also start the service now, and wait until systemd reports the start job's result.
    #[arg(long)]
    pub now: bool,
    /// With --now: return once systemd has queued the start, without waiting for its result
    /// (as `systemctl start --no-block`); `systemctl status NAME` tells how it went.
    #[arg(long, requires = "now")]
    pub no_block: bool,
    /// Install even where the system's packages ship a unit of the same name (it is shadowed
    /// while the container is installed, and enabled again at uninstall if it was).
    #[arg(long)]
    pub replace_vendor_unit: bool,
    /// Leave it out of `sysctr update --all` (the auto-update timer): it is updated only by name.
    #[arg(long)]
    pub no_auto_update: bool,
    /// Let systemd listen on ADDR (as `ListenStream=` takes it: `8080`, `127.0.0.1:8080`,
    /// `/run/NAME.sock`; repeatable): the socket is enabled and started, and the first
    /// connection starts the service, whose container gets the sockets (`LISTEN_FDS`).
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<String>,
    /// As --listen, for a datagram socket (`ListenDatagram=`; repeatable).
    #[arg(long, value_name = "ADDR")]
    pub listen_datagram: Vec<String>,
    #[command(flatten)]
    pub ready: ReadyArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// `[docker://]HOST[:PORT]/PATH[:TAG|@sha256:DIGEST]`, `oci:DIR[:TAG]`, `oci-archive:PATH[:TAG]`
    /// or `docker-archive:PATH[:REF|:@N]`.
    pub image: String,
}

/// Returns sysctr's exit code: 0, or the exit code of an image that only runs once.
pub async fn run(layout: &Layout, systemd: &HostManager, opts: &InstallOpts) -> Result<i32> {
    let request = InstallRequest {
        image: opts.registry.image(&opts.image).await?,
        name: opts.name.clone(),
        values: parse_sets(&opts.set)?,
        runtime: opts.runtime.clone(),
        start_now: opts.now,
        no_block: opts.no_block,
        registry: opts.registry.options(),
        replace_vendor_unit: opts.replace_vendor_unit,
        auto_update: !opts.no_auto_update,
        listen: deploy::Listen::new(opts.listen.clone(), opts.listen_datagram.clone())?,
        ready: opts.ready.settings(),
    };
    let report = match deploy::install(layout, &request, systemd).await? {
        InstallOutcome::Installed(report) => report,
        InstallOutcome::RanOnce(code) => return Ok(code),
    };
    for note in &report.notes {
        crate::output::note(note);
    }
    for missing in &report.missing_units {
        crate::output::note(missing);
    }
    let state = match (opts.now, opts.no_block) {
        _ if report.deployment.has_socket && systemd.target().runs_units() => "installed, listening:",
        (true, true) => "installed, start queued:",
        (true, false) => "installed and started",
        (false, _) => "installed",
    };
    crate::say!("{state} {} from {} ({})", report.name, report.deployment.image, short_id(&report.deployment.image_id));
    Ok(0)
}

/// The first 12 hex digits of an image id, as tables show it.
pub(super) fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

/// When the container counts as ready: what systemd, and `After=` on its unit, wait for.
#[derive(Debug, clap::Args, PartialEq, Eq)]
#[command(next_help_heading = "Readiness (default: as the image says, else started)")]
pub struct ReadyArgs {
    /// notify: its process says so (sd_notify, through runc); started: runc has started its
    /// process; healthy: --health-cmd succeeds inside it.
    #[arg(long, value_name = "MODE", value_parser = |s: &str| s.parse::<ReadyMode>().map_err(|e| e.to_string()))]
    pub ready: Option<ReadyMode>,
    /// Run CMD inside the container (`/bin/sh -c CMD`, by `runc exec`) until it succeeds, then
    /// at every interval while it runs; implies --ready healthy.
    #[arg(long, value_name = "CMD")]
    pub health_cmd: Option<String>,
    /// Time between checks of a running container [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub health_interval: Option<String>,
    /// Time one check may take before it counts as failed [default: 5s].
    #[arg(long, value_name = "DURATION")]
    pub health_timeout: Option<String>,
    /// Failed checks in a row before a running container is unhealthy [default: 3].
    #[arg(long, value_name = "N")]
    pub health_retries: Option<u32>,
    /// Time a start may take to reach ready; then it fails (and an update rolls back) [default: 90s].
    #[arg(long, value_name = "DURATION")]
    pub start_timeout: Option<String>,
    /// What an unhealthy running container gets: log (journal, `sysctr status`), or restart.
    #[arg(long, value_name = "ACTION", value_parser = |s: &str| s.parse::<OnUnhealthy>().map_err(|e| e.to_string()))]
    pub on_unhealthy: Option<OnUnhealthy>,
}

impl ReadyArgs {
    fn settings(&self) -> deploy::ReadySettings {
        deploy::ReadySettings {
            ready: self.ready,
            health_cmd: self.health_cmd.clone().map(deploy::HealthCommand::Shell),
            health_interval: self.health_interval.clone(),
            health_timeout: self.health_timeout.clone(),
            health_retries: self.health_retries,
            start_timeout: self.start_timeout.clone(),
            on_unhealthy: self.on_unhealthy,
        }
    }
}
