//! Checking a unit's dependencies before it is written: an ordering cycle (`After=`/`Before=`)
//! through the units of the target root is refused, and a dependency on a unit that does not
//! exist there is reported. Every name is checked as a unit name before anything is looked up,
//! and unit files are read beneath the root's handle, bounded in size.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Result};

use super::offline::check_unit_name;
use super::UNIT_DIRS;
use crate::rooted::RootedDir;

const DEPENDENCY_KEYS: [&str; 9] =
    ["After", "Before", "Requires", "Requisite", "Wants", "BindsTo", "PartOf", "RequiredBy", "WantedBy"];
/// The largest unit file of the root that is read to follow its ordering.
const MAX_UNIT_FILE: u64 = 1024 * 1024;

/// The dependencies a unit file names, by key; `Err` names the first value that is not a unit
/// name.
fn dependencies(text: &str) -> Result<BTreeMap<&'static str, Vec<String>>, (String, String)> {
    let mut deps: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        let Some((key, value)) = line.split_once('=') else { continue };
        if let Some(key) = DEPENDENCY_KEYS.iter().find(|k| **k == key.trim()) {
            for name in value.split_whitespace() {
                if check_unit_name(name).is_err() {
                    return Err((key.to_string(), name.to_string()));
                }
                deps.entry(key).or_default().push(name.to_string());
            }
        }
    }
    Ok(deps)
}

/// A unit file of the root, as the root resolves it (units are often links to others); `None`
/// when there is none, or it is not a regular file of a sane size (`/dev/null` for a masked one).
fn read_unit(root: &RootedDir, name: &str) -> Option<String> {
    UNIT_DIRS.iter().find_map(|dir| {
        let bytes = root.read_file_followed(&Path::new(dir).join(name), MAX_UNIT_FILE).ok()?;
        String::from_utf8(bytes).ok()
    })
}

fn exists(root: &RootedDir, name: &str) -> Result<bool> {
    for dir in UNIT_DIRS {
        if root.kind(&Path::new(dir).join(name))?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A dependency (`After=`, `Requires=`, ...) on a unit that does not exist on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingUnit {
    /// The unit that has the dependency.
    pub unit: String,
    /// The directive, e.g. `After`.
    pub key: String,
    /// The unit it names, which does not exist.
    pub missing: String,
}

impl std::fmt::Display for MissingUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} has {}={}, but there is no unit {} on this host", self.unit, self.key, self.missing, self.missing)
    }
}

/// Checks `unit_text`, about to be installed as `unit_name` under `root`. Fails on a value that
/// is not a unit name and on an ordering cycle, naming it; returns each dependency on a unit
/// that does not exist.
pub fn check_dependencies(root: &RootedDir, unit_name: &str, unit_text: &str) -> Result<Vec<MissingUnit>> {
    check_dependencies_of_set(root, &[(unit_name.to_string(), unit_text.to_string())])
}

/// Like [`check_dependencies`] for several units about to be installed together: each may
/// depend on the others, and their texts replace any unit file of the same name under `root`.
pub fn check_dependencies_of_set(root: &RootedDir, units: &[(String, String)]) -> Result<Vec<MissingUnit>> {
    let planned: BTreeMap<&str, &str> = units.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    let mut warnings = Vec::new();
    let mut planned_deps = BTreeMap::new();
    for (unit_name, unit_text) in units {
        let deps = dependencies(unit_text)
            .map_err(|(key, value)| anyhow::anyhow!("{unit_name} has {key}={value}, which is not a unit name"))?;
        planned_deps.insert(unit_name.as_str(), deps);
    }
    for (unit_name, deps) in &planned_deps {
        for (key, names) in deps {
            for name in names {
                if !planned.contains_key(name.as_str()) && !exists(root, name)? {
                    warnings.push(MissingUnit {
                        unit: unit_name.to_string(),
                        key: key.to_string(),
                        missing: name.clone(),
                    });
                }
            }
        }
    }

    // "A starts after B" edges, over every unit reachable from the new ones through After/Before.
    let mut after: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut todo: Vec<(String, Option<String>)> = units.iter().map(|(n, t)| (n.clone(), Some(t.clone()))).collect();
    let mut seen: BTreeSet<String> = units.iter().map(|(n, _)| n.clone()).collect();
    while let Some((name, text)) = todo.pop() {
        let Some(text) = text.or_else(|| read_unit(root, &name)) else { continue };
        // The root's own units are followed as far as they make sense; a value that is not a
        // unit name there is systemd's to complain about, not a way to read another file.
        let Ok(deps) = dependencies(&text) else { continue };
        for other in deps.get("After").into_iter().flatten() {
            after.entry(name.clone()).or_default().insert(other.clone());
        }
        for other in deps.get("Before").into_iter().flatten() {
            after.entry(other.clone()).or_default().insert(name.clone());
        }
        for other in deps.get("After").into_iter().chain(deps.get("Before")).flatten() {
            if seen.insert(other.clone()) {
                let text = planned.get(other.as_str()).map(|t| t.to_string());
                todo.push((other.clone(), text));
            }
        }
    }
    for (unit_name, _) in units {
        if let Some(cycle) = find_cycle(&after, unit_name) {
            bail!("{unit_name} would close an ordering cycle: {}", cycle.join(" after "));
        }
    }
    Ok(warnings)
}

