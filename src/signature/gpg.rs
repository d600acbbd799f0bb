//! GPG simple signing, as `skopeo copy --sign-by` writes it: an OpenPGP signed message (usually
//! compressed) whose literal data is the JSON claim of [`super::payload`]. Verified with rpgp
//! against the keys the policy names, and only those: no keyring of the host is consulted.

use std::io::Read as _;

use anyhow::{anyhow, bail, Context, Result};
use pgp::composed::{Deserializable as _, Message, SignedPublicKey};
use pgp::types::KeyDetails as _;

/// The largest claim a signature may carry once decompressed.
const MAX_CLAIM: u64 = 4 * 1024 * 1024;

/// The public keys a `signedBy` requirement trusts.
pub struct GpgKeys {
    keys: Vec<SignedPublicKey>,
}

impl GpgKeys {
    /// Reads keyrings, binary (`gpg --export`) or ASCII-armored; `source` names them in errors.
    pub fn parse(keyrings: &[(String, Vec<u8>)]) -> Result<GpgKeys> {
        let mut keys = Vec::new();
        for (source, bytes) in keyrings {
            let (parsed, _) = SignedPublicKey::from_reader_many(&bytes[..])
                .map_err(|e| anyhow!("{source} is not an OpenPGP keyring: {e}"))?;
            let before = keys.len();
            for key in parsed {
                let key = key.map_err(|e| anyhow!("{source} holds a key that cannot be read: {e}"))?;
                key.verify_bindings()
                    .map_err(|e| anyhow!("{source}: key {} is not validly self-signed: {e}", key.fingerprint()))?;
                keys.push(key);
            }
            if keys.len() == before {
                bail!("{source} holds no public key");
            }
        }
        Ok(GpgKeys { keys })
    }

    /// Verifies a signature made by one of the keys (or one of their subkeys) and returns the
    /// claim it signs with the signing key's fingerprint.
    pub fn verify(&self, signature: &[u8]) -> Result<(Vec<u8>, String)> {
        let message = Message::from_bytes(signature).map_err(|e| anyhow!("it is not an OpenPGP message: {e}"))?;
        let mut message = message.decompress().map_err(|e| anyhow!("it cannot be decompressed: {e}"))?;
        if !message.is_signed() {
            bail!("it is an OpenPGP message that is not signed");
        }
        let mut claim = Vec::new();
        (&mut message).take(MAX_CLAIM + 1).read_to_end(&mut claim).context("reading its signed content")?;
        if claim.len() as u64 > MAX_CLAIM {
            bail!("its signed content is larger than {MAX_CLAIM} bytes");
        }
        for key in &self.keys {
            if message.verify(&key.primary_key).is_ok() {
                return Ok((claim, key.fingerprint().to_string()));
            }
            for subkey in &key.public_subkeys {
                if message.verify(subkey).is_ok() {
                    return Ok((claim, subkey.fingerprint().to_string()));
                }
            }
        }
        bail!("it is not signed by any of the trusted keys")
    }
}
