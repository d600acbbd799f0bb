//! Image references and container names, parsed and checked before anything else runs.
//!
//! Accepted image references:
//! - `[docker://]HOST[:PORT]/PATH[:TAG|@sha256:DIGEST]`: an image in a registry (Docker's grammar;
//!   a name with no host means Docker Hub, as everywhere else);
//! - `oci:DIR[:TAG]`: an OCI image layout on disk, for hosts with no registry in reach.

use std::fmt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use oci_spec::distribution::Reference;

/// The longest container name accepted: it becomes a unit name, a directory and a runc id.
pub const MAX_NAME_LEN: usize = 64;

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    Registry(Reference),
    Layout { dir: PathBuf, tag: Option<String> },
}

impl ImageRef {
    pub fn parse(input: &str) -> Result<ImageRef> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            bail!("empty image reference");
        }
        if let Some(rest) = trimmed.strip_prefix("oci:") {
            return parse_layout(rest).with_context(|| format!("invalid image reference '{input}'"));
        }
        let name = trimmed.strip_prefix("docker://").unwrap_or(trimmed);
        let reference: Reference = name.parse().with_context(|| {
            format!(
                "invalid image reference '{input}': expected [docker://]HOST[:PORT]/PATH[:TAG|@sha256:DIGEST] or oci:DIR[:TAG]"
            )
        })?;
        if reference.repository().chars().any(|c| c.is_ascii_uppercase()) {
            bail!("invalid image reference '{input}': repository names must be lower-case");
        }
        Ok(ImageRef::Registry(reference))
    }

    /// The canonical text of the reference, as stored in the image's OSTree ref.
    pub fn canonical(&self) -> String {
        match self {
            ImageRef::Registry(r) => r.whole(),
            ImageRef::Layout { dir, tag } => match tag {
                Some(tag) => format!("oci:{}:{tag}", dir.display()),
                None => format!("oci:{}", dir.display()),
            },
        }
    }

    /// The container name used when `--name` is not given: the last path component, plus `-TAG`
    /// when the tag is not `latest`.
    pub fn default_container_name(&self) -> String {
        let (last, tag) = match self {
            ImageRef::Registry(r) => (
                r.repository().rsplit('/').next().unwrap_or_default().to_string(),
                r.tag().map(str::to_string),
            ),
            ImageRef::Layout { dir, tag } => (
                dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                tag.clone(),
            ),
        };
        match tag.as_deref() {
            None | Some("latest") => last,
            Some(tag) => format!("{last}-{tag}"),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

fn parse_layout(rest: &str) -> Result<ImageRef> {
    // A tag cannot contain '/', so a ':' after the last '/' separates DIR from TAG.
    let (dir, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if dir.is_empty() {
        bail!("missing directory after 'oci:'");
    }
    if let Some(tag) = tag {
        let valid = !tag.is_empty()
            && tag.len() <= 128
            && tag.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            && !tag.starts_with(['.', '-']);
        if !valid {
            bail!("invalid tag '{tag}'");
        }
    }
    Ok(ImageRef::Layout { dir: PathBuf::from(dir), tag: tag.map(str::to_string) })
}

/// Checks a container name: it is used as a systemd unit name, a directory name under the storage
/// and the runc container id, so it must be all three safely.
pub fn validate_container_name(name: &str) -> Result<()> {
    if name.is_empty() {
        bail!("invalid container name: it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        bail!("invalid container name '{name}': longer than {MAX_NAME_LEN} characters");
    }
    let first_ok = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !first_ok || !rest_ok {
        bail!(
            "invalid container name '{name}': use letters, digits, '_', '.' and '-', starting with a letter or digit"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_references() {
        let cases = [
            ("127.0.0.1:5000/demo/hello:latest", "127.0.0.1:5000", "demo/hello", Some("latest"), None),
            ("docker://127.0.0.1:5000/demo/hello:v2", "127.0.0.1:5000", "demo/hello", Some("v2"), None),
            ("registry.example/a/b/c", "registry.example", "a/b/c", Some("latest"), None),
            (
                "localhost:5000/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "localhost:5000",
                "x",
                None,
                Some("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
            ),
        ];
        for (input, registry, repo, tag, digest) in cases {
            let ImageRef::Registry(r) = ImageRef::parse(input).unwrap() else {
                panic!("{input} parsed as a layout");
            };
            assert_eq!(r.registry(), registry, "{input}");
            assert_eq!(r.repository(), repo, "{input}");
            assert_eq!(r.tag(), tag, "{input}");
            assert_eq!(r.digest(), digest, "{input}");
        }
    }

    #[test]
    fn layout_references() {
        assert_eq!(
            ImageRef::parse("oci:/srv/images/etcd:3.4").unwrap(),
            ImageRef::Layout { dir: "/srv/images/etcd".into(), tag: Some("3.4".into()) }
        );
        assert_eq!(
            ImageRef::parse("oci:./etcd").unwrap(),
            ImageRef::Layout { dir: "./etcd".into(), tag: None }
        );
    }

    #[test]
    fn bad_references_are_refused() {
        for input in ["", "   ", "oci:", "oci::tag", "oci:/x:bad tag", "UPPER/case:x", "host:5000/x:", "a//b"] {
            let err = ImageRef::parse(input).expect_err(input);
            let text = format!("{err:#}");
            assert!(text.contains("reference"), "{input}: {text}");
        }
    }

    #[test]
    fn default_names() {
        let name = |s: &str| ImageRef::parse(s).unwrap().default_container_name();
        assert_eq!(name("127.0.0.1:5000/demo/hello:latest"), "hello");
        assert_eq!(name("127.0.0.1:5000/demo/hello"), "hello");
        assert_eq!(name("127.0.0.1:5000/demo/etcd:3.4"), "etcd-3.4");
        assert_eq!(name("oci:/srv/images/flannel:v1"), "flannel-v1");
    }

    #[test]
    fn container_names() {
        for good in ["etcd", "etcd-3.4", "a", "k8s_node.1", &"x".repeat(MAX_NAME_LEN)] {
            validate_container_name(good).expect(good);
        }
        let long = "x".repeat(MAX_NAME_LEN + 1);
        for bad in ["", "../x", "/", "a/b", ".hidden", "-x", "a b", "a\nb", "é", long.as_str()] {
            let err = validate_container_name(bad).expect_err(bad);
            assert!(err.to_string().contains("invalid container name"), "{bad:?}: {err}");
        }
    }
}