/// A path start -> ... -> start along the edges, if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn walk(
        edges: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> bool {
        let current = path.last().cloned().unwrap_or_default();
        for next in edges.get(&current).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if done.insert(next.clone()) {
                path.push(next.clone());
                if walk(edges, start, path, done) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    walk(edges, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooted(root: &tempfile::TempDir) -> RootedDir {
        RootedDir::open(root.path(), crate::rooted::Resolve::InRoot).unwrap()
    }

    /// Values that name files rather than units are refused before anything is read; the
    /// root's units are read beneath it, never a device or a FIFO, never outside it.
    #[test]
    fn ordering_values_are_unit_names_and_units_are_read_beneath_the_root() {
        let root = root_with(&[]);
        for bad in ["/etc/shadow", "/dev/zero", "../../etc/passwd", "a/b.service", "x"] {
            for key in ["After", "Before", "Requires", "Wants", "BindsTo"] {
                let unit = format!("[Unit]\n{key}=network.target {bad}\n");
                let err = check_dependencies(&rooted(&root), "x.service", &unit).unwrap_err().to_string();
                assert_eq!(err, format!("x.service has {key}={bad}, which is not a unit name"));
            }
        }
        // A unit of the root that is a FIFO, a device, or a link leaving the root: not read (a
        // FIFO would block, a device never end), and nothing of this machine is followed.
        let units = root.path().join("etc/systemd/system");
        nix::unistd::mkfifo(&units.join("fifo.service"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", units.join("zero.service")).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("x.service"), "[Unit]\nAfter=new.service\n").unwrap();
        std::os::unix::fs::symlink(outside.path().join("x.service"), units.join("escape.service")).unwrap();
        let unit = "[Unit]\nAfter=fifo.service zero.service escape.service\n";
        let warnings = check_dependencies(&rooted(&root), "new.service", unit).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    fn root_with(units: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("etc/systemd/system");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in units {
            std::fs::write(dir.join(name), text).unwrap();
        }
        root
    }

    #[test]
    fn a_chain_passes_and_missing_units_are_reported() {
        let root = root_with(&[("etcd.service", "[Unit]\nAfter=network.target\n"), ("multi-user.target", "")]);
        let warnings = check_dependencies(
            &rooted(&root),
            "flannel.service",
            "[Unit]\nAfter=etcd.service\nRequires=etcd.service\nBefore=containerd.service\n[Install]\nWantedBy=multi-user.target\n",
        )
        .unwrap();
        let warnings: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            ["flannel.service has Before=containerd.service, but there is no unit containerd.service on this host"]
        );
    }

    #[test]
    fn a_set_is_checked_as_a_whole() {
        let root = root_with(&[]);
        let chain = [
            ("etcd.service".to_string(), "[Unit]\nAfter=network.target\n".to_string()),
            ("flannel.service".to_string(), "[Unit]\nAfter=etcd.service\nBefore=containerd.service\n".to_string()),
            ("containerd.service".to_string(), "[Unit]\nAfter=flannel.service\n".to_string()),
        ];
        let warnings: Vec<String> =
            check_dependencies_of_set(&rooted(&root), &chain).unwrap().iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            ["etcd.service has After=network.target, but there is no unit network.target on this host"]
        );
        let mut looped = chain.clone();
        looped[0].1 = "[Unit]\nAfter=containerd.service\n".to_string();
        let err = check_dependencies_of_set(&rooted(&root), &looped).unwrap_err().to_string();
        assert!(err.contains("ordering cycle") && err.contains("etcd.service after containerd.service"), "{err}");
    }

    #[test]
    fn an_ordering_cycle_is_refused_and_named() {
        let root = root_with(&[
            ("etcd.service", "[Unit]\nAfter=containerd.service\n"),
            ("containerd.service", "[Unit]\nAfter=flannel.service\n"),
        ]);
        let err = check_dependencies(&rooted(&root), "flannel.service", "[Unit]\nAfter=etcd.service\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "flannel.service would close an ordering cycle: flannel.service after etcd.service after containerd.service after flannel.service"
        );
        // Before= counts the other way round.
        let root = root_with(&[("etcd.service", "[Unit]\nBefore=flannel.service\n")]);
        assert!(check_dependencies(&rooted(&root), "flannel.service", "[Unit]\nBefore=etcd.service\n").is_err());
        assert!(check_dependencies(&rooted(&root), "flannel.service", "[Unit]\nAfter=etcd.service\n").is_ok());
    }
}
