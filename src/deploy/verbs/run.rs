//! Running an image once in the foreground: `sysctr run`, and `install` of an image labelled
//! `atomic.run=once`, which atomic ran once instead of installing.
//!
//! The container gets a throw-away writable root: an overlay whose lower layer is a read-only
//! checkout and whose upper layer is a tmpfs, so the store's files (hard-linked into checkouts)
//! are never written. The bundle lives in `STORAGE/run/sysctr-run-PID-N` while the container runs;
//! SIGINT, SIGTERM and SIGHUP are passed to runc, which passes them to the container, and the
//! bundle is removed before sysctr exits. A bundle left by a sysctr that was killed outright is
//! removed by the next `run`.
//!
//! An image labelled to run once is run with its own templates, as a service would be: its
//! `config.json.template` (or a generated config), `manifest.json` defaults, `--set` values and
//! `tmpfiles.template` (applied for the run, removed after). Any other image is run with a config
//! generated from its image config.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oci_spec::image::ImageConfiguration;
use tokio::signal::unix::{signal, SignalKind};

use super::pull::pull;
use crate::deploy::deployment::exports::Exports;
use crate::deploy::deployment::readiness::ReadySettings;
use crate::deploy::deployment::slot::{image_accounts, render_config, resolve_values, runs_once, SlotRequest};
use crate::deploy::deployment::socket::Listen;
use crate::deploy::host::facts::find_runtime;
use crate::deploy::host::layout::{Layout, TMPFILES_FILE};
use crate::reference::{validate_container_name, ImageRef};
use crate::registry::RegistryOptions;
use crate::spec::{self, RootUse};
use crate::store::{checkout_image, Store, StoredImage};
use crate::systemd::{ServiceManager, Target, Tmpfiles};
use crate::template::{self, FileKind};

const BUNDLE_PREFIX: &str = "sysctr-run-";

/// A one-off run request.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub image: ImageRef,
    /// Replaces the image's command when not empty.
    pub command: Vec<String>,
    pub runtime: Option<PathBuf>,
    pub registry: RegistryOptions,
    /// `NAME` for the templates of a run-once image (default: the image's default container name).
    pub name: Option<String>,
    /// `--set` values for the templates of a run-once image.
    pub values: BTreeMap<String, String>,
}

/// Runs the image once in the foreground and returns the container's exit code (128+N when it
/// was killed by signal N); nothing is left behind.
pub async fn run_once(layout: &Layout, request: &RunRequest, systemd: &impl ServiceManager) -> Result<i32> {
    if !systemd.target().runs_units() {
        bail!("`run` starts a container on this host; it cannot work in an offline root ({})", layout.root.display());
    }
    let runtime = find_runtime(layout, request.runtime.as_deref())?;
    let bundle = {
        let _lock = layout.lock()?;
        remove_stale_bundles(layout, &runtime, systemd);
        let store = Store::open_or_create(&layout.repo())?;
        let stored = match store.image(&request.image.canonical())? {
            Some(image) => image,
            None => pull(&store, &request.image, &request.registry).await?.image,
        };
        let mut bundle = Bundle::create(layout)?;
        if let Err(err) = bundle.prepare(layout, &store, &stored, request, &runtime, systemd) {
            bundle.remove(&runtime, systemd);
            return Err(err);
        }
        bundle
    };
    let status = bundle.run(&runtime).await;
    {
        let _lock = layout.lock()?;
        bundle.remove(&runtime, systemd);
        // The directory goes too once no run uses it, so that a run leaves the storage as it was.
        let _ = std::fs::remove_dir(bundles_dir(layout));
    }
    let status = status.with_context(|| format!("running {} with {}", request.image.canonical(), runtime.display()))?;
    Ok(exit_code(status))
}

/// The exit code a shell would report for `status`.
fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    }
}

fn bundles_dir(layout: &Layout) -> PathBuf {
    layout.state.join("run")
}

/// One run's bundle directory: `config.json`, `rootfs/` (the overlay), `lower/` (the checkout)
/// and `scratch/` (the tmpfs holding the overlay's upper layer).
struct Bundle {
    dir: PathBuf,
    /// The runtime's container id, also the directory's name.
    id: String,
    /// The rendered tmpfiles.d file applied for this run, if the image has one.
    tmpfiles: Option<PathBuf>,
}

