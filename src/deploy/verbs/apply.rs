//! `apply FILE|DIR`: converge this host (or an offline root) to a list of system containers, in
//! one file or in every `*.toml` of a directory (`/etc/sysctr`, for `sysctr-apply.service`).
//!
//! ```toml
//! [[container]]
//! name = "etcd"
//! image = "registry.lan/k8s/etcd:3.4"
//! start = true            # start it now if it gets installed (default: true)
//! set = { ETCD_NAME = "node1" }
//! replace_vendor_unit = true  # shadow a unit of the same name from the system's packages
//! auto_update = false     # left alone by `sysctr update --all` (default: true)
//! runtime = "/usr/bin/crun"  # the OCI runtime it is installed with (default: runc)
//! listen = ["127.0.0.1:2379"]  # systemd listens; the first connection starts it (`--listen`)
//! ready = "healthy"       # notify | started | healthy (default: as the image says, else started)
//! health_cmd = "etcdctl endpoint health"  # run in the container; a list runs without a shell
//! health_interval = "10s"  # also health_timeout, health_retries, start_timeout, on_unhealthy
//! ```
//!
//! Containers are handled in file order. A missing one is installed; one whose image or `set`
//! values differ from the file is updated (moved to the image, values replaced); the rest are
//! left alone. A second run with the same file changes nothing. With `prune`, containers the
//! file does not list are uninstalled afterwards; never without it.
//!
//! [`plan`] says what `apply` would do, and why, from the file and the records alone: nothing is
//! changed or fetched. A newer image behind an unchanged tag is left to `sysctr update`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::install::{install, InstallOutcome, InstallRequest};
use super::pull::{from_the_os_image, pull, share_with_the_os_image};
use super::update::{update, SwitchReport, UpdateRequest};
use crate::deploy::deployment::readiness::{HealthCommand, ReadySettings};
use crate::deploy::deployment::slot::{preview_unit, runs_once, SlotRequest};
use crate::deploy::deployment::socket::Listen;
use crate::deploy::host::facts::find_runtime;
use crate::deploy::host::layout::{image_owned_message, Deployment, Layout, UNIT_FILE};
use crate::reference::{validate_container_name, ImageRef};
use crate::registry::RegistryOptions;
use crate::rooted::{Resolve, RootedDir};
use crate::store::Store;
use crate::supervise::plan::{OnUnhealthy, ReadyMode};
use crate::systemd::{check_dependencies_of_set, MissingUnit, ServiceManager, Target};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    #[serde(default)]
    container: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    image: String,
    #[serde(default = "yes")]
    start: bool,
    #[serde(default)]
    set: BTreeMap<String, String>,
    /// Shadow a unit of the system's packages with the same name (`install --replace-vendor-unit`).
    #[serde(default)]
    replace_vendor_unit: bool,
    /// Let `update --all` update it (`install --no-auto-update` when false).
    #[serde(default = "yes")]
    auto_update: bool,
    /// The OCI runtime it is installed with (`install --runtime`); one installed stays on its own.
    runtime: Option<PathBuf>,
    /// Addresses systemd listens on for it, starting it at the first connection (`--listen`).
    #[serde(default)]
    listen: Vec<String>,
    /// Datagram addresses (`--listen-datagram`).
    #[serde(default)]
    listen_datagram: Vec<String>,
    /// When it counts as ready (`--ready`, …; see `deployment::readiness`).
    ready: Option<ReadyMode>,
    health_cmd: Option<HealthCommand>,
    health_interval: Option<String>,
    health_timeout: Option<String>,
    health_retries: Option<u32>,
    start_timeout: Option<String>,
    on_unhealthy: Option<OnUnhealthy>,
}

impl Entry {
    /// The listen addresses, as checked by `read_manifest`.
    fn listen(&self) -> Listen {
        Listen { stream: self.listen.clone(), datagram: self.listen_datagram.clone() }
    }

    fn ready_settings(&self) -> ReadySettings {
        ReadySettings {
            ready: self.ready,
            health_cmd: self.health_cmd.clone(),
            health_interval: self.health_interval.clone(),
            health_timeout: self.health_timeout.clone(),
            health_retries: self.health_retries,
            start_timeout: self.start_timeout.clone(),
            on_unhealthy: self.on_unhealthy,
        }
    }
}

fn yes() -> bool {
    true
}

