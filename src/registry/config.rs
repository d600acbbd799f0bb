//! containers-registries.conf(5), version 2, as podman, skopeo and cri-o read it: where an image
//! is pulled from (its registry's `location`, its mirrors first), which registries are plain
//! HTTP or blocked, and what a short name (`etcd`) means.
//!
//! The file (`/etc/containers/registries.conf`, or `--registries-conf` /
//! `CONTAINERS_REGISTRIES_CONF`) is read, then every `*.conf` of the directory beside it with `.d`
//! appended (`registries.conf.d/`), in name order, as containers-registries.conf.d(5) says: a
//! later `[[registry]]` with the same prefix replaces an earlier one, a later
//! `unqualified-search-registries` or `short-name-mode` replaces the earlier, and aliases are
//! merged, a later one winning. A missing file is an empty configuration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use crate::reference::{canonical_registry_name, ImageRef};

/// The largest configuration file read.
const MAX_CONF_FILE: u64 = 1024 * 1024;

/// The merged configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistriesConf {
    registries: Vec<RegistryEntry>,
    unqualified_search: Vec<String>,
    short_name_mode: ShortNameMode,
    aliases: BTreeMap<String, String>,
    credential_helpers: Option<Vec<String>>,
}

/// `short-name-mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShortNameMode {
    /// An ambiguous short name is an error (sysctr never prompts).
    #[default]
    Enforcing,
    /// An ambiguous short name takes the first search registry.
    Permissive,
    /// Like permissive.
    Disabled,
}

/// One `[[registry]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RegistryEntry {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default, rename = "mirror")]
    mirrors: Vec<Mirror>,
}

/// One `[[registry.mirror]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Mirror {
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    pull_from_mirror: PullFromMirror,
}

/// `pull-from-mirror`: which pulls may use a mirror.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullFromMirror {
    #[default]
    All,
    DigestOnly,
    TagOnly,
}

/// Somewhere an image may be pulled from: its repository there (`HOST[:PORT]/PATH`), and
/// whether that place is plain HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub repository: String,
    pub insecure: bool,
    /// A mirror, not the registry's own location.
    pub mirror: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ConfFile {
    #[serde(default)]
    registry: Vec<RegistryEntry>,
    unqualified_search_registries: Option<Vec<String>>,
    short_name_mode: Option<ShortNameMode>,
    #[serde(default)]
    aliases: BTreeMap<String, String>,
    credential_helpers: Option<Vec<String>>,
    /// Version 1's `[registries.search]` and friends.
    registries: Option<toml::Value>,
}

