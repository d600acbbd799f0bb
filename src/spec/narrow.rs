//! Fitting a `config.json` to the capabilities the host can grant, for containers installed into
//! an OS image (`--root`): there, `ALL_PROCESS_CAPABILITIES` is every capability sysctr knows,
//! since the target's bounding set is not known until it boots. runc refuses to start a container
//! asking for a capability outside its own bounding set, so the unit narrows the config first.

use anyhow::{Context, Result};
use serde_json::Value;

use crate::template::capability_number;

/// The capability sets of `process.capabilities` in a runtime spec.
const SETS: [&str; 5] = ["bounding", "effective", "inheritable", "permitted", "ambient"];

/// `text` with every capability outside `bounding` (bit N for capability N) removed from
/// `process.capabilities`, and the names removed, sorted; `None` when nothing had to go. Names
/// sysctr does not know are kept: runc skips those itself.
pub fn narrow_capabilities(text: &str, bounding: u64) -> Result<Option<(String, Vec<String>)>> {
    let mut config: Value = serde_json::from_str(text).context("reading config.json")?;
    let mut dropped = std::collections::BTreeSet::new();
    if let Some(sets) = config.pointer_mut("/process/capabilities").and_then(Value::as_object_mut) {
        for set in SETS {
            let Some(names) = sets.get_mut(set).and_then(Value::as_array_mut) else { continue };
            names.retain(|name| {
                let number = name.as_str().and_then(capability_number);
                let keep = number.is_none_or(|n| n < 64 && bounding & (1u64 << n) != 0);
                if !keep {
                    dropped.insert(name.as_str().unwrap_or_default().to_string());
                }
                keep
            });
        }
    }
    if dropped.is_empty() {
        return Ok(None);
    }
    let text = serde_json::to_string_pretty(&config).context("writing config.json")?;
    Ok(Some((text, dropped.into_iter().collect())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_outside_the_set_go_from_every_set() {
        let config = r#"{"ociVersion": "1.0.0", "root": {"path": "rootfs", "readonly": true},
            "process": {"args": ["/bin/true"], "capabilities": {
                "bounding": ["CAP_CHOWN", "CAP_SYS_RESOURCE", "CAP_SYS_MODULE", "CAP_FUTURE"],
                "effective": ["CAP_SYS_RESOURCE"], "permitted": ["CAP_CHOWN"]}}}"#;
        // Everything but CAP_SYS_RESOURCE (24) and CAP_SYS_MODULE (16).
        let bounding = !(1 << 24) & !(1 << 16);
        let (text, dropped) = narrow_capabilities(config, bounding).unwrap().unwrap();
        assert_eq!(dropped, ["CAP_SYS_MODULE", "CAP_SYS_RESOURCE"]);
        let narrowed: Value = serde_json::from_str(&text).unwrap();
        let caps = &narrowed["process"]["capabilities"];
        assert_eq!(caps["bounding"], serde_json::json!(["CAP_CHOWN", "CAP_FUTURE"]));
        assert_eq!(caps["effective"], serde_json::json!([]));
        assert_eq!(caps["permitted"], serde_json::json!(["CAP_CHOWN"]));
        assert_eq!(narrowed["root"]["path"], "rootfs", "the rest is kept");

        assert!(narrow_capabilities(config, u64::MAX).unwrap().is_none(), "nothing to drop");
        assert!(narrow_capabilities(r#"{"process": {}}"#, 0).unwrap().is_none());
        assert!(narrow_capabilities("not json", 0).is_err());
    }
}