/// What `apply` did to one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Installed(String),
    Updated(String),
    Unchanged(String),
    /// Uninstalled: not in the file, and `prune` asked for.
    Removed(String),
}

/// What `apply` would do to one container, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStep {
    pub name: String,
    pub change: Change,
    pub reason: String,
    /// The container as it is, if installed (and not provided by the OS image).
    pub before: Option<Preview>,
    /// The container as the change would leave it, except after a removal.
    pub after: Option<Preview>,
}

/// One side of a planned change, for a before/after diff.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Preview {
    pub image: String,
    /// `None`: the image is not in the store, and planning fetches nothing.
    pub manifest_digest: Option<String>,
    /// The values given with `set`.
    pub values: BTreeMap<String, String>,
    /// The service unit rendered from the image's template; `None` when the image is not in
    /// the store or runs no service.
    pub unit: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Install,
    Update,
    Remove,
    Unchanged,
}

/// What [`apply`] with the same arguments would do, in the same order, with the container before
/// and after each change; nothing is changed or fetched (an image not in the store previews
/// without its digest and unit).
pub fn plan(
    layout: &Layout,
    path: &Path,
    registry: &RegistryOptions,
    prune: bool,
    target: Target,
) -> Result<Vec<PlannedStep>> {
    let entries = read_manifest(path, &registry.registries_conf)?;
    let store = if layout.repo().exists() { Some(Store::open(&layout.repo())?) } else { None };
    let mut steps = Vec::new();
    for (entry, image) in &entries {
        let step = |change, reason: String| PlannedStep {
            name: entry.name.clone(),
            change,
            reason,
            before: None,
            after: None,
        };
        if provided_by_the_os_image(layout, entry, image)? {
            steps.push(step(Change::Unchanged, format!("{image} with the same values, provided by the OS image")));
            continue;
        }
        if !layout.link(&entry.name).exists() {
            let after = preview_entry(layout, store.as_ref(), entry, image, None, target)?;
            steps.push(PlannedStep {
                after: Some(after),
                ..step(Change::Install, format!("not installed; from {image}"))
            });
            continue;
        }
        let current = layout.read_info(&entry.name)?;
        let before = Some(preview_installed(layout, &current)?);
        let Some(reason) = update_reason(&current, entry, image) else {
            // As `apply` does: a newer image behind the same tag is `sysctr update`'s business.
            steps.push(PlannedStep { before, ..step(Change::Unchanged, format!("{image} with the same values")) });
            continue;
        };
        let after = preview_entry(layout, store.as_ref(), entry, image, Some(&current), target)?;
        steps.push(PlannedStep { before, after: Some(after), ..step(Change::Update, reason) });
    }
    if prune {
        for name in unlisted(layout, &entries)? {
            let before = preview_installed(layout, &layout.read_info(&name)?)?;
            steps.push(PlannedStep {
                name,
                change: Change::Remove,
                reason: "not in the file (--prune)".into(),
                before: Some(before),
                after: None,
            });
        }
    }
    Ok(steps)
}

/// Why an installed container would be updated to what `entry` lists, if it would be.
fn update_reason(current: &Deployment, entry: &Entry, image: &ImageRef) -> Option<String> {
    if current.image != image.canonical() {
        return Some(format!("image {} -> {image}", current.image));
    }
    if current.listen != entry.listen() {
        return Some("listen addresses change".to_string());
    }
    if current.ready_settings != entry.ready_settings() {
        return Some("readiness settings change".to_string());
    }
    if current.values != entry.set {
        let keys: std::collections::BTreeSet<&String> = current.values.keys().chain(entry.set.keys()).collect();
        let changed: Vec<&str> =
            keys.into_iter().filter(|k| current.values.get(*k) != entry.set.get(*k)).map(String::as_str).collect();
        return Some(format!("values of {} change", changed.join(", ")));
    }
    None
}

/// The largest unit file a preview reads back from a slot.
const MAX_UNIT_FILE: u64 = 1024 * 1024;

