//! The host's signature policy, containers-policy.json(5): which images may be pulled, and
//! signed by whom.
//!
//! `/etc/containers/policy.json` (or `--signature-policy PATH`) is read before anything of an
//! image is fetched. The requirements of the most specific scope that matches apply, all of them:
//! for a registry image `HOST/PATH:TAG` (or `@DIGEST`), then `HOST/PATH`, each shorter path, the
//! host, `*.DOMAIN` wildcards from the longest, then the transport's `""`, then `default`; for an
//! image on disk its path (with `:TAG`), then the path, then each directory above it.
//!
//! `insecureAcceptAnything` accepts and `reject` refuses at once. `signedBy` (GPG keys) and
//! `sigstoreSigned` (a public key) have their keys read here, so that a policy that cannot be
//! followed is refused before anything is fetched; the signatures are checked once the manifest
//! digest is known (see [`super::Requirements::verify`]). As in podman and skopeo, there is no
//! policy without a file: when the default file is missing (its package, containers-common, is not
//! installed), nothing is pulled, and the error says how to make one; a `--signature-policy` that
//! cannot be read is an error too. With `--root`, the policy is still this machine's own file:
//! the machine that pulls decides what it accepts, not the tree it composes.
//!
//! Registry names in `transports.docker` scopes and in images are compared canonical
//! ([`crate::reference::canonical_registry_name`]): `Registry.LAN:443/app` is `registry.lan/app`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use serde::Deserialize;

use super::gpg::GpgKeys;
use super::identity::SignedIdentity;
use super::sigstore::SigstoreKeys;
use crate::reference::{canonical_registry_name, ImageRef};

