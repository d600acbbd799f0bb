//! Images written to get out of their tree, each installed, mounted and run on a booted host:
//! afterwards nothing outside the deployment and the store has changed, the deployment
//! installed before is intact, and sysctr either succeeded or said one clear `error:` line.

use std::os::unix::fs::FileTypeExt;

use super::*;

/// A host directory the hostile images aim at.
const VICTIM_DIR: &str = "/srv/victim";

/// FIFOs anywhere in the host's upper directory outside sysctr's storage: a FIFO written
/// through a symlink would land there.
fn stray_fifos(host: &TestHost) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![host.upper()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else { continue };
            if path.strip_prefix(host.upper()).is_ok_and(|p| p.starts_with("var/lib/sysctr") || p.starts_with("run")) {
                continue;
            }
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_fifo() {
                found.push(path);
            }
        }
    }
    found
}

/// One FIFO-through-a-symlink attack: `x/` holds a FIFO, then `x` becomes a symlink to the victim.
fn fifo_through_symlink(target: &str, same_layer: bool) -> Image {
    let planted = Layer::gzip().dir("x", 0o755).fifo("x/f").fifo("x/ld.so.preload");
    let image = busybox_service_image(&[]).cmd(&["/bin/sleep", "1000"]);
    if same_layer {
        image.layer(planted.symlink("x", target))
    } else {
        image.layer(planted).layer(Layer::gzip().symlink("x", target))
    }
}

fn assert_one_clear_error_or_success(out: &std::process::Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{what}: {}", describe_output(out));
    if !out.status.success() {
        assert!(stderr.starts_with("error: "), "{what}: {}", describe_output(out));
    }
}

#[test]
fn fifos_are_never_created_through_an_images_symlinks() -> Result<()> {
    let setup = Setup::new();
    let host = TestHost::boot()?;
    host.exec_ok(&["mkdir", "-p", VICTIM_DIR, "/mnt/view"])?;
    let good = setup.push(&hello_image(), "demo/hello");
    sysctr_ok(&host, &["install", "--now", "--set", "RECEIVER=Pluto", &good]);
    greeting(&host, "Pluto"); // runc has made its mount points by then
    let good_before = tree_listing(&host.root().join("var/lib/sysctr/deployments/hello.0/rootfs"))?;

    let cases = [
        ("next-layer-absolute", fifo_through_symlink(VICTIM_DIR, false)),
        ("same-layer-absolute", fifo_through_symlink(VICTIM_DIR, true)),
        ("next-layer-relative", fifo_through_symlink("../../../../../../../../srv/victim", false)),
        ("etc", fifo_through_symlink("/etc", false)),
    ];
    for (name, image) in cases {
        let reference = setup.push(&image, &format!("hostile/{name}"));
        let out = host.run_sysctr(&["install", "--name", name, &reference])?;
        assert_one_clear_error_or_success(&out, name);
        let out = host.run_sysctr(&["mount", &reference, "/mnt/view"])?;
        assert_one_clear_error_or_success(&out, name);
        if out.status.success() {
            sysctr_ok(&host, &["umount", "/mnt/view"]);
        }
        let out = host.run_sysctr(&["run", &reference, "/bin/true"])?;
        assert_one_clear_error_or_success(&out, name);

        assert_eq!(stray_fifos(&host), Vec::<PathBuf>::new(), "{name}: a FIFO was created outside the tree");
        let victim: Vec<_> = std::fs::read_dir(host.root().join(VICTIM_DIR.trim_start_matches('/')))?.collect();
        assert!(victim.is_empty(), "{name}: {VICTIM_DIR} was written to");
        assert!(!host.root().join("etc/ld.so.preload").exists(), "{name}: /etc/ld.so.preload created");
        let _ = host.run_sysctr(&["uninstall", name]);
    }
    let good_after = tree_listing(&host.root().join("var/lib/sysctr/deployments/hello.0/rootfs"))?;
    let changes = diff_listings(&good_before, &good_after);
    assert!(changes.is_empty(), "the good deployment changed:\n{}", changes.join("\n"));
    assert_eq!(unit_property(&host, "hello.service", "ActiveState"), "active");
    Ok(())
}

/// A static program that prints its effective uid: what a setuid-root file gives whoever runs it.
fn euid_program(dir: &Path) -> PathBuf {
    let source = dir.join("euid.c");
    std::fs::write(
        &source,
        "#include <stdio.h>\n#include <unistd.h>\nint main(void) { printf(\"%d\\n\", (int)geteuid()); return 0; }\n",
    )
    .unwrap();
    let binary = dir.join("euid");
    cmd_ok(&["gcc", "-static", "-O1", "-o", binary.to_str().unwrap(), source.to_str().unwrap()]).unwrap();
    binary
}

