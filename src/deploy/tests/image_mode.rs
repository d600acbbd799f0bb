//! Containers an OS image provides (`--os-image`): composed under `/usr` as vendor files, seen
//! but never changed by the booted host's sysctr.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::Digest as _;

use super::*;
use crate::systemd::{Offline, Target};

const VENDOR_UNITS: &str = "usr/lib/systemd/system";

/// An OS image root being composed: runc, and the test image in the store under its `/usr`.
fn image_root() -> Host {
    let dir = tempfile::Builder::new().prefix("sysctr-image.").tempdir_in("/var/tmp").unwrap();
    let root = dir.path().join("root");
    for sub in ["usr/sbin", "etc", "usr/local"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::write(root.join("usr/sbin/runc"), "#!/bin/sh\n").unwrap();
    let layout = image_layout(&root);
    drop(layout.lock().unwrap());
    publish(&layout, IMAGE, "v1");
    Host { _dir: dir, root, layout }
}

fn image_layout(root: &Path) -> Layout {
    Layout::os_image(root, &root.join(IMAGE_STORAGE), &root.join("var/lib/sysctr"))
}

fn composer(root: &Path) -> Offline {
    Offline::with_unit_dir(root, VENDOR_UNITS)
}

/// The booted host's view of the same root: its own storage under /var.
fn booted(root: &Path) -> Layout {
    Layout::new(root, &root.join("var/lib/sysctr"))
}

#[tokio::test]
async fn an_image_container_lives_under_usr_with_vendor_units() {
    let image = image_root();
    install(&image.layout, &install_request("svc", false), &composer(&image.root)).await.unwrap();
    let root = &image.root;
    assert!(root.join("usr/lib/sysctr/deployments/svc.0/config.json").is_file());
    assert!(root.join("usr/lib/sysctr/repo/config").is_file());
    assert_eq!(std::fs::read_link(root.join("usr/lib/sysctr/deployments/svc")).unwrap(), Path::new("svc.0"));
    assert!(root.join("usr/lib/systemd/system/svc.service").is_file());
    assert!(root.join("usr/lib/systemd/system/svc.service.d/sysctr.conf").is_file());
    assert!(root.join("usr/lib/tmpfiles.d/svc.conf").is_file());
    assert_eq!(
        std::fs::read_link(root.join("usr/lib/systemd/system/multi-user.target.wants/svc.service")).unwrap(),
        Path::new("/usr/lib/systemd/system/svc.service")
    );
    assert!(!root.join("etc/systemd").exists() && !root.join("etc/tmpfiles.d").exists());
    // Only the lock under /var: nothing there is needed to run the image's containers.
    let var: Vec<_> = std::fs::read_dir(root.join("var/lib/sysctr")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(var, ["lock"]);
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/svc.service")).unwrap();
    assert!(unit.contains("WorkingDirectory=/usr/lib/sysctr/deployments/svc.0"), "{unit}");
}

/// An administrator's unit or drop-in in /etc is left alone, and is what systemd loads first.
#[tokio::test]
async fn an_administrators_override_in_etc_wins_over_the_image_unit() {
    let image = image_root();
    let etc_units = image.root.join("etc/systemd/system");
    std::fs::create_dir_all(etc_units.join("svc.service.d")).unwrap();
    std::fs::write(etc_units.join("svc.service.d/override.conf"), "[Service]\nEnvironment=A=1\n").unwrap();
    std::fs::write(etc_units.join("svc.service"), "[Service]\nExecStart=/bin/true\n").unwrap();
    install(&image.layout, &install_request("svc", false), &composer(&image.root)).await.unwrap();
    assert_eq!(std::fs::read_to_string(etc_units.join("svc.service")).unwrap(), "[Service]\nExecStart=/bin/true\n");
    assert!(!etc_units.join("svc.service.d/sysctr.conf").exists());
    let loaded = crate::systemd::UNIT_DIRS.iter().find(|dir| image.root.join(dir).join("svc.service").exists());
    assert_eq!(loaded, Some(&"etc/systemd/system"));
    assert!(image.root.join(VENDOR_UNITS).join("svc.service").is_file());
    uninstall(&image.layout, "svc", &composer(&image.root)).await.unwrap();
    assert!(etc_units.join("svc.service").is_file() && etc_units.join("svc.service.d/override.conf").is_file());
    assert!(!image.root.join(VENDOR_UNITS).join("svc.service").exists());
}

#[tokio::test]
async fn the_booted_host_lists_the_image_containers_with_their_origin() {
    let image = image_root();
    install(&image.layout, &install_request("svc", false), &composer(&image.root)).await.unwrap();
    let host = booted(&image.root);
    drop(host.lock().unwrap());
    publish(&host, IMAGE, "v1");
    let systemd = Fake::new();
    install(&host, &install_request("own", false), &systemd).await.unwrap();

    let rows = list(&host, true, &systemd).await.unwrap();
    let seen: Vec<(&str, &str)> = rows.iter().map(|r| (r.name.as_str(), r.origin.as_str())).collect();
    assert_eq!(seen, [("own", "host"), ("svc", "image")]);
    let json = serde_json::to_value(&rows).unwrap();
    assert_eq!(json[1]["origin"], "image");
    assert_eq!(json[0]["origin"], "host");

    let svc = status(&host, "svc", &systemd).await.unwrap();
    assert_eq!(serde_json::to_value(&svc).unwrap()["origin"], "image");
    assert_eq!(svc.current.image, ImageRef::parse(IMAGE).unwrap().canonical());
    let own = status(&host, "own", &systemd).await.unwrap();
    assert_eq!(serde_json::to_value(&own).unwrap()["origin"], "host");
    assert_eq!(host.image_provided_names().unwrap(), ["svc"]);

    // The host's own container of that name would mask the image's unit: only on purpose, and
    // then it is the host's that is listed.
    let err = format!("{:#}", install(&host, &install_request("svc", false), &systemd).await.unwrap_err());
    assert!(err.contains("/usr/lib/systemd/system/svc.service") && err.contains("--replace-vendor-unit"), "{err}");
    let request = InstallRequest { replace_vendor_unit: true, ..install_request("svc", false) };
    install(&host, &request, &systemd).await.unwrap();
    let rows = list(&host, false, &systemd).await.unwrap();
    let seen: Vec<(&str, &str)> = rows.iter().map(|r| (r.name.as_str(), r.origin.as_str())).collect();
    assert_eq!(seen, [("own", "host"), ("svc", "host")]);
    assert!(host.image_provided_names().unwrap().is_empty());
}

#[tokio::test]
async fn update_rollback_and_uninstall_of_an_image_container_are_refused() {
    let image = image_root();
    install(&image.layout, &install_request("svc", false), &composer(&image.root)).await.unwrap();
    let host = booted(&image.root);
    let systemd = Fake::new();
    let before = listing_with_hashes(&image.root);
    let refusals = [
        format!("{:#}", update(&host, &update_request("svc", "x", true), &systemd).await.unwrap_err()),
        format!("{:#}", rollback(&host, "svc", &systemd).await.unwrap_err()),
        format!("{:#}", uninstall(&host, "svc", &systemd).await.unwrap_err()),
        format!(
            "{:#}",
            check_update(&host, "svc", &RegistryOptions::default(), &mut Default::default()).await.unwrap_err()
        ),
    ];
    for refusal in &refusals {
        assert!(refusal.contains("the OS image owns it") && refusal.contains("changes with the OS image"), "{refusal}");
        assert!(!refusal.contains('\n'), "one line: {refusal}");
    }
    assert!(systemd.calls().is_empty(), "{:?}", systemd.calls());
    assert_eq!(listing_with_hashes(&image.root), before);
}

#[tokio::test]
async fn apply_takes_an_image_container_as_present_and_refuses_to_change_it() {
    let image = image_root();
    install(&image.layout, &install_request("svc", false), &composer(&image.root)).await.unwrap();
    let host = booted(&image.root);
    let systemd = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    let registry = RegistryOptions { registries_conf: dir.path().join("registries.conf"), ..Default::default() };

    std::fs::write(&file, format!("[[container]]\nname = \"svc\"\nimage = \"{IMAGE}\"\n")).unwrap();
    let steps = plan(&host, &file, &registry, true, Target::Booted).unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].change, Change::Unchanged);
    let (actions, _) = apply(
        &host,
        &file,
        &ApplyOptions {
            registry: registry.clone(),
            prune: true,
            wait_online: None,
            pull_retry: std::time::Duration::ZERO,
        },
        &systemd,
    )
    .await
    .unwrap();
    assert_eq!(actions, [Action::Unchanged("svc".into())]);
    assert!(host.installed_names().unwrap().is_empty(), "reinstalled into /var");

    std::fs::write(&file, format!("[[container]]\nname = \"svc\"\nimage = \"{IMAGE}\"\nset = {{ X = \"2\" }}\n"))
        .unwrap();
    let err = format!(
        "{:#}",
        apply(
            &host,
            &file,
            &ApplyOptions {
                registry: registry.clone(),
                prune: false,
                wait_online: None,
                pull_retry: std::time::Duration::ZERO
            },
            &systemd
        )
        .await
        .unwrap_err()
    );
    assert!(err.contains("the OS image owns it") && err.contains("changes with the OS image"), "{err}");
    assert!(plan(&host, &file, &registry, false, Target::Booted).is_err());
    assert!(host.installed_names().unwrap().is_empty());
}

