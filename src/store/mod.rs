//! The OSTree repository that holds every pulled image, deduplicated file by file.
//!
//! On-disk contract (`STORAGE/repo`, mode `bare`, so checkouts are hard links that keep owners):
//! - `ociimage/<layer digest hex>`: one commit per layer. Its tree is the layer's tar as it is,
//!   whiteout files (`.wh.NAME`, `.wh..wh..opq`) included; they are applied when the layers are
//!   flattened. Metadata: `sysctr.diff-id`, `sysctr.unpacked-size`, `sysctr.skipped` (see
//!   below), `sysctr.implied-dirs` (the directories the layer has no tar entry for, which keep
//!   the metadata of the layers below; see `import` and `merge`).
//! - `ociimage/<escaped reference>`: one commit per image, whose tree is the image's root
//!   filesystem: its layers flattened with the OCI whiteout rules (see `merge`), sharing every
//!   file object with the layer commits. Metadata: `docker.manifest` (the raw manifest),
//!   `sysctr.manifest-digest`, `sysctr.config` (the raw image config), `sysctr.reference` and
//!   `sysctr.fifos`, so that listing images never needs the network. Characters outside
//!   `[A-Za-z0-9.-]` are escaped as `_%02X`, as the `atomic` tool did.
//!
//! Import is two-phase: each layer is written in its own transaction with no ref (and no fsync),
//! while its blob digest and diff_id are checked to the last byte; only when every layer has been
//! verified are all refs written in one synced transaction ([`Store::publish`]). A corrupt layer
//! therefore never gets a ref, and `prune` removes its unreferenced objects.
//!
//! Special files: OSTree can store regular files, directories and symlinks only.
//! - FIFOs are recorded in `sysctr.fifos` metadata (path, mode, uid, gid): per layer, then for
//!   the flattened image after whiteouts; they are created at checkout.
//! - Device nodes are not stored: they are listed in `sysctr.skipped` and reported at pull. runc
//!   creates the container's `/dev` from `config.json`, and its device cgroup would deny
//!   any other node anyway.
//! - Sockets cannot appear in a tar stream.

mod checkout;
mod import;
mod limits;
mod merge;
mod objects;
mod share;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use ostree::gio;
use ostree::gio::prelude::*;
use ostree::glib;
use ostree::glib::object::Cast;

use crate::digest::Digest;

pub use checkout::checkout_image;
pub use import::{import_layer, Compression, ImportedLayer, LayerToImport};
pub use limits::{parse_size, LayerLimits, Limit, LimitExceeded};

const REF_PREFIX: &str = "ociimage/";
const FIFOS_KEY: &str = "sysctr.fifos";
const IMPLIED_DIRS_KEY: &str = "sysctr.implied-dirs";

/// A FIFO of a layer or of an image, created at checkout: OSTree cannot store one. Kept in
/// commit metadata as `(path, mode, uid, gid)`, the path relative, without a leading `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FifoRecord {
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl FifoRecord {
    /// The FIFOs recorded in a commit's metadata (none for a commit without the key).
    fn read_all(meta: &glib::VariantDict) -> Vec<FifoRecord> {
        let stored: Vec<(String, u32, u32, u32)> = meta.lookup(FIFOS_KEY).ok().flatten().unwrap_or_default();
        stored.into_iter().map(|(path, mode, uid, gid)| FifoRecord { path, mode, uid, gid }).collect()
    }

    fn write_all(meta: &glib::VariantDict, fifos: &[FifoRecord]) {
        let stored: Vec<(String, u32, u32, u32)> =
            fifos.iter().map(|f| (f.path.clone(), f.mode, f.uid, f.gid)).collect();
        meta.insert(FIFOS_KEY, stored);
    }
}

/// What [`Store::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pruned {
    /// Layer refs no image used any more.
    pub layers: usize,
    pub objects: u64,
    pub bytes: u64,
}

/// Metadata of an image as recorded in its image commit.
#[derive(Debug, Clone)]
pub struct StoredImage {
    /// The OSTree ref of the image commit.
    pub ostree_ref: String,
    pub commit: String,
    pub reference: String,
    pub manifest_digest: String,
    pub manifest_raw: Vec<u8>,
    pub config_raw: Vec<u8>,
}

impl StoredImage {
    /// The image id: the hex digest of its config, as container tools show it.
    pub fn image_id(&self) -> Result<String> {
        let manifest: oci_spec::image::ImageManifest = serde_json::from_slice(&self.manifest_raw)
            .with_context(|| format!("reading the stored manifest of {}", self.reference))?;
        Ok(Digest::parse(manifest.config().digest().as_ref())?.hex().to_string())
    }
}

