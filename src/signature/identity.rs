//! `signedIdentity` of containers-policy.json(5): which image a signature must name for it to
//! count for the image being pulled. A signature names one image by its Docker reference; the
//! policy says how that reference relates to the one asked for.

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// A Docker reference in its normalized form (`docker.io/library/` added where implied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerRef {
    /// `HOST[:PORT]/PATH`.
    name: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl DockerRef {
    /// Parses `text`; a name alone keeps no tag (a signature that names no tag matches nothing
    /// but repository rules).
    pub fn parse(text: &str) -> Result<DockerRef> {
        let reference =
            crate::reference::parse_docker(text).with_context(|| format!("'{text}' is not a Docker reference"))?;
        let mut parsed = Self::from_reference(&reference);
        // The parser supplies `latest` where the text has no tag; a signature's text is taken as
        // written.
        let (name, digest) = text.split_once('@').map_or((text, None), |(n, d)| (n, Some(d)));
        let tagged = name.rsplit('/').next().is_some_and(|last| last.contains(':'));
        if !tagged {
            parsed.tag = None;
        }
        if digest.is_none() {
            parsed.digest = None;
        }
        Ok(parsed)
    }

    pub fn from_reference(reference: &oci_client::Reference) -> DockerRef {
        DockerRef {
            name: format!("{}/{}", reference.registry(), reference.repository()),
            tag: reference.tag().map(str::to_string),
            digest: reference.digest().map(str::to_string),
        }
    }

    /// The reference an image is pulled by: without a tag or digest, `:latest`.
    pub fn pulled(reference: &oci_client::Reference) -> DockerRef {
        let mut pulled = Self::from_reference(reference);
        if pulled.tag.is_none() && pulled.digest.is_none() {
            pulled.tag = Some("latest".to_string());
        }
        pulled
    }

    fn is_name_only(&self) -> bool {
        self.tag.is_none() && self.digest.is_none()
    }
}

impl std::fmt::Display for DockerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// The `signedIdentity` of a requirement; `matchRepoDigestOrExact` when the policy gives none.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum SignedIdentity {
    /// The signature names exactly the reference pulled, tag or digest included.
    #[serde(rename = "matchExact")]
    MatchExact {},
    /// Pulled by digest: the repository must match. Pulled by tag: the reference must match.
    #[serde(rename = "matchRepoDigestOrExact")]
    MatchRepoDigestOrExact {},
    /// The repository must match, whatever the tag.
    #[serde(rename = "matchRepository")]
    MatchRepository {},
    /// The signature names exactly this reference, whatever was pulled.
    #[serde(rename = "exactReference")]
    ExactReference {
        #[serde(rename = "dockerReference")]
        docker_reference: String,
    },
    /// The signature names this repository, whatever was pulled.
    #[serde(rename = "exactRepository")]
    ExactRepository {
        #[serde(rename = "dockerRepository")]
        docker_repository: String,
    },
    /// The pulled reference, with `prefix` replaced by `signedPrefix`, then as
    /// `matchRepoDigestOrExact` (images mirrored under another name, signed under the original).
    #[serde(rename = "remapIdentity")]
    RemapIdentity {
        prefix: String,
        #[serde(rename = "signedPrefix")]
        signed_prefix: String,
    },
}

impl Default for SignedIdentity {
    fn default() -> Self {
        SignedIdentity::MatchRepoDigestOrExact {}
    }
}

