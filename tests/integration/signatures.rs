//! The signature policy with real signatures, against a real registry: GPG simple signing made
//! by `skopeo copy --sign-by` with keys the test creates (signatures in a `file://` lookaside
//! declared in registries.d), and sigstore signatures attached in the registry as cosign does.
//! A refused image leaves nothing in the store, and none of its layers is fetched.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine as _;

use super::common::image::write_oci_index_layout;
use super::common::{self, *};
use super::{scratch, stderr};

/// `sysctr ARGS --signature-policy POLICY --registries-d DIR`, nothing of the machine's own
/// registry configuration read.
fn sysctr(storage: &Path, policy: &Path, registries_d: &Path, args: &[&str]) -> Output {
    Command::new(sysctr_bin())
        .args(args)
        .args(["--signature-policy", policy.to_str().unwrap(), "--registries-d", registries_d.to_str().unwrap()])
        .env("SYSCTR_STORAGE", storage)
        .env("CONTAINERS_REGISTRIES_CONF", storage.with_extension("no-registries.conf"))
        .env("REGISTRY_AUTH_FILE", storage.with_extension("no-auth.json"))
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

fn write_json(path: &Path, value: serde_json::Value) {
    std::fs::write(path, value.to_string()).unwrap();
}

/// Pulls, and asserts that it gave one `error:` naming `expected`, stored nothing and fetched no
/// layer of the image. Returns what the pull said.
/// `WORK/policy.json`: images of docker `scope` must be signed by `key` (exported to
/// `WORK/trusted.gpg`), everything else is rejected.
fn policy_requiring(work: &Path, key: &GpgKey, scope: &str) -> std::path::PathBuf {
    let key_file = work.join("trusted.gpg");
    std::fs::write(&key_file, key.public_key(false).unwrap()).unwrap();
    let policy = work.join("policy.json");
    write_json(
        &policy,
        serde_json::json!({
            "default": [{"type": "reject"}],
            "transports": {"docker": {scope: [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": key_file}]}}
        }),
    );
    policy
}

fn assert_refused(
    pull: impl FnOnce() -> Output,
    expected: &str,
    storage: &Path,
    registry: &Registry,
    info: &ImageInfo,
) -> Output {
    let before = std::fs::read_to_string(registry.log_path()).unwrap().len();
    let out = pull();
    let out = &out;
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(out));
    let err = stderr(out);
    assert!(err.contains(expected), "expected '{expected}' in: {err}");
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    let images = run_sysctr(storage, &["images", "--json"]);
    assert!(json_items(&images.stdout, "ImageList").is_empty(), "{}", describe_output(&images));
    let log = std::fs::read_to_string(registry.log_path()).unwrap();
    for blob in info.layer_digests.iter().chain([&info.config_digest]) {
        assert!(!log[before..].contains(&format!("/blobs/{blob}")), "{blob} of a refused image was fetched");
    }
    out.clone()
}

#[test]
fn gpg_signatures_from_the_lookaside_are_required_by_the_policy() {
    let registry = Registry::start().unwrap();
    let work = scratch();
    let (layout, info) = super::small_layout(work.path());
    let other_layout = work.path().join("other");
    let other = Image::new()
        .layer(Layer::gzip().file("etc/other", "other\n", 0o644))
        .cmd(&["/bin/true"])
        .write_oci_layout(&other_layout, "v1")
        .unwrap();
    let trusted = GpgKey::generate("trusted").unwrap();
    let stranger = GpgKey::generate("stranger").unwrap();
    let lookaside = work.path().join("sigstore");
    let image = |repository: &str| registry.image_ref(repository);

    trusted.push_signed(&layout, "v1", &image("team/app:v1"), &lookaside, None).unwrap();
    push(&layout, "v1", &image("team/unsigned:v1")).unwrap();
    stranger.push_signed(&layout, "v1", &image("team/stranger:v1"), &lookaside, None).unwrap();
    trusted.push_signed(&layout, "v1", &image("team/renamed:v1"), &lookaside, Some(&image("team/app:v1"))).unwrap();
    trusted.push_signed(&other_layout, "v1", &image("team/other:v1"), &lookaside, None).unwrap();
    // Another image's signature, placed next to this one.
    push(&layout, "v1", &image("team/swapped:v1")).unwrap();
    let signature_dir = |repository: &str, digest: &str| {
        lookaside.join(format!("{repository}@sha256={}", digest.trim_start_matches("sha256:")))
    };
    std::fs::create_dir_all(signature_dir("team/swapped", &info.manifest_digest)).unwrap();
    std::fs::copy(
        signature_dir("team/other", &other.manifest_digest).join("signature-1"),
        signature_dir("team/swapped", &info.manifest_digest).join("signature-1"),
    )
    .unwrap();

    let host = registry.addr();
    let policy = policy_requiring(work.path(), &trusted, &format!("{host}/team"));
    let registries_d = work.path().join("registries.d");
    std::fs::create_dir_all(&registries_d).unwrap();
    std::fs::write(
        registries_d.join("default.yaml"),
        format!("default-docker:\n  lookaside: file://{}\n", lookaside.display()),
    )
    .unwrap();
    let storage = work.path().join("storage");
    let pull = |repository: &str| sysctr(&storage, &policy, &registries_d, &["pull", &image(repository)]);

    let refusals = [
        ("team/unsigned:v1", "no signature was found in the lookaside".to_string()),
        ("team/stranger:v1", "signature 1: it is not signed by any of the trusted keys".to_string()),
        (
            "team/renamed:v1",
            format!("it is signed for {host}/team/app:v1, which does not match {host}/team/renamed:v1"),
        ),
        ("team/swapped:v1", format!("it signs manifest {}, not {}", other.manifest_digest, info.manifest_digest)),
    ];
    for (repository, expected) in &refusals {
        let out = assert_refused(|| pull(repository), expected, &storage, &registry, &info);
        assert!(
            stderr(&out)
                .contains(&format!("is refused by the signature policy (scope docker \"{host}/team\": signedBy")),
            "{}",
            stderr(&out)
        );
    }

    let out = pull("team/app:v1");
    assert!(out.status.success(), "{}", describe_output(&out));
    let fingerprint = trusted.fingerprint.to_lowercase();
    assert!(stderr(&out).contains(&format!("signature verified: signed by key {fingerprint}")), "{}", stderr(&out));

    // The key given inline (keyData: base64 of an ASCII-armored export) works the same.
    let armored = base64::engine::general_purpose::STANDARD.encode(trusted.public_key(true).unwrap());
    write_json(
        &policy,
        serde_json::json!({"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyData": armored}]}),
    );
    let out = run_sysctr(&storage, &["rmi", &image("team/app:v1")]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(pull("team/app:v1").status.success());
    assert_eq!(pull("team/stranger:v1").status.code(), Some(1));

    // Keys gpgme would not accept either: a revoked key, and one that has expired (its
    // signature made while it was valid).
    let claim = |repository: &str| {
        serde_json::to_vec(&serde_json::json!({"critical": {
            "type": "atomic container signature",
            "image": {"docker-manifest-digest": info.manifest_digest},
            "identity": {"docker-reference": image(repository)}
        }, "optional": {}}))
        .unwrap()
    };
    let place = |repository: &str, signature: Vec<u8>| {
        push(&layout, "v1", &image(&format!("{repository}:v1"))).unwrap();
        let dir = signature_dir(repository, &info.manifest_digest);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("signature-1"), signature).unwrap();
    };
    let expired = GpgKey::generate_expired("expired").unwrap();
    place("team/expired", expired.sign(&claim("team/expired:v1"), Some("20200101T120000!")).unwrap());
    let revoked = GpgKey::generate("revoked").unwrap();
    place("team/revoked", revoked.sign(&claim("team/revoked:v1"), None).unwrap());
    revoked.revoke().unwrap();
    let keys = work.path().join("keys.asc");
    let mut keyring = expired.public_key(true).unwrap();
    keyring.extend(revoked.public_key(true).unwrap());
    keyring.extend(trusted.public_key(true).unwrap());
    std::fs::write(&keys, keyring).unwrap();
    write_json(&policy, serde_json::json!({"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": keys}]}));
    let out = pull("team/expired:v1");
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let expected = format!("signed by key {}, but the key has expired", expired.fingerprint.to_lowercase());
    assert!(stderr(&out).contains(&expected), "{}", describe_output(&out));
    let out = pull("team/revoked:v1");
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(
        stderr(&out).contains(&format!("signed by key {}, but the key is revoked", revoked.fingerprint.to_lowercase())),
        "{}",
        describe_output(&out)
    );
    assert!(pull("team/app:v1").status.success(), "the third key of an armored keyring is read");

    // The same lookaside served over HTTP.
    let server = LookasideServer::serve(&lookaside);
    std::fs::write(registries_d.join("default.yaml"), format!("default-docker:\n  lookaside: {}\n", server.url))
        .unwrap();
    let out = run_sysctr(&storage, &["rmi", &image("team/app:v1")]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let out = pull("team/app:v1");
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(stderr(&out).contains("signed by key"), "{}", stderr(&out));
    let out = pull("team/unsigned:v1");
    assert!(
        stderr(&out).contains(&format!("no signature was found in the lookaside {}", server.url)),
        "{}",
        stderr(&out)
    );
    assert!(pull("team/stranger:v1").status.code() == Some(1));
}

