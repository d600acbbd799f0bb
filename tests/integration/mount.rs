//! `sysctr mount`: the view of an image is attached read-only, nosuid and nodev from its first
//! instant (the mount API: `open_tree`, `mount_setattr`, `move_mount`), never bind-mounted and
//! then remounted. Runs on this machine, as root, with mounts under a scratch directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::common::*;
use super::{scratch, stderr};

/// Unmounts a view a failed test left behind (lazily, so that a busy one goes too).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The per-mount options of the mount at `dir` in this process's mountinfo, if one is there.
fn mount_options(dir: &Path) -> Option<Vec<String>> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = dir.to_str().unwrap();
    // Field 5 is the mount point, field 6 the mount's own options; the last mount there wins.
    mountinfo.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        (fields.get(4) == Some(&dir)).then(|| fields[5].split(',').map(str::to_string).collect())
    })
}

/// The system calls named in an `strace -f` log, with their arguments.
fn calls<'a>(trace: &'a str, name: &str) -> Vec<&'a str> {
    trace
        .lines()
        .filter(|line| {
            // `PID name(args) = result`, the pid padded with spaces to a width.
            let call = line.trim_start_matches(|c: char| c.is_ascii_digit()).trim_start();
            call.starts_with(&format!("{name}("))
        })
        .collect()
}

#[test]
fn mount_shows_an_image_read_only_nosuid_nodev_from_the_first_instant() {
    let work = scratch();
    let layout = work.path().join("layout");
    Image::new()
        .layer(
            Layer::gzip()
                .dir("usr", 0o755)
                .dir("usr/bin", 0o755)
                .file("usr/bin/tool", "#!/bin/sh\necho tool\n", 0o755)
                .file("usr/bin/suid-tool", "#!/bin/sh\necho root\n", 0o4755),
        )
        .cmd(&["/usr/bin/tool"])
        .write_oci_layout(&layout, "v1")
        .unwrap();
    let image = format!("oci:{}:v1", layout.display());
    let storage = work.path().join("storage");
    let out = run_sysctr(&storage, &["pull", &image]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let view = work.path().join("view");
    std::fs::create_dir(&view).unwrap();
    let view = view.canonicalize().unwrap();
    let _cleanup = Unmount(view.clone());

    let trace = work.path().join("mount.trace");
    let out = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=mount,open_tree,mount_setattr,move_mount,fsopen,fsmount", "-o"])
        .arg(&trace)
        .arg(sysctr_bin())
        .args(["mount", &image])
        .arg(&view)
        .env("SYSCTR_STORAGE", &storage)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe_output(&out));
    let trace = std::fs::read_to_string(&trace).unwrap();

    // No mount(2) at all: no bind mount that is writable and honours setuid until a remount.
    assert!(calls(&trace, "mount").is_empty(), "mount(2) was used:\n{trace}");
    let (clone, attrs, attach) =
        (calls(&trace, "open_tree"), calls(&trace, "mount_setattr"), calls(&trace, "move_mount"));
    assert!(clone.len() == 1 && clone[0].contains("OPEN_TREE_CLONE"), "{trace}");
    assert!(attrs.len() == 1, "{trace}");
    for attr in ["MOUNT_ATTR_RDONLY", "MOUNT_ATTR_NOSUID", "MOUNT_ATTR_NODEV"] {
        assert!(attrs[0].contains(attr), "{attr} not set on the detached tree:\n{trace}");
    }
    assert!(attach.len() == 1 && attach[0].contains("MOVE_MOUNT_F_EMPTY_PATH"), "{trace}");
    // The attributes are set before the tree is attached anywhere.
    let position = |call: &str| trace.find(call).unwrap();
    assert!(position(attrs[0]) < position(attach[0]), "{trace}");

    let options = mount_options(&view).unwrap_or_else(|| panic!("nothing mounted on {}", view.display()));
    for option in ["ro", "nosuid", "nodev"] {
        assert!(options.iter().any(|o| o == option), "{} mounted with {options:?}", view.display());
    }

    // The view shows the image, read-only, its setuid bit there but meaning nothing.
    assert_eq!(std::fs::read_to_string(view.join("usr/bin/tool")).unwrap(), "#!/bin/sh\necho tool\n");
    let error = std::fs::write(view.join("new"), "x").unwrap_err();
    assert_eq!(error.raw_os_error(), Some(nix::libc::EROFS), "{error}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(view.join("usr/bin/suid-tool")).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o4755);

    // A second image on the same directory is refused; `umount` undoes all of it.
    let out = run_sysctr(&storage, &["mount", &image, view.to_str().unwrap()]);
    assert!(
        !out.status.success() && stderr(&out).contains("already has an image mounted"),
        "{}",
        describe_output(&out)
    );
    let out = run_sysctr(&storage, &["umount", view.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_eq!(mount_options(&view), None, "{} still mounted", view.display());
    let checkouts: Vec<_> = std::fs::read_dir(storage.join("mounts")).unwrap().collect();
    assert!(checkouts.is_empty(), "image checkout left behind: {checkouts:?}");
}
