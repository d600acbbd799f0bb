//! OCI images built from a small DSL, written as OCI image layouts, pushed with skopeo.
//!
//! ```ignore
//! let img = Image::new()
//!     .layer(Layer::gzip().dir("etc", 0o755).file("etc/motd", b"hi\n", 0o644))
//!     .layer(Layer::zstd().whiteout("etc/motd"))
//!     .entrypoint(&["/bin/sh"]);
//! let info = img.write_oci_layout(&layout_dir, "v1")?;
//! push(&layout_dir, "v1", &registry.image_ref("test/img:v1"))?;
//! ```
//!
//! Tar entries are written in the order given, with GNU headers, mtime fixed at [`MTIME`],
//! uid/gid 0 unless given. Paths are relative to the image root (a leading `/` is dropped).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::{describe_output, sha256_digest};

/// mtime of every tar entry.
pub const MTIME: u64 = 1_700_000_000;
/// `created` of configs and history entries.
pub const CREATED: &str = "2023-11-14T22:13:20Z";

pub const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    /// Several gzip members concatenated, as `cat a.gz b.gz`, pigz and eStargz write them: the
    /// tar is cut at arbitrary offsets into three members, then an empty member with an extra
    /// field follows, like eStargz's footer.
    GzipMultiMember,
    Zstd,
    /// As zstd:chunked writes it: several zstd frames, with skippable frames between them and
    /// at the end (where zstd:chunked keeps its manifest and footer).
    ZstdChunked,
    None,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip | Compression::GzipMultiMember => MT_LAYER_GZIP,
            Compression::Zstd | Compression::ZstdChunked => MT_LAYER_ZSTD,
            Compression::None => MT_LAYER_TAR,
        }
    }

    pub fn compress(self, data: &[u8]) -> Result<Vec<u8>> {
        let gzip = |part: &[u8]| -> Result<Vec<u8>> {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(part)?;
            Ok(enc.finish()?)
        };
        let thirds = [0, data.len() / 3, data.len() * 2 / 3, data.len()];
        Ok(match self {
            Compression::Gzip => gzip(data)?,
            Compression::GzipMultiMember => {
                let mut out = Vec::new();
                for part in thirds.windows(2) {
                    out.extend(gzip(&data[part[0]..part[1]])?);
                }
                let footer = flate2::GzBuilder::new()
                    .extra(&b"SG\x10\x00sysctr-test-foot"[..])
                    .write(Vec::new(), flate2::Compression::default());
                out.extend(footer.finish()?);
                out
            }
            Compression::Zstd => zstd::encode_all(data, 3)?,
            Compression::ZstdChunked => {
                let mut out = Vec::new();
                for (i, part) in thirds.windows(2).enumerate() {
                    out.extend(zstd::encode_all(&data[part[0]..part[1]], 3)?);
                    out.extend(zstd_skippable_frame(i as u8, format!("chunk {i}").as_bytes()));
                }
                out.extend(zstd_skippable_frame(0xf, b"manifest and footer"));
                out
            }
            Compression::None => data.to_vec(),
        })
    }
}

/// A zstd skippable frame (magic 0x184D2A5n, little-endian length, payload): decoders skip it.
fn zstd_skippable_frame(nibble: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = (0x184D_2A50u32 | u32::from(nibble & 0xf)).to_le_bytes().to_vec();
    frame.extend((payload.len() as u32).to_le_bytes());
    frame.extend(payload);
    frame
}

/// How a layer's tar spells what does not fit a classic header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TarFormat {
    /// GNU headers; names and link targets over 100 bytes as GNU `L`/`K` members, large ids in
    /// base-256.
    Gnu,
    /// ustar headers; names and link targets over 100 bytes as PAX `path`/`linkpath` records
    /// (the header itself holds the first 100 bytes only), ids over 2097151 as `uid`/`gid`.
    Pax,
}

#[derive(Clone, Debug)]
enum Item {
    Dir {
        path: String,
        mode: u32,
        uid: u64,
        gid: u64,
    },
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
        uid: u64,
        gid: u64,
    },
    HostFile {
        path: String,
        host: PathBuf,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
    Hardlink {
        path: String,
        target: String,
    },
    Fifo {
        path: String,
        mode: u32,
    },
    CharDevice {
        path: String,
        major: u32,
        minor: u32,
        mode: u32,
    },
    /// A file made sparse on disk, archived by GNU `tar --sparse` (a GNU `S` member).
    GnuSparse {
        path: String,
        size: u64,
        chunks: Vec<(u64, Vec<u8>)>,
        mode: u32,
    },
    /// A PAX global header (`g`) with these records.
    GlobalHeader {
        records: Vec<(String, String)>,
    },
}

