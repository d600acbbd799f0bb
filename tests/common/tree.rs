//! Filesystem listings (to compare a checked-out rootfs with a reference) and `umoci unpack`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::describe_output;
use super::image::{blob_path, write_blob, Compression, MT_LAYER_GZIP, MT_LAYER_ZSTD, MT_MANIFEST, REF_NAME};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Char,
    Block,
    Socket,
}

/// One path of a listing. No mtime, no inode numbers or link counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// `st_mode & 0o7777`
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Regular files only, else 0.
    pub size: u64,
    /// Hex sha256 of a regular file's content.
    pub sha256: Option<String>,
    /// Symlinks only.
    pub link_target: Option<PathBuf>,
    /// Device nodes only: (major, minor).
    pub rdev: Option<(u64, u64)>,
    /// The extended attributes images carry: `security.capability` and `user.*`.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Whether a listing compares this extended attribute (others, like `security.selinux`, belong
/// to the host).
fn listed_xattr(name: &str) -> bool {
    name == "security.capability" || name.starts_with("user.")
}

fn format_xattrs(xattrs: &BTreeMap<String, Vec<u8>>) -> String {
    xattrs.iter().map(|(k, v)| format!("{k}={}", hex::encode(v))).collect::<Vec<_>>().join(",")
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {:04o} {}:{}", self.kind, self.mode, self.uid, self.gid)?;
        if self.kind == Kind::File {
            let sha = self.sha256.as_deref().unwrap_or("");
            write!(f, " size={} sha256={}", self.size, &sha[..sha.len().min(12)])?;
        }
        if let Some(t) = &self.link_target {
            write!(f, " -> {}", t.display())?;
        }
        if let Some((ma, mi)) = self.rdev {
            write!(f, " dev={ma},{mi}")?;
        }
        if !self.xattrs.is_empty() {
            write!(f, " xattrs={{{}}}", format_xattrs(&self.xattrs))?;
        }
        Ok(())
    }
}

fn major(rdev: u64) -> u64 {
    ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff)
}
fn minor(rdev: u64) -> u64 {
    ((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff)
}

/// Describes one path (without following a final symlink).
pub fn entry_of(path: &Path) -> Result<Entry> {
    let md = std::fs::symlink_metadata(path).with_context(|| format!("lstat {}", path.display()))?;
    let ft = md.file_type();
    let kind = if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_fifo() {
        Kind::Fifo
    } else if ft.is_char_device() {
        Kind::Char
    } else if ft.is_block_device() {
        Kind::Block
    } else if ft.is_socket() {
        Kind::Socket
    } else {
        bail!("unknown file type at {}", path.display());
    };
    let mut xattrs = BTreeMap::new();
    for name in xattr::list(path).with_context(|| format!("listxattr {}", path.display()))? {
        let name = name.to_string_lossy().into_owned();
        if listed_xattr(&name) {
            let value = xattr::get(path, &name)
                .with_context(|| format!("getxattr {name} {}", path.display()))?
                .unwrap_or_default();
            xattrs.insert(name, value);
        }
    }
    Ok(Entry {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: if kind == Kind::File { md.len() } else { 0 },
        sha256: if kind == Kind::File { Some(super::sha256_file(path)?) } else { None },
        link_target: if kind == Kind::Symlink { Some(std::fs::read_link(path)?) } else { None },
        rdev: if matches!(kind, Kind::Char | Kind::Block) { Some((major(md.rdev()), minor(md.rdev()))) } else { None },
        xattrs,
    })
}

/// Every path under `root` (not `root` itself), keyed by its path relative to `root`.
pub fn tree_listing(root: &Path) -> Result<BTreeMap<PathBuf, Entry>> {
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out)?;
    Ok(out)
}

fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Entry>) -> Result<()> {
    let dir = root.join(rel);
    let rd = std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
    for de in rd {
        let de = de?;
        let rel_path = rel.join(de.file_name());
        let entry = entry_of(&root.join(&rel_path))?;
        let is_dir = entry.kind == Kind::Dir;
        out.insert(rel_path.clone(), entry);
        if is_dir {
            walk(root, &rel_path, out)?;
        }
    }
    Ok(())
}

