//! The OS image recipe of `examples/os-image`, built by mkosi and booted with no network at all:
//! the sysctr package and the etcd -> flannel -> containerd chain are composed into the tree at
//! build time from image files (no registry), flannel's network config is put into etcd by the
//! image itself, and the chain serves CRI at first boot, without the boot waiting for the
//! network. The build writes nothing of the build machine's own systemd or sysctr storage.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::common::*;
use super::{lock_etcd_ports, unit_property, wait_active};

/// Paths of the build machine that composing a tree must not touch.
const BUILD_MACHINE_WATCHED: [&str; 5] =
    ["/etc/systemd/system", "/etc/tmpfiles.d", "/usr/local/bin", "/var/lib/sysctr", "/etc/sysctr"];

fn build_machine_snapshot() -> Result<BTreeMap<&'static str, Option<BTreeMap<PathBuf, Entry>>>> {
    BUILD_MACHINE_WATCHED
        .iter()
        .map(|dir| Ok((*dir, if Path::new(dir).exists() { Some(tree_listing(Path::new(dir))?) } else { None })))
        .collect()
}

/// Whether containerd's CRI plugin is loaded and healthy, asked by this machine's `ctr` through
/// the socket inside the booted tree.
fn cri_serving_at(socket: &Path) -> bool {
    Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["plugins", "ls"])
        .output()
        .map(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .any(|l| l.contains(" cri ") && l.trim_end().ends_with("ok"))
        })
        .unwrap_or(false)
}

/// The sysctr package of this build's binary, in `dir`.
pub(super) fn sysctr_deb(dir: &Path) -> Result<PathBuf> {
    let built = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/deb/build.sh"))
        .arg(dir)
        .env("SYSCTR_BIN", sysctr_bin())
        .env("SYSCTR_DEB_COMPRESSION", "gzip")
        .output()?;
    assert!(built.status.success(), "{}", describe_output(&built));
    Ok(std::fs::read_dir(dir)?.next().context("no package built")??.path())
}

fn monotonic(host: &TestHost, unit: &str, property: &str) -> u64 {
    unit_property(host, unit, property).parse().unwrap_or_else(|e| panic!("{unit} {property}: {e}"))
}

