//! One layer blob → one OSTree commit, streamed: blob digest check → decompression → diff_id
//! check → tar → OSTree objects. Nothing of a layer is kept on disk or in memory as a whole.
//!
//! Formats, as real images write them:
//! - gzip blobs may hold several members (pigz, eStargz, `cat a.gz b.gz`) and zstd blobs several
//!   frames plus skippable frames (zstd:chunked): all of them are read;
//! - GNU long names and link names (`L`, `K`), PAX `path`, `linkpath`, `uid`, `gid` and
//!   `SCHILY.xattr.*` records, and GNU sparse files (`S`, expanded) are understood; PAX global
//!   headers (`g`) are skipped, as GNU tar does with the ones images carry (`comment=`). PAX
//!   sparse files (`GNU.sparse.*` records) are refused: tar-rs cannot expand them;
//! - hard links point to an earlier file of the same layer.
//!
//! Directories a layer only implies (it holds `a/b/file` but no entry for `a/b/`) get root
//! 0755, what `umoci unpack` gives them, and are listed in the commit's `sysctr.implied-dirs`,
//! so that flattening keeps the metadata the layers below gave them (see `merge`).

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Read};
use std::path::{Component, Path};

use anyhow::{anyhow, bail, Context, Result};
use ostree::gio;
use ostree::gio::prelude::*;
use ostree::glib;
use ostree::glib::object::Cast;
use sha2::{Digest as _, Sha256};

use super::limits::{human_bytes, GuardState, LayerLimits, Limit, LimitExceeded, TarGuard};
use super::objects::{ObjectWriter, Written};
use crate::digest::{Digest, DigestReader};

/// Files at most this large are read into memory, checksummed and written here; larger ones are
/// streamed to libostree, which checksums them itself.
const BUFFERED_FILE_MAX: u64 = 16 * 1024 * 1024;
/// Extended attributes as OSTree stores them: (NUL-terminated name, value), sorted.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// File type bits OSTree expects in a mode (`st_mode`), not just the permissions.
const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn from_media_type(media_type: &str) -> Result<Compression> {
        Ok(match media_type {
            "application/vnd.oci.image.layer.v1.tar" | "application/vnd.docker.image.rootfs.diff.tar" => {
                Compression::None
            }
            "application/vnd.oci.image.layer.v1.tar+gzip" | "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
                Compression::Gzip
            }
            "application/vnd.oci.image.layer.v1.tar+zstd" | "application/vnd.docker.image.rootfs.diff.tar.zstd" => {
                Compression::Zstd
            }
            other => bail!("unsupported layer media type '{other}'"),
        })
    }
}

/// A layer blob to import, with the digests it must match.
#[derive(Debug, Clone)]
pub struct LayerToImport {
    pub digest: Digest,
    pub diff_id: Digest,
    pub compression: Compression,
}

/// The result of importing one layer.
#[derive(Debug, Clone)]
pub struct ImportedLayer {
    pub commit: String,
    /// Device nodes, FIFOs and sockets found in the layer and not stored, as `path (kind)`.
    pub skipped: Vec<String>,
}

/// Imports one layer into the repository at `repo_path`, in a transaction of its own and without
/// setting a ref (see [`crate::store::Store::publish`]), refusing it if it goes over `limits`.
/// Blocking: call it from a blocking thread. Each call opens its own `Repo`, so several layers can
/// be imported in parallel.
///
/// A refused or broken layer leaves the objects it wrote so far without any ref: they belong to no
/// image, and `prune` removes them.
pub fn import_layer(
    repo_path: &Path,
    blob: impl Read,
    layer: &LayerToImport,
    limits: &LayerLimits,
) -> Result<ImportedLayer> {
    let repo = super::open_repo(repo_path, false)?;
    repo.set_disable_fsync(true);
    {
        let _edge = transaction_edge();
        repo.prepare_transaction(gio::Cancellable::NONE).context("starting an OSTree transaction")?;
    }
    let result = import_in_transaction(&repo, repo_path, blob, layer, limits);
    let _edge = transaction_edge();
    match result {
        Ok(imported) => {
            repo.commit_transaction(gio::Cancellable::NONE)
                .with_context(|| format!("committing layer {}", layer.digest))?;
            Ok(imported)
        }
        Err(err) => {
            let _ = repo.abort_transaction(gio::Cancellable::NONE);
            Err(err)
        }
    }
}