/// An installed container as its current slot has it. The slot's unit is read beneath the
/// deployments directory, no symlink followed: under `--root` it is the target's file, never one
/// of the machine composing it.
fn preview_installed(layout: &Layout, current: &Deployment) -> Result<Preview> {
    let unit = if current.has_service {
        let slot = Path::new(&format!("{}.{}", current.name, current.slot)).join(UNIT_FILE);
        let bytes = RootedDir::open(&layout.deployments(), Resolve::NoSymlinks)?
            .read_regular_file(&slot, MAX_UNIT_FILE)
            .with_context(|| format!("reading the unit of {}", current.name))?;
        bytes
            .map(|bytes| String::from_utf8(bytes).with_context(|| format!("the unit of {} is not UTF-8", current.name)))
            .transpose()?
    } else {
        None
    };
    Ok(Preview {
        image: current.image.clone(),
        manifest_digest: Some(current.manifest_digest.clone()),
        values: current.values.clone(),
        unit,
    })
}

/// The container `entry` lists, rendered from its image if the store has it.
fn preview_entry(
    layout: &Layout,
    store: Option<&Store>,
    entry: &Entry,
    image: &ImageRef,
    current: Option<&Deployment>,
    target: Target,
) -> Result<Preview> {
    let mut preview =
        Preview { image: image.canonical(), manifest_digest: None, values: entry.set.clone(), unit: None };
    let Some(store) = store else { return Ok(preview) };
    let Some(stored) = store.image(&image.canonical())? else { return Ok(preview) };
    preview.manifest_digest = Some(stored.manifest_digest.clone());
    preview.unit = entry_unit(layout, store, entry, &stored, current, target)?;
    Ok(preview)
}

/// The service unit the slot `entry` would get from `stored` (for the installed `current`, on
/// its other slot, with its runtime); `None` for an image that runs no service.
fn entry_unit(
    layout: &Layout,
    store: &Store,
    entry: &Entry,
    stored: &crate::store::StoredImage,
    current: Option<&Deployment>,
    target: Target,
) -> Result<Option<String>> {
    let runtime = match current {
        Some(c) => PathBuf::from(&c.runtime),
        None => find_runtime(layout, entry.runtime.as_deref())?,
    };
    let request = SlotRequest {
        name: &entry.name,
        slot: current.map_or(0, |c| 1 - c.slot),
        image: stored,
        runtime: &runtime,
        user_values: &entry.set,
        listen: &entry.listen(),
        ready: &entry.ready_settings(),
        uuid: current.map_or("", |c| c.uuid.as_str()),
        target,
    };
    preview_unit(layout, store, &request).with_context(|| format!("rendering the unit of {}", entry.name))
}

/// Whether the OS image provides the container `entry` lists, as the file has it: it is then
/// there, and left alone. One the file wants otherwise is refused: it changes with the OS image.
fn provided_by_the_os_image(layout: &Layout, entry: &Entry, image: &ImageRef) -> Result<bool> {
    let Some(provided) = layout.image_provided(&entry.name) else { return Ok(false) };
    if provided.image != image.canonical() || provided.values != entry.set {
        let differs = if provided.image == image.canonical() { "values" } else { "image" };
        bail!(
            "{} (the file gives another {differs} than the OS image's {})",
            image_owned_message(&entry.name, "apply"),
            provided.image
        );
    }
    Ok(true)
}

/// Installed containers the file does not list, by name.
fn unlisted(layout: &Layout, entries: &[(Entry, ImageRef)]) -> Result<Vec<String>> {
    Ok(layout.installed_names()?.into_iter().filter(|name| !entries.iter().any(|(e, _)| e.name == *name)).collect())
}

/// The largest apply file read.
const MAX_APPLY_FILE: u64 = 4 * 1024 * 1024;

/// Reads and checks the whole file, or every `*.toml` of a directory in name order, before
/// changing anything. A container listed twice, in one file or two, is an error.
fn read_manifest(path: &Path, registries_conf: &Path) -> Result<Vec<(Entry, ImageRef)>> {
    let files = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("listing {}", path.display()))?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("listing {}", path.display()))?;
        files.retain(|file| file.extension().is_some_and(|ext| ext == "toml"));
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut listed_in: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut entries = Vec::new();
    for file in files {
        let text = crate::registry::read_host_config_text(&file, MAX_APPLY_FILE)?
            .with_context(|| format!("{} does not exist", file.display()))?;
        let manifest: Manifest = toml::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
        for entry in manifest.container {
            validate_container_name(&entry.name).with_context(|| format!("in {}", file.display()))?;
            if let Some(first) = listed_in.insert(entry.name.clone(), file.clone()) {
                bail!("container '{}' is listed twice ({} and {})", entry.name, first.display(), file.display());
            }
            Listen::new(entry.listen.clone(), entry.listen_datagram.clone())
                .with_context(|| format!("{}: container '{}'", file.display(), entry.name))?;
            // Checked alone; over the image's settings again when its slot is built.
            entry
                .ready_settings()
                .resolve()
                .with_context(|| format!("{}: container '{}'", file.display(), entry.name))?;
            for key in entry.set.keys() {
                crate::template::parse_set(&format!("{key}="))
                    .with_context(|| format!("{}: container '{}'", file.display(), entry.name))?;
            }
            let image = crate::registry::parse_image(&entry.image, registries_conf)
                .with_context(|| format!("{}: container '{}'", file.display(), entry.name))?;
            entries.push((entry, image));
        }
    }
    Ok(entries)
}