#[tokio::test]
async fn prune_on_the_host_never_touches_what_the_image_provides() {
    let image = image_root();
    install(&image.layout, &install_request("svc", false), &composer(&image.root)).await.unwrap();
    let host = booted(&image.root);
    let systemd = Fake::new();
    drop(host.lock().unwrap());
    publish(&host, IMAGE, "v1");
    publish(&host, "127.0.0.1:5000/test/unused:latest", "v9");
    install(&host, &install_request("own", false), &systemd).await.unwrap();
    uninstall(&host, "own", &systemd).await.unwrap();
    // An orphaned slot of the same name in the host's storage goes; the image's stays.
    std::fs::create_dir_all(host.deployments().join("svc.1")).unwrap();
    let usr_before = listing_with_hashes(&image.root.join(IMAGE_STORAGE));

    let report = prune(&host, &systemd).await.unwrap();
    assert!(report.slots.contains(&"svc.1".to_string()), "{report:?}");
    assert_eq!(listing_with_hashes(&image.root.join(IMAGE_STORAGE)), usr_before);
    assert!(image.root.join(VENDOR_UNITS).join("svc.service").is_file());
    assert_eq!(list(&host, false, &systemd).await.unwrap().len(), 1);
}

/// The image's own `usr/lib/systemd` is an absolute symlink: it is the image's directory of that
/// name, never the composing machine's, and nothing beside the root is written.
#[tokio::test]
async fn composing_an_image_writes_nothing_outside_its_root() {
    let image = image_root();
    let outside = image.root.parent().unwrap().join("outside");
    std::fs::create_dir_all(outside.join("system/svc.service.d")).unwrap();
    std::fs::write(outside.join("system/svc.service.d/sysctr.conf"), "victim\n").unwrap();
    std::os::unix::fs::symlink(&outside, image.root.join("usr/lib/systemd")).unwrap();
    let inside = image.root.join(outside.strip_prefix("/").unwrap());
    std::fs::create_dir_all(inside.join("system")).unwrap();
    let before = listing_with_hashes(&outside);

    std::env::set_var("SOURCE_DATE_EPOCH", "1700000000");
    install(&image.layout, &install_request("svc", false), &composer(&image.root)).await.unwrap();
    clamp_image_times(&image.layout).unwrap();
    assert!(inside.join("system/svc.service").is_file());
    assert!(inside.join("system/svc.service.d/sysctr.conf").is_file());
    assert_eq!(listing_with_hashes(&outside), before, "the composing machine's files changed");
    uninstall(&image.layout, "svc", &composer(&image.root)).await.unwrap();
    assert!(!inside.join("system/svc.service").exists());
    assert_eq!(listing_with_hashes(&outside), before, "the composing machine's files changed");
}

