//! Signatures as a lookaside or a registry hands them over: an OpenPGP message (checked against
//! an empty set of trusted keys), a signature claim of either kind, a `signedIdentity` and a
//! registries.d file.
//!
//! Input: the message's bytes, then `\x1f` and the claim, the identity (JSON) and the
//! registries.d text, each after another `\x1f`.
//!
//! Invariant, besides no panic: with no trusted key nothing is ever accepted.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sysctr::fuzzing::signature_inputs;

fuzz_target!(|data: &[u8]| {
    let mut fields = data.split(|&b| b == 0x1f);
    let message = fields.next().unwrap_or_default();
    let claim = fields.next().unwrap_or_default();
    let identity = std::str::from_utf8(fields.next().unwrap_or_default()).unwrap_or_default();
    let registries_d = std::str::from_utf8(fields.next().unwrap_or_default()).unwrap_or_default();
    let accepted = signature_inputs(message, claim, identity, registries_d);
    assert!(!accepted, "a signature was accepted with no trusted key");
});