/// Differences between two listings, one readable line each: `- path: ...` (only in `a`),
/// `+ path: ...` (only in `b`), `~ path: field a != b` (in both, differing). Empty if equal.
pub fn diff_listings(a: &BTreeMap<PathBuf, Entry>, b: &BTreeMap<PathBuf, Entry>) -> Vec<String> {
    let mut out = Vec::new();
    for (p, ea) in a {
        match b.get(p) {
            None => out.push(format!("- {}: {ea}", p.display())),
            Some(eb) if ea != eb => {
                let mut diffs = Vec::new();
                if ea.kind != eb.kind {
                    diffs.push(format!("kind {:?} != {:?}", ea.kind, eb.kind));
                }
                if ea.mode != eb.mode {
                    diffs.push(format!("mode {:04o} != {:04o}", ea.mode, eb.mode));
                }
                if (ea.uid, ea.gid) != (eb.uid, eb.gid) {
                    diffs.push(format!("owner {}:{} != {}:{}", ea.uid, ea.gid, eb.uid, eb.gid));
                }
                if ea.size != eb.size {
                    diffs.push(format!("size {} != {}", ea.size, eb.size));
                }
                if ea.sha256 != eb.sha256 {
                    diffs.push(format!("sha256 {:?} != {:?}", ea.sha256, eb.sha256));
                }
                if ea.link_target != eb.link_target {
                    diffs.push(format!("target {:?} != {:?}", ea.link_target, eb.link_target));
                }
                if ea.rdev != eb.rdev {
                    diffs.push(format!("rdev {:?} != {:?}", ea.rdev, eb.rdev));
                }
                if ea.xattrs != eb.xattrs {
                    diffs.push(format!(
                        "xattrs {{{}}} != {{{}}}",
                        format_xattrs(&ea.xattrs),
                        format_xattrs(&eb.xattrs)
                    ));
                }
                out.push(format!("~ {}: {}", p.display(), diffs.join(", ")));
            }
            Some(_) => {}
        }
    }
    for (p, eb) in b {
        if !a.contains_key(p) {
            out.push(format!("+ {}: {eb}", p.display()));
        }
    }
    out
}

/// Groups of regular files under `root` that are one inode (two paths or more each), sorted.
pub fn hardlink_groups(root: &Path) -> Result<Vec<Vec<PathBuf>>> {
    let mut by_inode: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
    for (path, entry) in tree_listing(root)? {
        if entry.kind == Kind::File {
            let md = std::fs::symlink_metadata(root.join(&path))?;
            if md.nlink() > 1 {
                by_inode.entry((md.dev(), md.ino())).or_default().push(path);
            }
        }
    }
    let mut groups: Vec<Vec<PathBuf>> = by_inode.into_values().filter(|g| g.len() > 1).collect();
    groups.sort();
    Ok(groups)
}

/// The hard-link groups of `reference` whose paths are not all one inode in `ours`, one line
/// each. One direction only: sysctr's OSTree checkout also hard-links every file to its repository
/// object, so files with the same content, mode, owner and xattrs share an inode there even when
/// they were separate files in the layers. Link counts therefore cannot equal umoci's; what must
/// hold is that files the layers linked together stay linked.
pub fn split_link_groups(reference: &Path, ours: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for group in hardlink_groups(reference)? {
        let inodes: BTreeSet<Option<(u64, u64)>> =
            group.iter().map(|p| std::fs::symlink_metadata(ours.join(p)).ok().map(|m| (m.dev(), m.ino()))).collect();
        if inodes.len() != 1 || inodes.contains(&None) {
            let names: Vec<String> = group.iter().map(|p| p.display().to_string()).collect();
            out.push(format!("hard links split: {}", names.join(" = ")));
        }
    }
    Ok(out)
}

/// Every difference between a reference rootfs (umoci's) and ours: the listings (type, mode,
/// owner, content, link target, xattrs) and the hard-link groups. Empty if they match.
pub fn rootfs_differences(reference: &Path, ours: &Path) -> Result<Vec<String>> {
    let mut out = diff_listings(&tree_listing(reference)?, &tree_listing(ours)?);
    out.extend(split_link_groups(reference, ours)?);
    Ok(out)
}

/// Listing as text, one line per path (for debugging output).
pub fn format_listing(l: &BTreeMap<PathBuf, Entry>) -> String {
    l.iter().map(|(p, e)| format!("{}: {e}\n", p.display())).collect()
}