/// Composing the same containers from the same images twice gives the same tree: contents,
/// modes, owners, link targets and mtimes.
#[tokio::test]
async fn composing_twice_gives_byte_identical_trees() {
    std::env::set_var("SOURCE_DATE_EPOCH", "1700000000");
    let mut trees = Vec::new();
    for _ in 0..2 {
        let image = image_root();
        let mut request = install_request("svc", false);
        request.values.insert("X".into(), "1".into());
        install(&image.layout, &request, &composer(&image.root)).await.unwrap();
        install(&image.layout, &install_request("other", false), &composer(&image.root)).await.unwrap();
        clamp_image_times(&image.layout).unwrap();
        let record = image.layout.read_info("svc").unwrap();
        assert_eq!(record.created, "2023-11-14T22:13:20Z");
        assert_eq!(record.uuid, crate::deploy::host::reproducible::image_container_uuid("svc"));
        // What sysctr wrote; the fixture's own files (runc, etc/) are made at the time of the test.
        let mut tree = listing_with_hashes(&image.root);
        tree.retain(|path, _| path.starts_with("usr/lib") || path.starts_with("var"));
        trees.push((tree, image));
    }
    assert!(trees[0].0.len() > 30, "{:?}", trees[0].0);
    let (a, b) = (&trees[0].0, &trees[1].0);
    for (path, entry) in a {
        assert_eq!(b.get(path), Some(entry), "{}", path.display());
    }
    assert_eq!(a.len(), b.len());
    // Clamped, not only made within the same second.
    for (path, entry) in a {
        let mtime: i64 = entry.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(mtime <= 1_700_000_000, "{} not clamped: {entry}", path.display());
    }
}

