//! install, update, rollback, uninstall and recovery against the in-memory systemd, on a
//! temporary root with a real OSTree store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod boundary;
mod image_mode;
mod sockets;

use super::journal::Journal;
use super::*;
use crate::digest::Digest;
use crate::reference::ImageRef;
use crate::registry::RegistryOptions;
use crate::store::{import_layer, Compression, ImageToPublish, LayerToImport, Store};
use crate::systemd::fake::Fake;
use crate::systemd::ServiceManager as _;

pub(in crate::deploy) const IMAGE: &str = "127.0.0.1:5000/test/svc:latest";

pub(in crate::deploy) struct Host {
    _dir: tempfile::TempDir,
    pub(in crate::deploy) root: PathBuf,
    pub(in crate::deploy) layout: Layout,
}

/// Every entry beneath `dir` (not followed through symlinks), with its metadata, in path order.
pub(in crate::deploy) fn walk(dir: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            found.push((path, meta));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// What an entry of [`walk`] is: `dir`, `-> TARGET` for a symlink, `file(path)` otherwise.
pub(in crate::deploy) fn describe(path: &Path, meta: &std::fs::Metadata, file: impl FnOnce(&Path) -> String) -> String {
    if meta.is_dir() {
        "dir".to_string()
    } else if meta.file_type().is_symlink() {
        format!("-> {}", std::fs::read_link(path).unwrap().display())
    } else {
        file(path)
    }
}

/// A root with a runtime to name in units, and an image in its store: a file, a tmpfiles
/// template and a host file.
pub(in crate::deploy) fn host() -> Host {
    let dir = tempfile::Builder::new().prefix("sysctr-deploy.").tempdir_in("/var/tmp").unwrap();
    let root = dir.path().join("root");
    for sub in ["usr/sbin", "etc/systemd/system", "etc/tmpfiles.d", "usr/local"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::write(root.join("usr/sbin/runc"), "#!/bin/sh\n").unwrap();
    for shared in crate::spec::SHARED_HOST_FILES {
        std::fs::write(root.join(shared.trim_start_matches('/')), "").unwrap();
    }
    let layout = Layout::new(&root, &root.join("var/lib/sysctr"));
    drop(layout.lock().unwrap());
    publish(&layout, IMAGE, "v1");
    Host { _dir: dir, root, layout }
}

fn publish(layout: &Layout, reference: &str, version: &str) {
    publish_with(layout, reference, version, &[]);
}

/// [`publish`], with more files in the image.
pub(in crate::deploy) fn publish_with(layout: &Layout, reference: &str, version: &str, extra: &[(&str, &str)]) {
    publish_tree(layout, reference, version, extra, &[]);
}

/// [`publish_with`], with symlinks too, as (path, target).
pub(in crate::deploy) fn publish_tree(
    layout: &Layout,
    reference: &str,
    version: &str,
    extra: &[(&str, &str)],
    links: &[(&str, &str)],
) {
    let (uid, gid) = crate::test_owner::ours();
    let mut files = vec![
        ("bin/sh", version.to_string()),
        ("exports/tmpfiles.template", "d /run/$NAME 0755 - - -\n".to_string()),
        ("exports/hostfs/usr/local/svc.conf", format!("{version}\n")),
    ];
    files.extend(extra.iter().map(|(path, content)| (*path, content.to_string())));
    // Every directory is given, the root too, owned as the files are: one only implied would
    // be root's (`0755 0:0`), which only root could check out.
    let dirs: std::collections::BTreeSet<&Path> = files
        .iter()
        .map(|(path, _)| *path)
        .chain(links.iter().map(|(path, _)| *path))
        .flat_map(|path| Path::new(path).ancestors().skip(1))
        .collect();
    let header = |kind: tar::EntryType, mode: u32, size: usize| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(size as u64);
        header.set_mode(mode);
        header.set_uid(uid.into());
        header.set_gid(gid.into());
        header.set_mtime(0);
        header
    };
    let mut builder = tar::Builder::new(Vec::new());
    for dir in dirs {
        let mut header = header(tar::EntryType::Directory, 0o755, 0);
        builder.append_data(&mut header, Path::new("./").join(dir), std::io::empty()).unwrap();
    }
    for (path, target) in links {
        builder.append_link(&mut header(tar::EntryType::Symlink, 0o777, 0), path, target).unwrap();
    }
    for (path, content) in &files {
        let mut header = header(tar::EntryType::Regular, 0o755, content.len());
        builder.append_data(&mut header, path, content.as_bytes()).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let digest = Digest::of_bytes(&tar);
    let store = Store::open_or_create(&layout.repo()).unwrap();
    let layer = LayerToImport { digest: digest.clone(), diff_id: digest.clone(), compression: Compression::None };
    let imported = import_layer(store.path(), &tar[..], &layer, &Default::default()).unwrap();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [digest.to_string()]},
        "config": {"Cmd": ["/bin/sh"], "Labels": {"version": version}}
    })
    .to_string();
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::of_bytes(config.as_bytes()).to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest.to_string(), "size": tar.len()}]
    })
    .to_string();
    let reference = ImageRef::parse(reference).unwrap().canonical();
    let image = ImageToPublish {
        reference: &reference,
        manifest_digest: &Digest::of_bytes(manifest.as_bytes()).to_string(),
        manifest_raw: manifest.as_bytes(),
        config_raw: config.as_bytes(),
    };
    store.publish(&image, &[(digest, imported.commit)]).unwrap();
}

