//! The shipped auto-update units on a booted host: they pass `systemd-analyze verify`, and a run
//! of the service moves a container to the newer image pushed behind its tag, leaving alone the
//! one installed with --no-auto-update. `update --check` sees the newer image first, changing
//! nothing, and asks the registry once for containers of the same image. The apply units converge the host to the files dropped in /etc/sysctr.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use super::common::*;
use super::{active_slot, greeting, sysctr_ok, wait_active, Setup};

/// Puts `units` from `units/` and this build's binary where the package puts them, and checks
/// that `systemd-analyze verify` finds nothing to say about the units.
pub(super) fn install_shipped_units(host: &TestHost, units: &[&str]) -> Result<()> {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("units");
    let mut verify = vec!["systemd-analyze".to_string(), "verify".to_string()];
    for unit in units {
        std::fs::copy(shipped.join(unit), host.root().join("usr/lib/systemd/system").join(unit))?;
        verify.push(format!("/usr/lib/systemd/system/{unit}"));
    }
    std::fs::copy(sysctr_bin(), host.root().join("usr/bin/sysctr"))?;
    let libexec = host.root().join("usr/libexec/sysctr");
    std::fs::create_dir_all(&libexec)?;
    std::fs::copy(sysctr_bin().with_file_name("sysctr-supervise"), libexec.join("sysctr-supervise"))?;
    let verified = host.exec(&verify.iter().map(String::as_str).collect::<Vec<_>>())?;
    assert!(verified.status.success() && verified.stderr.is_empty(), "{}", describe_output(&verified));
    Ok(())
}

#[test]
fn the_auto_update_timer_updates_what_may_be_updated() -> Result<()> {
    let setup = Setup::new();
    let image = setup.push(&hello_image(), "demo/hello");
    let host = TestHost::boot()?;
    install_shipped_units(&host, &["sysctr-auto-update.service", "sysctr-auto-update.timer"])?;

    // --no-block: install returns once the start is queued; systemd brings the service up.
    let said =
        sysctr_ok(&host, &["install", "--now", "--no-block", "--name", "followed", "--set", "RECEIVER=A", &image]);
    assert!(said.starts_with("installed, start queued: followed"), "{said}");
    sysctr_ok(&host, &["install", "--now", "--no-auto-update", "--name", "pinned", "--set", "RECEIVER=B", &image]);
    sysctr_ok(&host, &["install", "--name", "also", "--set", "RECEIVER=C", &image]);
    wait_active(&host, "followed.service");
    // Each image is asked for once, however many containers run it.
    let manifest_requests = || {
        let log = std::fs::read_to_string(setup.registry.log_path()).unwrap();
        log.lines().filter(|line| line.contains("/v2/demo/hello/manifests/")).count()
    };
    let before = manifest_requests();
    sysctr_ok(&host, &["update", "--check", "followed"]);
    let one = manifest_requests() - before;
    let checked = sysctr_ok(&host, &["update", "--check", "--all"]);
    assert!(checked.contains("followed: up to date") && checked.contains("also: up to date"), "{checked}");
    assert!(!checked.contains("pinned"), "{checked}");
    assert_eq!(manifest_requests() - before - one, one, "two containers of one image, checked with --all");

    setup.push(&hello_image().layer(Layer::gzip().file("usr/share/newer", "1", 0o644)), "demo/hello");
    let checked = sysctr_ok(&host, &["update", "--check", "followed"]);
    assert!(checked.starts_with("followed: a newer image is available"), "{checked}");
    let out = host.run_sysctr(&["update", "--check", "--json", "--detailed-exitcode", "--all"])?;
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    let checked: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!((checked["kind"].as_str(), checked["changed"].as_bool()), (Some("UpdateResult"), Some(true)));
    assert_eq!(checked["containers"][0]["action"], "update-available", "{checked}");
    assert_eq!(checked["containers"][1]["action"], "update-available", "{checked}");
    assert_eq!(active_slot(&host, "followed"), "followed.0", "--check changed something");

    host.exec_ok(&["systemctl", "daemon-reload"])?;
    host.exec_ok(&["systemctl", "start", "sysctr-auto-update.service"])?;
    assert_eq!(active_slot(&host, "followed"), "followed.1", "{}", host.journal("sysctr-auto-update.service"));
    assert_eq!(active_slot(&host, "pinned"), "pinned.0");
    assert_eq!(active_slot(&host, "also"), "also.1");
    wait_active(&host, "followed.service");
    assert!(host.journal("sysctr-auto-update.service").contains("updated followed"));
    // Under systemd the log goes to the journal, each event with the container it is about.
    let about = host.exec_ok(&["journalctl", "--no-pager", "-o", "cat", "SYSCTR_CONTAINER=followed"])?;
    assert!(about.contains("updating") && about.contains("updated"), "{about}");
    assert!(!about.contains("pinned"), "{about}");
    host.exec_ok(&["systemctl", "enable", "--now", "sysctr-auto-update.timer"])?;
    let next = host.exec_ok(&["systemctl", "show", "-P", "NextElapseUSecRealtime", "sysctr-auto-update.timer"])?;
    assert!(!next.trim().is_empty(), "the timer is not scheduled");
    Ok(())
}

/// The shipped apply units: a TOML file dropped in /etc/sysctr (as cloud-init or Ignition
/// would) is enough for the container to be installed and started, and a change to the file is
/// applied too.
#[test]
fn a_file_dropped_in_etc_sysctr_is_applied() -> Result<()> {
    let setup = Setup::new();
    let image = setup.push(&hello_image(), "demo/hello");
    let host = TestHost::boot()?;
    install_shipped_units(&host, &["sysctr-apply.service", "sysctr-apply.path"])?;
    host.exec_ok(&["systemctl", "daemon-reload"])?;
    host.exec_ok(&["systemctl", "enable", "--now", "sysctr-apply.path"])?;

    let drop_file = |receiver: &str| -> Result<()> {
        let toml =
            format!("[[container]]\nname = \"hello\"\nimage = \"{image}\"\nset = {{ RECEIVER = \"{receiver}\" }}\n");
        // Written aside, then renamed into place, as configuration tools do.
        host.exec_ok(&[
            "sh",
            "-c",
            &format!("printf '%s' '{toml}' > /etc/sysctr/.node.tmp && mv /etc/sysctr/.node.tmp /etc/sysctr/node.toml"),
        ])?;
        Ok(())
    };
    drop_file("Dropped")?;
    wait_active(&host, "hello.service");
    greeting(&host, "Dropped");
    drop_file("Changed")?;
    greeting(&host, "Changed");
    // The service restarts before apply's run ends: wait for the run to say what it did.
    wait_for("apply to report the update", Duration::from_secs(20), Duration::from_millis(200), || {
        Ok(host.journal("sysctr-apply.service").contains("updated hello").then_some(()))
    })?;
    assert_eq!(active_slot(&host, "hello"), "hello.1");
    Ok(())
}
