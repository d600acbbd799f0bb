//! Ready-made images. Across them all three layer compressions appear: the busybox image is
//! gzip; the three-layer image is gzip, zstd, uncompressed.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Result};

use super::image::{Image, Layer};
use super::tree::{entry_of, Kind};

/// Host busybox (Debian's busybox-static: a static binary, runnable in any rootfs).
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// Applets linked as `/bin/NAME -> busybox` in [`busybox_layer`].
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "ash", "httpd", "echo", "cat", "sleep", "ls", "mkdir", "touch", "id", "mount", "stat", "true", "false",
    "env", "printf", "test", "[", "grep", "sed", "wc", "rm", "cp", "mv", "ln", "chmod", "head", "tail", "kill", "ps",
    "date", "hostname", "nc", "wget", "uname", "pwd", "readlink", "sync", "tee", "find", "cut", "tr", "sort",
    "basename", "dirname", "umount",
];

/// A gzip layer with a small runnable system: /bin/busybox (from the host) and its applet
/// symlinks, the usual top-level dirs (/tmp 1777), /etc/passwd and /etc/group with root and
/// nobody, and an empty /exports.
pub fn busybox_layer() -> Layer {
    let mut l = Layer::gzip().created_by("busybox base");
    for d in ["bin", "dev", "etc", "proc", "sys", "run", "var", "var/lib", "root", "exports"] {
        l = l.dir(d, 0o755);
    }
    l = l.dir("tmp", 0o1777);
    l = l.host_file("bin/busybox", HOST_BUSYBOX, 0o755);
    for a in BUSYBOX_APPLETS {
        l = l.symlink(&format!("bin/{a}"), "busybox");
    }
    l.file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n", 0o644).file(
        "etc/group",
        "root:x:0:\nnogroup:x:65534:\n",
        0o644,
    )
}

/// A system-container image: [`busybox_layer`] plus, in a second gzip layer, the given files
/// under /exports (`("config.json.template", "...")`, `("hostfs/usr/local/bin/x", "...")`;
/// mode 0644, parent dirs created 0755). Label `atomic.type=system`; no Entrypoint/Cmd (set them
/// with [`Image::entrypoint`] / [`Image::cmd`] when the image ships no config.json.template).
pub fn busybox_service_image(exports: &[(&str, &str)]) -> Image {
    let mut l = Layer::gzip().created_by("exports");
    let mut dirs = BTreeSet::new();
    for (path, _) in exports {
        let p = format!("exports/{}", path.trim_start_matches('/'));
        let mut parent = Path::new(&p).parent();
        while let Some(d) = parent {
            if d.as_os_str().is_empty() || d == Path::new("exports") {
                break;
            }
            dirs.insert(d.to_string_lossy().into_owned());
            parent = d.parent();
        }
    }
    for d in &dirs {
        l = l.dir(d, 0o755);
    }
    for (path, content) in exports {
        l = l.file(&format!("exports/{}", path.trim_start_matches('/')), content, 0o644);
    }
    Image::new().layer(busybox_layer()).layer(l).label("atomic.type", "system")
}

