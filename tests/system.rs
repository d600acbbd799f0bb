//! sysctr on a real systemd: each test boots a throw-away host (systemd-nspawn on an overlay of
//! this machine's root), runs this build's sysctr inside it, and checks the result through
//! systemd itself and through what the container did.

// Tests stop at the first thing that is not as expected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "system/auto_update.rs"]
mod auto_update;
mod common;
#[path = "system/compat.rs"]
mod compat;
#[path = "system/durable.rs"]
mod durable;
#[path = "system/fleet.rs"]
mod fleet;
#[path = "system/hostile.rs"]
mod hostile;
#[path = "system/names.rs"]
mod names;
#[path = "system/os_image.rs"]
mod os_image;
#[path = "system/os_image_swap.rs"]
mod os_image_swap;
#[path = "system/package.rs"]
mod package;
#[path = "system/readiness.rs"]
mod readiness;
#[path = "system/registries.rs"]
mod registries;
#[path = "system/sockets.rs"]
mod sockets;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::Result;
use common::*;

/// Test hosts share this machine's network namespace: only one of them may run etcd (ports
/// 2379 and 2380 on loopback) at a time.
static ETCD_PORTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn lock_etcd_ports() -> std::sync::MutexGuard<'static, ()> {
    ETCD_PORTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Host paths an install writes to; an uninstall or a failed install must leave them as they were.
const WATCHED: [&str; 4] = ["etc/systemd/system", "etc/tmpfiles.d", "usr/local/bin", "var/lib/sysctr/deployments"];

/// An image whose unit needs a variable nothing sets: `SERVICE_USER`.
fn missing_variable_image() -> Image {
    busybox_service_image(&[("service.template", "[Service]\nExecStart=$EXEC_START\nUser=$SERVICE_USER\n")])
        .cmd(&["/bin/true"])
}

struct Setup {
    registry: Registry,
    _work: tempfile::TempDir,
    work: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let work = tempfile::Builder::new().prefix("sysctr-st.").tempdir_in("/var/tmp").unwrap();
        Setup { registry: Registry::start().unwrap(), work: work.path().to_path_buf(), _work: work }
    }

    /// Pushes `image` as `repo:latest` and returns its reference.
    fn push(&self, image: &Image, repo: &str) -> String {
        let layout = self.work.join(repo.replace('/', "_"));
        image.write_oci_layout(&layout, "latest").unwrap();
        let reference = self.registry.image_ref(&format!("{repo}:latest"));
        push(&layout, "latest", &reference).unwrap();
        reference
    }
}

