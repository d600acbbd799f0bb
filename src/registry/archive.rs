//! A tar archive read in place: its members are indexed once, from their headers only, and each
//! member is then read by seeking to its offset in the file. Shared by `oci-archive:` (see
//! [`super::layout`]) and `docker-archive:` (see [`super::docker_archive`]). Nothing is unpacked.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::BlobStream;

/// More members than this and the file is not an image archive.
const MAX_MEMBERS: usize = 100_000;
/// Tar metadata records (long names, PAX headers) longer than this are refused.
const MAX_METADATA_RECORD: u64 = 1024 * 1024;
/// Link hops followed when resolving a member.
const MAX_LINK_HOPS: usize = 16;

/// Where a regular member's bytes are in the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub offset: u64,
    pub size: u64,
}

#[derive(Debug, Clone)]
enum Node {
    File(Member),
    /// A symbolic or hard link, its target already made an archive path.
    Link(String),
}

/// The members of a tar archive, by normalized path (no leading `./` or `/`).
#[derive(Debug)]
pub struct ArchiveIndex {
    path: PathBuf,
    members: HashMap<String, Node>,
}

impl ArchiveIndex {
    /// Indexes the archive at `path` in a blocking task.
    pub async fn load(path: &Path) -> Result<Arc<ArchiveIndex>> {
        let owned = path.to_path_buf();
        let index = tokio::task::spawn_blocking(move || ArchiveIndex::read(&owned))
            .await
            .map_err(|e| anyhow!("archive indexing task failed: {e}"))??;
        Ok(Arc::new(index))
    }

    /// Reads every header of the archive, skipping the members' contents.
    pub fn read(path: &Path) -> Result<ArchiveIndex> {
        let what = || format!("reading the archive {}", path.display());
        let mut file = File::open(path).with_context(what)?;
        if file.metadata().with_context(what)?.is_dir() {
            bail!("{} is a directory, not an archive (an OCI layout directory is oci:DIR)", path.display());
        }
        let mut first = [0u8; 512];
        let n = read_up_to(&mut file, &mut first).with_context(what)?;
        if let Some(kind) = compression_of(&first[..n]) {
            bail!(
                "{} is {kind}-compressed; archives are read in place and must be plain tar files: decompress it first",
                path.display()
            );
        }
        if n < first.len() || !is_tar_header(&first) {
            bail!("{} is not a tar archive", path.display());
        }
        file.seek(SeekFrom::Start(0)).with_context(what)?;

        let mut archive = tar::Archive::new(BoundedRuns::new(file));
        let mut members = HashMap::new();
        for entry in archive.entries_with_seek().with_context(what)? {
            // tar-rs may quote raw header bytes, line breaks included: keep the first line.
            let entry = entry.map_err(|e| {
                let text = e.to_string();
                let line: String = text.lines().next().unwrap_or_default().chars().take(200).collect();
                anyhow!("{} is not a readable tar archive: {line}", path.display())
            })?;
            if members.len() >= MAX_MEMBERS {
                bail!("{} has more than {MAX_MEMBERS} members: not an image archive", path.display());
            }
            let raw_name = entry.path_bytes();
            let name = String::from_utf8_lossy(&raw_name);
            let Some(name) = normalize(&name) else {
                continue;
            };
            let kind = entry.header().entry_type();
            let node = match kind {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    Node::File(Member { offset: entry.raw_file_position(), size: entry.size() })
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = entry.link_name_bytes().map(|t| String::from_utf8_lossy(&t).into_owned());
                    let Some(target) = target else { continue };
                    let joined = if kind == tar::EntryType::Symlink && !target.starts_with('/') {
                        // A symlink is relative to the directory holding it.
                        match name.rsplit_once('/') {
                            Some((dir, _)) => format!("{dir}/{target}"),
                            None => target,
                        }
                    } else {
                        target
                    };
                    match normalize(&joined) {
                        Some(target) => Node::Link(target),
                        None => continue,
                    }
                }
                // Directories, sparse files, devices: never an image blob.
                _ => continue,
            };
            members.insert(name, node);
        }
        Ok(ArchiveIndex { path: path.to_path_buf(), members })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `name` is a (possibly linked) regular member.
    pub fn contains(&self, name: &str) -> bool {
        self.member(name).is_ok()
    }

    /// The regular member `name`, following links within the archive.
    pub fn member(&self, name: &str) -> Result<Member> {
        let mut current = normalize(name).ok_or_else(|| anyhow!("invalid member name '{name}'"))?;
        for _ in 0..=MAX_LINK_HOPS {
            match self.members.get(&current) {
                Some(Node::File(member)) => return Ok(*member),
                Some(Node::Link(target)) => current = target.clone(),
                None => bail!("{} has no member '{name}'", self.path.display()),
            }
        }
        bail!("{}: member '{name}' is a link loop", self.path.display())
    }

