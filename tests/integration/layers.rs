//! Layers unpack exactly as `umoci unpack` does: directory metadata across layers, and the tar and
//! compression formats real images use. Each image is pushed to a registry, pulled by sysctr,
//! checked out, and compared with umoci's unpack file by file: type, mode, owner, content, link
//! target, `security.capability` and `user.*` xattrs, and hard-link groups.

use std::path::{Path, PathBuf};

use super::common::tree::entry_of;
use super::common::*;
use super::{checkout_pulled, scratch};

/// `setcap cap_net_raw+ep`: vfs_cap_data revision 2, effective, permitted = CAP_NET_RAW.
const CAP_NET_RAW: [u8; 20] = [1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// Pushes `image` to `registry` as `test/NAME:v1`, pulls it with sysctr and checks it out.
/// Returns the OCI layout the image was written to (tag `v1`) and our rootfs.
fn pull_and_check_out(registry: &Registry, work: &Path, name: &str, image: &Image) -> (PathBuf, PathBuf) {
    let layout = work.join(format!("{name}-layout"));
    image.write_oci_layout(&layout, "v1").unwrap();
    let reference = registry.image_ref(&format!("test/{name}:v1"));
    push(&layout, "v1", &reference).unwrap();
    let storage = work.join(format!("{name}-storage"));
    let out = run_sysctr(&storage, &["pull", &reference]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let ours = work.join(format!("{name}-ours"));
    checkout_pulled(&storage, &reference, &ours).unwrap();
    (layout, ours)
}

/// Unpacks `layout:v1` with umoci and fails listing every difference from `ours`.
fn assert_like_umoci(layout: &Path, work: &Path, ours: &Path) {
    let name = layout.file_name().unwrap().to_string_lossy().into_owned();
    let theirs = umoci_unpack(layout, "v1", &work.join(format!("{name}-umoci"))).unwrap();
    let differences = rootfs_differences(&theirs, ours).unwrap();
    assert!(
        differences.is_empty(),
        "checkout differs from umoci unpack (- umoci only, + ours only):\n{}",
        differences.join("\n")
    );
}

/// Fails unless `path` under `root` is of `kind` with this mode, owner and listed xattrs.
fn assert_entry(root: &Path, path: &str, kind: Kind, mode: u32, owner: (u32, u32), xattrs: &[(&str, &[u8])]) {
    let entry = entry_of(&root.join(path)).unwrap_or_else(|e| panic!("{path}: {e:#}"));
    let want: std::collections::BTreeMap<String, Vec<u8>> =
        xattrs.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect();
    assert!(
        entry.kind == kind && entry.mode == mode && (entry.uid, entry.gid) == owner && entry.xattrs == want,
        "{path}: {entry}, expected {kind:?} {mode:04o} {}:{} xattrs {want:?}",
        owner.0,
        owner.1
    );
}

/// Files of `count` distinct contents under `dir`, to give a layer some bulk.
fn filler(mut layer: Layer, dir: &str, count: usize) -> Layer {
    layer = layer.dir(dir, 0o755);
    for i in 0..count {
        let content: String = (0..200).map(|j| format!("{dir} {i} {j}\n")).collect();
        layer = layer.file(&format!("{dir}/f{i:03}"), content, 0o644);
    }
    layer
}

#[test]
fn directory_metadata_comes_from_the_last_layer_with_an_entry_for_it() {
    let base = Layer::gzip()
        .created_by("base: explicit directories")
        .dir("tmp", 0o1777)
        .dir("home", 0o755)
        .dir_owned("home/user", 0o700, 1000, 1000)
        .xattr("user.home", "lower")
        .file_owned("home/user/notes", "mine\n", 0o640, 1000, 1000)
        .dir_owned("srv", 0o2775, 0, 50)
        .xattr("user.srv", "shared")
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .file("usr/bin/ping", "#!/bin/true\n", 0o4755)
        .xattr("security.capability", CAP_NET_RAW)
        .file_owned("usr/bin/sgid", "sgid\n", 0o2755, 0, 42)
        .file("usr/bin/commented", "c\n", 0o644)
        .xattr("user.comment", "kept")
        .dir("var", 0o755)
        .dir("var/lib", 0o755)
        .dir_owned("var/lib/app", 0o750, 100, 100)
        .xattr("user.app", "lower")
        .xattr("user.only-lower", "dropped by the upper entry");
    // Only implies tmp, home/user, srv and var/lib/app; new/deep/er and srv/data are new.
    let implying = Layer::zstd()
        .created_by("files in existing directories, no directory entries")
        .file("tmp/from-layer2", "2\n", 0o644)
        .file_owned("home/user/.profile", "profile\n", 0o644, 1000, 1000)
        .file("srv/data/file", "data\n", 0o644)
        .file("new/deep/er/file", "deep\n", 0o644)
        .dir_owned("var/lib/app", 0o700, 200, 200)
        .xattr("user.app", "upper")
        .file("var/lib/app/x", "x\n", 0o644);
    let explicit = Layer::uncompressed()
        .pax()
        .created_by("explicit entries win again")
        .file("tmp/from-layer3", "3\n", 0o644)
        .dir("home", 0o711)
        .file_owned("home/user/.bashrc", "bashrc\n", 0o644, 1000, 1000)
        .dir_owned("srv/data", 0o770, 0, 50)
        .file("var/lib/app/y", "y\n", 0o644);
    let image = Image::new().layer(base).layer(implying).layer(explicit);

    let registry = Registry::start().unwrap();
    let work = scratch();
    let (layout, ours) = pull_and_check_out(&registry, work.path(), "dirmeta", &image);

    assert_entry(&ours, "tmp", Kind::Dir, 0o1777, (0, 0), &[]);
    assert_entry(&ours, "home", Kind::Dir, 0o711, (0, 0), &[]);
    assert_entry(&ours, "home/user", Kind::Dir, 0o700, (1000, 1000), &[("user.home", b"lower")]);
    assert_entry(&ours, "srv", Kind::Dir, 0o2775, (0, 50), &[("user.srv", b"shared")]);
    assert_entry(&ours, "srv/data", Kind::Dir, 0o770, (0, 50), &[]);
    for new in ["new", "new/deep", "new/deep/er"] {
        assert_entry(&ours, new, Kind::Dir, 0o755, (0, 0), &[]);
    }
    assert_entry(&ours, "var/lib/app", Kind::Dir, 0o700, (200, 200), &[("user.app", b"upper")]);
    assert_entry(&ours, "usr/bin/ping", Kind::File, 0o4755, (0, 0), &[("security.capability", &CAP_NET_RAW)]);
    assert_entry(&ours, "usr/bin/sgid", Kind::File, 0o2755, (0, 42), &[]);
    assert_entry(&ours, "usr/bin/commented", Kind::File, 0o644, (0, 0), &[("user.comment", b"kept")]);
    assert_like_umoci(&layout, work.path(), &ours);
}

#[test]
fn multi_member_gzip_layers_are_read_to_the_end() {
    let split = filler(Layer::new(Compression::GzipMultiMember), "spread", 40).file(
        "spread/last",
        "after every member boundary\n",
        0o644,
    );
    let image = Image::new().layer(split).layer(Layer::gzip().file("spread/upper", "upper\n", 0o644));
    let registry = Registry::start().unwrap();
    let work = scratch();
    let (layout, ours) = pull_and_check_out(&registry, work.path(), "multigzip", &image);
    assert_eq!(std::fs::read_to_string(ours.join("spread/last")).unwrap(), "after every member boundary\n");
    assert_like_umoci(&layout, work.path(), &ours);
}

#[test]
fn zstd_layers_with_several_frames_and_skippable_frames_are_read_to_the_end() {
    let chunked =
        filler(Layer::new(Compression::ZstdChunked), "chunked", 40).file("chunked/last", "after every frame\n", 0o644);
    let image = Image::new().layer(chunked);
    let registry = Registry::start().unwrap();
    let work = scratch();
    let (layout, ours) = pull_and_check_out(&registry, work.path(), "zstdchunked", &image);
    assert_eq!(std::fs::read_to_string(ours.join("chunked/last")).unwrap(), "after every frame\n");
    assert_like_umoci(&layout, work.path(), &ours);
}

#[test]
fn pax_global_headers_are_skipped() {
    let layer = Layer::gzip()
        .pax()
        .pax_global_header(&[("comment", "4b825dc642cb6eb9a060e54bf8d69288fbee4904")])
        .dir("etc", 0o755)
        .file("etc/os-release", "ID=test\n", 0o644)
        .pax_global_header(&[("comment", "a second one, mid-stream")])
        .file("etc/motd", "hello\n", 0o644);
    let registry = Registry::start().unwrap();
    let work = scratch();
    let (_, ours) = pull_and_check_out(&registry, work.path(), "globalhdr", &Image::new().layer(layer.clone()));
    assert!(!ours.join("pax_global_header").exists(), "the global header became a file");
    // umoci 0.4.7 refuses global headers ("unknown typeflag '\x67'"): its reference is the same
    // layer without them, which GNU tar extracts identically.
    let twin = work.path().join("globalhdr-twin");
    Image::new().layer(layer.without_global_headers()).write_oci_layout(&twin, "v1").unwrap();
    assert_like_umoci(&twin, work.path(), &ours);
}

#[test]
fn long_names_link_names_and_large_ids_in_gnu_and_pax_form() {
    // 2 × 60 + a file name: over 100 bytes (GNU `L` / PAX `path`); `deep` reaches past 255 bytes,
    // more than even ustar's prefix field can split.
    let long_dir = |tag: &str| format!("{tag}/{}/{}", "d".repeat(60), "e".repeat(60));
    let layer = |l: Layer, tag: &str| {
        let dir = long_dir(tag);
        let deep = format!("{dir}/{}", "f".repeat(150));
        let name = format!("{dir}/file-with-a-long-name-{}", "n".repeat(40));
        l.dir(tag, 0o755)
            .dir(&format!("{tag}/{}", "d".repeat(60)), 0o750)
            .dir(&dir, 0o700)
            .dir(&deep, 0o755)
            .file(&name, format!("{tag} long\n"), 0o640)
            .xattr("user.long", tag)
            .file(&format!("{deep}/{}", "g".repeat(200)), format!("{tag} deep\n"), 0o600)
            .symlink(&format!("{tag}/abs-link"), &format!("/{name}"))
            .symlink(&format!("{deep}/rel-link"), &format!("../../{}", "x".repeat(120)))
            .hardlink(&format!("{tag}/short-hard"), &name)
            .hardlink(&format!("{deep}/long-hard-{}", "h".repeat(100)), &name)
            // Ids past 2097151: base-256 in a GNU header, `uid`/`gid` records in PAX form.
            .file_owned(&format!("{tag}/large-ids"), "ids\n", 0o644, 3_000_000, 4_000_000)
    };
    let image = Image::new().layer(layer(Layer::gzip(), "gnu")).layer(layer(Layer::zstd().pax(), "pax"));
    // The two layers really spell long names and large ids differently.
    let has = |tar: &[u8], needle: &[u8]| tar.windows(needle.len()).any(|w| w == needle);
    let (gnu, pax) = (image.layers[0].tar().unwrap(), image.layers[1].tar().unwrap());
    assert!(has(&gnu, b"././@LongLink") && !has(&gnu, b" path="));
    assert!(has(&pax, b" path=") && has(&pax, b" linkpath=") && has(&pax, b" uid=3000000"));
    assert!(!has(&pax, b"././@LongLink"));

    let registry = Registry::start().unwrap();
    let work = scratch();
    let (layout, ours) = pull_and_check_out(&registry, work.path(), "longnames", &image);
    for tag in ["gnu", "pax"] {
        let name = format!("{}/file-with-a-long-name-{}", long_dir(tag), "n".repeat(40));
        assert_eq!(std::fs::read_to_string(ours.join(&name)).unwrap(), format!("{tag} long\n"));
        assert_entry(&ours, &long_dir(tag), Kind::Dir, 0o700, (0, 0), &[]);
        assert_entry(&ours, &format!("{tag}/large-ids"), Kind::File, 0o644, (3_000_000, 4_000_000), &[]);
    }
    assert_like_umoci(&layout, work.path(), &ours);
}

#[test]
fn gnu_sparse_files_are_expanded() {
    const MIB: u64 = 1024 * 1024;
    let many: Vec<(u64, Vec<u8>)> = (0..6u64).map(|i| (i * 256 * 1024, vec![b'a' + i as u8; 100])).collect();
    let many: Vec<(u64, &[u8])> = many.iter().map(|(o, d)| (*o, d.as_slice())).collect();
    let layer = Layer::gzip()
        .dir("sparse", 0o755)
        // A hole at the end.
        .gnu_sparse_file("sparse/tail-hole", MIB, &[(0, &b"start"[..]), (512 * 1024, &b"middle"[..])], 0o644)
        // A hole at the start.
        .gnu_sparse_file("sparse/head-hole", MIB, &[(MIB - 4096, &[b'z'; 4096][..])], 0o600)
        // More chunks than the GNU header holds: extension blocks.
        .gnu_sparse_file("sparse/many-chunks", 2 * MIB, &many, 0o644)
        // Larger than what sysctr buffers in memory: streamed to libostree.
        .gnu_sparse_file("sparse/big", 20 * MIB, &[(0, &b"big"[..]), (19 * MIB, &b"end"[..])], 0o755)
        .file("sparse/after", "the member after the sparse ones\n", 0o644);
    let registry = Registry::start().unwrap();
    let work = scratch();
    let (_, ours) = pull_and_check_out(&registry, work.path(), "sparse", &Image::new().layer(layer.clone()));

    let mut expected = vec![0u8; MIB as usize];
    expected[..5].copy_from_slice(b"start");
    expected[512 * 1024..512 * 1024 + 6].copy_from_slice(b"middle");
    assert!(std::fs::read(ours.join("sparse/tail-hole")).unwrap() == expected, "sparse/tail-hole content");
    assert_eq!(std::fs::metadata(ours.join("sparse/big")).unwrap().len(), 20 * MIB);
    assert_eq!(std::fs::read_to_string(ours.join("sparse/after")).unwrap(), "the member after the sparse ones\n");
    // umoci 0.4.7 refuses GNU sparse members ("unknown typeflag '\x53'"): its reference is the
    // same layer with regular files of the expanded content, which is what GNU tar extracts.
    let twin = work.path().join("sparse-twin");
    Image::new().layer(layer.with_sparse_files_expanded()).write_oci_layout(&twin, "v1").unwrap();
    assert_like_umoci(&twin, work.path(), &ours);
}