/// Three layers (gzip, zstd, uncompressed) covering modes, owners, links, FIFOs and every
/// whiteout rule. Check a rootfs made from it with [`check_three_layer_rootfs`].
///
/// Layer 1 (gzip): etc/{hostname 0644 "base", shadow 0600, remove-me}, usr/bin/{tool 0755,
/// suid-tool 04755, tool-link -> tool, tool-hard (hard link to tool), remove-link -> tool},
/// home/user 0700 1000:1000 with notes.txt 0640 1000:1000, olddir/{a, sub/b},
/// opq/{lower1, lowersub/lower2}, typechange/file-to-dir (a file),
/// typechange/dir-to-symlink/inner (a dir), samelayer/{a "a1", b "b1"}, var/fifo (FIFO).
///
/// Layer 2 (zstd): `.wh.remove-me`, `.wh.olddir` (a directory), `opq/.wh..wh..opq` + opq/new2,
/// typechange/file-to-dir becomes a dir with `inside`, etc/hostname rewritten "layer2",
/// and same-layer whiteouts: samelayer/a "a2" then `.wh.a`; `.wh.b` then samelayer/b "b2";
/// samelayer/c "c2" then `.wh.c` (a whiteout never hides its own layer's file).
///
/// Layer 3 (uncompressed): typechange/dir-to-symlink becomes a symlink to `../etc`,
/// `usr/bin/.wh.remove-link`, etc/added3, opq/new3.
pub fn three_layer_whiteout_image() -> Image {
    let l1 = Layer::gzip()
        .created_by("layer 1: base")
        .dir("etc", 0o755)
        .file("etc/hostname", "base\n", 0o644)
        .file("etc/shadow", "root:*:19000:0:99999:7:::\n", 0o600)
        .file("etc/remove-me", "delete me\n", 0o644)
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .file("usr/bin/tool", "#!/bin/sh\necho tool\n", 0o755)
        .file("usr/bin/suid-tool", "suid\n", 0o4755)
        .symlink("usr/bin/tool-link", "tool")
        .hardlink("usr/bin/tool-hard", "usr/bin/tool")
        .symlink("usr/bin/remove-link", "tool")
        .dir("home", 0o755)
        .dir_owned("home/user", 0o700, 1000, 1000)
        .file_owned("home/user/notes.txt", "mine\n", 0o640, 1000, 1000)
        .dir("olddir", 0o755)
        .file("olddir/a", "a\n", 0o644)
        .dir("olddir/sub", 0o755)
        .file("olddir/sub/b", "b\n", 0o644)
        .dir("opq", 0o755)
        .file("opq/lower1", "lower1\n", 0o644)
        .dir("opq/lowersub", 0o755)
        .file("opq/lowersub/lower2", "lower2\n", 0o644)
        .dir("typechange", 0o755)
        .file("typechange/file-to-dir", "was a file\n", 0o644)
        .dir("typechange/dir-to-symlink", 0o755)
        .file("typechange/dir-to-symlink/inner", "inner\n", 0o644)
        .dir("samelayer", 0o755)
        .file("samelayer/a", "a1\n", 0o644)
        .file("samelayer/b", "b1\n", 0o644)
        .dir("var", 0o755)
        .fifo("var/fifo");
    let l2 = Layer::zstd()
        .created_by("layer 2: whiteouts")
        .dir("etc", 0o755)
        .whiteout("etc/remove-me")
        .file("etc/hostname", "layer2\n", 0o644)
        .whiteout("olddir")
        .dir("opq", 0o755)
        .opaque("opq")
        .file("opq/new2", "new2\n", 0o644)
        .dir("typechange", 0o755)
        .dir("typechange/file-to-dir", 0o755)
        .file("typechange/file-to-dir/inside", "inside\n", 0o644)
        .dir("samelayer", 0o755)
        .file("samelayer/a", "a2\n", 0o644)
        .whiteout("samelayer/a")
        .whiteout("samelayer/b")
        .file("samelayer/b", "b2\n", 0o644)
        .file("samelayer/c", "c2\n", 0o644)
        .whiteout("samelayer/c");
    let l3 = Layer::uncompressed()
        .created_by("layer 3: type changes")
        .symlink("typechange/dir-to-symlink", "../etc")
        .whiteout("usr/bin/remove-link")
        .file("etc/added3", "three\n", 0o644)
        .file("opq/new3", "new3\n", 0o644);
    Image::new().layer(l1).layer(l2).layer(l3).cmd(&["/usr/bin/tool"])
}