/// `umoci unpack --image layout_dir:tag dest` (dest missing or empty; `tag` an image manifest,
/// not an index); returns `dest/rootfs`, the reference rootfs. umoci 0.4.7 cannot read zstd
/// layers: if the image has any, it is first copied into a temporary layout with those layers
/// re-compressed as gzip (same diff_ids, same tar content), which is what gets unpacked.
///
/// umoci runs with umask 022: it creates the directories a layer only implies (no tar entry of
/// their own) with mode 0777 minus the umask, and sysctr gives them 0755.
pub fn umoci_unpack(layout_dir: &Path, tag: &str, dest: &Path) -> Result<PathBuf> {
    let tmp;
    let mut image_dir = layout_dir.to_path_buf();
    if has_zstd_layers(layout_dir, tag)? {
        tmp = tempfile::Builder::new().prefix("sysctr-umoci.").tempdir_in("/var/tmp")?;
        gzip_copy(layout_dir, tag, tmp.path())?;
        image_dir = tmp.path().to_path_buf();
    }
    let image = format!("{}:{}", image_dir.display(), tag);
    let out = Command::new("sh")
        .args(["-c", "umask 022 && exec umoci \"$@\"", "sh"])
        .args(["unpack", "--image", &image])
        .arg(dest)
        .output()
        .context("running umoci")?;
    if !out.status.success() {
        bail!("umoci unpack --image {image} {} failed: {}", dest.display(), describe_output(&out));
    }
    Ok(dest.join("rootfs"))
}

fn read_json(path: &Path) -> Result<Value> {
    serde_json::from_slice(&std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
        .with_context(|| format!("parsing {}", path.display()))
}

/// The manifest (digest, JSON) that `tag` names in an OCI layout (an image manifest, not an index).
fn layout_manifest(layout_dir: &Path, tag: &str) -> Result<(String, Value)> {
    let index = read_json(&layout_dir.join("index.json"))?;
    let entry = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"][REF_NAME].as_str() == Some(tag))
        .with_context(|| format!("no tag {tag} in {}", layout_dir.display()))?;
    if entry["mediaType"].as_str() != Some(MT_MANIFEST) {
        bail!("tag {tag} is not an image manifest: {entry}");
    }
    let digest = entry["digest"].as_str().context("entry without digest")?.to_string();
    let manifest = read_json(&blob_path(layout_dir, &digest))?;
    Ok((digest, manifest))
}

fn has_zstd_layers(layout_dir: &Path, tag: &str) -> Result<bool> {
    let (_, manifest) = layout_manifest(layout_dir, tag)?;
    Ok(manifest["layers"].as_array().into_iter().flatten().any(|l| l["mediaType"].as_str() == Some(MT_LAYER_ZSTD)))
}

/// Copies the image `tag` into a new layout `dest` with zstd layers re-compressed as gzip.
fn gzip_copy(layout_dir: &Path, tag: &str, dest: &Path) -> Result<()> {
    let (_, mut manifest) = layout_manifest(layout_dir, tag)?;
    std::fs::create_dir_all(dest.join("blobs/sha256"))?;
    std::fs::copy(layout_dir.join("oci-layout"), dest.join("oci-layout"))?;
    let cfg = manifest["config"]["digest"].as_str().context("no config")?.to_string();
    std::fs::copy(blob_path(layout_dir, &cfg), blob_path(dest, &cfg))?;
    for l in manifest["layers"].as_array_mut().context("no layers")? {
        let digest = l["digest"].as_str().context("layer without digest")?.to_string();
        let blob = std::fs::read(blob_path(layout_dir, &digest))?;
        if l["mediaType"].as_str() == Some(MT_LAYER_ZSTD) {
            let tar = zstd::decode_all(&blob[..])?;
            let gz = Compression::Gzip.compress(&tar)?;
            let d = write_blob(dest, &gz)?;
            l["mediaType"] = MT_LAYER_GZIP.into();
            l["digest"] = d.into();
            l["size"] = gz.len().into();
        } else {
            write_blob(dest, &blob)?;
        }
    }
    let m = serde_json::to_vec(&manifest)?;
    let md = write_blob(dest, &m)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MT_MANIFEST, "digest": md, "size": m.len(),
            "annotations": {REF_NAME: tag},
        }],
    });
    std::fs::write(dest.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(())
}