fn sysctr_ok(host: &TestHost, args: &[&str]) -> String {
    let out = host.run_sysctr(args).unwrap();
    assert!(out.status.success(), "sysctr {}: {}", args.join(" "), describe_output(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sysctr_err(host: &TestHost, args: &[&str]) -> String {
    let out = host.run_sysctr(args).unwrap();
    assert_eq!(out.status.code(), Some(1), "sysctr {} should fail: {}", args.join(" "), describe_output(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.starts_with("error: ") && !err.contains("panicked"), "{err}");
    err
}

fn unit_property(host: &TestHost, unit: &str, property: &str) -> String {
    host.exec_ok(&["systemctl", "show", "-P", property, unit]).unwrap().trim().to_string()
}

fn wait_active(host: &TestHost, unit: &str) {
    wait_for(&format!("{unit} to be active"), Duration::from_secs(30), Duration::from_millis(200), || {
        Ok((unit_property(host, unit, "ActiveState") == "active").then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", host.journal(unit)));
}

fn host_file(host: &TestHost, path: &str) -> Option<String> {
    std::fs::read_to_string(host.root().join(path.trim_start_matches('/'))).ok()
}

/// What the watched host paths hold, for before/after comparisons.
fn snapshot(host: &TestHost) -> BTreeMap<&'static str, BTreeMap<PathBuf, Entry>> {
    WATCHED
        .iter()
        .map(|dir| {
            let path = host.root().join(dir);
            let listing = if path.exists() { tree_listing(&path).unwrap() } else { BTreeMap::new() };
            (*dir, listing)
        })
        .collect()
}

fn assert_same(
    before: &BTreeMap<&str, BTreeMap<PathBuf, Entry>>,
    after: &BTreeMap<&str, BTreeMap<PathBuf, Entry>>,
    when: &str,
) {
    for dir in WATCHED {
        let differences = diff_listings(&before[dir], &after[dir]);
        assert!(differences.is_empty(), "{when}: /{dir} changed:\n{}", differences.join("\n"));
    }
}

#[test]
fn install_now_runs_under_systemd_survives_reboot_and_uninstalls_cleanly() -> Result<()> {
    let setup = Setup::new();
    let image = setup.push(&hello_image(), "demo/hello");
    let mut host = TestHost::boot()?;
    sysctr_ok(&host, &["pull", &image]);
    let before = snapshot(&host);

    let out = sysctr_ok(&host, &["install", "--now", "--set", "RECEIVER=Pluto", &image]);
    assert!(out.contains("installed and started hello"), "{out}");

    // systemd runs it: the start job succeeded, runc is the main process, the container worked.
    assert_eq!(unit_property(&host, "hello.service", "ActiveState"), "active");
    assert_eq!(unit_property(&host, "hello.service", "UnitFileState"), "enabled");
    let main_pid: u32 = unit_property(&host, "hello.service", "MainPID").parse()?;
    assert!(main_pid > 0);
    let comm = host.exec_ok(&["cat", &format!("/proc/{main_pid}/comm")])?;
    assert_eq!(comm.trim(), "runc");
    let greeting = wait_for("the greeting", Duration::from_secs(20), Duration::from_millis(200), || {
        Ok(host_file(&host, "/var/lib/hello/greeting").filter(|g| g.contains("rootfs:")))
    })?;
    assert!(greeting.starts_with("hello Pluto from hello\n"), "{greeting}");
    assert!(greeting.contains("rootfs: read-only"), "{greeting}");

    // The rendered files: unit with the stored UUID, host file from hostfs with its rename.
    let list = json_items(sysctr_ok(&host, &["list", "--json"]).as_bytes(), "ContainerList");
    assert_eq!(list[0]["name"], "hello");
    assert_eq!(list[0]["state"], "running");
    let info: serde_json::Value =
        serde_json::from_str(&host_file(&host, "/var/lib/sysctr/deployments/hello/info").unwrap())?;
    assert_eq!(info["values"], serde_json::json!({"RECEIVER": "Pluto"}));
    let unit = host_file(&host, "/etc/systemd/system/hello.service").unwrap();
    assert!(unit.contains(&format!("Environment=DEMO_UUID={}", info["uuid"].as_str().unwrap())), "{unit}");
    assert!(unit.contains("WorkingDirectory=/var/lib/sysctr/deployments/hello.0"), "{unit}");
    let helper = host_file(&host, "/usr/local/bin/hello-greeting").expect("hostfs file installed");
    assert!(helper.contains("cat \"/var/lib/hello/greeting\""), "{helper}");
    let link = std::fs::read_link(host.root().join("var/lib/sysctr/deployments/hello"))?;
    assert_eq!(link, Path::new("hello.0"));

    // Plain systemctl is all a user needs afterwards.
    host.exec_ok(&["systemctl", "stop", "hello.service"])?;
    assert_eq!(unit_property(&host, "hello.service", "ActiveState"), "inactive");
    assert!(host_file(&host, "/var/lib/hello/greeting").unwrap().contains("goodbye Pluto"));
    host.exec_ok(&["systemctl", "start", "hello.service"])?;
    wait_active(&host, "hello.service");

    // Enabled: it comes back at boot with no sysctr call.
    host.reboot()?;
    wait_active(&host, "hello.service");
    let pid_after_boot: u32 = unit_property(&host, "hello.service", "MainPID").parse()?;
    assert!(pid_after_boot > 0);

    let out = sysctr_ok(&host, &["uninstall", "hello"]);
    assert!(out.contains("uninstalled hello"), "{out}");
    assert_eq!(unit_property(&host, "hello.service", "LoadState"), "not-found");
    assert_same(&before, &snapshot(&host), "after uninstall");
    let images = json_items(sysctr_ok(&host, &["images", "--json"]).as_bytes(), "ImageList");
    assert_eq!(images[0]["reference"], image.as_str(), "the image stays in the store");
    assert_eq!(images[0]["used_by"], serde_json::json!([]));
    Ok(())
}

#[test]
fn image_without_exports_runs_with_generated_config_and_default_unit() -> Result<()> {
    let setup = Setup::new();
    let plain = Image::new()
        .layer(busybox_layer())
        .entrypoint(&["/bin/sh", "-c"])
        .cmd(&["trap 'exit 0' TERM; echo generated-config-works as $(id -u) in $(pwd); while :; do sleep 1 & wait $!; done"])
        .working_dir("/tmp")
        .user("nobody");
    let image = setup.push(&plain, "demo/plain");
    let host = TestHost::boot()?;
    sysctr_ok(&host, &["install", "--now", "--name", "plain", &image]);
    wait_for("the container's output", Duration::from_secs(20), Duration::from_millis(200), || {
        Ok(host.journal("plain.service").contains("generated-config-works as 65534 in /tmp").then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", host.journal("plain.service")));
    assert_eq!(unit_property(&host, "plain.service", "Description"), "plain");
    assert_eq!(unit_property(&host, "plain.service", "Restart"), "on-failure");
    let config: serde_json::Value =
        serde_json::from_str(&host_file(&host, "/var/lib/sysctr/deployments/plain.0/config.json").unwrap())?;
    assert_eq!(config["root"], serde_json::json!({"path": "rootfs", "readonly": true}));
    sysctr_ok(&host, &["uninstall", "plain"]);
    assert_eq!(unit_property(&host, "plain.service", "LoadState"), "not-found");
    Ok(())
}

#[test]
fn failed_installs_leave_the_host_as_it_was() -> Result<()> {
    let setup = Setup::new();
    let hello = setup.push(&hello_image(), "demo/hello");
    let missing_var = setup.push(&missing_variable_image(), "demo/missing-var");
    let unit_value = setup.push(
        &busybox_service_image(&[(
            "service.template",
            "[Unit]\nDescription=$GREETING\n[Service]\nExecStart=$EXEC_START\n[Install]\nWantedBy=multi-user.target\n",
        )])
        .cmd(&["/bin/sleep", "3600"]),
        "demo/unit-value",
    );
    let failing_start = setup.push(
        &busybox_service_image(&[(
            "service.template",
            "[Service]\nExecStartPre=/bin/false\nExecStart=$EXEC_START\n[Install]\nWantedBy=multi-user.target\n",
        )])
        .cmd(&["/bin/sleep", "3600"]),
        "demo/failing-start",
    );
    let cycle = setup.push(
        &busybox_service_image(&[(
            "service.template",
            "[Unit]\nAfter=$NAME.service\n[Service]\nExecStart=$EXEC_START\n",
        )])
        .cmd(&["/bin/true"]),
        "demo/cycle",
    );
    let host = TestHost::boot()?;
    for image in [&hello, &missing_var, &unit_value, &failing_start, &cycle] {
        sysctr_ok(&host, &["pull", image]);
    }
    let before = snapshot(&host);

    let cases: [(&[&str], &str); 7] = [
        (&["install", &cycle], "cycle.service would close an ordering cycle: cycle.service after cycle.service"),
        (&["install", &missing_var], "unreplaced value for: 'SERVICE_USER'"),
        (&["install", "--set", "GREETING=hi\nExecStartPre=/bin/rm -rf /", &unit_value], "line break"),
        (&["install", "--set", "RECEIVER=x\", \"EVIL=1", &hello], "config.json"),
        (&["install", "--set", "NAME=other", &hello], "NAME"),
        (&["install", "--now", &failing_start], "journalctl -u failing-start.service"),
        (&["install", "--runtime", "/nonexistent/runc", &hello], "/nonexistent/runc"),
    ];
    for (args, expected) in cases {
        let err = sysctr_err(&host, args);
        assert!(err.contains(expected), "sysctr {}: expected '{expected}' in: {err}", args.join(" "));
        assert_same(&before, &snapshot(&host), &format!("after the failed `sysctr {}`", args.join(" ")));
        assert_eq!(unit_property(&host, "failing-start.service", "LoadState"), "not-found");
    }

    // The deployed rootfs is the image, file by file, as umoci unpacks it.
    sysctr_ok(&host, &["install", &hello]);
    let deployed = tree_listing(&host.root().join("var/lib/sysctr/deployments/hello/rootfs"))?;
    let reference = umoci_unpack(&setup.work.join("demo_hello"), "latest", &setup.work.join("umoci-hello"))?;
    let differences = diff_listings(&tree_listing(&reference)?, &deployed);
    assert!(differences.is_empty(), "deployed rootfs differs from umoci unpack:\n{}", differences.join("\n"));

    // A dependency on a unit that does not exist is installed, with a warning.
    let wants_missing = setup.push(
        &busybox_service_image(&[(
            "service.template",
            "[Unit]\nWants=nothing-here.service\n[Service]\nExecStart=$EXEC_START\n",
        )])
        .cmd(&["/bin/true"]),
        "demo/wants-missing",
    );
    let out = host.run_sysctr(&["install", &wants_missing])?;
    assert!(out.status.success(), "{}", describe_output(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("wants-missing.service has Wants=nothing-here.service, but there is no unit"), "{said}");
    sysctr_ok(&host, &["uninstall", "wants-missing"]);

    // A name that is taken is refused, and the installed container is left alone.
    let err = sysctr_err(&host, &["install", &hello]);
    assert!(err.contains("'hello' is already installed"), "{err}");
    assert!(host_file(&host, "/etc/systemd/system/hello.service").is_some());
    sysctr_ok(&host, &["uninstall", "hello"]);
    assert_same(&before, &snapshot(&host), "after install + uninstall");
    Ok(())
}

fn active_slot(host: &TestHost, name: &str) -> String {
    std::fs::read_link(host.root().join("var/lib/sysctr/deployments").join(name))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn greeting(host: &TestHost, receiver: &str) -> String {
    wait_for(&format!("a greeting to {receiver}"), Duration::from_secs(20), Duration::from_millis(200), || {
        Ok(host_file(host, "/var/lib/hello/greeting").filter(|g| g.starts_with(&format!("hello {receiver} "))))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", host.journal("hello.service")))
}

#[test]
fn update_rollback_and_rebase_switch_slots_and_keep_the_service_running() -> Result<()> {
    let setup = Setup::new();
    let v1 = hello_image().layer(Layer::gzip().dir("usr/share", 0o755).file("usr/share/v1-only", "v1", 0o644));
    let image = setup.push(&v1, "demo/hello");
    let missing_var = setup.push(&missing_variable_image(), "demo/missing-var");
    let failing = setup.push(
        &busybox_service_image(&[(
            "service.template",
            "[Service]\nExecStart=$EXEC_START\n[Install]\nWantedBy=multi-user.target\n",
        )])
        .cmd(&["/bin/false"]),
        "demo/exits-at-once",
    );
    let host = TestHost::boot()?;
    sysctr_ok(&host, &["install", "--now", "--set", "RECEIVER=Pluto", &image]);
    greeting(&host, "Pluto");
    let uuid = |host: &TestHost| -> String {
        let info: serde_json::Value =
            serde_json::from_str(&host_file(host, "/var/lib/sysctr/deployments/hello/info").unwrap()).unwrap();
        info["uuid"].as_str().unwrap().to_string()
    };
    let first_uuid = uuid(&host);
    assert_eq!(active_slot(&host, "hello"), "hello.0");

    let out = sysctr_ok(&host, &["update", "hello"]);
    assert!(out.contains("already up to date"), "{out}");

    // New values: the other slot, restarted with them, same UUID.
    std::fs::remove_file(host.root().join("var/lib/hello/greeting"))?;
    sysctr_ok(&host, &["update", "--set", "RECEIVER=Charon", "hello"]);
    assert_eq!(active_slot(&host, "hello"), "hello.1");
    greeting(&host, "Charon");
    assert_eq!(unit_property(&host, "hello.service", "ActiveState"), "active");
    assert_eq!(uuid(&host), first_uuid);
    let unit = host_file(&host, "/etc/systemd/system/hello.service").unwrap();
    assert!(unit.contains("WorkingDirectory=/var/lib/sysctr/deployments/hello.1"), "{unit}");

    // A new image under the same tag: checked out into an empty slot, so a file it dropped is gone.
    let v2 = hello_image().layer(Layer::gzip().dir("usr/share", 0o755).file("usr/share/v2-only", "v2", 0o644));
    setup.push(&v2, "demo/hello");
    sysctr_ok(&host, &["update", "hello"]);
    assert_eq!(active_slot(&host, "hello"), "hello.0");
    let rootfs = host.root().join("var/lib/sysctr/deployments/hello/rootfs/usr/share");
    assert!(rootfs.join("v2-only").exists() && !rootfs.join("v1-only").exists());
    greeting(&host, "Charon");

    let all = json_items(sysctr_ok(&host, &["list", "--all", "--json"]).as_bytes(), "ContainerList");
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!((all[0]["slot"].as_u64(), all[0]["state"].as_str()), (Some(0), Some("running")));
    assert_eq!((all[1]["slot"].as_u64(), all[1]["state"].as_str()), (Some(1), Some("previous")));

    // Rollback: the previous slot, with its own values and files, running.
    sysctr_ok(&host, &["rollback", "hello"]);
    assert_eq!(active_slot(&host, "hello"), "hello.1");
    assert!(host.root().join("var/lib/sysctr/deployments/hello/rootfs/usr/share/v1-only").exists());
    assert_eq!(unit_property(&host, "hello.service", "ActiveState"), "active");

    // A rebase that cannot render fails before anything moves.
    let err = sysctr_err(&host, &["update", "--rebase", &missing_var, "hello"]);
    assert!(err.contains("unreplaced value for: 'SERVICE_USER'"), "{err}");
    assert_eq!(active_slot(&host, "hello"), "hello.1");
    assert_eq!(unit_property(&host, "hello.service", "ActiveState"), "active");

    // A rebase whose service does not stay up is rolled back, and the old service runs again.
    std::fs::remove_file(host.root().join("var/lib/hello/greeting"))?;
    let err = sysctr_err(&host, &["update", "--rebase", &failing, "hello"]);
    assert!(err.contains("rolled back"), "{err}");
    assert_eq!(active_slot(&host, "hello"), "hello.1");
    wait_active(&host, "hello.service");
    greeting(&host, "Charon");
    let unit = host_file(&host, "/etc/systemd/system/hello.service").unwrap();
    assert!(unit.contains("WorkingDirectory=/var/lib/sysctr/deployments/hello.1"), "{unit}");

    // An image in use stays; once nothing uses it, rmi and prune free it.
    let err = sysctr_err(&host, &["rmi", &image]);
    assert!(err.contains("is used by hello"), "{err}");
    sysctr_ok(&host, &["uninstall", "hello"]);
    assert!(!host.root().join("var/lib/sysctr/deployments/hello.0").exists());
    assert!(!host.root().join("var/lib/sysctr/deployments/hello.1").exists());
    sysctr_ok(&host, &["rmi", &image]);
    let out = sysctr_ok(&host, &["prune"]);
    assert!(!out.contains(" 0 objects"), "{out}");
    Ok(())
}

/// The test-only hook of sysctr's transaction log: abort right after recording step N.
const CRASH_AFTER_STEPS: &str = "SYSCTR_TEST_CRASH_AFTER_STEPS";

fn run_crashing(host: &TestHost, args: &[&str], step: usize) -> Output {
    let bin = sysctr_bin();
    host.command(&[bin.to_str().unwrap()])
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .env(CRASH_AFTER_STEPS, step.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs `sysctr recover`, which undoes or finishes an interrupted command; returns its output.
/// (`list` only reports it, as read-only commands do.)
fn recover(host: &TestHost) -> String {
    let listed = host.run_sysctr(&["list"]).unwrap();
    let pending = String::from_utf8_lossy(&listed.stderr).into_owned();
    assert!(pending.is_empty() || pending.contains("is pending; run `sysctr recover`"), "{pending}");
    let out = host.run_sysctr(&["recover"]).unwrap();
    assert!(out.status.success(), "{}", describe_output(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn no_leftovers(host: &TestHost) {
    assert!(!host.root().join("var/lib/sysctr/.transaction").exists(), "transaction left behind");
    let stray: Vec<_> = std::fs::read_dir(host.root().join("var/lib/sysctr/deployments"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(stray.is_empty(), "staging left behind: {stray:?}");
}

#[test]
fn commands_interrupted_at_any_step_leave_the_old_or_the_new_state() -> Result<()> {
    let setup = Setup::new();
    let image = setup.push(&hello_image(), "demo/hello");
    let host = TestHost::boot()?;
    sysctr_ok(&host, &["pull", &image]);
    let before = snapshot(&host);

    // install --now, killed right after each recorded step in turn, until it gets through.
    let mut install_points = 0;
    for step in 1..60 {
        let out = run_crashing(&host, &["install", "--now", "--set", "RECEIVER=Pluto", &image], step);
        if out.status.success() {
            break;
        }
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&format!("aborting after step {step}")),
            "{}",
            describe_output(&out)
        );
        install_points += 1;
        let notes = recover(&host);
        assert!(notes.contains("undid the interrupted `sysctr install hello`"), "step {step}: {notes}");
        assert_same(&before, &snapshot(&host), &format!("install killed after step {step}, then recovered"));
        assert_eq!(unit_property(&host, "hello.service", "ActiveState"), "inactive", "step {step}");
        no_leftovers(&host);
    }
    assert!(install_points >= 10, "only {install_points} crash points in install");
    wait_active(&host, "hello.service");
    greeting(&host, "Pluto");

    // update, killed after each step: the previous deployment is back, and running.
    let before_update = snapshot(&host);
    let mut update_points = 0;
    for step in 1..60 {
        let out = run_crashing(&host, &["update", "--set", "RECEIVER=Charon", "hello"], step);
        if out.status.success() {
            break;
        }
        update_points += 1;
        let notes = recover(&host);
        assert!(notes.contains("undid the interrupted `sysctr update hello`"), "step {step}: {notes}");
        assert_same(&before_update, &snapshot(&host), &format!("update killed after step {step}, then recovered"));
        assert_eq!(active_slot(&host, "hello"), "hello.0", "step {step}");
        wait_active(&host, "hello.service");
        no_leftovers(&host);
    }
    assert!(update_points >= 10, "only {update_points} crash points in update");
    assert_eq!(active_slot(&host, "hello"), "hello.1");
    wait_active(&host, "hello.service");

    // An interrupted uninstall is finished by the next command.
    let out = run_crashing(&host, &["uninstall", "hello"], 1);
    assert!(!out.status.success());
    let notes = recover(&host);
    assert!(notes.contains("finished the interrupted `sysctr uninstall hello`"), "{notes}");
    assert_same(&before, &snapshot(&host), "uninstall killed, then finished");

    // Real SIGKILLs at various moments of an install: afterwards, old state or new state.
    let bin = sysctr_bin();
    let mut outcomes = Vec::new();
    for delay_ms in [20u64, 80, 160, 300, 500, 900] {
        let mut child = host
            .command(&[bin.to_str().unwrap(), "install", "--now", "--set", "RECEIVER=Pluto", &image])
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = host.exec(&["pkill", "-KILL", "-x", "sysctr"]);
        child.wait()?;
        recover(&host);
        no_leftovers(&host);
        if host.root().join("var/lib/sysctr/deployments/hello").exists() {
            wait_active(&host, "hello.service");
            outcomes.push(format!("{delay_ms} ms: installed"));
            sysctr_ok(&host, &["uninstall", "hello"]);
        } else {
            outcomes.push(format!("{delay_ms} ms: undone"));
        }
        assert_same(&before, &snapshot(&host), &format!("install killed after {delay_ms} ms"));
    }
    eprintln!(
        "crash points: install {install_points}, update {update_points}, uninstall 1; SIGKILL: {}",
        outcomes.join(", ")
    );
    Ok(())
}

#[test]
fn run_once_and_mount_leave_nothing_behind() -> Result<()> {
    let setup = Setup::new();
    let image = setup.push(&hello_image(), "demo/hello");
    let host = TestHost::boot()?;

    // A one-off command gets a writable root that is thrown away, and its exit code.
    let out = host.run_sysctr(&["run", &image, "/bin/sh", "-c", "echo scratch > /written && cat /written"])?;
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "scratch");
    let out = host.run_sysctr(&["run", &image, "/bin/sh", "-c", "exit 7"])?;
    assert_eq!(out.status.code(), Some(7), "{}", describe_output(&out));
    let mounts = host.exec_ok(&["cat", "/proc/self/mounts"])?;
    assert!(!mounts.contains("sysctr-run"), "{mounts}");
    assert!(!host.root().join("var/lib/sysctr/run").exists(), "run bundles left behind");

    // An image that runs once is run by install, not installed as a service.
    let once = setup
        .push(&busybox_service_image(&[]).label("atomic.run", "once").cmd(&["/bin/echo", "ran once"]), "demo/once");
    let out = host.run_sysctr(&["install", &once])?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ran once", "{}", describe_output(&out));
    assert!(!host.root().join("etc/systemd/system/once.service").exists());
    let err = sysctr_err(&host, &["install", "--now", &once]);
    assert!(err.contains("atomic.run=once") && err.contains("--now"), "{err}");
    let out = host.run_sysctr(&["run", &once])?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ran once", "{}", describe_output(&out));

    // A read-only view of the image: the run's write never reached the store.
    host.exec_ok(&["mkdir", "-p", "/mnt/image", "/mnt/container"])?;
    sysctr_ok(&host, &["mount", &image, "/mnt/image"]);
    assert!(host.exec_ok(&["cat", "/mnt/image/usr/bin/hello"])?.contains("greeting"));
    assert!(!host.exec(&["test", "-e", "/mnt/image/written"])?.status.success());
    assert!(!host.exec(&["touch", "/mnt/image/new"])?.status.success(), "the view is writable");
    sysctr_ok(&host, &["umount", "/mnt/image"]);
    assert!(!host.exec_ok(&["cat", "/proc/self/mounts"])?.contains("/mnt/image"));
    let checkouts = host.root().join("var/lib/sysctr/mounts");
    assert!(std::fs::read_dir(&checkouts)?.next().is_none(), "image checkout left behind");

    // An installed container's rootfs, by name.
    sysctr_ok(&host, &["install", &image]);
    sysctr_ok(&host, &["mount", "hello", "/mnt/container"]);
    assert!(host.exec(&["test", "-x", "/mnt/container/usr/bin/hello"])?.status.success());
    sysctr_ok(&host, &["umount", "/mnt/container"]);
    sysctr_ok(&host, &["uninstall", "hello"]);
    Ok(())
}

/// Runs this build's sysctr on this machine (not in a test host) against an offline root.
fn sysctr_offline(root: &Path, args: &[&str]) -> Output {
    std::process::Command::new(sysctr_bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("SYSCTR_STORAGE")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

/// The hello image asking for `ALL_PROCESS_CAPABILITIES`, as atomic's images do.
fn all_capabilities_image() -> Image {
    let template = std::fs::read_to_string(examples_dir().join("hello/rootfs/exports/config.json.template")).unwrap();
    let own = r#"["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]"#;
    assert!(template.contains(own));
    let template = template.replace(own, "[$ALL_PROCESS_CAPABILITIES]");
    hello_image().layer(Layer::gzip().file("exports/config.json.template", template, 0o644))
}

#[test]
fn offline_root_composition_starts_at_first_boot_with_no_sysctr_call() -> Result<()> {
    let setup = Setup::new();
    let image = setup.push(&hello_image(), "demo/hello");
    let all_caps = setup.push(&all_capabilities_image(), "demo/hello-all");
    let mut host = TestHost::boot()?;
    host.shutdown()?;
    let root = host.root();
    let outer_units = tree_listing(Path::new("/etc/systemd/system"))?;
    // sysctr is part of the OS image, where its package puts it.
    std::fs::copy(sysctr_bin(), root.join("usr/bin/sysctr"))?;

    // Composed from outside, as an image builder would: files only, nothing running touched.
    let out = sysctr_offline(&root, &["install", "--set", "RECEIVER=Offline", &image]);
    assert!(out.status.success(), "{}", describe_output(&out));
    // Offered every capability, whatever this machine's bounding set: the target's is not known yet.
    let out = sysctr_offline(&root, &["install", "--name", "hello-all", "--set", "RECEIVER=All", &all_caps]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let all_config = root.join("var/lib/sysctr/deployments/hello-all/config.json");
    let offered = std::fs::read_to_string(&all_config)?;
    assert!(offered.contains("CAP_SYS_MODULE") && offered.contains("CAP_SYS_RESOURCE"), "{offered}");
    let wants = root.join("etc/systemd/system/multi-user.target.wants/hello.service");
    assert_eq!(std::fs::read_link(&wants)?, Path::new("/etc/systemd/system/hello.service"));
    assert_eq!(std::fs::read_link(root.join("var/lib/sysctr/deployments/hello"))?, Path::new("hello.0"));
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/hello.service"))?;
    assert!(unit.contains("WorkingDirectory=/var/lib/sysctr/deployments/hello.0"), "{unit}");
    let err = sysctr_offline(&root, &["install", "--now", "--name", "other", &image]);
    assert!(String::from_utf8_lossy(&err.stderr).contains("--now cannot start anything in an offline root"));
    assert!(diff_listings(&outer_units, &tree_listing(Path::new("/etc/systemd/system"))?).is_empty());

    // First boot: systemd starts it from the enablement link alone.
    host.reboot()?;
    wait_active(&host, "hello.service");
    greeting(&host, "Offline");
    // The unit fitted the offer to the test host's bounding set (here without CAP_SYS_RESOURCE).
    wait_active(&host, "hello-all.service");
    let status = host.exec_ok(&["cat", "/proc/1/status"])?;
    let bounding = status.lines().find_map(|l| l.strip_prefix("CapBnd:")).expect("CapBnd");
    let bounding = u64::from_str_radix(bounding.trim(), 16)?;
    let fitted: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&all_config)?)?;
    let fitted = fitted["process"]["capabilities"]["bounding"].as_array().unwrap().len();
    assert_eq!(fitted as u32, (bounding & ((1 << 41) - 1)).count_ones(), "{bounding:x}");
    assert!(host.journal("hello-all.service").contains("not in this host's bounding set, left out: "));
    let list = json_items(sysctr_ok(&host, &["list", "--json"]).as_bytes(), "ContainerList");
    assert_eq!(list[0]["state"], "running");
    assert_eq!(list[1]["state"], "running");

    // And offline removal, with the host down again.
    host.shutdown()?;
    let out = sysctr_offline(&root, &["uninstall", "hello-all"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let out = sysctr_offline(&root, &["uninstall", "hello"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(std::fs::symlink_metadata(&wants).is_err(), "enablement link left behind");
    assert!(!root.join("etc/systemd/system/hello.service").exists());
    assert!(!root.join("var/lib/sysctr/deployments/hello.0").exists());
    Ok(())
}

#[test]
fn apply_converges_to_the_file_and_a_second_run_changes_nothing() -> Result<()> {
    let setup = Setup::new();
    let image = setup.push(&hello_image(), "demo/hello");
    let host = TestHost::boot()?;
    let file = setup.work.join("node.toml");
    let write = |b_receiver: &str| {
        std::fs::write(
            &file,
            format!(
                "[[container]]\nname = \"hello-a\"\nimage = \"{image}\"\nset = {{ RECEIVER = \"A\" }}\n\n\
                 [[container]]\nname = \"hello-b\"\nimage = \"{image}\"\nset = {{ RECEIVER = \"{b_receiver}\" }}\n"
            ),
        )
        .unwrap();
    };
    let apply = |host: &TestHost| sysctr_ok(host, &["apply", file.to_str().unwrap()]);

    write("B");
    assert_eq!(apply(&host), "installed hello-a\ninstalled hello-b\n");
    wait_active(&host, "hello-a.service");
    wait_active(&host, "hello-b.service");
    let unit_a = host_file(&host, "/etc/systemd/system/hello-a.service").unwrap();

    assert_eq!(apply(&host), "unchanged hello-a\nunchanged hello-b\n");
    assert_eq!(host_file(&host, "/etc/systemd/system/hello-a.service").unwrap(), unit_a);
    assert_eq!(active_slot(&host, "hello-a"), "hello-a.0");

    write("Bee");
    // For configuration tools: one JSON document, and exit 2 when something changes.
    let out = host.run_sysctr(&["apply", "--dry-run", "--json", "--detailed-exitcode", file.to_str().unwrap()])?;
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    let planned: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        (planned["kind"].as_str(), planned["changed"].as_bool()),
        (Some("ApplyResult"), Some(true)),
        "{planned}"
    );
    assert_eq!(planned["containers"][1]["action"], "update", "{planned}");
    // With the container before and after, for a configuration tool's diff; nothing fetched.
    let (before, after) = (&planned["containers"][1]["before"], &planned["containers"][1]["after"]);
    assert_eq!((before["values"]["RECEIVER"].as_str(), after["values"]["RECEIVER"].as_str()), (Some("B"), Some("Bee")));
    assert_eq!(before["image"], after["image"], "{planned}");
    assert!(before["manifest_digest"].as_str().is_some_and(|d| d.starts_with("sha256:")), "{planned}");
    assert_eq!(before["manifest_digest"], after["manifest_digest"], "{planned}");
    assert_eq!(before["unit"].as_str(), host_file(&host, "/etc/systemd/system/hello-b.service").as_deref());
    assert!(after["unit"].as_str().is_some_and(|u| u.contains("ExecStart=")), "{planned}");
    let unchanged = &planned["containers"][0];
    assert!(unchanged.get("before").is_some() && unchanged.get("after").is_none(), "{planned}");
    // The plan first: it says why, and changes nothing.
    let planned = sysctr_ok(&host, &["apply", "--dry-run", file.to_str().unwrap()]);
    assert_eq!(
        planned,
        format!("unchanged hello-a: {image} with the same values\nwould update hello-b: values of RECEIVER change\n")
    );
    assert_eq!(active_slot(&host, "hello-b"), "hello-b.0");
    assert_eq!(apply(&host), "unchanged hello-a\nupdated hello-b\n");
    assert_eq!(active_slot(&host, "hello-b"), "hello-b.1");
    let status: serde_json::Value = serde_json::from_str(&sysctr_ok(&host, &["status", "--json", "hello-b"]))?;
    assert_eq!(
        (status["current"]["slot"].as_u64(), status["previous"]["slot"].as_u64()),
        (Some(1), Some(0)),
        "{status}"
    );
    assert_eq!(status["current"]["values"]["RECEIVER"], "Bee");
    assert_eq!(status["previous"]["values"]["RECEIVER"], "B");
    assert_eq!((status["unit"].as_str(), status["auto_update"].as_bool()), (Some("hello-b.service"), Some(true)));
    assert!(status["current"]["image_id"].as_str().is_some_and(|id| id.starts_with("sha256:")), "{status}");
    let text = sysctr_ok(&host, &["status", "hello-b"]);
    assert!(
        text.starts_with("hello-b: ") && text.contains("current: slot 1") && text.contains("values: RECEIVER=Bee"),
        "{text}"
    );
    wait_for("hello-b's new greeting", Duration::from_secs(20), Duration::from_millis(200), || {
        Ok(host_file(&host, "/var/lib/hello-b/greeting").filter(|g| g.starts_with("hello Bee ")))
    })?;
    assert_eq!(apply(&host), "unchanged hello-a\nunchanged hello-b\n");
    let out = host.run_sysctr(&["apply", "--json", "--detailed-exitcode", file.to_str().unwrap()])?;
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let applied: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!((applied["apiVersion"].as_str(), applied["changed"].as_bool()), (Some("sysctr/v1"), Some(false)));

    // A container the file no longer lists stays, unless --prune says otherwise.
    std::fs::write(
        &file,
        format!("[[container]]\nname = \"hello-a\"\nimage = \"{image}\"\nset = {{ RECEIVER = \"A\" }}\n"),
    )?;
    let planned = sysctr_ok(&host, &["apply", "--dry-run", "--prune", file.to_str().unwrap()]);
    assert!(planned.ends_with("would remove hello-b: not in the file (--prune)\n"), "{planned}");
    assert_eq!(apply(&host), "unchanged hello-a\n");
    assert!(host.root().join("var/lib/sysctr/deployments/hello-b").exists(), "removed without --prune");
    assert_eq!(sysctr_ok(&host, &["apply", "--prune", file.to_str().unwrap()]), "unchanged hello-a\nremoved hello-b\n");
    assert!(!host.root().join("etc/systemd/system/hello-b.service").exists());
    assert_eq!(unit_property(&host, "hello-a.service", "ActiveState"), "active");

    // The set is checked as a whole before anything is done: a cycle through two new units.
    let peer = setup.push(
        &busybox_service_image(&[
            ("manifest.json", r#"{"defaultValues": {"PEER": "network.target"}}"#),
            ("service.template", "[Unit]\nAfter=$PEER\n[Service]\nExecStart=$EXEC_START\n"),
        ])
        .cmd(&["/bin/true"]),
        "demo/peer",
    );
    let cyclic = setup.work.join("cyclic.toml");
    std::fs::write(
        &cyclic,
        format!(
            "[[container]]\nname = \"x\"\nimage = \"{peer}\"\nset = {{ PEER = \"y.service\" }}\n\n\
             [[container]]\nname = \"y\"\nimage = \"{peer}\"\nset = {{ PEER = \"x.service\" }}\n"
        ),
    )?;
    let err = sysctr_err(&host, &["apply", cyclic.to_str().unwrap()]);
    assert!(err.contains("ordering cycle") && err.contains("x.service after y.service after x.service"), "{err}");
    assert!(!host.root().join("var/lib/sysctr/deployments/x").exists(), "x was installed before the check");
    Ok(())
}

#[test]
fn etcd_is_ready_when_its_start_job_ends_through_runcs_notify_proxy() -> Result<()> {
    let _ports = lock_etcd_ports();
    let setup = Setup::new();
    let image = setup.push(&etcd_image(), "k8s/etcd");
    let host = TestHost::boot()?;
    // The test host masks every service this machine enables, Debian's own etcd.service included;
    // sysctr refuses to shadow a unit file it did not write.
    let err = sysctr_err(&host, &["install", &image]);
    assert!(err.contains("/etc/systemd/system/etcd.service already exists"), "{err}");
    host.exec_ok(&["systemctl", "unmask", "etcd.service"])?;
    // Debian's etcd-server ships etcd.service: shadowing it is said on purpose.
    let err = sysctr_err(&host, &["install", "--now", &image]);
    assert!(err.contains("--replace-vendor-unit"), "{err}");
    sysctr_ok(&host, &["install", "--now", "--replace-vendor-unit", &image]);

    // Type=notify: the start job ended only once etcd said READY, so it serves at once.
    assert_eq!(unit_property(&host, "etcd.service", "Type"), "notify");
    assert_eq!(unit_property(&host, "etcd.service", "ActiveState"), "active");
    host.exec_ok(&["/usr/local/bin/etcdctl", "put", "/atomic.io/network/config", r#"{"Network":"10.1.0.0/16"}"#])?;
    let value = host.exec_ok(&["/usr/local/bin/etcdctl", "get", "--print-value-only", "/atomic.io/network/config"])?;
    assert_eq!(value.trim(), r#"{"Network":"10.1.0.0/16"}"#);
    assert!(host.root().join("var/lib/etcd/etcd.etcd/member").is_dir(), "data is not under the tmpfiles directory");
    assert_eq!(unit_property(&host, "etcd.service", "NRestarts"), "0");

    // The rendered unit is one systemd accepts as it is.
    let verify = host.exec(&["systemd-analyze", "verify", "/etc/systemd/system/etcd.service"])?;
    assert!(verify.status.success(), "{}", describe_output(&verify));

    sysctr_ok(&host, &["uninstall", "etcd"]);
    assert!(!host.root().join("usr/local/bin/etcdctl").exists());
    Ok(())
}

/// A monotonic timestamp property of a unit, read from systemd.
fn monotonic(host: &TestHost, unit: &str, property: &str) -> u64 {
    unit_property(host, unit, property).parse().unwrap_or_else(|e| panic!("{unit} {property}: {e}"))
}

#[test]
fn etcd_flannel_containerd_come_up_in_order_at_every_boot() -> Result<()> {
    let _ports = lock_etcd_ports();
    let setup = Setup::new();
    let file = prepare_node(&setup.registry, &setup.work)?;
    let mut host = TestHost::boot()?;
    // The shipped example, pointed at the test registry.
    let out = apply_node(&host, &file)?;
    assert!(out.status.success(), "{}\n{}", describe_output(&out), host.journal("flannel.service"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "installed etcd\ninstalled flannel\ninstalled containerd\n");
    assert!(cri_serving(&host), "{}", host.journal("containerd.service"));
    let again = sysctr_ok(&host, &["apply", file.to_str().unwrap()]);
    assert_eq!(again, "unchanged etcd\nunchanged flannel\nunchanged containerd\n");
    for unit in ["etcd", "flannel", "containerd"] {
        let verify = host.exec(&["systemd-analyze", "verify", &format!("/etc/systemd/system/{unit}.service")])?;
        assert!(verify.status.success(), "{unit}: {}", describe_output(&verify));
    }

    for boot in 1..=3 {
        host.reboot()?;
        for unit in ["etcd.service", "flannel.service", "containerd.service"] {
            wait_active(&host, unit);
        }
        let etcd_ready = monotonic(&host, "etcd.service", "ActiveEnterTimestampMonotonic");
        let flannel_started = monotonic(&host, "flannel.service", "ExecMainStartTimestampMonotonic");
        let flannel_ready = monotonic(&host, "flannel.service", "ActiveEnterTimestampMonotonic");
        let containerd_started = monotonic(&host, "containerd.service", "ExecMainStartTimestampMonotonic");
        assert!(etcd_ready <= flannel_started, "boot {boot}: flannel started before etcd was ready");
        assert!(flannel_ready <= containerd_started, "boot {boot}: containerd started before flannel was ready");
        let subnet = host.exec_ok(&["cat", "/run/flannel/subnet.env"])?;
        assert!(subnet.contains("FLANNEL_SUBNET=10.1."), "boot {boot}: {subnet}");
        assert!(cri_serving(&host), "boot {boot}: {}", host.journal("containerd.service"));
        let userspace: u64 =
            host.exec_ok(&["systemctl", "show", "-P", "UserspaceTimestampMonotonic"])?.trim().parse()?;
        eprintln!(
            "boot {boot}: etcd ready {} ms, flannel ready {} ms, containerd started {} ms after systemd started",
            (etcd_ready - userspace) / 1000,
            (flannel_ready - userspace) / 1000,
            (containerd_started - userspace) / 1000
        );
    }

    // etcd restarted: the units that require it restart with it. etcd stopped and started
    // again: stopping takes the chain down, and starting pulls it back up (each later unit is
    // also wanted by the one it follows).
    let flannel_pid = unit_property(&host, "flannel.service", "MainPID");
    host.exec_ok(&["systemctl", "restart", "etcd.service"])?;
    for unit in ["etcd.service", "flannel.service", "containerd.service"] {
        wait_active(&host, unit);
    }
    assert_ne!(unit_property(&host, "flannel.service", "MainPID"), flannel_pid, "flannel was not restarted");
    host.exec_ok(&["systemctl", "stop", "etcd.service"])?;
    assert_eq!(unit_property(&host, "flannel.service", "ActiveState"), "inactive");
    host.exec_ok(&["systemctl", "start", "etcd.service"])?;
    for unit in ["flannel.service", "containerd.service"] {
        wait_active(&host, unit);
    }
    wait_for("the CRI after etcd came back", Duration::from_secs(60), Duration::from_millis(200), || {
        Ok(cri_serving(&host).then_some(()))
    })?;

    // The runtime requires flannel (flannel's [Install] RequiredBy=): uninstalling flannel says so.
    let out = host.run_sysctr(&["uninstall", "flannel"])?;
    assert!(out.status.success(), "{}", describe_output(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("containerd.service require flannel.service"), "{said}");
    assert_eq!(unit_property(&host, "containerd.service", "ActiveState"), "inactive");
    Ok(())
}

#[test]
fn a_node_composed_offline_brings_its_chain_up_at_first_boot() -> Result<()> {
    let _ports = lock_etcd_ports();
    let setup = Setup::new();
    let file = prepare_node(&setup.registry, &setup.work)?;
    let mut host = TestHost::boot()?;
    host.exec_ok(&["systemctl", "unmask", "etcd.service", "containerd.service"])?;
    host.shutdown()?;
    // sysctr is part of the OS image, where its package puts it: containerd's template asks for
    // ALL_PROCESS_CAPABILITIES, which its unit fits to the target at start.
    std::fs::copy(sysctr_bin(), host.root().join("usr/bin/sysctr"))?;

    let out = sysctr_offline(&host.root(), &["apply", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "installed etcd\ninstalled flannel\ninstalled containerd\n");

    // First boot, with no sysctr call: the boot waits for flannel, which waits for its network
    // config in etcd; the test puts it there as soon as etcd answers, as a provisioner would.
    host.reboot_with(|h| {
        let _ = h.exec(&["/usr/local/bin/etcdctl", "put", "/atomic.io/network/config", r#"{"Network":"10.1.0.0/16"}"#]);
    })?;
    for unit in ["etcd.service", "flannel.service", "containerd.service"] {
        wait_active(&host, unit);
    }
    let flannel_ready = monotonic(&host, "flannel.service", "ActiveEnterTimestampMonotonic");
    assert!(flannel_ready <= monotonic(&host, "containerd.service", "ExecMainStartTimestampMonotonic"));
    wait_for("a serving CRI", Duration::from_secs(60), Duration::from_millis(200), || {
        Ok(cri_serving(&host).then_some(()))
    })?;
    Ok(())
}