/// An image pulled from a mirror: its signatures are read where registries.d says for the mirror,
/// under the mirror's repository path (as containers/image does), and must claim the name asked for.
#[test]
fn signatures_of_a_mirrored_image_are_read_from_the_mirrors_lookaside() {
    let mirror = Registry::start().unwrap();
    let dead = dead_registry();
    let work = scratch();
    let (layout, _) = super::small_layout(work.path());
    let trusted = GpgKey::generate("trusted").unwrap();
    let (mirror_lookaside, default_lookaside) = (work.path().join("mirror-sigs"), work.path().join("default-sigs"));
    std::fs::create_dir_all(&default_lookaside).unwrap();
    let requested = format!("{dead}/team/app:v1");
    trusted
        .push_signed(&layout, "v1", &mirror.image_ref("mirrored/app:v1"), &mirror_lookaside, Some(&requested))
        .unwrap();

    let conf = work.path().join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nprefix = \"{dead}/team\"\nlocation = \"{dead}/team\"\n\
             [[registry.mirror]]\nlocation = \"{}/mirrored\"\n",
            mirror.addr()
        ),
    )
    .unwrap();
    let registries_d = work.path().join("registries.d");
    std::fs::create_dir_all(&registries_d).unwrap();
    std::fs::write(
        registries_d.join("default.yaml"),
        format!(
            "default-docker:\n  lookaside: file://{}\ndocker:\n  {}:\n    lookaside: file://{}\n",
            default_lookaside.display(),
            mirror.addr(),
            mirror_lookaside.display()
        ),
    )
    .unwrap();
    let policy = policy_requiring(work.path(), &trusted, &format!("{dead}/team"));
    let storage = work.path().join("storage");
    let out = Command::new(sysctr_bin())
        .args(["pull", &requested, "--signature-policy", policy.to_str().unwrap()])
        .args(["--registries-d", registries_d.to_str().unwrap()])
        .env("SYSCTR_STORAGE", &storage)
        .env("CONTAINERS_REGISTRIES_CONF", &conf)
        .env("REGISTRY_AUTH_FILE", storage.with_extension("no-auth.json"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(stderr(&out).contains("signed by key"), "{}", describe_output(&out));
}

/// `python3 -m http.server` over a directory, on a free loopback port.
struct LookasideServer {
    child: std::process::Child,
    url: String,
}

impl LookasideServer {
    fn serve(dir: &Path) -> LookasideServer {
        let port = common::registry::free_port().unwrap();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        wait_for("the lookaside server", Duration::from_secs(10), Duration::from_millis(50), || {
            Ok(common::registry::port_open(&addr).then_some(()))
        })
        .unwrap();
        LookasideServer { child, url: format!("http://{addr}") }
    }
}

impl Drop for LookasideServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sigstore_signatures_attached_in_the_registry_are_required_by_the_policy() {
    let registry = Registry::start().unwrap();
    let work = scratch();
    let (layout, info) = super::small_layout(work.path());
    let image = |repository: &str| registry.image_ref(repository);
    for repository in ["team/app", "team/unsigned", "team/stranger", "team/elsewhere"] {
        push(&layout, "v1", &image(&format!("{repository}:v1"))).unwrap();
    }
    let key = SigstoreKey::from_seed(7);
    let stranger = SigstoreKey::from_seed(9);
    let digest = &info.manifest_digest;
    let (claim, signature) = key.attach(&registry, "team/app", digest, digest, &image("team/app:v1")).unwrap();
    stranger.attach(&registry, "team/stranger", digest, digest, &image("team/stranger:v1")).unwrap();
    let another = format!("sha256:{}", "e".repeat(64));
    key.attach(&registry, "team/elsewhere", digest, &another, &image("team/elsewhere:v1")).unwrap();

    let public = work.path().join("cosign.pub");
    std::fs::write(&public, key.public_pem()).unwrap();
    let policy = work.path().join("policy.json");
    write_json(&policy, serde_json::json!({"default": [{"type": "sigstoreSigned", "keyPath": public}]}));
    let registries_d = work.path().join("registries.d");
    std::fs::create_dir_all(&registries_d).unwrap();
    let storage = work.path().join("storage");
    let pull = |repository: &str| sysctr(&storage, &policy, &registries_d, &["pull", &image(repository)]);

    // registries.d does not ask for attachments: none are looked for, so nothing is accepted.
    assert_refused(|| pull("team/app:v1"), "does not set use-sigstore-attachments", &storage, &registry, &info);

    std::fs::write(registries_d.join("default.yaml"), "default-docker:\n  use-sigstore-attachments: true\n").unwrap();
    for (repository, expected) in [
        ("team/unsigned:v1", format!("no sigstore signature is attached to {digest}")),
        ("team/stranger:v1", "signature 1: it is not signed by any of the trusted keys".to_string()),
        ("team/elsewhere:v1", format!("it signs manifest {another}, not {digest}")),
    ] {
        assert_refused(|| pull(repository), &expected, &storage, &registry, &info);
    }
    let out = pull("team/app:v1");
    assert!(out.status.success(), "{}", describe_output(&out));
    let expected = format!("signature verified: sigstore signature by {}", public.display());
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));

    // A multi-platform image: a signature of the index counts, and so does one of this host's
    // platform manifest alone (bound to the index by its digest); another platform's does not.
    let (amd64, arm64) = two_platform_images();
    let multi = work.path().join("multi");
    let index = write_oci_index_layout(&multi, "v1", &[&arm64, &amd64]).unwrap();
    let ours = if std::env::consts::ARCH == "aarch64" { &index.manifests[0] } else { &index.manifests[1] };
    let theirs = if std::env::consts::ARCH == "aarch64" { &index.manifests[1] } else { &index.manifests[0] };
    for repository in ["multi/index", "multi/platform", "multi/other"] {
        push_all(&multi, "v1", &image(&format!("{repository}:v1"))).unwrap();
    }
    let index_digest = &index.index_digest;
    key.attach(&registry, "multi/index", index_digest, index_digest, &image("multi/index:v1")).unwrap();
    let platform = &ours.manifest_digest;
    key.attach(&registry, "multi/platform", platform, platform, &image("multi/platform:v1")).unwrap();
    let other = &theirs.manifest_digest;
    key.attach(&registry, "multi/other", other, other, &image("multi/other:v1")).unwrap();
    for repository in ["multi/index:v1", "multi/platform:v1"] {
        let out = pull(repository);
        assert!(out.status.success(), "{repository}: {}", describe_output(&out));
    }
    let out = pull("multi/other:v1");
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(stderr(&out).contains("no sigstore signature is attached to"), "{}", stderr(&out));

    // The signature is plain ECDSA P-256 over SHA-256 in DER, as OpenSSL checks it.
    std::fs::write(work.path().join("claim"), &claim).unwrap();
    std::fs::write(work.path().join("claim.sig"), &signature).unwrap();
    let checked = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify", "cosign.pub", "-signature", "claim.sig", "claim"])
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&checked.stdout).contains("Verified OK"), "{}", describe_output(&checked));

    // The same policy for the reference implementation. Debian's skopeo is built with sigstore
    // disabled and says so; a skopeo that verifies must accept the attachment.
    let reference = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--policy", policy.to_str().unwrap()])
        .args(["--registries.d", registries_d.to_str().unwrap()])
        .arg(format!("docker://{}", image("team/app:v1")))
        .arg(format!("oci:{}:v1", work.path().join("copied").display()))
        .output()
        .unwrap();
    if String::from_utf8_lossy(&reference.stderr).contains("sigstore disabled") {
        eprintln!("skopeo here cannot verify sigstore signatures; the format was checked by OpenSSL only");
    } else {
        assert!(reference.status.success(), "skopeo refused the attachment: {}", describe_output(&reference));
    }
}
