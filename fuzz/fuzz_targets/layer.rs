//! The layer importer and the flattening of layers: tar streams (GNU and PAX long names, PAX
//! records and xattrs, sparse files, hard links, special files), uncompressed, gzip (several
//! members) or zstd (several frames), imported into a real OSTree repository; then the layers
//! are flattened into an image with the OCI whiteout rules, and the image is checked out.
//!
//! Input: up to three layers separated by `SEPARATOR`. A layer's first byte picks how its blob
//! is compressed (0: none, 1: gzip, 2: zstd, modulo 3); the rest is the blob as a registry would
//! serve it. The digests the importer checks are computed here, so that a blob is imported to
//! the end rather than refused for a digest the fuzzer cannot guess.
//!
//! Invariants: no panic, no hang; every step returns `Ok` or `Err`. A checkout is removed after
//! each run; the repository is kept across runs for speed, and replaced now and then so that it
//! stays small.

#![no_main]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use sysctr::digest::Digest;
use sysctr::store::{checkout_image, import_layer, Compression, ImageToPublish, LayerToImport, Store};

const SEPARATOR: &[u8] = b"\n--sysctr-fuzz-layer--\n";
const MAX_LAYERS: usize = 3;
/// Runs after which the repository is replaced by a new one.
const RUNS_PER_REPO: u32 = 2000;
/// How much of a compressed blob is decompressed here to compute its diff_id. The importer reads
/// all of it; past this the diff_id is wrong and the import fails at its end, as it should.
const MAX_UNPACKED: u64 = 32 << 20;

struct Repo {
    dir: tempfile::TempDir,
    runs: u32,
}

static REPO: Mutex<Option<Repo>> = Mutex::new(None);

fn new_repo() -> Repo {
    let dir = tempfile::Builder::new().prefix("sysctr-fuzz-layer.").tempdir_in("/var/tmp").unwrap();
    Store::open_or_create(&dir.path().join("repo")).unwrap();
    Repo { dir, runs: 0 }
}

fuzz_target!(|data: &[u8]| {
    let mut guard = REPO.lock().unwrap();
    let repo = guard.get_or_insert_with(new_repo);
    if repo.runs == RUNS_PER_REPO {
        *repo = new_repo();
    }
    repo.runs += 1;
    let dir = repo.dir.path().to_path_buf();
    // libostree writes and checks out trees recursively: run where sysctr runs it, on a thread
    // with sysctr's stack size.
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(sysctr::THREAD_STACK_SIZE)
            .spawn_scoped(scope, || run(&dir, data))
            .unwrap()
            .join()
            .unwrap()
    });
});

fn run(dir: &Path, data: &[u8]) {
    let repo_path = dir.join("repo");
    let mut layers = Vec::new();
    for blob in split(data) {
        let (compression, blob) = match blob.split_first() {
            Some((mode, rest)) => (
                [Compression::None, Compression::Gzip, Compression::Zstd][usize::from(*mode) % 3],
                rest,
            ),
            None => (Compression::None, blob),
        };
        let digest = Digest::of_bytes(blob);
        let layer = LayerToImport { diff_id: diff_id(compression, blob), digest, compression };
        match import_layer(&repo_path, blob, &layer, &Default::default()) {
            Ok(imported) => layers.push((layer.digest, imported.commit)),
            Err(_) => return,
        }
    }
    let store = Store::open(&repo_path).unwrap();
    let image = ImageToPublish {
        reference: "registry.lan/fuzz:latest",
        manifest_digest: "sha256:0000000000000000000000000000000000000000000000000000000000000000",
        manifest_raw: b"{}",
        config_raw: b"{}",
    };
    let Ok(commit) = store.publish(&image, &layers) else { return };
    let rootfs: PathBuf = dir.join("rootfs");
    let checked_out = checkout_image(&store, &commit, &rootfs);
    if rootfs.exists() {
        std::fs::remove_dir_all(&rootfs).expect("removing the checkout");
    }
    let _ = checked_out;
}

/// The layers of an input.
fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut layers = Vec::new();
    let mut rest = data;
    while layers.len() + 1 < MAX_LAYERS {
        match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(at) => {
                layers.push(&rest[..at]);
                rest = &rest[at + SEPARATOR.len()..];
            }
            None => break,
        }
    }
    layers.push(rest);
    layers
}

/// The digest of the uncompressed tar stream, as far as it decompresses.
fn diff_id(compression: Compression, blob: &[u8]) -> Digest {
    let mut tar = Vec::new();
    let _ = match compression {
        Compression::None => return Digest::of_bytes(blob),
        Compression::Gzip => flate2::read::MultiGzDecoder::new(blob).take(MAX_UNPACKED).read_to_end(&mut tar),
        Compression::Zstd => match zstd::Decoder::new(blob) {
            Ok(decoder) => decoder.take(MAX_UNPACKED).read_to_end(&mut tar),
            Err(_) => return Digest::of_bytes(b""),
        },
    };
    Digest::of_bytes(&tar)
}