pub(in crate::deploy) fn install_request(name: &str, start_now: bool) -> InstallRequest {
    InstallRequest {
        image: ImageRef::parse(IMAGE).unwrap(),
        name: Some(name.to_string()),
        values: BTreeMap::new(),
        runtime: None,
        start_now,
        no_block: false,
        registry: RegistryOptions::default(),
        replace_vendor_unit: false,
        auto_update: true,
        listen: Listen::default(),
        ready: crate::deploy::ReadySettings::default(),
    }
}

pub(in crate::deploy) fn update_request(name: &str, value: &str, rollback_on_failure: bool) -> UpdateRequest {
    UpdateRequest {
        name: name.to_string(),
        values: BTreeMap::from([("X".to_string(), value.to_string())]),
        replace_values: false,
        rebase: None,
        pull: false,
        rollback_on_failure,
        registry: RegistryOptions::default(),
        listen: None,
        ready: None,
        ready_dependents: false,
    }
}

/// Every path under the root outside the storage, with file contents: what a failed command
/// must leave as it was.
pub(in crate::deploy) fn host_files(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut found = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(root).unwrap().to_path_buf();
            if relative.starts_with("var/lib/sysctr") {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path);
                found.insert(relative, None);
            } else {
                found.insert(relative, Some(std::fs::read(&path).unwrap_or_default()));
            }
        }
    }
    found
}

fn active_slot(host: &Host, name: &str) -> PathBuf {
    std::fs::read_link(host.layout.link(name)).unwrap()
}

#[tokio::test]
async fn install_enables_starts_and_uninstall_takes_all_of_it_back() {
    let host = host();
    let before = host_files(&host.root);
    let systemd = Fake::new();
    let outcome = install(&host.layout, &install_request("svc", true), &systemd).await.unwrap();
    assert!(matches!(outcome, InstallOutcome::Installed(_)));
    assert!(systemd.is_enabled_now("svc.service") && systemd.is_active("svc.service"));
    assert!(host.root.join("etc/systemd/system/svc.service").is_file());
    assert_eq!(std::fs::read_to_string(host.root.join("usr/local/svc.conf")).unwrap(), "v1\n");
    let calls = systemd.calls();
    assert!(calls.iter().any(|c| c.starts_with("tmpfiles Create")), "{calls:?}");

    let report = uninstall(&host.layout, "svc", &systemd).await.unwrap();
    assert!(report.notes.is_empty(), "{:?}", report.notes);
    assert!(!systemd.is_enabled_now("svc.service") && !systemd.is_active("svc.service"));
    assert_eq!(host_files(&host.root), before);
    assert!(std::fs::symlink_metadata(host.layout.link("svc")).is_err());
}

