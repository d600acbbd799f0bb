//! Pull and check-out tests against a real registry (Debian's docker-registry on a loopback port)
//! and a real libostree, with `umoci unpack` as the reference unpacker. No systemd needed.

// Tests stop at the first thing that is not as expected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "integration/archives.rs"]
mod archives;
#[path = "integration/auth.rs"]
mod auth;
#[path = "integration/bounds.rs"]
mod bounds;
mod common;
#[path = "integration/hostile_registry.rs"]
mod hostile_registry;
#[path = "integration/layers.rs"]
mod layers;
#[path = "integration/locking.rs"]
mod locking;
#[path = "integration/mount.rs"]
mod mount;
#[path = "integration/output.rs"]
mod output;
#[path = "integration/registries_conf.rs"]
mod registries_conf;
#[path = "integration/signatures.rs"]
mod signatures;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use common::*;
use sysctr::store::{checkout_image, Store};

/// A scratch directory under /var/tmp (a real disk, like the production storage).
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("sysctr-it.").tempdir_in("/var/tmp").expect("creating a scratch dir")
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A one-file image written as an OCI layout at `WORK/layout`, tagged `v1`, ready to push.
fn small_layout(work: &Path) -> (PathBuf, ImageInfo) {
    let layout = work.join("layout");
    let info = Image::new()
        .layer(Layer::gzip().file("etc/hello", "hi\n", 0o644))
        .cmd(&["/bin/true"])
        .write_oci_layout(&layout, "v1")
        .unwrap();
    (layout, info)
}

/// Checks out a pulled image with the library, as install does, into `dest`.
fn checkout_pulled(storage: &Path, reference: &str, dest: &Path) -> Result<()> {
    let store = Store::open(&storage.join("repo"))?;
    let image = store.image(reference)?.with_context(|| format!("{reference} is not in the store"))?;
    checkout_image(&store, &image.commit, dest)
}

/// Every ref in the store's repository (files under refs/heads).
fn ostree_refs(storage: &Path) -> Vec<PathBuf> {
    let heads = storage.join("repo/refs/heads");
    let mut refs = Vec::new();
    if heads.exists() {
        for entry in walk(&heads) {
            refs.push(entry.strip_prefix(&heads).unwrap().to_path_buf());
        }
    }
    refs
}

