//! The host's own registry configuration, on a booted test host: a registry CA installed in the
//! host's certs.d, and the host's signature policy refusing an update (rejected outright, then
//! signed by a key the host does not trust), which leaves the running deployment as it was; a
//! private registry behind TLS and a password, reached after `sysctr login`.

use anyhow::Result;

use super::common::*;
use super::{active_slot, greeting, host_file, sysctr_err, sysctr_ok, wait_active};

#[test]
fn the_hosts_certificates_and_policy_are_followed() -> Result<()> {
    let registry = Registry::start_tls()?;
    let work = tempfile::Builder::new().prefix("sysctr-st.").tempdir_in("/var/tmp")?;
    let push_tag = |image: &Image, tag: &str| -> Result<String> {
        let layout = work.path().join(tag);
        image.write_oci_layout(&layout, tag)?;
        let reference = registry.image_ref(&format!("demo/hello:{tag}"));
        push(&layout, tag, &reference)?;
        Ok(reference)
    };
    let v1 = push_tag(&hello_image(), "v1")?;
    let v2 = push_tag(&hello_image().layer(Layer::gzip().file("usr/share/v2", "v2", 0o644)), "v2")?;
    let host = TestHost::boot()?;
    let tls = "--tls-verify=true";

    // The registry's CA is not trusted until the host's certs.d has it.
    let err = sysctr_err(&host, &["install", tls, "--name", "hello", "--set", "RECEIVER=Tls", &v1]);
    assert!(err.contains(&format!("/etc/containers/certs.d/{}/ca.crt", registry.addr())), "{err}");
    assert!(!host.root().join("etc/systemd/system/hello.service").exists());
    let certs = host.root().join("etc/containers/certs.d").join(registry.addr());
    std::fs::create_dir_all(&certs)?;
    std::fs::copy(registry.ca_dir().join("ca.crt"), certs.join("ca.crt"))?;
    sysctr_ok(&host, &["install", tls, "--now", "--name", "hello", "--set", "RECEIVER=Tls", &v1]);
    wait_active(&host, "hello.service");
    greeting(&host, "Tls");

    // The host's policy rejects v2: the update is refused before anything is fetched, and the
    // running deployment stays.
    let policy = serde_json::json!({
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {"docker": {v2.as_str(): [{"type": "reject"}]}}
    });
    let unit = host_file(&host, "/etc/systemd/system/hello.service");
    std::fs::write(host.root().join("etc/containers/policy.json"), policy.to_string())?;
    let err = sysctr_err(&host, &["update", tls, "--rebase", &v2, "hello"]);
    assert!(err.contains(&format!("{v2} is rejected (scope docker \"{v2}\"")), "{err}");
    assert_eq!(active_slot(&host, "hello"), "hello.0");
    assert_eq!(host_file(&host, "/etc/systemd/system/hello.service"), unit);
    wait_active(&host, "hello.service");
    let images = sysctr_ok(&host, &["images", "--json"]);
    assert!(!images.contains(":v2"), "{images}");

    // Now the host wants demo/ signed by its key, found in its lookaside. v1 is signed by that
    // key; v2 by one the host does not trust: the update to v2 is refused, the deployment stays.
    let trusted = GpgKey::generate("host-key")?;
    let stranger = GpgKey::generate("stranger")?;
    let lookaside = host.root().join("var/lib/containers/sigstore");
    trusted.push_signed(&work.path().join("v1"), "v1", &v1, &lookaside, None)?;
    stranger.push_signed(&work.path().join("v2"), "v2", &v2, &lookaside, None)?;
    let keys = host.root().join("etc/pki/containers");
    std::fs::create_dir_all(&keys)?;
    std::fs::write(keys.join("host-key.gpg"), trusted.public_key(false)?)?;
    let registries_d = host.root().join("etc/containers/registries.d");
    std::fs::create_dir_all(&registries_d)?;
    std::fs::write(
        registries_d.join("default.yaml"),
        "default-docker:\n  lookaside: file:///var/lib/containers/sigstore\n",
    )?;
    let policy = serde_json::json!({
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {"docker": {format!("{}/demo", registry.addr()): [
            {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/etc/pki/containers/host-key.gpg"}
        ]}}
    });
    std::fs::write(host.root().join("etc/containers/policy.json"), policy.to_string())?;
    let err = sysctr_err(&host, &["update", tls, "--rebase", &v2, "hello"]);
    assert!(err.contains(&format!("{v2} is refused by the signature policy")), "{err}");
    assert!(err.contains("it is not signed by any of the trusted keys"), "{err}");
    assert_eq!(active_slot(&host, "hello"), "hello.0");
    assert_eq!(host_file(&host, "/etc/systemd/system/hello.service"), unit);
    wait_active(&host, "hello.service");
    greeting(&host, "Tls");
    let images = sysctr_ok(&host, &["images", "--json"]);
    assert!(!images.contains(":v2"), "{images}");
    // v1 itself passes the same policy.
    sysctr_ok(&host, &["update", tls, "hello"]);
    assert_eq!(active_slot(&host, "hello"), "hello.0");
    sysctr_ok(&host, &["uninstall", "hello"]);
    Ok(())
}

#[test]
fn a_private_tls_registry_is_installed_from_after_login() -> Result<()> {
    const USER: &str = "provisioner";
    const PASSWORD: &str = "Pa55-for-the-host";
    let registry = Registry::start_tls_with_password(USER, PASSWORD)?;
    let work = tempfile::Builder::new().prefix("sysctr-st.").tempdir_in("/var/tmp")?;
    let layout = work.path().join("v1");
    hello_image().write_oci_layout(&layout, "v1")?;
    let image = registry.image_ref("private/hello:v1");
    push_with_credentials(&layout, "v1", &image, &format!("{USER}:{PASSWORD}"))?;
    let host = TestHost::boot()?;
    let certs = host.root().join("etc/containers/certs.d").join(registry.addr());
    std::fs::create_dir_all(&certs)?;
    std::fs::copy(registry.ca_dir().join("ca.crt"), certs.join("ca.crt"))?;
    let tls = "--tls-verify=true";

    let err = sysctr_err(&host, &["install", tls, "--now", "--name", "hello", "--set", "RECEIVER=Private", &image]);
    assert!(err.contains(&format!("requires credentials: `sysctr login {}`", registry.addr())), "{err}");
    assert!(!host.root().join("etc/systemd/system/hello.service").exists());

    let login = |password: &str| -> Result<std::process::Output> {
        use std::io::Write as _;
        let bin = sysctr_bin();
        let mut child = host
            .command(&[bin.to_str().unwrap(), "login", tls, "-u", USER, "--password-stdin", &registry.addr()])
            .env("RUST_BACKTRACE", "0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes())?;
        Ok(child.wait_with_output()?)
    };
    let out = login("not-the-password")?;
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let out = login(PASSWORD)?;
    assert!(out.status.success(), "{}", describe_output(&out));
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!said.contains(PASSWORD), "{said}");

    sysctr_ok(&host, &["install", tls, "--now", "--name", "hello", "--set", "RECEIVER=Private", &image]);
    wait_active(&host, "hello.service");
    greeting(&host, "Private");
    sysctr_ok(&host, &["uninstall", "hello"]);
    Ok(())
}
