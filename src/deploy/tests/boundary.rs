//! The host boundary: what a target root, an image's host files or its unit can make sysctr
//! do to files it does not own, on a booted host (the fake manager) and offline.

use std::path::{Path, PathBuf};

use super::*;
use crate::systemd::Offline;

/// Every entry beneath `dir`, with file contents and link targets.
fn listing(dir: &Path) -> Vec<(PathBuf, String)> {
    walk(dir)
        .into_iter()
        .map(|(path, meta)| {
            let what =
                describe(&path, &meta, |file| String::from_utf8_lossy(&std::fs::read(file).unwrap()).into_owned());
            (path, what)
        })
        .collect()
}

/// A directory beside the root, on the machine composing it: what nothing may touch.
fn outside(host: &Host) -> PathBuf {
    let dir = host.root.parent().unwrap().join("outside");
    std::fs::create_dir_all(dir.join("system/svc.service.d")).unwrap();
    std::fs::write(dir.join("system/svc.service.d/sysctr.conf"), "victim\n").unwrap();
    dir
}

/// The target's own `etc/systemd` is an absolute symlink: it means the target's directory of
/// that name, never the composing machine's.
#[tokio::test]
async fn a_target_whose_etc_systemd_is_an_absolute_symlink_is_written_inside_it() {
    let host = host();
    let outside = outside(&host);
    let before = listing(&outside);
    std::fs::remove_dir_all(host.root.join("etc/systemd")).unwrap();
    std::os::unix::fs::symlink(&outside, host.root.join("etc/systemd")).unwrap();
    let inside = host.root.join(outside.strip_prefix("/").unwrap());
    std::fs::create_dir_all(inside.join("system")).unwrap();

    let systemd = Offline::new(&host.root);
    install(&host.layout, &install_request("svc", false), &systemd).await.unwrap();
    assert!(inside.join("system/svc.service").is_file());
    assert!(inside.join("system/svc.service.d/sysctr.conf").is_file());
    assert_eq!(listing(&outside), before, "the composing machine's files changed");

    uninstall(&host.layout, "svc", &systemd).await.unwrap();
    assert!(!inside.join("system/svc.service").exists());
    assert!(!inside.join("system/svc.service.d").exists());
    assert_eq!(listing(&outside), before, "the composing machine's files changed");
}

/// A symlink in the place of the drop-in directory, planted by the image's host files: the
/// install is refused and leaves the host as it was.
#[tokio::test]
async fn an_image_cannot_plant_a_symlink_where_sysctr_writes() {
    for systemd_is_offline in [false, true] {
        let host = host();
        let outside = outside(&host);
        let target = outside.join("system/svc.service.d");
        let link = ("exports/hostfs/etc/systemd/system/svc.service.d", target.to_str().unwrap());
        publish_tree(&host.layout, IMAGE, "v1", &[], &[link]);
        let (before, outside_before) = (host_files(&host.root), listing(&outside));
        let result = if systemd_is_offline {
            install(&host.layout, &install_request("svc", false), &Offline::new(&host.root)).await
        } else {
            install(&host.layout, &install_request("svc", false), &Fake::new()).await
        };
        let err = format!("{:#}", result.unwrap_err());
        assert!(err.contains("which sysctr writes itself"), "{err}");
        assert_eq!(host_files(&host.root), before);
        assert_eq!(listing(&outside), outside_before);
    }
}

/// A symlink that appeared in the drop-in's place after the install is neither followed nor a
/// reason to stop half way: the container is removed, the link and what it leads to stay.
#[tokio::test]
async fn uninstall_goes_through_a_symlinked_dropin_directory_without_following_it() {
    let host = host();
    let outside = outside(&host);
    let systemd = Fake::new();
    install(&host.layout, &install_request("svc", false), &systemd).await.unwrap();
    let dropin = host.root.join("etc/systemd/system/svc.service.d");
    std::fs::remove_dir_all(&dropin).unwrap();
    std::os::unix::fs::symlink(outside.join("system/svc.service.d"), &dropin).unwrap();
    let outside_before = listing(&outside);

    let report = uninstall(&host.layout, "svc", &systemd).await.unwrap();
    assert!(report.notes.iter().any(|n| n.contains("svc.service.d alone")), "{:?}", report.notes);
    assert_eq!(listing(&outside), outside_before);
    assert!(std::fs::symlink_metadata(&dropin).unwrap().file_type().is_symlink());
    assert!(!host.root.join("etc/systemd/system/svc.service").exists());
    assert!(std::fs::symlink_metadata(host.layout.link("svc")).is_err());
    assert!(!host.layout.slot("svc", 0).exists());
}

fn unit_with_install(install: &str) -> String {
    format!("[Unit]\nDescription=svc\n[Service]\nExecStart=$EXEC_START\n[Install]\n{install}\n")
}

