//! Building a deployment slot: the image checked out and every file rendered and validated,
//! before anything outside the storage is touched.
//!
//! A slot (`deployments/NAME.N`) holds all that is needed to make it the active one again
//! later (rollback): `rootfs/`, `config.json`, the unit and its drop-in, `tmpfiles.conf`,
//! `hostfs/` (the host files as rendered for this slot) and `info`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use oci_spec::image::ImageConfiguration;

use super::bundle;
use super::exports::{Exports, ExportsManifest};
use super::hostfs::{self, PlannedContent};
use super::readiness::{
    readiness_of, sets_restart, starts_with_exec_start, supervise_helper, unit_type, ReadySettings, ReadyUnit,
    TARGET_SUPERVISE,
};
use super::socket::{render_socket, Listen};
use crate::deploy::host::facts::{host_facts, HostFacts};
use crate::deploy::host::layout::{
    Deployment, Layout, ABSENT_HOST_FILE, DROPIN_FILE, HOSTFS_DIR, READINESS_FILE, SOCKET_FILE, TMPFILES_FILE,
    UNIT_FILE,
};
use crate::deploy::host::reproducible;
use crate::deploy::journal::Journal;
use crate::rooted::{Resolve, RootedDir};
use crate::spec::{self, CheckedConfig, RootUse};
use crate::store::{checkout_image, Store, StoredImage};
use crate::supervise::plan::{Readiness, ReadyMode, SupervisePlan};
use crate::systemd::{MissingUnit, Target};
use crate::template::{self, FileKind, Forced, HostDefaults, Inputs};

const RUN_ONCE_LABEL: &str = "atomic.run";
/// The largest `/etc/passwd` or `/etc/group` of an image read to resolve its `User`.
const MAX_ACCOUNTS_FILE: u64 = 4 * 1024 * 1024;

/// What building a slot has to tell the user.
#[derive(Debug, Default)]
pub(in crate::deploy) struct SlotNotes {
    pub notes: Vec<String>,
    /// Dependencies of the unit on units this host does not have.
    pub missing_units: Vec<MissingUnit>,
}

/// Everything a slot is built from.
#[derive(Debug)]
pub(in crate::deploy) struct SlotRequest<'a> {
    pub name: &'a str,
    pub slot: u8,
    pub image: &'a StoredImage,
    pub runtime: &'a Path,
    /// Only what the user set with `--set`.
    pub user_values: &'a BTreeMap<String, String>,
    /// What systemd listens on for the container (`--listen`): its socket unit.
    pub listen: &'a Listen,
    /// What the user set about its readiness (`--ready`, `--health-cmd`, …).
    pub ready: &'a ReadySettings,
    pub uuid: &'a str,
    /// What the container is installed into, as the service manager says.
    pub target: Target,
}

/// Builds the slot in a staging directory, then moves it to `deployments/NAME.N`, replacing
/// a slot left there by an older deployment only once the new one is complete. Returns warnings
/// for the user along with the deployment.
pub(in crate::deploy) fn build_slot(
    layout: &Layout,
    store: &Store,
    request: &SlotRequest,
    journal: &mut Journal,
) -> Result<(Deployment, SlotNotes)> {
    let name = request.name;
    let staging = layout.deployments().join(format!(".{name}.{}.staging", request.slot));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).with_context(|| format!("removing a stale {}", staging.display()))?;
    }
    journal.created_tree(&staging)?;
    std::fs::create_dir(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let (deployment, warnings) = fill_slot(layout, store, request, &staging)?;

    let slot_dir = layout.slot(name, request.slot);
    if slot_dir.exists() {
        std::fs::remove_dir_all(&slot_dir)
            .with_context(|| format!("removing the older deployment in {}", slot_dir.display()))?;
    }
    journal.created_tree(&slot_dir)?;
    std::fs::rename(&staging, &slot_dir)
        .with_context(|| format!("moving the new deployment to {}", slot_dir.display()))?;
    Ok((deployment, warnings))
}