/// Where the policy is read from by default.
pub const DEFAULT_POLICY: &str = "/etc/containers/policy.json";
/// The largest policy file read.
const MAX_POLICY_FILE: u64 = 4 * 1024 * 1024;
/// The largest key file read.
const MAX_KEY_FILE: u64 = 4 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Policy {
    default: Vec<Requirement>,
    #[serde(default)]
    transports: BTreeMap<String, BTreeMap<String, Vec<Requirement>>>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
enum Requirement {
    #[serde(rename = "insecureAcceptAnything")]
    InsecureAcceptAnything {},
    #[serde(rename = "reject")]
    Reject {},
    #[serde(rename = "signedBy")]
    SignedBy {
        #[serde(rename = "keyType")]
        key_type: String,
        #[serde(rename = "keyPath")]
        key_path: Option<PathBuf>,
        #[serde(rename = "keyPaths")]
        key_paths: Option<Vec<PathBuf>>,
        #[serde(rename = "keyData")]
        key_data: Option<String>,
        #[serde(rename = "signedIdentity", default)]
        signed_identity: SignedIdentity,
    },
    #[serde(rename = "sigstoreSigned")]
    SigstoreSigned {
        #[serde(rename = "keyPath")]
        key_path: Option<PathBuf>,
        #[serde(rename = "keyPaths")]
        key_paths: Option<Vec<PathBuf>>,
        #[serde(rename = "keyData")]
        key_data: Option<String>,
        fulcio: Option<serde_json::Value>,
        #[serde(rename = "rekorPublicKeyPath")]
        rekor_public_key_path: Option<PathBuf>,
        #[serde(rename = "rekorPublicKeyData")]
        rekor_public_key_data: Option<String>,
        #[serde(rename = "signedIdentity", default)]
        signed_identity: SignedIdentity,
    },
}

/// A requirement that needs signatures, with its keys read.
pub enum Check {
    SignedBy { keys: GpgKeys, identity: SignedIdentity, described: String },
    SigstoreSigned { keys: SigstoreKeys, identity: SignedIdentity, described: String },
}

impl Check {
    pub fn described(&self) -> &str {
        match self {
            Check::SignedBy { described, .. } | Check::SigstoreSigned { described, .. } => described,
        }
    }
}

/// What the policy asks of `image`: the scope that applied and the signature checks left.
/// A `reject`, a missing policy, or a policy that cannot be followed, is an error.
pub fn evaluate(image: &ImageRef, explicit: Option<&Path>) -> Result<(String, Vec<Check>)> {
    match explicit {
        Some(path) => evaluate_file(image, path, true),
        None => evaluate_file(image, Path::new(DEFAULT_POLICY), false),
    }
}

/// [`evaluate`] with the policy at `path`, which the user named (`given`) or is the default.
fn evaluate_file(image: &ImageRef, path: &Path, given: bool) -> Result<(String, Vec<Check>)> {
    let text = match crate::registry::read_host_config_text(path, MAX_POLICY_FILE)? {
        Some(text) => text,
        None if given => bail!("the signature policy {} does not exist", path.display()),
        None => bail!(
            "there is no signature policy {path}, and without one nothing is pulled (as with podman and \
             skopeo). Install the distribution's default policy (Debian, Ubuntu: the package \
             golang-github-containers-common; Fedora, RHEL: containers-common), or write your own \
             (containers-policy.json(5)): {ACCEPT_ANYTHING} in {path} accepts every image unchecked. \
             --signature-policy names another file",
            path = path.display()
        ),
    };
    evaluate_text(image, &text).with_context(|| format!("signature policy {}", path.display()))
}

/// The policy that accepts every image, as distributions ship it.
const ACCEPT_ANYTHING: &str = r#"{"default":[{"type":"insecureAcceptAnything"}]}"#;

fn evaluate_text(image: &ImageRef, text: &str) -> Result<(String, Vec<Check>)> {
    let policy: Policy = serde_json::from_str(text).map_err(|e| anyhow!("not a valid policy: {e}"))?;
    let (transport, scopes) = scopes(image);
    // Each scope of the transport by the name it is matched on, with the key as written.
    let mut by_transport: BTreeMap<String, (&String, &Vec<Requirement>)> = BTreeMap::new();
    for (key, requirements) in policy.transports.get(transport).into_iter().flatten() {
        let name = if transport == "docker" { canonical_registry_name(key) } else { key.clone() };
        if let Some((first, _)) = by_transport.insert(name, (key, requirements)) {
            bail!("the {transport} scopes \"{first}\" and \"{key}\" name the same place");
        }
    }
    let (scope, requirements) = scopes
        .iter()
        .chain(std::iter::once(&String::new()))
        .find_map(|scope| by_transport.get(scope).map(|(key, r)| (format!("{transport} \"{key}\""), *r)))
        .unwrap_or_else(|| ("default".to_string(), &policy.default));
    if requirements.is_empty() {
        bail!("the requirements of {scope} are empty, which the format does not allow");
    }
    let mut checks = Vec::new();
    for requirement in requirements {
        match requirement {
            Requirement::InsecureAcceptAnything {} => {}
            Requirement::Reject {} => bail!("{image} is rejected (scope {scope}: \"reject\")"),
            Requirement::SignedBy { key_type, key_path, key_paths, key_data, signed_identity } => {
                let context = || format!("scope {scope}: signedBy");
                if key_type != "GPGKeys" {
                    bail!("{}: keyType '{key_type}' is not supported (only GPGKeys)", context());
                }
                let keys = KeySource { key_path, key_paths, key_data };
                let (files, described) = keys.read_for("signedBy", signed_identity).with_context(context)?;
                let keys = GpgKeys::parse(&files).with_context(context)?;
                checks.push(Check::SignedBy { keys, identity: signed_identity.clone(), described });
            }
            Requirement::SigstoreSigned {
                key_path,
                key_paths,
                key_data,
                fulcio,
                rekor_public_key_path,
                rekor_public_key_data,
                signed_identity,
            } => {
                let context = || format!("scope {scope}: sigstoreSigned");
                if fulcio.is_some() {
                    bail!("{}: fulcio (keyless) signatures are not supported; use keyPath or keyData", context());
                }
                if rekor_public_key_path.is_some() || rekor_public_key_data.is_some() {
                    bail!("{}: Rekor transparency-log checks are not supported", context());
                }
                let keys = KeySource { key_path, key_paths, key_data };
                let (files, described) = keys.read_for("sigstoreSigned", signed_identity).with_context(context)?;
                let keys = SigstoreKeys::parse(&files).with_context(context)?;
                checks.push(Check::SigstoreSigned { keys, identity: signed_identity.clone(), described });
            }
        }
    }
    Ok((scope, checks))
}

/// Key files' contents, each with where it came from (a path, or `keyData`).
type KeyFiles = Vec<(String, Vec<u8>)>;

/// A requirement's key fields, borrowed from it: exactly one of the three must be given.
struct KeySource<'a> {
    key_path: &'a Option<PathBuf>,
    key_paths: &'a Option<Vec<PathBuf>>,
    /// Base64 of the key file's content.
    key_data: &'a Option<String>,
}

