//! Sigstore signatures with a public key, as cosign attaches them: the claim of
//! [`super::payload`] as a layer of the `sha256-DIGEST.sig` tag, and an ECDSA P-256 signature of
//! its exact bytes in the layer's `dev.cosignproject.cosign/signature` annotation (base64, DER).
//! Keys are PEM public keys (`cosign generate-key-pair`'s `cosign.pub`).

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{DerSignature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;

/// The public keys a `sigstoreSigned` requirement trusts.
pub struct SigstoreKeys {
    keys: Vec<(String, VerifyingKey)>,
}

impl SigstoreKeys {
    /// Reads PEM public keys; `source` names each in errors.
    pub fn parse(pems: &[(String, Vec<u8>)]) -> Result<SigstoreKeys> {
        let mut keys = Vec::new();
        for (source, pem) in pems {
            let text = std::str::from_utf8(pem).with_context(|| format!("{source} is not a PEM file"))?;
            let key = VerifyingKey::from_public_key_pem(text)
                .map_err(|e| anyhow!("{source} is not an ECDSA P-256 public key in PEM form: {e}"))?;
            keys.push((source.clone(), key));
        }
        Ok(SigstoreKeys { keys })
    }

    /// Verifies the base64 `signature` of `payload` against the keys; returns the key's source.
    pub fn verify(&self, payload: &[u8], signature: Option<&str>) -> Result<&str> {
        let Some(signature) = signature else {
            bail!("it has no dev.cosignproject.cosign/signature annotation");
        };
        let der = base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .map_err(|_| anyhow!("its signature annotation is not base64"))?;
        let signature =
            DerSignature::from_bytes(&der).map_err(|_| anyhow!("its signature is not a DER ECDSA signature"))?;
        for (source, key) in &self.keys {
            if key.verify(payload, &signature).is_ok() {
                return Ok(source);
            }
        }
        bail!("it is not signed by any of the trusted keys")
    }
}
