//! `install`: image → new deployment slot → rendered files on the host → systemd.
//!
//! Order matters: everything is rendered and validated inside a staging directory before the
//! host is touched; then each change is journaled before it is made, and the `NAME` symlink,
//! renamed into place, comes last. Any failure, including the first start with `--now`,
//! undoes the journal so the host is left as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use oci_spec::image::{ImageConfiguration, ImageManifest};

use super::exports::Exports;
use super::hostfs;
use super::journal::Journal;
use super::layout::{Deployment, Layout};
use super::pull::pull;
use crate::digest::Digest;
use crate::reference::{validate_container_name, ImageRef};
use crate::registry::RegistryOptions;
use crate::spec;
use crate::store::{checkout_image, Store, StoredImage};
use crate::systemd::Systemd;
use crate::template::{self, FileKind, Forced, HostDefaults, Inputs};

const RUN_ONCE_LABEL: &str = "atomic.run";
const RUNTIME_CANDIDATES: [&str; 3] = ["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc"];

/// A checked install request, as the CLI hands it over.
#[derive(Debug, Clone)]
pub struct InstallRequest {
    pub image: ImageRef,
    pub name: Option<String>,
    pub values: BTreeMap<String, String>,
    pub runtime: Option<PathBuf>,
    pub start_now: bool,
    pub registry: RegistryOptions,
}

/// What an install did, for the user.
#[derive(Debug)]
pub struct InstallReport {
    pub name: String,
    pub deployment: Deployment,
    pub notes: Vec<String>,
}

pub async fn install(layout: &Layout, request: &InstallRequest) -> Result<InstallReport> {
    let name = request.name.clone().unwrap_or_else(|| request.image.default_container_name());
    validate_container_name(&name)?;
    let _lock = layout.lock()?;
    refuse_existing(layout, &name)?;
    let runtime = find_runtime(request.runtime.as_deref())?;

    let store = Store::open_or_create(&layout.repo())?;
    let mut notes = Vec::new();
    let image = match store.image(&request.image.canonical())? {
        Some(image) => image,
        None => {
            let pulled = pull(&store, &request.image, &request.registry).await?;
            notes.extend(pulled.skipped.iter().map(|s| format!("not stored (OSTree cannot hold it): {s}")));
            pulled.image
        }
    };

    let staging = layout.deployments().join(format!(".{name}.staging"));
    let mut journal = Journal::default();
    let mut systemd = None;
    let outcome = async {
        let prepared = prepare_slot(layout, &store, &image, &name, &runtime, request, &staging, &mut journal)?;
        if prepared.deployment.has_service {
            systemd = Some(Systemd::connect().await?);
        }
        let notes = commit(layout, &prepared, &staging, systemd.as_ref(), request.start_now, &mut journal).await?;
        Ok::<_, anyhow::Error>((prepared.deployment, notes))
    }
    .await;
    match outcome {
        Ok((deployment, mut more)) => {
            notes.append(&mut more);
            Ok(InstallReport { name, deployment, notes })
        }
        Err(err) => {
            let problems = journal.undo(systemd.as_ref()).await;
            Err(with_undo_problems(err, problems))
        }
    }
}

fn with_undo_problems(err: anyhow::Error, problems: Vec<String>) -> anyhow::Error {
    if problems.is_empty() {
        err
    } else {
        err.context(format!("and cleaning up after the failure also failed: {}", problems.join("; ")))
    }
}

fn refuse_existing(layout: &Layout, name: &str) -> Result<()> {
    let link = layout.link(name);
    if std::fs::symlink_metadata(&link).is_ok() {
        bail!("'{name}' is already installed (use `sysctr uninstall {name}` first, or another --name)");
    }
    for slot in [0, 1] {
        let dir = layout.slot(name, slot);
        if dir.exists() {
            bail!("'{name}' is not installed but {} exists; remove it or pick another --name", dir.display());
        }
    }
    let unit = layout.unit_file(name);
    if std::fs::symlink_metadata(&unit).is_ok() {
        bail!("{} already exists and was not installed by sysctr; pick another --name", unit.display());
    }
    Ok(())
}

/// Picks the OCI runtime: `--runtime`, else runc from the usual places.
fn find_runtime(requested: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = requested {
        if !path.is_absolute() {
            bail!("--runtime must be an absolute path, got {}", path.display());
        }
        if !path.is_file() {
            bail!("--runtime {} does not exist", path.display());
        }
        return Ok(path.to_path_buf());
    }
    RUNTIME_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .with_context(|| format!("no OCI runtime found (looked for {}); install runc or pass --runtime", RUNTIME_CANDIDATES.join(", ")))
}

/// Everything rendered and validated for a new deployment, still in the staging directory.
struct PreparedSlot {
    deployment: Deployment,
    unit: Option<String>,
    dropin: Option<String>,
    tmpfiles: Option<String>,
    host_files: Vec<hostfs::PlannedFile>,
    slot_dir: PathBuf,
}

