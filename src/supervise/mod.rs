//! `sysctr-supervise PLAN -- RUNC…` (`src/bin/sysctr-supervise.rs`): how a container's unit
//! waits for it in the `started` and `healthy` modes, so that the unit is `Type=notify` and
//! `After=` on it means ready.
//!
//! The unit's main process clears what a crash of runc left (`runc delete`, only if there is
//! something), starts a watcher (`sysctr-supervise --watch PLAN`), then becomes runc (`runc run
//! --pid-file`, by exec): runc stays the unit's main process, a child of
//! systemd, whose signals and exit status are the unit's as they are without sysctr. The
//! watcher waits for the container's process to start. `started`: it tells systemd READY=1
//! and exits. `healthy`: it runs the health command inside the container (`runc exec`,
//! bounded) until it passes, and only then tells systemd READY=1; it keeps checking at the
//! interval and reports what it sees (journal, `STATUS=`, the health file `sysctr status`
//! reads). A container that is not healthy within the start timeout is stopped through runc,
//! and its start fails (an update rolls back). One that stops being healthy, with
//! `on_unhealthy = restart`, fails as a watchdog would (`WATCHDOG=trigger`), which the unit's
//! `Restart=` acts on.

mod notify;
pub mod plan;

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use notify::Notifier;
use plan::{Health, OnUnhealthy, ReadyMode, SupervisePlan};

/// The most output of one health check kept for the journal and `sysctr status`.
const MAX_CHECK_OUTPUT: usize = 1024;
/// How often the pid file and the process are looked at while the container starts.
const START_POLL: Duration = Duration::from_millis(2);
/// The first wait between health checks of a starting container; doubled up to the interval.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// How long a container stopped by the watcher has to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long systemd may take to read the last notification of a watcher about to exit, which
/// it drops once the sender is gone.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a wait looks whether runc is still there.
const TICK: Duration = Duration::from_millis(20);

/// The health of a running `healthy` container, as its watcher last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// `starting`, `healthy` or `unhealthy`.
    pub state: String,
    /// When the state was entered (RFC 3339).
    pub since: String,
    /// Consecutive failed checks.
    pub failures: u32,
    /// The last check: `passed`, `exited N`, `timed out after …`.
    pub last_result: String,
    /// What the last check printed, bounded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_output: String,
}

/// Starts the watcher of `plan_path`, then runs `command` (the runtime running the container)
/// in place of this process. Returns only if that cannot be done.
pub fn run(plan_path: &Path, command: &[String]) -> Result<i32> {
    let plan = SupervisePlan::read(plan_path)?;
    let Some((program, args)) = command.split_first() else {
        bail!("supervise needs the command that starts the container after --");
    };
    if let Some(parent) = plan.pid_file.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    match std::fs::remove_file(&plan.pid_file) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            return Err(err).with_context(|| format!("removing a stale {}", plan.pid_file.display()));
        }
        _ => {}
    }
    delete_stale_state(&plan)?;
    // Run by hand, with no manager to tell, there is nothing to watch for.
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        let me = std::env::current_exe().context("finding sysctr-supervise's own executable")?;
        // This process becomes runc: the watcher is told its pid, and watches that it stays.
        Command::new(me)
            .arg("--watch")
            .arg(plan_path)
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .spawn()
            .context("starting the watcher")?;
    }
    let err = Command::new(program).args(args).env_remove("NOTIFY_SOCKET").exec();
    Err(err).with_context(|| format!("running {program}"))
}

/// Deletes the runtime's state of the container, left by a crash, which would make `run` fail;
/// only when there is some, since a runtime call costs as much as the rest of the start. The
/// runtime keeps it in `/run/RUNTIME/NAME` (runc, crun).
fn delete_stale_state(plan: &SupervisePlan) -> Result<()> {
    let runtime_name = plan.runtime.file_name().context("the runtime has no file name")?;
    // Another runtime, or runc under another name, may keep it elsewhere: always delete then.
    let known = runtime_name == "runc" || runtime_name == "crun";
    if known && !Path::new("/run").join(runtime_name).join(&plan.name).exists() {
        return Ok(());
    }
    let status = Command::new(&plan.runtime)
        .args(["--systemd-cgroup", "delete", "--force", &plan.name])
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("running {} delete", plan.runtime.display()))?;
    if !status.success() {
        eprintln!("sysctr: deleting the state a crash left of {}: {}", plan.name, describe(status));
    }
    Ok(())
}

