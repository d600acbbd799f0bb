//! The shipped auto-update units on a booted host: they pass `systemd-analyze verify`, and a run
//! of the service moves a container to the newer image pushed behind its tag, leaving alone the
//! one installed with --no-auto-update. `update --check` sees the newer image first, changing
//! nothing.

use std::path::Path;

use anyhow::Result;

use super::common::*;
use super::{active_slot, sysctr_ok, wait_active, Setup};

#[test]
fn the_auto_update_timer_updates_what_may_be_updated() -> Result<()> {
    let setup = Setup::new();
    let image = setup.push(&hello_image(), "demo/hello");
    let host = TestHost::boot()?;
    // As the package installs them.
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("units");
    for unit in ["sysctr-auto-update.service", "sysctr-auto-update.timer"] {
        std::fs::copy(units.join(unit), host.root().join("usr/lib/systemd/system").join(unit))?;
    }
    std::fs::copy(sysctr_bin(), host.root().join("usr/bin/sysctr"))?;
    let verify = host.exec(&[
        "systemd-analyze",
        "verify",
        "/usr/lib/systemd/system/sysctr-auto-update.service",
        "/usr/lib/systemd/system/sysctr-auto-update.timer",
    ])?;
    assert!(verify.status.success() && verify.stderr.is_empty(), "{}", describe_output(&verify));

    sysctr_ok(&host, &["install", "--now", "--name", "followed", "--set", "RECEIVER=A", &image]);
    sysctr_ok(&host, &["install", "--now", "--no-auto-update", "--name", "pinned", "--set", "RECEIVER=B", &image]);
    wait_active(&host, "followed.service");
    let checked = sysctr_ok(&host, &["update", "--check", "--all"]);
    assert!(checked.contains("followed: up to date") && !checked.contains("pinned"), "{checked}");

    setup.push(&hello_image().layer(Layer::gzip().file("usr/share/newer", "1", 0o644)), "demo/hello");
    let checked = sysctr_ok(&host, &["update", "--check", "followed"]);
    assert!(checked.starts_with("followed: a newer image is available"), "{checked}");
    assert_eq!(active_slot(&host, "followed"), "followed.0", "--check changed something");

    host.exec_ok(&["systemctl", "daemon-reload"])?;
    host.exec_ok(&["systemctl", "start", "sysctr-auto-update.service"])?;
    assert_eq!(active_slot(&host, "followed"), "followed.1", "{}", host.journal("sysctr-auto-update.service"));
    assert_eq!(active_slot(&host, "pinned"), "pinned.0");
    wait_active(&host, "followed.service");
    assert!(host.journal("sysctr-auto-update.service").contains("updated followed"));
    host.exec_ok(&["systemctl", "enable", "--now", "sysctr-auto-update.timer"])?;
    let next = host.exec_ok(&["systemctl", "show", "-P", "NextElapseUSecRealtime", "sysctr-auto-update.timer"])?;
    assert!(!next.trim().is_empty(), "the timer is not scheduled");
    Ok(())
}
