//! Registries that misbehave (`tests/hostile_registry.py`): an oversized manifest, a config larger
//! than its descriptor, a layer that never ends, silence after the headers, a redirect from HTTPS
//! to plain HTTP (of the manifest), and a manifest with 1,000 layers. Each pull must end in time with one clear
//! `error:` line, in bounded memory and connections, and leave nothing in the store after prune.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::common::*;
use super::{scratch, stdout};

/// Peak RSS allowed to a pull from a hostile registry.
const MAX_RSS_KIB: u64 = 128 * 1024;

/// `tests/hostile_registry.py` on a loopback port.
struct Hostile {
    child: Child,
    port: u16,
}

impl Hostile {
    fn start(args: &[&str]) -> Hostile {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile_registry.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting tests/hostile_registry.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("hostile registry said {line:?}"));
        Hostile { child, port }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn image(&self, repo: &str) -> String {
        format!("{}/{repo}:latest", self.addr())
    }

    /// The most requests the registry had in flight at once so far (see
    /// `tests/hostile_registry.py` for when one counts), and the requests it got (this one
    /// included).
    fn stats(&self) -> (u64, u64) {
        let answer = registry::http_request(&self.addr(), "GET", "/stats", &[], &[]).unwrap();
        let stats: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        (stats["peak_connections"].as_u64().unwrap(), stats["requests"].as_u64().unwrap())
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A sysctr run under `/usr/bin/time`, killed (whole process group) at its deadline.
struct Run {
    out: Output,
    elapsed: Duration,
    peak_rss_kib: u64,
    killed: bool,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "after {:?}{}, peak RSS {} KiB: {}",
            self.elapsed,
            if self.killed { " (killed at the deadline)" } else { "" },
            self.peak_rss_kib,
            describe_output(&self.out)
        )
    }

