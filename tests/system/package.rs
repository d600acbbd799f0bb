//! The Debian package on a booted host: lintian finds no error in it; installed with dpkg, it
//! brings the binary, the man pages, the completions, the units (known to systemd at once) and a
//! private storage; the demo runs with the installed binary; purged, it leaves nothing but the
//! storage. The RPM, built by rpmbuild from a source tarball, holds the same files.

use std::path::Path;

use anyhow::Result;

use super::common::*;
use super::{greeting, wait_active, Setup};

#[test]
fn the_package_installs_runs_the_demo_and_purges_clean() -> Result<()> {
    let setup = Setup::new();
    let image = setup.push(&hello_image(), "demo/hello");
    let out_dir = setup.work.join("deb");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = std::process::Command::new("bash")
        .arg(repo.join("packaging/deb/build.sh"))
        .arg(&out_dir)
        .env("SYSCTR_BIN", sysctr_bin())
        .env("SYSCTR_DEB_COMPRESSION", "gzip")
        .output()?;
    assert!(built.status.success(), "{}", describe_output(&built));
    let deb = std::fs::read_dir(&out_dir)?.next().expect("a package")?.path();
    let lint = std::process::Command::new("lintian")
        .args(["--fail-on", "error", "--tag-display-limit", "0"])
        .arg(&deb)
        .output()?;
    assert!(lint.status.success(), "lintian: {}", describe_output(&lint));
    let depends = std::process::Command::new("dpkg-deb").args(["-f"]).arg(&deb).arg("Depends").output()?;
    let depends = String::from_utf8_lossy(&depends.stdout);
    assert!(
        depends.contains("libostree-1-1 (>=") && depends.contains("libc6 (>=") && depends.contains("runc"),
        "{depends}"
    );

    let host = TestHost::boot()?;
    let root = host.root();
    std::fs::copy(&deb, root.join("var/tmp/sysctr.deb"))?;
    // Where the package puts things, and where its scripts could leave some.
    let watched = [
        "usr/bin",
        "usr/lib/systemd/system",
        "usr/lib/tmpfiles.d",
        "usr/share/man/man8",
        "usr/share/doc",
        "usr/share/bash-completion",
        "usr/share/zsh",
        "usr/share/fish",
        "etc/systemd",
        "etc/tmpfiles.d",
    ];
    let listing = || -> Result<Vec<_>> {
        watched
            .iter()
            .map(|dir| {
                std::fs::create_dir_all(root.join(dir))
                    .and(Ok(()))
                    .map_err(Into::into)
                    .and_then(|()| tree_listing(&root.join(dir)))
            })
            .collect()
    };
    let before = listing()?;

    // Triggers (man-db's index) are left pending: slow, and not the package's own doing.
    host.exec_ok(&["dpkg", "--no-triggers", "-i", "/var/tmp/sysctr.deb"])?;
    for file in [
        "usr/bin/sysctr",
        "usr/libexec/sysctr/sysctr-supervise",
        "usr/share/man/man8/sysctr-install.8.gz",
        "usr/share/bash-completion/completions/sysctr",
        "usr/share/zsh/vendor-completions/_sysctr",
        "usr/share/fish/vendor_completions.d/sysctr.fish",
    ] {
        assert!(root.join(file).exists(), "{file} is not installed");
    }
    host.exec_ok(&["systemctl", "cat", "sysctr-auto-update.timer"])?;
    // A preset pass (an image's first boot, `preset-all`) leaves sysctr's units as they were;
    // Debian's own presets enable every unit they do not name.
    host.exec_ok(&["systemctl", "preset", "sysctr-apply.path", "sysctr-auto-update.timer"])?;
    for unit in ["sysctr-apply.path", "sysctr-auto-update.timer"] {
        let enabled = host.exec(&["systemctl", "is-enabled", unit])?;
        assert_eq!(String::from_utf8_lossy(&enabled.stdout).trim(), "disabled", "{unit} after a preset pass");
    }
    let mode = host.exec_ok(&["stat", "-c", "%a", "/var/lib/sysctr"])?;
    assert_eq!(mode.trim(), "700", "the storage is not private after install");

    // The demo, with the installed binary.
    host.exec_ok(&["/usr/bin/sysctr", "install", "--now", "--set", "RECEIVER=Package", &image])?;
    wait_active(&host, "hello.service");
    greeting(&host, "Package");
    host.exec_ok(&["/usr/bin/sysctr", "uninstall", "hello"])?;

    host.exec_ok(&["dpkg", "--no-triggers", "--purge", "sysctr"])?;
    assert!(!host.exec(&["systemctl", "cat", "sysctr-auto-update.timer"])?.status.success());
    for ((dir, before), after) in watched.iter().zip(&before).zip(listing()?) {
        let left = diff_listings(before, &after);
        assert!(left.is_empty(), "left in /{dir} after purge: {left:?}");
    }
    assert!(root.join("var/lib/sysctr").exists(), "the storage went with the package");
    Ok(())
}

#[test]
fn the_rpm_builds_from_a_source_tarball_with_the_same_files() -> Result<()> {
    let work = tempfile::Builder::new().prefix("sysctr-rpm.").tempdir_in("/var/tmp")?;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = std::process::Command::new("bash")
        .arg(repo.join("packaging/rpm/build.sh"))
        .arg(work.path())
        .env("SYSCTR_BIN", sysctr_bin())
        .output()?;
    assert!(built.status.success(), "{}", describe_output(&built));
    let rpm = std::fs::read_dir(work.path())?.next().expect("a package")?.path();
    let query = |args: &[&str]| -> Result<String> {
        let out = std::process::Command::new("rpm").args(args).arg(&rpm).output()?;
        assert!(out.status.success(), "rpm {args:?}: {}", describe_output(&out));
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let files = query(&["-qlp"])?;
    for file in [
        "/usr/bin/sysctr",
        "/usr/libexec/sysctr/sysctr-supervise",
        "/usr/lib/tmpfiles.d/sysctr.conf",
        "/usr/lib/systemd/system/sysctr-auto-update.service",
        "/usr/lib/systemd/system/sysctr-auto-update.timer",
        "/usr/lib/systemd/system/sysctr-apply.service",
        "/usr/lib/systemd/system/sysctr-apply.path",
        "/usr/lib/systemd/system-preset/80-sysctr.preset",
        "/usr/share/man/man8/sysctr-install.8",
        "/usr/share/bash-completion/completions/sysctr",
        "/usr/share/zsh/site-functions/_sysctr",
        "/usr/share/fish/vendor_completions.d/sysctr.fish",
        "/usr/share/licenses/sysctr-0.1.0/copyright",
    ] {
        assert!(files.lines().any(|line| line.starts_with(file)), "{file} is not in the RPM:\n{files}");
    }
    let requires = query(&["-qp", "--requires"])?;
    assert!(requires.contains("libostree-1.so.1") && requires.contains("runc"), "{requires}");
    let scripts = query(&["-qp", "--scripts"])?;
    assert!(scripts.contains("systemd-tmpfiles --create sysctr.conf"), "{scripts}");
    Ok(())
}