/// The watcher: tells systemd when the container of `plan_path` is ready, as its plan says.
/// `runc` is the pid of the unit's main process, which started the watcher and became runc.
pub fn watch(plan_path: &Path, runc: u32) -> Result<i32> {
    let plan = SupervisePlan::read(plan_path)?;
    let notifier = Notifier::from_env()?.context("NOTIFY_SOCKET is not set: nothing to tell readiness to")?;
    let runc = nix::unistd::Pid::from_raw(i32::try_from(runc).context("the pid of runc is out of range")?);
    let mut watcher = Watcher { plan, notifier, runc, started: Instant::now() };
    watcher.watch()
}

struct Watcher {
    plan: SupervisePlan,
    notifier: Notifier,
    /// The unit's main process: runc, once the supervisor has become it.
    runc: nix::unistd::Pid,
    started: Instant,
}

impl Watcher {
    fn watch(&mut self) -> Result<i32> {
        let start_deadline = self.started + self.plan.readiness.start_timeout;
        if !self.wait_started(start_deadline)? {
            return Ok(0);
        }
        match (self.plan.readiness.ready, self.plan.readiness.health.clone()) {
            (ReadyMode::Healthy, Some(health)) => self.watch_health(&health, start_deadline),
            _ => {
                self.notifier.send("READY=1\nSTATUS=started")?;
                // systemd reads who sent a message as it takes it: a sender gone by then is
                // not known to be the unit's, and its message is dropped.
                self.notifier.barrier(BARRIER_TIMEOUT)?;
                Ok(0)
            }
        }
    }

    /// Whether runc is still the process this watcher was started by.
    fn runc_alive(&self) -> bool {
        nix::unistd::getppid() == self.runc
    }

    /// Waits until runc is gone or `until`; `false` when runc is gone.
    fn sleep_until(&self, until: Instant) -> bool {
        loop {
            if !self.runc_alive() {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(TICK));
        }
    }

