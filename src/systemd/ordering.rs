//! Checking a unit's dependencies before it is written: an ordering cycle (`After=`/`Before=`)
//! through the units of the target root is refused, and a dependency on a unit that does not
//! exist there is reported.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Result};

/// Where unit files are looked up, relative to the root, in systemd's order of precedence.
const UNIT_DIRS: [&str; 4] =
    ["etc/systemd/system", "run/systemd/system", "usr/lib/systemd/system", "lib/systemd/system"];
const DEPENDENCY_KEYS: [&str; 6] = ["After", "Before", "Requires", "Wants", "RequiredBy", "WantedBy"];

/// The dependencies a unit file names, by key.
fn dependencies(text: &str) -> BTreeMap<&'static str, Vec<String>> {
    let mut deps: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        let Some((key, value)) = line.split_once('=') else { continue };
        if let Some(key) = DEPENDENCY_KEYS.iter().find(|k| **k == key.trim()) {
            deps.entry(key).or_default().extend(value.split_whitespace().map(str::to_string));
        }
    }
    deps
}

fn read_unit(root: &Path, name: &str) -> Option<String> {
    UNIT_DIRS.iter().find_map(|dir| std::fs::read_to_string(root.join(dir).join(name)).ok())
}

fn exists(root: &Path, name: &str) -> bool {
    UNIT_DIRS.iter().any(|dir| std::fs::symlink_metadata(root.join(dir).join(name)).is_ok())
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

/// Checks `unit_text`, about to be installed as `unit_name` under `root`. Fails on an ordering
/// cycle, naming it; returns each dependency on a unit that does not exist.
pub fn check_dependencies(root: &Path, unit_name: &str, unit_text: &str) -> Result<Vec<MissingUnit>> {
    check_dependencies_of_set(root, &[(unit_name.to_string(), unit_text.to_string())])
}

/// Like [`check_dependencies`] for several units about to be installed together: each may
/// depend on the others, and their texts replace any unit file of the same name under `root`.
pub fn check_dependencies_of_set(root: &Path, units: &[(String, String)]) -> Result<Vec<MissingUnit>> {
    let planned: BTreeMap<&str, &str> = units.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    let mut warnings = Vec::new();
    for (unit_name, unit_text) in units {
        for (key, names) in dependencies(unit_text) {
            for name in names {
                if !exists(root, &name) && !planned.contains_key(name.as_str()) {
                    warnings.push(MissingUnit { unit: unit_name.clone(), key: key.to_string(), missing: name.clone() });
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
        let deps = dependencies(&text);
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
            root.path(),
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
            check_dependencies_of_set(root.path(), &chain).unwrap().iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            ["etcd.service has After=network.target, but there is no unit network.target on this host"]
        );
        let mut looped = chain.clone();
        looped[0].1 = "[Unit]\nAfter=containerd.service\n".to_string();
        let err = check_dependencies_of_set(root.path(), &looped).unwrap_err().to_string();
        assert!(err.contains("ordering cycle") && err.contains("etcd.service after containerd.service"), "{err}");
    }

    #[test]
    fn an_ordering_cycle_is_refused_and_named() {
        let root = root_with(&[
            ("etcd.service", "[Unit]\nAfter=containerd.service\n"),
            ("containerd.service", "[Unit]\nAfter=flannel.service\n"),
        ]);
        let err = check_dependencies(root.path(), "flannel.service", "[Unit]\nAfter=etcd.service\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "flannel.service would close an ordering cycle: flannel.service after etcd.service after containerd.service after flannel.service"
        );
        // Before= counts the other way round.
        let root = root_with(&[("etcd.service", "[Unit]\nBefore=flannel.service\n")]);
        assert!(check_dependencies(root.path(), "flannel.service", "[Unit]\nBefore=etcd.service\n").is_err());
        assert!(check_dependencies(root.path(), "flannel.service", "[Unit]\nAfter=etcd.service\n").is_ok());
    }
}