/// Checks the expected union of [`three_layer_whiteout_image`] in `root` (any implementation's
/// rootfs). Fails listing every expectation that does not hold.
pub fn check_three_layer_rootfs(root: &Path) -> Result<()> {
    let mut errs: Vec<String> = Vec::new();
    let read = |p: &str| std::fs::read_to_string(root.join(p)).ok();
    let file =
        |errs: &mut Vec<String>, p: &str, content: &str, mode: u32, owner: (u32, u32)| match entry_of(&root.join(p)) {
            Ok(e) if e.kind == Kind::File => {
                if read(p).as_deref() != Some(content) {
                    errs.push(format!("{p}: content {:?}, expected {content:?}", read(p)));
                }
                if e.mode != mode {
                    errs.push(format!("{p}: mode {:04o}, expected {mode:04o}", e.mode));
                }
                if (e.uid, e.gid) != owner {
                    errs.push(format!("{p}: owner {}:{}, expected {owner:?}", e.uid, e.gid));
                }
            }
            Ok(e) => errs.push(format!("{p}: {e}, expected a regular file")),
            Err(e) => errs.push(format!("{p}: missing ({e:#})")),
        };
    file(&mut errs, "etc/hostname", "layer2\n", 0o644, (0, 0));
    file(&mut errs, "etc/shadow", "root:*:19000:0:99999:7:::\n", 0o600, (0, 0));
    file(&mut errs, "etc/added3", "three\n", 0o644, (0, 0));
    file(&mut errs, "usr/bin/tool", "#!/bin/sh\necho tool\n", 0o755, (0, 0));
    file(&mut errs, "usr/bin/tool-hard", "#!/bin/sh\necho tool\n", 0o755, (0, 0));
    file(&mut errs, "usr/bin/suid-tool", "suid\n", 0o4755, (0, 0));
    file(&mut errs, "home/user/notes.txt", "mine\n", 0o640, (1000, 1000));
    file(&mut errs, "opq/new2", "new2\n", 0o644, (0, 0));
    file(&mut errs, "opq/new3", "new3\n", 0o644, (0, 0));
    file(&mut errs, "typechange/file-to-dir/inside", "inside\n", 0o644, (0, 0));
    file(&mut errs, "samelayer/a", "a2\n", 0o644, (0, 0));
    file(&mut errs, "samelayer/b", "b2\n", 0o644, (0, 0));
    file(&mut errs, "samelayer/c", "c2\n", 0o644, (0, 0));

    let ino = |p: &str| std::fs::symlink_metadata(root.join(p)).map(|m| m.ino()).ok();
    if ino("usr/bin/tool").is_none() || ino("usr/bin/tool") != ino("usr/bin/tool-hard") {
        errs.push("usr/bin/tool-hard is not a hard link of usr/bin/tool".into());
    }
    for (p, target) in [("usr/bin/tool-link", "tool"), ("typechange/dir-to-symlink", "../etc")] {
        match entry_of(&root.join(p)) {
            Ok(e) if e.kind == Kind::Symlink => {
                if e.link_target.as_deref() != Some(Path::new(target)) {
                    errs.push(format!("{p}: {e}, expected -> {target}"));
                }
            }
            Ok(e) => errs.push(format!("{p}: {e}, expected a symlink")),
            Err(e) => errs.push(format!("{p}: missing ({e:#})")),
        }
    }
    for (p, mode, owner) in
        [("home/user", 0o700, (1000, 1000)), ("typechange/file-to-dir", 0o755, (0, 0)), ("opq", 0o755, (0, 0))]
    {
        match entry_of(&root.join(p)) {
            Ok(e) if e.kind == Kind::Dir && e.mode == mode && (e.uid, e.gid) == owner => {}
            Ok(e) => errs.push(format!("{p}: {e}, expected Dir {mode:04o} {owner:?}")),
            Err(e) => errs.push(format!("{p}: missing ({e:#})")),
        }
    }
    match entry_of(&root.join("var/fifo")) {
        Ok(e) if e.kind == Kind::Fifo => {}
        Ok(e) => errs.push(format!("var/fifo: {e}, expected a FIFO")),
        Err(e) => errs.push(format!("var/fifo: missing ({e:#})")),
    }
    for gone in ["etc/remove-me", "olddir", "usr/bin/remove-link", "opq/lower1", "opq/lowersub"] {
        if std::fs::symlink_metadata(root.join(gone)).is_ok() {
            errs.push(format!("{gone}: present, expected deleted"));
        }
    }
    match std::fs::read_dir(root.join("opq")) {
        Ok(rd) => {
            let names: BTreeSet<String> =
                rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into()).collect();
            let want: BTreeSet<String> = ["new2", "new3"].iter().map(|s| s.to_string()).collect();
            if names != want {
                errs.push(format!("opq holds {names:?}, expected {want:?}"));
            }
        }
        Err(e) => errs.push(format!("opq: {e}")),
    }
    if let Ok(listing) = super::tree::tree_listing(root) {
        for p in listing.keys() {
            if p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".wh.")) {
                errs.push(format!("{}: whiteout marker left in the rootfs", p.display()));
            }
        }
    }
    if !errs.is_empty() {
        bail!("{} does not match the three-layer image:\n  {}", root.display(), errs.join("\n  "));
    }
    Ok(())
}

/// Two images of the same content but for linux/amd64 and linux/arm64 (variant v8), each with
/// /etc/arch holding its architecture, for [`super::image::write_oci_index_layout`].
pub fn two_platform_images() -> (Image, Image) {
    let img = |arch: &str| {
        Image::new().platform("linux", arch).layer(Layer::gzip().dir("etc", 0o755).file(
            "etc/arch",
            format!("{arch}\n"),
            0o644,
        ))
    };
    (img("amd64"), img("arm64").variant("v8"))
}