/// Held while a transaction starts or ends. libostree (2022.7) lets a transaction that starts in
/// one `Repo` pick the staging directory that one ending in another `Repo` of the same process
/// is removing ("opendir(staging-…): No such file or directory"); seen with six layers imported
/// at once. The imports themselves still run in parallel.
fn transaction_edge() -> std::sync::MutexGuard<'static, ()> {
    static EDGE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    EDGE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn import_in_transaction(
    repo: &ostree::Repo,
    repo_path: &Path,
    blob: impl Read,
    layer: &LayerToImport,
    limits: &LayerLimits,
) -> Result<ImportedLayer> {
    let what = format!("layer {}", layer.digest);
    let mut blob = DigestReader::new(blob, layer.digest.clone(), format!("{what} (blob)"));
    let guard = std::rc::Rc::new(GuardState::default());
    let unpacked = (|| -> Result<(ostree::MutableTree, Stats)> {
        let decompressed: Box<dyn Read> = match layer.compression {
            Compression::None => Box::new(&mut blob),
            // Every member, not just the first: GzDecoder stops after one.
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut blob)),
            Compression::Zstd => Box::new(zstd::Decoder::new(&mut blob).context("starting zstd")?),
        };
        let decompressed = TarGuard::new(decompressed, guard.clone(), limits.bytes);
        let mut tar_stream = DigestReader::new(decompressed, layer.diff_id.clone(), format!("{what} (diff_id)"));
        let mut writer = TreeWriter::new(repo, repo_path, &layer.digest, limits)?;
        let mut archive = tar::Archive::new(&mut tar_stream);
        let mut entries = archive.entries().with_context(|| format!("reading the tar stream of {what}"))?;
        loop {
            // Between two members tar-rs reads headers only, long names and PAX records included:
            // the guard holds it to the header budget.
            guard.begin_headers(limits.header);
            let next = entries.next();
            guard.end_headers();
            let Some(entry) = next else { break };
            let mut entry = entry.with_context(|| format!("reading the tar stream of {what}"))?;
            writer.add(&mut entry).map_err(|err| {
                if err.is::<LimitExceeded>() {
                    err
                } else {
                    err.context(format!("importing {what}"))
                }
            })?;
            // Whatever a member's data holds beyond what was stored (a directory or a link with a
            // size) is read here, so that the next header phase reads headers only.
            io::copy(&mut entry, &mut io::sink()).with_context(|| format!("reading the tar stream of {what}"))?;
        }
        tar_stream.finish().with_context(|| format!("verifying {what}"))?;
        Ok(writer.finish())
    })();
    if let Some(limit) = guard.hit() {
        // Refused while reading: the rest of the blob is not downloaded.
        let how = match limit {
            Limit::Header => format!(
                "has a tar member whose headers (GNU long name or link name, PAX records, sparse map) take more than {}",
                human_bytes(limits.header)
            ),
            _ => format!("unpacks to more than {}", human_bytes(limits.bytes)),
        };
        return Err(limits.exceeded(&layer.digest, limit, how));
    }
    let unpacked = match unpacked {
        Err(err) if err.is::<LimitExceeded>() => return Err(err),
        other => other,
    };
    // The blob digest is checked even when unpacking failed: a corrupt download most often shows
    // up first as a broken tar or gzip stream, and the digest mismatch is the real cause.
    blob.finish().with_context(|| format!("verifying {what}"))?;
    let (tree, stats) = unpacked?;

    let meta = glib::VariantDict::new(None);
    meta.insert("sysctr.diff-id", layer.diff_id.as_str());
    meta.insert("sysctr.unpacked-size", stats.unpacked_size);
    meta.insert("sysctr.skipped", stats.skipped.clone());
    super::FifoRecord::write_all(&meta, &stats.fifos);
    meta.insert(super::IMPLIED_DIRS_KEY, stats.implied_dirs.clone());
    let root = repo.write_mtree(&tree, gio::Cancellable::NONE).context("writing the layer tree")?;
    let root =
        root.downcast::<ostree::RepoFile>().map_err(|_| anyhow!("OSTree returned a tree that is not a RepoFile"))?;
    let commit = repo
        .write_commit_with_time(
            None,
            Some(layer.digest.as_str()),
            None,
            Some(&meta.end()),
            &root,
            0,
            gio::Cancellable::NONE,
        )
        .with_context(|| format!("writing the commit of {what}"))?;
    Ok(ImportedLayer { commit: commit.to_string(), skipped: stats.skipped })
}

