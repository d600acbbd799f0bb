//! `sysctr supervise PLAN -- RUNC…`: the main process of a container's unit in the `started`
//! and `healthy` modes, so that the unit is `Type=notify` and `After=` on it means ready.
//!
//! It runs the runtime (`runc run --pid-file`) as its child and watches for the container's
//! process to start. `started`: it then hands the unit's main PID to runc, tells systemd
//! READY=1 and exits, leaving runc as it would be without it. `healthy`: it runs the health
//! command inside the container (`runc exec`, bounded) until it passes, and only then tells
//! systemd READY=1; it stays the main process, keeps checking at the interval, reports what it
//! sees (journal, `STATUS=`, the health file `sysctr status` reads), stops the container with a
//! failure when it does not become healthy within the start timeout or, with
//! `on_unhealthy = restart`, when it stops being healthy. Signals are passed on to runc, whose
//! exit status is the unit's.

mod notify;
pub mod plan;

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serde::{Deserialize, Serialize};

use notify::Notifier;
use plan::{Health, OnUnhealthy, ReadyMode, SupervisePlan};

/// The most output of one health check kept for the journal and `sysctr status`.
const MAX_CHECK_OUTPUT: usize = 1024;
/// How often the pid file and the process are looked at while the container starts.
const START_POLL: Duration = Duration::from_millis(2);
/// The first wait between health checks of a starting container; doubled up to the interval.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// How long a container stopped by the supervisor has to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long systemd may take to read the hand-over of the main PID.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(5);

/// The health of a running `healthy` container, as its supervisor last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// `starting`, `healthy` or `unhealthy`.
    pub state: String,
    /// When the state was entered (RFC 3339).
    pub since: String,
    /// Consecutive failed checks.
    pub failures: u32,
    /// The last check: `passed`, `exit N`, `timed out after …`.
    pub last_result: String,
    /// What the last check printed, bounded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_output: String,
}

/// Runs `command` (the runtime starting the container) under `plan`; returns the exit code.
pub fn run(plan_path: &Path, command: &[String]) -> Result<i32> {
    let plan = SupervisePlan::read(plan_path)?;
    let Some((program, args)) = command.split_first() else {
        bail!("supervise needs the command that starts the container after --");
    };
    let notifier = Notifier::from_env()?;
    let signals = forwarded_signals();
    signals.thread_block().context("blocking signals for the supervisor")?;
    let signal_fd = SignalFd::with_flags(&with_child(signals), SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .context("creating a signalfd")?;
    if let Some(parent) = plan.pid_file.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    match std::fs::remove_file(&plan.pid_file) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            return Err(err).with_context(|| format!("removing a stale {}", plan.pid_file.display()));
        }
        _ => {}
    }
    let mut runtime = Command::new(program);
    runtime.args(args).env_remove("NOTIFY_SOCKET");
    let main = spawn_unblocked(&mut runtime).with_context(|| format!("starting {program}"))?;
    let mut supervisor = Supervisor { plan, notifier, signal_fd, main, started: Instant::now() };
    supervisor.supervise()
}

struct Supervisor {
    plan: SupervisePlan,
    notifier: Option<Notifier>,
    signal_fd: SignalFd,
    main: Child,
    started: Instant,
}

/// What waiting ended on.
enum Event {
    MainExited(ExitStatus),
    Deadline,
}

impl Supervisor {
    fn supervise(&mut self) -> Result<i32> {
        let name = self.plan.name.clone();
        let start_deadline = self.started + self.plan.readiness.start_timeout;
        if let Some(status) = self.wait_started(start_deadline)? {
            eprintln!("sysctr: the runtime of {name} exited before its process started ({})", describe(status));
            return Ok(exit_code(status));
        }
        match (self.plan.readiness.ready, self.plan.readiness.health.clone()) {
            (ReadyMode::Healthy, Some(health)) => self.supervise_health(&health, start_deadline),
            _ => self.hand_over(),
        }
    }

    /// `started`: runc becomes the unit's main process, as it is without a supervisor.
    fn hand_over(&mut self) -> Result<i32> {
        let Some(notifier) = &self.notifier else {
            return self.wait_main();
        };
        notifier.send(&format!("MAINPID={}\nREADY=1\nSTATUS=started", self.main.id()))?;
        notifier.barrier(BARRIER_TIMEOUT)?;
        Ok(0)
    }