/// Every entry beneath `dir` (relative), with its type, mode, owner, mtime, and content hash or
/// link target.
fn listing_with_hashes(dir: &Path) -> BTreeMap<PathBuf, String> {
    walk(dir)
        .into_iter()
        .map(|(path, meta)| {
            let what = describe(&path, &meta, |file| hex::encode(sha2::Sha256::digest(std::fs::read(file).unwrap())));
            let line = format!("{what} {:o} {}:{} {}", meta.mode(), meta.uid(), meta.gid(), meta.mtime());
            (path.strip_prefix(dir).unwrap().to_path_buf(), line)
        })
        .collect()
}

/// Each start of an image container fits its config into a bundle under /run, leaving the slot
/// under the read-only /usr as it is; runc runs that bundle, whose root is the slot's rootfs.
#[tokio::test]
async fn the_start_time_fit_of_an_image_container_writes_a_bundle_under_run() {
    let image = image_root();
    let template = r#"{"ociVersion": "1.0.0", "root": {"path": "rootfs", "readonly": true},
        "process": {"args": ["/bin/sh"], "capabilities": {"bounding": [$ALL_PROCESS_CAPABILITIES]}}}"#;
    publish_with(&image.layout, IMAGE, "v1", &[("exports/config.json.template", template)]);
    install(&image.layout, &install_request("svc", false), &composer(&image.root)).await.unwrap();
    let units = image.root.join(VENDOR_UNITS);
    let dropin = std::fs::read_to_string(units.join("svc.service.d/sysctr.conf")).unwrap();
    assert!(
        dropin.contains(
            "\nExecStartPre=/usr/bin/sysctr --storage '/usr/lib/sysctr' fit-host --bundle '/run/sysctr/svc' 'svc'\n"
        ),
        "{dropin}"
    );
    let unit = std::fs::read_to_string(units.join("svc.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/sbin/runc --systemd-cgroup run --bundle '/run/sysctr/svc' 'svc'\n"),
        "{unit}"
    );

    // What the drop-in does at start, on the booted image: its storage is the image's.
    let slot_config = image.root.join("usr/lib/sysctr/deployments/svc.0/config.json");
    let before = std::fs::read_to_string(&slot_config).unwrap();
    let at_start = Layout::new(&image.root, &image.root.join(IMAGE_STORAGE));
    let dropped = fit_to_host(&at_start, "svc", Some(Path::new("/run/sysctr/svc"))).unwrap().dropped_capabilities;
    assert_eq!(std::fs::read_to_string(&slot_config).unwrap(), before, "the slot under /usr was written");
    let bundle = image.root.join("run/sysctr/svc/config.json");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&bundle).unwrap()).unwrap();
    assert_eq!(config["root"]["path"], "/usr/lib/sysctr/deployments/svc.0/rootfs");
    let kept = config["process"]["capabilities"]["bounding"].as_array().unwrap().len();
    assert_eq!(kept + dropped.len(), 41);
    // Written again at the next start, whatever was left there.
    std::fs::write(&bundle, "stale").unwrap();
    fit_to_host(&at_start, "svc", Some(Path::new("/run/sysctr/svc"))).unwrap();
    assert!(std::fs::read_to_string(&bundle).unwrap().contains("/usr/lib/sysctr/deployments/svc.0/rootfs"));
    assert!(!image.root.join("var/lib/sysctr/deployments").exists(), "the run needs nothing under /var");

    // The image has no /etc/hosts: the bundle mounts the slot's empty stand-in, under /usr.
    let plain = "127.0.0.1:5000/test/plain:latest";
    publish(&image.layout, plain, "v1");
    let request = InstallRequest { image: ImageRef::parse(plain).unwrap(), ..install_request("plain", false) };
    install(&image.layout, &request, &composer(&image.root)).await.unwrap();
    let slot_config = image.root.join("usr/lib/sysctr/deployments/plain.0/config.json");
    let before = std::fs::read_to_string(&slot_config).unwrap();
    let fit = fit_to_host(&at_start, "plain", Some(Path::new("/run/sysctr/plain"))).unwrap();
    assert_eq!(
        fit.host_files,
        [
            crate::spec::HostFileChange::StandIn("/etc/resolv.conf".into()),
            crate::spec::HostFileChange::StandIn("/etc/hosts".into())
        ]
    );
    assert_eq!(std::fs::read_to_string(&slot_config).unwrap(), before, "the slot under /usr was written");
    let text = std::fs::read_to_string(image.root.join("run/sysctr/plain/config.json")).unwrap();
    let config: serde_json::Value = serde_json::from_str(&text).unwrap();
    let stand_in = "/usr/lib/sysctr/deployments/plain.0/absent-host-file";
    let hosts = config["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/etc/hosts").unwrap();
    assert_eq!(hosts["source"], stand_in, "{text}");
    assert!(image.root.join(stand_in.trim_start_matches('/')).is_file());
}