/// Every file under `dir` with its inode and modification time: a file rewritten, even with the
/// same content, shows up as a new entry.
fn files_with_times(dir: &Path) -> Vec<(PathBuf, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt as _;
    walk(dir)
        .into_iter()
        .filter_map(|path| {
            let meta = std::fs::symlink_metadata(&path).ok()?;
            Some((path, meta.ino(), meta.mtime(), meta.mtime_nsec()))
        })
        .collect()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn three_layer_image_checks_out_like_umoci() {
    let registry = Registry::start().unwrap();
    let work = scratch();
    let layout = work.path().join("layout");
    three_layer_whiteout_image().write_oci_layout(&layout, "v1").unwrap();
    let reference = registry.image_ref("test/three:v1");
    push(&layout, "v1", &reference).unwrap();

    let storage = work.path().join("storage");
    let out = run_sysctr(&storage, &["pull", &reference]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(stdout(&out).contains("3 layers fetched"), "{}", describe_output(&out));

    let ours = work.path().join("ours");
    checkout_pulled(&storage, &reference, &ours).unwrap();
    let theirs = umoci_unpack(&layout, "v1", &work.path().join("umoci")).unwrap();

    // Whiteouts, opaque directories, type changes, hard links, owners, modes and the FIFO.
    check_three_layer_rootfs(&ours).unwrap();
    let differences = rootfs_differences(&theirs, &ours).unwrap();
    assert!(differences.is_empty(), "checkout differs from umoci unpack:\n{}", differences.join("\n"));
}

#[test]
fn second_pull_reuses_layers_and_shared_layers_are_not_fetched_again() {
    let registry = Registry::start().unwrap();
    let work = scratch();
    let base = busybox_layer();
    let first = Image::new().layer(base.clone()).layer(Layer::zstd().file("app/one", "1", 0o644)).cmd(&["/bin/sh"]);
    let second = Image::new().layer(base).layer(Layer::uncompressed().file("app/two", "2", 0o644)).cmd(&["/bin/sh"]);
    first.write_oci_layout(&work.path().join("one"), "latest").unwrap();
    second.write_oci_layout(&work.path().join("two"), "latest").unwrap();
    let one = registry.image_ref("test/one:latest");
    let two = registry.image_ref("test/two:latest");
    push(&work.path().join("one"), "latest", &one).unwrap();
    push(&work.path().join("two"), "latest", &two).unwrap();

    let storage = work.path().join("storage");
    let out = run_sysctr(&storage, &["pull", &one]);
    assert!(stdout(&out).contains("2 layers fetched, 0 already present"), "{}", describe_output(&out));
    let out = run_sysctr(&storage, &["pull", &two]);
    assert!(stdout(&out).contains("1 layers fetched, 1 already present"), "{}", describe_output(&out));
    // A pull that changes nothing writes nothing: every file of the store stays as it was.
    let before = files_with_times(&storage);
    let out = run_sysctr(&storage, &["pull", &one]);
    assert!(stdout(&out).contains("0 layers fetched, 2 already present"), "{}", describe_output(&out));
    let after = files_with_times(&storage);
    let rewritten: Vec<_> = after.iter().filter(|entry| !before.contains(entry)).collect();
    assert!(rewritten.is_empty(), "a pull that changed nothing rewrote {rewritten:?}");
    // For scripts: nothing changed, so exit 0 even with --detailed-exitcode.
    let out = run_sysctr(&storage, &["pull", "--json", "--detailed-exitcode", &one]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let pulled: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((pulled["kind"].as_str(), pulled["changed"].as_bool()), (Some("PullResult"), Some(false)), "{pulled}");
    assert_eq!(pulled["layers_present"], 2, "{pulled}");
    assert!(pulled["manifest_digest"].as_str().is_some_and(|d| d.starts_with("sha256:")), "{pulled}");

    let out = run_sysctr(&storage, &["images", "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let rows = json_items(&out.stdout, "ImageList");
    let refs: Vec<&str> = rows.iter().map(|r| r["reference"].as_str().unwrap()).collect();
    assert_eq!(refs, [one.as_str(), two.as_str()]);
    assert!(rows[0]["size"].as_u64().unwrap() > 500_000, "busybox alone is larger: {rows:?}");
}

#[test]
fn oci_layout_on_disk_is_a_source() {
    let work = scratch();
    let layout = work.path().join("layout");
    three_layer_whiteout_image().write_oci_layout(&layout, "v1").unwrap();
    let storage = work.path().join("storage");
    let reference = format!("oci:{}:v1", layout.display());
    let out = run_sysctr(&storage, &["pull", &reference]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let ours = work.path().join("ours");
    checkout_pulled(&storage, &reference, &ours).unwrap();
    check_three_layer_rootfs(&ours).unwrap();

    let out = run_sysctr(&storage, &["pull", &format!("oci:{}:nosuchtag", layout.display())]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no image tagged 'nosuchtag'"), "{}", describe_output(&out));
}

#[test]
fn image_index_resolves_to_this_hosts_platform() {
    let registry = Registry::start().unwrap();
    let work = scratch();
    let (amd64, arm64) = two_platform_images();
    let layout = work.path().join("multi");
    let index = common::image::write_oci_index_layout(&layout, "multi", &[&arm64, &amd64]).unwrap();
    let reference = registry.image_ref("test/multi:multi");
    push_all(&layout, "multi", &reference).unwrap();

    let storage = work.path().join("storage");
    let out = run_sysctr(&storage, &["pull", &reference]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let expected = index.manifests.iter().find(|m| m.architecture == "amd64").unwrap();
    assert!(stdout(&out).contains(&expected.manifest_digest), "{}", describe_output(&out));
    let ours = work.path().join("ours");
    checkout_pulled(&storage, &reference, &ours).unwrap();
    assert_eq!(std::fs::read_to_string(ours.join("etc/arch")).unwrap(), "amd64\n");
}

#[test]
fn single_arch_image_for_another_platform_is_refused() {
    let registry = Registry::start().unwrap();
    let work = scratch();
    let (_, arm64) = two_platform_images();
    arm64.write_oci_layout(&work.path().join("arm"), "latest").unwrap();
    let reference = registry.image_ref("test/arm:latest");
    push(&work.path().join("arm"), "latest", &reference).unwrap();
    let storage = work.path().join("storage");
    let out = run_sysctr(&storage, &["pull", &reference]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(stderr(&out).contains("the image is for linux/arm64"), "{}", describe_output(&out));
    assert!(ostree_refs(&storage).is_empty(), "refs left: {:?}", ostree_refs(&storage));
}

#[test]
fn corrupt_blob_in_registry_is_refused_and_leaves_no_ref() {
    let registry = Registry::start().unwrap();
    let work = scratch();
    let layout = work.path().join("layout");
    let info = three_layer_whiteout_image().write_oci_layout(&layout, "v1").unwrap();
    let reference = registry.image_ref("test/corrupt:v1");
    push(&layout, "v1", &reference).unwrap();

    // Flip one byte in the middle of the last (uncompressed) layer, as stored by the registry.
    let victim = info.layer_digests.last().unwrap();
    let blob = registry.blob_path(victim);
    let mut bytes = std::fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&blob, bytes).unwrap();

    let storage = work.path().join("storage");
    let out = run_sysctr(&storage, &["pull", &reference]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let err = stderr(&out);
    assert!(err.contains("digest") && err.contains(victim.trim_start_matches("sha256:")), "{err}");
    assert!(!err.contains("panicked") && !err.contains("stack backtrace"), "{err}");
    assert!(ostree_refs(&storage).is_empty(), "refs left: {:?}", ostree_refs(&storage));
    let out = run_sysctr(&storage, &["images", "--json"]);
    assert!(json_items(&out.stdout, "ImageList").is_empty(), "{}", describe_output(&out));
}

#[test]
fn registry_down_and_bad_references_give_one_clear_line() {
    let mut registry = Registry::start().unwrap();
    let addr = registry.addr();
    registry.stop();
    let work = scratch();
    let storage = work.path().join("storage");
    let cases: [(&str, String); 4] = [
        ("cannot reach registry", format!("{addr}/test/gone:latest")),
        ("invalid image reference", "Not A Reference!".to_string()),
        ("invalid image reference", "oci:".to_string()),
        ("is not an OCI image layout", format!("oci:{}", work.path().display())),
    ];
    for (expected, reference) in cases {
        let out = run_sysctr(&storage, &["pull", &reference]);
        assert_eq!(out.status.code(), Some(1), "{reference}: {}", describe_output(&out));
        let err = stderr(&out);
        assert!(err.starts_with("error: ") && err.contains(expected), "{reference}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{reference}: more than one line: {err}");
    }
    assert!(ostree_refs(&storage).is_empty());
}

#[test]
fn device_nodes_are_reported_not_dropped_silently() {
    let registry = Registry::start().unwrap();
    let work = scratch();
    let image = Image::new()
        .layer(Layer::gzip().dir("dev", 0o755).char_device("dev/null2", 1, 3, 0o666).file("etc/ok", "ok", 0o644))
        .cmd(&["/bin/true"]);
    image.write_oci_layout(&work.path().join("dev"), "latest").unwrap();
    let reference = registry.image_ref("test/devices:latest");
    push(&work.path().join("dev"), "latest", &reference).unwrap();
    let storage = work.path().join("storage");
    let out = run_sysctr(&storage, &["pull", &reference]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(stderr(&out).contains("/dev/null2 (character device)"), "{}", describe_output(&out));
}

#[test]
fn docker_schema2_manifests_are_pulled_too() {
    let registry = Registry::start().unwrap();
    let work = scratch();
    let (amd64, _) = two_platform_images();
    amd64.write_oci_layout(&work.path().join("oci"), "latest").unwrap();
    let reference = registry.image_ref("test/docker:latest");
    let source = format!("oci:{}:latest", work.path().join("oci").display());
    cmd_ok(&[
        "skopeo",
        "copy",
        "-q",
        "--dest-tls-verify=false",
        "--format",
        "v2s2",
        &source,
        &format!("docker://{reference}"),
    ])
    .unwrap();
    let served = String::from_utf8(common::image::inspect_raw(&reference).unwrap()).unwrap();
    assert!(served.contains("application/vnd.docker.distribution.manifest.v2+json"), "{served}");

    let storage = work.path().join("storage");
    let out = run_sysctr(&storage, &["pull", &reference]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let ours = work.path().join("ours");
    checkout_pulled(&storage, &reference, &ours).unwrap();
    assert_eq!(std::fs::read_to_string(ours.join("etc/arch")).unwrap(), "amd64\n");
}

#[test]
fn info_lists_labels_defaults_and_required_variables() {
    let work = scratch();
    let image = busybox_service_image(&[
        ("manifest.json", r#"{"version": "1.0", "defaultValues": {"RECEIVER": "World", "UNUSED": "x"}}"#),
        ("config.json.template", r#"{"process": {"env": ["R=$RECEIVER", "D=$STATE_DIRECTORY/$NAME"]}}"#),
        ("service.template", "[Service]\nExecStart=$EXEC_START\nUser=$SERVICE_USER\n"),
    ]);
    image.write_oci_layout(&work.path().join("layout"), "v1").unwrap();
    let storage = work.path().join("storage");
    let reference = format!("oci:{}:v1", work.path().join("layout").display());
    let out = run_sysctr(&storage, &["info", &reference]);
    assert_eq!(out.status.code(), Some(1), "info before pull: {}", describe_output(&out));
    assert!(
        stderr(&out).contains("not in the store") || stderr(&out).contains("nothing has been pulled"),
        "{}",
        describe_output(&out)
    );

    assert!(run_sysctr(&storage, &["pull", &reference]).status.success());
    let out = run_sysctr(&storage, &["info", "--json", &reference]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(out.stderr.is_empty(), "{}", describe_output(&out));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((info["apiVersion"].as_str(), info["kind"].as_str()), (Some("sysctr/v1"), Some("ImageInfo")));
    assert_eq!(info["labels"]["atomic.type"], "system");
    assert_eq!(info["defaults"], serde_json::json!({"RECEIVER": "World"}));
    assert_eq!(info["host_provided"], serde_json::json!(["STATE_DIRECTORY"]));
    assert_eq!(info["required"], serde_json::json!(["SERVICE_USER"]));
    let text = stdout(&run_sysctr(&storage, &["info", &reference]));
    assert!(text.contains("Variables that must be set with --set:\n  SERVICE_USER"), "{text}");
}

#[test]
fn rmi_and_prune_free_only_what_no_image_uses() {
    let work = scratch();
    let base = busybox_layer();
    let keep = Image::new().layer(base.clone()).layer(Layer::gzip().file("keep", "kept", 0o644)).cmd(&["/bin/sh"]);
    let drop = Image::new().layer(base).layer(Layer::gzip().file("drop", vec![9u8; 200_000], 0o644)).cmd(&["/bin/sh"]);
    keep.write_oci_layout(&work.path().join("keep"), "v1").unwrap();
    drop.write_oci_layout(&work.path().join("drop"), "v1").unwrap();
    let keep_ref = format!("oci:{}:v1", work.path().join("keep").display());
    let drop_ref = format!("oci:{}:v1", work.path().join("drop").display());
    let storage = work.path().join("storage");
    assert!(run_sysctr(&storage, &["pull", &keep_ref]).status.success());
    assert!(run_sysctr(&storage, &["pull", &drop_ref]).status.success());
    let refs_before = ostree_refs(&storage).len();

    let out = run_sysctr(&storage, &["rmi", &drop_ref]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let out = run_sysctr(&storage, &["prune"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(stdout(&out).contains("removed 1 unused layers"), "{}", describe_output(&out));
    assert_eq!(ostree_refs(&storage).len(), refs_before - 2, "the image ref and its own layer ref go");

    // What the kept image needs is still whole.
    let ours = work.path().join("ours");
    checkout_pulled(&storage, &keep_ref, &ours).unwrap();
    assert_eq!(std::fs::read_to_string(ours.join("keep")).unwrap(), "kept");
    assert!(ours.join("bin/busybox").exists());
    let out = run_sysctr(&storage, &["rmi", &drop_ref]);
    assert!(stderr(&out).contains("not in the store"), "{}", describe_output(&out));
}
