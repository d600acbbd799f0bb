//! What a container's unit is ready on, as resolved at install, and the plan the supervisor of
//! its start reads (`readiness.json` in the slot).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The largest plan read by the supervisor.
const MAX_PLAN: u64 = 64 * 1024;

/// When systemd is told that a container is ready: its unit is `Type=notify` in every mode, so
/// `After=` on it means ready.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadyMode {
    /// The container's own process sends READY=1 (runc passes its notify socket through).
    Notify,
    /// Once runc has started the container's process.
    #[default]
    Started,
    /// Once a health command run inside the container succeeds; it keeps running at an interval.
    Healthy,
}

impl std::fmt::Display for ReadyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReadyMode::Notify => "notify",
            ReadyMode::Started => "started",
            ReadyMode::Healthy => "healthy",
        })
    }
}

impl std::str::FromStr for ReadyMode {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> Result<ReadyMode> {
        Ok(match text {
            "notify" => ReadyMode::Notify,
            "started" => ReadyMode::Started,
            "healthy" => ReadyMode::Healthy,
            other => bail!("ready must be notify, started or healthy, not {:?}", other.escape_debug().to_string()),
        })
    }
}

/// What the supervisor does when a running container's health check keeps failing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnhealthy {
    /// Say so (journal, `sysctr status`) and leave it running.
    #[default]
    Log,
    /// Stop it with a failure, for the unit's `Restart=` to start it again.
    Restart,
}

impl std::str::FromStr for OnUnhealthy {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> Result<OnUnhealthy> {
        Ok(match text {
            "log" => OnUnhealthy::Log,
            "restart" => OnUnhealthy::Restart,
            other => bail!("on_unhealthy must be log or restart, not {:?}", other.escape_debug().to_string()),
        })
    }
}

/// The health command of a `healthy` container and its schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Run inside the container (`runc exec`): an argument vector.
    pub command: Vec<String>,
    #[serde(with = "duration_text")]
    pub interval: Duration,
    /// How long one run may take before it counts as failed.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// Consecutive failures of a running container before it is unhealthy.
    pub retries: u32,
    pub on_unhealthy: OnUnhealthy,
}

/// A container's readiness, resolved from its image and what the user set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: ReadyMode,
    /// How long a start may take to reach ready before it fails.
    #[serde(with = "duration_text")]
    pub start_timeout: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

impl Default for Readiness {
    fn default() -> Readiness {
        Readiness { ready: ReadyMode::Started, start_timeout: DEFAULT_START_TIMEOUT, health: None }
    }
}

/// systemd's own default for `TimeoutStartSec=`.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(90);

/// What `sysctr-supervise` needs to start a container and tell systemd when it is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisePlan {
    pub name: String,
    /// The runtime the unit runs, for `exec` (health checks) and `kill`.
    pub runtime: PathBuf,
    /// Where `runc run --pid-file` writes the pid of the container's process.
    pub pid_file: PathBuf,
    /// Where the supervisor keeps the container's health for `sysctr status`.
    pub health_file: PathBuf,
    pub readiness: Readiness,
}

impl SupervisePlan {
    pub fn read(path: &Path) -> Result<SupervisePlan> {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_PLAN + 1).read_to_string(&mut text))
            .with_context(|| format!("reading {}", path.display()))?;
        if text.len() as u64 > MAX_PLAN {
            bail!("{} is larger than {MAX_PLAN} bytes", path.display());
        }
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Durations kept as text (`90s`, `1m 30s`), as users write them.
pub mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(*value).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_reads_back_as_written() {
        let plan = SupervisePlan {
            name: "flannel".into(),
            runtime: "/usr/sbin/runc".into(),
            pid_file: "/run/sysctr/flannel.pid".into(),
            health_file: "/run/sysctr/flannel.health".into(),
            readiness: Readiness {
                ready: ReadyMode::Healthy,
                start_timeout: Duration::from_secs(75),
                health: Some(Health {
                    command: vec!["test".into(), "-f".into(), "/run/flannel/subnet.env".into()],
                    interval: Duration::from_millis(2500),
                    timeout: Duration::from_secs(3),
                    retries: 2,
                    on_unhealthy: OnUnhealthy::Restart,
                }),
            },
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("readiness.json");
        let text = serde_json::to_string(&plan).unwrap();
        assert!(text.contains("\"start_timeout\":\"1m 15s\""), "{text}");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(SupervisePlan::read(&path).unwrap(), plan);
    }

    #[test]
    fn an_oversized_plan_is_refused_before_it_is_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("readiness.json");
        std::fs::write(&path, " ".repeat(MAX_PLAN as usize + 1)).unwrap();
        let err = SupervisePlan::read(&path).unwrap_err();
        assert!(format!("{err:#}").contains("larger than 65536 bytes"), "{err:#}");
    }
}