/// One layer: tar entries in the order given, and how the blob is compressed.
#[derive(Clone, Debug)]
pub struct Layer {
    items: Vec<Item>,
    /// Extended attributes of the item at each index, written as PAX `SCHILY.xattr.*` records.
    xattrs: BTreeMap<usize, Vec<(String, Vec<u8>)>>,
    pub format: TarFormat,
    pub compression: Compression,
    /// `created_by` of this layer's history entry.
    pub created_by: String,
}

/// A layer as written: the uncompressed tar, the blob, and their digests.
#[derive(Clone, Debug)]
pub struct BuiltLayer {
    pub tar: Vec<u8>,
    pub blob: Vec<u8>,
    /// sha256 of the uncompressed tar (`sha256:HEX`).
    pub diff_id: String,
    /// sha256 of the blob (`sha256:HEX`).
    pub digest: String,
    pub media_type: &'static str,
}

fn rel(path: &str) -> String {
    path.trim_start_matches('/').to_string()
}

/// `a/b/name` → `a/b/<prefix>name`
fn with_name_prefix(path: &str, prefix: &str) -> String {
    let p = rel(path);
    let p = p.trim_end_matches('/');
    match p.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/{prefix}{name}"),
        None => format!("{prefix}{p}"),
    }
}

/// Copies as much of `text` as fits into a header field (no NUL needed when full).
fn fill(field: &mut [u8], text: &str) {
    field.fill(0);
    let n = text.len().min(field.len());
    field[..n].copy_from_slice(&text.as_bytes()[..n]);
}

/// One PAX record, `"LEN KEY=VALUE\n"`, where LEN counts the whole record, itself included.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = 3 + key.len() + value.len(); // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut record = format!("{len} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

/// A PAX extended header member: `x` (for the next member) or `g` (global).
fn append_pax(b: &mut tar::Builder<Vec<u8>>, kind: u8, records: &[(String, Vec<u8>)]) -> Result<()> {
    let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_path(if kind == b'g' { "pax_global_header" } else { "PaxHeaders/entry" })?;
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, &data[..])?;
    Ok(())
}

/// The member GNU `tar --sparse --format=gnu` writes for a file of `size` bytes with data only
/// at `chunks`, owned 0:0 with `mode`, without the end-of-archive blocks.
fn gnu_sparse_member(path: &str, size: u64, chunks: &[(u64, Vec<u8>)], mode: u32) -> Result<Vec<u8>> {
    use std::os::unix::fs::{FileExt, PermissionsExt};
    let dir = tempfile::Builder::new().prefix("sysctr-sparse.").tempdir_in("/var/tmp")?;
    let file_path = dir.path().join(path);
    if let Some(parent) = file_path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = std::fs::File::create(&file_path)?;
    file.set_len(size)?;
    for (offset, data) in chunks {
        file.write_all_at(data, *offset)?;
    }
    file.sync_all()?;
    std::fs::set_permissions(&file_path, std::fs::Permissions::from_mode(mode))?;
    let out = Command::new("tar")
        .args([
            "--create",
            "--file=-",
            "--sparse",
            "--format=gnu",
            "--blocking-factor=1",
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            &format!("--mtime=@{MTIME}"),
            "-C",
        ])
        .arg(dir.path())
        .arg(path)
        .output()
        .context("running GNU tar")?;
    if !out.status.success() {
        bail!("tar --sparse failed: {}", describe_output(&out));
    }
    let mut member = out.stdout;
    // With a blocking factor of 1 the archive ends with exactly two zero blocks.
    let end = member.len().checked_sub(1024).context("tar output too short")?;
    if member[end..].iter().any(|&b| b != 0) || end % 512 != 0 {
        bail!("unexpected end of GNU tar output");
    }
    member.truncate(end);
    if member.get(156) != Some(&b'S') {
        bail!("GNU tar did not write {path} as a sparse member");
    }
    Ok(member)
}