#[test]
fn no_other_user_runs_an_images_setuid_files() -> Result<()> {
    let setup = Setup::new();
    let program = euid_program(&setup.work);
    let image = busybox_service_image(&[])
        .cmd(&["/bin/sleep", "1000"])
        .layer(Layer::gzip().dir("usr", 0o755).dir("usr/bin", 0o755).host_file("usr/bin/euid", &program, 0o4755));
    let reference = setup.push(&image, "hostile/setuid");
    let host = TestHost::boot()?;
    // The storage is private even where it was made world-readable beforehand.
    host.exec_ok(&["mkdir", "-p", "-m", "0755", "/var/lib/sysctr"])?;
    sysctr_ok(&host, &["install", "--name", "suid", &reference]);
    host.exec_ok(&["mkdir", "-p", "/mnt/view"])?;
    sysctr_ok(&host, &["mount", "suid", "/mnt/view"]);

    let mode = host.exec_ok(&["stat", "-c", "%a %U", "/var/lib/sysctr"])?;
    assert_eq!(mode.trim(), "700 root");
    // The program works, and is setuid root, for root itself.
    let as_root = host.exec_ok(&["/mnt/view/usr/bin/euid"])?;
    assert_eq!(as_root.trim(), "0");
    let rootfs = "/var/lib/sysctr/deployments/suid/rootfs/usr/bin/euid";
    let object = host.exec_ok(&["find", "/var/lib/sysctr/repo/objects", "-type", "f", "-perm", "-4000"])?;
    let object = object.lines().next().expect("the setuid file in the store").to_string();
    for path in [rootfs, object.as_str(), "/mnt/view/usr/bin/euid"] {
        // Through a shell: setpriv itself would exec with root's capabilities still in effect.
        let out = host.exec(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/bin/sh",
            "-c",
            "exec \"$0\"",
            path,
        ])?;
        let euid = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_ne!(euid, "0", "user 65534 ran {path} as root: {}", describe_output(&out));
    }
    let options = host.exec_ok(&["findmnt", "-n", "-o", "OPTIONS", "/mnt/view"])?;
    assert!(options.contains("nosuid") && options.contains("nodev") && options.contains("ro"), "{options}");
    sysctr_ok(&host, &["umount", "/mnt/view"]);
    sysctr_ok(&host, &["uninstall", "suid"]);
    Ok(())
}

#[test]
fn hostfs_symlinks_never_carry_a_file_outside_the_recorded_paths() -> Result<()> {
    let setup = Setup::new();
    let host = TestHost::boot()?;
    host.exec_ok(&["mkdir", "-p", VICTIM_DIR])?;
    host.exec_ok(&["sh", "-c", &format!("echo precious > {VICTIM_DIR}/target && chmod 0644 {VICTIM_DIR}/target")])?;
    let victim = host.root().join(VICTIM_DIR.trim_start_matches('/'));
    let before = tree_listing(&victim)?;
    let host_before = snapshot(&host);

    // The symlink, then a file renamed (by `renameFiles`) to a path below it, setuid.
    let mut layer = Layer::gzip().dir("exports", 0o755).dir("exports/hostfs", 0o755);
    for dir in ["usr", "usr/local", "usr/local/lib", "usr/local/share"] {
        layer = layer.dir(&format!("exports/hostfs/{dir}"), 0o755);
    }
    let layer = layer
        .symlink("exports/hostfs/usr/local/lib/evil", VICTIM_DIR)
        .file_owned("exports/hostfs/usr/local/share/renamed", "owned\n", 0o4755, 0, 0)
        .file(
            "exports/manifest.json",
            r#"{"renameFiles": {"/usr/local/share/renamed": "/usr/local/lib/evil/target2"}}"#,
            0o644,
        );
    let image = Image::new().layer(busybox_layer()).layer(layer).cmd(&["/bin/sleep", "1000"]);
    let reference = setup.push(&image, "hostile/hostfs-rename");
    let err = sysctr_err(&host, &["install", "--name", "rename", &reference]);
    assert!(err.contains("through the image's symlink /usr/local/lib/evil"), "{err}");

    let changes = diff_listings(&before, &tree_listing(&victim)?);
    assert!(changes.is_empty(), "{VICTIM_DIR} changed:\n{}", changes.join("\n"));
    assert_same(&host_before, &snapshot(&host), "after the refused installs");
    Ok(())
}

/// A directory that stands for an OS image being composed: Debian's `/var/run -> /run`, a
/// runtime to name in units, and nothing else.
fn bare_target_root(dir: &Path) -> PathBuf {
    let root = dir.join("target-root");
    for sub in ["run", "var", "usr/sbin", "etc/systemd/system"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::os::unix::fs::symlink("/run", root.join("var/run")).unwrap();
    std::fs::write(root.join("usr/sbin/runc"), "#!/bin/sh\n").unwrap();
    root
}

#[test]
fn offline_roots_keep_every_write_inside_them() -> Result<()> {
    let setup = Setup::new();
    let root = bare_target_root(&setup.work);
    let marker = format!("sysctr-offline-{}", std::process::id());

    // A host file below the target's own /var/run -> /run lands in the target's /run.
    let image =
        busybox_service_image(&[(&format!("hostfs/var/run/{marker}/x.conf"), "x\n")]).cmd(&["/bin/sleep", "1000"]);
    let reference = setup.push(&image, "hostile/var-run");
    let out = sysctr_offline(&root, &["install", "--name", "varrun", &reference]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(root.join(format!("run/{marker}/x.conf")).is_file());
    assert!(!Path::new("/run").join(&marker).exists(), "the composing machine's /run was written");
    let out = sysctr_offline(&root, &["uninstall", "varrun"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(!root.join(format!("run/{marker}")).exists());

    // [Install] values that are not unit names are refused before anything is written.
    let victim = setup.work.join("alias-victim.service");
    std::fs::write(&victim, "precious")?;
    for value in ["Alias=../../../../alias-victim.service", "WantedBy=../../../x", "RequiredBy=/etc/passwd"] {
        let unit = format!("[Service]\nExecStart=$EXEC_START\n[Install]\n{value}\n");
        let image = busybox_service_image(&[("service.template", &unit)]).cmd(&["/bin/sleep", "1000"]);
        let reference = setup.push(&image, "hostile/install-section");
        let out = sysctr_offline(&root, &["install", "--name", "alias", &reference]);
        assert_eq!(out.status.code(), Some(1), "{value}: {}", describe_output(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: ") && err.contains("is not a unit name"), "{value}: {err}");
        assert_eq!(std::fs::read_to_string(&victim)?, "precious");
        assert!(std::fs::symlink_metadata(root.join("etc/systemd/system/alias.service")).is_err());
    }
    Ok(())
}
