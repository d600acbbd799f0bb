//! The rendered-config contract (`spec::check`, with the legacy rewrites of `spec/legacy.rs`),
//! and the config generated from an image config and its `/etc/passwd` and `/etc/group`
//! (`spec::generate`) for images that ship none.
//!
//! Input: a JSON text (a `config.json`, or an image config), then optionally `\x1f` and the
//! passwd text, `\x1f` and the group text.
//!
//! Invariants, besides no panic:
//! - an accepted config is a JSON object with the read-only `rootfs` root (for a deployment)
//!   and a non-empty list of string arguments;
//! - one with no rewrite is passed on unchanged, and a rewritten one needs no further rewrite;
//! - a generated config passes the contract with no rewrite.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use oci_spec::image::ImageConfiguration;
use sysctr::spec::{check, generate, GenerateInputs, RootUse, ROOTFS};

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    let mut fields = text.split(common::FIELD);
    let json = fields.next().unwrap_or_default();
    let passwd = fields.next();
    let group = fields.next();

    for root_use in [RootUse::ReadOnly, RootUse::Throwaway] {
        let Ok(checked) = check(json, "config.json", root_use) else { continue };
        let value: serde_json::Value = serde_json::from_str(&checked.text).expect("the checked config is JSON");
        assert_eq!(value.pointer("/root/path").and_then(|p| p.as_str()), Some(ROOTFS));
        if root_use == RootUse::ReadOnly {
            assert_eq!(value.pointer("/root/readonly"), Some(&serde_json::Value::Bool(true)));
        }
        let args = value.pointer("/process/args").and_then(|a| a.as_array()).expect("process.args");
        assert!(!args.is_empty() && args.iter().all(|a| a.is_string()));
        if checked.rewrites.is_empty() {
            assert_eq!(checked.text, json);
        } else {
            let again = check(&checked.text, "config.json", root_use).expect("a rewritten config passes again");
            assert!(again.rewrites.is_empty(), "rewritten twice: {:?} then {:?}", checked.rewrites, again.rewrites);
        }
    }

    if let Ok(image) = serde_json::from_str::<ImageConfiguration>(json) {
        let inputs = GenerateInputs { hostname: "fuzz", passwd, group };
        if let Ok(generated) = generate(&image, &inputs) {
            match check(&generated, "config.json", RootUse::ReadOnly) {
                Ok(checked) => assert!(checked.rewrites.is_empty(), "{:?}", checked.rewrites),
                Err(err) => panic!("a generated config fails the contract: {err:#}\n{generated}"),
            }
        }
    }
});
