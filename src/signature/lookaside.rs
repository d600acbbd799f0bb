//! Where GPG simple signatures are found, containers-registries.d(5): YAML files in
//! `/etc/containers/registries.d` give, per registry namespace, a `lookaside` URL (`file://` or
//! `http(s)://`) under which the signatures of an image are
//! `REPOSITORY@sha256=HEX/signature-1`, `-2`, … (numbered until one is missing), and whether
//! sigstore signatures are read from the registry (`use-sigstore-attachments`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use crate::digest::Digest;
use crate::rooted::{EntryKind, Resolve, RootedDir};

/// The lookaside when registries.d names none, as containers/image has it for root.
pub const DEFAULT_LOOKASIDE: &str = "file:///var/lib/containers/sigstore";
/// The largest registries.d file read.
const MAX_CONFIG_FILE: u64 = 1024 * 1024;
/// The largest signature read.
pub const MAX_SIGNATURE: u64 = 4 * 1024 * 1024;
/// Most signatures read for one image.
pub const MAX_SIGNATURES: usize = 64;
/// Redirects followed for one signature; one from HTTPS to plain HTTP is never followed.
const MAX_REDIRECTS: usize = 5;

/// The merged registries.d configuration.
#[derive(Debug, Default)]
pub struct RegistriesD {
    default_docker: Option<Namespace>,
    docker: BTreeMap<String, Namespace>,
}

#[derive(Debug, Default, Deserialize)]
struct File {
    #[serde(rename = "default-docker")]
    default_docker: Option<Namespace>,
    #[serde(default)]
    docker: BTreeMap<String, Namespace>,
}

/// The signature settings of one namespace. Unknown keys (such as the `*-staging` ones, used by
/// tools that write signatures) are ignored, as containers/image ignores them.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Namespace {
    lookaside: Option<String>,
    /// The older name of `lookaside`.
    sigstore: Option<String>,
    #[serde(rename = "use-sigstore-attachments")]
    use_sigstore_attachments: Option<bool>,
}

impl Namespace {
    fn lookaside(&self) -> Option<&str> {
        [self.lookaside.as_deref(), self.sigstore.as_deref()].into_iter().flatten().find(|url| !url.is_empty())
    }
}

impl RegistriesD {
    /// Reads every `*.yaml` of `dir`, in name order; a missing directory configures nothing. A
    /// namespace, or `default-docker`, given by two files is an error, as in containers/image.
    pub fn load(dir: &Path) -> Result<RegistriesD> {
        let mut merged = RegistriesD::default();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(merged),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        let mut files: Vec<PathBuf> = entries
            .map(|entry| entry.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("reading {}", dir.display()))?;
        files.retain(|path| path.extension().is_some_and(|ext| ext == "yaml"));
        files.sort();
        let mut origin: BTreeMap<String, PathBuf> = BTreeMap::new();
        for path in files {
            let Some(text) = crate::registry::read_host_config_text(&path, MAX_CONFIG_FILE)? else { continue };
            let file: File = serde_saphyr::from_str(&text)
                .map_err(|e| anyhow!("{} is not a valid registries.d file: {e}", path.display()))?;
            merged.merge(file, &path, &mut origin)?;
        }
        Ok(merged)
    }

    /// One file's text alone (for the fuzz target).
    #[cfg(feature = "fuzzing")]
    pub fn parse_text(text: &str) -> Result<RegistriesD> {
        let file: File = serde_saphyr::from_str(text).map_err(|e| anyhow!("not a valid registries.d file: {e}"))?;
        let mut conf = RegistriesD::default();
        conf.merge(file, Path::new("-"), &mut BTreeMap::new())?;
        Ok(conf)
    }

    /// Adds one file's namespaces; one given before, in another file, is an error.
    fn merge(&mut self, file: File, path: &Path, origin: &mut BTreeMap<String, PathBuf>) -> Result<()> {
        if let Some(default) = file.default_docker {
            if let Some(first) = origin.insert("default-docker".to_string(), path.to_path_buf()) {
                bail!("default-docker is configured both in {} and in {}", first.display(), path.display());
            }
            self.default_docker = Some(default);
        }
        for (scope, namespace) in file.docker {
            // Matched against the policy's scopes, whose registry names are canonical.
            let canonical = crate::reference::canonical_registry_name(&scope);
            if let Some(first) = origin.insert(format!("docker {canonical}"), path.to_path_buf()) {
                bail!("docker namespace {scope} is configured both in {} and in {}", first.display(), path.display());
            }
            self.docker.insert(canonical, namespace);
        }
        Ok(())
    }