impl Layer {
    pub fn new(compression: Compression) -> Layer {
        Layer {
            items: Vec::new(),
            xattrs: BTreeMap::new(),
            format: TarFormat::Gnu,
            compression,
            created_by: "sysctr test layer".to_string(),
        }
    }
    pub fn gzip() -> Layer {
        Layer::new(Compression::Gzip)
    }
    pub fn zstd() -> Layer {
        Layer::new(Compression::Zstd)
    }
    pub fn uncompressed() -> Layer {
        Layer::new(Compression::None)
    }

    pub fn compression(mut self, c: Compression) -> Self {
        self.compression = c;
        self
    }

    /// Writes the layer with ustar headers and PAX records instead of GNU headers.
    pub fn pax(mut self) -> Self {
        self.format = TarFormat::Pax;
        self
    }

    pub fn created_by(mut self, s: &str) -> Self {
        self.created_by = s.to_string();
        self
    }

    pub fn dir(self, path: &str, mode: u32) -> Self {
        self.dir_owned(path, mode, 0, 0)
    }

    pub fn dir_owned(mut self, path: &str, mode: u32, uid: u64, gid: u64) -> Self {
        self.items.push(Item::Dir { path: rel(path), mode, uid, gid });
        self
    }

    pub fn file(self, path: &str, contents: impl AsRef<[u8]>, mode: u32) -> Self {
        self.file_owned(path, contents, mode, 0, 0)
    }

    pub fn file_owned(mut self, path: &str, contents: impl AsRef<[u8]>, mode: u32, uid: u64, gid: u64) -> Self {
        self.items.push(Item::File { path: rel(path), data: contents.as_ref().to_vec(), mode, uid, gid });
        self
    }

    /// A regular file whose content is read from `host_path` on this machine when the layer is
    /// built (e.g. `/bin/busybox`). Owned by 0:0.
    pub fn host_file(mut self, path: &str, host_path: impl AsRef<Path>, mode: u32) -> Self {
        self.items.push(Item::HostFile { path: rel(path), host: host_path.as_ref().to_path_buf(), mode });
        self
    }

