//! GPG simple signing, as `skopeo copy --sign-by` writes it: an OpenPGP signed message (usually
//! compressed) whose literal data is the JSON claim of [`super::payload`]. Verified with rpgp
//! against the keys the policy names, and only those: no keyring of the host is consulted.
//!
//! A key counts only as gpgme (which containers/image uses) would let it: its certificate is
//! validly self-signed and not revoked, the key (the primary or a subkey) is bound for signing
//! and not revoked or expired. The signature itself must be the only one in the message, a
//! signature of binary or text data, made with a hash that is not broken, and not expired.

use std::io::Read as _;

use anyhow::{anyhow, bail, Context, Result};
use pgp::composed::{Deserializable as _, Message, SignedPublicKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{PublicKey, PublicSubkey, Signature, SignatureType};
use pgp::types::{KeyDetails as _, Tag, Timestamp, VerifyingKey};

/// The largest claim a signature may carry once decompressed.
const MAX_CLAIM: u64 = 4 * 1024 * 1024;

/// The public keys a `signedBy` requirement trusts.
pub struct GpgKeys {
    keys: Vec<TrustedKey>,
}

/// A primary key or subkey of a trusted certificate, and whether it may sign.
struct TrustedKey {
    key: KeyPart,
    fingerprint: String,
    /// Why it may not sign, if it may not.
    unusable: Option<String>,
    /// When it expires (seconds since the epoch), if it does.
    expires: Option<u64>,
}

enum KeyPart {
    Primary(PublicKey),
    Subkey(PublicSubkey),
}

impl KeyPart {
    fn verifying(&self) -> &dyn VerifyingKey {
        match self {
            KeyPart::Primary(key) => key,
            KeyPart::Subkey(key) => key,
        }
    }
}

impl GpgKeys {
    /// Reads keyrings, binary (`gpg --export`) or ASCII-armored (one block or several);
    /// `source` names them in errors.
    pub fn parse(keyrings: &[(String, Vec<u8>)]) -> Result<GpgKeys> {
        let mut keys = Vec::new();
        for (source, bytes) in keyrings {
            let mut certificates = Vec::new();
            for block in armor_blocks(bytes) {
                let (parsed, _) = SignedPublicKey::from_reader_many(block)
                    .map_err(|e| anyhow!("{source} is not an OpenPGP keyring: {e}"))?;
                for certificate in parsed {
                    certificates
                        .push(certificate.map_err(|e| anyhow!("{source} holds a key that cannot be read: {e}"))?);
                }
            }
            if certificates.is_empty() {
                bail!("{source} holds no public key");
            }
            for certificate in &certificates {
                keys.extend(trusted_keys(certificate).with_context(|| source.clone())?);
            }
        }
        Ok(GpgKeys { keys })
    }

    /// Verifies a signature made by one of the keys (or one of their subkeys) and returns the
    /// claim it signs with the signing key's fingerprint.
    pub fn verify(&self, signature: &[u8]) -> Result<(Vec<u8>, String)> {
        let message = Message::from_bytes(signature).map_err(|e| anyhow!("it is not an OpenPGP message: {e}"))?;
        let mut message = message.decompress().map_err(|e| anyhow!("it cannot be decompressed: {e}"))?;
        let Message::Signed { reader, .. } = &message else {
            bail!("it is an OpenPGP message that is not signed");
        };
        if reader.num_signatures() != 1 {
            bail!("it holds {} signatures; a simple signature holds one", reader.num_signatures());
        }
        let mut claim = Vec::new();
        (&mut message).take(MAX_CLAIM + 1).read_to_end(&mut claim).context("reading its signed content")?;
        if claim.len() as u64 > MAX_CLAIM {
            bail!("its signed content is larger than {MAX_CLAIM} bytes");
        }
        let now = u64::from(Timestamp::now().as_secs());
        let mut refusal = None;
        for key in &self.keys {
            let Ok(made) = message.verify(key.key.verifying()) else { continue };
            let problem = match &key.unusable {
                Some(reason) => Some(reason.clone()),
                None => signature_problem(made, key, now),
            };
            match problem {
                None => return Ok((claim, key.fingerprint.clone())),
                Some(problem) => refusal = Some(format!("it is signed by key {}, but {problem}", key.fingerprint)),
            }
        }
        Err(anyhow!(refusal.unwrap_or_else(|| "it is not signed by any of the trusted keys".to_string())))
    }
}

/// What makes a verified signature unacceptable, if anything.
fn signature_problem(signature: &Signature, key: &TrustedKey, now: u64) -> Option<String> {
    if !matches!(signature.typ(), Some(SignatureType::Binary | SignatureType::Text)) {
        return Some(format!("the signature is of type {:?}, not of data", signature.typ()));
    }
    let hash = signature.hash_alg();
    if matches!(
        hash,
        Some(HashAlgorithm::None | HashAlgorithm::Md5 | HashAlgorithm::Sha1 | HashAlgorithm::Ripemd160) | None
    ) {
        return Some(format!("the signature uses the broken hash {hash:?}"));
    }
    let created = signature.created().map(|t| u64::from(t.as_secs()));
    if let (Some(created), Some(valid_for)) = (created, signature.signature_expiration_time()) {
        if valid_for.as_secs() != 0 && created + u64::from(valid_for.as_secs()) <= now {
            return Some("the signature has expired".to_string());
        }
    }
    if key.expires.is_some_and(|expires| expires <= now) {
        return Some("the key has expired".to_string());
    }
    None
}

/// The primary key and subkeys of `certificate`, each with whether it may sign.
fn trusted_keys(certificate: &SignedPublicKey) -> Result<Vec<TrustedKey>> {
    let primary = &certificate.primary_key;
    let fingerprint = primary.fingerprint().to_string();
    let revoked =
        certificate.details.revocation_signatures.iter().any(|revocation| revocation.verify_key(primary).is_ok());
    // The primary key's properties come from its latest valid self-signature.
    let self_signature = certificate
        .details
        .users
        .iter()
        .flat_map(|user| {
            user.signatures.iter().filter(|s| s.verify_certification(primary, Tag::UserId, &user.id).is_ok())
        })
        .chain(certificate.details.direct_signatures.iter().filter(|s| s.verify_key(primary).is_ok()))
        .max_by_key(|s| s.created().map(|t| t.as_secs()));
    let Some(self_signature) = self_signature else {
        bail!("key {fingerprint} is not validly self-signed");
    };
    let created = u64::from(primary.created_at().as_secs());
    let mut keys = vec![TrustedKey {
        key: KeyPart::Primary(primary.clone()),
        fingerprint: fingerprint.clone(),
        unusable: if revoked {
            Some("the key is revoked".to_string())
        } else if !self_signature.key_flags().sign() {
            Some("the key is not for signing".to_string())
        } else {
            None
        },
        expires: expiry(created, self_signature),
    }];
    for subkey in &certificate.public_subkeys {
        let binding = subkey
            .signatures
            .iter()
            .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
            .filter(|s| s.verify_subkey_binding(primary, &subkey.key).is_ok())
            .max_by_key(|s| s.created().map(|t| t.as_secs()));
        let Some(binding) = binding else { continue };
        let subkey_revoked = subkey
            .signatures
            .iter()
            .filter(|s| s.typ() == Some(SignatureType::SubkeyRevocation))
            .any(|s| s.verify_subkey_binding(primary, &subkey.key).is_ok());
        keys.push(TrustedKey {
            key: KeyPart::Subkey(subkey.key.clone()),
            fingerprint: subkey.key.fingerprint().to_string(),
            unusable: if revoked {
                Some(format!("its primary key {fingerprint} is revoked"))
            } else if subkey_revoked {
                Some("the subkey is revoked".to_string())
            } else if !binding.key_flags().sign() {
                Some("the subkey is not for signing".to_string())
            } else {
                None
            },
            expires: expiry(u64::from(subkey.key.created_at().as_secs()), binding),
        });
    }
    Ok(keys)
}

/// When a key created at `created` expires, as `signature` (its binding) says.
fn expiry(created: u64, signature: &Signature) -> Option<u64> {
    signature.key_expiration_time().filter(|d| d.as_secs() != 0).map(|d| created + u64::from(d.as_secs()))
}

/// Each ASCII-armored block of `bytes`, or `bytes` whole when it is binary.
fn armor_blocks(bytes: &[u8]) -> Vec<&[u8]> {
    const BEGIN: &[u8] = b"-----BEGIN PGP";
    let starts: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i..].starts_with(BEGIN)).collect();
    if starts.len() < 2 {
        return vec![bytes];
    }
    starts
        .iter()
        .enumerate()
        .map(|(n, &start)| &bytes[start..starts.get(n + 1).copied().unwrap_or(bytes.len())])
        .collect()
}