/// Objects of a repository by inode: (inode, size) of each object file.
fn objects(repo: &Path) -> BTreeMap<PathBuf, (u64, u64)> {
    listing_with_hashes(&repo.join("objects"))
        .into_keys()
        .filter_map(|path| {
            let meta = std::fs::symlink_metadata(repo.join("objects").join(&path)).unwrap();
            meta.is_file().then(|| (path, (meta.ino(), meta.len())))
        })
        .collect()
}

/// The host installs an image its OS image already has: taken from /usr with no fetch, and its
/// objects hard-linked, not stored twice.
#[tokio::test]
async fn an_image_the_os_image_has_is_installed_on_the_host_without_storing_it_twice() {
    let image = image_root();
    publish_with(&image.layout, IMAGE, "v1", &[("usr/share/big", &"x".repeat(1 << 20))]);
    install(&image.layout, &install_request("svc", false), &composer(&image.root)).await.unwrap();
    let host = booted(&image.root);
    let systemd = Fake::new();
    // No registry answers: the image can only come from /usr.
    install(&host, &install_request("own", false), &systemd).await.unwrap();
    assert_eq!(host.read_info("own").unwrap().image, image.layout.read_info("svc").unwrap().image);
    assert!(host.link("own").join("rootfs/bin/sh").is_file());

    let (usr, var) = (objects(&image.layout.repo()), objects(&host.repo()));
    let usr_inodes: std::collections::BTreeSet<u64> = usr.values().map(|(ino, _)| *ino).collect();
    let shared: u64 = var.values().filter(|(ino, _)| usr_inodes.contains(ino)).map(|(_, len)| len).sum();
    let twice: u64 = var.values().filter(|(ino, _)| !usr_inodes.contains(ino)).map(|(_, len)| len).sum();
    eprintln!("objects in /var's repo: {}, {shared} bytes shared with /usr's, {twice} bytes of its own", var.len());
    assert!(!var.is_empty() && shared > 1 << 20);
    assert_eq!(twice, 0, "objects stored twice: {var:?}");

    // The host's copy does not depend on /usr's: gone with an OS image that drops it, the
    // host's container still checks out again.
    std::fs::remove_dir_all(image.root.join(IMAGE_STORAGE)).unwrap();
    let store = crate::store::Store::open(&host.repo()).unwrap();
    let stored = store.image(&ImageRef::parse(IMAGE).unwrap().canonical()).unwrap().unwrap();
    let dest = image.root.join("var/tmp-checkout");
    crate::store::checkout_image(&store, &stored.commit, &dest).unwrap();
    assert!(dest.join("bin/sh").is_file());
}