    /// A symlink; `target` is stored as given (relative or absolute).
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.items.push(Item::Symlink { path: rel(path), target: target.to_string() });
        self
    }

    /// A hard link to `target`, a path in the image (an earlier entry of this layer or a lower one).
    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        self.items.push(Item::Hardlink { path: rel(path), target: rel(target) });
        self
    }

    /// Deletes `path` of the lower layers: adds `dir/.wh.name`.
    pub fn whiteout(mut self, path: &str) -> Self {
        self.items.push(Item::File {
            path: with_name_prefix(path, ".wh."),
            data: Vec::new(),
            mode: 0o644,
            uid: 0,
            gid: 0,
        });
        self
    }

    /// Hides everything the lower layers have in `dir`: adds `dir/.wh..wh..opq`.
    pub fn opaque(mut self, dir: &str) -> Self {
        let d = rel(dir);
        let d = d.trim_end_matches('/');
        self.items.push(Item::File {
            path: format!("{d}/.wh..wh..opq"),
            data: Vec::new(),
            mode: 0o644,
            uid: 0,
            gid: 0,
        });
        self
    }

    /// A FIFO, mode 0644.
    pub fn fifo(mut self, path: &str) -> Self {
        self.items.push(Item::Fifo { path: rel(path), mode: 0o644 });
        self
    }

    /// A character device node.
    pub fn char_device(mut self, path: &str, major: u32, minor: u32, mode: u32) -> Self {
        self.items.push(Item::CharDevice { path: rel(path), major, minor, mode });
        self
    }

    /// An extended attribute on the entry added last (a PAX `SCHILY.xattr.NAME` record).
    pub fn xattr(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        let index = self.items.len().checked_sub(1).expect("xattr() follows an entry");
        self.xattrs.entry(index).or_default().push((name.to_string(), value.as_ref().to_vec()));
        self
    }

    /// A file of `size` bytes holding `chunks` (offset, bytes) and holes elsewhere, archived by
    /// GNU `tar --sparse`: a GNU sparse (`S`) member, with extension blocks past 4 chunks.
    pub fn gnu_sparse_file(mut self, path: &str, size: u64, chunks: &[(u64, &[u8])], mode: u32) -> Self {
        self.items.push(Item::GnuSparse {
            path: rel(path),
            size,
            chunks: chunks.iter().map(|(o, d)| (*o, d.to_vec())).collect(),
            mode,
        });
        self
    }

    /// A PAX global header (`g` member), as `git archive` writes one with `comment=COMMIT`.
    pub fn pax_global_header(mut self, records: &[(&str, &str)]) -> Self {
        self.items.push(Item::GlobalHeader {
            records: records.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        });
        self
    }

    /// The same layer without its PAX global headers.
    pub fn without_global_headers(mut self) -> Self {
        let mut xattrs = BTreeMap::new();
        let mut items = Vec::new();
        for (index, item) in self.items.into_iter().enumerate() {
            if matches!(item, Item::GlobalHeader { .. }) {
                continue;
            }
            if let Some(x) = self.xattrs.remove(&index) {
                xattrs.insert(items.len(), x);
            }
            items.push(item);
        }
        self.items = items;
        self.xattrs = xattrs;
        self
    }

    /// The same layer with its GNU sparse files as regular files of the same content.
    pub fn with_sparse_files_expanded(mut self) -> Self {
        for item in &mut self.items {
            if let Item::GnuSparse { path, size, chunks, mode } = item {
                let mut data = vec![0u8; *size as usize];
                for (offset, bytes) in chunks.iter() {
                    let start = *offset as usize;
                    data[start..start + bytes.len()].copy_from_slice(bytes);
                }
                *item = Item::File { path: path.clone(), data, mode: *mode, uid: 0, gid: 0 };
            }
        }
        self
    }

    /// Appends one member: a PAX header with the xattrs (and, in PAX form, the names that do
    /// not fit the header), then the header and data. In GNU form tar-rs writes the `L`/`K`
    /// members of long names itself.
    fn append(
        &self,
        b: &mut tar::Builder<Vec<u8>>,
        mut h: tar::Header,
        path: &str,
        link: Option<&str>,
        data: &[u8],
        index: usize,
    ) -> Result<()> {
        let mut records: Vec<(String, Vec<u8>)> = self
            .xattrs
            .get(&index)
            .into_iter()
            .flatten()
            .map(|(name, value)| (format!("SCHILY.xattr.{name}"), value.clone()))
            .collect();
        match self.format {
            TarFormat::Gnu => {
                if !records.is_empty() {
                    append_pax(b, b'x', &records)?;
                }
                match link {
                    Some(target) => b.append_link(&mut h, path, target)?,
                    None => b.append_data(&mut h, path, data)?,
                }
            }
            TarFormat::Pax => {
                // Ids past what 7 octal digits hold go in PAX records, the header's fields 0.
                let (uid, gid) = (h.uid()?, h.gid()?);
                if uid > 0o7777777 {
                    records.push(("uid".into(), uid.to_string().into_bytes()));
                    h.set_uid(0);
                }
                if gid > 0o7777777 {
                    records.push(("gid".into(), gid.to_string().into_bytes()));
                    h.set_gid(0);
                }
                if path.len() > 100 {
                    records.push(("path".into(), path.as_bytes().to_vec()));
                    fill(&mut h.as_old_mut().name, path);
                } else {
                    h.set_path(path)?;
                }
                if let Some(target) = link {
                    if target.len() > 100 {
                        records.push(("linkpath".into(), target.as_bytes().to_vec()));
                        fill(&mut h.as_old_mut().linkname, target);
                    } else {
                        h.set_link_name(target)?;
                    }
                }
                if !records.is_empty() {
                    append_pax(b, b'x', &records)?;
                }
                h.set_cksum();
                b.append(&h, data)?;
            }
        }
        Ok(())
    }

    /// The uncompressed tar.
    pub fn tar(&self) -> Result<Vec<u8>> {
        use tar::{EntryType, Header};
        let mut b = tar::Builder::new(Vec::new());
        let format = self.format;
        let header = |kind: EntryType, mode: u32, uid: u64, gid: u64| {
            let mut h = match format {
                TarFormat::Gnu => Header::new_gnu(),
                TarFormat::Pax => Header::new_ustar(),
            };
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(uid);
            h.set_gid(gid);
            h.set_mtime(MTIME);
            h.set_size(0);
            h
        };
        for (index, item) in self.items.iter().enumerate() {
            match item {
                Item::Dir { path, mode, uid, gid } => {
                    let h = header(EntryType::Directory, *mode, *uid, *gid);
                    let p = format!("{}/", path.trim_end_matches('/'));
                    self.append(&mut b, h, &p, None, &[], index)?;
                }
                Item::File { path, data, mode, uid, gid } => {
                    let mut h = header(EntryType::Regular, *mode, *uid, *gid);
                    h.set_size(data.len() as u64);
                    self.append(&mut b, h, path, None, data, index)?;
                }
                Item::HostFile { path, host, mode } => {
                    let data =
                        std::fs::read(host).with_context(|| format!("reading {} for the layer", host.display()))?;
                    let mut h = header(EntryType::Regular, *mode, 0, 0);
                    h.set_size(data.len() as u64);
                    self.append(&mut b, h, path, None, &data, index)?;
                }
                Item::Symlink { path, target } => {
                    let h = header(EntryType::Symlink, 0o777, 0, 0);
                    self.append(&mut b, h, path, Some(target), &[], index)?;
                }
                Item::Hardlink { path, target } => {
                    let h = header(EntryType::Link, 0o644, 0, 0);
                    self.append(&mut b, h, path, Some(target), &[], index)?;
                }
                Item::Fifo { path, mode } => {
                    let h = header(EntryType::Fifo, *mode, 0, 0);
                    self.append(&mut b, h, path, None, &[], index)?;
                }
                Item::CharDevice { path, major, minor, mode } => {
                    let mut h = header(EntryType::Char, *mode, 0, 0);
                    h.set_device_major(*major)?;
                    h.set_device_minor(*minor)?;
                    self.append(&mut b, h, path, None, &[], index)?;
                }
                Item::GnuSparse { path, size, chunks, mode } => {
                    let member = gnu_sparse_member(path, *size, chunks, *mode)?;
                    b.get_mut().extend_from_slice(&member);
                }
                Item::GlobalHeader { records } => {
                    let records: Vec<(String, Vec<u8>)> =
                        records.iter().map(|(k, v)| (k.clone(), v.as_bytes().to_vec())).collect();
                    append_pax(&mut b, b'g', &records)?;
                }
            }
        }
        Ok(b.into_inner()?)
    }

    pub fn build(&self) -> Result<BuiltLayer> {
        let tar = self.tar()?;
        let blob = self.compression.compress(&tar)?;
        Ok(BuiltLayer {
            diff_id: sha256_digest(&tar),
            digest: sha256_digest(&blob),
            media_type: self.compression.media_type(),
            tar,
            blob,
        })
    }
}