/// `Alias=` never replaces what is there, as `systemctl enable` refuses to; an alias of
/// another type, or of a unit the system has, is refused; offline and on a booted host alike.
#[tokio::test]
async fn enabling_never_removes_what_it_did_not_create() {
    let cases = [
        ("Alias=admin.service", "would replace /etc/systemd/system/admin.service"),
        ("Alias=default.target", "an alias must be of the unit's own type"),
        ("Alias=vendor.service", "the system has that unit (/usr/lib/systemd/system/vendor.service)"),
        ("WantedBy=multi-user.target", "would replace /etc/systemd/system/multi-user.target.wants/svc.service"),
    ];
    for systemd_is_offline in [false, true] {
        for (install_line, expected) in cases {
            let host = host();
            let units = host.root.join("etc/systemd/system");
            std::fs::write(units.join("admin.service"), "[Service]\nExecStart=/bin/admin\n").unwrap();
            std::fs::create_dir_all(host.root.join("usr/lib/systemd/system")).unwrap();
            std::fs::write(host.root.join("usr/lib/systemd/system/vendor.service"), "[Service]\n").unwrap();
            std::fs::create_dir_all(units.join("multi-user.target.wants")).unwrap();
            std::os::unix::fs::symlink(
                "/usr/lib/systemd/system/other.service",
                units.join("multi-user.target.wants/svc.service"),
            )
            .unwrap();
            let template = unit_with_install(install_line);
            publish_with(&host.layout, IMAGE, "v1", &[("exports/service.template", &template)]);
            let before = host_files(&host.root);
            let result = if systemd_is_offline {
                install(&host.layout, &install_request("svc", false), &Offline::new(&host.root)).await
            } else {
                install(&host.layout, &install_request("svc", false), &Fake::new()).await
            };
            let err = format!("{:#}", result.unwrap_err());
            assert!(err.contains(expected), "{install_line}: {err}");
            assert_eq!(host_files(&host.root), before, "{install_line}");
        }
    }
}

/// A container's unit or tmpfiles.d file in `/etc` would mask the system's, the local
/// administrator's or the runtime's: refused unless asked for.
#[tokio::test]
async fn names_that_mask_units_or_tmpfiles_are_refused() {
    for masked in [
        "usr/local/lib/systemd/system/svc.service",
        "run/systemd/system/svc.service",
        "usr/lib/tmpfiles.d/svc.conf",
        "usr/local/lib/tmpfiles.d/svc.conf",
        "run/tmpfiles.d/svc.conf",
    ] {
        let host = host();
        let path = host.root.join(masked);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "theirs\n").unwrap();
        let err = install(&host.layout, &install_request("svc", false), &Fake::new()).await.unwrap_err();
        assert!(format!("{err:#}").contains(&format!("/{masked} comes from the system")), "{masked}: {err:#}");
        let request = InstallRequest { replace_vendor_unit: true, ..install_request("svc", false) };
        install(&host.layout, &request, &Fake::new()).await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "theirs\n");
    }
}

/// The fake manager is a booted host: the facts of this one, no fitting at start. (Offline,
/// see `an_offline_install_leaves_host_facts_to_the_target`.)
#[tokio::test]
async fn a_booted_host_sets_containers_up_with_its_own_facts() {
    let host = host();
    let template = r#"{"ociVersion": "1.0.0", "root": {"path": "rootfs", "readonly": true},
        "process": {"args": ["/bin/sh"], "user": {"uid": $HOST_UID, "gid": $HOST_GID},
            "capabilities": {"bounding": [$ALL_PROCESS_CAPABILITIES]}}}"#;
    publish_with(&host.layout, IMAGE, "v1", &[("exports/config.json.template", template)]);
    install(&host.layout, &install_request("svc", false), &Fake::new()).await.unwrap();
    let config = std::fs::read_to_string(host.layout.link("svc").join("config.json")).unwrap();
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["process"]["user"]["uid"].as_u64(), Some(u64::from(nix::unistd::getuid().as_raw())));
    let bounding = config["process"]["capabilities"]["bounding"].as_array().unwrap().len();
    assert_eq!(bounding as u32, crate::template::host_bounding_set().unwrap().count_ones().min(41));
    let dropin = std::fs::read_to_string(host.root.join("etc/systemd/system/svc.service.d/sysctr.conf")).unwrap();
    assert!(!dropin.contains("fit-host"), "{dropin}");
}

/// The runtime is looked for beneath the root: this machine's runc does not count for a target
/// that has none, and `--runtime` names a file of the target.
#[tokio::test]
async fn the_runtime_is_found_in_the_target() {
    let host = host();
    std::fs::remove_file(host.root.join("usr/sbin/runc")).unwrap();
    let err = install(&host.layout, &install_request("svc", false), &Offline::new(&host.root)).await.unwrap_err();
    assert!(format!("{err:#}").contains("no OCI runtime found"), "{err:#}");
    // The target's own link to its runtime is followed inside the target.
    std::fs::create_dir_all(host.root.join("opt")).unwrap();
    std::fs::write(host.root.join("opt/runc"), "#!/bin/sh\n").unwrap();
    std::os::unix::fs::symlink("/opt/runc", host.root.join("usr/sbin/runc")).unwrap();
    install(&host.layout, &install_request("svc", false), &Offline::new(&host.root)).await.unwrap();
}
