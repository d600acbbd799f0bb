//! The host files a container shares read-only (`/etc/hosts`, `/etc/resolv.conf`), which a host
//! may not have: a minimal OS tree ships no `/etc/hosts`, and `/etc/resolv.conf` may be a link to
//! a file a resolver writes later. runc refuses to start a container whose bind mount has no
//! source, so such a mount is pointed at an empty stand-in file while the host's is absent, and
//! back at the host's once it is there.

use anyhow::{Context, Result};
use serde_json::Value;

/// The host files a spec may bind-mount at the same path, that a container can run without.
pub const SHARED_HOST_FILES: [&str; 2] = ["/etc/resolv.conf", "/etc/hosts"];

/// What fitting changed for one shared host file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostFileChange {
    /// The host has no such file: the container gets an empty one.
    StandIn(String),
    /// The host has the file again: the container gets the host's.
    Restored(String),
}

impl std::fmt::Display for HostFileChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostFileChange::StandIn(path) => {
                write!(f, "{path} is absent on this host: the container gets an empty one")
            }
            HostFileChange::Restored(path) => write!(f, "{path} is on this host again: the container gets it"),
        }
    }
}

/// `text` with every bind mount of a [`SHARED_HOST_FILES`] file (source the file itself or
/// `stand_in`) taking its source from the host when `present(file)`, else from `stand_in`; and
/// what changed. `None` when nothing did. Other mounts are left alone.
pub fn fit_host_files(
    text: &str,
    present: impl Fn(&str) -> Result<bool>,
    stand_in: &str,
) -> Result<Option<(String, Vec<HostFileChange>)>> {
    let mut config: Value = serde_json::from_str(text).context("reading config.json")?;
    let mut changes = Vec::new();
    if let Some(mounts) = config.get_mut("mounts").and_then(Value::as_array_mut) {
        for mount in mounts {
            let Some(destination) = mount.get("destination").and_then(Value::as_str).map(str::to_string) else {
                continue;
            };
            let Some(source) = mount.get("source").and_then(Value::as_str) else { continue };
            if !SHARED_HOST_FILES.contains(&destination.as_str()) || (source != destination && source != stand_in) {
                continue;
            }
            let (wanted, change) = if present(&destination)? {
                (destination.as_str(), HostFileChange::Restored(destination.clone()))
            } else {
                (stand_in, HostFileChange::StandIn(destination.clone()))
            };
            if source != wanted {
                mount["source"] = Value::from(wanted);
                changes.push(change);
            }
        }
    }
    if changes.is_empty() {
        return Ok(None);
    }
    let text = serde_json::to_string_pretty(&config).context("writing config.json")?;
    Ok(Some((text, changes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAND_IN: &str = "/var/lib/sysctr/deployments/x.0/absent-host-file";

    fn config(hosts_source: &str) -> String {
        format!(
            r#"{{"ociVersion": "1.0.2", "mounts": [
                {{"destination": "/etc/hosts", "type": "bind", "source": "{hosts_source}", "options": ["rbind", "ro"]}},
                {{"destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf", "options": ["rbind", "ro"]}},
                {{"destination": "/etc/hostname", "type": "bind", "source": "/srv/elsewhere", "options": ["rbind", "ro"]}},
                {{"destination": "/data", "type": "bind", "source": "/etc/hosts", "options": ["rbind", "ro"]}}]}}"#
        )
    }

    fn sources(text: &str) -> Vec<String> {
        let value: Value = serde_json::from_str(text).unwrap();
        value["mounts"].as_array().unwrap().iter().map(|m| m["source"].as_str().unwrap().to_string()).collect()
    }

    #[test]
    fn an_absent_host_file_is_stood_in_for_and_given_back_once_there() {
        let only_resolv = |path: &str| Ok(path == "/etc/resolv.conf");
        let (text, changes) = fit_host_files(&config("/etc/hosts"), only_resolv, STAND_IN).unwrap().unwrap();
        assert_eq!(changes, [HostFileChange::StandIn("/etc/hosts".into())]);
        // A mount of another destination, or from elsewhere, is the image's business.
        assert_eq!(sources(&text), [STAND_IN, "/etc/resolv.conf", "/srv/elsewhere", "/etc/hosts"]);
        assert!(fit_host_files(&text, only_resolv, STAND_IN).unwrap().is_none(), "a second start changes nothing");

        let (text, changes) = fit_host_files(&text, |_| Ok(true), STAND_IN).unwrap().unwrap();
        assert_eq!(changes, [HostFileChange::Restored("/etc/hosts".into())]);
        assert_eq!(sources(&text), ["/etc/hosts", "/etc/resolv.conf", "/srv/elsewhere", "/etc/hosts"]);
    }

    #[test]
    fn configs_without_such_mounts_are_left_alone() {
        assert!(fit_host_files(r#"{"ociVersion": "1.0.2"}"#, |_| Ok(false), STAND_IN).unwrap().is_none());
        assert!(fit_host_files("not json", |_| Ok(false), STAND_IN).is_err());
        let err = fit_host_files(&config("/etc/hosts"), |_| anyhow::bail!("cannot look"), STAND_IN).unwrap_err();
        assert!(err.to_string().contains("cannot look"), "{err:#}");
    }
}
