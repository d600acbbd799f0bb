//! Hostile and extreme layers: each bound refuses its layer with one clear error naming the layer
//! and the flag that raises the bound, in bounded memory, with nothing published and nothing left
//! that `sysctr prune` does not remove.

use std::path::Path;
use std::process::{Command, Output};

use super::common::*;
use super::{ostree_refs, scratch, stderr};

/// The most memory a pull may take, hostile layer or not.
const MAX_RSS_KIB: u64 = 128 * 1024;

/// Runs `sysctr pull ARGS...` under `/usr/bin/time`; returns its output and its peak RSS in KiB.
fn pull_measured(storage: &Path, args: &[&str], env: &[(&str, &str)]) -> (Output, u64) {
    let report = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(report.path())
        .arg(sysctr_bin())
        .arg("pull")
        .args(args)
        .env("SYSCTR_STORAGE", storage)
        .env("RUST_BACKTRACE", "0")
        .envs(env.iter().copied())
        .output()
        .expect("running /usr/bin/time sysctr pull");
    let text = std::fs::read_to_string(report.path()).unwrap();
    let peak = text.lines().last().and_then(|l| l.trim().parse().ok()).unwrap_or_else(|| panic!("no RSS: {text:?}"));
    (out, peak)
}

/// Files under the repository's `objects/`.
fn object_count(storage: &Path) -> usize {
    let objects = storage.join("repo/objects");
    if !objects.exists() {
        return 0;
    }
    super::walk(&objects).len()
}

