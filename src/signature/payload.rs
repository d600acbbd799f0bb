//! What a signature signs: a small JSON document naming one manifest digest and one Docker
//! reference, the same shape for GPG simple signing ("atomic container signature") and for
//! sigstore ("cosign container image signature"). Read strictly, as containers/image does: a
//! `critical` section with anything unknown in it is refused, since a verifier that skipped it
//! could accept what the signer meant to restrict.

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;

pub const SIMPLE_SIGNING: &str = "atomic container signature";
pub const COSIGN: &str = "cosign container image signature";

/// The claim of a signature whose cryptography has been verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub manifest_digest: String,
    pub docker_reference: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Untrusted {
    critical: Critical,
    #[serde(default)]
    #[allow(dead_code)] // free-form (creator, timestamp): read only to allow it
    optional: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Critical {
    #[serde(rename = "type")]
    kind: String,
    image: Image,
    identity: Identity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    digest: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Identity {
    #[serde(rename = "docker-reference")]
    reference: String,
}

/// Reads a verified payload of the `expected` type.
pub fn parse(bytes: &[u8], expected: &str) -> Result<Claim> {
    let untrusted: Untrusted =
        serde_json::from_slice(bytes).map_err(|e| anyhow!("its signed content is not a signature claim: {e}"))?;
    let critical = untrusted.critical;
    if critical.kind != expected {
        bail!("its signed content is of type '{}', not '{expected}'", critical.kind);
    }
    Ok(Claim { manifest_digest: critical.image.digest, docker_reference: critical.identity.reference })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_read_strictly() {
        let claim = br#"{"critical": {"type": "atomic container signature",
            "image": {"docker-manifest-digest": "sha256:ab"}, "identity": {"docker-reference": "reg.lan/x:1"}},
            "optional": {"creator": "skopeo", "timestamp": 1}}"#;
        let parsed = parse(claim, SIMPLE_SIGNING).unwrap();
        assert_eq!(parsed.manifest_digest, "sha256:ab");
        assert_eq!(parsed.docker_reference, "reg.lan/x:1");
        assert!(parse(claim, COSIGN).unwrap_err().to_string().contains("not 'cosign container image signature'"));

        let cosign = br#"{"critical": {"identity": {"docker-reference": "reg.lan/x:1"},
            "image": {"docker-manifest-digest": "sha256:ab"}, "type": "cosign container image signature"},
            "optional": null}"#;
        assert!(parse(cosign, COSIGN).is_ok());

        let extra = br#"{"critical": {"type": "atomic container signature", "valid-until": 0,
            "image": {"docker-manifest-digest": "sha256:ab"}, "identity": {"docker-reference": "reg.lan/x:1"}}}"#;
        assert!(parse(extra, SIMPLE_SIGNING).is_err(), "an unknown critical field is refused");
        assert!(parse(b"not json", SIMPLE_SIGNING).is_err());
    }
}
