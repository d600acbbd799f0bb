//! Image references, container names, digests and `--set` arguments: what a user or an `apply`
//! file gives on the command line, and what the store gives back (`update` re-parses the
//! installed image's canonical reference).
//!
//! Invariants, besides no panic:
//! - a reference that parses has a canonical text that parses back to the same reference;
//! - an accepted container name is a single safe path component and unit name;
//! - an accepted digest is `sha256:` and 64 lower-case hex digits, and parses back the same;
//! - an accepted `--set NAME=VALUE` gives back the argument.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use sysctr::digest::Digest;
use sysctr::reference::{validate_container_name, ImageRef, MAX_NAME_LEN};
use sysctr::template::parse_set;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };

    if let Ok(reference) = ImageRef::parse(text) {
        let canonical = reference.canonical();
        match ImageRef::parse(&canonical) {
            Ok(again) => assert_eq!(again, reference, "{text:?} -> {canonical:?}"),
            Err(err) => panic!("{text:?}: canonical {canonical:?} does not parse: {err:#}"),
        }
        let _ = validate_container_name(&reference.default_container_name());
    }

    if validate_container_name(text).is_ok() {
        assert!(!text.is_empty() && text.len() <= MAX_NAME_LEN, "{text:?}");
        assert!(text != "." && text != "..", "{text:?}");
        assert!(
            text.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)),
            "{text:?}"
        );
    }

    if let Ok(digest) = Digest::parse(text) {
        let hex = digest.hex();
        assert!(hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')), "{text:?}");
        assert_eq!(Digest::parse(digest.as_str()).unwrap(), digest);
    }

    if let Ok((name, value)) = parse_set(text) {
        assert_eq!(format!("{name}={value}"), text);
    }
});
