//! Ready means serving, on a booted host: a `healthy` container's start job ends only once its
//! health command passes inside it, so a unit ordered after it starts only then; a running
//! container that stops passing is shown unhealthy; and an update to an image that starts but
//! never becomes healthy is rolled back, by `update`, by `apply` and by the auto-update timer.

use std::time::Duration;

use anyhow::Result;

use super::auto_update::install_shipped_units;
use super::common::*;
use super::{active_slot, sysctr_ok, unit_property, wait_active, Setup};

/// A container that runs `first` (shell), then idles until SIGTERM, on which it exits 0.
fn idle_image(first: &str) -> Image {
    let script = format!("trap 'exit 0' TERM; {first}; while :; do sleep 1; done");
    Image::new().layer(busybox_layer()).cmd(&["/bin/sh", "-c", &script]).label("atomic.type", "system")
}

/// A container that becomes ready after a while: it creates /tmp/ready `delay` seconds after it
/// starts (never, with `None`).
fn slow_image(delay: Option<u32>, tag: &str) -> Image {
    match delay {
        Some(seconds) => idle_image(&format!("echo {tag}; sleep {seconds}; touch /tmp/ready")),
        None => idle_image(&format!("echo {tag}")),
    }
}

const HEALTH: &str = "test -f /tmp/ready";

/// A unit that requires `web`, ordered after it, and fails unless web's `file` exists.
fn dependent_unit(file: &str) -> String {
    format!(
        "[Unit]\nRequires=web.service\nAfter=web.service\n\
         [Service]\nType=oneshot\nRemainAfterExit=yes\n\
         ExecStart=/usr/sbin/runc --systemd-cgroup exec web test -f {file}\n"
    )
}