/// The image config (the parts tests care about) and platform.
#[derive(Clone, Debug)]
pub struct ImageConfig {
    pub architecture: String,
    pub os: String,
    pub variant: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub created: String,
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
            entrypoint: None,
            cmd: None,
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            working_dir: None,
            user: None,
            labels: BTreeMap::new(),
            created: CREATED.into(),
        }
    }
}

/// An image: config + layers (bottom first).
#[derive(Clone, Debug, Default)]
pub struct Image {
    pub config: ImageConfig,
    pub layers: Vec<Layer>,
}

/// What [`Image::write_oci_layout`] wrote. Digests are `sha256:HEX`.
#[derive(Clone, Debug)]
pub struct ImageInfo {
    pub manifest_digest: String,
    /// The manifest's exact bytes.
    pub manifest: Vec<u8>,
    /// The image id.
    pub config_digest: String,
    pub config: Vec<u8>,
    /// Blob digests, bottom layer first.
    pub layer_digests: Vec<String>,
    /// sha256 of the uncompressed tars, bottom layer first.
    pub diff_ids: Vec<String>,
    pub layer_media_types: Vec<String>,
    pub architecture: String,
    pub os: String,
    pub variant: Option<String>,
}

/// What [`write_oci_index_layout`] wrote.
#[derive(Clone, Debug)]
pub struct IndexInfo {
    pub index_digest: String,
    /// The image index's exact bytes.
    pub index: Vec<u8>,
    /// One per platform, in the index's order.
    pub manifests: Vec<ImageInfo>,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl Image {
    pub fn new() -> Image {
        Image::default()
    }

    pub fn layer(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }

    pub fn entrypoint(mut self, argv: &[&str]) -> Self {
        self.config.entrypoint = Some(strings(argv));
        self
    }

    pub fn cmd(mut self, argv: &[&str]) -> Self {
        self.config.cmd = Some(strings(argv));
        self
    }

    /// Sets `KEY=VALUE` in Env (replacing an earlier value of KEY).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        let prefix = format!("{key}=");
        self.config.env.retain(|e| !e.starts_with(&prefix));
        self.config.env.push(format!("{key}={value}"));
        self
    }

