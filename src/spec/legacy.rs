//! Shapes of `config.json` written for older runc versions, which images built for atomic still
//! carry, rewritten into the shape the runc of this host reads. This is the one place where sysctr
//! changes an image's runtime config; each rewrite keeps what the author asked for and is reported
//! to the user.
//!
//! | shape (spec version that wrote it) | what runc ≥ 1.0 does with it | rewrite |
//! |---|---|---|
//! | `linux.seccomp` with an empty `defaultAction` and no syscalls (`runc spec`, 2016–2017) | no filter | removed, which means the same |
//! | `linux.capabilities` (0.x) | ignores it | moved to `process.capabilities` |
//! | a flat capability list (≤ 1.0.0-rc2) | refuses to start | the list is given to every set |
//! | `linux.rlimits` (0.x) | ignores it | moved to `process.rlimits` |
//! | `linux.apparmorProfile`, `linux.selinuxProcessLabel` (0.x) | ignores them | moved to `process` when not empty |
//! | `linux.resources.oomScoreAdj` (≤ 1.0.0-rc5) | ignores it | moved to `process.oomScoreAdj` |
//! | a seccomp rule with `name` (≤ 1.0.0-rc4) | refuses to start | `names: [name]` |

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The capability sets a pre-1.0 flat list applied to.
const CAPABILITY_SETS: [&str; 5] = ["bounding", "effective", "inheritable", "permitted", "ambient"];

/// One rewrite applied to a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rewrite {
    EmptySeccompRemoved,
    CapabilitiesMovedToProcess,
    FlatCapabilityList,
    RlimitsMovedToProcess,
    SecurityLabelsMovedToProcess,
    OomScoreAdjMovedToProcess,
    SeccompRuleNameToNames,
}

impl fmt::Display for Rewrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rewrite::EmptySeccompRemoved => {
                "linux.seccomp had no default action and no rules (no filter): removed, which runc reads the same way"
            }
            Rewrite::CapabilitiesMovedToProcess => {
                "linux.capabilities (OCI 0.x) moved to process.capabilities, where runc reads it"
            }
            Rewrite::FlatCapabilityList => {
                "process.capabilities was a plain list (OCI 1.0.0-rc2 and older): given to every capability set"
            }
            Rewrite::RlimitsMovedToProcess => "linux.rlimits (OCI 0.x) moved to process.rlimits, where runc reads it",
            Rewrite::SecurityLabelsMovedToProcess => {
                "linux.apparmorProfile/selinuxProcessLabel (OCI 0.x) moved to process, where runc reads them"
            }
            Rewrite::OomScoreAdjMovedToProcess => {
                "linux.resources.oomScoreAdj (OCI 1.0.0-rc5 and older) moved to process.oomScoreAdj"
            }
            Rewrite::SeccompRuleNameToNames => "seccomp rules with 'name' (OCI 1.0.0-rc4 and older) given as 'names'",
        })
    }
}

/// Rewrites every legacy shape found in `config` (a parsed `config.json`) and says which.
pub fn upgrade(config: &mut Map<String, Value>) -> Vec<Rewrite> {
    let mut done = Vec::new();
    let mut linux = config.remove("linux");
    let mut process = config.remove("process");
    if let (Some(Value::Object(linux)), Some(Value::Object(process))) = (&mut linux, &mut process) {
        if move_field(linux, "capabilities", process, "capabilities") {
            done.push(Rewrite::CapabilitiesMovedToProcess);
        }
        if move_field(linux, "rlimits", process, "rlimits") {
            done.push(Rewrite::RlimitsMovedToProcess);
        }
        let apparmor = move_label(linux, "apparmorProfile", process, "apparmorProfile");
        let selinux = move_label(linux, "selinuxProcessLabel", process, "selinuxLabel");
        if apparmor || selinux {
            done.push(Rewrite::SecurityLabelsMovedToProcess);
        }
        if let Some(Value::Object(resources)) = linux.get_mut("resources") {
            if move_field(resources, "oomScoreAdj", process, "oomScoreAdj") {
                done.push(Rewrite::OomScoreAdjMovedToProcess);
            }
        }
    }
    if let Some(Value::Object(process)) = &mut process {
        if let Some(Value::Array(list)) = process.get("capabilities") {
            let sets: Map<String, Value> =
                CAPABILITY_SETS.iter().map(|set| (set.to_string(), Value::Array(list.clone()))).collect();
            process.insert("capabilities".into(), Value::Object(sets));
            done.push(Rewrite::FlatCapabilityList);
        }
    }
    if let Some(Value::Object(linux)) = &mut linux {
        done.extend(upgrade_seccomp(linux));
    }
    if let Some(process) = process {
        config.insert("process".into(), process);
    }
    if let Some(linux) = linux {
        config.insert("linux".into(), linux);
    }
    done
}