fn fill_slot(layout: &Layout, store: &Store, request: &SlotRequest, dir: &Path) -> Result<(Deployment, SlotNotes)> {
    let image = request.image;
    let name = request.name;
    let config: ImageConfiguration =
        serde_json::from_slice(&image.config_raw).context("reading the stored image config")?;
    if runs_once(&config) {
        bail!(
            "{0} is labelled {RUN_ONCE_LABEL}=once: it is run once, not kept as a service (`sysctr run {0}`)",
            image.reference
        );
    }

    let rootfs = dir.join(spec::ROOTFS);
    checkout_image(store, &image.commit, &rootfs).context("checking out the image")?;
    let exports = Exports::read(&rootfs)?;

    let runtime = request.runtime.to_string_lossy().into_owned();
    let (forced, values) = resolve_values(layout, request, &layout.slot(name, request.slot), &exports.manifest)?;

    let has_service = !exports.manifest.no_container_service;
    if !has_service && !request.listen.is_empty() {
        bail!("{} ships no service (noContainerService): there is nothing for a socket to start", image.reference);
    }
    let mut has_socket = false;
    let mut readiness = None;
    let mut warnings = SlotNotes::default();
    let mut config_rewrites = Vec::new();
    if has_service {
        let config_json =
            render_config(&exports, &config, &values, request.user_values, name, &rootfs, RootUse::ReadOnly)?;
        warnings.notes.extend(
            config_json.rewrites.iter().map(|rewrite| format!("config.json rewritten for this runc: {rewrite}")),
        );
        config_rewrites = config_json.rewrites;
        let facts = host_facts(request.target)?;
        write(&dir.join(ABSENT_HOST_FILE), "")?;
        let mut config_text = config_json.text;
        // A root on disk gets its host files at boot, or later: each start looks (see `fit_to_host`).
        if !facts.fit_at_start {
            let slot_dir = layout.slot(name, request.slot);
            if let Some((text, changes)) = fit_shared_host_files(layout, &config_text, &slot_dir)? {
                config_text = text;
                warnings.notes.extend(changes.iter().map(ToString::to_string));
            }
        }
        write(&dir.join("config.json"), &config_text)?;
        let unit = render_unit(exports.service_template.as_deref(), &forced, &values)?;
        let host = layout.host_dir()?;
        crate::systemd::check_install_links(&host, &unit, &Layout::unit_name(name), layout.unit_dir())?;
        warnings.missing_units = crate::systemd::check_dependencies(&host, &Layout::unit_name(name), &unit)?;
        write(&dir.join(UNIT_FILE), &unit)?;
        if let Some(socket) = render_socket(exports.socket_template.as_deref(), request.listen, &forced, &values)? {
            crate::systemd::check_install_links(&host, &socket, &Layout::socket_name(name), layout.unit_dir())?;
            write(&dir.join(SOCKET_FILE), &socket)?;
            has_socket = true;
        }
        let helper = supervise_helper(&host, facts.fit_at_start)?;
        let ready_unit = ready_unit(layout, request, &config, &exports, &unit, &forced, helper.as_deref())?;
        if let Some((resolved, plan)) = &ready_unit {
            if plan.supervise.is_some() {
                let supervise_plan = SupervisePlan {
                    name: name.to_owned(),
                    runtime: request.runtime.to_path_buf(),
                    pid_file: bundle::run_file(name, "pid"),
                    health_file: bundle::run_file(name, "health"),
                    readiness: resolved.clone(),
                };
                write(&dir.join(READINESS_FILE), &serde_json::to_string_pretty(&supervise_plan)?)?;
            }
        }
        let fit = facts.fit_at_start.then(|| StartFit {
            sysctr: TARGET_SYSCTR,
            storage: host_view(layout, &layout.storage),
            bundle: layout.os_image.then(|| bundle::bundle_dir(name)),
        });
        if fit.is_some() && host.kind(Path::new(TARGET_SYSCTR.trim_start_matches('/')))?.is_none() {
            warnings.notes.push(format!(
                "the target has no {TARGET_SYSCTR}: at start, the unit cannot fit the capabilities offered \
                 to the target's bounding set (runc refuses any the target cannot grant), nor stand in for \
                 /etc/hosts or /etc/resolv.conf where the target has none"
            ));
        }
        let supervised = ready_unit.as_ref().is_some_and(|(_, plan)| plan.supervise.is_some());
        let mut dropin_text = dropin(&runtime, name, fit, supervised);
        if let Some((resolved, plan)) = ready_unit {
            dropin_text.push_str(&plan.dropin_lines(&resolved));
            readiness = Some(resolved);
        }
        write(&dir.join(DROPIN_FILE), &dropin_text)?;
        if let Some(text) = &exports.tmpfiles_template {
            let tmpfiles = template::render_file("tmpfiles.template", text, FileKind::Tmpfiles, &values)?;
            write(&dir.join(TMPFILES_FILE), &tmpfiles)?;
        }
    }
    if let Some(hostfs_dir) = &exports.hostfs {
        let planned = hostfs::plan(hostfs_dir, &exports.manifest, &values)?;
        stage_host_files(&dir.join(HOSTFS_DIR), &planned)?;
    }
    if !has_service {
        std::fs::remove_dir_all(&rootfs).context("removing the rootfs of a host-files-only image")?;
    }

    let deployment = Deployment {
        name: name.to_string(),
        image: image.reference.clone(),
        image_id: forced.image_id.clone(),
        manifest_digest: image.manifest_digest.clone(),
        ostree_commit: image.commit.clone(),
        created: humantime::format_rfc3339_seconds(reproducible::now()?).to_string(),
        values: request.user_values.clone(),
        uuid: request.uuid.to_string(),
        runtime,
        slot: request.slot,
        has_service,
        installed_files: Vec::new(),
        created_dirs: Vec::new(),
        config_rewrites,
        shadowed_vendor_unit_enabled: None,
        auto_update: true,
        listen: request.listen.clone(),
        has_socket,
        ready_settings: request.ready.clone(),
        readiness,
        failed_update: None,
    };
    deployment.write(dir)?;
    Ok((deployment, warnings))
}

