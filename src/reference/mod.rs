//! Image references and container names, parsed and checked before anything else runs.
//!
//! Accepted image references:
//! - `[docker://]HOST[:PORT]/PATH[:TAG|@sha256:DIGEST]`: an image in a registry (Docker's grammar;
//!   a name with no host means Docker Hub, as everywhere else);
//! - `oci:DIR[:TAG]`: an OCI image layout on disk, for hosts with no registry in reach;
//! - `oci-archive:PATH[:TAG]`: a tar of an OCI image layout;
//! - `docker-archive:PATH[:REF|:@N]`: a `docker save` tar, the image picked by one of its tags or
//!   by its position (PATH cannot contain ':', as in skopeo).
//!
//! Any other `TRANSPORT:` prefix (`containers-storage:`, `dir:`, `docker-daemon:`, …) is refused
//! with the list of supported ones, rather than taken for a Docker Hub name.

use std::fmt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use oci_spec::distribution::Reference;

mod grammar;

pub use grammar::parse as parse_docker;

/// The longest container name accepted: it becomes a unit name, a directory and a runc id.
pub const MAX_NAME_LEN: usize = 64;

/// The transports sysctr reads images from, for error messages.
pub const SUPPORTED_TRANSPORTS: &str =
    "docker:// (a registry: [docker://]HOST[:PORT]/PATH[:TAG]), oci:DIR[:TAG], oci-archive:PATH[:TAG], docker-archive:PATH[:REF]";

/// containers-transports(5) names that sysctr does not read from.
const OTHER_TRANSPORTS: [&str; 8] =
    ["containers-storage", "dir", "docker-daemon", "ostree", "sif", "tarball", "atomic", "docker"];

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    Registry(Reference),
    Layout { dir: PathBuf, tag: Option<String> },
    OciArchive { path: PathBuf, tag: Option<String> },
    DockerArchive { path: PathBuf, pick: Option<ArchivePick> },
}

/// Which image of a docker archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchivePick {
    /// One of the image's `RepoTags`, as written or in normalized form.
    Ref(String),
    /// The position in the archive's `manifest.json`, from 0.
    Index(usize),
}

