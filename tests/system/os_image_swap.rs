//! An image-based update of a host whose containers come with its OS image: two versions of the
//! tree of `examples/os-image` (the package only), each with the container `imaged` composed in
//! by this build's `sysctr --root TREE --os-image`, the second with a newer image of it and
//! another value. The host boots the first, then is updated as bootc or Flatcar do it: its
//! `/usr` replaced by the second's, `/etc` merged (what the new image adds or changes appears,
//! what the administrator changed is kept), and rebooted, with no network at all. Then back.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

use super::common::*;
use super::lock_etcd_ports;
use super::os_image::sysctr_deb;

const NAME: &str = "imaged";
/// The administrator's drop-in, made on the booted host: a marker in /run at each start.
const ADMIN_DROP_IN: &str = "etc/systemd/system/imaged.service.d/50-admin.conf";
const ADMIN_MARKER: &str = "run/imaged-admin";

/// A busybox image whose container says which image it is (`/imaged-version`, a file of its
/// own layer) and the value `VALUE` it was composed with, then waits to be stopped.
fn imaged_image(version: &str) -> Image {
    let config = json!({
        "ociVersion": "1.0.0",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/sh", "-c",
                     "trap 'exit 0' TERM; echo \"imaged: image `cat /imaged-version` value ${VALUE}\"; sleep 1000000 & wait"],
            "env": ["PATH=/bin"],
            "cwd": "/"
        },
        "root": {"path": "rootfs", "readonly": true},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]}
        ],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "mount"}]}
    });
    busybox_service_image(&[
        ("config.json.template", &serde_json::to_string_pretty(&config).unwrap()),
        ("manifest.json", r#"{"version": "1.0", "defaultValues": {"VALUE": "none"}}"#),
    ])
    .layer(Layer::gzip().created_by("version").file("imaged-version", format!("{version}\n"), 0o644))
}

/// `sysctr --root TREE --os-image install --name imaged --set VALUE=value oci:LAYOUT`, with this
/// build's binary, as an image build would; then checks where it went.
fn compose(tree: &Path, layout: &Path, value: &str) -> Result<()> {
    let out = Command::new(sysctr_bin())
        .arg("--root")
        .arg(tree)
        .args(["--os-image", "install", "--name", NAME, "--set", &format!("VALUE={value}")])
        .arg(format!("oci:{}", layout.display()))
        .output()?;
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(tree.join("usr/lib/sysctr/deployments").join(NAME).is_symlink());
    assert!(tree.join("usr/lib/sysctr/repo/config").is_file());
    assert!(tree.join(format!("usr/lib/systemd/system/{NAME}.service")).is_file());
    assert!(tree.join(format!("usr/lib/systemd/system/multi-user.target.wants/{NAME}.service")).is_symlink());
    assert!(!tree.join(format!("etc/systemd/system/{NAME}.service")).exists());
    let var: Vec<_> = std::fs::read_dir(tree.join("var/lib/sysctr"))?.map(|e| e.unwrap().file_name()).collect();
    assert_eq!(var, ["lock"], "composing left more than the lock under /var/lib/sysctr");
    Ok(())
}

/// Merges `/etc` as an image update does, file by file: an entry the new image has and the
/// host lacks appears; one the host has as the old image had it becomes the new image's (or goes,
/// when the new image dropped it); one the host changed is kept.
fn merge_etc(old: &Path, new: &Path, host: &Path) -> Result<()> {
    let (o, n, h) = (tree_listing(old)?, tree_listing(new)?, tree_listing(host)?);
    for (path, entry) in &n {
        let unchanged = h.get(path).is_some_and(|he| o.get(path) == Some(he));
        if h.contains_key(path) && !(unchanged && h.get(path) != Some(entry)) {
            continue;
        }
        let dst = host.join(path);
        if matches!(entry.kind, Kind::Dir) {
            if !dst.is_dir() {
                if h.contains_key(path) {
                    std::fs::remove_file(&dst)?;
                }
                std::fs::create_dir(&dst)?;
                std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(entry.mode))?;
            }
            continue;
        }
        if h.contains_key(path) {
            if dst.is_dir() && !dst.is_symlink() {
                std::fs::remove_dir_all(&dst)?;
            } else {
                std::fs::remove_file(&dst)?;
            }
        }
        cmd_ok(&["cp", "-a", "--no-target-directory", &new.join(path).to_string_lossy(), &dst.to_string_lossy()])?;
    }
    for (path, entry) in o.iter().rev() {
        if n.contains_key(path) || h.get(path) != Some(entry) {
            continue;
        }
        let dst = host.join(path);
        if matches!(entry.kind, Kind::Dir) {
            let _ = std::fs::remove_dir(&dst); // kept if the host put something in it
        } else {
            std::fs::remove_file(&dst)?;
        }
    }
    Ok(())
}