    pub fn working_dir(mut self, dir: &str) -> Self {
        self.config.working_dir = Some(dir.to_string());
        self
    }

    pub fn user(mut self, user: &str) -> Self {
        self.config.user = Some(user.to_string());
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.config.labels.insert(key.to_string(), value.to_string());
        self
    }

    /// Sets os/architecture (default linux/amd64) and clears the variant.
    pub fn platform(mut self, os: &str, architecture: &str) -> Self {
        self.config.os = os.to_string();
        self.config.architecture = architecture.to_string();
        self.config.variant = None;
        self
    }

    pub fn variant(mut self, variant: &str) -> Self {
        self.config.variant = Some(variant.to_string());
        self
    }

    /// The config JSON for these diff_ids.
    pub fn config_json(&self, diff_ids: &[String]) -> Value {
        let c = &self.config;
        let mut cfg = serde_json::Map::new();
        if !c.env.is_empty() {
            cfg.insert("Env".into(), json!(c.env));
        }
        if let Some(e) = &c.entrypoint {
            cfg.insert("Entrypoint".into(), json!(e));
        }
        if let Some(e) = &c.cmd {
            cfg.insert("Cmd".into(), json!(e));
        }
        if let Some(w) = &c.working_dir {
            cfg.insert("WorkingDir".into(), json!(w));
        }
        if let Some(u) = &c.user {
            cfg.insert("User".into(), json!(u));
        }
        if !c.labels.is_empty() {
            cfg.insert("Labels".into(), json!(c.labels));
        }
        let history: Vec<Value> =
            self.layers.iter().map(|l| json!({"created": c.created, "created_by": l.created_by})).collect();
        let mut v = json!({
            "created": c.created,
            "architecture": c.architecture,
            "os": c.os,
            "config": Value::Object(cfg),
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        });
        if let Some(var) = &c.variant {
            v["variant"] = json!(var);
        }
        v
    }

    /// Writes the blobs of this image into `dir` (an OCI layout, created if needed) without
    /// touching index.json. Returns the info; the manifest itself is a blob too.
    pub fn write_blobs(&self, dir: &Path) -> Result<ImageInfo> {
        init_layout(dir)?;
        let mut layers = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let built = l.build().with_context(|| format!("building layer {i}"))?;
            write_blob(dir, &built.blob)?;
            layers.push(built);
        }
        let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.clone()).collect();
        let config = serde_json::to_vec(&self.config_json(&diff_ids))?;
        let config_digest = write_blob(dir, &config)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": layers.iter().map(|l| json!({
                "mediaType": l.media_type, "digest": l.digest, "size": l.blob.len(),
            })).collect::<Vec<_>>(),
        });
        let manifest = serde_json::to_vec(&manifest)?;
        let manifest_digest = write_blob(dir, &manifest)?;
        Ok(ImageInfo {
            manifest_digest,
            manifest,
            config_digest,
            config,
            layer_digests: layers.iter().map(|l| l.digest.clone()).collect(),
            diff_ids,
            layer_media_types: layers.iter().map(|l| l.media_type.to_string()).collect(),
            architecture: self.config.architecture.clone(),
            os: self.config.os.clone(),
            variant: self.config.variant.clone(),
        })
    }

    /// Writes the image into the OCI image layout `dir` (created if needed) under `tag`
    /// (index.json entry annotated `org.opencontainers.image.ref.name=tag`; an existing entry
    /// with that tag is replaced, other tags are kept).
    pub fn write_oci_layout(&self, dir: &Path, tag: &str) -> Result<ImageInfo> {
        let info = self.write_blobs(dir)?;
        set_index_entry(
            dir,
            tag,
            json!({
                "mediaType": MT_MANIFEST,
                "digest": info.manifest_digest,
                "size": info.manifest.len(),
                "annotations": {REF_NAME: tag},
            }),
        )?;
        Ok(info)
    }
}

fn platform_json(info: &ImageInfo) -> Value {
    let mut p = json!({"architecture": info.architecture, "os": info.os});
    if let Some(v) = &info.variant {
        p["variant"] = json!(v);
    }
    p
}

