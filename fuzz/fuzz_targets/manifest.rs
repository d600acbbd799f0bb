//! An image's `exports/manifest.json`, as an install reads it: parsed, its `defaultValues` laid
//! under the values, its `renameFiles` rendered and applied to a small `hostfs` tree and its
//! `installedFilesTemplate` files rendered, to plan the host files.
//!
//! Input: the manifest text, then `\x1fNAME=VALUE` fields, the `--set` arguments.
//!
//! Invariants, besides no panic: every planned host path is a normal absolute path (no `.`,
//! `..` or empty component, no line break or NUL), no two are the same, and none lies beneath
//! a planned symlink.

#![no_main]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sysctr::fuzzing::plan_host_files;
use sysctr::template::{parse_set, Forced, HostDefaults};

/// The `hostfs` tree, made once: the shapes the public images ship.
fn hostfs() -> &'static PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("sysctr-fuzz-hostfs.").tempdir().unwrap();
        let root = dir.path().join("hostfs");
        for d in ["etc/sysctr-fuzz", "usr/local/bin", "var/lib/sysctr-fuzz"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("etc/sysctr-fuzz/fuzz.conf"), "name=$NAME port=${PORT} dir=$STATE_DIRECTORY\n").unwrap();
        std::fs::write(root.join("etc/sysctr-fuzz/plain.conf"), "$NOT_A_TEMPLATE\n").unwrap();
        std::fs::write(root.join("usr/local/bin/fuzzctl"), "#!/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("/etc/sysctr-fuzz", root.join("etc/fuzz-link")).unwrap();
        (dir, root)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    let mut fields = text.split(common::FIELD);
    let manifest = fields.next().unwrap_or_default();
    let user_set: BTreeMap<String, String> = fields.filter_map(|arg| parse_set(arg).ok()).collect();
    let host = HostDefaults { runtime: "/usr/bin/runc".into(), all_process_capabilities: "\"CAP_CHOWN\"".into() };
    let forced = Forced {
        name: "fuzz".into(),
        destdir: "/var/lib/sysctr/deployments/fuzz.0".into(),
        exec_start: "/usr/bin/runc --systemd-cgroup run 'fuzz'".into(),
        exec_stop: "/usr/bin/runc --systemd-cgroup kill 'fuzz'".into(),
        exec_startpre: String::new(),
        exec_stoppost: String::new(),
        host_uid: 0,
        host_gid: 0,
        image_name: "registry.lan/fuzz:latest".into(),
        image_id: "0".repeat(64),
    };
    let Ok(planned) = plan_host_files(manifest, hostfs(), &host, &forced, &user_set) else { return };
    let mut paths = std::collections::BTreeSet::new();
    for file in &planned {
        let path = &file.path;
        assert!(path.starts_with('/') && path.len() > 1, "{path:?}");
        assert!(
            path[1..].split('/').all(|c| !c.is_empty() && c != "." && c != ".."),
            "not a normal path: {path:?}"
        );
        assert!(!path.contains(['\n', '\r', '\0']), "{path:?}");
        assert!(paths.insert(path.as_str()), "planned twice: {path:?}");
    }
    for link in planned.iter().filter(|f| f.symlink.is_some()) {
        let below = format!("{}/", link.path);
        assert!(
            !planned.iter().any(|f| f.path.starts_with(&below)),
            "a host file beneath the symlink {}",
            link.path
        );
    }
});