#[test]
fn a_healthy_container_gates_the_units_after_it_and_shows_its_health() -> Result<()> {
    let setup = Setup::new();
    let image = setup.push(&slow_image(Some(3), "v1"), "demo/slow");
    let host = TestHost::boot()?;
    let args = ["install", "--name", "web", "--health-cmd", HEALTH, "--health-interval", "1s", "--health-retries", "2"];
    sysctr_ok(&host, &[&args[..], &[image.as_str()]].concat());
    assert_eq!(unit_property(&host, "web.service", "Type"), "notify");
    std::fs::write(host.root().join("etc/systemd/system/dependent.service"), dependent_unit("/tmp/ready"))?;
    host.exec_ok(&["systemctl", "daemon-reload"])?;

    // Starting the dependent pulls web in, and waits for it to be healthy, not merely running.
    let started = std::time::Instant::now();
    let out = host.exec(&["systemctl", "start", "dependent.service"])?;
    assert!(out.status.success(), "{}\n{}", describe_output(&out), host.journal("web.service"));
    assert!(started.elapsed() >= Duration::from_secs(3), "web was ready before its check could pass");
    assert_eq!(unit_property(&host, "dependent.service", "ActiveState"), "active");
    let journal = host.journal("web.service");
    assert!(journal.contains("web is healthy after"), "{journal}");
    // runc is the main process, as without sysctr; the watcher beside it keeps checking.
    let main_pid = unit_property(&host, "web.service", "MainPID");
    assert_eq!(host.exec_ok(&["cat", &format!("/proc/{main_pid}/comm")])?.trim(), "runc");

    let status: serde_json::Value = serde_json::from_str(&sysctr_ok(&host, &["status", "--json", "web"]))?;
    assert_eq!(status["current"]["ready"]["ready"], "healthy", "{status}");
    assert_eq!(status["current"]["ready"]["health"]["command"], serde_json::json!(["/bin/sh", "-c", HEALTH]));
    assert_eq!(status["health"]["state"], "healthy", "{status}");

    // It stops passing: after two failed checks it is shown unhealthy, and keeps running (log).
    host.exec_ok(&["runc", "--systemd-cgroup", "exec", "web", "rm", "/tmp/ready"])?;
    wait_for("web to be unhealthy", Duration::from_secs(20), Duration::from_millis(200), || {
        let status: serde_json::Value = serde_json::from_str(&sysctr_ok(&host, &["status", "--json", "web"]))?;
        Ok((status["health"]["state"] == "unhealthy").then_some(()))
    })?;
    let text = sysctr_ok(&host, &["status", "web"]);
    assert!(text.contains("health: unhealthy since") && text.contains("last check exited 1"), "{text}");
    assert!(host.journal("web.service").contains("web is unhealthy: 2 checks in a row failed"));
    assert_eq!(unit_property(&host, "web.service", "ActiveState"), "active");
    assert_eq!(unit_property(&host, "web.service", "StatusText"), "unhealthy: exited 1");

    // With on_unhealthy = restart, an unhealthy container fails as a watchdog would, and its
    // unit's Restart= starts it again, healthy.
    let again = ["install", "--now", "--name", "again", "--health-cmd", HEALTH, "--health-interval", "1s"];
    let restart = ["--health-retries", "1", "--on-unhealthy", "restart", image.as_str()];
    sysctr_ok(&host, &[&again[..], &restart].concat());
    host.exec_ok(&["runc", "--systemd-cgroup", "exec", "again", "rm", "/tmp/ready"])?;
    wait_for("again to be restarted", Duration::from_secs(30), Duration::from_millis(200), || {
        Ok((unit_property(&host, "again.service", "NRestarts") == "1").then_some(()))
    })
    .map_err(|e| e.context(host.journal("again.service")))?;
    wait_active(&host, "again.service");
    host.exec_ok(&["runc", "--systemd-cgroup", "exec", "again", "test", "-f", "/tmp/ready"])?;
    assert!(host.journal("again.service").contains("stopping again to be restarted (on_unhealthy = restart)"));

    // A check that outlasts its timeout is killed inside the container, not left running.
    let hang = "test -f /tmp/ready && { ! test -f /tmp/hang || sleep 100; }";
    let hanging = ["install", "--now", "--name", "hang", "--health-cmd", hang, "--health-interval", "1s"];
    sysctr_ok(&host, &[&hanging[..], &["--health-timeout", "1s", image.as_str()]].concat());
    host.exec_ok(&["runc", "--systemd-cgroup", "exec", "hang", "touch", "/tmp/hang"])?;
    wait_for("a check to time out", Duration::from_secs(20), Duration::from_millis(200), || {
        let status: serde_json::Value = serde_json::from_str(&sysctr_ok(&host, &["status", "--json", "hang"]))?;
        Ok(status["health"]["last_result"].as_str().is_some_and(|r| r.starts_with("timed out after 1s")).then_some(()))
    })?;
    let processes = host.exec_ok(&["runc", "--systemd-cgroup", "exec", "hang", "ps"])?;
    assert!(!processes.contains("sleep 100"), "{processes}");

    // A container with nothing set is ready once runc has started it: runc is its main process.
    let plain = setup.push(&slow_image(None, "plain"), "demo/plain");
    sysctr_ok(&host, &["install", "--now", "--name", "plain", &plain]);
    assert_eq!(unit_property(&host, "plain.service", "Type"), "notify");
    assert_eq!(unit_property(&host, "plain.service", "StatusText"), "started");
    let main_pid = unit_property(&host, "plain.service", "MainPID");
    assert_eq!(host.exec_ok(&["cat", &format!("/proc/{main_pid}/comm")])?.trim(), "runc");
    host.exec_ok(&["runc", "--systemd-cgroup", "exec", "plain", "true"])?;
    host.exec_ok(&["systemctl", "stop", "plain.service"])?;
    let main_status =
        host.exec_ok(&["systemctl", "show", "-p", "ExecMainCode,ExecMainStatus,Result", "plain.service"])?;
    assert_eq!(
        unit_property(&host, "plain.service", "Result"),
        "success",
        "{main_status}\n{}",
        host.journal("plain.service")
    );
    Ok(())
}