/// An image the host fetches that is not the OS image's but has files in common with it: after
/// the fetch, each common file is one file, /usr's.
#[tokio::test]
async fn files_a_fetched_image_shares_with_the_os_image_are_stored_once() {
    let image = image_root();
    let big = "y".repeat(1 << 20);
    publish_with(&image.layout, IMAGE, "v1", &[("usr/share/big", &big)]);
    install(&image.layout, &install_request("svc", false), &composer(&image.root)).await.unwrap();
    let host = booted(&image.root);
    drop(host.lock().unwrap());
    // Another image (another layer, other files beside), as a fetch leaves it in the store.
    publish_with(&host, "127.0.0.1:5000/test/other:latest", "v2", &[("usr/share/big", &big)]);
    let store = crate::store::Store::open(&host.repo()).unwrap();
    let usr_inodes: std::collections::BTreeSet<u64> =
        objects(&image.layout.repo()).values().map(|(ino, _)| *ino).collect();
    let own_bytes = |var: &BTreeMap<PathBuf, (u64, u64)>| -> u64 {
        var.values().filter(|(ino, _)| !usr_inodes.contains(ino)).map(|(_, len)| len).sum()
    };
    let before = own_bytes(&objects(&host.repo()));
    assert!(before > 1 << 20, "{before}");

    share_with_the_os_image(&host, &store).unwrap();
    let after = own_bytes(&objects(&host.repo()));
    eprintln!("bytes of /var's repo not shared with /usr's: {before} before, {after} after");
    assert!(before - after >= 1 << 20, "{before} -> {after}");
    let stored = store.image("127.0.0.1:5000/test/other:latest").unwrap().unwrap();
    let dest = image.root.join("var/tmp-checkout");
    crate::store::checkout_image(&store, &stored.commit, &dest).unwrap();
    assert_eq!(std::fs::read_to_string(dest.join("usr/share/big")).unwrap(), big);
    assert_eq!(share_with_the_os_image(&host, &store).ok(), Some(()), "a second pass finds nothing to do");
}

/// Composing again with other values leaves one deployment in the image: rolling back is the
/// OS image's business, and a slot kept for it would only weigh on /usr.
#[tokio::test]
async fn an_update_while_composing_keeps_no_previous_slot_in_the_image() {
    let image = image_root();
    install(&image.layout, &install_request("svc", false), &composer(&image.root)).await.unwrap();
    update(&image.layout, &update_request("svc", "2", true), &composer(&image.root)).await.unwrap();
    let deployments = image.root.join("usr/lib/sysctr/deployments");
    assert_eq!(std::fs::read_link(deployments.join("svc")).unwrap(), Path::new("svc.1"));
    assert!(!deployments.join("svc.0").exists());
    assert_eq!(
        image.layout.read_info("svc").unwrap().uuid,
        crate::deploy::host::reproducible::image_container_uuid("svc")
    );
    let unit = std::fs::read_to_string(image.root.join(VENDOR_UNITS).join("svc.service")).unwrap();
    assert!(unit.contains("WorkingDirectory=/usr/lib/sysctr/deployments/svc.1"), "{unit}");
}