/// Writes a multi-platform image: each image's manifest, and an image index listing them with
/// their platforms (from each image's os/architecture/variant), tagged `tag` in `dir`'s
/// index.json. Push it with [`push_all`].
pub fn write_oci_index_layout(dir: &Path, tag: &str, images: &[&Image]) -> Result<IndexInfo> {
    let mut manifests = Vec::new();
    for img in images {
        manifests.push(img.write_blobs(dir)?);
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": manifests.iter().map(|m| json!({
            "mediaType": MT_MANIFEST,
            "digest": m.manifest_digest,
            "size": m.manifest.len(),
            "platform": platform_json(m),
        })).collect::<Vec<_>>(),
    });
    let index = serde_json::to_vec(&index)?;
    let index_digest = write_blob(dir, &index)?;
    set_index_entry(
        dir,
        tag,
        json!({
            "mediaType": MT_INDEX,
            "digest": index_digest,
            "size": index.len(),
            "annotations": {REF_NAME: tag},
        }),
    )?;
    Ok(IndexInfo { index_digest, index, manifests })
}

fn init_layout(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("blobs/sha256")).with_context(|| format!("creating {}", dir.display()))?;
    let layout = dir.join("oci-layout");
    if !layout.exists() {
        std::fs::write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    }
    if !dir.join("index.json").exists() {
        let index = json!({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": []});
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    }
    Ok(())
}

/// Stores `data` as a blob of the layout; returns its digest.
pub fn write_blob(dir: &Path, data: &[u8]) -> Result<String> {
    let digest = sha256_digest(data);
    let path = blob_path(dir, &digest);
    std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
    Ok(digest)
}

/// Path of a blob in an OCI layout.
pub fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    dir.join("blobs/sha256").join(hex)
}

fn set_index_entry(dir: &Path, tag: &str, entry: Value) -> Result<()> {
    let path = dir.join("index.json");
    let mut index: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    let list = index["manifests"].as_array_mut().context("index.json without manifests")?;
    list.retain(|m| m["annotations"][REF_NAME].as_str() != Some(tag));
    list.push(entry);
    std::fs::write(&path, serde_json::to_vec(&index)?)?;
    Ok(())
}

fn docker_ref(dest: &str) -> String {
    if dest.starts_with("docker://") {
        dest.to_string()
    } else {
        format!("docker://{dest}")
    }
}

/// `skopeo copy` of `oci:layout_dir:tag` to `dest`, with `extra` options and `env`.
pub fn skopeo_copy_with(extra: &[&str], env: &[(&str, &Path)], layout_dir: &Path, tag: &str, dest: &str) -> Result<()> {
    let src = format!("oci:{}:{}", layout_dir.display(), tag);
    let dst = docker_ref(dest);
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests"])
        .args(extra)
        .envs(env.iter().copied())
        .arg(&src)
        .arg(&dst)
        .output()
        .context("running skopeo")?;
    if !out.status.success() {
        bail!("skopeo copy {src} {dst} failed: {}", describe_output(&out));
    }
    Ok(())
}

/// Pushes `oci:layout_dir:tag` to `dest` ("127.0.0.1:PORT/REPO:TAG", `docker://` optional) with
/// skopeo, keeping blobs and manifest byte for byte (`--preserve-digests`: zstd and uncompressed
/// layers stay as they are; the manifest digest in the registry equals the layout's).
pub fn push(layout_dir: &Path, tag: &str, dest: &str) -> Result<()> {
    skopeo_copy_with(&[], &[], layout_dir, tag, dest)
}

/// Like [`push`], to a registry that wants credentials (`USER:PASSWORD`).
pub fn push_with_credentials(layout_dir: &Path, tag: &str, dest: &str, credentials: &str) -> Result<()> {
    skopeo_copy_with(&["--dest-creds", credentials], &[], layout_dir, tag, dest)
}

/// Like [`push`], for a multi-platform tag written by [`write_oci_index_layout`]: copies the
/// index and every platform's image (`skopeo copy --all`).
pub fn push_all(layout_dir: &Path, tag: &str, dest: &str) -> Result<()> {
    skopeo_copy_with(&["--all"], &[], layout_dir, tag, dest)
}

/// `skopeo inspect --raw` of a registry image: the manifest bytes as the registry serves them.
pub fn inspect_raw(dest: &str) -> Result<Vec<u8>> {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(docker_ref(dest))
        .output()
        .context("running skopeo")?;
    if !out.status.success() {
        bail!("skopeo inspect --raw {dest} failed: {}", describe_output(&out));
    }
    Ok(out.stdout)
}