/// The update itself, on the powered-off host's root: `/usr` replaced, `/etc` merged.
fn swap_usr(root: &Path, from: &Path, to: &Path) -> Result<()> {
    std::fs::remove_dir_all(root.join("usr"))?;
    cmd_ok(&["cp", "-a", "--reflink=auto", &to.join("usr").to_string_lossy(), &root.join("usr").to_string_lossy()])?;
    merge_etc(&from.join("etc"), &to.join("etc"), &root.join("etc"))
}

/// Waits for this boot's `imaged` to say `image VERSION value VALUE`, and checks it is the only
/// thing it said this boot, that the administrator's drop-in ran, and that there is no network.
fn assert_runs(host: &TestHost, version: &str, value: &str) -> Result<()> {
    let said = || {
        host.exec(&["journalctl", "-b", "--no-pager", "-o", "cat", "-u", &format!("{NAME}.service")])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let expected = format!("imaged: image {version} value {value}");
    wait_for(&format!("{NAME} to say '{expected}'"), Duration::from_secs(30), Duration::from_millis(100), || {
        Ok(said().contains(&expected).then_some(()))
    })
    .with_context(|| format!("{}\n{}", host.journal(&format!("{NAME}.service")), host.console_tail()))?;
    let lines: Vec<String> = said().lines().filter(|l| l.starts_with("imaged: ")).map(str::to_string).collect();
    assert_eq!(lines, [expected], "this boot's {NAME}");
    assert_eq!(host.exec_ok(&["systemctl", "is-active", &format!("{NAME}.service")])?.trim(), "active");
    assert_eq!(host.exec_ok(&["cat", &format!("/{ADMIN_MARKER}")])?, "admin drop-in\n");
    let links = host.exec_ok(&["ls", "/sys/class/net"])?;
    assert_eq!(links.split_whitespace().collect::<Vec<_>>(), ["lo"], "the booted tree has a network");
    Ok(())
}

#[test]
fn an_os_image_update_swaps_usr_and_the_next_boot_runs_the_new_container_with_the_admins_drop_in() -> Result<()> {
    let started = Instant::now();
    let work = tempfile::Builder::new().prefix("sysctr-os-swap.").tempdir_in("/var/tmp")?;
    let deb = sysctr_deb(&work.path().join("deb"))?;

    // The tree with the package and no container, copied twice; the build's own tree goes (and
    // its cache lock with it) before anything boots.
    let (v1, v2) = (work.path().join("v1"), work.path().join("v2"));
    {
        let image = OsImage::build(
            &examples_dir().join("os-image"),
            "node",
            &[("SYSCTR_DEB", deb.as_os_str()), ("SYSCTR_NODE", OsStr::new("no"))],
        )?;
        eprintln!(
            "mkosi: {} build in {:.1} s",
            if image.cold { "cold" } else { "incremental" },
            image.elapsed.as_secs_f64()
        );
        assert!(image.tree().join("usr/bin/sysctr").is_file());
        assert!(!image.tree().join("usr/lib/sysctr").exists() && !image.tree().join("etc/sysctr").exists());
        for copy in [&v1, &v2] {
            cmd_ok(&["cp", "-a", "--reflink=auto", &image.tree().to_string_lossy(), &copy.to_string_lossy()])?;
        }
    }

    // Version 1 and version 2 of the OS image: the container's image and value, and a file of
    // the image's own /etc that changes (os-image-version) or is new (imaged-added).
    let layouts = work.path().join("images");
    let mut ids = Vec::new();
    for (tree, version) in [(&v1, "1"), (&v2, "2")] {
        let layout: PathBuf = layouts.join(format!("imaged-{version}"));
        ids.push(imaged_image(version).write_oci_layout(&layout, "latest")?);
        compose(tree, &layout, version)?;
        std::fs::write(tree.join("etc/os-image-version"), format!("{version}\n"))?;
    }
    std::fs::write(v2.join("etc/imaged-added"), "new in 2\n")?;
    let deployment = |tree: &Path| std::fs::read_link(tree.join("usr/lib/sysctr/deployments").join(NAME)).unwrap();
    let config = |tree: &Path| {
        std::fs::read_to_string(tree.join("usr/lib/sysctr/deployments").join(deployment(tree)).join("config.json"))
            .unwrap()
    };
    assert!(config(&v1).contains("value 1") && config(&v2).contains("value 2"));
    eprintln!("trees composed after {:.1} s", started.elapsed().as_secs_f64());

    // Version 1 boots; the administrator adds a drop-in.
    let _units = lock_etcd_ports();
    let mut host = TestHost::boot_copy(&v1, &["systemd-firstboot.service"])?;
    let var_before = tree_listing(&host.root().join("var/lib/sysctr"))?;
    assert_eq!(var_before.keys().collect::<Vec<_>>(), [Path::new("lock")]);
    let marker_unit = "[Service]\nExecStartPost=/bin/sh -c 'echo admin drop-in > /run/imaged-admin'\n";
    let drop_in = host.root().join(ADMIN_DROP_IN);
    std::fs::create_dir_all(drop_in.parent().unwrap())?;
    std::fs::write(&drop_in, marker_unit)?;
    host.exec_ok(&["systemctl", "daemon-reload"])?;
    host.exec_ok(&["systemctl", "restart", &format!("{NAME}.service")])?;
    wait_for("imaged to say it twice", Duration::from_secs(30), Duration::from_millis(100), || {
        let out = host.exec_ok(&["journalctl", "-b", "--no-pager", "-o", "cat", "-u", &format!("{NAME}.service")])?;
        Ok((out.matches("imaged: image 1 value 1").count() == 2).then_some(()))
    })
    .with_context(|| host.journal(&format!("{NAME}.service")))?;
    assert_eq!(host.exec_ok(&["cat", &format!("/{ADMIN_MARKER}")])?, "admin drop-in\n");
    let machine_id = std::fs::read_to_string(host.root().join("etc/machine-id"))?;
    eprintln!("version 1 running after {:.1} s", started.elapsed().as_secs_f64());

    // The update: /usr of version 2, /etc merged, reboot. No pull, no network, nothing of /var.
    host.reboot_changed(|root| swap_usr(root, &v1, &v2))?;
    assert_runs(&host, "2", "2")?;
    let root = host.root();
    assert_eq!(std::fs::read_to_string(root.join("etc/os-image-version"))?, "2\n");
    assert_eq!(std::fs::read_to_string(root.join("etc/imaged-added"))?, "new in 2\n");
    assert_eq!(std::fs::read_to_string(&drop_in)?, marker_unit);
    assert_eq!(std::fs::read_to_string(root.join("etc/machine-id"))?, machine_id);
    assert_eq!(deployment(&root), deployment(&v2));
    let running = host.exec_ok(&["cat", &format!("/run/sysctr/{NAME}/config.json")])?;
    assert!(running.contains("value 2"), "{running}");
    assert_eq!(tree_listing(&root.join("var/lib/sysctr"))?, var_before, "the update used /var/lib/sysctr");
    // The booted host's sysctr (the package's, of this build) sees the new image's container as
    // the OS image's.
    let listed = host.exec_ok(&["sysctr", "list", "--json"])?;
    let listed = serde_json::from_str::<serde_json::Value>(&listed)?.to_string();
    let id = ids[1].config_digest.trim_start_matches("sha256:");
    for part in [r#""name":"imaged""#, r#""origin":"image""#, id] {
        assert!(listed.contains(part), "{part} not in {listed}");
    }
    eprintln!("version 2 running after {:.1} s", started.elapsed().as_secs_f64());

    // And back: version 1's /usr, the file only 2 added gone, the drop-in still there.
    host.reboot_changed(|root| swap_usr(root, &v2, &v1))?;
    assert_runs(&host, "1", "1")?;
    assert_eq!(std::fs::read_to_string(root.join("etc/os-image-version"))?, "1\n");
    assert!(!root.join("etc/imaged-added").exists());
    assert_eq!(std::fs::read_to_string(&drop_in)?, marker_unit);
    assert_eq!(tree_listing(&root.join("var/lib/sysctr"))?, var_before, "the update used /var/lib/sysctr");
    eprintln!("version 1 running again after {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
