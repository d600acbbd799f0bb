//! `oci-archive:` and `docker-archive:` sources, with archives written by skopeo from OCI layouts
//! built by the test image builder, and `umoci unpack` of the same layouts as the reference.
//! Also: references with a transport sysctr does not read from are refused before any network use.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::common::*;
use super::{checkout_pulled, ostree_refs, scratch, stderr, stdout};

/// `skopeo copy oci:LAYOUT:TAG DEST` (DEST an `oci-archive:` or `docker-archive:` reference).
/// An OCI archive keeps the blobs as they are; a docker archive's layers are written
/// uncompressed, under a converted manifest.
fn skopeo_copy_to(layout: &Path, tag: &str, dest: &str) {
    let source = format!("oci:{}:{tag}", layout.display());
    let preserve = if dest.starts_with("oci-archive:") { "--preserve-digests" } else { "--quiet" };
    cmd_ok(&["skopeo", "copy", "--quiet", preserve, &source, dest]).unwrap();
}

/// [`three_layer_whiteout_image`] without its zstd layer, which skopeo 1.9 cannot convert for a
/// docker archive: gzip instead (same content, same diff_ids).
fn three_layer_image_for_docker() -> Image {
    let mut image = three_layer_whiteout_image();
    for layer in &mut image.layers {
        if layer.compression == Compression::Zstd {
            layer.compression = Compression::Gzip;
        }
    }
    image
}

/// Where each regular member's data is in a tar: (offset, size) by member path.
fn tar_members(archive: &Path) -> BTreeMap<String, (u64, u64)> {
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    let mut members = BTreeMap::new();
    for entry in tar.entries_with_seek().unwrap() {
        let entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let path = entry.path().unwrap().to_string_lossy().trim_start_matches("./").to_string();
            members.insert(path, (entry.raw_file_position(), entry.size()));
        }
    }
    members
}

fn read_member(archive: &Path, name: &str) -> Vec<u8> {
    let (offset, size) = tar_members(archive)[name];
    let mut file = std::fs::File::open(archive).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    let mut data = vec![0u8; size as usize];
    file.read_exact(&mut data).unwrap();
    data
}

/// Flips one byte in the middle of member `name`'s data, in place.
fn corrupt_member(archive: &Path, name: &str) {
    let (offset, size) = *tar_members(archive).get(name).unwrap_or_else(|| panic!("no member {name}"));
    let mut file = std::fs::OpenOptions::new().read(true).write(true).open(archive).unwrap();
    let at = offset + size / 2;
    let mut byte = [0u8; 1];
    file.seek(SeekFrom::Start(at)).unwrap();
    file.read_exact(&mut byte).unwrap();
    byte[0] ^= 0x20;
    file.seek(SeekFrom::Start(at)).unwrap();
    file.write_all(&byte).unwrap();
}

/// The docker archive's `manifest.json`.
fn docker_manifest(archive: &Path) -> serde_json::Value {
    serde_json::from_slice(&read_member(archive, "manifest.json")).unwrap()
}

/// Runs `sysctr pull REF` with an empty TMPDIR of its own, and checks it left nothing there.
fn pull_in_place(storage: &Path, reference: &str, tmp: &Path) -> Output {
    std::fs::create_dir_all(tmp).unwrap();
    let out = Command::new(sysctr_bin())
        .args(["pull", reference])
        .env("SYSCTR_STORAGE", storage)
        .env("RUST_BACKTRACE", "0")
        .env("TMPDIR", tmp)
        .output()
        .unwrap();
    let left: Vec<_> = std::fs::read_dir(tmp).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "{reference}: files left in TMPDIR: {left:?}");
    out
}

fn assert_same_as_umoci(storage: &Path, reference: &str, layout: &Path, tag: &str, work: &Path) {
    let ours = work.join("ours");
    checkout_pulled(storage, reference, &ours).unwrap();
    check_three_layer_rootfs(&ours).unwrap();
    let theirs = umoci_unpack(layout, tag, &work.join("umoci")).unwrap();
    let differences = diff_listings(&tree_listing(&theirs).unwrap(), &tree_listing(&ours).unwrap());
    assert!(differences.is_empty(), "{reference}: checkout differs from umoci unpack:\n{}", differences.join("\n"));
}