    /// Waits until the container's process runs: the pid file written by the runtime, and that
    /// process no longer the runtime's own init. `Some` when the runtime exited first.
    fn wait_started(&mut self, deadline: Instant) -> Result<Option<ExitStatus>> {
        let runtime_name = self.plan.runtime.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        loop {
            if let Some(pid) = read_pid(&self.plan.pid_file) {
                if !is_runtime_init(pid, &runtime_name) {
                    return Ok(None);
                }
            }
            if let Event::MainExited(status) = self.wait_for(Instant::now() + START_POLL)? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "sysctr: the process of {} did not start within {}",
                    self.plan.name,
                    humantime::format_duration(self.plan.readiness.start_timeout)
                );
                return self.stop_failed().map(|_| Some(ExitStatus::from_raw(1 << 8)));
            }
        }
    }

    fn supervise_health(&mut self, health: &Health, start_deadline: Instant) -> Result<i32> {
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
            let result = match self.check(health)? {
                Checked::MainExited(status) => return Ok(self.finish(status)),
                Checked::Done(result) => result,
            };
            report.last_result = result.summary.clone();
            report.last_output = result.output.clone();
            if result.passed {
                report.failures = 0;
                report = HealthReport { state: "healthy".into(), since: now_text(), ..report };
                self.write_report(&report);
                eprintln!("sysctr: {name} is healthy after {:.1?}", self.started.elapsed());
                if let Some(notifier) = &self.notifier {
                    notifier.send("READY=1\nSTATUS=healthy")?;
                }
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
                self.stop_failed()?;
                return Ok(1);
            }
            if let Some(notifier) = &self.notifier {
                let left = start_deadline.saturating_duration_since(Instant::now()) + BARRIER_TIMEOUT;
                notifier.send(&format!(
                    "STATUS=waiting to be healthy: check {} {}\nEXTEND_TIMEOUT_USEC={}",
                    report.failures,
                    result.summary,
                    left.as_micros()
                ))?;
            }
            if let Event::MainExited(status) = self.wait_for(Instant::now() + retry)? {
                return Ok(self.finish(status));
            }
            retry = (retry * 2).min(health.interval);
        }
        loop {
            if let Event::MainExited(status) = self.wait_for(Instant::now() + health.interval)? {
                return Ok(self.finish(status));
            }
            let result = match self.check(health)? {
                Checked::MainExited(status) => return Ok(self.finish(status)),
                Checked::Done(result) => result,
            };
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
                    self.stop_failed()?;
                    return Ok(1);
                }
            }
            self.write_report(&report);
        }
    }

    /// Runs the health command inside the container, bounded by its timeout.
    fn check(&mut self, health: &Health) -> Result<Checked> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating a pipe")?;
        let mut exec = Command::new(&self.plan.runtime);
        exec.args(["--systemd-cgroup", "exec", &self.plan.name])
            .args(&health.command)
            .stdin(Stdio::null())
            .stdout(Stdio::from(write.try_clone().context("duplicating a pipe")?))
            .stderr(Stdio::from(write))
            .env_remove("NOTIFY_SOCKET");
        let mut child = spawn_unblocked(&mut exec).context("running the health check")?;
        drop(exec);
        let reader = std::thread::spawn(move || read_bounded(read));
        let deadline = Instant::now() + health.timeout;
        let outcome = loop {
            if let Some(status) = child.try_wait().context("waiting for the health check")? {
                break Some(status);
            }
            match self.wait_for(Instant::now() + Duration::from_millis(10))? {
                Event::MainExited(status) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Ok(Checked::MainExited(status));
                }
                Event::Deadline if Instant::now() >= deadline => break None,
                Event::Deadline => {}
            }
        };
        let summary = match outcome {
            Some(status) if status.success() => "passed".to_owned(),
            Some(status) => describe(status),
            None => {
                // runc exec passes SIGTERM on to the command; SIGKILL would leave it running.
                signal(child.id(), Signal::SIGTERM);
                let waited = Instant::now() + Duration::from_secs(1);
                while child.try_wait().ok().flatten().is_none() && Instant::now() < waited {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = child.kill();
                let _ = child.wait();
                format!("timed out after {}", humantime::format_duration(health.timeout))
            }
        };
        let output = reader.join().unwrap_or_default();
        Ok(Checked::Done(CheckResult { passed: summary == "passed", summary, output }))
    }

    /// Waits until `until` or until runc exits, passing signals on to runc.
    fn wait_for(&mut self, until: Instant) -> Result<Event> {
        loop {
            if let Some(status) = self.main.try_wait().context("waiting for the runtime")? {
                return Ok(Event::MainExited(status));
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Event::Deadline);
            }
            let millis = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.signal_fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(millis)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(err) => return Err(err).context("waiting for signals"),
            }
            while let Ok(Some(info)) = self.signal_fd.read_signal() {
                let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else { continue };
                if sig != Signal::SIGCHLD {
                    signal(self.main.id(), sig);
                }
            }
        }
    }

    fn wait_main(&mut self) -> Result<i32> {
        loop {
            if let Event::MainExited(status) = self.wait_for(Instant::now() + Duration::from_secs(3600))? {
                return Ok(exit_code(status));
            }
        }
    }

    /// Stops a container that failed its start or its health: SIGTERM through runc, then a kill.
    fn stop_failed(&mut self) -> Result<()> {
        signal(self.main.id(), Signal::SIGTERM);
        if let Event::MainExited(_) = self.wait_for(Instant::now() + STOP_GRACE)? {
            return Ok(());
        }
        let _ = Command::new(&self.plan.runtime)
            .args(["--systemd-cgroup", "kill", &self.plan.name, "KILL"])
            .stdin(Stdio::null())
            .status();
        let _ = self.main.kill();
        let _ = self.main.wait();
        Ok(())
    }

    fn finish(&mut self, status: ExitStatus) -> i32 {
        let _ = std::fs::remove_file(&self.plan.health_file);
        exit_code(status)
    }

    fn status(&self, text: &str) {
        if let Some(notifier) = &self.notifier {
            if let Err(err) = notifier.send(text) {
                eprintln!("sysctr: {err:#}");
            }
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

enum Checked {
    MainExited(ExitStatus),
    Done(CheckResult),
}

struct CheckResult {
    passed: bool,
    summary: String,
    output: String,
}

/// The signals a unit's main process gets that runc must get instead.
fn forwarded_signals() -> SigSet {
    let mut set = SigSet::empty();
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2] {
        set.add(sig);
    }
    set
}

fn with_child(mut set: SigSet) -> SigSet {
    set.add(Signal::SIGCHLD);
    set
}

/// Spawns with every signal unblocked in the child, whatever this process blocks: std has no
/// way to set a child's signal mask, hence this `unsafe`.
#[allow(unsafe_code)]
fn spawn_unblocked(command: &mut Command) -> std::io::Result<Child> {
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
    // calls are allowed: it makes one, sigprocmask(2), and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(std::io::Error::from)
        });
    }
    command.spawn()
}

fn signal(pid: u32, sig: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
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

fn exit_code(status: ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
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
