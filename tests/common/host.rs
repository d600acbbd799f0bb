//! A throw-away systemd host: `systemd-nspawn --boot` on an overlay of this machine's `/`
//! (the recipe of shared/test-host.md). What the host writes lands in `upper()` only; the host
//! shares this machine's network namespace, so it reaches a [`super::Registry`] on 127.0.0.1.
//!
//! Drop powers the host off (escalating to SIGTERM to our nspawn, then SIGKILL to the host's
//! PID 1, each after a bounded wait), unmounts the overlay and removes the temp dir, also
//! when the test panicked.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{cmd_ok, describe_output, file_tail};

const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(30);
const SIGTERM_TIMEOUT: Duration = Duration::from_secs(20);
/// Units that would clash with the outer machine or block the boot (shared/test-host.md).
const MASKED: &[&str] = &["docker-registry.service", "nftables.service", "systemd-firstboot.service"];
/// Besides, every service and timer the machine enables in these targets is masked: they are
/// not needed by tests, daemons such as PostgreSQL would fight over fixed ports in the shared
/// network namespace (with the machine and with other test hosts), and timers (fstrim, apt)
/// would act on the real machine or slow the host down.
const MASK_WANTS_OF: &[&str] = &["multi-user.target.wants", "timers.target.wants"];

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct TestHost {
    dir: PathBuf,
    name: String,
    nspawn: Option<Child>,
    leader: u32,
    mounted: bool,
    boots: u32,
    /// Booted with `--private-network`: no interface but loopback, nothing shared with this machine.
    private_network: bool,
    /// The cgroups nspawn is started in, one per hierarchy (see [`own_cgroups`]).
    cgroups: Vec<PathBuf>,
}

impl TestHost {
    /// Mounts a fresh overlay of `/` under /var/tmp/testhost.XXXXXX, gives it its own machine id,
    /// masks the clashing units, boots it and waits (≤ 60 s) until
    /// `systemctl is-system-running` says `running` or `degraded`.
    pub fn boot() -> Result<TestHost> {
        Self::boot_this_machine(false)
    }

    /// As [`boot`](Self::boot), with no network at all (`--private-network`): only loopback,
    /// where nothing of this machine listens.
    pub fn boot_without_network() -> Result<TestHost> {
        Self::boot_this_machine(true)
    }

    /// As [`boot`](Self::boot), stopping before the boot: its root can be composed from outside
    /// first, as an OS image is before its first boot; [`start`](Self::start) boots it.
    pub fn unbooted() -> Result<TestHost> {
        Self::prepare_this_machine(false)
    }

    fn boot_this_machine(private_network: bool) -> Result<TestHost> {
        let mut host = Self::prepare_this_machine(private_network)?;
        host.start()?;
        Ok(host)
    }