    /// Reads member `name` whole, refusing it if it is larger than `max` bytes.
    pub async fn read_member(&self, name: &str, max: u64) -> Result<Vec<u8>> {
        let member = self.bounded_member(name, max)?;
        let mut stream = self.open_member(name).await?;
        let mut bytes = Vec::with_capacity(member.size as usize);
        stream
            .read_to_end(&mut bytes)
            .await
            .with_context(|| format!("reading member '{name}' of {}", self.path.display()))?;
        self.check_whole(name, member, &bytes)?;
        Ok(bytes)
    }

    /// [`ArchiveIndex::read_member`], for blocking code.
    pub fn read_member_blocking(&self, name: &str, max: u64) -> Result<Vec<u8>> {
        let member = self.bounded_member(name, max)?;
        let mut bytes = Vec::with_capacity(member.size as usize);
        self.open_member_blocking(name)?
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading member '{name}' of {}", self.path.display()))?;
        self.check_whole(name, member, &bytes)?;
        Ok(bytes)
    }

    fn bounded_member(&self, name: &str, max: u64) -> Result<Member> {
        let member = self.member(name)?;
        if member.size > max {
            bail!(
                "member '{name}' of {} is {} bytes, more than the {max} accepted for it",
                self.path.display(),
                member.size
            );
        }
        Ok(member)
    }

    fn check_whole(&self, name: &str, member: Member, bytes: &[u8]) -> Result<()> {
        if bytes.len() as u64 != member.size {
            bail!("{} is truncated: member '{name}' ends early", self.path.display());
        }
        Ok(())
    }

    /// Opens member `name` as a stream of exactly its bytes (fewer if the file was truncated).
    pub async fn open_member(&self, name: &str) -> Result<BlobStream> {
        let member = self.member(name)?;
        let what = || format!("opening member '{name}' of {}", self.path.display());
        let mut file = tokio::fs::File::open(&self.path).await.with_context(what)?;
        file.seek(SeekFrom::Start(member.offset)).await.with_context(what)?;
        Ok(Box::pin(file.take(member.size)))
    }

    /// Opens member `name` for blocking reads (hashing, sniffing).
    pub fn open_member_blocking(&self, name: &str) -> Result<io::Take<File>> {
        let member = self.member(name)?;
        let what = || format!("opening member '{name}' of {}", self.path.display());
        let mut file = File::open(&self.path).with_context(what)?;
        file.seek(SeekFrom::Start(member.offset)).with_context(what)?;
        Ok(file.take(member.size))
    }
}

/// The compression format recognized from a file's first bytes, if any.
pub fn compression_of(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some("gzip")
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd")
    } else if head.starts_with(b"BZh") {
        Some("bzip2")
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("xz")
    } else {
        None
    }
}

/// Whether a 512-byte block is a tar header (its checksum holds) or the zero block that ends an
/// archive (an empty archive starts with it).
fn is_tar_header(block: &[u8; 512]) -> bool {
    if block.iter().all(|&b| b == 0) {
        return true;
    }
    let header = tar::Header::from_byte_slice(block);
    let mut recomputed = header.clone();
    recomputed.set_cksum();
    matches!((header.cksum(), recomputed.cksum()), (Ok(stored), Ok(computed)) if stored == computed)
}

/// Fills as much of `buf` as the reader has; returns how much.
pub fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// An archive path made relative and free of `.`, `..` and empty components; `None` for the root.
fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// A file reader that fails once more than [`MAX_METADATA_RECORD`] bytes are read with no seek in
/// between. While indexing, the tar reader seeks before every header and over every member's
/// contents, so only metadata records (long names, PAX headers) are read, and this keeps a
/// hostile archive from making it buffer one of any size.
struct BoundedRuns {
    file: File,
    run: u64,
}

impl BoundedRuns {
    fn new(file: File) -> BoundedRuns {
        BoundedRuns { file, run: 0 }
    }
}

impl Read for BoundedRuns {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = (MAX_METADATA_RECORD + 512).saturating_sub(self.run);
        if room == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a tar metadata record is larger than {MAX_METADATA_RECORD} bytes"),
            ));
        }
        let limit = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..limit])?;
        self.run += n as u64;
        Ok(n)
    }
}

