//! When a container counts as ready, from its image and what the user set, and the unit
//! settings that make systemd wait for it.
//!
//! One vocabulary everywhere: the keys of [`ReadySettings`] are the apply file's keys, the
//! image labels' (`sysctr.KEY`), the keys of a `readiness` object in `/exports/manifest.json`,
//! and, as `--KEY` with dashes, install's options. What the user set wins over the manifest,
//! which wins over the labels, key by key. With none of them, a container is ready once
//! `started`, and an image that names a health command is ready once `healthy`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::rooted::RootedDir;
use crate::supervise::plan::{Health, OnUnhealthy, Readiness, ReadyMode, DEFAULT_START_TIMEOUT};

const LABEL_PREFIX: &str = "sysctr.";
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_RETRIES: u32 = 3;
/// The longest start timeout: sysctr waits for start jobs for at most ten minutes.
const MAX_START_TIMEOUT: Duration = Duration::from_secs(540);
const MAX_INTERVAL: Duration = Duration::from_secs(3600);
const MAX_RETRIES: u32 = 100;
/// The longest health command, all its arguments together, and the most arguments.
const MAX_COMMAND_BYTES: usize = 4096;
const MAX_COMMAND_ARGS: usize = 64;

/// What one source says about a container's readiness; every key optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadySettings {
    /// `notify`, `started` or `healthy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<ReadyMode>,
    /// Run inside the container; a string is run by `/bin/sh -c`, a list as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_cmd: Option<HealthCommand>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timeout: Option<String>,
    /// `log` or `restart`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_unhealthy: Option<OnUnhealthy>,
}

/// A health command as written: shell text, or an argument vector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HealthCommand {
    Shell(String),
    Exec(Vec<String>),
}

impl HealthCommand {
    fn argv(&self) -> Vec<String> {
        match self {
            HealthCommand::Shell(text) => vec!["/bin/sh".into(), "-c".into(), text.clone()],
            HealthCommand::Exec(argv) => argv.clone(),
        }
    }
}

impl ReadySettings {
    pub fn is_empty(&self) -> bool {
        self == &ReadySettings::default()
    }

    /// The settings an image's labels give (`sysctr.ready=healthy`, `sysctr.health_cmd=…`).
    pub fn from_labels(labels: Option<&HashMap<String, String>>) -> Result<ReadySettings> {
        let mut settings = ReadySettings::default();
        let Some(labels) = labels else {
            return Ok(settings);
        };
        for (key, value) in labels {
            let Some(key) = key.strip_prefix(LABEL_PREFIX) else { continue };
            let context = || format!("reading the image label {LABEL_PREFIX}{key}");
            match key {
                "ready" => settings.ready = Some(value.parse().with_context(context)?),
                "health_cmd" => settings.health_cmd = Some(HealthCommand::Shell(value.clone())),
                "health_interval" => settings.health_interval = Some(value.clone()),
                "health_timeout" => settings.health_timeout = Some(value.clone()),
                "health_retries" => {
                    settings.health_retries = Some(
                        value.parse().map_err(|_| anyhow::anyhow!("not a number: {value:?}")).with_context(context)?,
                    )
                }
                "start_timeout" => settings.start_timeout = Some(value.clone()),
                "on_unhealthy" => settings.on_unhealthy = Some(value.parse().with_context(context)?),
                _ => {}
            }
        }
        Ok(settings)
    }

    /// These settings, with `lower`'s for every key these leave out.
    pub fn over(&self, lower: &ReadySettings) -> ReadySettings {
        ReadySettings {
            ready: self.ready.or(lower.ready),
            health_cmd: self.health_cmd.clone().or_else(|| lower.health_cmd.clone()),
            health_interval: self.health_interval.clone().or_else(|| lower.health_interval.clone()),
            health_timeout: self.health_timeout.clone().or_else(|| lower.health_timeout.clone()),
            health_retries: self.health_retries.or(lower.health_retries),
            start_timeout: self.start_timeout.clone().or_else(|| lower.start_timeout.clone()),
            on_unhealthy: self.on_unhealthy.or(lower.on_unhealthy),
        }
    }