impl KeySource<'_> {
    /// Checks the requirement's `identity`, then reads its keys: their contents, each with where
    /// it came from, and the requirement as messages name it (`KIND KEYS`).
    fn read_for(&self, kind: &str, identity: &SignedIdentity) -> Result<(KeyFiles, String)> {
        identity.validate()?;
        Ok((self.read()?, format!("{kind} {}", self.describe())))
    }

    /// The key files' contents.
    fn read(&self) -> Result<KeyFiles> {
        let given = [self.key_path.is_some(), self.key_paths.is_some(), self.key_data.is_some()];
        if given.iter().filter(|g| **g).count() != 1 {
            bail!("exactly one of keyPath, keyPaths and keyData must be given");
        }
        if let Some(data) = &self.key_data {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|_| anyhow!("keyData is not base64"))?;
            return Ok(vec![("keyData".to_string(), bytes)]);
        }
        let paths: Vec<&PathBuf> = self.key_path.iter().chain(self.key_paths.iter().flatten()).collect();
        if paths.is_empty() {
            bail!("keyPaths is empty");
        }
        paths
            .into_iter()
            .map(|path| {
                let bytes = crate::registry::read_host_config(path, MAX_KEY_FILE)?
                    .with_context(|| format!("the key file {} does not exist", path.display()))?;
                Ok((path.display().to_string(), bytes))
            })
            .collect()
    }

    fn describe(&self) -> String {
        match (&self.key_path, &self.key_paths) {
            (Some(path), _) => path.display().to_string(),
            (None, Some(paths)) => paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
            (None, None) => "keyData".to_string(),
        }
    }
}