#[test]
fn oci_archive_checks_out_like_umoci() {
    let work = scratch();
    let layout = work.path().join("layout");
    let info = three_layer_whiteout_image().write_oci_layout(&layout, "v1").unwrap();
    let archive = work.path().join("three.tar");
    skopeo_copy_to(&layout, "v1", &format!("oci-archive:{}:v1", archive.display()));
    // The layers are in the archive as they were in the layout (gzip, zstd, plain).
    let members = tar_members(&archive);
    for digest in &info.layer_digests {
        assert!(members.contains_key(&format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))), "{members:?}");
    }

    let storage = work.path().join("storage");
    let reference = format!("oci-archive:{}:v1", archive.display());
    let out = pull_in_place(&storage, &reference, &work.path().join("tmp"));
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(stdout(&out).contains("3 layers fetched"), "{}", describe_output(&out));
    assert_same_as_umoci(&storage, &reference, &layout, "v1", work.path());

    // Without a tag: the only image. With a wrong one: the tags it has.
    let out = run_sysctr(&storage, &["pull", &format!("oci-archive:{}", archive.display())]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(stdout(&out).contains("0 layers fetched, 3 already present"), "{}", describe_output(&out));
    let out = run_sysctr(&storage, &["pull", &format!("oci-archive:{}:nosuchtag", archive.display())]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(
        stderr(&out).contains("no image tagged 'nosuchtag'") && stderr(&out).contains("v1"),
        "{}",
        describe_output(&out)
    );
}

#[test]
fn docker_archive_checks_out_like_umoci() {
    let work = scratch();
    let layout = work.path().join("layout");
    let info = three_layer_image_for_docker().write_oci_layout(&layout, "v1").unwrap();
    let archive = work.path().join("three.tar");
    skopeo_copy_to(&layout, "v1", &format!("docker-archive:{}:test/three:v1", archive.display()));
    // What skopeo wrote: a docker archive whose layers are plain tars.
    let manifest = docker_manifest(&archive);
    let layers = manifest[0]["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "{manifest}");
    for (layer, diff_id) in layers.iter().zip(&info.diff_ids) {
        assert_eq!(&sha256_digest(&read_member(&archive, layer.as_str().unwrap())), diff_id, "{manifest}");
    }

    let storage = work.path().join("storage");
    for (i, reference) in [
        format!("docker-archive:{}", archive.display()),
        format!("docker-archive:{}:test/three:v1", archive.display()),
        format!("docker-archive:{}:@0", archive.display()),
    ]
    .iter()
    .enumerate()
    {
        let out = pull_in_place(&storage, reference, &work.path().join("tmp"));
        assert!(out.status.success(), "{reference}: {}", describe_output(&out));
        let fetched =
            if i == 0 { "3 layers fetched, 0 already present" } else { "0 layers fetched, 3 already present" };
        assert!(stdout(&out).contains(fetched), "{reference}: {}", describe_output(&out));
        let ours = work.path().join(format!("ours{i}"));
        checkout_pulled(&storage, reference, &ours).unwrap();
        check_three_layer_rootfs(&ours).unwrap();
    }
    assert_same_as_umoci(&storage, &format!("docker-archive:{}", archive.display()), &layout, "v1", work.path());

    // The image id is the digest of the archive's config member, as docker computes it.
    let config = read_member(&archive, manifest[0]["Config"].as_str().unwrap());
    let out = run_sysctr(&storage, &["images", "--json"]);
    let rows = json_items(&out.stdout, "ImageList");
    let ids: Vec<&str> = rows.iter().map(|r| r["image_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![sha256_digest(&config).as_str(); 3], "{rows:?}");
}

#[test]
fn corrupt_archive_member_is_refused_and_leaves_no_ref() {
    let work = scratch();
    let layout = work.path().join("layout");
    let info = three_layer_whiteout_image().write_oci_layout(&layout, "v1").unwrap();
    let docker_layout = work.path().join("docker-layout");
    three_layer_image_for_docker().write_oci_layout(&docker_layout, "v1").unwrap();
    let oci = work.path().join("oci.tar");
    let docker = work.path().join("docker.tar");
    skopeo_copy_to(&layout, "v1", &format!("oci-archive:{}:v1", oci.display()));
    skopeo_copy_to(&docker_layout, "v1", &format!("docker-archive:{}:test/three:v1", docker.display()));

    // The last layer, uncompressed in both: one byte flipped in its middle.
    let victim = info.layer_digests.last().unwrap().trim_start_matches("sha256:").to_string();
    corrupt_member(&oci, &format!("blobs/sha256/{victim}"));
    let docker_layer = docker_manifest(&docker)[0]["Layers"][2].as_str().unwrap().to_string();
    corrupt_member(&docker, &docker_layer);

    for (reference, names) in [
        (format!("oci-archive:{}:v1", oci.display()), victim.clone()),
        (format!("docker-archive:{}", docker.display()), docker_layer.clone()),
    ] {
        let storage = work.path().join("storage");
        let out = run_sysctr(&storage, &["pull", &reference]);
        assert_eq!(out.status.code(), Some(1), "{reference}: {}", describe_output(&out));
        let err = stderr(&out);
        assert!(err.contains("digest mismatch") && err.contains(&names), "{reference}: {err}");
        assert!(!err.contains("panicked") && !err.contains("stack backtrace"), "{err}");
        assert!(ostree_refs(&storage).is_empty(), "{reference}: refs left: {:?}", ostree_refs(&storage));
        let out = run_sysctr(&storage, &["images", "--json"]);
        assert!(json_items(&out.stdout, "ImageList").is_empty(), "{}", describe_output(&out));
    }
}

/// Merges single-image docker archives into one, as `docker save A B` writes it.
fn merge_docker_archives(parts: &[&Path], dest: &Path) {
    let mut builder = tar::Builder::new(std::fs::File::create(dest).unwrap());
    let mut manifest = Vec::new();
    let mut repositories = serde_json::Map::new();
    let mut written = std::collections::BTreeSet::new();
    for part in parts {
        let mut tar = tar::Archive::new(std::fs::File::open(part).unwrap());
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().trim_start_matches("./").to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            match path.as_str() {
                "manifest.json" => {
                    manifest.extend(serde_json::from_slice::<Vec<serde_json::Value>>(&data).unwrap());
                }
                "repositories" => {
                    let parsed: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&data).unwrap();
                    repositories.extend(parsed);
                }
                _ => {
                    if written.insert(path.clone()) {
                        let mut header = entry.header().clone();
                        builder.append_data(&mut header, &path, &data[..]).unwrap();
                    }
                }
            }
        }
    }
    for (name, data) in [
        ("manifest.json", serde_json::to_vec(&manifest).unwrap()),
        ("repositories", serde_json::to_vec(&repositories).unwrap()),
    ] {
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        builder.append_data(&mut header, name, &data[..]).unwrap();
    }
    builder.finish().unwrap();
}

#[test]
fn docker_archive_with_two_images_picks_by_ref() {
    let work = scratch();
    let base = Layer::gzip().dir("etc", 0o755).file("etc/base", "base\n", 0o644);
    let image = |which: &str| {
        Image::new()
            .layer(base.clone())
            .layer(Layer::gzip().file("etc/which", format!("{which}\n"), 0o644))
            .cmd(&["/bin/sh"])
    };
    let mut parts = Vec::new();
    for (which, reference) in [("one", "test/one:v1"), ("two", "registry.lan:5000/test/two:v2")] {
        let layout = work.path().join(which);
        image(which).write_oci_layout(&layout, "latest").unwrap();
        let part = work.path().join(format!("{which}.tar"));
        skopeo_copy_to(&layout, "latest", &format!("docker-archive:{}:{reference}", part.display()));
        parts.push(part);
    }
    let both = work.path().join("both.tar");
    merge_docker_archives(&[&parts[0], &parts[1]], &both);
    assert_eq!(docker_manifest(&both).as_array().unwrap().len(), 2);

    let storage = work.path().join("storage");
    for (pick, expected) in [
        ("registry.lan:5000/test/two:v2", "two\n"),
        ("test/one:v1", "one\n"),
        ("docker.io/test/one:v1", "one\n"),
        ("@1", "two\n"),
        ("@0", "one\n"),
    ] {
        let reference = format!("docker-archive:{}:{pick}", both.display());
        let out = run_sysctr(&storage, &["pull", &reference]);
        assert!(out.status.success(), "{reference}: {}", describe_output(&out));
        let ours = work.path().join(format!("ours-{}", pick.replace(['/', ':', '@'], "_")));
        checkout_pulled(&storage, &reference, &ours).unwrap();
        assert_eq!(std::fs::read_to_string(ours.join("etc/which")).unwrap(), expected, "{reference}");
        assert_eq!(std::fs::read_to_string(ours.join("etc/base")).unwrap(), "base\n", "{reference}");
    }

    for (suffix, expected) in [
        (String::new(), "holds 2 images"),
        (":test/three:v1".to_string(), "no image tagged 'test/three:v1'"),
        (":@2".to_string(), "no image @2"),
    ] {
        let reference = format!("docker-archive:{}{suffix}", both.display());
        let out = run_sysctr(&storage, &["pull", &reference]);
        assert_eq!(out.status.code(), Some(1), "{reference}: {}", describe_output(&out));
        assert!(stderr(&out).contains(expected), "{reference}: {}", describe_output(&out));
    }
}

#[test]
fn archives_install_offline_under_their_file_name() {
    let work = scratch();
    let layout = work.path().join("layout");
    busybox_service_image(&[]).cmd(&["/bin/true"]).write_oci_layout(&layout, "v1").unwrap();
    let archive = work.path().join("hello.tar");
    skopeo_copy_to(&layout, "v1", &format!("oci-archive:{}:v1", archive.display()));
    // The image root provides the runtime that its units will run.
    let root = work.path().join("root");
    std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
    std::fs::write(root.join("usr/sbin/runc"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(root.join("usr/sbin/runc"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let reference = format!("oci-archive:{}:v1", archive.display());
    let out = Command::new(sysctr_bin())
        .arg("--root")
        .arg(&root)
        .args(["install", &reference])
        .env_remove("SYSCTR_STORAGE")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe_output(&out));
    // `hello.tar` with tag v1: the container is hello-v1.
    assert!(root.join("etc/systemd/system/hello-v1.service").is_file(), "{}", describe_output(&out));
    let deployment = PathBuf::from("var/lib/sysctr/deployments/hello-v1");
    assert_eq!(std::fs::read_link(root.join(&deployment)).unwrap(), Path::new("hello-v1.0"));
}

/// A target whose own `var/lib/sysctr` and `etc/systemd` are absolute symlinks: they mean the
/// target's directories of that name. The storage, the deployments and the units land inside the target;
/// the machine composing it gets nothing, at install as at uninstall.
#[test]
fn a_target_with_absolute_symlinks_is_composed_inside_itself() {
    let work = scratch();
    let layout = work.path().join("layout");
    busybox_service_image(&[]).cmd(&["/bin/true"]).write_oci_layout(&layout, "v1").unwrap();
    let root = work.path().join("root");
    let outside = work.path().join("outside");
    let inside = root.join(outside.strip_prefix("/").unwrap());
    for dir in ["storage", "systemd/system"] {
        std::fs::create_dir_all(outside.join(dir)).unwrap();
    }
    // Where the links lead as the target sees them.
    std::fs::create_dir_all(inside.join("systemd")).unwrap();
    for dir in ["usr/sbin", "etc", "var/lib"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("usr/sbin/runc"), "#!/bin/sh\n").unwrap();
    std::os::unix::fs::symlink(outside.join("storage"), root.join("var/lib/sysctr")).unwrap();
    std::os::unix::fs::symlink(outside.join("systemd"), root.join("etc/systemd")).unwrap();
    let sysctr = |args: &[&str]| {
        Command::new(sysctr_bin())
            .arg("--root")
            .arg(&root)
            .args(args)
            .env_remove("SYSCTR_STORAGE")
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap()
    };
    let listing = || {
        let mut found: Vec<PathBuf> = walkdir(&outside);
        found.sort();
        found
    };
    let before = listing();

    let image = format!("oci:{}:v1", layout.display());
    // The storage link leads nowhere in the target: refused, rather than followed out of it.
    let out = sysctr(&["install", "--name", "svc", &image]);
    assert!(stderr(&out).contains("var/lib/sysctr is a symlink to nothing in"), "{}", describe_output(&out));
    assert_eq!(listing(), before, "the composing machine got files");

    std::fs::create_dir_all(inside.join("storage")).unwrap();
    let out = sysctr(&["install", "--name", "svc", &image]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(inside.join("systemd/system/svc.service").is_file(), "{}", describe_output(&out));
    assert!(inside.join("storage/deployments/svc.0/rootfs").is_dir());
    assert_eq!(listing(), before, "the composing machine got files");

    let out = sysctr(&["uninstall", "svc"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(!inside.join("systemd/system/svc.service").exists());
    assert_eq!(listing(), before, "the composing machine lost or got files");
}

/// Every path beneath `dir`.
fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path.clone());
            }
            found.push(path);
        }
    }
    found
}

/// `strace -f -e trace=connect` of `sysctr pull REF`: its output and the connect calls to an
/// internet address.
fn pull_traced(storage: &Path, reference: &str, trace: &Path) -> (Output, Vec<String>) {
    let out = Command::new("strace")
        .args(["-f", "-e", "trace=connect", "-o"])
        .arg(trace)
        .arg(sysctr_bin())
        .args(["pull", reference])
        .env("SYSCTR_STORAGE", storage)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let calls = std::fs::read_to_string(trace).unwrap();
    let inet = calls.lines().filter(|l| l.contains("AF_INET")).map(str::to_string).collect();
    (out, inet)
}

#[test]
fn unsupported_transports_are_refused_without_network() {
    let work = scratch();
    let storage = work.path().join("storage");
    let trace = work.path().join("trace");

    // The check itself: a registry pull shows up as a connect to an internet address.
    let (out, inet) = pull_traced(&storage, "127.0.0.1:9/test/nothing:latest", &trace);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(!inet.is_empty(), "strace saw no connect(): {}", describe_output(&out));

    for reference in [
        "containers-storage:alpine",
        "containers-storage:docker.io/library/alpine:latest",
        "dir:/srv/images/alpine",
        "docker-daemon:alpine:latest",
        "ostree:alpine@/ostree/repo",
        "nosuch:/srv/images/alpine",
    ] {
        let (out, inet) = pull_traced(&storage, reference, &trace);
        assert_eq!(out.status.code(), Some(1), "{reference}: {}", describe_output(&out));
        let err = stderr(&out);
        assert!(err.starts_with("error: ") && err.contains("is not supported"), "{reference}: {err}");
        for supported in ["docker://", "oci:DIR", "oci-archive:PATH", "docker-archive:PATH"] {
            assert!(err.contains(supported), "{reference}: {err}");
        }
        assert_eq!(err.trim_end().lines().count(), 1, "{reference}: more than one line: {err}");
        assert!(inet.is_empty(), "{reference}: connected to the network: {inet:?}");
    }
    assert!(ostree_refs(&storage).is_empty());
}

/// An image named by a relative path is stored with its absolute path: `update`, run from
/// another directory (as the auto-update timer is), reads the same image, and a new image
/// tagged there is found.
#[test]
fn a_relative_image_path_is_stored_absolute_and_updates_from_elsewhere() {
    let work = scratch();
    let layout = work.path().join("images/hello");
    busybox_service_image(&[]).cmd(&["/bin/true"]).write_oci_layout(&layout, "v1").unwrap();
    let root = work.path().join("root");
    std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
    std::fs::write(root.join("usr/sbin/runc"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(root.join("usr/sbin/runc"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sysctr_in = |dir: &Path, args: &[&str]| {
        Command::new(sysctr_bin())
            .arg("--root")
            .arg(&root)
            .args(args)
            .current_dir(dir)
            .env_remove("SYSCTR_STORAGE")
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap()
    };
    let out = sysctr_in(work.path(), &["install", "oci:./images/hello:v1"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let info = std::fs::read_to_string(root.join("var/lib/sysctr/deployments/hello-v1/info")).unwrap();
    let absolute = format!("oci:{}:v1", layout.display());
    assert!(info.contains(&format!("\"{absolute}\"")), "{info}");

    // A new image under the same tag, then an update from elsewhere.
    busybox_service_image(&[]).cmd(&["/bin/false"]).write_oci_layout(&layout, "v1").unwrap();
    let out = sysctr_in(Path::new("/"), &["update", "hello-v1"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let deployment = root.join("var/lib/sysctr/deployments/hello-v1");
    assert_eq!(std::fs::read_link(&deployment).unwrap(), Path::new("hello-v1.1"), "{}", describe_output(&out));
}