impl Bundle {
    fn create(layout: &Layout) -> Result<Bundle> {
        let parent = bundles_dir(layout);
        std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
        let id = format!("{BUNDLE_PREFIX}{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let dir = parent.join(&id);
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Bundle { dir, id, tmpfiles: None })
    }

    fn prepare(
        &mut self,
        layout: &Layout,
        store: &Store,
        image: &StoredImage,
        request: &RunRequest,
        runtime: &Path,
        systemd: &impl ServiceManager,
    ) -> Result<()> {
        let lower = self.dir.join("lower");
        checkout_image(store, &image.commit, &lower)?;
        self.mount_throwaway_root(&lower)?;
        let config: ImageConfiguration =
            serde_json::from_slice(&image.config_raw).context("reading the stored image config")?;
        let mut value: serde_json::Value = if runs_once(&config) {
            self.render_image_files(layout, image, &config, request, runtime, &lower)?
        } else {
            let mut generated = generated_config(&config, &lower, &self.id, &request.command)?;
            generated["root"]["readonly"] = serde_json::Value::Bool(false);
            generated
        };
        if !request.command.is_empty() {
            value["process"]["args"] = serde_json::json!(request.command);
        }
        let text = serde_json::to_string_pretty(&value).context("serializing config.json")?;
        std::fs::write(self.dir.join("config.json"), text).context("writing config.json")?;
        if let Some(tmpfiles) = &self.tmpfiles {
            systemd.tmpfiles(Tmpfiles::Create, tmpfiles)?;
        }
        Ok(())
    }