struct Stats {
    unpacked_size: u64,
    skipped: Vec<String>,
    /// FIFOs as (path, mode, uid, gid): recreated at checkout, since OSTree cannot store them.
    fifos: Vec<super::FifoRecord>,
    /// Directories of the layer with no tar entry of their own, sorted; "" is the root.
    implied_dirs: Vec<String>,
}

/// Builds a `MutableTree` from tar entries, writing file objects as it goes.
struct TreeWriter<'r> {
    repo: &'r ostree::Repo,
    objects: ObjectWriter,
    layer: &'r Digest,
    limits: &'r LayerLimits,
    /// Members and implied directories so far, against `limits.entries`.
    entries: u64,
    root: ostree::MutableTree,
    default_dirmeta: String,
    dirmeta_cache: HashMap<(u32, u32, u32, Xattrs), String>,
    /// Directories created for a path below them, and not (yet) given by an entry of their own.
    implied: BTreeSet<String>,
    stats: Stats,
}

impl<'r> TreeWriter<'r> {
    fn new(repo: &'r ostree::Repo, repo_path: &Path, layer: &'r Digest, limits: &'r LayerLimits) -> Result<Self> {
        let default_dirmeta = dirmeta_checksum(repo, 0, 0, 0o755, None)?;
        let root = ostree::MutableTree::new();
        root.set_metadata_checksum(&default_dirmeta);
        Ok(TreeWriter {
            repo,
            objects: ObjectWriter::open(
                repo_path,
                repo.min_free_space_bytes().context("reading the repository's min-free-space")?,
            )?,
            layer,
            limits,
            entries: 0,
            root,
            default_dirmeta,
            dirmeta_cache: HashMap::new(),
            implied: BTreeSet::from([String::new()]),
            stats: Stats { unpacked_size: 0, skipped: Vec::new(), fifos: Vec::new(), implied_dirs: Vec::new() },
        })
    }

    fn finish(mut self) -> (ostree::MutableTree, Stats) {
        self.stats.implied_dirs = std::mem::take(&mut self.implied).into_iter().collect();
        (self.root, self.stats)
    }

    /// Removes whatever `parent` holds under `name` (`path`), for an entry that replaces it.
    fn unlink(&mut self, parent: &ostree::MutableTree, name: &str, path: &str) -> Result<()> {
        if matches!(parent.lookup(name), Ok((_, Some(_)))) {
            self.forget_implied(path);
        }
        parent.remove(name, true).with_context(|| format!("replacing {path}"))?;
        Ok(())
    }

    /// Drops `path` and everything under it from the implied directories.
    fn forget_implied(&mut self, path: &str) {
        self.implied.remove(path);
        // Paths under `path/` sort between `path/` and `path0` ('0' follows '/').
        let under: Vec<String> = self.implied.range(format!("{path}/")..format!("{path}0")).cloned().collect();
        for sub in under {
            self.implied.remove(&sub);
        }
    }

