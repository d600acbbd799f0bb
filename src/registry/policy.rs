//! The host's signature policy, containers-policy.json(5): which images may be pulled at all.
//!
//! `/etc/containers/policy.json` (or `--signature-policy PATH`) is read before anything of an
//! image is fetched. The requirements of the most specific scope that matches apply, all of them:
//! for a registry image `HOST/PATH:TAG` (or `@DIGEST`), then `HOST/PATH`, each shorter path, the
//! host, `*.DOMAIN` wildcards from the longest, then the transport's `""`, then `default`; for an
//! image on disk its path (with `:TAG`), then the path, then each directory above it.
//!
//! `insecureAcceptAnything` accepts and `reject` refuses. `signedBy` and `sigstoreSigned` cannot
//! be checked yet, so an image they apply to is refused, never pulled unchecked. Without the
//! default file (no containers-common), every image is accepted, as before such a file existed;
//! a `--signature-policy` that cannot be read is an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use crate::reference::ImageRef;

/// Where the policy is read from by default.
pub const DEFAULT_POLICY: &str = "/etc/containers/policy.json";
/// The largest policy file read.
const MAX_POLICY_FILE: u64 = 4 * 1024 * 1024;

#[derive(Debug, Deserialize)]
struct Policy {
    default: Vec<Requirement>,
    #[serde(default)]
    transports: BTreeMap<String, BTreeMap<String, Vec<Requirement>>>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum Requirement {
    #[serde(rename = "insecureAcceptAnything")]
    InsecureAcceptAnything,
    #[serde(rename = "reject")]
    Reject,
    #[serde(rename = "signedBy")]
    SignedBy {},
    #[serde(rename = "sigstoreSigned")]
    SigstoreSigned {},
}

/// Refuses `image` unless the policy at `explicit` (or the default file) accepts it.
pub fn check(image: &ImageRef, explicit: Option<&Path>) -> Result<()> {
    let path = explicit.map_or_else(|| PathBuf::from(DEFAULT_POLICY), Path::to_path_buf);
    let text = match super::read_host_config_text(&path, MAX_POLICY_FILE)? {
        Some(text) => text,
        None if explicit.is_none() => return Ok(()),
        None => bail!("the signature policy {} does not exist", path.display()),
    };
    check_text(image, &text).with_context(|| format!("signature policy {}", path.display()))
}

fn check_text(image: &ImageRef, text: &str) -> Result<()> {
    let policy: Policy = serde_json::from_str(text).map_err(|e| anyhow!("not a valid policy: {e}"))?;
    let (transport, scopes) = scopes(image);
    let by_transport = policy.transports.get(transport);
    let (scope, requirements) = scopes
        .iter()
        .chain(std::iter::once(&String::new()))
        .find_map(|scope| by_transport.and_then(|t| t.get(scope)).map(|r| (format!("{transport} \"{scope}\""), r)))
        .unwrap_or_else(|| ("default".to_string(), &policy.default));
    if requirements.is_empty() {
        bail!("the requirements of {scope} are empty, which the format does not allow");
    }
    for requirement in requirements {
        match requirement {
            Requirement::InsecureAcceptAnything => {}
            Requirement::Reject => bail!("{image} is rejected (scope {scope}: \"reject\")"),
            Requirement::SignedBy {} | Requirement::SigstoreSigned {} => {
                let kind = if matches!(requirement, Requirement::SignedBy {}) { "signedBy" } else { "sigstoreSigned" };
                bail!(
                    "{image} must be signed (scope {scope}: \"{kind}\"), and sysctr cannot verify signatures yet: refused"
                )
            }
        }
    }
    Ok(())
}

/// The policy transport of `image` and its scopes, most specific first (without `""`).
fn scopes(image: &ImageRef) -> (&'static str, Vec<String>) {
    match image {
        ImageRef::Registry(reference) => {
            let name = format!("{}/{}", reference.registry(), reference.repository());
            let mut scopes = Vec::new();
            match (reference.digest(), reference.tag()) {
                (Some(digest), _) => scopes.push(format!("{name}@{digest}")),
                (None, Some(tag)) => scopes.push(format!("{name}:{tag}")),
                (None, None) => {}
            }
            let mut shorter = name.as_str();
            loop {
                scopes.push(shorter.to_string());
                match shorter.rsplit_once('/') {
                    Some((parent, _)) => shorter = parent,
                    None => break,
                }
            }
            let host = reference.registry().rsplit_once(':').map_or(reference.registry(), |(h, _)| h);
            let mut domain = host;
            while let Some((_, parent)) = domain.split_once('.') {
                scopes.push(format!("*.{parent}"));
                domain = parent;
            }
            ("docker", scopes)
        }
        ImageRef::Layout { dir, tag } => ("oci", path_scopes(dir, tag.as_deref())),
        ImageRef::OciArchive { path, tag } => ("oci-archive", path_scopes(path, tag.as_deref())),
        ImageRef::DockerArchive { path, .. } => ("docker-archive", path_scopes(path, None)),
    }
}

fn path_scopes(path: &Path, tag: Option<&str>) -> Vec<String> {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut scopes = Vec::new();
    if let Some(tag) = tag {
        scopes.push(format!("{}:{tag}", absolute.display()));
    }
    let mut at = Some(absolute.as_path());
    while let Some(dir) = at {
        scopes.push(dir.display().to_string());
        at = dir.parent();
    }
    scopes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(text: &str) -> ImageRef {
        ImageRef::parse(text).unwrap()
    }

    #[test]
    fn the_most_specific_scope_applies() {
        let policy = r#"{
            "default": [{"type": "reject"}],
            "transports": {
                "docker": {
                    "reg.lan:5000/team": [{"type": "insecureAcceptAnything"}],
                    "reg.lan:5000/team/secret": [{"type": "reject"}],
                    "*.corp.example": [{"type": "insecureAcceptAnything"}],
                    "signed.lan": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k.gpg"}]
                },
                "oci": {"/srv/images": [{"type": "insecureAcceptAnything"}]}
            }
        }"#;
        assert!(check_text(&image("reg.lan:5000/team/app:v1"), policy).is_ok());
        let err = check_text(&image("reg.lan:5000/team/secret:v1"), policy).unwrap_err().to_string();
        assert!(err.contains("is rejected (scope docker \"reg.lan:5000/team/secret\": \"reject\")"), "{err}");
        let err = check_text(&image("reg.lan:5000/other:v1"), policy).unwrap_err().to_string();
        assert!(err.contains("scope default"), "{err}");
        assert!(check_text(&image("a.b.corp.example/x:1"), policy).is_ok());
        let by_digest = image(&format!("signed.lan/x@sha256:{}", "a".repeat(64)));
        let err = check_text(&by_digest, policy).unwrap_err().to_string();
        assert!(err.contains("must be signed (scope docker \"signed.lan\": \"signedBy\")"), "{err}");
        assert!(check_text(&image("oci:/srv/images/etcd:v1"), policy).is_ok());
        assert!(check_text(&image("oci:/srv/other:v1"), policy).is_err());
        assert!(check_text(&image("reg.lan:5000/x"), r#"{"default": []}"#).is_err());
        assert!(check_text(&image("reg.lan:5000/x"), r#"{"default": [{"type": "maybe"}]}"#).is_err());
    }

    #[test]
    fn only_an_explicit_policy_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("policy.json");
        assert!(check(&image("reg.lan/x"), Some(&missing)).is_err());
    }
}
