//! Shared test harness for the integration (`tests/integration.rs`) and system (`tests/system.rs`)
//! test binaries.
//!
//! - [`registry`]: a real `docker-registry` on a loopback port, per test, plus a tiny HTTP client.
//! - [`image`]: OCI images built from a small text-like DSL ([`Layer`], [`Image`]), written as OCI
//!   image layouts and pushed with skopeo.
//! - [`fixtures`]: ready-made images (a busybox service image, a three-layer whiteout image, ...).
//! - [`tree`]: filesystem listings to compare a rootfs against `umoci unpack`.
//! - [`signing`]: GPG and sigstore keys, and images signed with them.
//! - [`host`]: a throw-away systemd host (`systemd-nspawn --boot` on an overlay of `/`, or of an
//!   OS tree built elsewhere).
//! - [`mkosi`]: an OS tree built by mkosi from a recipe, its caches kept between runs.
//!
//! Every test binary uses only part of this, hence the blanket `allow(dead_code)`.
#![allow(dead_code, unused_imports)]

pub mod fixtures;
pub mod host;
pub mod image;
pub mod mkosi;
pub mod node_images;
pub mod registry;
pub mod signing;
pub mod tree;

pub use fixtures::*;
pub use host::TestHost;
pub use image::{push, push_all, push_with_credentials, Compression, Image, ImageInfo, IndexInfo, Layer, TarFormat};
pub use mkosi::OsImage;
pub use node_images::*;
pub use registry::{dead_registry, HttpResponse, Registry};
pub use signing::{GpgKey, SigstoreKey};
pub use tree::{diff_listings, rootfs_differences, tree_listing, umoci_unpack, Entry, Kind};

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// The `sysctr` binary cargo built for this test run. Test hosts see this machine's files, but
/// not its `/tmp` (systemd-nspawn mounts a tmpfs there): a build under `/tmp` is copied to
/// `/var/tmp` once, so that the hosts can run it.
pub fn sysctr_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let built = PathBuf::from(env!("CARGO_BIN_EXE_sysctr"));
        if !built.starts_with("/tmp") {
            return built;
        }
        let dir = PathBuf::from(format!("/var/tmp/sysctr-test-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating a directory for the test binary");
        let copy = dir.join("sysctr");
        std::fs::copy(&built, &copy).expect("copying the test binary out of /tmp");
        copy
    })
    .clone()
}

/// Runs `sysctr ARGS` on this machine with `SYSCTR_STORAGE=storage` and `RUST_BACKTRACE=0`.
/// Panics only if the binary cannot be spawned at all.
pub fn run_sysctr(storage: &Path, args: &[&str]) -> Output {
    Command::new(sysctr_bin())
        .args(args)
        .env("SYSCTR_STORAGE", storage)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", sysctr_bin().display()))
}

/// `exit status + stdout + stderr` of an [`Output`], for assertion messages.
pub fn describe_output(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a command on this machine; fails with its stdout/stderr if it exits non-zero.
/// Returns stdout.
pub fn cmd_ok(argv: &[&str]) -> Result<String> {
    let (prog, args) = argv.split_first().context("empty command")?;
    let out = Command::new(prog).args(args).output().with_context(|| format!("cannot run {prog}"))?;
    if !out.status.success() {
        bail!("`{}` failed: {}", argv.join(" "), describe_output(&out));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Hex sha256 of a file's content.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// The last `max` bytes of a (log) file, lossily decoded; a note if it cannot be read.
pub fn file_tail(path: &Path, max: usize) -> String {
    match std::fs::read(path) {
        Ok(data) => {
            let start = data.len().saturating_sub(max);
            String::from_utf8_lossy(&data[start..]).into_owned()
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Polls `f` every `interval` until it returns `Some`, or fails after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            bail!("timed out after {:?} waiting for {what}", timeout);
        }
        std::thread::sleep(interval);
    }
}

/// The `items` of a `--json` list document, checked to be of `kind` and of sysctr's JSON API.
pub fn json_items(stdout: &[u8], kind: &str) -> Vec<serde_json::Value> {
    let document: serde_json::Value = serde_json::from_slice(stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(stdout)));
    assert_eq!(document["apiVersion"], "sysctr/v1", "{document}");
    assert_eq!(document["kind"], kind, "{document}");
    document["items"].as_array().unwrap_or_else(|| panic!("no items: {document}")).clone()
}