#[tokio::test]
async fn no_block_queues_the_start_without_waiting_for_it() {
    let host = host();
    let systemd = Fake::new();
    let request = InstallRequest { no_block: true, ..install_request("svc", true) };
    install(&host.layout, &request, &systemd).await.unwrap();
    let calls = systemd.calls();
    assert!(calls.iter().any(|c| c == "queue start svc.service"), "{calls:?}");
    assert!(!calls.iter().any(|c| c == "start svc.service"), "{calls:?}");
}

#[tokio::test]
async fn a_service_that_does_not_start_leaves_the_host_as_it_was() {
    let host = host();
    let before = host_files(&host.root);
    let systemd = Fake::new();
    systemd.fail_next_start_of("svc.service");
    let err = install(&host.layout, &install_request("svc", true), &systemd).await.unwrap_err();
    assert!(format!("{err:#}").contains("could not start svc.service"), "{err:#}");
    assert_eq!(host_files(&host.root), before);
    assert!(!systemd.is_enabled_now("svc.service"), "the enable was not undone");
    assert!(std::fs::symlink_metadata(host.layout.link("svc")).is_err());
    assert!(!host.layout.transaction_dir().exists());
}

#[tokio::test]
async fn update_rolls_back_unless_told_not_to_and_rollback_switches_slots() {
    let host = host();
    let systemd = Fake::new();
    install(&host.layout, &install_request("svc", true), &systemd).await.unwrap();
    publish(&host.layout, IMAGE, "v2");

    // The new service fails: back on slot 0, running again.
    systemd.fail_next_start_of("svc.service");
    let err = update(&host.layout, &update_request("svc", "1", true), &systemd).await.unwrap_err();
    assert!(format!("{err:#}").contains("rolled back"), "{err:#}");
    assert_eq!(active_slot(&host, "svc"), Path::new("svc.0"));
    assert_eq!(std::fs::read_to_string(host.root.join("usr/local/svc.conf")).unwrap(), "v1\n");

    // --no-rollback keeps the new deployment, because only its start failed.
    systemd.fail_next_start_of("svc.service");
    let err = update(&host.layout, &update_request("svc", "2", false), &systemd).await.unwrap_err();
    assert!(format!("{err:#}").contains("left on the new deployment"), "{err:#}");
    assert_eq!(active_slot(&host, "svc"), Path::new("svc.1"));
    assert_eq!(std::fs::read_to_string(host.root.join("usr/local/svc.conf")).unwrap(), "v2\n");

    // And rollback goes back to slot 0 with its own files.
    let systemd = Fake::new();
    let report = rollback(&host.layout, "svc", &systemd).await.unwrap();
    assert!(matches!(report, SwitchReport::Switched { .. }));
    assert_eq!(active_slot(&host, "svc"), Path::new("svc.0"));
    assert_eq!(std::fs::read_to_string(host.root.join("usr/local/svc.conf")).unwrap(), "v1\n");
    assert!(systemd.is_enabled_now("svc.service"));
}

/// Leaves an interrupted update of `name` behind, as a crash would: the unit was stopped.
fn interrupted_update(layout: &Layout, name: &str) {
    let mut journal = Journal::begin(&layout.transaction_dir(), &layout.root, "update", name).unwrap();
    journal.stopped(&format!("{name}.service")).unwrap();
    drop(journal);
}

#[tokio::test]
async fn recovery_without_systemd_is_an_error_that_sets_the_transaction_aside() {
    let host = host();
    let systemd = Fake::new();
    install(&host.layout, &install_request("svc", true), &systemd).await.unwrap();
    systemd.stop("svc.service").await.unwrap();
    interrupted_update(&host.layout, "svc");

    // No bus: the undo cannot restart the service, and says so instead of dropping the journal.
    let offline_bus = Fake::unreachable();
    let err = install(&host.layout, &install_request("other", false), &offline_bus).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("`sysctr update svc`") && message.contains("sysctr recover"), "{message}");
    assert!(host.layout.storage.join(".pending/svc").exists());

    // Other containers stay manageable; the one concerned waits for `recover`.
    install(&host.layout, &install_request("other", false), &systemd).await.unwrap();
    let err = update(&host.layout, &update_request("svc", "1", true), &systemd).await.unwrap_err();
    assert!(format!("{err:#}").contains("run `sysctr recover` first"), "{err:#}");
    assert_eq!(pending(&host.layout).unwrap().len(), 1);

    let done = recover(&host.layout, &systemd, false).await.unwrap();
    assert_eq!(done, ["undid the interrupted `sysctr update svc`"]);
    assert!(systemd.is_active("svc.service"), "the stopped service was not started again");
    assert!(pending(&host.layout).unwrap().is_empty());
    update(&host.layout, &update_request("svc", "1", true), &systemd).await.unwrap();
}

