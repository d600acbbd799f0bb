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
    Zstd,
    None,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => MT_LAYER_GZIP,
            Compression::Zstd => MT_LAYER_ZSTD,
            Compression::None => MT_LAYER_TAR,
        }
    }

    pub fn compress(self, data: &[u8]) -> Result<Vec<u8>> {
        Ok(match self {
            Compression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(data)?;
                enc.finish()?
            }
            Compression::Zstd => zstd::encode_all(data, 3)?,
            Compression::None => data.to_vec(),
        })
    }
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
}

/// One layer: tar entries in the order given, and how the blob is compressed.
#[derive(Clone, Debug)]
pub struct Layer {
    items: Vec<Item>,
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

impl Layer {
    pub fn new(compression: Compression) -> Layer {
        Layer {
            items: Vec::new(),
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

    pub fn created_by(mut self, s: &str) -> Self {
        self.created_by = s.to_string();
        self
    }

    pub fn dir(self, path: &str, mode: u32) -> Self {
        self.dir_owned(path, mode, 0, 0)
    }

    pub fn dir_owned(mut self, path: &str, mode: u32, uid: u64, gid: u64) -> Self {
        self.items.push(Item::Dir {
            path: rel(path),
            mode,
            uid,
            gid,
        });
        self
    }

    pub fn file(self, path: &str, contents: impl AsRef<[u8]>, mode: u32) -> Self {
        self.file_owned(path, contents, mode, 0, 0)
    }

    pub fn file_owned(
        mut self,
        path: &str,
        contents: impl AsRef<[u8]>,
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> Self {
        self.items.push(Item::File {
            path: rel(path),
            data: contents.as_ref().to_vec(),
            mode,
            uid,
            gid,
        });
        self
    }

    /// A regular file whose content is read from `host_path` on this machine when the layer is
    /// built (e.g. `/bin/busybox`). Owned by 0:0.
    pub fn host_file(mut self, path: &str, host_path: impl AsRef<Path>, mode: u32) -> Self {
        self.items.push(Item::HostFile {
            path: rel(path),
            host: host_path.as_ref().to_path_buf(),
            mode,
        });
        self
    }

    /// A symlink; `target` is stored as given (relative or absolute).
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.items.push(Item::Symlink {
            path: rel(path),
            target: target.to_string(),
        });
        self
    }

    /// A hard link to `target`, a path in the image (an earlier entry of this layer or a lower one).
    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        self.items.push(Item::Hardlink {
            path: rel(path),
            target: rel(target),
        });
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
        self.items.push(Item::Fifo {
            path: rel(path),
            mode: 0o644,
        });
        self
    }

    /// A character device node.
    pub fn char_device(mut self, path: &str, major: u32, minor: u32, mode: u32) -> Self {
        self.items.push(Item::CharDevice {
            path: rel(path),
            major,
            minor,
            mode,
        });
        self
    }

    /// The uncompressed tar.
    pub fn tar(&self) -> Result<Vec<u8>> {
        use tar::{EntryType, Header};
        let mut b = tar::Builder::new(Vec::new());
        let header = |kind: EntryType, mode: u32, uid: u64, gid: u64| {
            let mut h = Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(uid);
            h.set_gid(gid);
            h.set_mtime(MTIME);
            h.set_size(0);
            h
        };
        for item in &self.items {
            match item {
                Item::Dir {
                    path,
                    mode,
                    uid,
                    gid,
                } => {
                    let mut h = header(EntryType::Directory, *mode, *uid, *gid);
                    let p = format!("{}/", path.trim_end_matches('/'));
                    b.append_data(&mut h, p, std::io::empty())?;
                }
                Item::File {
                    path,
                    data,
                    mode,
                    uid,
                    gid,
                } => {
                    let mut h = header(EntryType::Regular, *mode, *uid, *gid);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, &data[..])?;
                }
                Item::HostFile { path, host, mode } => {
                    let data = std::fs::read(host)
                        .with_context(|| format!("reading {} for the layer", host.display()))?;
                    let mut h = header(EntryType::Regular, *mode, 0, 0);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, &data[..])?;
                }
                Item::Symlink { path, target } => {
                    let mut h = header(EntryType::Symlink, 0o777, 0, 0);
                    b.append_link(&mut h, path, target)?;
                }
                Item::Hardlink { path, target } => {
                    let mut h = header(EntryType::Link, 0o644, 0, 0);
                    b.append_link(&mut h, path, target)?;
                }
                Item::Fifo { path, mode } => {
                    let mut h = header(EntryType::Fifo, *mode, 0, 0);
                    b.append_data(&mut h, path, std::io::empty())?;
                }
                Item::CharDevice {
                    path,
                    major,
                    minor,
                    mode,
                } => {
                    let mut h = header(EntryType::Char, *mode, 0, 0);
                    h.set_device_major(*major)?;
                    h.set_device_minor(*minor)?;
                    b.append_data(&mut h, path, std::io::empty())?;
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
        self.config
            .labels
            .insert(key.to_string(), value.to_string());
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
        let history: Vec<Value> = self
            .layers
            .iter()
            .map(|l| json!({"created": c.created, "created_by": l.created_by}))
            .collect();
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
    Ok(IndexInfo {
        index_digest,
        index,
        manifests,
    })
}

fn init_layout(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("blobs/sha256"))
        .with_context(|| format!("creating {}", dir.display()))?;
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
    let list = index["manifests"]
        .as_array_mut()
        .context("index.json without manifests")?;
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

fn skopeo_copy(extra: &[&str], layout_dir: &Path, tag: &str, dest: &str) -> Result<()> {
    let src = format!("oci:{}:{}", layout_dir.display(), tag);
    let dst = docker_ref(dest);
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--preserve-digests",
        ])
        .args(extra)
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
    skopeo_copy(&[], layout_dir, tag, dest)
}

/// Like [`push`], for a multi-platform tag written by [`write_oci_index_layout`]: copies the
/// index and every platform's image (`skopeo copy --all`).
pub fn push_all(layout_dir: &Path, tag: &str, dest: &str) -> Result<()> {
    skopeo_copy(&["--all"], layout_dir, tag, dest)
}

/// `skopeo inspect --raw` of a registry image: the manifest bytes as the registry serves them.
pub fn inspect_raw(dest: &str) -> Result<Vec<u8>> {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(docker_ref(dest))
        .output()
        .context("running skopeo")?;
    if !out.status.success() {
        bail!(
            "skopeo inspect --raw {dest} failed: {}",
            describe_output(&out)
        );
    }
    Ok(out.stdout)
}