/// The repository under a storage directory.
pub struct Store {
    repo: ostree::Repo,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens the repository at `path`, creating it (mode `bare`) if it does not exist yet.
    pub fn open_or_create(path: &Path) -> Result<Store> {
        let repo = open_repo(path, true)?;
        Ok(Store { repo, path: path.to_path_buf() })
    }

    /// Opens an existing repository; fails if there is none.
    pub fn open(path: &Path) -> Result<Store> {
        let repo = open_repo(path, false)?;
        Ok(Store { repo, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The commit of an already imported layer, if any.
    pub fn layer_commit(&self, digest: &Digest) -> Result<Option<String>> {
        resolve(&self.repo, &layer_ref(digest))
    }

    /// Writes the image commit and every ref in one synced transaction.
    pub fn publish(&self, image: &ImageToPublish, layers: &[(Digest, String)]) -> Result<String> {
        let repo = &self.repo;
        repo.set_disable_fsync(false);
        repo.prepare_transaction(gio::Cancellable::NONE).context("starting an OSTree transaction")?;
        let result = (|| -> Result<String> {
            let commit = write_image_commit(repo, image, layers)?;
            for (digest, layer_commit) in layers {
                repo.transaction_set_ref(None, &layer_ref(digest), Some(layer_commit));
            }
            repo.transaction_set_ref(None, &image_ref(image.reference), Some(&commit));
            repo.commit_transaction(gio::Cancellable::NONE).context("committing the image refs")?;
            Ok(commit)
        })();
        if result.is_err() {
            let _ = repo.abort_transaction(gio::Cancellable::NONE);
        }
        result
    }

    /// The image stored under `reference` (canonical text), if it was pulled.
    pub fn image(&self, reference: &str) -> Result<Option<StoredImage>> {
        let ostree_ref = image_ref(reference);
        match resolve(&self.repo, &ostree_ref)? {
            Some(commit) => read_image(&self.repo, &ostree_ref, &commit).map(Some),
            None => Ok(None),
        }
    }

    /// Every stored image, sorted by reference.
    pub fn images(&self) -> Result<Vec<StoredImage>> {
        let refs = self
            .repo
            .list_refs(Some(REF_PREFIX.trim_end_matches('/')), gio::Cancellable::NONE)
            .context("listing OSTree refs")?;
        let mut images = Vec::new();
        for (name, commit) in refs {
            let full = format!("{REF_PREFIX}{name}");
            if is_layer_ref_name(&name) {
                continue;
            }
            images.push(read_image(&self.repo, &full, &commit)?);
        }
        images.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(images)
    }

    /// A file of an image's root filesystem, read from the store (no checkout).
    pub fn read_image_file(&self, image_commit: &str, path: &str) -> Result<Option<Vec<u8>>> {
        let (root, _) = self
            .repo
            .read_commit(image_commit, gio::Cancellable::NONE)
            .with_context(|| format!("reading commit {image_commit}"))?;
        let file = root
            .resolve_relative_path(path.trim_start_matches('/'))
            .downcast::<ostree::RepoFile>()
            .map_err(|_| anyhow!("OSTree returned a file that is not a RepoFile"))?;
        // Reading through GIO's load_contents would ask the object stream for file info it does
        // not have; the content object is read from the repository instead.
        if file.query_file_type(gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS, gio::Cancellable::NONE)
            != gio::FileType::Regular
        {
            return Ok(None);
        }
        file.ensure_resolved().with_context(|| format!("resolving {path} in commit {image_commit}"))?;
        let (stream, _, _) = self
            .repo
            .load_file(&file.checksum(), gio::Cancellable::NONE)
            .with_context(|| format!("reading {path} from commit {image_commit}"))?;
        let mut bytes = Vec::new();
        if let Some(stream) = stream {
            std::io::Read::read_to_end(&mut stream.into_read(), &mut bytes)
                .with_context(|| format!("reading {path} from commit {image_commit}"))?;
        }
        Ok(Some(bytes))
    }

    /// Removes an image's ref; its objects go at the next [`Store::prune`].
    pub fn remove_image(&self, reference: &str) -> Result<bool> {
        let ostree_ref = image_ref(reference);
        if resolve(&self.repo, &ostree_ref)?.is_none() {
            return Ok(false);
        }
        self.repo
            .set_ref_immediate(None, &ostree_ref, None, gio::Cancellable::NONE)
            .with_context(|| format!("removing ref {ostree_ref}"))?;
        Ok(true)
    }

    /// Removes layer refs no image uses any more, then every object no ref reaches.
    pub fn prune(&self) -> Result<Pruned> {
        let mut used = std::collections::HashSet::new();
        for image in self.images()? {
            let manifest: oci_spec::image::ImageManifest = serde_json::from_slice(&image.manifest_raw)
                .with_context(|| format!("reading the stored manifest of {}", image.reference))?;
            for layer in manifest.layers() {
                used.insert(Digest::parse(layer.digest().as_ref())?.hex().to_string());
            }
        }
        let refs = self
            .repo
            .list_refs(Some(REF_PREFIX.trim_end_matches('/')), gio::Cancellable::NONE)
            .context("listing OSTree refs")?;
        let mut layers_removed = 0;
        for name in refs.keys() {
            if is_layer_ref_name(name) && !used.contains(name.as_str()) {
                self.repo
                    .set_ref_immediate(None, &format!("{REF_PREFIX}{name}"), None, gio::Cancellable::NONE)
                    .with_context(|| format!("removing layer ref {name}"))?;
                layers_removed += 1;
            }
        }
        let (_, objects, bytes) = self
            .repo
            .prune(ostree::RepoPruneFlags::REFS_ONLY, -1, gio::Cancellable::NONE)
            .context("pruning the OSTree repository")?;
        Ok(Pruned { layers: layers_removed, objects: u64::try_from(objects).unwrap_or_default(), bytes })
    }

    /// The unpacked size of a layer as recorded at import.
    pub fn layer_unpacked_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let Some(commit) = self.layer_commit(digest)? else { return Ok(None) };
        let meta = commit_metadata(&self.repo, &commit)?;
        Ok(meta.lookup::<u64>("sysctr.unpacked-size").ok().flatten())
    }
}

/// What [`Store::publish`] records about an image.
#[derive(Debug)]
pub struct ImageToPublish<'a> {
    pub reference: &'a str,
    pub manifest_digest: &'a str,
    pub manifest_raw: &'a [u8],
    pub config_raw: &'a [u8],
}

pub(crate) fn open_repo(path: &Path, create: bool) -> Result<ostree::Repo> {
    let repo = ostree::Repo::new_for_path(path);
    if path.join("config").exists() {
        repo.open(gio::Cancellable::NONE)
            .with_context(|| format!("opening the OSTree repository {}", path.display()))?;
    } else if create {
        std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        repo.create(ostree::RepoMode::Bare, gio::Cancellable::NONE)
            .with_context(|| format!("creating the OSTree repository {}", path.display()))?;
    } else {
        anyhow::bail!("no image store at {}: nothing has been pulled yet", path.display());
    }
    Ok(repo)
}

fn resolve(repo: &ostree::Repo, ostree_ref: &str) -> Result<Option<String>> {
    let rev = repo.resolve_rev(ostree_ref, true).with_context(|| format!("resolving OSTree ref {ostree_ref}"))?;
    Ok(rev.map(|r| r.to_string()))
}

pub(crate) fn layer_ref(digest: &Digest) -> String {
    format!("{REF_PREFIX}{}", digest.hex())
}

fn is_layer_ref_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The ref of an image: its reference with every character outside `[A-Za-z0-9.-]` escaped.
pub fn image_ref(reference: &str) -> String {
    let mut out = String::from(REF_PREFIX);
    for byte in reference.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'.' || byte == b'-' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("_{byte:02X}"));
        }
    }
    out
}

