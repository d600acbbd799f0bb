//! The Debian package on a booted host: installed with dpkg, it brings the binary, the man pages,
//! the completions, the units (known to systemd at once) and a private storage; the demo runs with
//! the installed binary; purged, it leaves nothing but the storage.

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
        "usr/share/man/man8/sysctr-install.8.gz",
        "usr/share/bash-completion/completions/sysctr",
        "usr/share/zsh/vendor-completions/_sysctr",
        "usr/share/fish/vendor_completions.d/sysctr.fish",
    ] {
        assert!(root.join(file).exists(), "{file} is not installed");
    }
    host.exec_ok(&["systemctl", "cat", "sysctr-auto-update.timer"])?;
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