/// Whether an image is labelled to run once (`atomic.run=once`) rather than be kept as a service.
pub(in crate::deploy) fn runs_once(config: &ImageConfiguration) -> bool {
    let labels = config.config().as_ref().and_then(|c| c.labels().as_ref());
    labels.and_then(|l| l.get(RUN_ONCE_LABEL)).map(String::as_str) == Some("once")
}

/// The forced values and the final template values of a container whose files live in `destdir`.
pub(in crate::deploy) fn resolve_values(
    layout: &Layout,
    request: &SlotRequest,
    destdir: &Path,
    manifest: &ExportsManifest,
) -> Result<(Forced, BTreeMap<String, String>)> {
    let (name, runtime) = (request.name, request.runtime.to_string_lossy().into_owned());
    let HostFacts { uid: host_uid, gid: host_gid, all_process_capabilities: all_capabilities, .. } =
        host_facts(request.target)?;
    let forced = Forced {
        name: name.to_string(),
        destdir: host_view(layout, destdir),
        exec_start: run_command(layout, &runtime, name, None),
        exec_stop: format!("{runtime} --systemd-cgroup kill '{name}'"),
        exec_startpre: String::new(),
        exec_stoppost: String::new(),
        host_uid,
        host_gid,
        image_name: request.image.reference.clone(),
        image_id: request.image.image_id()?,
    };
    let host = HostDefaults { all_process_capabilities: all_capabilities, runtime };
    let values = template::resolve(&Inputs {
        host: &host,
        manifest_defaults: &manifest.default_values,
        user_set: request.user_values,
        uuid: request.uuid,
        forced: &forced,
    })?;
    Ok((forced, values))
}

fn render_unit(service_template: Option<&str>, forced: &Forced, values: &BTreeMap<String, String>) -> Result<String> {
    match service_template {
        Some(text) => template::render_unit("service.template", text, forced, values),
        None => template::default_unit(forced),
    }
}

/// The unit a slot built from `request` would install, read from the store without a checkout;
/// `None` for an image that ships no service.
pub(in crate::deploy) fn preview_unit(layout: &Layout, store: &Store, request: &SlotRequest) -> Result<Option<String>> {
    let read = |path: &str| -> Result<Option<String>> {
        store
            .read_image_file(&request.image.commit, path)?
            .map(|bytes| String::from_utf8(bytes).with_context(|| format!("{path} is not UTF-8")))
            .transpose()
    };
    let manifest: ExportsManifest = match read("exports/manifest.json")? {
        Some(text) => ExportsManifest::parse(&text)?,
        None => ExportsManifest::default(),
    };
    if manifest.no_container_service {
        return Ok(None);
    }
    let (forced, values) = resolve_values(layout, request, &layout.slot(request.name, request.slot), &manifest)?;
    render_unit(read("exports/service.template")?.as_deref(), &forced, &values).map(Some)
}

