//! containers-registries.conf(5) against real registries: mirrors tried before the registry and
//! reported when all fail, digest-only mirrors, blocked registries, locations, short names.

use std::path::Path;
use std::process::{Command, Output};

use super::common::*;
use super::{scratch, stderr};

/// `sysctr ARGS` with the registries configuration at `conf`.
fn sysctr(storage: &Path, conf: &Path, args: &[&str]) -> Output {
    sysctr_with_env(storage, conf, &[], args)
}

/// [`sysctr`], with more environment variables.
fn sysctr_with_env(storage: &Path, conf: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(sysctr_bin())
        .args(args)
        .env("SYSCTR_STORAGE", storage)
        .env("CONTAINERS_REGISTRIES_CONF", conf)
        .env("REGISTRY_AUTH_FILE", storage.with_extension("no-auth.json"))
        .env("RUST_BACKTRACE", "0")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn mirrors_blocked_registries_locations_and_short_names() {
    let mirror = Registry::start().unwrap();
    let work = scratch();
    let (layout, info) = super::small_layout(work.path());
    push(&layout, "v1", &mirror.image_ref("team/app:v1")).unwrap();
    let (dead, mirror_addr) = (dead_registry(), mirror.addr());
    let conf = work.path().join("registries.conf");
    let write = |text: String| std::fs::write(&conf, text).unwrap();
    let storage = |n: &str| work.path().join(format!("storage-{n}"));
    let ok = |out: &Output| assert!(out.status.success(), "{}", describe_output(out));
    let refused = |out: &Output| {
        assert_eq!(out.status.code(), Some(1), "{}", describe_output(out));
        stderr(out)
    };

    // The registry is down, its mirror up: pulled from the mirror, stored under the image's name.
    write(format!("[[registry]]\nlocation = \"{dead}\"\n[[registry.mirror]]\nlocation = \"{mirror_addr}\"\n"));
    let image = format!("{dead}/team/app:v1");
    ok(&sysctr(&storage("mirror"), &conf, &["pull", &image]));
    let images = sysctr(&storage("mirror"), &conf, &["images", "--json"]);
    assert!(String::from_utf8_lossy(&images.stdout).contains(&image), "{}", describe_output(&images));

    // A place that is not tried is not prepared: no credential helper runs for the registry
    // behind a mirror that gave the image.
    let bin = work.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let asked = work.path().join("helper-asked");
    let helper = bin.join("docker-credential-sysctrwitness");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh
cat >> '{}'
echo >> '{0}'
exit 1
",
            asked.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    write(format!(
        "credential-helpers = [\"sysctrwitness\"]\n[[registry]]\nlocation = \"{dead}\"\n\
         [[registry.mirror]]\nlocation = \"{mirror_addr}\"\n"
    ));
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = sysctr_with_env(&storage("witness"), &conf, &[("PATH", path.as_str())], &["pull", &image]);
    ok(&out);
    let asked = std::fs::read_to_string(&asked).unwrap_or_default();
    assert_eq!(asked.lines().collect::<Vec<_>>(), [mirror_addr.as_str()], "credentials were looked up for: {asked}");

    // A digest-only mirror is not asked for a tag; for a digest it is.
    write(format!(
        "[[registry]]\nlocation = \"{dead}\"\n[[registry.mirror]]\nlocation = \"{mirror_addr}\"\npull-from-mirror = \"digest-only\"\n"
    ));
    let err = refused(&sysctr(&storage("digest-only"), &conf, &["pull", &image]));
    assert!(err.contains(&format!("cannot reach registry {dead}")) && !err.contains(&mirror_addr), "{err}");
    let by_digest = format!("{dead}/team/app@{}", info.manifest_digest);
    ok(&sysctr(&storage("digest-only"), &conf, &["pull", &by_digest]));

    // Every place down: each is said.
    let dead_mirror = dead_registry();
    write(format!("[[registry]]\nlocation = \"{dead}\"\n[[registry.mirror]]\nlocation = \"{dead_mirror}\"\n"));
    let err = refused(&sysctr(&storage("down"), &conf, &["pull", &image]));
    let (at_mirror, at_registry) = err.split_once("; registry ").expect("two failures");
    assert!(at_mirror.contains(&format!("mirror {dead_mirror}/team/app: ")), "{err}");
    assert!(at_mirror.contains(&format!("cannot reach registry {dead_mirror}")), "{err}");
    assert!(at_registry.starts_with(&format!("{dead}/team/app: ")), "{err}");
    assert!(at_registry.contains(&format!("cannot reach registry {dead}")), "{err}");

    // A blocked registry is refused before anything is asked of it.
    write(format!("[[registry]]\nlocation = \"{mirror_addr}\"\nblocked = true\n"));
    let err = refused(&sysctr(&storage("blocked"), &conf, &["pull", &mirror.image_ref("team/app:v1")]));
    assert!(err.contains("are blocked by registries.conf"), "{err}");

    // A prefix served from another location.
    write(format!("[[registry]]\nprefix = \"registry.example/team\"\nlocation = \"{mirror_addr}/team\"\n"));
    ok(&sysctr(&storage("location"), &conf, &["pull", "registry.example/team/app:v1"]));

    // Short names: an alias, the only search registry, and an ambiguous one refused.
    write(format!(
        "unqualified-search-registries = [\"{mirror_addr}\"]\n[aliases]\n\"hello\" = \"{mirror_addr}/team/app\"\n"
    ));
    let out = sysctr(&storage("alias"), &conf, &["pull", "hello:v1"]);
    ok(&out);
    assert!(stderr(&out).contains(&format!("short name 'hello:v1' is {mirror_addr}/team/app:v1")), "{}", stderr(&out));
    ok(&sysctr(&storage("search"), &conf, &["pull", "team/app:v1"]));
    write(format!("unqualified-search-registries = [\"{mirror_addr}\", \"{dead}\"]\n"));
    let err = refused(&sysctr(&storage("ambiguous"), &conf, &["pull", "team/app:v1"]));
    assert!(
        err.contains("ambiguous short name") && err.contains(&format!("{mirror_addr}/team/app, {dead}/team/app")),
        "{err}"
    );
    // Permissive: each search registry in turn, the first that has the image wins; when none
    // has it, each is said.
    write(format!(
        "short-name-mode = \"permissive\"\nunqualified-search-registries = [\"{dead}\", \"{mirror_addr}\"]\n"
    ));
    let out = sysctr(&storage("permissive"), &conf, &["pull", "team/app:v1"]);
    ok(&out);
    let expected =
        format!("short name 'team/app:v1' is {mirror_addr}/team/app:v1 (the first search registry that has it)");
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
    let err = refused(&sysctr(&storage("permissive"), &conf, &["pull", "team/none:v1"]));
    assert!(
        err.contains(&format!("{dead}/team/none:v1: ")) && err.contains(&format!("{mirror_addr}/team/none:v1: ")),
        "{err}"
    );
    write(String::new());
    let err = refused(&sysctr(&storage("none"), &conf, &["pull", "etcd"]));
    assert!(err.contains("'etcd' is a short name") && !err.contains("docker.io"), "{err}");
}

/// A registry whose certificate comes from a CA of its own: refused, with where to put the CA,
/// until that CA is trusted for it.
#[test]
fn a_registry_ca_is_trusted_from_its_certificate_directory() {
    let registry = Registry::start_tls().unwrap();
    let work = scratch();
    let (layout, _) = super::small_layout(work.path());
    let image = registry.image_ref("team/tls:v1");
    push(&layout, "v1", &image).unwrap();
    let conf = work.path().join("registries.conf");
    let storage = work.path().join("storage");

    // Loopback registries are plain HTTP unless told otherwise.
    let out = sysctr(&storage, &conf, &["pull", "--tls-verify=true", &image]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let err = stderr(&out);
    let expected = format!("put its CA in /etc/containers/certs.d/{}/ca.crt, or pass --cert-dir", registry.addr());
    assert!(err.contains("has a certificate this host does not trust") && err.contains(&expected), "{err}");

    let ca = registry.ca_dir();
    let out = sysctr(&storage, &conf, &["pull", "--tls-verify=true", "--cert-dir", ca.to_str().unwrap(), &image]);
    assert!(out.status.success(), "{}", describe_output(&out));
}

/// HTTPS asked of a registry that speaks plain HTTP: said as such, with what to pass instead.
#[test]
fn a_plain_http_registry_asked_for_https_is_named_as_such() {
    let registry = Registry::start().unwrap();
    let work = scratch();
    let (layout, _) = super::small_layout(work.path());
    let image = registry.image_ref("team/plain:v1");
    push(&layout, "v1", &image).unwrap();
    let out = sysctr(
        &work.path().join("storage"),
        &work.path().join("registries.conf"),
        &["pull", "--tls-verify=true", &image],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let err = stderr(&out);
    assert!(err.contains("does not speak HTTPS") && err.contains("--tls-verify=false"), "{err}");
}

/// The host's signature policy decides before anything is fetched: the most specific scope's
/// requirements apply, and a signature requirement whose keys cannot be read refuses the image
/// rather than pass it unchecked.
#[test]
fn the_signature_policy_is_followed_before_anything_is_fetched() {
    let registry = Registry::start().unwrap();
    let work = scratch();
    let (layout, _) = super::small_layout(work.path());
    for repository in ["team/app:v1", "team/signed:v1", "other/app:v1"] {
        push(&layout, "v1", &registry.image_ref(repository)).unwrap();
    }
    let host = registry.addr();
    let policy = work.path().join("policy.json");
    std::fs::write(
        &policy,
        serde_json::json!({
            "default": [{"type": "reject"}],
            "transports": {"docker": {
                format!("{host}/team"): [{"type": "insecureAcceptAnything"}],
                format!("{host}/team/signed"): [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/nonexistent.gpg"}],
            }}
        })
        .to_string(),
    )
    .unwrap();
    let conf = work.path().join("registries.conf");
    let storage = work.path().join("storage");
    let pull = |repository: &str| {
        sysctr(
            &storage,
            &conf,
            &["pull", "--signature-policy", policy.to_str().unwrap(), &registry.image_ref(repository)],
        )
    };

    let out = pull("team/app:v1");
    assert!(out.status.success(), "{}", describe_output(&out));
    let before = std::fs::read_to_string(registry.log_path()).unwrap().lines().count();
    let out = pull("other/app:v1");
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(stderr(&out).contains("is rejected (scope default"), "{}", stderr(&out));
    let out = pull("team/signed:v1");
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("scope docker \"{host}/team/signed\": signedBy")), "{err}");
    assert!(err.contains("the key file /nonexistent.gpg does not exist"), "{err}");
    let after = std::fs::read_to_string(registry.log_path()).unwrap().lines().count();
    assert_eq!(before, after, "the registry was asked for something");
    let images = sysctr(&storage, &conf, &["images", "--json"]);
    let listed = String::from_utf8_lossy(&images.stdout);
    assert!(listed.contains("team/app") && !listed.contains("signed") && !listed.contains("other"), "{listed}");
}