    /// Ended by itself, failed, printed one `error:` line containing `phrase`, and stayed under
    /// the memory bound.
    fn assert_refused(&self, phrase: &str) {
        assert!(!self.killed && !self.out.status.success(), "{}", self.describe());
        let stderr = String::from_utf8_lossy(&self.out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(
            lines.len() == 1 && lines[0].starts_with("error: ") && lines[0].contains(phrase),
            "expected one error line with {phrase:?}; {}",
            self.describe()
        );
        assert!(self.peak_rss_kib < MAX_RSS_KIB, "memory not bounded: {}", self.describe());
    }
}

fn run_bounded(storage: &Path, args: &[&str], env: &[(&str, &str)], deadline: Duration) -> Run {
    let dir = storage.parent().unwrap();
    let (rss, out, err) = (dir.join("rss"), dir.join("stdout"), dir.join("stderr"));
    let start = Instant::now();
    let mut child = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(&rss)
        .arg(sysctr_bin())
        .args(args)
        .env("SYSCTR_STORAGE", storage)
        .env("RUST_BACKTRACE", "0")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .process_group(0)
        .spawn()
        .expect("running sysctr under /usr/bin/time");
    let mut killed = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > deadline && !killed {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    let peak_rss_kib = std::fs::read_to_string(&rss)
        .ok()
        .and_then(|text| text.lines().last().and_then(|l| l.trim().parse().ok()))
        .unwrap_or(0);
    let out = Output { status, stdout: std::fs::read(&out).unwrap(), stderr: std::fs::read(&err).unwrap() };
    Run { out, elapsed, peak_rss_kib, killed }
}

/// Bytes in the store's objects and temporary files (what a failed pull could leave behind).
fn store_bytes(storage: &Path) -> u64 {
    fn walk(dir: &Path) -> u64 {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .map(|e| e.unwrap())
            .map(|e| {
                let meta = e.metadata().unwrap();
                if meta.is_dir() {
                    walk(&e.path())
                } else {
                    meta.len()
                }
            })
            .sum()
    }
    walk(&storage.join("repo/objects")) + walk(&storage.join("repo/tmp"))
}

/// A fresh store, with what it holds once created and pruned.
fn fresh_store(work: &Path) -> (PathBuf, u64) {
    let storage = work.join("storage");
    let out = run_sysctr(&storage, &["prune"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let bytes = store_bytes(&storage);
    (storage, bytes)
}

/// After a refused pull and a prune, the store holds no more than before.
fn assert_store_unchanged(storage: &Path, before: u64) {
    let out = run_sysctr(storage, &["prune"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let after = store_bytes(storage);
    assert!(after <= before, "the store grew from {before} to {after} bytes");
}

#[test]
fn oversized_manifest_is_refused_while_reading() {
    let hostile = Hostile::start(&[]);
    let work = scratch();
    let (storage, before) = fresh_store(work.path());
    let run = run_bounded(&storage, &["pull", &hostile.image("big-manifest")], &[], Duration::from_secs(60));
    run.assert_refused("is larger than 4194304 bytes");
    assert_store_unchanged(&storage, before);
}

#[test]
fn config_larger_than_its_descriptor_is_refused_while_reading() {
    let hostile = Hostile::start(&[]);
    let work = scratch();
    let (storage, before) = fresh_store(work.path());
    let run = run_bounded(&storage, &["pull", &hostile.image("big-config")], &[], Duration::from_secs(60));
    run.assert_refused("bytes its descriptor gives");
    assert_store_unchanged(&storage, before);
}

#[test]
fn endless_layer_stops_one_byte_past_its_descriptor_size() {
    let hostile = Hostile::start(&[]);
    let work = scratch();
    let (storage, before) = fresh_store(work.path());
    let run = run_bounded(&storage, &["pull", &hostile.image("endless-layer")], &[], Duration::from_secs(60));
    run.assert_refused(&format!(
        "layer sha256:{} is larger than the 1048576 bytes its descriptor gives",
        "e".repeat(64)
    ));
    assert_store_unchanged(&storage, before);
}

#[test]
fn silent_registry_is_abandoned_after_the_timeout() {
    let hostile = Hostile::start(&[]);
    let work = scratch();
    let (storage, before) = fresh_store(work.path());
    for repo in ["stall-manifest", "stall-layer"] {
        let args = ["pull", "--registry-timeout", "3", &hostile.image(repo)];
        let run = run_bounded(&storage, &args, &[], Duration::from_secs(60));
        run.assert_refused(&format!("registry {} sent nothing for 3 s", hostile.addr()));
        assert!(run.elapsed < Duration::from_secs(10), "{repo}: {}", run.describe());
        eprintln!("{repo}: abandoned after {:?}, peak RSS {} KiB", run.elapsed, run.peak_rss_kib);
    }
    // The default comes from the environment too.
    let run = run_bounded(
        &storage,
        &["pull", &hostile.image("stall-layer")],
        &[("SYSCTR_REGISTRY_TIMEOUT", "2")],
        Duration::from_secs(60),
    );
    run.assert_refused("sent nothing for 2 s");
    assert_store_unchanged(&storage, before);
}

/// The refusal tested here is the manifest's: the manifest request is sysctr's own (see
/// `src/registry/http.rs`). The other requests go through `oci-client`, whose HTTP client follows
/// any redirect and cannot be told otherwise: its `/v2/` probe, sent first, does follow this front
/// to plain HTTP (it carries no credentials), and so would a blob request (a known limit, see
/// README "Registry bounds": blobs are still size-bounded and digest-checked).
#[test]
fn redirect_from_https_to_plain_http_is_refused() {
    // A real registry on plain HTTP holds the image; an HTTPS front redirects every request to it.
    let registry = Registry::start().unwrap();
    let work = scratch();
    let (layout, _) = super::small_layout(work.path());
    push(&layout, "v1", &registry.image_ref("test/hello:v1")).unwrap();
    let (cert, key) = (work.path().join("cert.pem"), work.path().join("key.pem"));
    cmd_ok(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ])
    .unwrap();
    let target = format!("http://{}", registry.addr());
    let front = Hostile::start(&["--tls", cert.to_str().unwrap(), key.to_str().unwrap(), "--redirect-to", &target]);

    let (storage, before) = fresh_store(work.path());
    let image = format!("{}/test/hello:v1", front.addr());
    let env = [("SSL_CERT_FILE", cert.to_str().unwrap())];
    let run = run_bounded(&storage, &["pull", "--tls-verify=true", &image], &env, Duration::from_secs(60));
    run.assert_refused("redirected from HTTPS to plain HTTP");
    let stderr = String::from_utf8_lossy(&run.out.stderr);
    assert!(
        stderr.contains(&format!("fetching the manifest of {image}")),
        "not refused on the manifest: {}",
        run.describe()
    );
    assert_store_unchanged(&storage, before);
}

#[test]
fn manifest_with_1000_layers_is_refused_then_pulled_six_at_a_time() {
    let hostile = Hostile::start(&[]);
    let work = scratch();
    let (storage, before) = fresh_store(work.path());
    let image = hostile.image("many-layers");
    let run = run_bounded(&storage, &["pull", &image], &[], Duration::from_secs(120));
    run.assert_refused("1000 layers, more than the 500 accepted");
    assert_store_unchanged(&storage, before);

    let run = run_bounded(&storage, &["pull", "--max-layers", "1000", &image], &[], Duration::from_secs(300));
    assert!(run.out.status.success(), "{}", run.describe());
    assert!(stdout(&run.out).contains("1000 layers fetched"), "{}", run.describe());
    let (peak, requests) = hostile.stats();
    eprintln!(
        "1000 layers: peak {peak} requests in flight, {requests} requests, peak RSS {} KiB, {:?}",
        run.peak_rss_kib, run.elapsed
    );
    assert!(peak <= 6, "{peak} requests in flight at once");
    // One request per layer, plus a few: the /v2/ probes, manifests, the config and /stats. (An
    // oci-client that authenticated without getting a token probes /v2/ before every blob.)
    assert!(requests <= 1010, "{requests} requests");
    assert!(run.peak_rss_kib < MAX_RSS_KIB, "{}", run.describe());
}