#[tokio::test]
async fn a_corrupt_journal_is_named_and_can_be_abandoned() {
    let host = host();
    let systemd = Fake::new();
    std::fs::create_dir(host.layout.transaction_dir()).unwrap();
    std::fs::write(host.layout.transaction_dir().join("journal.json"), b"{\"command\": \"upd").unwrap();
    let err = install(&host.layout, &install_request("svc", false), &systemd).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("cannot be read") && message.contains("sysctr recover --abandon"), "{message}");
    // Nothing knows which container it was about: others go on, with a note.
    let InstallOutcome::Installed(report) =
        install(&host.layout, &install_request("svc", false), &systemd).await.unwrap()
    else {
        panic!("not installed");
    };
    assert!(report.notes.iter().any(|n| n.contains("cannot be read")), "{:?}", report.notes);
    assert!(recover(&host.layout, &systemd, false).await.is_err());
    let done = recover(&host.layout, &systemd, true).await.unwrap();
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(pending(&host.layout).unwrap().is_empty());
}

#[tokio::test]
async fn records_read_back_are_checked() {
    let host = host();
    let systemd = Fake::new();
    install(&host.layout, &install_request("svc", false), &systemd).await.unwrap();
    let info = host.layout.slot("svc", 0).join("info");
    let text = std::fs::read_to_string(&info).unwrap().replace("\"slot\": 0", "\"slot\": 7");
    std::fs::write(&info, text).unwrap();
    let err = rollback(&host.layout, "svc", &systemd).await.unwrap_err();
    assert!(format!("{err:#}").contains("slot 7 is not 0 or 1"), "{err:#}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[tokio::test]
async fn an_undo_killed_half_way_is_run_again_to_the_same_end() {
    let host = host();
    let systemd = Fake::new();
    install(&host.layout, &install_request("svc", true), &systemd).await.unwrap();
    let unit = host.root.join("etc/systemd/system/svc.service");
    let original = std::fs::read(&unit).unwrap();

    // An update that stopped the service and rewrote the unit, then died.
    let mut journal = Journal::begin(&host.layout.transaction_dir(), &host.layout.root, "update", "svc").unwrap();
    journal.stopped("svc.service").unwrap();
    systemd.stop("svc.service").await.unwrap();
    journal.save(&unit).unwrap();
    std::fs::write(&unit, "[Service]\nExecStart=/bin/false\n").unwrap();
    drop(journal);
    let saved = host.root.join("saved-transaction");
    copy_dir(&host.layout.transaction_dir(), &saved);

    // The undo runs through, but "dies" before its journal is gone: it is found again.
    assert_eq!(recover(&host.layout, &systemd, false).await.unwrap().len(), 1);
    copy_dir(&saved, &host.layout.transaction_dir());
    let done = recover(&host.layout, &systemd, false).await.unwrap();
    assert_eq!(done, ["undid the interrupted `sysctr update svc`"]);
    assert_eq!(std::fs::read(&unit).unwrap(), original);
    assert!(systemd.is_active("svc.service"));
    assert!(pending(&host.layout).unwrap().is_empty());
}

/// Installed into an OS image, a container takes nothing from the machine composing it: it runs
/// as root under the target's systemd, is offered every capability, and its unit narrows them to
/// the target's bounding set at each start.
#[tokio::test]
async fn an_offline_install_leaves_host_facts_to_the_target() {
    let host = host();
    let template = r#"{"ociVersion": "1.0.0", "root": {"path": "rootfs", "readonly": true},
        "process": {"args": ["/bin/sh"], "user": {"uid": $HOST_UID, "gid": $HOST_GID},
            "capabilities": {"bounding": [$ALL_PROCESS_CAPABILITIES], "effective": [$ALL_PROCESS_CAPABILITIES]}}}"#;
    publish_with(&host.layout, IMAGE, "v1", &[("exports/config.json.template", template)]);
    let systemd = crate::systemd::Offline::new(&host.root);
    install(&host.layout, &install_request("svc", false), &systemd).await.unwrap();

    let config_path = host.layout.link("svc").join("config.json");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    assert_eq!(
        (config["process"]["user"]["uid"].as_u64(), config["process"]["user"]["gid"].as_u64()),
        (Some(0), Some(0))
    );
    let bounding: Vec<&str> =
        config["process"]["capabilities"]["bounding"].as_array().unwrap().iter().filter_map(|c| c.as_str()).collect();
    assert_eq!(bounding.len(), 41, "every capability sysctr knows: {bounding:?}");
    let dropin = std::fs::read_to_string(host.root.join("etc/systemd/system/svc.service.d/sysctr.conf")).unwrap();
    assert!(dropin.contains("ExecStartPre=-/usr/bin/sysctr --storage '/var/lib/sysctr' fit-host 'svc'\n"), "{dropin}");

    // What that start does, here with this process's bounding set.
    let ours = crate::template::host_bounding_set().unwrap();
    let dropped = fit_to_host(&host.layout, "svc", None).unwrap().dropped_capabilities;
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    let kept = config["process"]["capabilities"]["effective"].as_array().unwrap().len();
    assert_eq!(kept, ours.count_ones().min(41) as usize, "kept: {config}; dropped: {dropped:?}");
    assert_eq!(kept + dropped.len(), 41);
    assert!(
        fit_to_host(&host.layout, "svc", None).unwrap().dropped_capabilities.is_empty(),
        "a second start changes nothing"
    );
}

/// The sources of the container's mounts of /etc/hosts and /etc/resolv.conf, in that order.
fn shared_file_sources(layout: &Layout, name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(layout.link(name).join("config.json")).unwrap();
    let config: serde_json::Value = serde_json::from_str(&text).unwrap();
    ["/etc/hosts", "/etc/resolv.conf"]
        .iter()
        .map(|file| {
            let mounts = config["mounts"].as_array().unwrap();
            let mount = mounts.iter().find(|m| m["destination"] == *file).unwrap_or_else(|| panic!("{file}: {text}"));
            mount["source"].as_str().unwrap().to_string()
        })
        .collect()
}

/// A minimal OS tree has no /etc/hosts, and runc refuses a bind mount without a source: the
/// container gets an empty file instead, and the host's once it has one. On a booted host the
/// install decides; in an OS image, each start.
#[tokio::test]
async fn a_host_without_etc_hosts_gives_its_containers_an_empty_one() {
    let host = host();
    std::fs::remove_file(host.root.join("etc/hosts")).unwrap();
    let stand_in = "/var/lib/sysctr/deployments/svc.0/absent-host-file";

    let outcome = install(&host.layout, &install_request("svc", false), &Fake::new()).await.unwrap();
    let InstallOutcome::Installed(report) = outcome else { panic!("{outcome:?}") };
    assert!(report.notes.iter().any(|n| n.contains("/etc/hosts is absent")), "{:?}", report.notes);
    assert_eq!(shared_file_sources(&host.layout, "svc"), [stand_in, "/etc/resolv.conf"]);
    let empty = host.root.join(stand_in.trim_start_matches('/'));
    assert_eq!(std::fs::read(&empty).unwrap(), b"", "{}", empty.display());
    uninstall(&host.layout, "svc", &Fake::new()).await.unwrap();

    let offline = crate::systemd::Offline::new(&host.root);
    install(&host.layout, &install_request("svc", false), &offline).await.unwrap();
    assert_eq!(shared_file_sources(&host.layout, "svc"), ["/etc/hosts", "/etc/resolv.conf"], "left to the start");
    let fit = fit_to_host(&host.layout, "svc", None).unwrap();
    assert_eq!(fit.host_files, [crate::spec::HostFileChange::StandIn("/etc/hosts".into())]);
    assert_eq!(shared_file_sources(&host.layout, "svc"), [stand_in, "/etc/resolv.conf"]);
    // A link to where a resolver writes later counts once the file is there, not before.
    std::fs::remove_file(host.root.join("etc/resolv.conf")).unwrap();
    std::os::unix::fs::symlink("/run/resolved/stub.conf", host.root.join("etc/resolv.conf")).unwrap();
    std::fs::write(host.root.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    let fit = fit_to_host(&host.layout, "svc", None).unwrap();
    assert_eq!(
        fit.host_files,
        [
            crate::spec::HostFileChange::StandIn("/etc/resolv.conf".into()),
            crate::spec::HostFileChange::Restored("/etc/hosts".into())
        ]
    );
    assert_eq!(shared_file_sources(&host.layout, "svc"), ["/etc/hosts", stand_in]);
    std::fs::create_dir_all(host.root.join("run/resolved")).unwrap();
    std::fs::write(host.root.join("run/resolved/stub.conf"), "nameserver 127.0.0.53\n").unwrap();
    fit_to_host(&host.layout, "svc", None).unwrap();
    assert_eq!(shared_file_sources(&host.layout, "svc"), ["/etc/hosts", "/etc/resolv.conf"]);
}

/// `sysctr-apply.service` runs at every boot: it must not wait for the network unless it has an
/// image to pull, and then only once, before the first pull.
#[tokio::test]
async fn apply_asks_for_the_network_only_before_a_pull() {
    let host = host();
    let file = host.root.join("node.toml");
    let options = ApplyOptions {
        registry: RegistryOptions::default(),
        prune: false,
        wait_online: Some(std::time::Duration::from_secs(5)),
        pull_retry: std::time::Duration::ZERO,
    };
    let online = |systemd: &Fake| systemd.calls().iter().filter(|c| *c == "start network-online.target").count();

    // In the store already: installed with no pull, and no wait.
    std::fs::write(&file, format!("[[container]]\nname = \"svc\"\nimage = \"{IMAGE}\"\n")).unwrap();
    let systemd = Fake::new();
    let (actions, _) = apply(&host.layout, &file, &options, &systemd).await.unwrap();
    assert!(matches!(actions.as_slice(), [Action::Installed(_)]), "{actions:?}");
    assert_eq!(online(&systemd), 0, "{:?}", systemd.calls());
    apply(&host.layout, &file, &options, &systemd).await.unwrap();
    assert_eq!(online(&systemd), 0, "nothing to do: {:?}", systemd.calls());

    // Two images to pull (from a port where nothing listens): the network is asked for once,
    // first, and the pull still says what failed.
    let missing = |name: &str| format!("[[container]]\nname = \"{name}\"\nimage = \"127.0.0.1:1/test/{name}:v1\"\n");
    std::fs::write(&file, missing("a") + &missing("b")).unwrap();
    let systemd = Fake::new();
    let err = apply(&host.layout, &file, &options, &systemd).await.unwrap_err();
    assert!(format!("{err:#}").contains("127.0.0.1:1"), "{err:#}");
    assert_eq!(online(&systemd), 1, "{:?}", systemd.calls());

    // Without --wait-online, never.
    let systemd = Fake::new();
    let options = ApplyOptions { wait_online: None, ..options };
    apply(&host.layout, &file, &options, &systemd).await.unwrap_err();
    assert_eq!(online(&systemd), 0, "{:?}", systemd.calls());
}

/// A boot whose registry cannot be reached gives up within the bound the admin set, saying what,
/// from where and why; a failure that cannot pass (a malformed registry answer, here a refused
/// file) is not tried again.
#[tokio::test]
async fn apply_tries_an_unreachable_registry_again_within_its_bound() {
    let host = host();
    let file = host.root.join("node.toml");
    std::fs::write(&file, "[[container]]\nname = \"a\"\nimage = \"127.0.0.1:1/test/a:v1\"\n").unwrap();
    let options = ApplyOptions {
        registry: RegistryOptions::default(),
        prune: false,
        wait_online: None,
        pull_retry: std::time::Duration::from_millis(2500),
    };
    let started = std::time::Instant::now();
    let err = apply(&host.layout, &file, &options, &Fake::new()).await.unwrap_err();
    let (took, text) = (started.elapsed(), format!("{err:#}"));
    // Tried at 0 s and after 1 s; a third try, 2 s later, would end past the bound.
    assert!(text.contains("gave up on 127.0.0.1:1/test/a:v1 after 2 attempts"), "{text}");
    assert!(text.contains("cannot reach registry 127.0.0.1:1"), "{text}");
    assert!(took >= std::time::Duration::from_secs(1) && took < std::time::Duration::from_millis(2500), "{took:?}");

    // Not in the store and not a registry: a missing OCI layout is no reason to wait.
    let missing = host.root.join("no-such-layout");
    std::fs::write(&file, format!("[[container]]\nname = \"a\"\nimage = \"oci:{}:v1\"\n", missing.display())).unwrap();
    let started = std::time::Instant::now();
    let err = apply(&host.layout, &file, &options, &Fake::new()).await.unwrap_err();
    assert!(!format!("{err:#}").contains("gave up"), "{err:#}");
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
}

/// `apply --dry-run --json` shows an installed container's unit, read from its slot: never a
/// file a symlink there points to, which under `--root` would be the composing machine's.
#[tokio::test]
async fn a_plan_reads_an_installed_unit_beneath_the_deployments_only() {
    let host = host();
    let file = host.root.join("node.toml");
    std::fs::write(&file, format!("[[container]]\nname = \"svc\"\nimage = \"{IMAGE}\"\nset = {{ A = \"1\" }}\n"))
        .unwrap();
    let options = ApplyOptions {
        registry: RegistryOptions::default(),
        prune: false,
        wait_online: None,
        pull_retry: std::time::Duration::ZERO,
    };
    apply(&host.layout, &file, &options, &Fake::new()).await.unwrap();
    std::fs::write(&file, format!("[[container]]\nname = \"svc\"\nimage = \"{IMAGE}\"\nset = {{ A = \"2\" }}\n"))
        .unwrap();
    let steps = plan(&host.layout, &file, &options.registry, false, crate::systemd::Target::Booted).unwrap();
    let before = steps[0].before.as_ref().expect("the installed side");
    assert!(before.unit.as_deref().is_some_and(|u| u.contains("[Service]")), "{before:?}");

    let secret = host.root.join("outside-the-slot");
    std::fs::write(&secret, "not the unit\n").unwrap();
    let unit = host.layout.deployments().join(active_slot(&host, "svc")).join(crate::deploy::host::layout::UNIT_FILE);
    std::fs::remove_file(&unit).unwrap();
    std::os::unix::fs::symlink(&secret, &unit).unwrap();
    let err = plan(&host.layout, &file, &options.registry, false, crate::systemd::Target::Booted).unwrap_err();
    assert!(format!("{err:#}").contains("reading the unit of svc"), "{err:#}");
}

/// An apply file's `runtime` is the one the container is installed with, as `--runtime` is.
#[tokio::test]
async fn apply_installs_with_the_runtime_the_file_names() {
    let host = host();
    let file = host.root.join("node.toml");
    let options = ApplyOptions {
        registry: RegistryOptions::default(),
        prune: false,
        wait_online: None,
        pull_retry: std::time::Duration::ZERO,
    };
    let entry =
        |runtime: &str| format!("[[container]]\nname = \"svc\"\nimage = \"{IMAGE}\"\nruntime = \"{runtime}\"\n");
    std::fs::write(&file, entry("/usr/bin/no-such-runtime")).unwrap();
    let err = apply(&host.layout, &file, &options, &Fake::new()).await.unwrap_err();
    assert!(format!("{err:#}").contains("--runtime /usr/bin/no-such-runtime does not exist"), "{err:#}");

    std::fs::create_dir_all(host.root.join("opt/oci")).unwrap();
    std::fs::write(host.root.join("opt/oci/crun"), "").unwrap();
    std::fs::write(&file, entry("/opt/oci/crun")).unwrap();
    apply(&host.layout, &file, &options, &Fake::new()).await.unwrap();
    assert_eq!(host.layout.read_info("svc").unwrap().runtime, "/opt/oci/crun");
}