impl RegistriesConf {
    /// The file at `path` and its drop-in directory.
    pub fn load(path: &Path) -> Result<RegistriesConf> {
        let mut conf = RegistriesConf::default();
        if let Some(text) = super::read_host_config_text(path, MAX_CONF_FILE)? {
            conf.merge(&text).with_context(|| format!("reading {}", path.display()))?;
        }
        let drop_ins = PathBuf::from(format!("{}.d", path.display()));
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&drop_ins) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|ext| ext == "conf"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("listing {}", drop_ins.display())),
        };
        files.sort();
        for file in files {
            if let Some(text) = super::read_host_config_text(&file, MAX_CONF_FILE)? {
                conf.merge(&text).with_context(|| format!("reading {}", file.display()))?;
            }
        }
        Ok(conf)
    }

    /// One file's text, merged over what was read before.
    pub fn merge(&mut self, text: &str) -> Result<()> {
        let file: ConfFile = toml::from_str(text).map_err(|e| anyhow!("{}", e.message()))?;
        if file.registries.is_some() {
            bail!("the version 1 format ([registries.search], [registries.insecure]) is not read; use [[registry]] tables (version 2)");
        }
        for mut entry in file.registry {
            if entry.prefix.is_empty() {
                entry.prefix.clone_from(&entry.location);
            }
            if entry.prefix.is_empty() {
                bail!("a [[registry]] has neither prefix nor location");
            }
            if entry.prefix.starts_with("*.") && !entry.location.is_empty() {
                bail!("[[registry]] prefix '{}': a wildcard prefix takes no location", entry.prefix);
            }
            let same = canonical_registry_name(&entry.prefix);
            self.registries.retain(|known| canonical_registry_name(&known.prefix) != same);
            self.registries.push(entry);
        }
        if let Some(search) = file.unqualified_search_registries {
            self.unqualified_search = search;
        }
        if let Some(mode) = file.short_name_mode {
            self.short_name_mode = mode;
        }
        self.aliases.extend(file.aliases);
        if let Some(helpers) = file.credential_helpers {
            self.credential_helpers = Some(helpers);
        }
        Ok(())
    }

    /// `credential-helpers`: where credentials are looked for, in order; `containers-auth.json`
    /// stands for the auth files, and is the only place when the key is not set.
    pub fn credential_helpers(&self) -> Vec<String> {
        self.credential_helpers.clone().unwrap_or_else(|| vec![super::auth::AUTH_FILES.to_string()])
    }

    /// The `[[registry]]` that applies to `name` (`HOST[:PORT]/PATH`): the longest matching
    /// prefix, a wildcard (`*.example.com`, on the host only) after any other; with the part of
    /// `name` below that prefix. Names are compared canonical ([`canonical_registry_name`]).
    fn entry_for(&self, name: &str) -> Option<(&RegistryEntry, String)> {
        let name = canonical_registry_name(name);
        // A wildcard names hosts, whatever their port.
        let host = name.split('/').next().unwrap_or_default();
        let host = host.rsplit_once(':').map_or(host, |(host, _)| host);
        let exact = self
            .registries
            .iter()
            .filter_map(|e| {
                let prefix = canonical_registry_name(&e.prefix);
                let below = name.strip_prefix(&prefix).filter(|rest| rest.is_empty() || rest.starts_with('/'))?;
                (!prefix.starts_with("*.")).then(|| (e, prefix.len(), below.to_string()))
            })
            .max_by_key(|(_, length, _)| *length);
        if let Some((entry, _, below)) = exact {
            return Some((entry, below));
        }
        self.registries
            .iter()
            .filter_map(|e| {
                let prefix = canonical_registry_name(&e.prefix);
                let domain = prefix.strip_prefix('*')?;
                host.ends_with(domain).then_some((e, prefix.len()))
            })
            .max_by_key(|(_, length)| *length)
            .map(|(entry, _)| (entry, String::new()))
    }

    /// Where to pull `name` (`HOST[:PORT]/PATH`) from, in order: the mirrors that take this kind
    /// of pull (`by_digest`), then the registry's location. A blocked registry is an error.
    pub fn candidates(&self, name: &str, by_digest: bool) -> Result<Vec<Candidate>> {
        let Some((entry, below)) = self.entry_for(name) else {
            return Ok(vec![Candidate { repository: name.to_string(), insecure: false, mirror: false }]);
        };
        if entry.blocked {
            bail!("pulls from {name} are blocked by registries.conf ([[registry]] prefix \"{}\")", entry.prefix);
        }
        let rewrite = |location: &str| -> String {
            if entry.prefix.starts_with("*.") || location.is_empty() {
                name.to_string()
            } else {
                format!("{location}{below}")
            }
        };
        let mut candidates = Vec::new();
        for mirror in &entry.mirrors {
            let allowed = match mirror.pull_from_mirror {
                PullFromMirror::All => by_digest || !entry.mirror_by_digest_only,
                PullFromMirror::DigestOnly => by_digest,
                PullFromMirror::TagOnly => !by_digest,
            };
            if allowed {
                candidates.push(Candidate {
                    repository: rewrite(&mirror.location),
                    insecure: mirror.insecure,
                    mirror: true,
                });
            }
        }
        candidates.push(Candidate { repository: rewrite(&entry.location), insecure: entry.insecure, mirror: false });
        Ok(candidates)
    }

    /// Whether the registry `host` (`HOST[:PORT]`) is marked `insecure`.
    pub fn is_insecure(&self, host: &str) -> bool {
        self.entry_for(host).is_some_and(|(e, _)| e.insecure)
    }

    /// The fully qualified names (`HOST[:PORT]/PATH`) a short name (`etcd`, `library/etcd`) may
    /// stand for, to be tried in order: its alias, else the only search registry, else, with
    /// several, an error in enforcing mode (sysctr never prompts) and each of them otherwise.
    pub fn resolve_short_name(&self, short: &str) -> Result<Vec<String>> {
        if let Some(alias) = self.aliases.get(short) {
            return Ok(vec![alias.clone()]);
        }
        let with = |registry: &str| format!("{registry}/{short}");
        match self.unqualified_search.as_slice() {
            [] => bail!(
                "'{short}' is a short name, and registries.conf has no alias for it and no \
                 unqualified-search-registries: give the image's full name (HOST/PATH)"
            ),
            [only] => Ok(vec![with(only)]),
            several if self.short_name_mode != ShortNameMode::Enforcing => {
                Ok(several.iter().map(|r| with(r)).collect())
            }
            several => bail!(
                "'{short}' is an ambiguous short name (short-name-mode is enforcing): it may be any of {}; \
                 give the full name, or add an alias in registries.conf",
                several.iter().map(|r| with(r)).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

/// Parses an image reference typed by a user into the images it may be, in the order to try
/// them. A registry image named without its registry (a short name: `etcd`, `coreos/etcd:v3`)
/// is resolved by the registries configuration at `conf_path`; when that gives one name, it is
/// said on standard error. Never Docker Hub silently.
pub fn parse_image_candidates(input: &str, conf_path: &Path) -> Result<Vec<ImageRef>> {
    // What does not parse (an unsupported transport, a bad name) is said as such first.
    let parsed = ImageRef::parse(input)?;
    let Some((short, suffix)) = short_name(input) else { return Ok(vec![parsed]) };
    let conf = RegistriesConf::load(conf_path)?;
    let images = conf
        .resolve_short_name(short)?
        .into_iter()
        .map(|name| {
            let qualified = format!("{name}{suffix}");
            ImageRef::parse(&qualified).with_context(|| format!("the short name '{input}' resolved to '{qualified}'"))
        })
        .collect::<Result<Vec<_>>>()?;
    if let [image] = images.as_slice() {
        crate::output::note(format!("short name '{input}' is {image} (registries.conf)"));
    }
    Ok(images)
}

/// [`parse_image_candidates`] where one image must be named without asking any registry (an
/// apply file, a command that does not pull): a short name that may be several is refused.
pub fn parse_image(input: &str, conf_path: &Path) -> Result<ImageRef> {
    let mut images = parse_image_candidates(input, conf_path)?;
    if images.len() > 1 {
        bail!(
            "'{input}' may be any of {} (unqualified-search-registries); give the full name",
            images.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        );
    }
    images.pop().context("no image")
}

/// `(name, ":TAG" or "@DIGEST" or "")` when `input` names a registry image without its registry:
/// the first of several path components holds no `.` or `:` and is not `localhost`, or there is
/// a single one.
fn short_name(input: &str) -> Option<(&str, &str)> {
    let input = input.trim();
    let name = input.strip_prefix("docker://").unwrap_or(input);
    if name.contains("://") || ["oci:", "oci-archive:", "docker-archive:"].iter().any(|t| name.starts_with(t)) {
        return None;
    }
    let path_end = name.find('@').unwrap_or(name.len());
    let tag_start = name[..path_end].rfind(':').filter(|&i| !name[i..path_end].contains('/')).unwrap_or(path_end);
    let (path, suffix) = name.split_at(tag_start);
    // Not a name at all: left for the parser to say why.
    if !path.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b)) {
        return None;
    }
    match path.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => None,
        // A first component with ':' holds a port, not a tag: it was caught above.
        None if path.contains(':') => None,
        _ if path.is_empty() => None,
        _ => Some((path, suffix)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> RegistriesConf {
        let mut conf = RegistriesConf::default();
        conf.merge(text).unwrap();
        conf
    }

    fn repositories(candidates: &[Candidate]) -> Vec<&str> {
        candidates.iter().map(|c| c.repository.as_str()).collect()
    }

    #[test]
    fn mirrors_come_first_and_take_only_their_kind_of_pull() {
        let conf = conf(
            r#"
            [[registry]]
            prefix = "docker.io"
            location = "docker.io"
            [[registry.mirror]]
            location = "mirror.lan:5000/hub"
            insecure = true
            [[registry.mirror]]
            location = "digests.lan/hub"
            pull-from-mirror = "digest-only"

            [[registry]]
            prefix = "docker.io/library/etcd"
            location = "internal.lan/etcd"

            [[registry]]
            location = "quay.io"
            blocked = true

            [[registry]]
            prefix = "*.corp.example"
            insecure = true
            "#,
        );
        let tag = conf.candidates("docker.io/library/busybox", false).unwrap();
        assert_eq!(repositories(&tag), ["mirror.lan:5000/hub/library/busybox", "docker.io/library/busybox"]);
        assert!(tag[0].insecure && tag[0].mirror && !tag[1].insecure && !tag[1].mirror);
        let digest = conf.candidates("docker.io/library/busybox", true).unwrap();
        assert_eq!(
            repositories(&digest),
            ["mirror.lan:5000/hub/library/busybox", "digests.lan/hub/library/busybox", "docker.io/library/busybox"]
        );
        // The longest prefix wins, and rewrites the location.
        assert_eq!(repositories(&conf.candidates("docker.io/library/etcd", false).unwrap()), ["internal.lan/etcd"]);
        assert_eq!(
            repositories(&conf.candidates("docker.io/library/etcdx", false).unwrap()),
            ["mirror.lan:5000/hub/library/etcdx", "docker.io/library/etcdx"]
        );
        let err = conf.candidates("quay.io/coreos/etcd", false).unwrap_err().to_string();
        assert!(err.contains("blocked by registries.conf") && err.contains("\"quay.io\""), "{err}");
        assert!(conf.is_insecure("reg.corp.example:5000") && conf.is_insecure("corp.example.reg.corp.example"));
        assert!(!conf.is_insecure("mirror.lan:5000") && !conf.is_insecure("corp.example"));
        assert_eq!(repositories(&conf.candidates("other.lan/x", false).unwrap()), ["other.lan/x"]);
    }

    /// Host names compare as DNS compares them, and `:443` is where HTTPS goes anyway; another
    /// port is another registry.
    #[test]
    fn registry_hosts_compare_without_case_and_without_the_https_port() {
        let conf = conf(
            r#"
            [[registry]]
            prefix = "registry.lan"
            blocked = true

            [[registry]]
            prefix = "Mirrored.LAN:443/team"
            location = "internal.lan/t"

            [[registry]]
            prefix = "*.Corp.Example"
            insecure = true
            "#,
        );
        for name in ["Registry.LAN:443/app", "registry.lan/app", "REGISTRY.lan:443"] {
            let err = conf.candidates(name, false).unwrap_err().to_string();
            assert!(err.contains("blocked by registries.conf"), "{name}: {err}");
        }
        for other in ["registry.lan:5000/app", "registry.lan:4430/app", "registry.lan.other/app"] {
            assert_eq!(repositories(&conf.candidates(other, false).unwrap()), [other], "{other}");
        }
        assert_eq!(repositories(&conf.candidates("mirrored.lan/team/app", false).unwrap()), ["internal.lan/t/app"]);
        assert_eq!(repositories(&conf.candidates("MIRRORED.lan:443/team/a", false).unwrap()), ["internal.lan/t/a"]);
        assert!(conf.is_insecure("reg.CORP.example:443") && conf.is_insecure("Reg.corp.example"));
        // On loopback, sysctr speaks plain HTTP: port 443 is not its default there.
        let local = super::RegistriesConf::default();
        assert_eq!(repositories(&local.candidates("localhost:443/x", false).unwrap()), ["localhost:443/x"]);
        assert_eq!(crate::reference::canonical_registry_name("Localhost:443/x"), "localhost:443/x");
        // A later drop-in's entry for the same place replaces the earlier one.
        let mut conf = conf.clone();
        conf.merge("[[registry]]\nprefix = \"REGISTRY.LAN:443\"\n").unwrap();
        assert!(conf.candidates("registry.lan/app", false).is_ok());
    }

    #[test]
    fn short_names_resolve_through_aliases_and_search_registries() {
        let mut conf = conf(
            r#"
            unqualified-search-registries = ["registry.lan", "docker.io"]
            [aliases]
            "etcd" = "registry.lan/coreos/etcd"
            "#,
        );
        assert_eq!(conf.resolve_short_name("etcd").unwrap(), ["registry.lan/coreos/etcd"]);
        let err = conf.resolve_short_name("flannel").unwrap_err().to_string();
        assert!(err.contains("ambiguous") && err.contains("registry.lan/flannel, docker.io/flannel"), "{err}");
        // A drop-in: replaces the mode, adds an alias, keeps the rest.
        conf.merge("short-name-mode = \"permissive\"\n[aliases]\n\"flannel\" = \"quay.io/coreos/flannel\"\n").unwrap();
        assert_eq!(conf.resolve_short_name("flannel").unwrap(), ["quay.io/coreos/flannel"]);
        assert_eq!(conf.resolve_short_name("busybox").unwrap(), ["registry.lan/busybox", "docker.io/busybox"]);
        let err = RegistriesConf::default().resolve_short_name("etcd").unwrap_err().to_string();
        assert!(err.contains("no unqualified-search-registries"), "{err}");
    }

    #[test]
    fn short_names_are_told_from_full_names() {
        for (input, expected) in [
            ("etcd", Some(("etcd", ""))),
            ("etcd:3.5", Some(("etcd", ":3.5"))),
            ("coreos/etcd@sha256:abc", Some(("coreos/etcd", "@sha256:abc"))),
            ("docker://library/busybox:1", Some(("library/busybox", ":1"))),
            ("docker.io/library/etcd", None),
            ("127.0.0.1:5000/x:1", None),
            ("localhost/x", None),
            ("oci:/srv/layout:v1", None),
            ("docker-archive:/x.tar", None),
            ("Not Valid", None),
        ] {
            assert_eq!(short_name(input), expected, "{input}");
        }
    }

    #[test]
    fn bad_files_are_refused_with_what_is_wrong() {
        let mut conf = RegistriesConf::default();
        for (text, expected) in [
            ("[registries.search]\nregistries = []\n", "version 1 format"),
            ("[[registry]]\ninsecure = true\n", "neither prefix nor location"),
            ("[[registry]]\nprefix = \"*.x\"\nlocation = \"y\"\n", "wildcard prefix takes no location"),
            ("short-name-mode = \"sometimes\"\n", "unknown variant"),
            ("[[registry]\n", ""),
        ] {
            let err = conf.merge(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn drop_ins_are_read_in_order_after_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("registries.conf");
        std::fs::write(&main, "unqualified-search-registries = [\"a.lan\"]\n").unwrap();
        std::fs::create_dir(dir.path().join("registries.conf.d")).unwrap();
        std::fs::write(dir.path().join("registries.conf.d/10-b.conf"), "unqualified-search-registries = [\"b.lan\"]\n")
            .unwrap();
        std::fs::write(dir.path().join("registries.conf.d/20-c.conf"), "[aliases]\n\"x\" = \"c.lan/x\"\n").unwrap();
        std::fs::write(dir.path().join("registries.conf.d/README"), "not read").unwrap();
        let conf = RegistriesConf::load(&main).unwrap();
        assert_eq!(conf.resolve_short_name("y").unwrap(), ["b.lan/y"]);
        assert_eq!(conf.resolve_short_name("x").unwrap(), ["c.lan/x"]);
        assert_eq!(RegistriesConf::load(&dir.path().join("missing.conf")).unwrap(), RegistriesConf::default());
    }
}