fn upgrade_seccomp(linux: &mut Map<String, Value>) -> Option<Rewrite> {
    let Value::Object(seccomp) = linux.get_mut("seccomp")? else { return None };
    let no_default = seccomp.get("defaultAction").is_none_or(|a| a.is_null() || a.as_str() == Some(""));
    let no_rules = seccomp.get("syscalls").is_none_or(|s| s.is_null() || s.as_array().is_some_and(Vec::is_empty));
    if no_default && no_rules {
        linux.remove("seccomp");
        return Some(Rewrite::EmptySeccompRemoved);
    }
    let mut renamed = false;
    if let Some(Value::Array(rules)) = seccomp.get_mut("syscalls") {
        for rule in rules.iter_mut().filter_map(Value::as_object_mut) {
            if rule.contains_key("names") {
                continue;
            }
            if let Some(name) = rule.remove("name") {
                rule.insert("names".into(), Value::Array(vec![name]));
                renamed = true;
            }
        }
    }
    renamed.then_some(Rewrite::SeccompRuleNameToNames)
}

/// Moves `from[key]` to `to[to_key]` unless `to` already has one (the newer place wins);
/// true when something was moved or dropped.
fn move_field(from: &mut Map<String, Value>, key: &str, to: &mut Map<String, Value>, to_key: &str) -> bool {
    let Some(value) = from.remove(key) else { return false };
    if value.is_null() {
        return false;
    }
    if to.get(to_key).is_none_or(|v| v.is_null()) {
        to.insert(to_key.into(), value);
    }
    true
}

/// As [`move_field`], for labels whose empty string means "none": an empty one is left alone.
fn move_label(from: &mut Map<String, Value>, key: &str, to: &mut Map<String, Value>, to_key: &str) -> bool {
    match from.get(key) {
        Some(Value::String(s)) if !s.is_empty() => move_field(from, key, to, to_key),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn upgraded(config: Value) -> (Value, Vec<Rewrite>) {
        let Value::Object(mut map) = config else { panic!("not an object") };
        let done = upgrade(&mut map);
        (Value::Object(map), done)
    }

    #[test]
    fn atomic_0_3_config_is_moved_into_place() {
        let (config, done) = upgraded(json!({
            "ociVersion": "0.3.0",
            "process": {"args": ["/usr/bin/run.sh"]},
            "linux": {
                "capabilities": {"bounding": ["CAP_CHOWN"]},
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                "apparmorProfile": "", "selinuxProcessLabel": "",
                "seccomp": {"defaultAction": "", "architectures": null}
            }
        }));
        assert_eq!(
            done,
            [Rewrite::CapabilitiesMovedToProcess, Rewrite::RlimitsMovedToProcess, Rewrite::EmptySeccompRemoved]
        );
        assert_eq!(config["process"]["capabilities"], json!({"bounding": ["CAP_CHOWN"]}));
        assert_eq!(config["process"]["rlimits"][0]["soft"], 1024);
        assert!(config["linux"].get("seccomp").is_none());
        assert!(config["linux"].get("capabilities").is_none());
        // Empty labels mean "none" and stay where they are.
        assert_eq!(config["linux"]["apparmorProfile"], "");
    }

    #[test]
    fn flat_capability_list_goes_to_every_set() {
        let (config, done) = upgraded(json!({
            "process": {"args": ["x"]},
            "linux": {"capabilities": ["CAP_KILL", "CAP_AUDIT_WRITE"]}
        }));
        assert_eq!(done, [Rewrite::CapabilitiesMovedToProcess, Rewrite::FlatCapabilityList]);
        for set in CAPABILITY_SETS {
            assert_eq!(config["process"]["capabilities"][set], json!(["CAP_KILL", "CAP_AUDIT_WRITE"]), "{set}");
        }
    }

    #[test]
    fn current_configs_are_left_alone() {
        let current = json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["x"], "capabilities": {"bounding": ["CAP_KILL"]}, "oomScoreAdj": 5,
                        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1, "soft": 1}]},
            "linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW",
                                  "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO"}]},
                      "resources": {"devices": [{"allow": false, "access": "rwm"}]}}
        });
        let (config, done) = upgraded(current.clone());
        assert!(done.is_empty(), "{done:?}");
        assert_eq!(config, current);
    }

    #[test]
    fn the_newer_place_wins_and_old_rule_names_become_lists() {
        let (config, done) = upgraded(json!({
            "process": {"args": ["x"], "rlimits": [{"type": "RLIMIT_NPROC", "hard": 9, "soft": 9}]},
            "linux": {
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1, "soft": 1}],
                "selinuxProcessLabel": "system_u:system_r:container_t:s0",
                "resources": {"oomScoreAdj": -500},
                "seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"name": "kill", "action": "SCMP_ACT_ERRNO"}]}
            }
        }));
        assert_eq!(
            done,
            [
                Rewrite::RlimitsMovedToProcess,
                Rewrite::SecurityLabelsMovedToProcess,
                Rewrite::OomScoreAdjMovedToProcess,
                Rewrite::SeccompRuleNameToNames
            ]
        );
        assert_eq!(config["process"]["rlimits"][0]["type"], "RLIMIT_NPROC");
        assert_eq!(config["process"]["selinuxLabel"], "system_u:system_r:container_t:s0");
        assert_eq!(config["process"]["oomScoreAdj"], -500);
        assert_eq!(config["linux"]["seccomp"]["syscalls"][0]["names"], json!(["kill"]));
        assert!(config["linux"]["seccomp"]["syscalls"][0].get("name").is_none());
    }
}