impl ImageRef {
    pub fn parse(input: &str) -> Result<ImageRef> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            bail!("empty image reference");
        }
        let invalid = || format!("invalid image reference '{input}'");
        if let Some(rest) = trimmed.strip_prefix("oci:") {
            let (dir, tag) = split_tag(rest, "directory", "oci:").with_context(invalid)?;
            let dir = absolute(dir, PathColons::NotInLast).with_context(invalid)?;
            return Ok(ImageRef::Layout { dir, tag });
        }
        if let Some(rest) = trimmed.strip_prefix("oci-archive:") {
            let (path, tag) = split_tag(rest, "archive path", "oci-archive:").with_context(invalid)?;
            let path = absolute(path, PathColons::NotInLast).with_context(invalid)?;
            return Ok(ImageRef::OciArchive { path, tag });
        }
        if let Some(rest) = trimmed.strip_prefix("docker-archive:") {
            return parse_docker_archive(rest).with_context(invalid);
        }
        let name = match trimmed.strip_prefix("docker://") {
            Some(name) => name,
            None => {
                if let Some(transport) = unsupported_transport(trimmed) {
                    bail!(
                        "invalid image reference '{input}': the transport '{transport}:' is not supported; use {SUPPORTED_TRANSPORTS}"
                    );
                }
                trimmed
            }
        };
        let reference = parse_docker(name).with_context(|| {
            format!(
                "invalid image reference '{input}': expected [docker://]HOST[:PORT]/PATH[:TAG|@sha256:DIGEST], oci:DIR[:TAG], oci-archive:PATH[:TAG] or docker-archive:PATH[:REF]"
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
            ImageRef::Registry(r) => {
                let whole = r.whole();
                // A registry host named like a transport (`oci:5000/app`, `dir:5000/app`) would
                // read back as that transport: it keeps the `docker://` that made it a registry.
                let reads_as_transport =
                    ["oci:", "oci-archive:", "docker-archive:"].iter().any(|prefix| whole.starts_with(prefix))
                        || unsupported_transport(&whole).is_some();
                if reads_as_transport {
                    format!("docker://{whole}")
                } else {
                    whole
                }
            }
            ImageRef::Layout { dir, tag } => with_suffix(format!("oci:{}", dir.display()), tag.as_deref()),
            ImageRef::OciArchive { path, tag } => {
                with_suffix(format!("oci-archive:{}", path.display()), tag.as_deref())
            }
            ImageRef::DockerArchive { path, pick } => {
                let pick = match pick {
                    Some(ArchivePick::Ref(r)) => Some(r.clone()),
                    Some(ArchivePick::Index(n)) => Some(format!("@{n}")),
                    None => None,
                };
                with_suffix(format!("docker-archive:{}", path.display()), pick.as_deref())
            }
        }
    }

    /// The container name used when `--name` is not given: the last path component (an archive's
    /// file name without `.tar`), plus `-TAG` when the tag is not `latest`. A docker archive's
    /// image picked by REF is named like that reference in a registry.
    pub fn default_container_name(&self) -> String {
        let file_name = |path: &std::path::Path| path.file_name().map(|n| n.to_string_lossy().into_owned());
        let archive_name = |path: &std::path::Path| {
            let name = file_name(path).unwrap_or_default();
            match name.strip_suffix(".tar") {
                Some(stem) if !stem.is_empty() => stem.to_string(),
                _ => name,
            }
        };
        let registry_name = |r: &Reference| {
            (r.repository().rsplit('/').next().unwrap_or_default().to_string(), r.tag().map(str::to_string))
        };
        let (last, tag) = match self {
            ImageRef::Registry(r) => registry_name(r),
            ImageRef::Layout { dir, tag } => (file_name(dir).unwrap_or_default(), tag.clone()),
            ImageRef::OciArchive { path, tag } => (archive_name(path), tag.clone()),
            ImageRef::DockerArchive { path, pick } => match pick {
                Some(ArchivePick::Ref(r)) => match parse_docker(r) {
                    Ok(r) => registry_name(&r),
                    Err(_) => (archive_name(path), None),
                },
                Some(ArchivePick::Index(n)) => (archive_name(path), Some(n.to_string())),
                None => (archive_name(path), None),
            },
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

fn with_suffix(text: String, suffix: Option<&str>) -> String {
    match suffix {
        Some(suffix) => format!("{text}:{suffix}"),
        None => text,
    }
}

/// Splits `PATH[:TAG]` of `oci:` and `oci-archive:`.
fn split_tag(rest: &str, what: &str, prefix: &str) -> Result<(PathBuf, Option<String>)> {
    // A tag cannot contain '/', so a ':' after the last '/' separates PATH from TAG.
    let (path, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if path.is_empty() {
        bail!("missing {what} after '{prefix}'");
    }
    if let Some(tag) = tag {
        if !is_tag(tag) {
            bail!("invalid tag '{tag}'");
        }
    }
    Ok((PathBuf::from(path), tag.map(str::to_string)))
}

fn is_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && !tag.starts_with(['.', '-'])
}

/// `PATH[:REF|:@N]`: as in skopeo, PATH ends at the first ':'.
fn parse_docker_archive(rest: &str) -> Result<ImageRef> {
    let (path, pick) = match rest.split_once(':') {
        Some((path, pick)) => (path, Some(pick)),
        None => (rest, None),
    };
    if path.is_empty() {
        bail!("missing archive path after 'docker-archive:'");
    }
    let pick = match pick {
        None => None,
        Some(position) if position.starts_with('@') => {
            let digits = &position[1..];
            let not_a_position = || format!("'{position}' is not an image position such as @0");
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                bail!(not_a_position());
            }
            Some(ArchivePick::Index(digits.parse().with_context(not_a_position)?))
        }
        Some(name) => {
            let reference =
                parse_docker(name).with_context(|| format!("'{name}' is not an image name such as NAME[:TAG]"))?;
            if reference.digest().is_some() {
                bail!("'{name}' names a digest; a docker archive is picked by NAME[:TAG] or @N");
            }
            if reference.repository().chars().any(|c| c.is_ascii_uppercase()) {
                bail!("'{name}': repository names must be lower-case");
            }
            Some(ArchivePick::Ref(name.to_string()))
        }
    };
    let path = absolute(PathBuf::from(path), PathColons::None)?;
    Ok(ImageRef::DockerArchive { path, pick })
}

/// Where a ':' may stand in the path of an image on disk for its reference to read back the
/// same: nowhere in a docker archive's, not in the last component of the others'.
#[derive(Clone, Copy)]
enum PathColons {
    None,
    NotInLast,
}

/// `path` made absolute against the current directory, so that the reference names the same
/// image whatever directory it is read from later (`update`, the auto-update timer). Lexically:
/// symlinks and `..` are left for when the image is read. A path already absolute is kept as
/// it is.
fn absolute(path: PathBuf, colons: PathColons) -> Result<PathBuf> {
    // A reference is read back trimmed, and a control character names no file anyone meant.
    let text = path.to_string_lossy();
    if text.chars().any(char::is_control) || text.ends_with(char::is_whitespace) {
        bail!("the path {text:?} holds a control character or ends in white space");
    }
    if path.is_absolute() {
        return Ok(path);
    }
    let absolute = std::path::absolute(&path)
        .with_context(|| format!("making {} absolute (against the current directory)", path.display()))?;
    let text = absolute.to_string_lossy();
    if text.ends_with(char::is_whitespace) {
        bail!("{} is {text:?}, which ends in white space; give the path in another way", path.display());
    }
    let colon = match colons {
        PathColons::None => text.contains(':'),
        PathColons::NotInLast => text.rsplit('/').next().is_some_and(|last| last.contains(':')),
    };
    if colon {
        bail!(
            "{} is {}, which holds a ':' where the reference would read as a tag; give the path in another way",
            path.display(),
            absolute.display()
        );
    }
    Ok(absolute)
}

/// The `WORD` of a `WORD:…` reference that is not a registry name, if any.
///
/// `HOST:PORT/…` is a registry and `NAME:TAG` (no '/') a Docker Hub image, as in Docker's grammar.
/// Names of other containers-transports(5) are always transports; any other `WORD:` that is
/// neither of the above is refused too, rather than sent to the network.
fn unsupported_transport(input: &str) -> Option<&str> {
    let (word, rest) = input.split_once(':')?;
    let transport_like = word.starts_with(|c: char| c.is_ascii_lowercase())
        && word.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+.-_".contains(c));
    if !transport_like {
        return None;
    }
    if OTHER_TRANSPORTS.contains(&word) {
        return Some(word);
    }
    let port_digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if port_digits > 0 && rest[port_digits..].starts_with('/') {
        return None;
    }
    let tag = rest.split_once('@').map_or(rest, |(tag, _)| tag);
    if !rest.contains('/') && is_tag(tag) {
        return None;
    }
    Some(word)
}

/// A registry name (`HOST[:PORT]`), or a name below one (`HOST[:PORT]/PATH`: a repository, a
/// registries.conf prefix, a policy or registries.d scope, `*.DOMAIN` wildcards included), in the
/// form two names are compared in: the host in lower case, as DNS compares names, and without
/// `:443`, the port HTTPS reaches anyway when none is given. A loopback host keeps `:443`:
/// sysctr speaks plain HTTP to it, whose default port is 80. The path is left as it is.
///
/// Every comparison of registry names (registries.conf entries, the `transports.docker` scopes
/// of the signature policy, registries.d namespaces) puts both sides through this; what is
/// connected to is still the name as given.
pub fn canonical_registry_name(name: &str) -> String {
    let (host, path) = match name.find('/') {
        Some(slash) => name.split_at(slash),
        None => (name, ""),
    };
    let host = host.to_ascii_lowercase();
    let host = match host.strip_suffix(":443") {
        Some(bare) if !bare.is_empty() && !crate::registry::is_loopback(&host) => bare.to_string(),
        _ => host,
    };
    format!("{host}{path}")
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
    }

    /// A relative path is made absolute against the directory it was given in: `update` and the
    /// auto-update timer read the stored reference from elsewhere.
    #[test]
    fn paths_on_disk_are_made_absolute() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            ImageRef::parse("oci:./etcd:v1").unwrap(),
            ImageRef::Layout { dir: cwd.join("etcd"), tag: Some("v1".into()) }
        );
        assert_eq!(
            ImageRef::parse("oci:images/etcd").unwrap().canonical(),
            format!("oci:{}/images/etcd", cwd.display())
        );
        assert_eq!(
            ImageRef::parse("oci-archive:etcd.tar").unwrap(),
            ImageRef::OciArchive { path: cwd.join("etcd.tar"), tag: None }
        );
        assert_eq!(
            ImageRef::parse("docker-archive:./all.tar:@1").unwrap(),
            ImageRef::DockerArchive { path: cwd.join("all.tar"), pick: Some(ArchivePick::Index(1)) }
        );
        // `..` is kept for when the path is read, as a symlink would be.
        assert_eq!(ImageRef::parse("oci:../x").unwrap(), ImageRef::Layout { dir: cwd.join("../x"), tag: None });
        for relative in ["oci:./etcd:v1", "oci-archive:x.tar", "docker-archive:all.tar:busybox", "oci:."] {
            let parsed = ImageRef::parse(relative).unwrap();
            assert!(parsed.canonical().contains(&cwd.display().to_string()), "{relative}: {parsed}");
            assert_eq!(ImageRef::parse(&parsed.canonical()).unwrap(), parsed, "{relative}");
        }
        // Made absolute, `x /.` would end in the white space a reference is trimmed of.
        for odd in ["oci:e\te\x0c\t/.", "oci:x /.", "oci-archive:a\tb", "oci:/srv/x\u{1}"] {
            let err = ImageRef::parse(odd).unwrap_err();
            assert!(format!("{err:#}").contains("white space"), "{odd:?}: {err:#}");
        }
        assert_eq!(ImageRef::parse("oci:/srv/x:v1").unwrap().canonical(), "oci:/srv/x:v1");
    }

    #[test]
    fn archive_references() {
        assert_eq!(
            ImageRef::parse("oci-archive:/srv/images/etcd.tar:3.4").unwrap(),
            ImageRef::OciArchive { path: "/srv/images/etcd.tar".into(), tag: Some("3.4".into()) }
        );
        let docker = |path: &str, pick: Option<ArchivePick>| ImageRef::DockerArchive { path: path.into(), pick };
        assert_eq!(ImageRef::parse("docker-archive:/srv/all.tar").unwrap(), docker("/srv/all.tar", None));
        assert_eq!(
            ImageRef::parse("docker-archive:/srv/all.tar:busybox").unwrap(),
            docker("/srv/all.tar", Some(ArchivePick::Ref("busybox".into())))
        );
        assert_eq!(
            ImageRef::parse("docker-archive:/srv/all.tar:registry.lan:5000/k8s/etcd:3.4").unwrap(),
            docker("/srv/all.tar", Some(ArchivePick::Ref("registry.lan:5000/k8s/etcd:3.4".into())))
        );
        assert_eq!(
            ImageRef::parse("docker-archive:/srv/all.tar:@1").unwrap(),
            docker("/srv/all.tar", Some(ArchivePick::Index(1)))
        );
        // The canonical text parses back to the same reference.
        for input in [
            "oci-archive:/srv/etcd.tar:3.4",
            "oci-archive:/srv/etcd.tar",
            "docker-archive:/srv/all.tar",
            "docker-archive:/srv/all.tar:k8s/etcd:3.4",
            "docker-archive:/srv/all.tar:@0",
        ] {
            let parsed = ImageRef::parse(input).unwrap();
            assert_eq!(parsed.canonical(), input);
            assert_eq!(ImageRef::parse(&parsed.canonical()).unwrap(), parsed);
        }
        for bad in [
            "oci-archive:",
            "oci-archive:/x.tar:bad tag",
            "docker-archive:",
            "docker-archive::busybox",
            "docker-archive:/x.tar:@",
            "docker-archive:/x.tar:@-1",
            "docker-archive:/x.tar:@+1",
            "docker-archive:/x.tar:Upper",
            "docker-archive:/x.tar:busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            let err = format!("{:#}", ImageRef::parse(bad).expect_err(bad));
            assert!(err.contains("invalid image reference"), "{bad}: {err}");
        }
    }

    #[test]
    fn registry_hosts_named_like_a_transport_keep_their_docker_prefix() {
        for input in ["docker://oci:666/1", "docker://dir:5000/app:v1", "docker://oci-archive:1/x"] {
            let reference = ImageRef::parse(input).expect(input);
            let canonical = reference.canonical();
            assert!(canonical.starts_with("docker://"), "{input} -> {canonical}");
            assert_eq!(ImageRef::parse(&canonical).expect(&canonical), reference, "{input} -> {canonical}");
        }
        let plain = ImageRef::parse("docker://registry.example:5000/app:v1").expect("a plain reference");
        assert_eq!(plain.canonical(), "registry.example:5000/app:v1");
    }

    #[test]
    fn unsupported_transports_are_refused_with_the_supported_list() {
        for (input, transport) in [
            ("containers-storage:alpine", "containers-storage"),
            ("containers-storage:docker.io/library/alpine:latest", "containers-storage"),
            ("dir:/srv/images/alpine", "dir"),
            ("docker-daemon:alpine:latest", "docker-daemon"),
            ("ostree:alpine@/ostree/repo", "ostree"),
            ("docker:alpine", "docker"),
            ("sif:/srv/x.sif", "sif"),
            ("tarball:/srv/x.tar", "tarball"),
            ("foo:/srv/images/x", "foo"),
            ("https://registry.example/x", "https"),
            ("oci-layout:/srv/x:tag/y", "oci-layout"),
        ] {
            let err = format!("{:#}", ImageRef::parse(input).expect_err(input));
            assert!(err.contains(&format!("the transport '{transport}:' is not supported")), "{input}: {err}");
            for supported in ["docker://", "oci:DIR", "oci-archive:PATH", "docker-archive:PATH"] {
                assert!(err.contains(supported), "{input}: {err}");
            }
        }
        // Registry hosts with a port, and Docker Hub NAME:TAG, are not transports.
        for registry in [
            "localhost:5000/x",
            "host:5000/x:v1",
            "registry.lan:443/a/b",
            "alpine:3.18",
            "alpine:latest@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "docker://dir:latest",
        ] {
            assert!(
                matches!(ImageRef::parse(registry), Ok(ImageRef::Registry(_))),
                "{registry}: {:?}",
                ImageRef::parse(registry)
            );
        }
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
        assert_eq!(name("oci-archive:/srv/images/flannel.tar:v1"), "flannel-v1");
        assert_eq!(name("oci-archive:/srv/images/flannel.tar"), "flannel");
        assert_eq!(name("oci-archive:/srv/images/flannel"), "flannel");
        assert_eq!(name("docker-archive:/srv/images/etcd.tar"), "etcd");
        assert_eq!(name("docker-archive:/srv/images/all.tar:registry.lan:5000/k8s/etcd:3.4"), "etcd-3.4");
        assert_eq!(name("docker-archive:/srv/images/all.tar:busybox"), "busybox");
        assert_eq!(name("docker-archive:/srv/images/all.tar:@1"), "all-1");
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