/// The policy transport of `image` and its scopes, most specific first (without `""`).
pub fn scopes(image: &ImageRef) -> (&'static str, Vec<String>) {
    match image {
        ImageRef::Registry(reference) => {
            let host = canonical_registry_name(reference.registry());
            let name = format!("{host}/{}", reference.repository());
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
            let host = host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h);
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

/// The scopes of an image on disk, from where its path really leads: symlinks and `..`
/// resolved, as containers/image does, so that `/srv/images/../secret` is judged as
/// `/srv/secret`. A path that does not exist (the pull then fails) is only made absolute.
fn path_scopes(path: &Path, tag: Option<&str>) -> Vec<String> {
    let absolute =
        std::fs::canonicalize(path).or_else(|_| std::path::absolute(path)).unwrap_or_else(|_| path.to_path_buf());
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

    fn check_text(image: &ImageRef, text: &str) -> Result<usize> {
        evaluate_text(image, text).map(|(_, checks)| checks.len())
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
                    "signed.lan": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/nonexistent/k.gpg"}]
                },
                "oci": {"/srv/images": [{"type": "insecureAcceptAnything"}]}
            }
        }"#;
        assert_eq!(check_text(&image("reg.lan:5000/team/app:v1"), policy).unwrap(), 0);
        let err = check_text(&image("reg.lan:5000/team/secret:v1"), policy).unwrap_err().to_string();
        assert!(err.contains("is rejected (scope docker \"reg.lan:5000/team/secret\": \"reject\")"), "{err}");
        let err = check_text(&image("reg.lan:5000/other:v1"), policy).unwrap_err().to_string();
        assert!(err.contains("scope default"), "{err}");
        assert!(check_text(&image("a.b.corp.example/x:1"), policy).is_ok());
        let by_digest = image(&format!("signed.lan/x@sha256:{}", "a".repeat(64)));
        let err = format!("{:#}", check_text(&by_digest, policy).unwrap_err());
        assert!(err.contains("scope docker \"signed.lan\": signedBy"), "{err}");
        assert!(err.contains("the key file /nonexistent/k.gpg does not exist"), "{err}");
        assert!(check_text(&image("oci:/srv/images/etcd:v1"), policy).is_ok());
        assert!(check_text(&image("oci:/srv/other:v1"), policy).is_err());
        assert!(check_text(&image("reg.lan:5000/x"), r#"{"default": []}"#).is_err());
        assert!(check_text(&image("reg.lan:5000/x"), r#"{"default": [{"type": "maybe"}]}"#).is_err());
    }

    #[test]
    fn requirements_that_cannot_be_followed_are_refused_before_any_fetch() {
        let x = image("reg.lan/x:1");
        let refused = |requirement: &str| {
            let policy = format!(r#"{{"default": [{requirement}]}}"#);
            format!("{:#}", check_text(&x, &policy).unwrap_err())
        };
        let err = refused(r#"{"type": "signedBy", "keyType": "signedByX509CAs", "keyPath": "/k"}"#);
        assert!(err.contains("keyType 'signedByX509CAs' is not supported"), "{err}");
        let err = refused(r#"{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k", "keyData": "AA=="}"#);
        assert!(err.contains("exactly one of keyPath, keyPaths and keyData"), "{err}");
        let err = refused(r#"{"type": "signedBy", "keyType": "GPGKeys", "keyData": "bm90IGEga2V5"}"#);
        assert!(
            err.contains("keyData is not an OpenPGP keyring") || err.contains("keyData holds no public key"),
            "{err}"
        );
        let err = refused(r#"{"type": "sigstoreSigned", "keyData": "AA==", "rekorPublicKeyPaths": ["/r"]}"#);
        assert!(err.contains("unknown field `rekorPublicKeyPaths`"), "{err}");
        let err = refused(r#"{"type": "signedBy", "keyType": "GPGKeys", "keypath": "/k"}"#);
        assert!(err.contains("unknown field `keypath`"), "{err}");
        let err = refused(r#"{"type": "sigstoreSigned", "fulcio": {"oidcIssuer": "x"}}"#);
        assert!(err.contains("fulcio (keyless) signatures are not supported"), "{err}");
        let err = refused(r#"{"type": "sigstoreSigned", "keyData": "bm90IGEga2V5"}"#);
        assert!(err.contains("keyData is not an ECDSA P-256 public key"), "{err}");
        let err = refused(
            r#"{"type": "signedBy", "keyType": "GPGKeys", "keyData": "AA==", "signedIdentity": {"type": "exactReference", "dockerReference": "quay.io/x"}}"#,
        );
        assert!(err.contains("names no tag or digest"), "{err}");
    }

    #[test]
    fn images_on_disk_are_judged_by_where_their_path_leads() {
        let dir = tempfile::tempdir().unwrap();
        let (trusted, secret) = (dir.path().join("images"), dir.path().join("secret"));
        std::fs::create_dir_all(trusted.join("etcd")).unwrap();
        std::fs::create_dir_all(&secret).unwrap();
        std::os::unix::fs::symlink(&secret, trusted.join("link")).unwrap();
        let policy = serde_json::json!({
            "default": [{"type": "reject"}],
            "transports": {"oci": {trusted.display().to_string(): [{"type": "insecureAcceptAnything"}]}}
        })
        .to_string();
        let oci = |path: std::path::PathBuf| image(&format!("oci:{}:v1", path.display()));
        assert!(check_text(&oci(trusted.join("etcd")), &policy).is_ok());
        assert!(check_text(&oci(trusted.join("../secret")), &policy).is_err(), "'..' escaped the scope");
        assert!(check_text(&oci(trusted.join("link")), &policy).is_err(), "a symlink escaped the scope");
    }

    #[test]
    fn a_missing_policy_is_refused_with_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("policy.json");
        let err = evaluate(&image("reg.lan/x"), Some(&missing)).map(|(scope, _)| scope).unwrap_err().to_string();
        assert!(err.contains(&format!("the signature policy {} does not exist", missing.display())), "{err}");
        // The default file: missing, nothing is accepted either, and the message says what to do.
        for reference in ["reg.lan/x", "oci:/srv/x:v1"] {
            let err =
                evaluate_file(&image(reference), &missing, false).map(|(scope, _)| scope).unwrap_err().to_string();
            assert!(err.contains(&format!("there is no signature policy {}", missing.display())), "{err}");
            assert!(err.contains("golang-github-containers-common") && err.contains("containers-common"), "{err}");
            assert!(err.contains(ACCEPT_ANYTHING), "{err}");
        }
        // What the message suggests works.
        std::fs::write(&missing, ACCEPT_ANYTHING).unwrap();
        assert!(evaluate_file(&image("reg.lan/x"), &missing, false).is_ok_and(|(_, checks)| checks.is_empty()));
    }

    /// Registry hosts in scopes compare as DNS compares them, `:443` being HTTPS's own port.
    #[test]
    fn policy_scopes_compare_registry_hosts_canonically() {
        let policy = r#"{
            "default": [{"type": "insecureAcceptAnything"}],
            "transports": {"docker": {
                "registry.lan/app": [{"type": "reject"}],
                "Other.LAN:443": [{"type": "reject"}],
                "*.Corp.Example": [{"type": "reject"}]
            }}
        }"#;
        for refused in ["Registry.LAN:443/app:v1", "registry.lan/app", "REGISTRY.lan/app"] {
            let err = check_text(&image(refused), policy).unwrap_err().to_string();
            assert!(err.contains("is rejected (scope docker \"registry.lan/app\""), "{refused}: {err}");
        }
        let err = check_text(&image("other.lan/x:1"), policy).unwrap_err().to_string();
        assert!(err.contains("scope docker \"Other.LAN:443\""), "{err}");
        assert!(check_text(&image("a.CORP.example:443/x:1"), policy).is_err());
        for accepted in ["registry.lan:5000/app:v1", "registry.lan:4430/app", "other.lan:8443/x", "registry.lan/app2"] {
            assert_eq!(check_text(&image(accepted), policy).unwrap(), 0, "{accepted}");
        }
        let twice = r#"{"default": [{"type": "reject"}], "transports": {"docker": {
            "reg.lan": [{"type": "reject"}], "REG.lan:443": [{"type": "insecureAcceptAnything"}]}}}"#;
        let err = check_text(&image("reg.lan/x"), twice).unwrap_err().to_string();
        assert!(err.contains("name the same place"), "{err}");
    }
}
