//! Commands that run at once: each waits for the storage lock, for a bounded time, and none
//! leaves another's work half done.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use super::common::*;
use super::{scratch, stderr, stdout};

/// `sysctr --root ROOT ARGS` on this machine, its storage the root's own.
fn sysctr_in_root(root: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(sysctr_bin());
    command.arg("--root").arg(root).args(args).env_remove("SYSCTR_STORAGE").env("RUST_BACKTRACE", "0");
    command
}

#[test]
fn a_command_waits_for_the_storage_lock_only_as_long_as_told() {
    let work = scratch();
    let layout = work.path().join("layout");
    Image::new().layer(Layer::gzip().file("etc/hello", "hi\n", 0o644)).write_oci_layout(&layout, "v1").unwrap();
    let image = format!("oci:{}:v1", layout.display());
    let storage = work.path().join("storage");
    std::fs::create_dir(&storage).unwrap();
    let lock_file = storage.join("lock");
    let held = Flock::lock(std::fs::File::create(&lock_file).unwrap(), FlockArg::LockExclusive).unwrap();

    let started = Instant::now();
    let mut child = Command::new(sysctr_bin())
        .args(["pull", &image])
        .env("SYSCTR_STORAGE", &storage)
        .env("SYSCTR_LOCK_TIMEOUT", "2")
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    if child.try_wait().unwrap().is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let waited = started.elapsed();
    assert!(!out.status.success(), "{}", describe_output(&out));
    assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(30), "waited {waited:?}");
    let said = stderr(&out);
    assert_eq!(said.matches("waiting for another sysctr command to finish").count(), 1, "{said}");
    let expected = format!("another sysctr command still holds the lock {} after 2s", lock_file.display());
    assert!(said.contains(&expected), "{said}");

    // A wrong timeout is named; once the lock is free the command goes ahead.
    let out = Command::new(sysctr_bin())
        .args(["pull", &image])
        .env("SYSCTR_STORAGE", &storage)
        .env("SYSCTR_LOCK_TIMEOUT", "soon")
        .output()
        .unwrap();
    assert!(stderr(&out).contains("SYSCTR_LOCK_TIMEOUT=soon"), "{}", describe_output(&out));
    drop(held);
    let out = run_sysctr(&storage, &["pull", &image]);
    assert!(out.status.success(), "{}", describe_output(&out));
}

#[test]
fn eight_commands_at_once_leave_every_container_whole() {
    let work = scratch();
    let layout = work.path().join("layout");
    hello_image().write_oci_layout(&layout, "v1").unwrap();
    let image = format!("oci:{}:v1", layout.display());
    // An OS image being composed: a runtime for the units to name, nothing running.
    let root = work.path().join("root");
    std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
    std::fs::write(root.join("usr/sbin/runc"), "").unwrap();
    for name in ["kept", "updated", "removed"] {
        let out = sysctr_in_root(&root, &["install", "--name", name, &image]).output().unwrap();
        assert!(out.status.success(), "{name}: {}", describe_output(&out));
    }

    // Five installs, an update, an uninstall and a list, all started together.
    let installed = ["c1", "c2", "c3", "c4", "c5"];
    let mut commands: Vec<(String, Vec<String>)> = installed
        .iter()
        .map(|name| {
            (format!("install {name}"), vec!["install".into(), "--name".into(), name.to_string(), image.clone()])
        })
        .collect();
    commands.push(("update".into(), vec!["update".into(), "--set".into(), "RECEIVER=Later".into(), "updated".into()]));
    commands.push(("uninstall".into(), vec!["uninstall".into(), "removed".into()]));
    commands.push(("list".into(), vec!["list".into()]));
    assert_eq!(commands.len(), 8);
    let children: Vec<_> = commands
        .iter()
        .map(|(what, args)| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let child = sysctr_in_root(&root, &args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (what, child)
        })
        .collect();
    let outputs: Vec<(&String, Output)> =
        children.into_iter().map(|(what, child)| (what, child.wait_with_output().unwrap())).collect();
    for (what, out) in &outputs {
        assert!(out.status.success(), "{what}: {}", describe_output(out));
    }

    let storage = root.join("var/lib/sysctr");
    let mut expected: Vec<&str> = installed.to_vec();
    expected.extend(["kept", "updated"]);
    for name in &expected {
        let slot = format!("{name}.{}", if *name == "updated" { 1 } else { 0 });
        let link = std::fs::read_link(storage.join("deployments").join(name)).unwrap();
        assert_eq!(link, Path::new(&slot), "{name}");
        let slot_dir = storage.join("deployments").join(&slot);
        for part in ["info", "config.json", "rootfs/usr/bin/hello"] {
            assert!(slot_dir.join(part).exists(), "{name}: {part} missing from {}", slot_dir.display());
        }
        let unit = root.join(format!("etc/systemd/system/{name}.service"));
        assert!(unit.is_file(), "{name}: no {}", unit.display());
    }
    assert!(!storage.join("deployments/removed").exists() && !root.join("etc/systemd/system/removed.service").exists());
    assert!(!storage.join(".transaction").exists(), "a transaction was left open");

    let out = sysctr_in_root(&root, &["list", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", describe_output(&out));
    let mut listed: Vec<String> =
        json_items(&out.stdout, "ContainerList").iter().map(|row| row["name"].as_str().unwrap().to_string()).collect();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected, "{}", stdout(&out));
}