    /// Waits until the container's process runs: the pid file written by the runtime, and that
    /// process no longer the runtime's own init. `false` when runc exited first.
    fn wait_started(&mut self, deadline: Instant) -> Result<bool> {
        let runtime_name = self.plan.runtime.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        loop {
            if let Some(pid) = read_pid(&self.plan.pid_file) {
                if !is_runtime_init(pid, &runtime_name) {
                    return Ok(true);
                }
            }
            if !self.runc_alive() {
                return Ok(false);
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "sysctr: the process of {} did not start within {}",
                    self.plan.name,
                    humantime::format_duration(self.plan.readiness.start_timeout)
                );
                self.stop_container();
                return Ok(false);
            }
            std::thread::sleep(START_POLL);
        }
    }

    fn watch_health(&mut self, health: &Health, start_deadline: Instant) -> Result<i32> {
        let name = self.plan.name.clone();
        let mut report = HealthReport {
            state: "starting".into(),
            since: now_text(),
            failures: 0,
            last_result: "not run yet".into(),
            last_output: String::new(),
        };
        self.write_report(&report);
        let mut retry = FIRST_RETRY;
        loop {
            // No check may outlast the start timeout, so that this watcher is the one that says why.
            let left = start_deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
            let result = self.check(health, health.timeout.min(left));
            report.last_result = result.summary.clone();
            report.last_output = result.output.clone();
            if result.passed {
                report = HealthReport { state: "healthy".into(), since: now_text(), failures: 0, ..report };
                self.write_report(&report);
                eprintln!("sysctr: {name} is healthy after {:.1?}", self.started.elapsed());
                self.status("READY=1\nSTATUS=healthy");
                break;
            }
            report.failures += 1;
            self.write_report(&report);
            if Instant::now() + retry >= start_deadline {
                eprintln!(
                    "sysctr: {name} did not become healthy within {}: the last check {}{}",
                    humantime::format_duration(self.plan.readiness.start_timeout),
                    result.summary,
                    output_suffix(&result.output)
                );
                self.stop_container();
                return Ok(self.finish());
            }
            let left = start_deadline.saturating_duration_since(Instant::now()) + STOP_GRACE;
            self.status(&format!(
                "STATUS=waiting to be healthy: check {} {}\nEXTEND_TIMEOUT_USEC={}",
                report.failures,
                result.summary,
                left.as_micros()
            ));
            if !self.sleep_until(Instant::now() + retry) {
                return Ok(self.finish());
            }
            retry = (retry * 2).min(health.interval);
        }
        loop {
            if !self.sleep_until(Instant::now() + health.interval) {
                return Ok(self.finish());
            }
            let result = self.check(health, health.timeout);
            report.last_result = result.summary.clone();
            report.last_output = result.output.clone();
            if result.passed {
                if report.state != "healthy" {
                    eprintln!("sysctr: {name} is healthy again");
                    report = HealthReport { state: "healthy".into(), since: now_text(), ..report };
                    self.status("STATUS=healthy");
                }
                report.failures = 0;
                self.write_report(&report);
                continue;
            }
            report.failures += 1;
            if report.failures >= health.retries && report.state != "unhealthy" {
                eprintln!(
                    "sysctr: {name} is unhealthy: {} checks in a row failed, the last {}{}",
                    report.failures,
                    result.summary,
                    output_suffix(&result.output)
                );
                report = HealthReport { state: "unhealthy".into(), since: now_text(), ..report };
                self.status(&format!("STATUS=unhealthy: {}", result.summary));
                if health.on_unhealthy == OnUnhealthy::Restart {
                    self.write_report(&report);
                    eprintln!("sysctr: stopping {name} to be restarted (on_unhealthy = restart)");
                    // A watchdog failure, whatever the container's exit status then: the unit's
                    // `WatchdogSignal=` stops it and its `Restart=` starts it again.
                    self.status("WATCHDOG=trigger");
                    if let Err(err) = self.notifier.barrier(BARRIER_TIMEOUT) {
                        eprintln!("sysctr: {err:#}");
                    }
                    return Ok(self.finish());
                }
            }
            self.write_report(&report);
        }
    }

    /// Runs the health command inside the container, for at most `timeout`. A check that
    /// cannot be run at all fails, saying why.
    fn check(&mut self, health: &Health, timeout: Duration) -> CheckResult {
        self.try_check(health, timeout).unwrap_or_else(|err| CheckResult {
            passed: false,
            summary: format!("could not be run: {err:#}"),
            output: String::new(),
        })
    }

    fn try_check(&mut self, health: &Health, timeout: Duration) -> Result<CheckResult> {
        let check_pid_file = self.plan.pid_file.with_extension("check.pid");
        let _ = std::fs::remove_file(&check_pid_file);
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating a pipe")?;
        let mut exec = self.runtime();
        exec.args(["exec", "--pid-file"])
            .arg(&check_pid_file)
            .arg(&self.plan.name)
            .args(&health.command)
            .stdin(Stdio::null())
            .stdout(Stdio::from(write.try_clone().context("duplicating a pipe")?))
            .stderr(Stdio::from(write))
            .env_remove("NOTIFY_SOCKET");
        let mut child = exec.spawn().context("running the health check")?;
        drop(exec);
        let reader = std::thread::spawn(move || read_bounded(read));
        let deadline = Instant::now() + timeout;
        let outcome = loop {
            if let Some(status) = child.try_wait().context("waiting for the health check")? {
                break Some(status);
            }
            if Instant::now() >= deadline || !self.runc_alive() {
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let summary = match outcome {
            Some(status) if status.success() => "passed".to_owned(),
            Some(status) => describe(status),
            None => {
                // The command itself, in the container (runc exec would not pass SIGKILL on),
                // then runc exec, which then ends.
                for pid in [read_pid(&check_pid_file), Some(child.id())].into_iter().flatten() {
                    if let Ok(pid) = i32::try_from(pid) {
                        let _ =
                            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                    }
                }
                let _ = child.wait();
                format!("timed out after {}", humantime::format_duration(timeout))
            }
        };
        let _ = std::fs::remove_file(&check_pid_file);
        let output = reader.join().unwrap_or_default();
        Ok(CheckResult { passed: summary == "passed", summary, output })
    }

    /// `RUNTIME --systemd-cgroup`, as the unit runs it.
    fn runtime(&self) -> Command {
        let mut command = Command::new(&self.plan.runtime);
        command.arg("--systemd-cgroup");
        command
    }

    /// Stops the container, through runc: SIGTERM, then SIGKILL once the grace is over. runc
    /// then exits with a failure, which is the unit's.
    fn stop_container(&self) {
        for (signal, grace) in [("TERM", STOP_GRACE), ("KILL", STOP_GRACE)] {
            let _ = self.runtime().args(["kill", &self.plan.name, signal]).stdin(Stdio::null()).status();
            if !self.sleep_until(Instant::now() + grace) {
                return;
            }
        }
    }

    fn finish(&self) -> i32 {
        let _ = std::fs::remove_file(&self.plan.health_file);
        0
    }

    fn status(&self, text: &str) {
        if let Err(err) = self.notifier.send(text) {
            eprintln!("sysctr: {err:#}");
        }
    }

    /// Replaces the health file; a failure to write it is said, never fatal.
    fn write_report(&self, report: &HealthReport) {
        let path = &self.plan.health_file;
        let temporary = path.with_extension("health.tmp");
        let written = serde_json::to_vec(report)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&temporary, bytes))
            .and_then(|()| std::fs::rename(&temporary, path));
        if let Err(err) = written {
            eprintln!("sysctr: writing {}: {err}", path.display());
        }
    }
}