impl SignedIdentity {
    /// Refuses a policy whose references cannot be parsed, before anything is fetched.
    pub fn validate(&self) -> Result<()> {
        match self {
            SignedIdentity::ExactReference { docker_reference }
                if DockerRef::parse(docker_reference)?.is_name_only() =>
            {
                bail!("exactReference '{docker_reference}' names no tag or digest");
            }
            SignedIdentity::ExactRepository { docker_repository } => {
                DockerRef::parse(docker_repository)?;
            }
            SignedIdentity::RemapIdentity { prefix, signed_prefix } => {
                for text in [prefix, signed_prefix] {
                    let tagged = text.split_once('/').is_some_and(|(_, path)| path.contains(':'));
                    if text.is_empty() || text.contains('@') || tagged {
                        bail!("remapIdentity prefix '{text}' is not a registry or repository name");
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether a signature naming `signed` counts for `pulled`; the error says why not.
    pub fn check(&self, pulled: &DockerRef, signed: &str) -> Result<()> {
        let signed = DockerRef::parse(signed).context("the signature's docker-reference")?;
        let matches = match self {
            SignedIdentity::MatchExact {} => exact(pulled, &signed),
            SignedIdentity::MatchRepoDigestOrExact {} => repo_digest_or_exact(pulled, &signed),
            SignedIdentity::MatchRepository {} => pulled.name == signed.name,
            SignedIdentity::ExactReference { docker_reference } => exact(&DockerRef::parse(docker_reference)?, &signed),
            SignedIdentity::ExactRepository { docker_repository } => {
                DockerRef::parse(docker_repository)?.name == signed.name
            }
            SignedIdentity::RemapIdentity { prefix, signed_prefix } => match remap(pulled, prefix, signed_prefix)? {
                Some(remapped) => repo_digest_or_exact(&remapped, &signed),
                None => repo_digest_or_exact(pulled, &signed),
            },
        };
        if !matches {
            bail!("it is signed for {signed}, which does not match {pulled} ({})", self.describe());
        }
        Ok(())
    }

    fn describe(&self) -> String {
        match self {
            SignedIdentity::MatchExact {} => "matchExact".to_string(),
            SignedIdentity::MatchRepoDigestOrExact {} => "matchRepoDigestOrExact".to_string(),
            SignedIdentity::MatchRepository {} => "matchRepository".to_string(),
            SignedIdentity::ExactReference { docker_reference } => format!("exactReference {docker_reference}"),
            SignedIdentity::ExactRepository { docker_repository } => format!("exactRepository {docker_repository}"),
            SignedIdentity::RemapIdentity { prefix, signed_prefix } => {
                format!("remapIdentity {prefix} -> {signed_prefix}")
            }
        }
    }
}

fn exact(intended: &DockerRef, signed: &DockerRef) -> bool {
    !intended.is_name_only() && !signed.is_name_only() && intended == signed
}

fn repo_digest_or_exact(intended: &DockerRef, signed: &DockerRef) -> bool {
    if intended.digest.is_some() {
        intended.name == signed.name
    } else {
        exact(intended, signed)
    }
}

/// `pulled` with `prefix` replaced by `signed_prefix`, when its name starts with `prefix` at a
/// path boundary.
fn remap(pulled: &DockerRef, prefix: &str, signed_prefix: &str) -> Result<Option<DockerRef>> {
    let name = pulled.name.as_str();
    let Some(rest) = name.strip_prefix(prefix) else { return Ok(None) };
    if !rest.is_empty() && !rest.starts_with('/') {
        return Ok(None);
    }
    let remapped = DockerRef { name: format!("{signed_prefix}{rest}"), ..pulled.clone() };
    DockerRef::parse(&remapped.to_string())
        .with_context(|| format!("remapIdentity makes {pulled} '{remapped}'"))
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pulled(text: &str) -> DockerRef {
        DockerRef::pulled(&text.parse().unwrap())
    }

    const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn each_documented_match_type() {
        let tag = pulled("reg.lan:5000/team/app:v1");
        let by_digest = pulled(&format!("reg.lan:5000/team/app@{DIGEST}"));
        let identity = |json: &str| -> SignedIdentity { serde_json::from_str(json).unwrap() };

        let exact = identity(r#"{"type": "matchExact"}"#);
        assert!(exact.check(&tag, "reg.lan:5000/team/app:v1").is_ok());
        assert!(exact.check(&tag, "reg.lan:5000/team/app:v2").is_err());
        assert!(exact.check(&by_digest, "reg.lan:5000/team/app:v1").is_err());

        let default = SignedIdentity::default();
        assert!(default.check(&tag, "reg.lan:5000/team/app:v1").is_ok());
        let err = default.check(&tag, "reg.lan:5000/team/app:v2").unwrap_err().to_string();
        assert!(err.contains("signed for reg.lan:5000/team/app:v2, which does not match reg.lan:5000/team/app:v1"));
        assert!(default.check(&by_digest, "reg.lan:5000/team/app:v9").is_ok());
        assert!(default.check(&by_digest, "reg.lan:5000/team/other:v1").is_err());
        assert!(default.check(&tag, "reg.lan:5000/team/app").is_err(), "a name alone never matches exactly");

        let repository = identity(r#"{"type": "matchRepository"}"#);
        assert!(repository.check(&tag, "reg.lan:5000/team/app:v7").is_ok());
        assert!(repository.check(&tag, "reg.lan:5001/team/app:v1").is_err());

        let fixed = identity(r#"{"type": "exactReference", "dockerReference": "quay.io/x/app:stable"}"#);
        assert!(fixed.check(&tag, "quay.io/x/app:stable").is_ok());
        assert!(fixed.check(&tag, "reg.lan:5000/team/app:v1").is_err());

        let repo = identity(r#"{"type": "exactRepository", "dockerRepository": "quay.io/x/app"}"#);
        assert!(repo.check(&tag, "quay.io/x/app:anything").is_ok());
        assert!(repo.check(&tag, "quay.io/x/other:v1").is_err());

        let remap =
            identity(r#"{"type": "remapIdentity", "prefix": "reg.lan:5000/team", "signedPrefix": "quay.io/upstream"}"#);
        assert!(remap.check(&tag, "quay.io/upstream/app:v1").is_ok());
        assert!(remap.check(&tag, "reg.lan:5000/team/app:v1").is_err());
        let elsewhere = pulled("reg.lan:5000/teams/app:v1");
        assert!(remap.check(&elsewhere, "reg.lan:5000/teams/app:v1").is_ok(), "prefix only at a path boundary");

        assert!(serde_json::from_str::<SignedIdentity>(r#"{"type": "matchAnything"}"#).is_err());
        assert!(serde_json::from_str::<SignedIdentity>(r#"{"type": "matchExact", "extra": 1}"#).is_err());
    }

    #[test]
    fn docker_hub_names_are_normalized() {
        let hub = pulled("docker.io/library/busybox:1");
        assert!(SignedIdentity::default().check(&hub, "busybox:1").is_ok());
        assert_eq!(pulled("reg.lan/x").to_string(), "reg.lan/x:latest");
    }

    #[test]
    fn bad_policy_references_are_refused() {
        let name_only = SignedIdentity::ExactReference { docker_reference: "quay.io/x/app".into() };
        assert!(name_only.validate().is_err());
        let bad = SignedIdentity::ExactRepository { docker_repository: "Not A Name".into() };
        assert!(bad.validate().is_err());
    }
}
