//! Credentials, as podman finds and writes them (containers-auth.json(5)), against a real
//! registry that takes one user and password (distribution's htpasswd authentication), and
//! one behind a token service (bearer tokens, anonymous or traded for credentials).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::common::*;
use super::scratch;

const USER: &str = "provisioner";
const PASSWORD: &str = "s3cret-Pa55word";

/// Runs sysctr with the given environment, stdin and arguments; nothing of the machine's own
/// auth files is read (`REGISTRY_AUTH_FILE` is set, to a missing file unless the test says).
fn sysctr(storage: &Path, env: &[(&str, &str)], stdin: &str, args: &[&str]) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(sysctr_bin())
        .args(args)
        .env("SYSCTR_STORAGE", storage)
        .env("RUST_BACKTRACE", "0")
        .env("REGISTRY_AUTH_FILE", storage.with_extension("no-auth.json"))
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!said.contains(PASSWORD), "the password was shown: {said}");
    out
}

fn auth_entry(user: &str, password: &str) -> String {
    let basic = std::process::Command::new("base64")
        .arg("-w0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(format!("{user}:{password}").as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(basic.stdout).unwrap()
}

#[test]
fn private_registries_take_credentials_from_auth_files_login_and_helpers() {
    let registry = Registry::start_with_password(USER, PASSWORD).unwrap();
    let work = scratch();
    let (layout, _) = super::small_layout(work.path());
    let image = registry.image_ref("team/private:v1");
    push_with_credentials(&layout, "v1", &image, &format!("{USER}:{PASSWORD}")).unwrap();
    let host = registry.addr();
    let storage = work.path().join("storage");

    // Anonymous: refused, with what to do.
    let out = sysctr(&storage, &[], "", &["pull", &image]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("requires credentials: `sysctr login {host}`, or --authfile")), "{err}");

    // An auth file as podman writes it, most specific key first; a wrong password is named.
    let file = work.path().join("auth.json");
    let write = |entries: serde_json::Value| std::fs::write(&file, entries.to_string()).unwrap();
    write(serde_json::json!({"auths": {
        host.clone(): {"auth": auth_entry(USER, "wrong")},
        format!("{host}/team"): {"auth": auth_entry(USER, PASSWORD)},
    }}));
    let out = sysctr(&storage, &[], "", &["pull", "--authfile", file.to_str().unwrap(), &image]);
    assert!(out.status.success(), "{}", describe_output(&out));
    write(serde_json::json!({"auths": {host.clone(): {"auth": auth_entry(USER, "wrong")}}}));
    let out = sysctr(&storage, &[], "", &["rmi", &image]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let out = sysctr(&storage, &[("REGISTRY_AUTH_FILE", file.to_str().unwrap())], "", &["pull", &image]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the credentials of the auth file"));

    // A credential helper named for the registry.
    let helpers = work.path().join("bin");
    std::fs::create_dir(&helpers).unwrap();
    let helper = helpers.join("docker-credential-sysctrtest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread registry\n[ \"$1\" = get ] && [ \"$registry\" = '{host}' ] || exit 1\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$registry\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    write(serde_json::json!({"credHelpers": {host.clone(): "sysctrtest"}}));
    let path = format!("{}:{}", helpers.display(), std::env::var("PATH").unwrap());
    let env = [("REGISTRY_AUTH_FILE", file.to_str().unwrap()), ("PATH", path.as_str())];
    let out = sysctr(&storage, &env, "", &["pull", &image]);
    assert!(out.status.success(), "{}", describe_output(&out));

    // registries.conf's credential-helpers: a helper for every registry, no auth file at all.
    let conf = work.path().join("registries.conf");
    let env = [("CONTAINERS_REGISTRIES_CONF", conf.to_str().unwrap()), ("PATH", path.as_str())];
    let out = sysctr(&storage, &[], "", &["rmi", &image]);
    assert!(out.status.success(), "{}", describe_output(&out));
    std::fs::write(&conf, "credential-helpers = [\"containers-auth.json\"]\n").unwrap();
    let out = sysctr(&storage, &env, "", &["pull", &image]);
    assert_eq!(out.status.code(), Some(1), "pulled without the helper: {}", describe_output(&out));
    std::fs::write(&conf, "credential-helpers = [\"containers-auth.json\", \"sysctrtest\"]\n").unwrap();
    let out = sysctr(&storage, &env, "", &["pull", &image]);
    assert!(out.status.success(), "{}", describe_output(&out));

    // login checks before it saves; logout takes them away.
    let saved = work.path().join("login/auth.json");
    let login = |password: &str| {
        sysctr(
            &storage,
            &[],
            &format!("{password}\n"),
            &["login", "--authfile", saved.to_str().unwrap(), "-u", USER, "--password-stdin", &host],
        )
    };
    let out = login("not-it");
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the user name or password"));
    assert!(!saved.exists(), "wrong credentials were saved");
    let out = login(PASSWORD);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_eq!(std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777, 0o600);
    let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    assert_eq!(written["auths"][&host]["auth"], auth_entry(USER, PASSWORD));
    let env = [("REGISTRY_AUTH_FILE", saved.to_str().unwrap())];
    let out = sysctr(&storage, &[], "", &["rmi", &image]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let out = sysctr(&storage, &env, "", &["pull", &image]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let out = sysctr(&storage, &env, "", &["logout", &host]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let out = sysctr(&storage, &[], "", &["rmi", &image]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let out = sysctr(&storage, &env, "", &["pull", &image]);
    assert_eq!(out.status.code(), Some(1), "logged out, still pulled: {}", describe_output(&out));
}

/// A registry behind a token service, as Docker Hub, Quay and GHCR are: a public repository is
/// pulled with an anonymous token, a private one with a token the credentials were traded for,
/// and every request of the pull (manifest, config, layers) carries it.
#[test]
fn bearer_token_registries_give_anonymous_and_credentialed_tokens() {
    let registry = Registry::start_with_token_service(USER, PASSWORD).unwrap();
    let work = scratch();
    let (layout, _) = super::small_layout(work.path());
    let (public, private) = (registry.image_ref("public/app:v1"), registry.image_ref("team/private:v1"));
    for image in [&public, &private] {
        push_with_credentials(&layout, "v1", image, &format!("{USER}:{PASSWORD}")).unwrap();
    }
    let host = registry.addr();
    let storage = work.path().join("storage");
    let asked = registry.token_requests().len();

    let out = sysctr(&storage, &[], "", &["pull", &public]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let tokens = registry.token_requests().split_off(asked);
    assert!(!tokens.is_empty(), "pulled without a token");
    for token in &tokens {
        assert!(token["account"].is_null(), "an anonymous pull sent an account: {token}");
        assert_eq!(token["access"][0]["name"], "public/app", "{token}");
        assert_eq!(token["access"][0]["actions"], serde_json::json!(["pull"]), "{token}");
    }

    // Private, anonymously: the token grants nothing, and the hint is to log in.
    let out = sysctr(&storage, &[], "", &["pull", &private]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("requires credentials: `sysctr login {host}`, or --authfile")), "{err}");

    // login trades the credentials for a token before saving them.
    let saved = work.path().join("login/auth.json");
    let login = |password: &str| {
        let args = ["login", "--authfile", saved.to_str().unwrap(), "-u", USER, "--password-stdin", &host];
        sysctr(&storage, &[], &format!("{password}\n"), &args)
    };
    let out = login("not-it");
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the user name or password"));
    assert!(!saved.exists(), "wrong credentials were saved");
    assert!(login(PASSWORD).status.success());

    let asked = registry.token_requests().len();
    let out = sysctr(&storage, &[("REGISTRY_AUTH_FILE", saved.to_str().unwrap())], "", &["pull", &private]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let tokens = registry.token_requests().split_off(asked);
    assert!(!tokens.is_empty() && tokens.iter().all(|t| t["account"] == USER), "{tokens:?}");

    // Credentials the token service refuses are named as the auth file's.
    let file = work.path().join("wrong.json");
    std::fs::write(
        &file,
        serde_json::json!({"auths": {host.clone(): {"auth": auth_entry(USER, "wrong")}}}).to_string(),
    )
    .unwrap();
    let out = sysctr(&storage, &[], "", &["rmi", &private]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let out = sysctr(&storage, &[("REGISTRY_AUTH_FILE", file.to_str().unwrap())], "", &["pull", &private]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("the token service of registry {host} refused the credentials of the auth file")),
        "{err}"
    );
}