struct CheckResult {
    passed: bool,
    summary: String,
    output: String,
}

fn read_pid(path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().parse().ok().filter(|pid| *pid > 0)
}

/// Whether `pid` still runs the runtime's init (`runc init`), which becomes the container's
/// process when it executes it; a process that is gone counts as started (and exited).
fn is_runtime_init(pid: u32, runtime_name: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let mut args = cmdline.split(|b| *b == 0);
    let program = args.next().unwrap_or_default();
    let program = program.rsplit(|b| *b == b'/').next().unwrap_or_default();
    program == runtime_name.as_bytes() && args.next() == Some(b"init".as_slice())
}

fn read_bounded(read: OwnedFd) -> String {
    let mut kept = Vec::new();
    let mut file = std::fs::File::from(read);
    let _ = (&mut file).take(MAX_CHECK_OUTPUT as u64).read_to_end(&mut kept);
    // The rest is drained so that the command never blocks on a full pipe.
    let _ = std::io::copy(&mut file, &mut std::io::sink());
    let text = String::from_utf8_lossy(&kept);
    text.chars().map(|c| if c.is_control() && c != '\n' { ' ' } else { c }).collect::<String>().trim().to_owned()
}

fn output_suffix(output: &str) -> String {
    if output.is_empty() {
        String::new()
    } else {
        format!(": {}", output.replace('\n', " | "))
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "ended".to_owned(),
    }
}

fn now_text() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The health file of `name`'s supervisor, read beneath the host's root; `None` when there is
/// none (not a `healthy` container, or not running).
pub fn read_health(host: &crate::rooted::RootedDir, health_file: &Path) -> Result<Option<HealthReport>> {
    let relative = health_file.strip_prefix("/").unwrap_or(health_file);
    let Some(bytes) = host.read_regular_file(relative, 64 * 1024)? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&bytes).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_init_is_told_from_the_process_it_becomes() {
        let me = std::process::id();
        assert!(!is_runtime_init(me, "runc"));
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_string_lossy().into_owned();
        // This test process is not `NAME init`, whatever it is named.
        assert!(!is_runtime_init(me, &name));
        assert!(!is_runtime_init(u32::MAX, "runc"), "a process that is gone has started");
    }

    #[test]
    fn check_output_is_bounded_and_printable() {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let writer = std::thread::spawn(move || {
            let mut file = std::fs::File::from(write);
            std::io::Write::write_all(&mut file, b"bad\x1b[31m\n").unwrap();
            std::io::Write::write_all(&mut file, &vec![b'x'; 100_000]).unwrap();
        });
        let text = read_bounded(read);
        writer.join().unwrap();
        assert!(text.starts_with("bad [31m\nxxx"), "{text:?}");
        assert!(text.len() <= MAX_CHECK_OUTPUT, "{}", text.len());
    }
}