#[test]
fn an_update_that_never_becomes_healthy_is_rolled_back_by_update_apply_and_the_timer() -> Result<()> {
    let setup = Setup::new();
    let image = setup.push(&slow_image(Some(1), "v1"), "demo/slow");
    let host = TestHost::boot()?;
    install_shipped_units(&host, &["sysctr-auto-update.service", "sysctr-auto-update.timer"])?;
    let settings = ["--health-cmd", HEALTH, "--start-timeout", "6s", "--health-interval", "1s"];
    sysctr_ok(&host, &[&["install", "--now", "--name", "web"][..], &settings, &[image.as_str()]].concat());
    assert_eq!(active_slot(&host, "web"), "web.0");

    // The newer image starts, and never passes its check.
    setup.push(&slow_image(None, "v2"), "demo/slow");
    let out = host.run_sysctr(&["update", "web"])?;
    assert!(!out.status.success(), "{}", describe_output(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("the update of web failed; rolled back to"), "{said}");
    let journal = host.journal("web.service");
    assert!(journal.contains("web did not become healthy within 6s: the last check exited 1"), "{journal}");
    assert_serving_v1(&host);
    let status: serde_json::Value = serde_json::from_str(&sysctr_ok(&host, &["status", "--json", "web"]))?;
    let reason = status["current"]["failed_update"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("could not start web.service"), "{status}");
    assert!(sysctr_ok(&host, &["status", "web"]).contains("failed at"));

    // The timer's run: the same.
    host.exec_ok(&["systemctl", "daemon-reload"])?;
    let out = host.exec(&["systemctl", "start", "sysctr-auto-update.service"])?;
    assert!(!out.status.success(), "the auto-update succeeded: {}", describe_output(&out));
    assert!(host.journal("sysctr-auto-update.service").contains("rolled back"));
    assert_serving_v1(&host);

    // apply, to another tag that never becomes healthy.
    let never = setup.push(&slow_image(None, "v2"), "demo/never");
    let file = setup.work.join("node.toml");
    std::fs::write(
        &file,
        format!(
            "[[container]]\nname = \"web\"\nimage = \"{never}\"\nhealth_cmd = \"{HEALTH}\"\n\
             start_timeout = \"6s\"\nhealth_interval = \"1s\"\n"
        ),
    )?;
    let out = host.run_sysctr(&["apply", file.to_str().unwrap()])?;
    assert!(!out.status.success(), "{}", describe_output(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rolled back"), "{}", describe_output(&out));
    assert_serving_v1(&host);
    Ok(())
}

/// The first image runs again, healthy, from the first slot.
fn assert_serving_v1(host: &TestHost) {
    assert_eq!(active_slot(host, "web"), "web.0");
    wait_active(host, "web.service");
    let status: serde_json::Value =
        serde_json::from_str(&sysctr_ok(host, &["status", "--json", "web"])).expect("status --json");
    assert_eq!(status["health"]["state"], "healthy", "{status}");
    // Only the first image ever creates it.
    host.exec_ok(&["runc", "--systemd-cgroup", "exec", "web", "test", "-f", "/tmp/ready"]).expect("v1 runs");
}

/// A boot with no network at all, whose apply file names an image the store does not have: the
/// apply service tries the registry again within the bound set in /etc/default/sysctr, then
/// fails saying what, from where and why, and the boot reaches multi-user.target within that
/// bound.
#[test]
fn a_boot_without_network_gives_up_on_a_missing_image_within_its_bound() -> Result<()> {
    let mut host = TestHost::boot_without_network()?;
    install_shipped_units(&host, &["sysctr-apply.service", "sysctr-apply.path"])?;
    let root = host.root();
    std::fs::create_dir_all(root.join("etc/sysctr"))?;
    std::fs::write(
        root.join("etc/sysctr/node.toml"),
        "[[container]]\nname = \"web\"\nimage = \"127.0.0.1:1/demo/web:v1\"\n",
    )?;
    std::fs::write(root.join("etc/default/sysctr"), "SYSCTR_WAIT_ONLINE=3s\nSYSCTR_PULL_RETRY=6s\n")?;
    host.exec_ok(&["systemctl", "enable", "sysctr-apply.service"])?;
    host.reboot()?;

    wait_for("multi-user.target", Duration::from_secs(60), Duration::from_millis(200), || {
        Ok((unit_property(&host, "multi-user.target", "ActiveState") == "active").then_some(()))
    })?;
    let userspace: u64 = host.exec_ok(&["systemctl", "show", "-P", "UserspaceTimestampMonotonic"])?.trim().parse()?;
    let reached: u64 = unit_property(&host, "multi-user.target", "ActiveEnterTimestampMonotonic").parse()?;
    let seconds = reached.saturating_sub(userspace) as f64 / 1e6;
    eprintln!("multi-user.target reached {seconds:.1} s after systemd started, with a pull retried and given up");
    // The boot waited for the retries (tries at 0, 1 and 3 s; the next would end past 6 s), and
    // no longer than the bound: 3 s of network wait, 6 s of retries, and the boot itself.
    assert!((3.0..20.0).contains(&seconds), "{seconds} s");
    assert_eq!(unit_property(&host, "sysctr-apply.service", "Result"), "exit-code");
    let journal = host.journal("sysctr-apply.service");
    assert!(journal.contains("trying again in 1s (attempt 1, --pull-retry)"), "{journal}");
    assert!(journal.contains("gave up on 127.0.0.1:1/demo/web:v1 after"), "{journal}");
    assert!(journal.contains("cannot reach registry 127.0.0.1:1"), "{journal}");
    assert!(!root.join("var/lib/sysctr/deployments/web").exists());
    Ok(())
}

/// The units that require a container and ran are started again after its update, as `systemctl
/// restart` would; with --ready-dependents, one that is not ready again rolls the update back.
#[test]
fn an_update_that_breaks_a_dependent_is_rolled_back_with_ready_dependents() -> Result<()> {
    let setup = Setup::new();
    let image = setup.push(&idle_image("touch /tmp/v1 /tmp/ready"), "demo/web");
    let host = TestHost::boot()?;
    sysctr_ok(&host, &["install", "--now", "--name", "web", "--health-cmd", HEALTH, &image]);
    // It works only with the first image.
    std::fs::write(host.root().join("etc/systemd/system/needs-v1.service"), dependent_unit("/tmp/v1"))?;
    host.exec_ok(&["systemctl", "daemon-reload"])?;
    host.exec_ok(&["systemctl", "start", "needs-v1.service"])?;

    // Healthy, but without what the dependent needs.
    setup.push(&slow_image(Some(0), "v2"), "demo/web");
    let out = host.run_sysctr(&["update", "--ready-dependents", "web"])?;
    assert!(!out.status.success(), "{}", describe_output(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("needs-v1.service, which requires web.service, is not ready again"), "{said}");
    assert!(said.contains("rolled back to"), "{said}");
    assert_eq!(active_slot(&host, "web"), "web.0");
    // The undo started it again, on the first image.
    assert_eq!(unit_property(&host, "needs-v1.service", "ActiveState"), "active");

    // Without it, the update is kept, and the dependent's failure said.
    let out = host.run_sysctr(&["update", "web"])?;
    assert!(out.status.success(), "{}", describe_output(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("needs-v1.service, which requires web.service, did not start again"), "{said}");
    assert_eq!(active_slot(&host, "web"), "web.1");
    assert_eq!(unit_property(&host, "needs-v1.service", "ActiveState"), "failed");
    Ok(())
}