/// The units the containers to install or update would get, from the store (pulling what is
/// missing), without touching anything else; and notes on the wait for the network.
async fn planned_units(
    layout: &Layout,
    entries: &[(Entry, ImageRef)],
    options: &ApplyOptions,
    systemd: &impl ServiceManager,
) -> Result<(Vec<(String, String)>, Vec<String>)> {
    let registry = &options.registry;
    let mut retry_until = None;
    let _lock = layout.lock()?;
    let store = Store::open_or_create(&layout.repo())?;
    let target = systemd.target();
    let (mut units, mut notes) = (Vec::new(), Vec::new());
    let mut waited = false;
    for (entry, image) in entries {
        if provided_by_the_os_image(layout, entry, image)? {
            continue;
        }
        let current = layout.read_info(&entry.name).ok();
        if current.as_ref().is_some_and(|c| update_reason(c, entry, image).is_none()) {
            continue;
        }
        let stored = match store.image(&image.canonical())? {
            Some(stored) => stored,
            None => match from_the_os_image(layout, &store, image)? {
                Some(stored) => stored,
                None => {
                    if let (Some(limit), ImageRef::Registry(_), false) = (options.wait_online, image, waited) {
                        waited = true;
                        notes.extend(wait_for_network(systemd, limit).await);
                    }
                    let until = *retry_until.get_or_insert_with(|| Instant::now() + options.pull_retry);
                    let pulled = pull_retrying(&store, image, registry, until).await?;
                    share_with_the_os_image(layout, &store)?;
                    pulled
                }
            },
        };
        let config: oci_spec::image::ImageConfiguration =
            serde_json::from_slice(&stored.config_raw).context("reading the stored image config")?;
        if runs_once(&config) {
            bail!(
                "container '{}': {} is labelled atomic.run=once, so it cannot be kept installed; \
                 run it with `sysctr run` (or `sysctr install`, which runs it once)",
                entry.name,
                stored.reference
            );
        }
        if let Some(unit) = entry_unit(layout, &store, entry, &stored, current.as_ref(), target)? {
            units.push((Layout::unit_name(&entry.name), unit));
        }
    }
    Ok((units, notes))
}

/// Asks the booted host's manager to reach `network-online.target`, waiting at most `limit`:
/// what a pull at boot needs, asked for only when there is one to make, so that a boot with
/// nothing to pull never waits for the network. Not reaching it is a note, not an error: the
/// pull then says what failed. Returns the note, if any.
async fn wait_for_network(systemd: &impl ServiceManager, limit: Duration) -> Option<String> {
    const ONLINE: &str = "network-online.target";
    if !systemd.target().runs_units() {
        return None;
    }
    match tokio::time::timeout(limit, systemd.start(ONLINE)).await {
        Ok(Ok(())) => None,
        Ok(Err(err)) => Some(format!("{ONLINE} failed ({err:#}); pulling anyway")),
        Err(_) => Some(format!("{ONLINE} not reached within {}; pulling anyway", humantime::format_duration(limit))),
    }
}