    /// The readiness these settings make, checked and bounded.
    pub fn resolve(&self) -> Result<Readiness> {
        let ready =
            self.ready.unwrap_or(if self.health_cmd.is_some() { ReadyMode::Healthy } else { ReadyMode::Started });
        let start_timeout =
            duration("start_timeout", self.start_timeout.as_deref(), DEFAULT_START_TIMEOUT, MAX_START_TIMEOUT)?;
        let health = match (ready, &self.health_cmd) {
            (ReadyMode::Healthy, None) => {
                bail!("ready = healthy needs a health command (health_cmd, --health-cmd) to run in the container")
            }
            (ReadyMode::Healthy, Some(command)) => {
                let command = command.argv();
                check_command(&command)?;
                let retries = self.health_retries.unwrap_or(DEFAULT_RETRIES);
                if !(1..=MAX_RETRIES).contains(&retries) {
                    bail!("health_retries must be between 1 and {MAX_RETRIES}, not {retries}");
                }
                Some(Health {
                    command,
                    interval: duration(
                        "health_interval",
                        self.health_interval.as_deref(),
                        DEFAULT_INTERVAL,
                        MAX_INTERVAL,
                    )?,
                    timeout: duration(
                        "health_timeout",
                        self.health_timeout.as_deref(),
                        DEFAULT_CHECK_TIMEOUT,
                        MAX_START_TIMEOUT,
                    )?,
                    retries,
                    on_unhealthy: self.on_unhealthy.unwrap_or_default(),
                })
            }
            _ => None,
        };
        Ok(Readiness { ready, start_timeout, health })
    }
}

fn duration(key: &str, text: Option<&str>, default: Duration, max: Duration) -> Result<Duration> {
    let Some(text) = text else {
        return Ok(default);
    };
    let shown = text.chars().take(64).flat_map(char::escape_debug).collect::<String>();
    let value = humantime::parse_duration(text)
        .with_context(|| format!("{key} = \"{shown}\" is not a duration (e.g. 30s, 2m, 1m 30s)"))?;
    if value < Duration::from_secs(1) || value > max {
        bail!("{key} = \"{shown}\" must be between 1s and {}", humantime::format_duration(max));
    }
    Ok(value)
}

fn check_command(argv: &[String]) -> Result<()> {
    if argv.first().is_none_or(String::is_empty) {
        bail!("health_cmd is empty");
    }
    if argv.len() > MAX_COMMAND_ARGS || argv.iter().map(String::len).sum::<usize>() > MAX_COMMAND_BYTES {
        bail!("health_cmd is longer than {MAX_COMMAND_ARGS} arguments or {MAX_COMMAND_BYTES} bytes");
    }
    if argv.iter().any(|arg| arg.contains('\0')) {
        bail!("health_cmd has a NUL byte");
    }
    Ok(())
}

/// How the unit of a container reaches ready.
pub(in crate::deploy) struct ReadyUnit {
    /// `sysctr-supervise PLAN -- RUNC…`, the unit's command, as the target sees it; `None` in
    /// the `notify` mode, where runc passes the container's own notification on.
    pub supervise: Option<String>,
    /// Whether sysctr's drop-in says how (`false`: the image's unit already does).
    pub lines: bool,
    /// Whether the image's unit says nothing of `Restart=`: then `on_unhealthy = restart`
    /// brings its own.
    pub unit_restarts: bool,
}

impl ReadyUnit {
    /// An image's `Type=notify` unit, left as it is.
    pub fn as_it_is() -> ReadyUnit {
        ReadyUnit { supervise: None, lines: false, unit_restarts: true }
    }

    /// The `[Service]` lines of sysctr's drop-in that make the unit wait for `readiness`.
    pub fn dropin_lines(&self, readiness: &Readiness) -> String {
        if !self.lines {
            return String::new();
        }
        let mut timeout = readiness.start_timeout;
        if readiness.ready == ReadyMode::Healthy {
            // The supervisor gives up first, says why, and stops the container.
            timeout += Duration::from_secs(15);
        }
        let mut text = format!(
            "# Ready means {}: systemd waits for it, and After= on this unit waits for it too.\n\
             Type=notify\n\
             NotifyAccess=all\n\
             TimeoutStartSec={}\n",
            readiness.ready,
            timeout.as_secs()
        );
        if let Some(supervise) = &self.supervise {
            text.push_str(&format!("ExecStart=\nExecStart={supervise}\n"));
        }
        if readiness.health.as_ref().is_some_and(|h| h.on_unhealthy == OnUnhealthy::Restart) {
            // The watcher's WATCHDOG=trigger: runc passes SIGTERM on to the container.
            text.push_str("WatchdogSignal=SIGTERM\n");
            if !self.unit_restarts {
                text.push_str("Restart=on-failure\n");
            }
        }
        text
    }
}