/// The runtime's command line that runs the container `name`, writing the pid of its process
/// to `pid_file` if given.
fn run_command(layout: &Layout, runtime: &str, name: &str, pid_file: Option<&Path>) -> String {
    let mut command = format!("{runtime} --systemd-cgroup run");
    if let Some(pid_file) = pid_file {
        command.push_str(&format!(" --pid-file '{}'", pid_file.display()));
    }
    if layout.os_image {
        command.push_str(&format!(" --bundle '{}'", bundle::bundle_dir(name).display()));
    }
    command + &format!(" '{name}'")
}

/// The readiness of the container a slot runs, and how its unit reaches it. Where neither the
/// image nor the user says, the image's unit decides: `Type=notify` is `notify` as it is, a
/// simple unit that runs `$EXEC_START` alone is `started`, any other is left as it is (`None`).
fn ready_unit(
    layout: &Layout,
    request: &SlotRequest,
    config: &ImageConfiguration,
    exports: &Exports,
    unit: &str,
    forced: &Forced,
    helper: Option<&str>,
) -> Result<Option<(Readiness, ReadyUnit)>> {
    let name = request.name;
    let labels = config.config().as_ref().and_then(|c| c.labels().as_ref());
    let image_settings = exports.manifest.readiness.over(&ReadySettings::from_labels(labels)?);
    let settings = request.ready.over(&image_settings);
    let readiness = settings.resolve().with_context(|| format!("resolving when '{name}' is ready"))?;
    let asked = settings.ready.is_some() || settings.health_cmd.is_some();
    if !asked {
        match unit_type(unit) {
            Some("notify") => return Ok(Some((readiness_of(ReadyMode::Notify, readiness), ReadyUnit::as_it_is()))),
            None | Some("simple" | "exec") => {}
            Some(_) => return Ok(None),
        }
    }
    if readiness.ready == ReadyMode::Notify {
        return Ok(Some((readiness, ReadyUnit { supervise: None, lines: true, unit_restarts: sets_restart(unit) })));
    }
    let runs_exec_start = starts_with_exec_start(unit, &forced.exec_start);
    match helper {
        Some(helper) if runs_exec_start => {
            let plan = layout.slot(name, request.slot).join(READINESS_FILE);
            let run =
                run_command(layout, &request.runtime.to_string_lossy(), name, Some(&bundle::run_file(name, "pid")));
            let supervise = format!("{helper} '{}' -- {run}", host_view(layout, &plan));
            Ok(Some((
                readiness,
                ReadyUnit { supervise: Some(supervise), lines: true, unit_restarts: sets_restart(unit) },
            )))
        }
        _ if !asked => Ok(None),
        _ if !runs_exec_start => bail!(
            "ready = {} needs the image's unit to start the container with $EXEC_START alone (ExecStart=$EXEC_START), \
             which sysctr then runs under its supervisor",
            readiness.ready
        ),
        _ => bail!(
            "ready = {} needs {TARGET_SUPERVISE} on the target (the sysctr package installs it), to run the container \
             under its supervisor",
            readiness.ready
        ),
    }
}

/// How each start of a container installed into an OS image fits its config to the host.
struct StartFit {
    /// sysctr and the storage, as the target sees them.
    sysctr: &'static str,
    storage: String,
    /// Where the fitted config is written when the slot is read-only at run time (`--os-image`):
    /// the unit's runc runs that bundle (see `bundle`).
    bundle: Option<PathBuf>,
}

