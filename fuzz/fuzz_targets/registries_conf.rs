//! containers-registries.conf(5), read to find the registries marked `insecure = true`, and the
//! loopback test on a registry name: together they decide when sysctr uses plain HTTP.
//!
//! Input: the file's text, then `\x1f` and the registry (`HOST[:PORT]`).
//!
//! Invariants, besides no panic: a registry is marked insecure only by a file that says
//! `insecure`, and only when it is named in it.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use sysctr::fuzzing::{registries_conf_marks_insecure, registry_is_loopback};

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    let (conf, registry) = text.split_once(common::FIELD).unwrap_or((text, "registry.lan:5000"));
    let _ = registry_is_loopback(registry);
    if let Ok(true) = registries_conf_marks_insecure(conf, registry) {
        assert!(conf.contains("insecure"), "{conf:?}");
    }
});