fn commit_metadata(repo: &ostree::Repo, commit: &str) -> Result<glib::VariantDict> {
    let (variant, _) = repo.load_commit(commit).with_context(|| format!("loading OSTree commit {commit}"))?;
    Ok(glib::VariantDict::new(Some(&variant.child_value(0))))
}

fn read_image(repo: &ostree::Repo, ostree_ref: &str, commit: &str) -> Result<StoredImage> {
    let meta = commit_metadata(repo, commit)?;
    let text = |key: &str| -> Result<String> {
        meta.lookup::<String>(key)
            .ok()
            .flatten()
            .ok_or_else(|| anyhow!("image commit {commit} ({ostree_ref}) has no '{key}' metadata"))
    };
    Ok(StoredImage {
        ostree_ref: ostree_ref.to_string(),
        commit: commit.to_string(),
        reference: text("sysctr.reference")?,
        manifest_digest: text("sysctr.manifest-digest")?,
        manifest_raw: text("docker.manifest")?.into_bytes(),
        config_raw: text("sysctr.config")?.into_bytes(),
    })
}

/// Writes the image commit: the layers flattened into one tree, plus the image's metadata.
fn write_image_commit(repo: &ostree::Repo, image: &ImageToPublish, layers: &[(Digest, String)]) -> Result<String> {
    let text = |bytes: &[u8], what: &str| {
        String::from_utf8(bytes.to_vec()).with_context(|| format!("the image {what} is not UTF-8"))
    };
    let mut tree: Option<ostree::MutableTree> = None;
    let mut fifos = merge::Fifos::new();
    for (digest, layer_commit) in layers {
        let upper = ostree::MutableTree::from_commit(repo, layer_commit)
            .with_context(|| format!("reading the tree of layer {digest}"))?;
        let layer_meta = commit_metadata(repo, layer_commit)?;
        let layer_fifos = FifoRecord::read_all(&layer_meta);
        let Some(tree) = &tree else {
            // Merged into nothing, the lowest layer is its own tree less its whiteouts: taken as
            // it is rather than copied, which would hold two trees of it in memory at once.
            merge::remove_whiteouts(&upper).with_context(|| format!("applying layer {digest}"))?;
            fifos.extend(layer_fifos.into_iter().map(|fifo| (fifo.path.clone(), fifo)));
            tree = Some(upper);
            continue;
        };
        // Absent from layers imported by older versions: none known, every directory then takes
        // the layer's metadata as before.
        let implied_dirs: Vec<String> = layer_meta.lookup(IMPLIED_DIRS_KEY).ok().flatten().unwrap_or_default();
        let upper =
            merge::Upper { tree: &upper, fifos: &layer_fifos, implied_dirs: &implied_dirs.into_iter().collect() };
        merge::merge_layer(tree, &upper, &mut fifos).with_context(|| format!("applying layer {digest}"))?;
    }
    let fifos: Vec<FifoRecord> = fifos.into_values().collect();
    let tree = match tree {
        Some(tree) => tree,
        None => {
            let empty = ostree::MutableTree::new();
            empty.set_metadata_checksum(&import::dirmeta_checksum(repo, 0, 0, 0o755, None)?);
            empty
        }
    };

    let meta = glib::VariantDict::new(None);
    meta.insert("sysctr.reference", image.reference);
    meta.insert("sysctr.manifest-digest", image.manifest_digest);
    meta.insert("docker.manifest", text(image.manifest_raw, "manifest")?);
    meta.insert("sysctr.config", text(image.config_raw, "config")?);
    FifoRecord::write_all(&meta, &fifos);
    let root = repo.write_mtree(&tree, gio::Cancellable::NONE).context("writing the image tree")?;
    let root =
        root.downcast::<ostree::RepoFile>().map_err(|_| anyhow!("OSTree returned a tree that is not a RepoFile"))?;
    let commit = repo
        .write_commit_with_time(None, Some(image.reference), None, Some(&meta.end()), &root, 0, gio::Cancellable::NONE)
        .context("writing the image commit")?;
    Ok(commit.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_owner;

    /// The owner of the layers' entries, as a tar header gives it. A checkout gives every file
    /// and directory the owner the image names, which only root may choose freely: layers
    /// that are checked out name no other owner, and give their root directory and every
    /// directory they hold, or the checkout would give them root's (`0755 0:0`).
    fn owner() -> (u64, u64) {
        let (uid, gid) = test_owner::ours();
        (uid.into(), gid.into())
    }

    /// An uncompressed layer with its root directory: (path, Some(content)) is a file, (path,
    /// None) a directory.
    fn layer(entries: &[(&str, Option<&str>)]) -> (Vec<u8>, LayerToImport) {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, content) in [("./", None)].iter().chain(entries) {
            let mut header = tar::Header::new_gnu();
            header.set_uid(owner().0);
            header.set_gid(owner().1);
            header.set_mtime(0);
            match content {
                Some(text) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(text.len() as u64);
                    header.set_mode(0o644);
                    builder.append_data(&mut header, path, text.as_bytes()).unwrap();
                }
                None => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    header.set_mode(0o755);
                    builder.append_data(&mut header, path, std::io::empty()).unwrap();
                }
            }
        }
        let bytes = builder.into_inner().unwrap();
        let digest = Digest::of_bytes(&bytes);
        (bytes, LayerToImport { digest: digest.clone(), diff_id: digest, compression: Compression::None })
    }

    /// Imports the layers into a fresh repository, publishes them as one image and checks it out.
    fn flatten(layers: &[&[(&str, Option<&str>)]]) -> (tempfile::TempDir, std::path::PathBuf) {
        flatten_blobs(layers.iter().map(|entries| layer(entries)).collect())
    }

    /// [`flatten`] for layer blobs as they are.
    fn flatten_blobs(layers: Vec<(Vec<u8>, LayerToImport)>) -> (tempfile::TempDir, std::path::PathBuf) {
        let (dir, store, commit) = publish_blobs(layers);
        let rootfs = dir.path().join("rootfs");
        checkout_image(&store, &commit, &rootfs).unwrap();
        (dir, rootfs)
    }

    /// Imports the layers into a fresh repository and publishes them as one image.
    fn publish_blobs(layers: Vec<(Vec<u8>, LayerToImport)>) -> (tempfile::TempDir, Store, String) {
        publish_blobs_within(layers, &LayerLimits::DEFAULT)
    }

    fn publish_blobs_within(
        layers: Vec<(Vec<u8>, LayerToImport)>,
        limits: &LayerLimits,
    ) -> (tempfile::TempDir, Store, String) {
        let dir = tempfile::Builder::new().prefix("sysctr-store.").tempdir_in("/var/tmp").unwrap();
        let store = Store::open_or_create(&dir.path().join("repo")).unwrap();
        let mut commits = Vec::new();
        for (bytes, to_import) in layers {
            let imported = import_layer(store.path(), &bytes[..], &to_import, limits).unwrap();
            commits.push((to_import.digest, imported.commit));
        }
        let image = ImageToPublish {
            reference: "test:latest",
            manifest_digest: "sha256:00",
            manifest_raw: b"{}",
            config_raw: b"{}",
        };
        let commit = store.publish(&image, &commits).unwrap();
        (dir, store, commit)
    }

    #[test]
    fn whiteouts_hide_lower_files_and_directories() {
        let (_dir, root) = flatten(&[
            &[("a", Some("a")), ("b", Some("b")), ("d", None), ("d/x", Some("x"))],
            &[(".wh.a", Some("")), (".wh.d", Some(""))],
        ]);
        assert!(!root.join("a").exists() && !root.join("d").exists());
        assert_eq!(std::fs::read_to_string(root.join("b")).unwrap(), "b");
        assert!(!root.join(".wh.a").exists(), "whiteout files must not reach the rootfs");
    }

    #[test]
    fn opaque_directory_keeps_only_its_own_layer() {
        let (_dir, root) = flatten(&[
            &[("o", None), ("o/lower", Some("1")), ("o/sub", None), ("o/sub/deep", Some("2"))],
            &[("o", None), ("o/.wh..wh..opq", Some("")), ("o/upper", Some("3"))],
        ]);
        let mut names: Vec<_> = std::fs::read_dir(root.join("o")).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["upper"]);
    }

    #[test]
    fn whiteout_never_hides_its_own_layer() {
        let (_dir, root) = flatten(&[
            &[("s", None), ("s/a", Some("a1"))],
            &[("s/a", Some("a2")), ("s/.wh.a", Some("")), ("s/.wh.b", Some("")), ("s/b", Some("b2"))],
        ]);
        assert_eq!(std::fs::read_to_string(root.join("s/a")).unwrap(), "a2");
        assert_eq!(std::fs::read_to_string(root.join("s/b")).unwrap(), "b2");
    }

    #[test]
    fn later_layer_changes_the_type_of_an_entry() {
        let (_dir, root) = flatten(&[
            &[("t", Some("file")), ("u", None), ("u/in", Some("x"))],
            &[("t", None), ("t/in", Some("y")), ("u", Some("now a file"))],
        ]);
        assert_eq!(std::fs::read_to_string(root.join("t/in")).unwrap(), "y");
        assert_eq!(std::fs::read_to_string(root.join("u")).unwrap(), "now a file");
    }

    /// A tar of directories `(path, mode, (uid, gid))` and files `(path, content)` (owned by
    /// [`owner`]), in that order.
    fn tar_with(dirs: &[(&str, u32, (u32, u32))], files: &[(&str, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, mode, (uid, gid)) in dirs {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(*mode);
            header.set_uid((*uid).into());
            header.set_gid((*gid).into());
            header.set_mtime(0);
            header.set_size(0);
            builder.append_data(&mut header, path, std::io::empty()).unwrap();
        }
        for (path, content) in files {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_uid(owner().0);
            header.set_gid(owner().1);
            header.set_mtime(0);
            header.set_size(content.len() as u64);
            builder.append_data(&mut header, path, content.as_bytes()).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn blob(tar: Vec<u8>, blob: Vec<u8>, compression: Compression) -> (Vec<u8>, LayerToImport) {
        let to_import = LayerToImport { digest: Digest::of_bytes(&blob), diff_id: Digest::of_bytes(&tar), compression };
        (blob, to_import)
    }

    /// A tar of its root directory, then of entries in order: `(path, kind)` where kind is `d`
    /// (directory), `p` (FIFO) or `l:TARGET` (symlink).
    fn tar_of(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind) in [("./", "d")].iter().chain(entries) {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o755);
            header.set_uid(owner().0);
            header.set_gid(owner().1);
            header.set_mtime(0);
            header.set_size(0);
            match *kind {
                "d" => header.set_entry_type(tar::EntryType::Directory),
                "p" => header.set_entry_type(tar::EntryType::Fifo),
                link => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_link_name(link.trim_start_matches("l:")).unwrap();
                }
            }
            builder.append_data(&mut header, path, std::io::empty()).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn fifos_below_a_directory_replaced_by_a_symlink_are_gone() {
        use std::os::unix::fs::FileTypeExt;
        let victim = tempfile::tempdir().unwrap();
        let target = format!("l:{}", victim.path().display());
        let planted = [("x", "d"), ("x/f", "p"), ("y", "p"), ("y/inner", "d"), ("keep", "d"), ("keep/p", "p")];
        // The layer below gives `y` its owner: the planted layer makes it a FIFO, then a
        // directory again, implied by `y/inner`, which keeps the metadata of the layer below.
        let below = tar_of(&[("y", "d")]);
        // The symlink in the next layer, and in the same layer.
        let next_layer = vec![below.clone(), tar_of(&planted), tar_of(&[("x", target.as_str())])];
        let same_layer = vec![below, tar_of(&[&planted[..], &[("x", target.as_str()), ("keep", "d")]].concat())];
        for layers in [next_layer, same_layer] {
            let (_dir, root) =
                flatten_blobs(layers.into_iter().map(|t| blob(t.clone(), t, Compression::None)).collect());
            assert!(root.join("x").is_symlink());
            assert!(root.join("y").is_dir(), "a FIFO that became a directory");
            assert!(
                std::fs::symlink_metadata(root.join("keep/p")).unwrap().file_type().is_fifo(),
                "a directory entry hides nothing"
            );
            assert_eq!(std::fs::read_dir(victim.path()).unwrap().count(), 0, "a FIFO went through the symlink");
        }
    }

    /// What a checkout holds at each path, as `ls -l --time=mtime` would show it, plus the
    /// content or link target: the listing sysctr's checkout must share with libostree's.
    fn checkout_listing(root: &std::path::Path) -> Vec<String> {
        use std::os::unix::fs::MetadataExt;
        let mut listing = Vec::new();
        let mut pending = vec![root.to_path_buf()];
        while let Some(path) = pending.pop() {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.is_dir() {
                pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                String::new()
            } else if meta.is_symlink() {
                std::fs::read_link(&path).unwrap().display().to_string()
            } else {
                format!("{:?}", std::fs::read(&path).unwrap())
            };
            let name = path.strip_prefix(root).unwrap().display().to_string();
            // A copy (empty files are copied, not linked) has the time it was made.
            let mtime = if meta.is_symlink() {
                "-".to_string()
            } else if meta.is_file() && meta.nlink() == 1 {
                "copied".to_string()
            } else {
                meta.mtime().to_string()
            };
            listing.push(format!("{name} {:o} {}:{} {mtime} {what}", meta.mode(), meta.uid(), meta.gid()));
        }
        listing.sort();
        listing
    }

    #[test]
    fn the_linked_checkout_is_the_one_libostree_makes() {
        let (uid, gid) = owner();
        let mut builder = tar::Builder::new(Vec::new());
        let mut add = |path: &str, kind: tar::EntryType, mode: u32, content: &[u8], link: Option<&str>| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_mode(mode);
            header.set_uid(uid);
            header.set_gid(gid);
            header.set_mtime(1_700_000_000);
            header.set_size(content.len() as u64);
            if let Some(link) = link {
                header.set_link_name(link).unwrap();
            }
            builder.append_data(&mut header, path, content).unwrap();
        };
        use tar::EntryType::{Directory, Link, Regular, Symlink};
        add("./", Directory, 0o755, b"", None);
        add("shared", Directory, 0o2775, b"", None);
        add("shared/tmp", Directory, 0o1777, b"", None);
        add("private", Directory, 0o700, b"", None);
        add("private/deep", Directory, 0o750, b"", None);
        add("private/deep/tool", Regular, 0o4755, b"#!/bin/sh\n", None);
        add("private/empty", Regular, 0o600, b"", None);
        add("private/also-empty", Regular, 0o644, b"", None);
        add("data", Regular, 0o644, b"data", None);
        add("same-data", Regular, 0o644, b"data", None);
        add("hardlink", Link, 0o644, b"", Some("data"));
        add("link", Symlink, 0o777, b"", Some("private/deep/tool"));
        add("dangling", Symlink, 0o777, b"", Some("/nowhere"));
        let tar = builder.into_inner().unwrap();
        let (dir, store, commit) = publish_blobs(vec![blob(tar.clone(), tar, Compression::None)]);

        let ours = dir.path().join("ours");
        assert_eq!(checkout::link_tree(&store, &commit, &ours).unwrap(), checkout::Linked::Done);
        let theirs = dir.path().join("theirs");
        let options = ostree::RepoCheckoutAtOptions {
            mode: ostree::RepoCheckoutMode::None,
            no_copy_fallback: true,
            ..Default::default()
        };
        store.repo.checkout_at(Some(&options), nix::libc::AT_FDCWD, &theirs, &commit, gio::Cancellable::NONE).unwrap();
        assert_eq!(checkout_listing(&ours), checkout_listing(&theirs));
        assert_eq!(checkout_listing(&ours).len(), 13, "{:#?}", checkout_listing(&ours));

        // Files are the repository's objects, linked.
        use std::os::unix::fs::MetadataExt;
        let inode = |root: &std::path::Path, path: &str| std::fs::metadata(root.join(path)).unwrap().ino();
        assert_eq!(inode(&ours, "private/deep/tool"), inode(&theirs, "private/deep/tool"));
        assert_eq!(inode(&ours, "data"), inode(&ours, "same-data"));

        // A second checkout into an existing directory is refused, as libostree refuses it.
        assert!(checkout::link_tree(&store, &commit, &ours).is_err());

        // Where the link count is at its limit, objects are copied, as libostree would, xattrs
        // included.
        let (content, uid, gid, permissions, xattrs) = import::regfile_cases()[3].clone();
        let capability = import::regfile_checksum(&content, uid, gid, 0o100000 | permissions, &xattrs);
        let variant = import::xattrs_variant(xattrs.clone());
        store
            .repo
            .write_regfile_inline(
                None,
                uid,
                gid,
                0o100000 | permissions,
                variant.as_ref(),
                &content,
                gio::Cancellable::NONE,
            )
            .unwrap();
        let copies = dir.path().join("copies");
        std::fs::create_dir(&copies).unwrap();
        let linker = checkout::Linker::new(&store).unwrap();
        let copies_fd = std::fs::File::open(&copies).unwrap();
        let (root, _) = store.repo.read_commit(&commit, gio::Cancellable::NONE).unwrap();
        let object_of = |path: &str| {
            let file = root.resolve_relative_path(path).downcast::<ostree::RepoFile>().unwrap();
            file.ensure_resolved().unwrap();
            file.checksum().to_string()
        };
        let objects = store.path().join("objects");
        for (path, checksum) in [
            ("private/deep/tool", object_of("private/deep/tool")),
            ("data", object_of("data")),
            ("link", object_of("link")),
            ("capability", capability),
        ] {
            let object = format!("{}.file", checkout::object_path(&hex::decode(&checksum).unwrap()).unwrap());
            let stat =
                rustix::fs::statat(rustix::fs::CWD, objects.join(&object), rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                    .unwrap();
            let name = path.replace('/', "-");
            linker.copy_object(&object, &stat, std::os::fd::AsFd::as_fd(&copies_fd), &name).unwrap();
            let (copied, original) = (copies.join(&name), objects.join(&object));
            let (copy_meta, original_meta) =
                (std::fs::symlink_metadata(&copied).unwrap(), std::fs::symlink_metadata(&original).unwrap());
            assert_ne!(copy_meta.ino(), original_meta.ino(), "{path}");
            let facts = |meta: &std::fs::Metadata, at: &std::path::Path| {
                let mut names: Vec<_> =
                    xattr::list(at).unwrap().filter(|n| !n.to_string_lossy().starts_with("security.selinux")).collect();
                names.sort();
                let values: Vec<_> = names.iter().map(|n| (n.clone(), xattr::get(at, n).unwrap())).collect();
                let content = if meta.is_symlink() {
                    std::os::unix::ffi::OsStringExt::into_vec(std::fs::read_link(at).unwrap().into_os_string())
                } else {
                    std::fs::read(at).unwrap()
                };
                (meta.mode(), meta.uid(), meta.gid(), content, values)
            };
            assert_eq!(facts(&copy_meta, &copied), facts(&original_meta, &original), "{path}");
        }
        let copied_xattrs = xattr::list(copies.join("capability")).unwrap().count();
        assert!(copied_xattrs >= 1, "the copy of a file with an xattr has none");
    }

    /// The mode and owner the image gives `path`: what its checkout has. Read from the commit,
    /// as the implied directories are root's, which only root could check out.
    fn mode_and_owner(store: &Store, commit: &str, path: &str) -> (u32, u32) {
        let (root, _) = store.repo.read_commit(commit, gio::Cancellable::NONE).unwrap();
        let info = root
            .resolve_relative_path(path)
            .query_info("unix::mode,unix::uid", gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS, gio::Cancellable::NONE)
            .unwrap();
        (info.attribute_uint32("unix::mode") & 0o7777, info.attribute_uint32("unix::uid"))
    }

    #[test]
    fn implied_directories_keep_the_metadata_of_the_layer_below() {
        let (ours, another) = (test_owner::ours(), test_owner::another());
        let lower = tar_with(&[("t", 0o1777, ours), ("h", 0o700, another), ("s", 0o2775, ours)], &[]);
        let upper = tar_with(&[("s/x", 0o750, ours)], &[("t/a", "a"), ("h/b", "b"), ("s/x/y/z", "z"), ("n/e/w", "w")]);
        let (_dir, store, commit) = publish_blobs(vec![
            blob(lower.clone(), lower, Compression::None),
            blob(upper.clone(), upper, Compression::None),
        ]);
        assert_eq!(mode_and_owner(&store, &commit, "t"), (0o1777, ours.0));
        assert_eq!(mode_and_owner(&store, &commit, "h"), (0o700, another.0));
        assert_eq!(mode_and_owner(&store, &commit, "s"), (0o2775, ours.0));
        assert_eq!(mode_and_owner(&store, &commit, "s/x"), (0o750, ours.0), "an explicit entry wins");
        for new in ["s/x/y", "n", "n/e"] {
            assert_eq!(mode_and_owner(&store, &commit, new), (0o755, 0), "{new}");
        }
    }

    #[test]
    fn multi_member_gzip_multi_frame_zstd_and_global_headers_are_read() {
        use std::io::Write;
        let mut tar = Vec::new();
        {
            // A PAX global header, as `git archive` writes one.
            let record = b"52 comment=4b825dc642cb6eb9a060e54bf8d69288fbee4904\n";
            let mut header = tar::Header::new_ustar();
            header.set_entry_type(tar::EntryType::XGlobalHeader);
            header.set_path("pax_global_header").unwrap();
            header.set_mode(0o666);
            header.set_uid(owner().0);
            header.set_gid(owner().1);
            header.set_mtime(0);
            header.set_size(record.len() as u64);
            header.set_cksum();
            let mut builder = tar::Builder::new(&mut tar);
            builder.append(&header, &record[..]).unwrap();
            builder.finish().unwrap();
        }
        tar.truncate(tar.len() - 1024); // the end-of-archive blocks
        tar.extend(tar_with(
            &[("./", 0o755, test_owner::ours()), ("d", 0o755, test_owner::ours())],
            &[("d/one", "1"), ("d/two", "2"), ("d/three", "3")],
        ));
        let third = tar.len() / 3;
        let mut gzip = Vec::new();
        let mut zstd = Vec::new();
        for part in [&tar[..third], &tar[third..]] {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(part).unwrap();
            gzip.extend(encoder.finish().unwrap());
            zstd.extend(::zstd::encode_all(part, 3).unwrap());
            zstd.extend([0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, b'T', b'O', b'C']);
            // a skippable frame
        }
        for (bytes, compression) in [(gzip, Compression::Gzip), (zstd, Compression::Zstd)] {
            let (_dir, root) = flatten_blobs(vec![blob(tar.clone(), bytes, compression)]);
            assert_eq!(std::fs::read_to_string(root.join("d/three")).unwrap(), "3", "{compression:?}");
            assert!(!root.join("pax_global_header").exists());
        }
    }

    /// A deep tree is refused by default; with the bound raised, flattening does not recurse,
    /// and libostree, which writes trees recursively, gets the stack the binary gives its threads.
    #[test]
    fn a_deep_tree_is_refused_or_flattened() {
        let thread = std::thread::Builder::new().stack_size(crate::THREAD_STACK_SIZE);
        thread
            .spawn(|| {
                let deep = "d/".repeat(5000) + "leaf";
                let upper = tar_with(&[], &[(deep.as_str(), "deep")]);
                let (_dir, to_import) = blob(upper.clone(), upper.clone(), Compression::None);
                let repo = tempfile::Builder::new().prefix("sysctr-deep.").tempdir_in("/var/tmp").unwrap();
                Store::open_or_create(repo.path()).unwrap();
                let err = import_layer(repo.path(), &upper[..], &to_import, &LayerLimits::DEFAULT).unwrap_err();
                let refused = err.downcast_ref::<LimitExceeded>().expect("a LimitExceeded");
                assert_eq!((refused.limit, refused.value), (Limit::Depth, 256), "{err:#}");

                let lower = tar_with(&[("d", 0o700, test_owner::ours())], &[("d/lower", "lower")]);
                let raised = LayerLimits { depth: 6000, path_length: 16 << 10, ..LayerLimits::DEFAULT };
                let (_dir, store, commit) = publish_blobs_within(
                    vec![blob(lower.clone(), lower, Compression::None), blob(upper.clone(), upper, Compression::None)],
                    &raised,
                );
                assert_eq!(store.read_image_file(&commit, &deep).unwrap().unwrap(), b"deep");
                assert_eq!(store.read_image_file(&commit, "d/lower").unwrap().unwrap(), b"lower");
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn image_refs_escape_like_atomic() {
        assert_eq!(image_ref("docker.io/busybox:latest"), "ociimage/docker.io_2Fbusybox_3Alatest");
        assert_eq!(image_ref("127.0.0.1:5000/demo/hello:v1"), "ociimage/127.0.0.1_3A5000_2Fdemo_2Fhello_3Av1");
        assert!(!is_layer_ref_name("127.0.0.1_3A5000_2Fdemo_2Fhello_3Av1"));
        assert!(is_layer_ref_name(&"ab".repeat(32)));
    }
}