    /// The namespaces that may say something for `scopes` (most specific first), then
    /// `default-docker`. Each setting is taken from the first of them that gives it.
    fn namespaces<'a>(&'a self, scopes: &'a [String]) -> impl Iterator<Item = &'a Namespace> + 'a {
        scopes.iter().filter_map(|scope| self.docker.get(scope)).chain(self.default_docker.as_ref())
    }

    /// The lookaside for `scopes`: the first namespace that names one, else
    /// [`DEFAULT_LOOKASIDE`].
    pub fn lookaside(&self, scopes: &[String]) -> String {
        self.namespaces(scopes).find_map(Namespace::lookaside).unwrap_or(DEFAULT_LOOKASIDE).to_string()
    }

    /// Whether sigstore signatures are read from the registry for `scopes`: the first namespace
    /// that says.
    pub fn uses_sigstore_attachments(&self, scopes: &[String]) -> bool {
        self.namespaces(scopes).find_map(|n| n.use_sigstore_attachments).unwrap_or(false)
    }
}

/// Reads the signatures of manifest `digest` of `repository` (its path, without the registry)
/// under `lookaside`, until one is missing.
pub async fn read_signatures(
    lookaside: &str,
    repository: &str,
    digest: &Digest,
    timeout: Duration,
) -> Result<Vec<Vec<u8>>> {
    let directory = format!("{repository}@sha256={}", digest.hex());
    let mut signatures = Vec::new();
    let http = if lookaside.starts_with("http://") || lookaside.starts_with("https://") {
        Some(
            reqwest::Client::builder()
                .tls_backend_preconfigured(crate::registry::tls_connector(&[])?)
                .connect_timeout(timeout)
                .timeout(timeout)
                .redirect(reqwest::redirect::Policy::custom(|attempt| {
                    if crate::registry::is_downgrade(&attempt) || attempt.previous().len() >= MAX_REDIRECTS {
                        attempt.stop()
                    } else {
                        attempt.follow()
                    }
                }))
                .build()
                .context("creating the HTTP client for signatures")?,
        )
    } else {
        None
    };
    let files = if lookaside.starts_with("file:") {
        let path = reqwest::Url::parse(lookaside)
            .ok()
            .filter(|url| url.host_str().is_none_or(|host| host.is_empty() || host == "localhost"))
            .and_then(|url| url.to_file_path().ok())
            .with_context(|| format!("lookaside '{lookaside}' is not a file:// URL of this machine"))?;
        match RootedDir::open(&path, Resolve::InRoot) {
            Ok(dir) => Some(dir),
            Err(_) if !path.exists() => return Ok(signatures),
            Err(e) => return Err(e).context("opening the signature lookaside"),
        }
    } else if http.is_some() {
        None
    } else {
        bail!("lookaside '{lookaside}' is neither a file:// nor an http(s):// URL")
    };
    for number in 1..=MAX_SIGNATURES + 1 {
        let relative = format!("{directory}/signature-{number}");
        let found = match (&files, &http) {
            (Some(dir), _) => read_file(dir, Path::new(&relative))?,
            (None, Some(client)) => {
                read_url(client, &format!("{}/{relative}", lookaside.trim_end_matches('/')), timeout).await?
            }
            (None, None) => None,
        };
        let Some(signature) = found else { break };
        if number > MAX_SIGNATURES {
            bail!("{lookaside}/{directory} holds more than {MAX_SIGNATURES} signatures");
        }
        signatures.push(signature);
    }
    Ok(signatures)
}

fn read_file(dir: &RootedDir, relative: &Path) -> Result<Option<Vec<u8>>> {
    match dir.kind(relative)? {
        None => Ok(None),
        Some(EntryKind::File) => dir.read_file(relative, MAX_SIGNATURE).map(Some),
        Some(_) => bail!("{} is not a file", dir.path().join(relative).display()),
    }
}