    /// Counts one more entry (a member, or a directory a path implies) against the bound.
    fn count_entry(&mut self) -> Result<()> {
        self.entries += 1;
        if self.entries > self.limits.entries {
            return Err(self.limits.exceeded(
                self.layer,
                Limit::Entries,
                format!(
                    "has more than {} entries (tar members and the directories their paths imply)",
                    self.limits.entries
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a path or link target longer or deeper than the bounds allow.
    fn check_path(&self, raw: &[u8], depth: Option<usize>, what: &str) -> Result<()> {
        let shown = || format!("{}…", String::from_utf8_lossy(&raw[..raw.len().min(60)]));
        if let Some(depth) = depth.filter(|&d| d as u64 > self.limits.depth) {
            let how = format!("has a {what} of {depth} components, more than {} ('{}')", self.limits.depth, shown());
            return Err(self.limits.exceeded(self.layer, Limit::Depth, how));
        }
        if raw.len() as u64 > self.limits.path_length {
            let how =
                format!("has a {what} of {} bytes, more than {} ('{}')", raw.len(), self.limits.path_length, shown());
            return Err(self.limits.exceeded(self.layer, Limit::PathLength, how));
        }
        Ok(())
    }

    /// Counts a file's size against the layer's byte bound, before any of it is written.
    fn count_bytes(&mut self, size: u64, path: &str) -> Result<()> {
        self.stats.unpacked_size = self.stats.unpacked_size.saturating_add(size);
        if self.stats.unpacked_size > self.limits.bytes {
            let how = format!("unpacks to more than {} (at /{path})", human_bytes(self.limits.bytes));
            return Err(self.limits.exceeded(self.layer, Limit::Bytes, how));
        }
        Ok(())
    }

    fn add<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<()> {
        self.count_entry()?;
        let kind = entry.header().entry_type();
        match kind {
            // Metadata-only members: tar-rs applies long names and local PAX records to the
            // member they precede, so any left here describe nothing. A global header's records
            // are not applied to the members that follow, by umoci's reader or GNU tar alike.
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => return Ok(()),
            // A GNU volume label ('V') names the archive, not a file.
            other if other.as_byte() == b'V' => return Ok(()),
            _ => {}
        }
        let raw_path = entry.path().context("reading an entry path")?.into_owned();
        self.check_path(raw_path.as_os_str().as_encoded_bytes(), Some(raw_path.components().count()), "path")?;
        let components = normalize_path(&raw_path)?;
        if let Some(target) = entry.link_name_bytes() {
            self.check_path(&target, None, "link target")?;
        }
        let header = entry.header();
        let mode = header.mode().context("reading a mode")? & 0o7777;
        let uid = u32::try_from(header.uid().context("reading a uid")?).context("uid out of range")?;
        let gid = u32::try_from(header.gid().context("reading a gid")?).context("gid out of range")?;
        let pax = read_pax(entry)?;
        let xattrs = pax.xattrs;
        let path_text = components.join("/");
        if pax.sparse {
            bail!("{path_text}: PAX-format sparse files (GNU.sparse.* records) are not supported");
        }

        // An entry replaces a FIFO recorded at its path or above it (a FIFO turned into a
        // directory by this path), and, unless it is a directory, the FIFOs below it (a
        // directory replaced by a symlink).
        let hides_below = !kind.is_dir();
        self.stats.fifos.retain(|super::FifoRecord { path: fifo, .. }| {
            !(fifo == &path_text || (hides_below && is_below(fifo, &path_text)) || is_below(&path_text, fifo))
        });
        let Some((name, parent_components)) = components.split_last() else {
            if kind.is_dir() {
                let meta = self.dirmeta(uid, gid, mode, xattrs)?;
                self.root.set_metadata_checksum(&meta);
                self.implied.remove("");
            }
            return Ok(());
        };
        let parent = self.parent_dir(parent_components)?;

        let checksum = match kind {
            tar::EntryType::Directory => {
                let meta = self.dirmeta(uid, gid, mode, xattrs)?;
                let (file, _) = parent.lookup(name).unwrap_or((None, None));
                if file.is_some() {
                    parent.remove(name, true)?;
                }
                let dir = parent.ensure_dir(name).with_context(|| format!("creating directory {path_text}"))?;
                dir.set_metadata_checksum(&meta);
                self.implied.remove(&path_text);
                return Ok(());
            }
            // A GNU sparse file reads as its expanded content, holes as zeros; its size is the
            // expanded one.
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let size = entry.size();
                self.count_bytes(size, &path_text)?;
                self.write_regfile(entry, uid, gid, mode, size, xattrs)
                    .with_context(|| format!("writing file {path_text}"))?
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .context("reading a symlink target")?
                    .ok_or_else(|| anyhow!("symlink {path_text} has no target"))?;
                let target = target.to_str().ok_or_else(|| anyhow!("symlink {path_text}: target is not UTF-8"))?;
                // A PAX `linkpath` may hold one; libostree takes C strings.
                if target.contains('\0') {
                    bail!("symlink {path_text}: target contains a NUL byte");
                }
                let xattrs = xattrs_variant(xattrs);
                self.repo
                    .write_symlink(None, uid, gid, xattrs.as_ref(), target, gio::Cancellable::NONE)
                    .with_context(|| format!("writing symlink {path_text}"))?
                    .to_string()
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .context("reading a hard link target")?
                    .ok_or_else(|| anyhow!("hard link {path_text} has no target"))?;
                let target = normalize_path(&target)?;
                self.file_checksum(&target).ok_or_else(|| {
                    anyhow!(
                        "hard link {path_text} points to '{}', which is not an earlier file of this layer",
                        target.join("/")
                    )
                })?
            }
            tar::EntryType::Fifo => {
                self.unlink(&parent, name, &path_text)?;
                self.stats.fifos.push(super::FifoRecord { path: path_text, mode, uid, gid });
                return Ok(());
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                let what = if kind == tar::EntryType::Char { "character device" } else { "block device" };
                self.stats.skipped.push(format!("/{path_text} ({what})"));
                return Ok(());
            }
            other => bail!("unsupported tar entry type {other:?} at {path_text}"),
        };
        self.unlink(&parent, name, &path_text)?;
        parent.replace_file(name, &checksum).with_context(|| format!("adding {path_text} to the tree"))?;
        Ok(())
    }

    /// The content checksum of the file or symlink the tree holds at `components` so far: what a
    /// hard link to that path gets, as extracting the tar in order would give it.
    fn file_checksum(&self, components: &[String]) -> Option<String> {
        let (name, parents) = components.split_last()?;
        let mut dir = self.root.clone();
        for component in parents {
            dir = dir.lookup(component).ok()?.1?;
        }
        dir.lookup(name).ok()?.0.map(|checksum| checksum.to_string())
    }

    /// The directory holding an entry, creating the missing ones as implied directories.
    fn parent_dir(&mut self, components: &[String]) -> Result<ostree::MutableTree> {
        let mut dir = self.root.clone();
        let mut path = String::new();
        for component in components {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(component);
            let (file, sub) = dir.lookup(component).unwrap_or((None, None));
            dir = match sub {
                Some(sub) => sub,
                None => {
                    self.count_entry()?;
                    if file.is_some() {
                        dir.remove(component, true)?;
                    }
                    let sub = dir.ensure_dir(component)?;
                    sub.set_metadata_checksum(&self.default_dirmeta);
                    self.implied.insert(path.clone());
                    sub
                }
            };
        }
        Ok(dir)
    }

    fn dirmeta(&mut self, uid: u32, gid: u32, mode: u32, xattrs: Xattrs) -> Result<String> {
        let key = (uid, gid, mode, xattrs);
        if let Some(found) = self.dirmeta_cache.get(&key) {
            return Ok(found.clone());
        }
        let variant = xattrs_variant(key.3.clone());
        let checksum = dirmeta_checksum(self.repo, uid, gid, mode, variant.as_ref())?;
        self.dirmeta_cache.insert(key, checksum.clone());
        Ok(checksum)
    }

    fn write_regfile(
        &mut self,
        content: &mut impl Read,
        uid: u32,
        gid: u32,
        mode: u32,
        size: u64,
        xattrs: Xattrs,
    ) -> Result<String> {
        let full_mode = S_IFREG | mode;
        if size <= BUFFERED_FILE_MAX {
            let mut buf = Vec::with_capacity(size as usize);
            content.read_to_end(&mut buf)?;
            let checksum = regfile_checksum(&buf, uid, gid, full_mode, &xattrs);
            if self.objects.write(&checksum, &buf, (uid, gid, full_mode), &xattrs)? == Written::Stored {
                return Ok(checksum);
            }
            return write_trusted_regfile(self.repo, &buf, uid, gid, full_mode, xattrs);
        }
        let xattrs = xattrs_variant(xattrs);
        let writer = self.repo.write_regfile(None, uid, gid, full_mode, size, xattrs.as_ref())?;
        let mut out = writer.into_write();
        io::copy(content, &mut out)?;
        let writer = out.into_output_stream();
        Ok(writer.finish(gio::Cancellable::NONE)?.to_string())
    }
}

/// The OSTree checksum of a regular file: SHA-256 over its length-prefixed file header (see
/// [`file_header`]) then the content. Computed here rather than by libostree, whose build hashes
/// with GLib's software SHA-256; this one uses the CPU's SHA instructions.
pub(super) fn regfile_checksum(content: &[u8], uid: u32, gid: u32, mode: u32, xattrs: &[(Vec<u8>, Vec<u8>)]) -> String {
    let header = file_header(uid, gid, mode, xattrs);
    let mut hasher = Sha256::new();
    // As stored: the header's length (big-endian u32) and 4 bytes of padding, then the header.
    hasher.update((header.len() as u32).to_be_bytes());
    hasher.update([0u8; 4]);
    hasher.update(&header);
    hasher.update(content);
    hex::encode(hasher.finalize())
}

/// OSTree's file header of a regular file, serialized as GLib serializes the GVariant
/// `(uuuusa(ayay))` of big-endian uid, gid, mode, rdev 0, no symlink target, and xattrs. Written
/// out here because GLib takes one process-wide lock for every GVariant made and freed: with a
/// GVariant per file, the threads importing layers side by side spent much of their time waiting
/// for each other on it.
fn file_header(uid: u32, gid: u32, mode: u32, xattrs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut header = Vec::with_capacity(32);
    for field in [uid, gid, mode, 0] {
        header.extend_from_slice(&field.to_be_bytes());
    }
    header.push(0); // the symlink target: an empty string
    let target_end = header.len();
    // `a(ayay)`: the elements one after the other, then where each one ends.
    let mut array = Vec::new();
    let mut element_ends = Vec::with_capacity(xattrs.len());
    for (name, value) in xattrs {
        let mut element = Vec::with_capacity(name.len() + value.len() + 1);
        element.extend_from_slice(name);
        element.extend_from_slice(value);
        append_framing_offsets(&mut element, &[name.len()]);
        array.extend_from_slice(&element);
        element_ends.push(array.len());
    }
    append_framing_offsets(&mut array, &element_ends);
    header.extend_from_slice(&array);
    // The tuple frames its variable-sized members but the last: the symlink target.
    append_framing_offsets(&mut header, &[target_end]);
    header
}

/// Appends a GVariant container's framing offsets (little-endian), each as wide as the smallest
/// width that lets the whole container, offsets included, be addressed.
fn append_framing_offsets(body: &mut Vec<u8>, offsets: &[usize]) {
    if offsets.is_empty() {
        return;
    }
    let fits = |width: usize, max: usize| body.len() + width * offsets.len() <= max;
    let width = if fits(1, 0xff) {
        1
    } else if fits(2, 0xffff) {
        2
    } else if fits(4, 0xffff_ffff) {
        4
    } else {
        8
    };
    for &offset in offsets {
        body.extend_from_slice(&(offset as u64).to_le_bytes()[..width]);
    }
}

/// Writes a regular file held in memory under the checksum computed by [`regfile_checksum`].
fn write_trusted_regfile(
    repo: &ostree::Repo,
    content: &[u8],
    uid: u32,
    gid: u32,
    mode: u32,
    xattrs: Xattrs,
) -> Result<String> {
    let checksum = regfile_checksum(content, uid, gid, mode, &xattrs);
    let info = gio::FileInfo::new();
    info.set_file_type(gio::FileType::Regular);
    info.set_size(content.len() as i64);
    info.set_attribute_uint32("unix::uid", uid);
    info.set_attribute_uint32("unix::gid", gid);
    info.set_attribute_uint32("unix::mode", mode);
    let input = gio::MemoryInputStream::from_bytes(&glib::Bytes::from(content));
    let xattrs = xattrs_variant(xattrs);
    let (stream, length) = ostree::raw_file_to_content_stream(&input, &info, xattrs.as_ref(), gio::Cancellable::NONE)?;
    repo.write_content_trusted(&checksum, &stream, length, gio::Cancellable::NONE)?;
    Ok(checksum)
}

/// Writes (or finds) the dirmeta object for a directory's owner, mode and xattrs.
pub(super) fn dirmeta_checksum(
    repo: &ostree::Repo,
    uid: u32,
    gid: u32,
    mode: u32,
    xattrs: Option<&glib::Variant>,
) -> Result<String> {
    let info = gio::FileInfo::new();
    info.set_attribute_uint32("unix::uid", uid);
    info.set_attribute_uint32("unix::gid", gid);
    info.set_attribute_uint32("unix::mode", S_IFDIR | mode);
    let variant = ostree::create_directory_metadata(&info, xattrs);
    let checksum = repo
        .write_metadata(ostree::ObjectType::DirMeta, None, &variant, gio::Cancellable::NONE)
        .context("writing directory metadata")?;
    Ok(checksum.to_hex())
}

/// What the PAX records of an entry say beyond what tar-rs applies itself (path, link target,
/// size, uid, gid).
struct PaxRecords {
    /// `SCHILY.xattr.*`
    xattrs: Xattrs,
    /// Whether the entry is a PAX-format sparse file (`GNU.sparse.*`), which tar-rs does not
    /// expand.
    sparse: bool,
}

fn read_pax<R: Read>(entry: &mut tar::Entry<R>) -> Result<PaxRecords> {
    let mut records = PaxRecords { xattrs: Vec::new(), sparse: false };
    if let Some(extensions) = entry.pax_extensions().context("reading PAX headers")? {
        for ext in extensions {
            let ext = ext.context("reading a PAX header")?;
            let key = ext.key_bytes();
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                let mut name = name.to_vec();
                name.push(0); // OSTree stores xattr names as NUL-terminated byte strings
                records.xattrs.push((name, ext.value_bytes().to_vec()));
            } else if key.starts_with(b"GNU.sparse.") {
                records.sparse = true;
            }
        }
    }
    records.xattrs.sort();
    Ok(records)
}

pub(super) fn xattrs_variant(xattrs: Xattrs) -> Option<glib::Variant> {
    if xattrs.is_empty() {
        None
    } else {
        Some(xattrs.to_variant())
    }
}

/// Whether `path` is strictly below the directory `dir` (both relative, `/`-separated).
fn is_below(path: &str, dir: &str) -> bool {
    !dir.is_empty() && path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'))
}

/// Splits a tar path into components, dropping `.` and leading `/`, and refusing `..`: a layer
/// must not reach outside its own tree. An empty result is the root directory. A NUL byte, which
/// a PAX `path` or a GNU long name may carry, is refused too: names go to libostree as C strings.
fn normalize_path(path: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => {
                let part = part.to_str().ok_or_else(|| anyhow!("path {} is not UTF-8", path.display()))?;
                if part.contains('\0') {
                    bail!("path {path:?} contains a NUL byte");
                }
                out.push(part.to_string());
            }
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => bail!("path {} leaves the layer root", path.display()),
            Component::Prefix(_) => bail!("path {} is not a Unix path", path.display()),
        }
    }
    Ok(out)
}

/// Regular files as tests write them into a repository: (content, uid, gid, permission bits,
/// xattrs), among them another owner (where the tests run as root), set-user-ID, and a file
/// capability.
#[cfg(test)]
pub(super) fn regfile_cases() -> [(Vec<u8>, u32, u32, u32, Xattrs); 4] {
    // vfs_cap_data revision 2, effective, permitted = CAP_NET_RAW: what `setcap cap_net_raw+ep`
    // writes. Only root may write one; anyone else, an xattr of the user namespace.
    let xattr = if rustix::process::geteuid().is_root() {
        (b"security.capability\0".to_vec(), vec![1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    } else {
        (b"user.sysctr.test\0".to_vec(), b"value".to_vec())
    };
    let ((uid, gid), (other_uid, other_gid)) = (crate::test_owner::ours(), crate::test_owner::another());
    [
        (b"".to_vec(), uid, gid, 0o644, vec![]),
        (b"hello\n".to_vec(), other_uid, other_gid, 0o4755, vec![]),
        (vec![7u8; 100_000], uid, gid, 0o600, vec![]),
        (b"#!/bin/ping".to_vec(), uid, gid, 0o755, vec![xattr]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_or_refused() {
        let cases: [(&str, Option<&[&str]>); 7] = [
            ("./etc/passwd", Some(&["etc", "passwd"])),
            ("/usr/bin/", Some(&["usr", "bin"])),
            ("a/./b", Some(&["a", "b"])),
            ("./", Some(&[])),
            ("../etc/shadow", None),
            ("a/../../b", None),
            ("a/b/..", None),
        ];
        for (input, expected) in cases {
            let got = normalize_path(Path::new(input));
            match expected {
                Some(parts) => assert_eq!(got.unwrap(), parts, "{input}"),
                None => assert!(got.is_err(), "{input} accepted"),
            }
        }
    }

    /// The file header as written here is byte for byte GLib's serialization of the same
    /// GVariant, across offset widths of 1, 2 and 4 bytes.
    #[test]
    fn the_file_header_is_the_gvariant_glib_serializes() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |bound: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % bound
        };
        for _ in 0..2_000 {
            let (uid, gid, mode) = (next(1 << 32) as u32, next(1 << 32) as u32, next(1 << 32) as u32);
            let xattrs: Vec<(Vec<u8>, Vec<u8>)> = (0..next(4))
                .map(|_| {
                    let name = vec![b'n'; 1 + next(30) as usize];
                    let length = [0, 7, 240, 300, 70_000][next(5) as usize] + next(20);
                    (name, vec![next(256) as u8; length as usize])
                })
                .collect();
            let glib = (uid.to_be(), gid.to_be(), mode.to_be(), 0u32, String::new(), xattrs.clone()).to_variant();
            assert_eq!(file_header(uid, gid, mode, &xattrs), glib.data(), "{} xattrs", xattrs.len());
        }
    }

    #[test]
    fn our_checksum_is_the_one_libostree_computes() {
        let dir = tempfile::Builder::new().prefix("sysctr-csum.").tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("repo");
        let repo = ostree::Repo::new_for_path(&path);
        repo.create(ostree::RepoMode::Bare, gio::Cancellable::NONE).unwrap();
        repo.prepare_transaction(gio::Cancellable::NONE).unwrap();
        for (content, uid, gid, mode, xattrs) in regfile_cases() {
            let content = &content[..];
            let variant = xattrs_variant(xattrs.clone());
            let expected = repo
                .write_regfile_inline(None, uid, gid, S_IFREG | mode, variant.as_ref(), content, gio::Cancellable::NONE)
                .unwrap();
            assert_eq!(regfile_checksum(content, uid, gid, S_IFREG | mode, &xattrs), expected.as_str());
            let written = write_trusted_regfile(&repo, content, uid, gid, S_IFREG | mode, xattrs).unwrap();
            assert_eq!(written, expected.as_str());
        }
        repo.commit_transaction(gio::Cancellable::NONE).unwrap();
    }

    /// A PAX extended header with one record.
    fn append_pax_record(builder: &mut tar::Builder<Vec<u8>>, key: &str, value: &[u8]) {
        let mut record = format!(" {key}=").into_bytes();
        record.extend_from_slice(value);
        record.push(b'\n');
        // The length at the start of a record counts its own digits.
        let mut len = record.len() + 1;
        while len.to_string().len() + record.len() != len {
            len += 1;
        }
        let mut data = len.to_string().into_bytes();
        data.extend(record);
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::XHeader);
        header.set_path("PaxHeader").unwrap();
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, &data[..]).unwrap();
    }

    #[test]
    fn nul_bytes_in_names_and_link_targets_are_refused() {
        let dir = tempfile::Builder::new().prefix("sysctr-nul.").tempdir_in("/var/tmp").unwrap();
        let repo = dir.path().join("repo");
        super::super::Store::open_or_create(&repo).unwrap();
        for (key, kind) in [("path", tar::EntryType::Regular), ("linkpath", tar::EntryType::Symlink)] {
            let mut builder = tar::Builder::new(Vec::new());
            append_pax_record(&mut builder, key, b"etc/a\0b");
            let mut header = tar::Header::new_ustar();
            header.set_entry_type(kind);
            header.set_path("etc/x").unwrap();
            if kind == tar::EntryType::Symlink {
                header.set_link_name("y").unwrap();
            }
            header.set_mode(0o644);
            let (uid, gid) = crate::test_owner::ours();
            header.set_uid(uid.into());
            header.set_gid(gid.into());
            header.set_mtime(0);
            header.set_size(0);
            header.set_cksum();
            builder.append(&header, std::io::empty()).unwrap();
            let bytes = builder.into_inner().unwrap();
            let digest = Digest::of_bytes(&bytes);
            let layer = LayerToImport { digest: digest.clone(), diff_id: digest, compression: Compression::None };
            let err = import_layer(&repo, &bytes[..], &layer, &LayerLimits::default()).expect_err(key);
            assert!(format!("{err:#}").contains("contains a NUL byte"), "{key}: {err:#}");
        }
        assert!(normalize_path(Path::new("a/b\0c")).is_err());
    }

    #[test]
    fn media_types() {
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip").unwrap(),
            Compression::Gzip
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd").unwrap(),
            Compression::Zstd
        );
        let err =
            Compression::from_media_type("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip").unwrap_err();
        assert!(err.to_string().contains("unsupported layer media type"));
    }
}