#[test]
fn the_mkosi_recipe_builds_a_node_that_serves_cri_at_an_offline_first_boot() -> Result<()> {
    let work = tempfile::Builder::new().prefix("sysctr-os-image.").tempdir_in("/var/tmp")?;
    let recipe = examples_dir().join("os-image");

    // The images as files, for an air-gapped build: two OCI archives and one OCI layout.
    let images = work.path().join("images");
    std::fs::create_dir(&images)?;
    for (image, name, archive) in
        [(etcd_image(), "etcd", true), (flannel_image(), "flannel", true), (containerd_image(), "containerd", false)]
    {
        let layout = images.join(name);
        image.write_oci_layout(&layout, "latest")?;
        if archive {
            let tar = images.join(format!("{name}.tar"));
            cmd_ok(&["tar", "-C", layout.to_str().unwrap(), "-cf", tar.to_str().unwrap(), "."])?;
            std::fs::remove_dir_all(&layout)?;
        }
    }

    let deb = sysctr_deb(&work.path().join("deb"))?;

    let before = build_machine_snapshot()?;
    let image = OsImage::build(
        &recipe,
        "node",
        &[("SYSCTR_DEB", deb.as_os_str()), ("SYSCTR_IMAGES", images.as_os_str()), ("SYSCTR", OsStr::new(""))],
    )?;
    eprintln!(
        "mkosi: {} build in {:.1} s",
        if image.cold { "cold" } else { "incremental" },
        image.elapsed.as_secs_f64()
    );
    let after = build_machine_snapshot()?;
    for dir in BUILD_MACHINE_WATCHED {
        let changed = match (&before[dir], &after[dir]) {
            (Some(b), Some(a)) => diff_listings(b, a),
            (None, None) => vec![],
            (b, _) => vec![format!("{} by the build", if b.is_some() { "removed" } else { "created" })],
        };
        assert!(changed.is_empty(), "the build changed {dir} on the build machine: {changed:?}");
    }

    // What the recipe put in: the package, the containers from the files, the file it applied.
    let tree = image.tree();
    assert!(tree.join("usr/bin/sysctr").is_file() && tree.join("var/lib/dpkg/info/sysctr.list").is_file());
    let applied = std::fs::read_to_string(tree.join("etc/sysctr/node.toml"))?;
    let archive = format!("oci-archive:{}", images.join("etcd.tar").display());
    assert!(applied.contains(&archive), "{applied}");
    assert!(applied.contains(&format!("oci:{}", images.join("containerd").display())), "{applied}");
    for unit in ["etcd", "flannel", "containerd"] {
        assert!(tree.join(format!("etc/systemd/system/{unit}.service")).is_file(), "{unit} is not composed in");
    }
    assert!(tree.join("etc/systemd/system/multi-user.target.wants/etcd.service").is_symlink());
    assert_eq!(std::fs::read_to_string(tree.join("etc/machine-id"))?, "uninitialized\n");

    // A tree without /etc/hosts, as a minimal one is (here netbase ships it), and a container
    // whose config sysctr generates, which shares the host's /etc/hosts: runc refuses a bind
    // mount without a source, so each start mounts an empty stand-in instead, and says so.
    std::fs::remove_file(tree.join("etc/hosts"))?;
    let plain = images.join("plain");
    Image::new()
        .layer(busybox_layer())
        .cmd(&[
            "/bin/sh",
            "-c",
            "trap 'exit 0' TERM; echo \"hosts: $(wc -c < /etc/hosts) bytes\"; sleep 1000000 & wait",
        ])
        .write_oci_layout(&plain, "latest")?;
    let composed = Command::new(sysctr_bin())
        .args(["--root", tree.to_str().context("tree path")?, "install", "--name", "plain"])
        .arg(format!("oci:{}", plain.display()))
        .output()?;
    assert!(composed.status.success(), "{}", describe_output(&composed));

    // First boot, no network at all: only the console wizard, which needs a terminal, is masked.
    // The tree runs units named as those of the other node tests: booted with --keep-unit, they
    // would share cgroups (tests/common/host.rs), so the boots take turns.
    let _units = lock_etcd_ports();
    let started = Instant::now();
    let host = TestHost::boot_tree(tree, &["systemd-firstboot.service"])?;
    let running = started.elapsed();
    let socket = PathBuf::from(format!("/proc/{}/root/run/containerd/containerd.sock", host.leader()));
    wait_for("containerd to serve CRI in the booted tree", Duration::from_secs(90), Duration::from_millis(100), || {
        Ok(cri_serving_at(&socket).then_some(()))
    })
    .with_context(|| {
        format!(
            "{}\n{}\n{}",
            host.journal("flannel-network-config.service"),
            host.journal("flannel.service"),
            host.journal("containerd.service")
        )
    })?;
    let cri = started.elapsed();
    eprintln!("boot: running after {:.1} s, CRI served after {:.1} s", running.as_secs_f64(), cri.as_secs_f64());

    wait_active(&host, "plain.service");
    wait_for("the plain container to say what it found", Duration::from_secs(30), Duration::from_millis(100), || {
        Ok(host.journal("plain.service").contains("hosts: 0 bytes").then_some(()))
    })
    .with_context(|| host.journal("plain.service"))?;
    let said = host.journal("plain.service");
    assert!(said.contains("plain: /etc/hosts is absent on this host"), "{said}");

    let links = host.exec_ok(&["ls", "/sys/class/net"])?;
    assert_eq!(links.split_whitespace().collect::<Vec<_>>(), ["lo"], "the booted tree has a network");

    for unit in ["etcd.service", "flannel-network-config.service", "flannel.service", "containerd.service"] {
        wait_active(&host, unit);
    }
    let config_set = monotonic(&host, "flannel-network-config.service", "ActiveEnterTimestampMonotonic");
    assert!(monotonic(&host, "etcd.service", "ActiveEnterTimestampMonotonic") <= config_set);
    assert!(config_set <= monotonic(&host, "flannel.service", "ExecMainStartTimestampMonotonic"));
    let said = host.journal("flannel-network-config.service");
    assert!(said.contains(r#"/atomic.io/network/config set to {"Network":"10.1.0.0/16"}"#), "{said}");
    let subnet = host.exec_ok(&["cat", "/run/flannel/subnet.env"])?;
    assert!(subnet.contains("FLANNEL_SUBNET=10.1."), "{subnet}");

    // The first boot's presets enabled nothing the image did not (99-node.preset).
    let enabled = host.exec(&["systemctl", "is-enabled", "sysctr-apply.path"])?;
    assert_eq!(String::from_utf8_lossy(&enabled.stdout).trim(), "disabled");

    // sysctr-apply.service found everything of /etc/sysctr installed.
    assert_eq!(unit_property(&host, "sysctr-apply.service", "Result"), "success");
    let said = host.journal("sysctr-apply.service");
    assert!(said.contains("unchanged etcd") && said.contains("unchanged containerd"), "{said}");

    // The boot did not wait for the network: multi-user.target came within seconds, and
    // systemd-networkd-wait-online (enabled with networkd, and bound to time out with no link
    // to configure) was not waited for.
    let state = host.exec_ok(&["systemctl", "is-system-running"])?;
    let failed = host.exec_ok(&["systemctl", "--failed", "--no-legend", "--plain"])?;
    assert_eq!((state.trim(), failed.trim()), ("running", ""), "the boot is not clean");
    let userspace: u64 = host.exec_ok(&["systemctl", "show", "-P", "UserspaceTimestampMonotonic"])?.trim().parse()?;
    let multi_user = monotonic(&host, "multi-user.target", "ActiveEnterTimestampMonotonic");
    assert!(multi_user > userspace);
    let boot = Duration::from_micros(multi_user - userspace);
    eprintln!("boot: multi-user.target {} ms after systemd started", boot.as_millis());
    assert!(boot < Duration::from_secs(30), "multi-user.target after {boot:?}");
    let wait_online = "systemd-networkd-wait-online.service";
    assert_eq!(unit_property(&host, "systemd-networkd.service", "ActiveState"), "active");
    let wait_online_started = monotonic(&host, wait_online, "InactiveExitTimestampMonotonic");
    let wait_online_done = monotonic(&host, wait_online, "ActiveEnterTimestampMonotonic");
    assert!(
        wait_online_started == 0 || wait_online_done == 0 || multi_user < wait_online_done,
        "multi-user.target waited for {wait_online}"
    );
    Ok(())
}