#[allow(clippy::too_many_arguments)]
fn prepare_slot(
    layout: &Layout,
    store: &Store,
    image: &StoredImage,
    name: &str,
    runtime: &Path,
    request: &InstallRequest,
    staging: &Path,
    journal: &mut Journal,
) -> Result<PreparedSlot> {
    let manifest: ImageManifest = serde_json::from_slice(&image.manifest_raw).context("reading the stored manifest")?;
    let config: ImageConfiguration = serde_json::from_slice(&image.config_raw).context("reading the stored image config")?;
    let labels = config.config().as_ref().and_then(|c| c.labels().clone()).unwrap_or_default();
    if labels.get(RUN_ONCE_LABEL).map(String::as_str) == Some("once") {
        bail!("{} is labelled {RUN_ONCE_LABEL}=once: it runs once and is not installed as a service", image.reference);
    }

    if staging.exists() {
        std::fs::remove_dir_all(staging).with_context(|| format!("removing a stale {}", staging.display()))?;
    }
    journal.created_tree(staging);
    std::fs::create_dir(staging).with_context(|| format!("creating {}", staging.display()))?;
    let rootfs = staging.join(spec::ROOTFS);
    checkout_image(store, &image.commit, &rootfs).context("checking out the image")?;
    let exports = Exports::read(&rootfs)?;

    let slot: u8 = 0;
    let slot_dir = layout.slot(name, slot);
    let destdir = host_view(layout, &slot_dir);
    let runtime_text = runtime.to_string_lossy().into_owned();
    let image_id = Digest::parse(config_digest(&manifest)?)?.hex().to_string();
    let forced = Forced {
        name: name.to_string(),
        destdir: destdir.clone(),
        exec_start: format!("{runtime_text} --systemd-cgroup run '{name}'"),
        exec_stop: format!("{runtime_text} --systemd-cgroup kill '{name}'"),
        exec_startpre: String::new(),
        exec_stoppost: String::new(),
        host_uid: nix::unistd::getuid().as_raw(),
        host_gid: nix::unistd::getgid().as_raw(),
        image_name: image.reference.clone(),
        image_id: image_id.clone(),
    };
    let host = HostDefaults {
        runtime: runtime_text.clone(),
        all_process_capabilities: template::all_process_capabilities(template::host_cap_last_cap()?),
    };
    let uuid = uuid::Uuid::new_v4().to_string();
    let values = template::resolve(&Inputs {
        host: &host,
        manifest_defaults: &exports.manifest.default_values,
        user_set: &request.values,
        uuid: &uuid,
        forced: &forced,
    })?;

    let has_service = !exports.manifest.no_container_service;
    let (unit, dropin, tmpfiles) = if has_service {
        let config_json = render_config(&exports, &config, &values, &request.values, name, &rootfs)?;
        write_new(&staging.join("config.json"), &config_json)?;
        let unit = match &exports.service_template {
            Some(text) => template::render_file("service.template", text, FileKind::LineOriented, &values)?,
            None => template::default_unit(&forced)?,
        };
        let tmpfiles = exports
            .tmpfiles_template
            .as_deref()
            .map(|text| template::render_file("tmpfiles.template", text, FileKind::LineOriented, &values))
            .transpose()?;
        let dropin = format!(
            "# Written by sysctr. A container whose init ignores SIGTERM, or state left by a crash,\n\
             # must not outlive a stop nor block the next start.\n\
             [Service]\n\
             ExecStartPre=-{runtime_text} --systemd-cgroup delete --force '{name}'\n\
             ExecStopPost=-{runtime_text} --systemd-cgroup delete --force '{name}'\n"
        );
        (Some(unit), Some(dropin), tmpfiles)
    } else {
        (None, None, None)
    };

    let host_files = match &exports.hostfs {
        Some(dir) => hostfs::plan(dir, &exports.manifest, &values)?,
        None => Vec::new(),
    };
    if !has_service {
        std::fs::remove_dir_all(&rootfs).context("removing the rootfs of a host-files-only image")?;
    }
    if let Some(unit) = &unit {
        write_new(&staging.join(Layout::unit_name(name)), unit)?;
    }
    if let Some(tmpfiles) = &tmpfiles {
        write_new(&staging.join("tmpfiles.conf"), tmpfiles)?;
    }

    let deployment = Deployment {
        name: name.to_string(),
        image: image.reference.clone(),
        image_id,
        manifest_digest: image.manifest_digest.clone(),
        ostree_commit: image.commit.clone(),
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        values: request.values.clone(),
        uuid,
        runtime: runtime_text,
        slot,
        has_service,
        installed_files: Vec::new(),
        created_dirs: Vec::new(),
    };
    Ok(PreparedSlot { deployment, unit, dropin, tmpfiles, host_files, slot_dir })
}