/// GETs one signature; 404 means there is none. The whole answer is bounded in size and time.
async fn read_url(client: &reqwest::Client, url: &str, timeout: Duration) -> Result<Option<Vec<u8>>> {
    let read = async {
        let mut response = client.get(url).send().await.with_context(|| format!("GET {url}"))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            bail!("GET {url}: HTTP {}", response.status());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.with_context(|| format!("reading {url}"))? {
            if (body.len() + chunk.len()) as u64 > MAX_SIGNATURE {
                bail!("{url} is larger than {MAX_SIGNATURE} bytes");
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(body))
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| anyhow!("GET {url} was not answered within {} s", timeout.as_secs()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_match_registry_hosts_canonically() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "docker:\n  Sigs.LAN:443/team:\n    lookaside: https://sigs.lan/t\n")
            .unwrap();
        let conf = RegistriesD::load(dir.path()).unwrap();
        let scopes_of = |text: &str| super::super::policy::scopes(&crate::reference::ImageRef::parse(text).unwrap()).1;
        for same in ["sigs.lan/team/app:v1", "SIGS.lan:443/team/app"] {
            assert_eq!(conf.lookaside(&scopes_of(same)), "https://sigs.lan/t", "{same}");
        }
        assert_eq!(conf.lookaside(&scopes_of("sigs.lan:5000/team/app")), DEFAULT_LOOKASIDE);
        std::fs::write(dir.path().join("b.yaml"), "docker:\n  sigs.lan/team:\n    lookaside: https://x\n").unwrap();
        let err = RegistriesD::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is configured both in"), "{err}");
    }

    #[test]
    fn the_most_specific_namespace_applies_and_duplicates_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("default.yaml"),
            "default-docker:\n  sigstore: file:///var/lib/containers/old-name\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("team.yaml"),
            "docker:\n  reg.lan:5000/team:\n    lookaside: https://sigs.lan/team\n    use-sigstore-attachments: true\n    lookaside-staging: file:///tmp/x\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not: [yaml").unwrap();
        let conf = RegistriesD::load(dir.path()).unwrap();
        let scopes = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let team = scopes(&["reg.lan:5000/team/app:v1", "reg.lan:5000/team/app", "reg.lan:5000/team"]);
        assert_eq!(conf.lookaside(&team), "https://sigs.lan/team");
        assert!(conf.uses_sigstore_attachments(&team));
        let other = scopes(&["reg.lan:5000/other"]);
        assert_eq!(conf.lookaside(&other), "file:///var/lib/containers/old-name");
        assert!(!conf.uses_sigstore_attachments(&other));
        // Each setting from the first namespace that gives it.
        std::fs::write(
            dir.path().join("team.yaml"),
            "docker:\n  reg.lan:5000/team:\n    use-sigstore-attachments: true\n",
        )
        .unwrap();
        let conf = RegistriesD::load(dir.path()).unwrap();
        assert_eq!(conf.lookaside(&team), "file:///var/lib/containers/old-name");

        std::fs::write(dir.path().join("zz.yaml"), "default-docker:\n  lookaside: file:///elsewhere\n").unwrap();
        let err = RegistriesD::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("default-docker is configured both in"), "{err}");
        let none = RegistriesD::load(&dir.path().join("missing")).unwrap();
        assert_eq!(none.lookaside(&[]), DEFAULT_LOOKASIDE);
    }

    #[tokio::test]
    async fn file_lookaside_signatures_are_read_in_order_beneath_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let digest = Digest::of_bytes(b"manifest");
        let at = dir.path().join(format!("team/app@sha256={}", digest.hex()));
        std::fs::create_dir_all(&at).unwrap();
        std::fs::write(at.join("signature-1"), b"one").unwrap();
        std::fs::write(at.join("signature-2"), b"two").unwrap();
        std::fs::write(at.join("signature-4"), b"after a gap: not read").unwrap();
        let url = format!("file://{}", dir.path().display());
        let found = read_signatures(&url, "team/app", &digest, Duration::from_secs(5)).await.unwrap();
        assert_eq!(found, vec![b"one".to_vec(), b"two".to_vec()]);
        let none = read_signatures(&url, "team/other", &digest, Duration::from_secs(5)).await.unwrap();
        assert!(none.is_empty());

        // A symlink in the lookaside cannot lead out of it.
        let outside = tempfile::tempdir().unwrap();
        let escaped = outside.path().join(format!("x@sha256={}", digest.hex()));
        std::fs::create_dir_all(&escaped).unwrap();
        std::fs::write(escaped.join("signature-1"), b"outside").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        let through = read_signatures(&url, "link/x", &digest, Duration::from_secs(5)).await.unwrap();
        assert!(through.is_empty(), "a signature outside the lookaside was read");
    }
}