/// Where the package installs `sysctr-supervise`, as a target sees it.
pub(in crate::deploy) const TARGET_SUPERVISE: &str = "/usr/libexec/sysctr/sysctr-supervise";

/// The `sysctr-supervise` a unit runs: on a root on disk (`offline`), the target's, if it has
/// one; on this host, the one installed with this sysctr (`../libexec/sysctr/` from it, as the
/// package puts it, or beside it, as cargo builds it).
pub(in crate::deploy) fn supervise_helper(host: &RootedDir, offline: bool) -> Result<Option<String>> {
    if offline {
        let present = host.kind(Path::new(TARGET_SUPERVISE.trim_start_matches('/')))?.is_some();
        return Ok(present.then(|| TARGET_SUPERVISE.to_owned()));
    }
    let exe = std::env::current_exe().context("finding sysctr's own executable")?;
    let Some(dir) = exe.parent() else { return Ok(None) };
    let candidates = [dir.join("../libexec/sysctr/sysctr-supervise"), dir.join("sysctr-supervise")];
    Ok(candidates.iter().find(|path| path.is_file()).map(|path| normalized(path).to_string_lossy().into_owned()))
}

/// `path` without its `..` components (a directory's parent taken lexically).
fn normalized(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Whether a unit sets `Restart=`.
pub(in crate::deploy) fn sets_restart(unit: &str) -> bool {
    unit.lines().any(|line| line.trim().starts_with("Restart="))
}

/// The `Type=` a unit gives its service (the last one), if any.
pub(in crate::deploy) fn unit_type(unit: &str) -> Option<&str> {
    unit.lines().filter_map(|line| line.trim().strip_prefix("Type=")).map(str::trim).next_back()
}

/// A readiness with another mode, its timeout kept.
pub(in crate::deploy) fn readiness_of(ready: ReadyMode, readiness: Readiness) -> Readiness {
    Readiness { ready, health: None, ..readiness }
}

/// Whether `unit` starts its container with `exec_start` and nothing else: then sysctr may
/// run it under its supervisor.
pub(in crate::deploy) fn starts_with_exec_start(unit: &str, exec_start: &str) -> bool {
    let starts: Vec<&str> =
        unit.lines().filter_map(|line| line.trim_start().strip_prefix("ExecStart=")).map(str::trim).collect();
    starts == [exec_start]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn with_nothing_set_a_container_is_ready_once_started() {
        let readiness = ReadySettings::default().resolve().unwrap();
        assert_eq!(
            readiness,
            Readiness { ready: ReadyMode::Started, start_timeout: Duration::from_secs(90), health: None }
        );
    }

    #[test]
    fn the_user_wins_over_the_manifest_which_wins_over_the_labels_key_by_key() {
        let image = ReadySettings::from_labels(Some(&labels(&[
            ("sysctr.health_cmd", "test -f /run/flannel/subnet.env"),
            ("sysctr.health_interval", "30s"),
            ("sysctr.start_timeout", "2m"),
            ("org.opencontainers.image.title", "flannel"),
        ])))
        .unwrap();
        let manifest: ReadySettings =
            serde_json::from_str(r#"{"health_interval": "5s", "on_unhealthy": "restart"}"#).unwrap();
        let user = ReadySettings { start_timeout: Some("45s".into()), ..ReadySettings::default() };
        let readiness = user.over(&manifest.over(&image)).resolve().unwrap();
        assert_eq!(readiness.ready, ReadyMode::Healthy, "a health command alone makes it healthy");
        assert_eq!(readiness.start_timeout, Duration::from_secs(45));
        let health = readiness.health.unwrap();
        assert_eq!(health.command, ["/bin/sh", "-c", "test -f /run/flannel/subnet.env"]);
        assert_eq!(health.interval, Duration::from_secs(5));
        assert_eq!(health.timeout, Duration::from_secs(5));
        assert_eq!(health.retries, 3);
        assert_eq!(health.on_unhealthy, OnUnhealthy::Restart);

        let user = ReadySettings { ready: Some(ReadyMode::Notify), ..ReadySettings::default() };
        let readiness = user.over(&image).resolve().unwrap();
        assert_eq!((readiness.ready, readiness.health), (ReadyMode::Notify, None));
    }

    #[test]
    fn a_list_is_run_as_it_is() {
        let settings: ReadySettings =
            toml::from_str("ready = \"healthy\"\nhealth_cmd = [\"ctr\", \"version\"]\nhealth_retries = 1\n").unwrap();
        let health = settings.resolve().unwrap().health.unwrap();
        assert_eq!((health.command, health.retries), (vec!["ctr".to_owned(), "version".to_owned()], 1));
    }

    #[test]
    fn bad_settings_say_which_key_and_why() {
        let cases: &[(ReadySettings, &str)] = &[
            (ReadySettings { ready: Some(ReadyMode::Healthy), ..Default::default() }, "needs a health command"),
            (
                ReadySettings { start_timeout: Some("soon".into()), ..Default::default() },
                "start_timeout = \"soon\" is not a duration",
            ),
            (ReadySettings { start_timeout: Some("1h".into()), ..Default::default() }, "must be between 1s and 9m"),
            (
                ReadySettings { health_cmd: Some(HealthCommand::Exec(vec![])), ..Default::default() },
                "health_cmd is empty",
            ),
            (
                ReadySettings {
                    health_cmd: Some(HealthCommand::Shell("x".into())),
                    health_retries: Some(0),
                    ..Default::default()
                },
                "health_retries must be between 1 and 100",
            ),
            (
                ReadySettings { health_cmd: Some(HealthCommand::Shell("x".repeat(5000))), ..Default::default() },
                "longer than 64 arguments or 4096 bytes",
            ),
            (ReadySettings { health_cmd: Some(HealthCommand::Shell("a\0b".into())), ..Default::default() }, "NUL"),
        ];
        for (settings, expected) in cases {
            let err = settings.resolve().unwrap_err();
            assert!(format!("{err:#}").contains(expected), "{settings:?}: {err:#}");
        }
        let err = ReadySettings::from_labels(Some(&labels(&[("sysctr.ready", "eventually")]))).unwrap_err();
        assert!(format!("{err:#}").contains("sysctr.ready: ready must be notify, started or healthy"), "{err:#}");
        assert!(toml::from_str::<ReadySettings>("redy = \"started\"\n").is_err(), "unknown keys are refused");
    }

    #[test]
    fn only_a_unit_that_runs_exec_start_alone_is_supervised() {
        let exec = "/usr/sbin/runc --systemd-cgroup run 'etcd'";
        assert!(starts_with_exec_start(&format!("[Service]\nExecStart={exec}\nRestart=on-failure\n"), exec));
        assert!(!starts_with_exec_start("[Service]\nExecStart=/bin/sh -c 'runc run etcd'\n", exec));
        assert!(!starts_with_exec_start(&format!("[Service]\nExecStart={exec}\nExecStart=/bin/true\n"), exec));
    }

    #[test]
    fn the_dropin_makes_the_unit_wait_for_ready() {
        let readiness = ReadySettings { health_cmd: Some(HealthCommand::Shell("true".into())), ..Default::default() }
            .resolve()
            .unwrap();
        assert_eq!(unit_type("[Service]\nType=simple\n Type=notify\n"), Some("notify"));
        assert_eq!(unit_type("[Service]\nExecStart=/bin/true\n"), None);
        let unit = ReadyUnit {
            lines: true,
            unit_restarts: false,
            supervise: Some(
                "/usr/libexec/sysctr/sysctr-supervise '/var/lib/sysctr/deployments/web.0/readiness.json' -- \
                 /usr/sbin/runc --systemd-cgroup run --pid-file /run/sysctr/web.pid 'web'"
                    .into(),
            ),
        };
        assert_eq!(
            unit.dropin_lines(&readiness),
            "# Ready means healthy: systemd waits for it, and After= on this unit waits for it too.\n\
             Type=notify\nNotifyAccess=all\nTimeoutStartSec=105\nExecStart=\n\
             ExecStart=/usr/libexec/sysctr/sysctr-supervise '/var/lib/sysctr/deployments/web.0/readiness.json' -- \
             /usr/sbin/runc --systemd-cgroup run --pid-file /run/sysctr/web.pid 'web'\n"
        );
    }
}