/// sysctr's own unit settings, added as a drop-in so that they apply whatever the image's
/// template says. `fit` makes each start fit the config to the host it starts on (see
/// `fit_to_host`). A `supervised` start clears a crash's state itself, only when there is some.
fn dropin(runtime: &str, name: &str, fit: Option<StartFit>, supervised: bool) -> String {
    let mut text = "# Written by sysctr. A container whose init ignores SIGTERM, or state left by a crash,\n\
         # must not outlive a stop nor block the next start.\n\
         [Service]\n"
        .to_owned();
    if !supervised {
        text.push_str(&format!("ExecStartPre=-{runtime} --systemd-cgroup delete --force '{name}'\n"));
    }
    text.push_str(&format!("ExecStopPost=-{runtime} --systemd-cgroup delete --force '{name}'\n"));
    match fit {
        Some(StartFit { sysctr, storage, bundle: None }) => text.push_str(&format!(
            "# Installed into an OS image: fit the config to this host (capabilities, /etc/hosts).\n\
             ExecStartPre=-{sysctr} --storage '{storage}' fit-host '{name}'\n"
        )),
        // Not to be ignored: runc runs the bundle this writes.
        Some(StartFit { sysctr, storage, bundle: Some(bundle) }) => text.push_str(&format!(
            "# Provided by the OS image, whose /usr is read-only: the config fitted to this host\n\
             # (capabilities, /etc/hosts) is written to the bundle runc runs.\n\
             ExecStartPre={sysctr} --storage '{storage}' fit-host --bundle '{}' '{name}'\n",
            bundle.display()
        )),
        None => {}
    }
    text
}

/// Where containers installed into an OS image (`--root`) expect sysctr on the target, as the
/// package installs it.
pub(in crate::deploy) const TARGET_SYSCTR: &str = "/usr/bin/sysctr";

/// What fitting a container's config to the host it starts on changed.
#[derive(Debug, Default)]
pub struct HostFit {
    /// Capabilities outside the host's bounding set, removed.
    pub dropped_capabilities: Vec<String>,
    /// Shared host files stood in for, or given back.
    pub host_files: Vec<spec::HostFileChange>,
}

/// Fits the active `config.json` of `name` to the host this runs on, before each start of a
/// container installed into an OS image: narrowed to the bounding set of this process (which
/// systemd started with the unit's own), and with an empty file mounted for `/etc/hosts` or
/// `/etc/resolv.conf` while the host has none. Takes no lock: it runs inside a start that a
/// locked `update` may be waiting for, and the file is replaced atomically. With `bundle`, the
/// slot is left as it is (an OS image's, read-only) and the fitted config is written as the
/// bundle there, at every start (see `bundle`).
pub fn fit_to_host(layout: &Layout, name: &str, bundle: Option<&Path>) -> Result<HostFit> {
    let record = layout.read_info(name)?;
    let slot_dir = layout.slot(name, record.slot);
    let slot = RootedDir::open(&slot_dir, Resolve::NoSymlinks)?;
    let config = slot.read_file(Path::new("config.json"), spec::MAX_CONFIG_SIZE)?;
    let mut config = String::from_utf8(config).with_context(|| format!("the config.json of '{name}' is not UTF-8"))?;
    let mut fit = HostFit::default();
    let bounding = template::host_bounding_set()?;
    if let Some((narrowed, dropped)) = spec::narrow_capabilities(&config, bounding)
        .with_context(|| format!("fitting the capabilities of '{name}' to this host"))?
    {
        (config, fit.dropped_capabilities) = (narrowed, dropped);
    }
    if let Some((fitted, changes)) = fit_shared_host_files(layout, &config, &slot_dir)
        .with_context(|| format!("fitting the host files of '{name}' to this host"))?
    {
        (config, fit.host_files) = (fitted, changes);
    }
    if let Some(bundle) = bundle {
        bundle::write_bundle(layout, &config, &layout.as_host_sees(&slot_dir), bundle)?;
        return Ok(fit);
    }
    if fit.dropped_capabilities.is_empty() && fit.host_files.is_empty() {
        return Ok(fit);
    }
    // Slots made before the stand-in was part of every slot.
    if slot.kind(Path::new(ABSENT_HOST_FILE))?.is_none() {
        slot.replace_file(Path::new(ABSENT_HOST_FILE), b"", 0o644)?;
    }
    slot.replace_file(Path::new("config.json"), config.as_bytes(), 0o644)?;
    Ok(fit)
}