fn config_digest(manifest: &ImageManifest) -> Result<&str> {
    Ok(manifest.config().digest().as_ref())
}

fn render_config(
    exports: &Exports,
    config: &ImageConfiguration,
    values: &BTreeMap<String, String>,
    user_values: &BTreeMap<String, String>,
    name: &str,
    rootfs: &Path,
) -> Result<String> {
    if let Some(text) = &exports.config_template {
        template::check_json_string_values("config.json.template", text, user_values)?;
        let rendered = template::render_file("config.json.template", text, FileKind::Raw, values)?;
        spec::validate(&rendered, "the rendered config.json.template")?;
        return Ok(rendered);
    }
    if let Some(text) = &exports.config_verbatim {
        spec::validate(text, "the image's /exports/config.json")?;
        return Ok(text.clone());
    }
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).ok();
    let group = std::fs::read_to_string(rootfs.join("etc/group")).ok();
    let generated = spec::generate(
        config,
        &spec::GenerateInputs { hostname: name, passwd: passwd.as_deref(), group: group.as_deref() },
    )?;
    spec::validate(&generated, "the generated config.json")?;
    Ok(generated)
}

/// Moves the prepared slot into place and applies it to the host, journaling every step.
async fn commit(
    layout: &Layout,
    prepared: &PreparedSlot,
    staging: &Path,
    systemd: Option<&Systemd>,
    start_now: bool,
    journal: &mut Journal,
) -> Result<Vec<String>> {
    let name = prepared.deployment.name.as_str();
    let mut notes = Vec::new();
    journal.created_tree(&prepared.slot_dir);
    std::fs::rename(staging, &prepared.slot_dir)
        .with_context(|| format!("moving the new deployment to {}", prepared.slot_dir.display()))?;

    let installed = hostfs::install(layout, &prepared.host_files, journal)?;
    for path in &installed.kept_existing {
        notes.push(format!("not installed {path}: a file is already there, and sysctr never overwrites one"));
    }
    let mut deployment = prepared.deployment.clone();
    deployment.installed_files = installed.files;
    deployment.created_dirs = installed.created_dirs;
    deployment.write(&prepared.slot_dir)?;

    if let Some(tmpfiles) = &prepared.tmpfiles {
        let path = layout.tmpfiles_file(name);
        journal.created_file(&path);
        write_host_file(&path, tmpfiles)?;
        if layout.root == Path::new("/") {
            run_tmpfiles("--create", &path)?;
        }
    }
    if let (Some(unit), Some(dropin)) = (&prepared.unit, &prepared.dropin) {
        journal.units_changed();
        let unit_path = layout.unit_file(name);
        journal.created_file(&unit_path);
        write_host_file(&unit_path, unit)?;
        let dropin_dir = layout.unit_dropin_dir(name);
        journal.created_tree(&dropin_dir);
        write_host_file(&dropin_dir.join("sysctr.conf"), dropin)?;
    }

    let link = layout.link(name);
    journal.created_file(&link);
    replace_symlink(&link, &format!("{name}.{}", deployment.slot))?;

    if let Some(systemd) = systemd {
        let unit = Layout::unit_name(name);
        systemd.reload().await?;
        journal.enabled(&unit);
        systemd.enable(&[unit.as_str()]).await?;
        if start_now {
            journal.started(&unit);
            systemd.start(&unit).await?;
        }
    }
    Ok(notes)
}

/// Points `link` at `target` atomically: a new symlink is renamed over the old one, so there is
/// never a moment without it.
pub(super) fn replace_symlink(link: &Path, target: &str) -> Result<()> {
    let file_name = link.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = link.with_file_name(format!(".{file_name}.new"));
    let _ = std::fs::remove_file(&temp);
    std::os::unix::fs::symlink(target, &temp).with_context(|| format!("creating {}", temp.display()))?;
    std::fs::rename(&temp, link).with_context(|| format!("switching {} to {target}", link.display()))
}

fn write_new(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Writes a file on the host, creating its parent directory (e.g. a fresh /etc/tmpfiles.d).
fn write_host_file(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    write_new(path, text)
}

pub(super) fn run_tmpfiles(action: &str, file: &Path) -> Result<()> {
    let output = std::process::Command::new("systemd-tmpfiles")
        .arg(action)
        .arg(file)
        .output()
        .context("running systemd-tmpfiles")?;
    if !output.status.success() {
        bail!(
            "systemd-tmpfiles {action} {} failed: {}",
            file.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// A path under the layout's root as the host will see it.
fn host_view(layout: &Layout, path: &Path) -> String {
    match path.strip_prefix(&layout.root) {
        Ok(rest) => format!("/{}", rest.to_string_lossy()),
        Err(_) => path.to_string_lossy().into_owned(),
    }
}
