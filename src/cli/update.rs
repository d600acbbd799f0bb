use anyhow::{bail, Result};

use super::install::short_id;
use super::{parse_sets, print_json, ChangeAction, ChangeReport, ContainerChange, RegistryArgs};
use crate::deploy::{self, Layout, SwitchReport, UpdateRequest};
use crate::systemd::HostManager;

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct UpdateOpts {
    /// Name of the installed container.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub name: Option<String>,
    /// Every installed container, except those installed with --no-auto-update; one that fails
    /// does not stop the others.
    #[arg(long, conflicts_with_all = ["set", "rebase"])]
    pub all: bool,
    /// Say whether the image's source has a newer image; change nothing.
    #[arg(long, alias = "dry-run", conflicts_with_all = ["set", "rebase", "no_pull", "no_rollback"])]
    pub check: bool,
    /// Set a template variable, KEY=VALUE (repeatable); values set before are kept.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Move the container to another image, keeping its values.
    #[arg(long, value_name = "IMAGE")]
    pub rebase: Option<String>,
    /// Use the image as it is in the store; do not fetch it again.
    #[arg(long)]
    pub no_pull: bool,
    /// Stay on the new deployment even if its service fails to start.
    #[arg(long)]
    pub no_rollback: bool,
    /// Keep the new deployment only if the units that require it, and ran before, are ready
    /// again too (they are started again either way).
    #[arg(long, conflicts_with = "no_rollback")]
    pub ready_dependents: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub report: ChangeReport,
}

/// `update --json` (and `update --check --json`, where `changed` says whether a newer image is
/// available). A container that could not be updated is listed as `failed`.
#[derive(serde::Serialize)]
struct UpdateResult {
    changed: bool,
    check: bool,
    containers: Vec<ContainerChange>,
}

/// Returns the exit code (see [`ChangeReport`]).
pub async fn run(layout: &Layout, systemd: &HostManager, opts: &UpdateOpts) -> Result<i32> {
    let names = match &opts.name {
        Some(name) => vec![name.clone()],
        None => {
            let mut names = Vec::new();
            for name in layout.image_provided_names()? {
                crate::output::note(format!("skipped {name}: the OS image owns it; it changes with the OS image"));
            }
            for name in layout.installed_names()? {
                if layout.read_info(&name)?.auto_update {
                    names.push(name);
                }
            }
            names
        }
    };
    if names.is_empty() && !opts.report.json {
        crate::say!("no container to update");
        return Ok(0);
    }
    let mut containers = Vec::new();
    let mut failed = Vec::new();
    let mut seen = deploy::SourceDigests::default();
    for name in &names {
        let result = if opts.check {
            check(layout, opts, name, &mut seen).await
        } else {
            update(layout, systemd, opts, name).await
        };
        match result {
            Ok(change) => containers.push(change),
            Err(err) if opts.all => {
                eprintln!("error: {name}: {err:#}");
                containers.push(ContainerChange {
                    name: name.clone(),
                    action: ChangeAction::Failed,
                    detail: Some(format!("{err:#}")),
                });
                failed.push(name.as_str());
            }
            Err(err) => return Err(err),
        }
    }
    let changed = containers.iter().any(|c| matches!(c.action, ChangeAction::Updated | ChangeAction::UpdateAvailable));
    if opts.report.json {
        print_json("UpdateResult", &UpdateResult { changed, check: opts.check, containers })?;
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} containers could not be {}: {}",
            failed.len(),
            names.len(),
            if opts.check { "checked" } else { "updated" },
            failed.join(", ")
        );
    }
    Ok(opts.report.exit_code(changed))
}

async fn check(
    layout: &Layout,
    opts: &UpdateOpts,
    name: &str,
    seen: &mut deploy::SourceDigests,
) -> Result<ContainerChange> {
    let found = deploy::check_update(layout, name, &opts.registry.options(), seen).await?;
    let (action, detail) = if found.available == found.installed {
        (ChangeAction::UpToDate, format!("up to date ({}, {})", found.image, found.installed))
    } else {
        (
            ChangeAction::UpdateAvailable,
            format!(
                "a newer image is available: {} is {} (installed: {})",
                found.image, found.available, found.installed
            ),
        )
    };
    if !opts.report.json {
        crate::say!("{name}: {detail}");
    }
    Ok(ContainerChange { name: name.to_string(), action, detail: Some(detail) })
}

async fn update(layout: &Layout, systemd: &HostManager, opts: &UpdateOpts, name: &str) -> Result<ContainerChange> {
    let request = UpdateRequest {
        name: name.to_string(),
        values: parse_sets(&opts.set)?,
        replace_values: false,
        rebase: match opts.rebase.as_deref() {
            Some(rebase) => Some(opts.registry.image(rebase).await?),
            None => None,
        },
        pull: !opts.no_pull,
        rollback_on_failure: !opts.no_rollback,
        registry: opts.registry.options(),
        listen: None,
        ready: None,
        ready_dependents: opts.ready_dependents,
    };
    let report = deploy::update(layout, &request, systemd).await?;
    if !opts.report.json {
        print_switch(name, &report, "updated");
    }
    Ok(match report {
        SwitchReport::UpToDate => {
            ContainerChange { name: name.to_string(), action: ChangeAction::Unchanged, detail: None }
        }
        SwitchReport::Switched { from, to, .. } => ContainerChange {
            name: name.to_string(),
            action: ChangeAction::Updated,
            detail: Some(format!("{} ({}) -> {} ({})", from.image, from.image_id, to.image, to.image_id)),
        },
    })
}

pub(super) fn print_switch(name: &str, report: &SwitchReport, verb: &str) {
    match report {
        SwitchReport::UpToDate => crate::say!("{name} is already up to date"),
        SwitchReport::Switched { from, to, notes, missing_units } => {
            for note in notes {
                crate::output::note(note);
            }
            for missing in missing_units {
                crate::output::note(missing);
            }
            crate::say!(
                "{verb} {name}: {} ({}, slot {}) -> {} ({}, slot {})",
                from.image,
                short_id(&from.image_id),
                from.slot,
                to.image,
                short_id(&to.image_id),
                to.slot
            );
        }
    }
}