/// `config` with its mounts of shared host files pointed at the host's, or at the slot's empty
/// stand-in where the host (looked at beneath its root) has none.
fn fit_shared_host_files(
    layout: &Layout,
    config: &str,
    slot_dir: &Path,
) -> Result<Option<(String, Vec<spec::HostFileChange>)>> {
    let host = layout.host_dir()?;
    let stand_in = host_view(layout, &slot_dir.join(ABSENT_HOST_FILE));
    spec::fit_host_files(config, |path| host.is_file(Path::new(path.trim_start_matches('/'))), &stand_in)
}

/// The container's `config.json`: the image's template rendered, its verbatim config, or one
/// generated from the image config; checked against the contract, legacy shapes rewritten.
pub(in crate::deploy) fn render_config(
    exports: &Exports,
    config: &ImageConfiguration,
    values: &BTreeMap<String, String>,
    user_values: &BTreeMap<String, String>,
    name: &str,
    rootfs: &Path,
    root_use: RootUse,
) -> Result<CheckedConfig> {
    if let Some(text) = &exports.config_template {
        template::check_json_string_values("config.json.template", text, user_values)?;
        let rendered = template::render_file("config.json.template", text, FileKind::Raw, values)?;
        return spec::check(&rendered, "the rendered config.json.template", root_use);
    }
    if let Some(text) = &exports.config_verbatim {
        return spec::check(text, "the image's /exports/config.json", root_use);
    }
    let (passwd, group) = image_accounts(rootfs)?;
    let generated = spec::generate(
        config,
        &spec::GenerateInputs { hostname: name, passwd: passwd.as_deref(), group: group.as_deref() },
    )?;
    spec::check(&generated, "the generated config.json", root_use)
}

/// The image's `/etc/passwd` and `/etc/group`, to resolve its user by name: resolved inside the
/// image (`/etc -> /host/etc` must not make this read the host's users; a symlink at the end is
/// not followed), regular files only (a FIFO would wait for a writer, a device might never end)
/// of at most [`MAX_ACCOUNTS_FILE`] bytes. A file that cannot be used is left out, with a note
/// saying why.
pub(in crate::deploy) fn image_accounts(rootfs: &Path) -> Result<(Option<String>, Option<String>)> {
    let image_root = RootedDir::open(rootfs, Resolve::InRoot)?;
    let read = |name: &str| -> Option<String> {
        let content = image_root.read_regular_file(Path::new(name), MAX_ACCOUNTS_FILE).and_then(|bytes| {
            bytes.map(String::from_utf8).transpose().with_context(|| format!("/{name} is not UTF-8"))
        });
        content
            .map_err(|err| crate::output::note(format!("the image's /{name} is not used to find its user: {err:#}")))
            .ok()
            .flatten()
    };
    Ok((read("etc/passwd"), read("etc/group")))
}

/// Writes the rendered host files under `dir`, at their host paths, modes kept. The image chose
/// every name, its symlinks included: nothing is written through a symlink.
fn stage_host_files(dir: &Path, planned: &[hostfs::PlannedFile]) -> Result<()> {
    std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    let staging = RootedDir::open(dir, Resolve::NoSymlinks)?;
    for file in planned {
        let relative = Path::new(file.path.trim_start_matches('/'));
        if let Some(parent) = relative.parent() {
            staging.create_dir_all(parent)?;
        }
        match &file.content {
            PlannedContent::Dir { mode } => match staging.kind(relative)? {
                Some(_) => staging.set_dir_mode(relative, *mode),
                None => staging.create_dir(relative, *mode),
            },
            PlannedContent::File { bytes, mode } => staging.create_file(relative, bytes, *mode),
            PlannedContent::Symlink { target } => staging.symlink(relative, Path::new(target)),
        }
        .with_context(|| format!("staging host file {}", file.path))?;
    }
    Ok(())
}

/// The host files staged in a slot, ready to install.
pub(in crate::deploy) fn staged_host_files(slot_dir: &Path) -> Result<Vec<hostfs::PlannedFile>> {
    let dir = slot_dir.join(HOSTFS_DIR);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    // Already renamed and rendered: plan them as they are.
    hostfs::plan(&dir, &ExportsManifest::default(), &BTreeMap::new())
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// A path under the layout's root as the host will see it.
fn host_view(layout: &Layout, path: &Path) -> String {
    layout.as_host_sees(path).to_string_lossy().into_owned()
}
