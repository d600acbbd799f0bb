//! What a pull says: progress bars on a terminal (a pseudo-terminal made by `script`), none when
//! standard error is a pipe or with `-q`; the log with `-v` and `-vv`.

use std::process::{Command, Output};

use super::common::*;
use super::{scratch, stderr};

/// `sysctr ARGS` under a pseudo-terminal: what it wrote there, standard output and error mixed.
fn on_a_terminal(storage: &std::path::Path, args: &[&str]) -> Output {
    let command = std::iter::once(sysctr_bin().display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .collect::<Vec<_>>();
    Command::new("script")
        .args(["--quiet", "--return", "--command", &command.join(" "), "/dev/null"])
        .env("SYSCTR_STORAGE", storage)
        .env("RUST_BACKTRACE", "0")
        .env("TERM", "xterm")
        .output()
        .unwrap()
}

#[test]
fn pulls_show_progress_on_a_terminal_and_log_with_v() {
    let registry = Registry::start().unwrap();
    let work = scratch();
    let layout = work.path().join("layout");
    Image::new()
        .layer(busybox_layer())
        .layer(Layer::gzip().file("etc/hello", "hi\n", 0o644))
        .cmd(&["/bin/true"])
        .write_oci_layout(&layout, "v1")
        .unwrap();
    let image = registry.image_ref("demo/progress:v1");
    push(&layout, "v1", &image).unwrap();

    let out = on_a_terminal(&work.path().join("tty"), &["pull", &image]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(shown.contains("total") && shown.contains("done"), "no progress bars on a terminal: {shown}");
    assert!(shown.contains("pulled "), "{shown}");

    let out = on_a_terminal(&work.path().join("quiet"), &["-q", "pull", &image]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(shown.trim().is_empty(), "-q still said: {shown}");

    // A pipe: the result line, no bars; -v adds sysctr's steps, -vv the registry client's.
    let out = run_sysctr(&work.path().join("pipe"), &["pull", &image]);
    assert!(out.status.success() && !stderr(&out).contains("total"), "{}", describe_output(&out));
    let out = run_sysctr(&work.path().join("verbose"), &["-v", "pull", &image]);
    assert!(stderr(&out).contains("layer imported"), "{}", describe_output(&out));
    let manifest_request = format!("GET http://{}/v2/", image.split('/').next().unwrap_or_default());
    assert!(!stderr(&out).contains(&manifest_request), "{}", describe_output(&out));
    let out = run_sysctr(&work.path().join("more"), &["-vv", "pull", &image]);
    assert!(stderr(&out).contains(&manifest_request), "{}", describe_output(&out));
    assert!(stderr(&out).contains("/blobs/sha256:"), "no layer request: {}", describe_output(&out));
}

/// `pull --check` asks the source for its manifest and config only, creates nothing, and says
/// whether a pull would store a new image; `images IMAGE` shows that image alone.
#[test]
fn pull_check_fetches_no_layer_and_images_shows_one_image() {
    let registry = Registry::start().unwrap();
    let work = scratch();
    let layout = work.path().join("layout");
    let info = Image::new()
        .layer(busybox_layer())
        .layer(Layer::gzip().file("etc/hello", "hi\n", 0o644))
        .cmd(&["/bin/true"])
        .write_oci_layout(&layout, "v1")
        .unwrap();
    let image = registry.image_ref("demo/check:v1");
    push(&layout, "v1", &image).unwrap();
    let storage = work.path().join("store");

    let before = std::fs::read_to_string(registry.log_path()).unwrap().len();
    let out = run_sysctr(&storage, &["pull", "--check", "--json", "--detailed-exitcode", &image]);
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    let check: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((check["kind"].as_str(), check["changed"].as_bool()), (Some("PullCheck"), Some(true)), "{check}");
    assert!(check["stored_digest"].is_null(), "{check}");
    let available = check["manifest_digest"].as_str().unwrap().to_string();
    assert!(!storage.exists(), "--check created the storage");
    let log = std::fs::read_to_string(registry.log_path()).unwrap();
    for layer in &info.layer_digests {
        assert!(!log[before..].contains(&format!("/blobs/{layer}")), "--check fetched the layer {layer}");
    }

    let out = run_sysctr(&storage, &["pull", "--json", &image]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let pulled: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pulled["manifest_digest"], available.as_str(), "--check named another digest");
    let out = run_sysctr(&storage, &["pull", "--check", "--json", "--detailed-exitcode", &image]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let check: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((check["changed"].as_bool(), check["stored_digest"].as_str()), (Some(false), Some(available.as_str())));

    Image::new().layer(busybox_layer()).cmd(&["/bin/true"]).write_oci_layout(&layout, "v2").unwrap();
    let other = registry.image_ref("demo/other:v2");
    push(&layout, "v2", &other).unwrap();
    assert!(run_sysctr(&storage, &["pull", &other]).status.success());
    let out = run_sysctr(&storage, &["images", "--json", &image]);
    let items = json_items(&out.stdout, "ImageList");
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(
        (items[0]["reference"].as_str(), items[0]["manifest_digest"].as_str()),
        (Some(image.as_str()), Some(available.as_str()))
    );
    let out = run_sysctr(&storage, &["images", "--json", &registry.image_ref("demo/absent:v1")]);
    assert!(out.status.success() && json_items(&out.stdout, "ImageList").is_empty(), "{}", describe_output(&out));
}
