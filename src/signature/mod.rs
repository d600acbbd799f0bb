//! Image signatures, as the host's policy requires them (containers-policy.json(5)): GPG simple
//! signing found in a lookaside (containers-registries.d(5)), and sigstore signatures attached to
//! the image in its registry. sysctr checks them itself, with rpgp and the RustCrypto crates; no
//! keyring or daemon of the host is involved.
//!
//! Two steps, so that nothing is fetched for an image the policy refuses outright:
//! [`Requirements::for_image`] before the manifest (a `reject`, or keys that cannot be read, stop
//! here), then [`Requirements::verify`] once the manifest digest is known and before any layer
//! is fetched. A signature is for the manifest the reference names (for a multi-platform image,
//! its index) or for the platform's own manifest.

mod gpg;
mod identity;
mod lookaside;
mod payload;
mod policy;
mod sigstore;

use std::path::Path;

use anyhow::{bail, Result};

use crate::digest::Digest;
use crate::reference::ImageRef;
use crate::registry::{RegistryOptions, Source};
use identity::{DockerRef, SignedIdentity};
use lookaside::RegistriesD;
use policy::Check;

pub use policy::DEFAULT_POLICY;

/// What the policy asks of one image beyond being pulled.
pub struct Requirements {
    /// The policy scope that applied, for messages.
    scope: String,
    checks: Vec<Check>,
}

impl Requirements {
    /// Reads the policy (`policy`, or the default file) for `image`; refuses it if the policy
    /// rejects it or cannot be followed.
    pub fn for_image(image: &ImageRef, policy: Option<&Path>) -> Result<Requirements> {
        let (scope, checks) = policy::evaluate(image, policy)?;
        Ok(Requirements { scope, checks })
    }

    /// Checks every signature requirement for `image`, with the signatures `source` and the
    /// lookaside give for `digests`: the manifest the reference names and, for a multi-platform
    /// image, the platform's manifest too (signers sign either; the platform's is bound to the
    /// index by its digest). Returns how each requirement was met.
    pub async fn verify(
        &self,
        image: &ImageRef,
        digests: &[&Digest],
        source: &Source,
        options: &RegistryOptions,
    ) -> Result<Vec<String>> {
        let mut unique: Vec<&Digest> = Vec::new();
        for digest in digests {
            if !unique.contains(digest) {
                unique.push(digest);
            }
        }
        if self.checks.is_empty() {
            return Ok(Vec::new());
        }
        let registries_d = RegistriesD::load(&options.registries_d)?;
        // Where signatures are read is configured for the place the image came from (a mirror
        // has its own lookaside), as containers/image does; what they must claim is the name
        // asked for.
        let place = match image {
            ImageRef::Registry(reference) => Some(source.pulled_from().unwrap_or(reference)),
            _ => None,
        };
        let (_, scopes) = policy::scopes(&place.map_or_else(|| image.clone(), |p| ImageRef::Registry(p.clone())));
        let mut met = Vec::new();
        for check in &self.checks {
            let refusal = |reason: String| {
                anyhow::anyhow!(
                    "{image} is refused by the signature policy (scope {}: {}): {reason}",
                    self.scope,
                    check.described()
                )
            };
            let ImageRef::Registry(reference) = image else {
                return Err(refusal("only images from a registry carry signatures".to_string()));
            };
            let place = place.unwrap_or(reference);
            let pulled = DockerRef::pulled(reference);
            let verdicts: Vec<Result<String>> = match check {
                Check::SignedBy { keys, identity, .. } => {
                    let lookaside = registries_d.lookaside(&scopes);
                    let mut signatures = Vec::new();
                    for digest in &unique {
                        let found =
                            lookaside::read_signatures(&lookaside, place.repository(), digest, options.timeout).await?;
                        signatures.extend(found.into_iter().map(|signature| (*digest, signature)));
                    }
                    if signatures.is_empty() {
                        return Err(refusal(format!("no signature was found in the lookaside {lookaside}")));
                    }
                    signatures
                        .iter()
                        .map(|(digest, signature)| {
                            let (claim, key) = keys.verify(signature)?;
                            judge(&claim, payload::SIMPLE_SIGNING, digest, identity, &pulled)?;
                            Ok(format!("signed by key {key}"))
                        })
                        .collect()
                }
                Check::SigstoreSigned { keys, identity, .. } => {
                    if !registries_d.uses_sigstore_attachments(&scopes) {
                        return Err(refusal(format!(
                            "registries.d ({}) does not set use-sigstore-attachments for {}, so no signature is read",
                            options.registries_d.display(),
                            format_args!("{}/{}", place.registry(), place.repository())
                        )));
                    }
                    let mut attachments = Vec::new();
                    for digest in &unique {
                        let found = source.sigstore_signatures(digest).await?;
                        attachments.extend(found.into_iter().map(|attachment| (*digest, attachment)));
                    }
                    if attachments.is_empty() {
                        let digests = unique.iter().map(ToString::to_string).collect::<Vec<_>>().join(" or ");
                        return Err(refusal(format!("no sigstore signature is attached to {digests}")));
                    }
                    attachments
                        .iter()
                        .map(|(digest, attachment)| {
                            let key = keys.verify(&attachment.payload, attachment.signature.as_deref())?;
                            judge(&attachment.payload, payload::COSIGN, digest, identity, &pulled)?;
                            Ok(format!("sigstore signature by {key}"))
                        })
                        .collect()
                }
            };
            let mut reasons = Vec::new();
            let mut accepted = None;
            for (number, verdict) in verdicts.into_iter().enumerate() {
                match verdict {
                    Ok(how) => {
                        accepted = Some(how);
                        break;
                    }
                    Err(err) => reasons.push(format!("signature {}: {err:#}", number + 1)),
                }
            }
            match accepted {
                Some(how) => met.push(how),
                None => return Err(refusal(reasons.join("; "))),
            }
        }
        Ok(met)
    }
}

/// Whether a verified claim is for this manifest and, by `identity`, for this image.
fn judge(claim: &[u8], kind: &str, digest: &Digest, identity: &SignedIdentity, pulled: &DockerRef) -> Result<()> {
    let claim = payload::parse(claim, kind)?;
    if claim.manifest_digest != digest.as_str() {
        bail!("it signs manifest {}, not {digest}", claim.manifest_digest);
    }
    identity.check(pulled, &claim.docker_reference)
}

/// See [`crate::fuzzing::signature_inputs`].
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_inputs(message: &[u8], claim: &[u8], identity: &str, registries_d: &str) -> bool {
    let accepted = gpg::GpgKeys::parse(&[]).is_ok_and(|keys| keys.verify(message).is_ok());
    let claims = [payload::SIMPLE_SIGNING, payload::COSIGN]
        .iter()
        .filter_map(|kind| payload::parse(claim, kind).ok())
        .map(|c| (c.manifest_digest, c.docker_reference))
        .collect::<Vec<_>>();
    let reference: Result<oci_client::Reference, _> = "reg.lan:5000/team/app:v1".parse();
    if let (Ok(identity), Ok(reference)) = (serde_json::from_str::<SignedIdentity>(identity), reference) {
        if identity.validate().is_ok() {
            let pulled = DockerRef::pulled(&reference);
            for (_, reference) in &claims {
                let _ = identity.check(&pulled, reference);
            }
        }
    }
    let _ = lookaside::RegistriesD::parse_text(registries_d).map(|conf| {
        let scopes = vec!["reg.lan:5000/team/app".to_string(), "reg.lan:5000".to_string()];
        (conf.lookaside(&scopes), conf.uses_sigstore_attachments(&scopes))
    });
    accepted
}
