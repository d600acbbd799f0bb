use std::path::PathBuf;

use anyhow::Result;

use super::{print_json, ChangeAction, ChangeReport, ContainerChange, RegistryArgs};
use crate::deploy::{self, Action, ApplyOptions, Change, Layout};
use crate::systemd::{HostManager, ServiceManager as _};

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct ApplyOpts {
    /// TOML file listing the system containers of this host, or a directory whose `*.toml`
    /// files together list them (read in name order).
    pub file: PathBuf,
    /// Say what would be installed, updated, removed or left alone, and why; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also uninstall the containers the file does not list.
    #[arg(long)]
    pub prune: bool,
    /// On a booted host, before the first pull from a registry (and only then), start
    /// network-online.target and wait for it at most this long (e.g. 90s); then pull anyway.
    #[arg(long, value_name = "DURATION", env = "SYSCTR_WAIT_ONLINE", value_parser = humantime::parse_duration)]
    pub wait_online: Option<std::time::Duration>,
    /// Try a pull that failed for a reason that may pass (the registry unreachable, silent or
    /// overloaded) again, with backoff, for at most this long after the first pull (0: never).
    #[arg(long, value_name = "DURATION", env = "SYSCTR_PULL_RETRY", default_value = "0s",
        value_parser = humantime::parse_duration)]
    pub pull_retry: std::time::Duration,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub report: ChangeReport,
}

/// `apply --json`, and `apply --dry-run --json`: `changed` says whether anything was (or would
/// be) installed, updated or removed.
#[derive(serde::Serialize)]
struct ApplyResult<C> {
    changed: bool,
    dry_run: bool,
    containers: Vec<C>,
    notes: Vec<String>,
}

/// A container's part in `apply --dry-run --json`: the change, and the container before and
/// after it (image, digest, values, unit), for configuration tools' diffs.
#[derive(serde::Serialize)]
struct PlannedChange {
    #[serde(flatten)]
    change: ContainerChange,
    #[serde(skip_serializing_if = "Option::is_none")]
    before: Option<deploy::Preview>,
    #[serde(skip_serializing_if = "Option::is_none")]
    after: Option<deploy::Preview>,
}

/// Returns the exit code (see [`ChangeReport`]).
pub async fn run(layout: &Layout, systemd: &HostManager, opts: &ApplyOpts) -> Result<i32> {
    if opts.dry_run {
        let steps = deploy::plan(layout, &opts.file, &opts.registry.options(), opts.prune, systemd.target())?;
        let planned: Vec<PlannedChange> = steps
            .into_iter()
            .map(|step| PlannedChange {
                change: ContainerChange {
                    name: step.name,
                    action: match step.change {
                        Change::Install => ChangeAction::Install,
                        Change::Update => ChangeAction::Update,
                        Change::Remove => ChangeAction::Remove,
                        Change::Unchanged => ChangeAction::Unchanged,
                    },
                    detail: Some(step.reason),
                },
                before: step.before,
                after: step.after,
            })
            .collect();
        let changed = planned.iter().any(|p| p.change.action != ChangeAction::Unchanged);
        if opts.report.json {
            print_json("ApplyResult", &ApplyResult { changed, dry_run: true, containers: planned, notes: Vec::new() })?;
            return Ok(opts.report.exit_code(changed));
        }
        for PlannedChange { change, .. } in planned {
            let reason = change.detail.unwrap_or_default();
            if change.action == ChangeAction::Unchanged {
                crate::say!("unchanged {}: {reason}", change.name);
            } else {
                crate::say!("would {} {}: {reason}", change.action, change.name);
            }
        }
        return Ok(opts.report.exit_code(changed));
    }
    let options = ApplyOptions {
        registry: opts.registry.options(),
        prune: opts.prune,
        wait_online: opts.wait_online,
        pull_retry: opts.pull_retry,
    };
    let (actions, notes) = deploy::apply(layout, &opts.file, &options, systemd).await?;
    let containers: Vec<ContainerChange> = actions
        .into_iter()
        .map(|action| {
            let (action, name) = match action {
                Action::Installed(name) => (ChangeAction::Installed, name),
                Action::Updated(name) => (ChangeAction::Updated, name),
                Action::Unchanged(name) => (ChangeAction::Unchanged, name),
                Action::Removed(name) => (ChangeAction::Removed, name),
            };
            ContainerChange { name, action, detail: None }
        })
        .collect();
    let changed = containers.iter().any(|c| c.action != ChangeAction::Unchanged);
    if opts.report.json {
        print_json("ApplyResult", &ApplyResult { changed, dry_run: false, containers, notes })?;
        return Ok(opts.report.exit_code(changed));
    }
    for note in notes {
        crate::output::note(note);
    }
    for container in containers {
        crate::say!("{} {}", container.action, container.name);
    }
    Ok(opts.report.exit_code(changed))
}