/// Pulls `image`, trying again with backoff (1 s, doubled up to 30 s) after a failure that may
/// pass ([`crate::registry::is_transient`]: unreachable, silent, overloaded), until `until`.
async fn pull_retrying(
    store: &Store,
    image: &ImageRef,
    registry: &RegistryOptions,
    until: Instant,
) -> Result<crate::store::StoredImage> {
    const FIRST_BACKOFF: Duration = Duration::from_secs(1);
    const MAX_BACKOFF: Duration = Duration::from_secs(30);
    let (started, mut backoff, mut attempts) = (Instant::now(), FIRST_BACKOFF, 1u32);
    loop {
        match pull(store, image, registry).await {
            Ok(pulled) => return Ok(pulled.image),
            Err(err) if crate::registry::is_transient(&err) && Instant::now() + backoff < until => {
                crate::output::note(format!(
                    "{err:#}; trying again in {} (attempt {attempts}, --pull-retry)",
                    humantime::format_duration(backoff)
                ));
                tokio::time::sleep(backoff).await;
                (backoff, attempts) = ((backoff * 2).min(MAX_BACKOFF), attempts + 1);
            }
            Err(err) if attempts > 1 => {
                let spent = Duration::from_secs(started.elapsed().as_secs());
                return Err(err.context(format!(
                    "gave up on {image} after {attempts} attempts in {} (--pull-retry)",
                    humantime::format_duration(spent)
                )));
            }
            Err(err) => return Err(err),
        }
    }
}

/// What `apply` is given besides the file.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub registry: RegistryOptions,
    /// Uninstall the containers the file does not list.
    pub prune: bool,
    /// Before the first pull from a registry, reach `network-online.target`, waiting at most this.
    pub wait_online: Option<Duration>,
    /// Try pulls that failed for a reason that may pass again, for at most this long from the
    /// first pull (`Duration::ZERO`: never).
    pub pull_retry: Duration,
}

/// Returns what was done to each container, and notes for the user.
pub async fn apply(
    layout: &Layout,
    path: &Path,
    options: &ApplyOptions,
    systemd: &impl ServiceManager,
) -> Result<(Vec<Action>, Vec<String>)> {
    let (registry, prune) = (&options.registry, options.prune);
    let entries = read_manifest(path, &registry.registries_conf)?;
    for (entry, image) in &entries {
        provided_by_the_os_image(layout, entry, image)?;
    }
    // The whole set's ordering first: nothing is installed if it would close a cycle.
    let (planned, mut notes) = planned_units(layout, &entries, options, systemd).await?;
    notes.extend(
        check_dependencies_of_set(&layout.host_dir()?, &planned)
            .with_context(|| format!("checking the units of {}", path.display()))?
            .iter()
            .map(ToString::to_string),
    );
    // Found before anything is installed: only what was there and is not listed goes.
    let to_remove = if prune { unlisted(layout, &entries)? } else { Vec::new() };
    let mut actions = Vec::new();
    for (entry, image) in entries {
        if provided_by_the_os_image(layout, &entry, &image)? {
            actions.push(Action::Unchanged(entry.name));
            continue;
        }
        let installed = layout.link(&entry.name).exists();
        if !installed {
            let request = InstallRequest {
                image,
                name: Some(entry.name.clone()),
                values: entry.set.clone(),
                runtime: entry.runtime.clone(),
                start_now: entry.start && systemd.target().runs_units(),
                no_block: false,
                registry: registry.clone(),
                replace_vendor_unit: entry.replace_vendor_unit,
                auto_update: entry.auto_update,
                listen: entry.listen(),
                ready: entry.ready_settings(),
            };
            let InstallOutcome::Installed(report) =
                install(layout, &request, systemd).await.with_context(|| format!("installing {}", entry.name))?
            else {
                bail!("container '{}': its image ran once instead of being installed", entry.name);
            };
            notes.extend(report.notes);
            notes.extend(missing_outside_the_set(report.missing_units, &planned));
            actions.push(Action::Installed(entry.name));
            continue;
        }
        let current = layout.read_info(&entry.name)?;
        if update_reason(&current, &entry, &image).is_none() {
            actions.push(Action::Unchanged(entry.name));
            continue;
        }
        // The file says what the values are: those set before and not listed are dropped.
        let request = UpdateRequest {
            name: entry.name.clone(),
            values: entry.set.clone(),
            replace_values: true,
            rebase: (current.image != image.canonical()).then_some(image),
            // `planned_units` stored the image (with its retries): no second trip to the registry.
            pull: false,
            rollback_on_failure: true,
            registry: registry.clone(),
            listen: Some(entry.listen()),
            ready: Some(entry.ready_settings()),
            ready_dependents: false,
        };
        match update(layout, &request, systemd).await.with_context(|| format!("updating {}", entry.name))? {
            SwitchReport::UpToDate => actions.push(Action::Unchanged(entry.name)),
            SwitchReport::Switched { notes: more, missing_units, .. } => {
                notes.extend(more);
                notes.extend(missing_outside_the_set(missing_units, &planned));
                actions.push(Action::Updated(entry.name));
            }
        }
    }
    for name in to_remove {
        let report = super::uninstall::uninstall(layout, &name, systemd)
            .await
            .with_context(|| format!("uninstalling {name}, which the file no longer lists"))?;
        notes.extend(report.notes);
        actions.push(Action::Removed(name));
    }
    Ok((actions, notes))
}