/// Pushes `image`, whose layer `hostile` (an index) goes over the bound of `flag` (with `extra`
/// arguments), and pulls it: the pull must fail with one line naming that layer and `flag` and
/// saying `expected`, within [`MAX_RSS_KIB`], and publish nothing. Objects the pull wrote must all
/// go at the next `sysctr prune`, and no partial file be left in the repository's `tmp/`.
fn assert_refused_cleanly(image: Image, hostile: usize, extra: &[&str], flag: &str, expected: &str) {
    let registry = Registry::start().unwrap();
    let work = scratch();
    let layout = work.path().join("layout");
    let info = image.write_oci_layout(&layout, "v1").unwrap();
    let reference = registry.image_ref("test/hostile:v1");
    push(&layout, "v1", &reference).unwrap();

    let storage = work.path().join("storage");
    let mut args = extra.to_vec();
    args.push(&reference);
    let (out, peak_kib) = pull_measured(&storage, &args, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let err = stderr(&out);
    let layer = &info.layer_digests[hostile];
    assert!(err.starts_with("error: ") && err.trim_end().lines().count() == 1, "not one line: {err}");
    assert!(err.contains(&format!("layer {layer} {expected}")), "{err}");
    assert!(err.contains(&format!("refused by {flag}=")) && err.contains("raise it"), "{err}");
    assert!(peak_kib < MAX_RSS_KIB, "peak RSS {peak_kib} KiB refusing the layer: {err}");

    assert!(ostree_refs(&storage).is_empty(), "refs left: {:?}", ostree_refs(&storage));
    let images = run_sysctr(&storage, &["images", "--json"]);
    assert!(json_items(&images.stdout, "ImageList").is_empty(), "{}", describe_output(&images));
    // The first layer was imported, and the refused one may have written objects too: none of
    // them belongs to an image, and prune takes them all.
    assert!(object_count(&storage) > 0, "nothing was written: the test proves nothing");
    let prune = run_sysctr(&storage, &["prune"]);
    assert!(prune.status.success(), "{}", describe_output(&prune));
    assert_eq!(object_count(&storage), 0, "objects left after prune: {}", describe_output(&prune));
    // An aborted transaction leaves its staging directory for the next one to reuse, empty.
    for entry in std::fs::read_dir(storage.join("repo/tmp")).unwrap() {
        let path = entry.unwrap().path();
        let empty = path.is_dir() && std::fs::read_dir(&path).unwrap().next().is_none();
        assert!(empty, "left in the repository's tmp: {}", path.display());
    }
}

/// A first layer that imports well, so that a refusal in the next leaves objects behind.
fn good_layer() -> Layer {
    let mut layer = Layer::gzip().dir("etc", 0o755);
    for i in 0..20 {
        layer = layer.file(&format!("etc/file{i}"), format!("content {i}\n"), 0o644);
    }
    layer
}

fn with_hostile(hostile: Layer) -> Image {
    Image::new().layer(good_layer()).layer(hostile).cmd(&["/bin/true"])
}

const HEADER_REFUSAL: &str =
    "has a tar member whose headers (GNU long name or link name, PAX records, sparse map) take more than 1 MiB";

#[test]
fn a_64_mib_pax_header_is_refused() {
    let hostile = Layer::gzip().file("big", "x", 0o644).xattr("user.big", vec![b'p'; 64 << 20]);
    assert_refused_cleanly(with_hostile(hostile), 1, &[], "--max-tar-header", HEADER_REFUSAL);
}

#[test]
fn a_10_mib_long_name_is_refused() {
    let hostile = Layer::gzip().file(&"n".repeat(10 << 20), "x", 0o644);
    assert_refused_cleanly(with_hostile(hostile), 1, &[], "--max-tar-header", HEADER_REFUSAL);
}

#[test]
fn a_5000_deep_tree_is_refused() {
    let hostile = Layer::gzip().file(&("d/".repeat(4999) + "leaf"), "deep", 0o644);
    assert_refused_cleanly(
        with_hostile(hostile),
        1,
        &[],
        "--max-path-depth",
        "has a path of 5000 components, more than 256 ('d/d/d/",
    );
}

#[test]
fn a_long_link_target_is_refused() {
    let target = "t".repeat(8000);
    let hostile = Layer::gzip().symlink("link", &target);
    assert_refused_cleanly(
        with_hostile(hostile),
        1,
        &[],
        "--max-path-length",
        "has a link target of 8000 bytes, more than 4096 ('ttt",
    );
}

#[test]
fn too_many_entries_are_refused() {
    let mut hostile = Layer::gzip();
    for i in 0..2000 {
        hostile = hostile.file(&format!("many/{i:04}"), format!("{i}\n"), 0o644);
    }
    assert_refused_cleanly(
        with_hostile(hostile),
        1,
        &["--max-layer-entries", "1000"],
        "--max-layer-entries",
        "has more than 1000 entries (tar members and the directories their paths imply)",
    );
}

#[test]
fn too_many_bytes_are_refused() {
    let mut hostile = Layer::gzip();
    for i in 0..4 {
        hostile = hostile.file(&format!("big/{i}"), vec![i as u8; 512 << 10], 0o644);
    }
    assert_refused_cleanly(
        with_hostile(hostile),
        1,
        &["--max-layer-size", "1M"],
        "--max-layer-size",
        "unpacks to more than 1 MiB",
    );
}

#[test]
fn a_raised_bound_accepts_the_layer() {
    let registry = Registry::start().unwrap();
    let work = scratch();
    let layout = work.path().join("layout");
    let deep = "d/".repeat(299) + "leaf";
    with_hostile(Layer::gzip().file(&deep, "deep", 0o644)).write_oci_layout(&layout, "v1").unwrap();
    let reference = registry.image_ref("test/deep:v1");
    push(&layout, "v1", &reference).unwrap();
    let storage = work.path().join("storage");
    let (refused, _) = pull_measured(&storage, &[&reference], &[]);
    assert_eq!(refused.status.code(), Some(1), "{}", describe_output(&refused));
    let (out, _) = pull_measured(&storage, &[&reference], &[("SYSCTR_MAX_PATH_DEPTH", "300")]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let checkout = work.path().join("checkout");
    super::checkout_pulled(&storage, &reference, &checkout).unwrap();
    assert_eq!(std::fs::read_to_string(checkout.join(&deep)).unwrap(), "deep");
}

#[test]
fn a_bad_bound_is_refused_before_anything_is_fetched() {
    let work = scratch();
    let storage = work.path().join("storage");
    let (out, _) = pull_measured(&storage, &["127.0.0.1:9/never/fetched:v1"], &[("SYSCTR_MAX_LAYER_SIZE", "big")]);
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    assert!(stderr(&out).contains("'big' for '--max-layer-size <SIZE>'"), "{}", describe_output(&out));
    assert!(!storage.join("repo").exists(), "the store was touched");
}