impl Seek for BoundedRuns {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.run = 0;
        self.file.seek(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut builder = tar::Builder::new(file.reopen().unwrap());
        for (name, kind, data, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            if let Some(link) = link {
                builder.append_link(&mut header, name, link).unwrap();
            } else {
                builder.append_data(&mut header, name, *data).unwrap();
            }
        }
        builder.finish().unwrap();
        file
    }

    #[tokio::test]
    async fn members_are_read_in_place_and_links_followed() {
        let long = format!("blobs/sha256/{}", "a".repeat(120));
        let file = build(&[
            ("./dir/", tar::EntryType::Directory, b"", None),
            ("./dir/one.json", tar::EntryType::Regular, b"{\"one\":1}", None),
            (&long, tar::EntryType::Regular, b"long name", None),
            ("other/layer.tar", tar::EntryType::Symlink, b"", Some("../dir/one.json")),
            ("hard", tar::EntryType::Link, b"", Some("dir/one.json")),
            ("loop", tar::EntryType::Symlink, b"", Some("loop")),
        ]);
        let index = ArchiveIndex::load(file.path()).await.unwrap();
        assert_eq!(index.read_member("dir/one.json", 100).await.unwrap(), b"{\"one\":1}");
        assert_eq!(index.read_member("/dir/./one.json", 100).await.unwrap(), b"{\"one\":1}");
        assert_eq!(index.read_member(&long, 100).await.unwrap(), b"long name");
        assert_eq!(index.read_member("other/layer.tar", 100).await.unwrap(), b"{\"one\":1}");
        assert_eq!(index.read_member("hard", 100).await.unwrap(), b"{\"one\":1}");
        assert!(!index.contains("dir"), "directories are not members");
        let err = index.read_member("missing", 100).await.unwrap_err().to_string();
        assert!(err.contains("no member 'missing'"), "{err}");
        let err = index.read_member("loop", 100).await.unwrap_err().to_string();
        assert!(err.contains("link loop"), "{err}");
        let err = index.read_member("dir/one.json", 4).await.unwrap_err().to_string();
        assert!(err.contains("more than the 4 accepted"), "{err}");
    }

    #[test]
    fn compressed_and_non_tar_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("x.tar.gz");
        std::fs::write(&gz, [0x1f, 0x8b, 8, 0, 0, 0]).unwrap();
        let err = ArchiveIndex::read(&gz).unwrap_err().to_string();
        assert!(err.contains("gzip-compressed") && err.contains("decompress"), "{err}");
        let junk = dir.path().join("junk.tar");
        std::fs::write(&junk, vec![b'x'; 1024]).unwrap();
        let err = format!("{:#}", ArchiveIndex::read(&junk).unwrap_err());
        assert!(err.contains("is not a tar archive"), "{err}");
        let short = dir.path().join("short.tar");
        std::fs::write(&short, b"abc").unwrap();
        let err = format!("{:#}", ArchiveIndex::read(&short).unwrap_err());
        assert!(err.contains("is not a tar archive"), "{err}");

        // A valid first header, then garbage where the second one should be: one line.
        let mut bytes = Vec::new();
        {
            let mut builder = tar::Builder::new(&mut bytes);
            let mut header = tar::Header::new_gnu();
            header.set_size(3);
            builder.append_data(&mut header, "a", &b"abc"[..]).unwrap();
            builder.finish().unwrap();
        }
        bytes.truncate(1024);
        bytes.extend(b"x\ny\n".repeat(256));
        let broken = dir.path().join("broken.tar");
        std::fs::write(&broken, &bytes).unwrap();
        let err = format!("{:#}", ArchiveIndex::read(&broken).unwrap_err());
        assert!(err.contains("not a readable tar archive") && !err.contains('\n'), "{err}");
        let err = ArchiveIndex::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
    }

    #[test]
    fn oversized_metadata_records_are_refused() {
        let name = format!("{}/x", "d".repeat(MAX_METADATA_RECORD as usize + 10));
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut builder = tar::Builder::new(file.reopen().unwrap());
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        builder.append_data(&mut header, &name, &b"x"[..]).unwrap();
        builder.finish().unwrap();
        let err = format!("{:#}", ArchiveIndex::read(file.path()).unwrap_err());
        assert!(err.contains("metadata record is larger"), "{err}");
    }

    #[test]
    fn paths_normalize() {
        assert_eq!(normalize("./a//b/./c").as_deref(), Some("a/b/c"));
        assert_eq!(normalize("/a/../b").as_deref(), Some("b"));
        assert_eq!(normalize("../../x").as_deref(), Some("x"));
        assert_eq!(normalize("./"), None);
    }
}