/// A unit installed early in the set finds a later one missing: it is not, for the set.
fn missing_outside_the_set(
    missing: Vec<MissingUnit>,
    planned: &[(String, String)],
) -> impl Iterator<Item = String> + '_ {
    missing.into_iter().filter(|m| !planned.iter().any(|(name, _)| *name == m.missing)).map(|m| m.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<(Entry, ImageRef)>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, text).unwrap();
        read_manifest(&path, &dir.path().join("registries.conf"))
    }

    #[test]
    fn reads_containers_in_order_with_defaults() {
        let entries = read(
            "[[container]]\nname = \"etcd\"\nimage = \"reg.lan/etcd:3.4\"\nset = { ETCD_NAME = \"n1\" }\n\n\
             [[container]]\nname = \"flannel\"\nimage = \"oci:/srv/flannel:v1\"\nstart = false\n",
        )
        .unwrap();
        let names: Vec<_> = entries.iter().map(|(e, _)| e.name.as_str()).collect();
        assert_eq!(names, ["etcd", "flannel"]);
        assert!(entries[0].0.start && !entries[1].0.start);
        assert_eq!(entries[0].0.set["ETCD_NAME"], "n1");
        assert!(entries[0].0.listen().is_empty());
        let entries =
            read("[[container]]\nname = \"w\"\nimage = \"reg.lan/w\"\nlisten = [\"127.0.0.1:8080\"]\n").unwrap();
        assert_eq!(entries[0].0.listen(), Listen::new(vec!["127.0.0.1:8080".into()], Vec::new()).unwrap());
    }

    #[test]
    fn a_directory_is_its_toml_files_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("registries.conf");
        let node = dir.path().join("sysctr");
        std::fs::create_dir(&node).unwrap();
        std::fs::write(node.join("20-flannel.toml"), "[[container]]\nname = \"flannel\"\nimage = \"reg.lan/f:1\"\n")
            .unwrap();
        std::fs::write(node.join("10-etcd.toml"), "[[container]]\nname = \"etcd\"\nimage = \"reg.lan/e:1\"\n").unwrap();
        std::fs::write(node.join("notes.txt"), "not read").unwrap();
        let entries = read_manifest(&node, &conf).unwrap();
        let names: Vec<_> = entries.iter().map(|(e, _)| e.name.as_str()).collect();
        assert_eq!(names, ["etcd", "flannel"]);

        std::fs::write(node.join("30-again.toml"), "[[container]]\nname = \"etcd\"\nimage = \"reg.lan/e:2\"\n")
            .unwrap();
        let err = format!("{:#}", read_manifest(&node, &conf).unwrap_err());
        assert!(err.contains("container 'etcd' is listed twice") && err.contains("10-etcd.toml"), "{err}");
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(read_manifest(&empty, &conf).unwrap().is_empty());
    }

    #[test]
    fn refuses_bad_files_before_doing_anything() {
        let cases = [
            (
                "[[container]]\nname = \"a\"\nimage = \"reg.lan/a\"\n[[container]]\nname = \"a\"\nimage = \"reg.lan/b\"\n",
                "listed twice",
            ),
            ("[[container]]\nname = \"../x\"\nimage = \"reg.lan/a\"\n", "invalid container name"),
            ("[[container]]\nname = \"a\"\nimage = \"Not Valid\"\n", "invalid image reference"),
            ("[[container]]\nname = \"a\"\nimage = \"reg.lan/a\"\nstrat = true\n", "strat"),
            ("[[container]]\nname = \"a\"\nimage = \"reg.lan/a\"\nset = { NAME = \"x\" }\n", "NAME"),
            ("[[container]]\nname = \"a\"\nimage = \"reg.lan/a\"\nlisten = [\"80\\n[Service]\"]\n", "listen address \"80\\n"),
        ];
        for (text, expected) in cases {
            let err = format!("{:#}", read(text).unwrap_err());
            assert!(err.contains(expected), "expected '{expected}' in: {err}");
        }
    }
}