    fn mount_throwaway_root(&self, lower: &Path) -> Result<()> {
        // The writable layer lives in memory: it is thrown away anyway, and an overlay's upper
        // layer cannot sit on every filesystem the storage may be on (overlayfs, for one).
        let scratch = self.dir.join("scratch");
        let rootfs = self.dir.join(spec::ROOTFS);
        for dir in [&scratch, &rootfs] {
            std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        mount(Some("tmpfs"), &scratch, Some("tmpfs"), MsFlags::empty(), Some("mode=0755"))
            .context("mounting the scratch space of the throw-away root")?;
        for dir in ["upper", "work"] {
            std::fs::create_dir(scratch.join(dir))
                .with_context(|| format!("creating {}", scratch.join(dir).display()))?;
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            scratch.join("upper").display(),
            scratch.join("work").display()
        );
        mount(Some("overlay"), &rootfs, Some("overlay"), MsFlags::empty(), Some(options.as_str()))
            .context("mounting the throw-away root filesystem")
    }

    /// The config (and tmpfiles.d file) of a run-once image, from its own templates.
    fn render_image_files(
        &mut self,
        layout: &Layout,
        image: &StoredImage,
        config: &ImageConfiguration,
        request: &RunRequest,
        runtime: &Path,
        lower: &Path,
    ) -> Result<serde_json::Value> {
        let name = request.name.clone().unwrap_or_else(|| request.image.default_container_name());
        validate_container_name(&name)?;
        let exports = Exports::read(lower)?;
        let uuid = uuid::Uuid::new_v4().to_string();
        let slot_request = SlotRequest {
            name: &name,
            slot: 0,
            image,
            runtime,
            user_values: &request.values,
            listen: &Listen::default(),
            ready: &ReadySettings::default(),
            uuid: &uuid,
            // `run` refuses an offline root before it gets here.
            target: Target::Booted,
        };
        let (_, values) = resolve_values(layout, &slot_request, &self.dir, &exports.manifest)?;
        let checked = render_config(&exports, config, &values, &request.values, &name, lower, RootUse::Throwaway)?;
        for rewrite in &checked.rewrites {
            crate::output::note(format!("config.json rewritten for this runc: {rewrite}"));
        }
        if let Some(text) = &exports.tmpfiles_template {
            let rendered = template::render_file("tmpfiles.template", text, FileKind::Tmpfiles, &values)?;
            let path = self.dir.join(TMPFILES_FILE);
            std::fs::write(&path, rendered).with_context(|| format!("writing {}", path.display()))?;
            self.tmpfiles = Some(path);
        }
        serde_json::from_str(&checked.text).context("reading the rendered config.json")
    }

    /// Runs the container in the foreground, passing on the signals that ask sysctr to stop.
    async fn run(&self, runtime: &Path) -> Result<ExitStatus> {
        let mut child = tokio::process::Command::new(runtime)
            .arg("run")
            .arg("--bundle")
            .arg(&self.dir)
            .arg(&self.id)
            .stdin(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", runtime.display()))?;
        let pid = child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw);
        let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
        let mut hangup = signal(SignalKind::hangup()).context("handling SIGHUP")?;
        loop {
            let received = tokio::select! {
                status = child.wait() => return status.context("waiting for the container"),
                _ = interrupt.recv() => Signal::SIGINT,
                _ = terminate.recv() => Signal::SIGTERM,
                _ = hangup.recv() => Signal::SIGHUP,
            };
            // runc, in the foreground, passes what it receives to the container's process.
            if let Some(pid) = pid {
                let _ = kill(pid, received);
            }
        }
    }

    /// Removes everything of the run: the runtime's state, the tmpfiles entries, the mounts and
    /// the directory. Best effort: it also runs after failures.
    fn remove(&self, runtime: &Path, systemd: &impl ServiceManager) {
        let _ = std::process::Command::new(runtime)
            .args(["delete", "--force", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(tmpfiles) = &self.tmpfiles {
            let _ = systemd.tmpfiles(Tmpfiles::Remove, tmpfiles);
        }
        remove_bundle_dir(&self.dir);
    }
}

/// The config of an image without templates, generated from its image config; `command`, when
/// not empty, replaces the image's.
fn generated_config(
    config: &ImageConfiguration,
    lower: &Path,
    hostname: &str,
    command: &[String],
) -> Result<serde_json::Value> {
    let (passwd, group) = image_accounts(lower)?;
    let inputs = spec::GenerateInputs { hostname, passwd: passwd.as_deref(), group: group.as_deref() };
    let generated = match (spec::generate(config, &inputs), command.is_empty()) {
        (Ok(text), _) => text,
        // An image with nothing to run can still run a command given here.
        (Err(_), false) => {
            let mut with_cmd = config.clone();
            let mut inner = with_cmd.config().clone().unwrap_or_default();
            inner.set_cmd(Some(command.to_vec()));
            with_cmd.set_config(Some(inner));
            spec::generate(&with_cmd, &inputs)?
        }
        (Err(err), true) => return Err(err),
    };
    serde_json::from_str(&generated).context("reading the generated config")
}

/// Unmounts and removes a bundle directory. A mount that cannot be removed keeps the directory:
/// removing files through a live mount is never right.
fn remove_bundle_dir(dir: &Path) {
    let mut mounted = false;
    for mountpoint in [dir.join(spec::ROOTFS), dir.join("scratch")] {
        match umount2(&mountpoint, MntFlags::empty()) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(_) => mounted |= umount2(&mountpoint, MntFlags::MNT_DETACH).is_err(),
        }
    }
    if !mounted {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Removes the bundles of runs whose sysctr is gone (killed before it could clean up).
fn remove_stale_bundles(layout: &Layout, runtime: &Path, systemd: &impl ServiceManager) {
    let Ok(entries) = std::fs::read_dir(bundles_dir(layout)) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(BUNDLE_PREFIX).and_then(|rest| rest.split('-').next()) else { continue };
        let Ok(pid) = pid.parse::<i32>() else { continue };
        if pid == std::process::id() as i32 || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = std::process::Command::new(runtime)
            .args(["delete", "--force", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let tmpfiles = entry.path().join(TMPFILES_FILE);
        if tmpfiles.exists() {
            let _ = systemd.tmpfiles(Tmpfiles::Remove, &tmpfiles);
        }
        remove_bundle_dir(&entry.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt as _;

    #[test]
    fn exit_codes_are_a_shells() {
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(Signal::SIGTERM as i32)), 143);
        assert_eq!(exit_code(ExitStatus::from_raw(Signal::SIGINT as i32)), 130);
    }

    /// An image config that runs as the user `marker`, found only in a file outside the image.
    fn marker_user_config() -> ImageConfiguration {
        serde_json::from_value(serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"User": "marker", "Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": []}
        }))
        .unwrap()
    }

    const MARKER_PASSWD: &str = "marker:x:4242:4343::/:/bin/sh\n";

    /// Generates the config of an image whose `etc/passwd` is whatever `plant` put there, on a
    /// thread: it must neither take long nor use the marker user.
    fn generate_with(plant: impl FnOnce(&Path, &Path)) -> (tempfile::TempDir, Result<String>) {
        let dir = tempfile::tempdir().unwrap();
        let (lower, outside) = (dir.path().join("lower"), dir.path().join("outside"));
        std::fs::create_dir_all(lower.join("etc")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        plant(&lower, &outside);
        let (sender, receiver) = std::sync::mpsc::channel();
        let thread_lower = lower.clone();
        std::thread::spawn(move || {
            let generated = generated_config(&marker_user_config(), &thread_lower, "host", &[]);
            let _ = sender.send(generated.map(|value| value.to_string()).map_err(|err| anyhow::anyhow!("{err:#}")));
        });
        let result = receiver.recv_timeout(std::time::Duration::from_secs(20));
        if result.is_err() {
            // Frees a thread stuck opening a FIFO for reading, before failing.
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
                .open(lower.join("etc/passwd"));
        }
        let result = result.expect("reading the image's etc/passwd did not finish within 20 s");
        (dir, result)
    }

    fn assert_marker_unused(what: &str, result: &Result<String>) {
        match result {
            Ok(text) => assert!(!text.contains("4242"), "{what}: the marker user was used: {text}"),
            Err(err) => assert!(err.to_string().contains("/etc/passwd"), "{what}: unclear error: {err}"),
        }
    }

    #[test]
    fn run_reads_the_images_accounts_inside_the_image_only() {
        use std::os::unix::fs::symlink;
        // A symlink to a file of this machine, absolute and relative.
        let (_dir, result) = generate_with(|lower, outside| {
            std::fs::write(outside.join("passwd"), MARKER_PASSWD).unwrap();
            symlink(outside.join("passwd"), lower.join("etc/passwd")).unwrap();
        });
        assert_marker_unused("absolute symlink", &result);
        let (_dir, result) = generate_with(|lower, outside| {
            std::fs::write(outside.join("passwd"), MARKER_PASSWD).unwrap();
            symlink("../../outside/passwd", lower.join("etc/passwd")).unwrap();
        });
        assert_marker_unused("relative symlink", &result);
        // Its directory a symlink to this machine's directory.
        let (_dir, result) = generate_with(|lower, outside| {
            std::fs::write(outside.join("passwd"), MARKER_PASSWD).unwrap();
            std::fs::remove_dir(lower.join("etc")).unwrap();
            symlink(outside, lower.join("etc")).unwrap();
        });
        assert_marker_unused("etc a symlink", &result);
        // A FIFO nobody writes to: reading it must not wait for a writer.
        let (_dir, result) = generate_with(|lower, _| {
            nix::unistd::mkfifo(&lower.join("etc/passwd"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        });
        assert_marker_unused("FIFO", &result);
        // Larger than any real passwd file: not read whole, not used.
        let (_dir, result) = generate_with(|lower, _| {
            let mut huge = MARKER_PASSWD.to_string();
            huge.push_str(&"\n".repeat(5 * 1024 * 1024));
            std::fs::write(lower.join("etc/passwd"), huge).unwrap();
        });
        assert_marker_unused("huge file", &result);
        // The image's own file is used.
        let (_dir, result) = generate_with(|lower, _| {
            std::fs::write(lower.join("etc/passwd"), MARKER_PASSWD).unwrap();
        });
        let text = result.unwrap();
        assert!(text.contains("\"uid\":4242") && text.contains("\"gid\":4343"), "{text}");
    }
}