    fn prepare_this_machine(private_network: bool) -> Result<TestHost> {
        let mut host = TestHost::new("testhost.", "th", private_network)?;
        host.mount_overlay(Path::new("/"))?;
        let root = host.root().to_string_lossy().into_owned();
        for f in ["etc/machine-id", "var/lib/dbus/machine-id"] {
            let p = host.root().join(f);
            if std::fs::symlink_metadata(&p).is_ok() {
                std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
        cmd_ok(&["systemd-machine-id-setup", &format!("--root={root}")])?;
        host.mask(&units_to_mask(&host.root()))?;
        Ok(host)
    }

    /// Boots an OS tree (an image built elsewhere, e.g. by mkosi) as it is: on an overlay whose
    /// lower dir is `tree`, so the tree itself is left as it was built, with no network at all
    /// (`--private-network`). Unlike [`boot`](Self::boot), the machine id is the tree's own (an
    /// image's first boot generates it) and only the units of `mask` are masked. Waits (≤ 60 s)
    /// for `running` or `degraded`; Drop cleans up as for [`boot`](Self::boot).
    pub fn boot_tree(tree: &Path, mask: &[&str]) -> Result<TestHost> {
        let mut host = TestHost::new("testtree.", "tt", true)?;
        host.mount_overlay(tree)?;
        host.mask(mask)?;
        host.start()?;
        Ok(host)
    }

    /// Boots a writable copy of an OS tree (`cp -a --reflink=auto TREE`) in place, with no
    /// overlay, as [`boot_tree`](Self::boot_tree) does otherwise (`--private-network`, the tree's
    /// own machine id, only `mask` masked): a root that can be changed between boots, as an
    /// image-based update changes `/usr` ([`reboot_changed`](Self::reboot_changed)). Drop
    /// powers it off and removes the copy.
    pub fn boot_copy(tree: &Path, mask: &[&str]) -> Result<TestHost> {
        let mut host = TestHost::new("testcopy.", "tc", true)?;
        cmd_ok(&["cp", "-a", "--reflink=auto", &tree.to_string_lossy(), &host.root().to_string_lossy()])?;
        host.mask(mask)?;
        host.start()?;
        Ok(host)
    }

    /// A host not booted yet, in a fresh directory under /var/tmp; from here on, Drop cleans up
    /// whatever was set up.
    fn new(dir_prefix: &str, name_prefix: &str, private_network: bool) -> Result<TestHost> {
        let dir = tempfile::Builder::new()
            .prefix(dir_prefix)
            .tempdir_in("/var/tmp")
            .context("creating the test host dir")?
            .keep();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        Ok(TestHost {
            name: format!("{name_prefix}{}n{}", std::process::id(), n),
            dir,
            nspawn: None,
            leader: 0,
            mounted: false,
            boots: 0,
            private_network,
            cgroups: Vec::new(),
        })
    }

    /// Mounts the host's root as an overlay over `lower`, its changes in `upper()`.
    fn mount_overlay(&mut self, lower: &Path) -> Result<()> {
        for d in ["upper", "work", "root"] {
            std::fs::create_dir(self.dir.join(d))?;
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            self.upper().display(),
            self.dir.join("work").display()
        );
        cmd_ok(&["mount", "-t", "overlay", "overlay", "-o", &opts, &self.root().to_string_lossy()])?;
        self.mounted = true;
        Ok(())
    }

    /// Masks `units` in the host's root, before it boots.
    fn mask<S: AsRef<str>>(&self, units: &[S]) -> Result<()> {
        if units.is_empty() {
            return Ok(());
        }
        let mut argv = vec!["systemctl".to_string(), format!("--root={}", self.root().display()), "mask".into()];
        argv.extend(units.iter().map(|u| u.as_ref().to_string()));
        cmd_ok(&argv.iter().map(String::as_str).collect::<Vec<_>>())?;
        Ok(())
    }

    /// Powers the host off, lets `change` change its root (from outside, nothing running in it)
    /// and boots it again. Only for a host that is not an overlay ([`boot_copy`](Self::boot_copy)).
    pub fn reboot_changed(&mut self, change: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        if self.mounted {
            bail!("host {}: its root is an overlay, whose lower dir cannot change under it", self.name);
        }
        self.shutdown()?;
        change(&self.root())?;
        self.start()
    }

    /// The overlay mount: the host's `/` seen from outside.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// The overlay's upper dir: everything the host changed.
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }

    /// The machine name (unique per host).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// PID (in this machine's namespace) of the host's PID 1.
    pub fn leader(&self) -> u32 {
        self.leader
    }

    /// systemd-nspawn's output (the host's console), all boots appended.
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    pub fn console_tail(&self) -> String {
        file_tail(&self.console_log(), 6000)
    }

    /// How many times this host has booted (1 after `boot`, 2 after one `reboot`, ...).
    pub fn boots(&self) -> u32 {
        self.boots
    }

    /// Boots the host and waits (≤ 60 s) for `running` or `degraded`.
    pub fn start(&mut self) -> Result<()> {
        self.start_with(|_| {})
    }

    /// Boots, calling `during_boot` over and over until the boot is done: for a boot that waits
    /// on something only the test can provide.
    fn start_with(&mut self, mut during_boot: impl FnMut(&TestHost)) -> Result<()> {
        let log = File::options().create(true).append(true).open(self.console_log())?;
        self.cgroups = own_cgroups(&self.name)?;
        // nspawn reads its cgroup when it starts: the shell joins the host's, then becomes nspawn.
        let mut nspawn = Command::new("sh");
        nspawn
            .arg("-c")
            .arg(
                r#"n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 1; shift; n=$((n-1)); done; exec "$@""#,
            )
            .arg("sh")
            .arg(self.cgroups.len().to_string())
            .args(self.cgroups.iter().map(|dir| dir.join("cgroup.procs")))
            .arg("systemd-nspawn");
        let child = nspawn
            .env("SYSTEMD_SECCOMP", "0")
            .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .arg("-q")
            .arg("-D")
            .arg(self.root())
            .args(["--boot", "-M", &self.name])
            .args(["--register=no", "--keep-unit", "--console=pipe", "--link-journal=no"])
            .arg("--capability=all")
            .args(self.private_network.then_some("--private-network"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning systemd-nspawn")?;
        let nsp = child.id();
        self.nspawn = Some(child);
        self.leader = 0;
        let start = Instant::now();

        // The host's PID 1: nspawn's child, once it has exec'd systemd.
        loop {
            self.check_nspawn_alive("while waiting for the host's PID 1")?;
            let pid1 = children_of(nsp).into_iter().find(|pid| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                comm.trim() == "systemd"
            });
            if let Some(pid) = pid1 {
                self.leader = pid;
                let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
                let own = format!("/sysctr-test-{}", self.name);
                if !cgroups.lines().any(|line| line.ends_with(&own) || line.contains(&format!("{own}/"))) {
                    bail!("host {}: its PID 1 is not in a cgroup of its own:\n{cgroups}", self.name);
                }
                break;
            }
            if start.elapsed() > BOOT_TIMEOUT {
                bail!(
                    "host {}: no systemd PID 1 after {:?}; console:\n{}",
                    self.name,
                    BOOT_TIMEOUT,
                    self.console_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }

        let mut last = String::new();
        loop {
            self.check_nspawn_alive("while booting")?;
            during_boot(self);
            if let Ok(out) = self.exec(&["systemctl", "is-system-running"]) {
                last = format!(
                    "{} {}",
                    String::from_utf8_lossy(&out.stdout).trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                match String::from_utf8_lossy(&out.stdout).trim() {
                    "running" => break,
                    "degraded" => {
                        let failed = self
                            .exec(&["systemctl", "--failed", "--no-legend", "--plain"])
                            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                            .unwrap_or_default();
                        eprintln!("test host {} booted degraded; failed units:\n{failed}", self.name);
                        break;
                    }
                    _ => {}
                }
            }
            if start.elapsed() > BOOT_TIMEOUT {
                let jobs = self
                    .exec(&["systemctl", "list-jobs", "--no-pager"])
                    .map(|o| describe_output(&o))
                    .unwrap_or_else(|e| format!("{e:#}"));
                bail!(
                    "host {}: not running after {:?} (last answer: {last}); jobs: {jobs}\nconsole:\n{}",
                    self.name,
                    BOOT_TIMEOUT,
                    self.console_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.boots += 1;
        Ok(())
    }

    fn check_nspawn_alive(&mut self, when: &str) -> Result<()> {
        let child = self.nspawn.as_mut().context("host is not running")?;
        if let Some(status) = child.try_wait()? {
            self.nspawn = None;
            bail!("host {}: systemd-nspawn exited {when} ({status}); console:\n{}", self.name, self.console_tail());
        }
        Ok(())
    }

    /// A `nsenter -t LEADER -a ARGV...` command, to add env, stdin, etc. before running it.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("-t").arg(self.leader.to_string()).arg("-a").arg("--").args(argv);
        c
    }

    /// Runs ARGV inside the host (all its namespaces), collecting its output.
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        if self.nspawn.is_none() || self.leader == 0 {
            bail!("host {} is not running", self.name);
        }
        self.command(argv)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running nsenter for `{}`", argv.join(" ")))
    }

    /// Like [`exec`](Self::exec), but fails (with stdout and stderr) on non-zero exit; returns stdout.
    pub fn exec_ok(&self, argv: &[&str]) -> Result<String> {
        let out = self.exec(argv)?;
        if !out.status.success() {
            bail!("in host {}: `{}` failed: {}", self.name, argv.join(" "), describe_output(&out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs this build's `sysctr ARGS` inside the host with `RUST_BACKTRACE=0` (and the host's
    /// default storage unless the caller's environment sets `SYSCTR_STORAGE`).
    pub fn run_sysctr(&self, args: &[&str]) -> Result<Output> {
        let bin = super::sysctr_bin();
        let mut c = self.command(&[bin.to_str().context("non-UTF-8 binary path")?]);
        c.args(args).env("RUST_BACKTRACE", "0").stdin(Stdio::null());
        c.output().with_context(|| format!("running sysctr {} in host {}", args.join(" "), self.name))
    }

    /// `journalctl -u UNIT` inside the host (for failure messages); never fails.
    pub fn journal(&self, unit: &str) -> String {
        match self.exec(&["journalctl", "--no-pager", "-o", "short-monotonic", "-u", unit]) {
            Ok(out) => format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
            Err(e) => format!("<journalctl failed: {e:#}>"),
        }
    }

    /// `systemctl poweroff` inside, wait for nspawn, boot the same overlay again (/etc, /var
    /// and everything else written so far are kept, /run and /tmp are fresh).
    pub fn reboot(&mut self) -> Result<()> {
        self.shutdown()?;
        self.start()
    }

    /// Like [`reboot`](Self::reboot), calling `during_boot` repeatedly while the host boots.
    pub fn reboot_with(&mut self, during_boot: impl FnMut(&TestHost)) -> Result<()> {
        self.shutdown()?;
        self.start_with(during_boot)
    }

    /// Powers the host off and waits for nspawn: `systemctl poweroff` inside, then SIGTERM to
    /// nspawn, then SIGKILL to the host's PID 1 (ends the whole pid namespace), each after a
    /// bounded wait. A no-op when the host is not running.
    pub fn shutdown(&mut self) -> Result<()> {
        let Some(child) = self.nspawn.as_mut() else {
            return Ok(());
        };
        if child.try_wait()?.is_none() {
            // The connection may drop while systemd goes down: ignore the result.
            let _ = self
                .command(&["systemctl", "--no-block", "poweroff"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let nsp = self.nspawn.as_ref().unwrap().id();
        let mut done = self.wait_nspawn(POWEROFF_TIMEOUT)?;
        if !done {
            eprintln!(
                "test host {}: no poweroff after {POWEROFF_TIMEOUT:?}, sending SIGTERM to nspawn {nsp}",
                self.name
            );
            let _ = kill(Pid::from_raw(nsp as i32), Signal::SIGTERM);
            done = self.wait_nspawn(SIGTERM_TIMEOUT)?;
        }
        if !done {
            // Only if the leader is still our nspawn's child (no PID reuse).
            if self.leader != 0 && children_of(nsp).contains(&self.leader) {
                eprintln!("test host {}: killing its PID 1 ({})", self.name, self.leader);
                let _ = kill(Pid::from_raw(self.leader as i32), Signal::SIGKILL);
            }
            done = self.wait_nspawn(SIGTERM_TIMEOUT)?;
        }
        if !done {
            bail!("host {}: systemd-nspawn {nsp} does not exit; console:\n{}", self.name, self.console_tail());
        }
        self.leader = 0;
        for dir in std::mem::take(&mut self.cgroups) {
            remove_cgroup(&dir);
        }
        Ok(())
    }

    /// Waits for our nspawn to exit; true if it did (or was not running).
    fn wait_nspawn(&mut self, timeout: Duration) -> Result<bool> {
        let start = Instant::now();
        loop {
            let Some(child) = self.nspawn.as_mut() else {
                return Ok(true);
            };
            if child.try_wait()?.is_some() {
                self.nspawn = None;
                return Ok(true);
            }
            if start.elapsed() > timeout {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn unmount_and_remove(&mut self) {
        let root = self.root();
        if self.mounted {
            for i in 0..50 {
                let out = Command::new("umount").arg(&root).output();
                if matches!(&out, Ok(o) if o.status.success()) || !is_mounted(&root) {
                    self.mounted = false;
                    break;
                }
                if i == 49 {
                    eprintln!(
                        "test host {}: cannot unmount {}: {:?}; leaving {}",
                        self.name,
                        root.display(),
                        out.map(|o| describe_output(&o)),
                        self.dir.display()
                    );
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if is_mounted(&root) {
            eprintln!("test host {}: {} still mounted; leaving it", self.name, root.display());
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("test host {}: removing {}: {e}", self.name, self.dir.display());
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("test host {}: {e:#}", self.name);
            if self.nspawn.is_some() {
                // Still running: unmounting or removing under it would be wrong.
                eprintln!("test host {}: leaving {} in place", self.name, self.dir.display());
                return;
            }
        }
        self.unmount_and_remove();
    }
}

/// A cgroup of the host's own, beside the caller's, in each hierarchy the caller is in
/// (`name=systemd` and cgroup2 on this machine; cgroup2 alone elsewhere). nspawn with
/// `--keep-unit` makes the host's root cgroup out of the one it was started in: hosts started
/// from the same cgroup would share one tree, and their units of the same name one cgroup,
/// so that stopping a container on one host kills another's (shared/test-host.md).
fn own_cgroups(host_name: &str) -> Result<Vec<PathBuf>> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let own = std::fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
    let mut dirs = Vec::new();
    for line in own.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let mount = mountinfo.lines().find_map(|m| {
            let (left, right) = m.split_once(" - ")?;
            let mut right = right.split(' ');
            let (fstype, _, options) = (right.next()?, right.next()?, right.next()?);
            let wanted = match controllers {
                "" => fstype == "cgroup2",
                "name=systemd" => fstype == "cgroup" && options.split(',').any(|o| o == "name=systemd"),
                _ => false,
            };
            wanted.then(|| PathBuf::from(left.split(' ').nth(4).unwrap_or_default()))
        });
        let Some(mount) = mount else { continue };
        let beside = Path::new(path).parent().unwrap_or(Path::new("/")).strip_prefix("/").unwrap_or(Path::new(""));
        let dir = mount.join(beside).join(format!("sysctr-test-{host_name}"));
        if !dir.is_dir() {
            std::fs::create_dir(&dir).with_context(|| format!("creating the cgroup {}", dir.display()))?;
        } else if !std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().trim().is_empty() {
            bail!("the cgroup {} of a host by this name still has processes", dir.display());
        }
        dirs.push(dir);
    }
    if dirs.is_empty() {
        bail!("no cgroup2 or name=systemd hierarchy found for this process in /proc/self/cgroup");
    }
    Ok(dirs)
}

/// Removes a host's cgroup and what nspawn and the host made under it, deepest first; the
/// kernel refuses while the last processes are still going away, so each is retried a while.
fn remove_cgroup(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup(&entry.path());
        }
    }
    for _ in 0..50 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("test host cgroup {}: still busy, left in place", dir.display());
}

/// [`MASKED`] plus the services and timers enabled in [`MASK_WANTS_OF`] under `root`/etc.
fn units_to_mask(root: &Path) -> Vec<String> {
    let mut units: Vec<String> = MASKED.iter().map(|s| s.to_string()).collect();
    for wants in MASK_WANTS_OF {
        let Ok(rd) = std::fs::read_dir(root.join("etc/systemd/system").join(wants)) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if (name.ends_with(".service") || name.ends_with(".timer")) && !units.contains(&name) {
                units.push(name);
            }
        }
    }
    units.sort();
    units
}

/// The children of `pid`, from /proc (pgrep -P as a fallback).
fn children_of(pid: u32) -> Vec<u32> {
    let text = match std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        Ok(s) => s,
        Err(_) => Command::new("pgrep")
            .arg("-P")
            .arg(pid.to_string())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default(),
    };
    text.split_whitespace().filter_map(|c| c.parse().ok()).collect()
}

/// Whether `path` is a mount point listed in /proc/mounts.
pub fn is_mounted(path: &Path) -> bool {
    let p = path.to_string_lossy();
    std::fs::read_to_string("/proc/mounts")
        .map(|m| m.lines().any(|l| l.split_whitespace().nth(1) == Some(&p)))
        .unwrap_or(false)
}
