//! Images built the way the images made for `atomic install --system` are: one image for each
//! shape found in projectatomic/atomic's test images and in atomic-system-containers (OCI 0.x
//! configs, capabilities in each of their old places, an empty seccomp object, raw JSON fragments
//! in templates, hostfs with empty directories and dangling symlinks, run-once images, a unit
//! template with no config template). Each is written here in this project's own terms, and each
//! installs, starts under systemd, updates, rolls back and uninstalls on a booted host.

use std::io::Read;
use std::process::Stdio;

use anyhow::Context as _;
use serde_json::{json, Value};

use super::*;

/// The service every shape runs: writes what it was given where the host can see it, then waits
/// for SIGTERM (it is PID 1 of its namespace, so it needs a handler to stop).
const RUN_SH: &str = "#!/bin/sh\n\
    out=${OUT:-/var/run/greeting}\n\
    echo \"hello $RECEIVER port=$PORT name=$NAME\" > $out.tmp\n\
    [ -c /dev/test-zero ] && echo device=yes >> $out.tmp\n\
    [ -n \"$EXTRA\" ] && [ -d \"$EXTRA\" ] && echo extra-mount=yes >> $out.tmp\n\
    mv $out.tmp $out\n\
    trap 'exit 0' TERM INT\n\
    sleep 100000 &\n\
    wait\n";

/// What `runc spec` writes for mounts, which most images copied.
fn runc_mounts() -> Vec<Value> {
    vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ]
}

/// The host directory a shape's service writes its greeting to, bind-mounted at `/var/run`.
fn greeting_mount() -> Value {
    json!({"type": "bind", "source": "${RUN_DIRECTORY}/${NAME}", "destination": "/var/run/",
           "options": ["rbind", "rw", "mode=755"]})
}

fn env() -> Value {
    json!([
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "TERM=xterm",
        "RECEIVER=$RECEIVER",
        "PORT=$PORT",
        "NAME=$NAME",
        "UUID=$UUID"
    ])
}

/// Serializes a config and puts raw template text where the markers are: what makes these
/// templates JSON only after substitution.
fn template_text(config: &Value, raw: &[(&str, &str)]) -> String {
    let mut text = serde_json::to_string_pretty(config).unwrap();
    for (marker, replacement) in raw {
        assert!(text.contains(marker), "marker {marker} not in the template");
        text = text.replace(marker, replacement);
    }
    text
}

const TMPFILES_RUN_DIR: &str = "D    ${RUN_DIRECTORY}/${NAME}   0700 - - - -\n";
/// The unit of atomic's update and hostfs test images: the EXEC_* commands, from DESTDIR.
const SIMPLE_SERVICE: &str = "[Unit]\nDescription=Hello World System Container\n\n[Service]\nExecStart=$EXEC_START\n\
    ExecStop=$EXEC_STOP\nRestart=on-failure\nWorkingDirectory=$DESTDIR\n\n[Install]\nWantedBy=multi-user.target\n";
const MANIFEST_DEFAULTS: &str = r#"{"version": "1.0", "defaultValues": {"PORT": "8081", "RECEIVER": "World"}}"#;

/// atomic's `Dockerfile.system`: OCI 0.3.0, `linux.capabilities` holding only a bounding set
/// filled from `${ALL_PROCESS_CAPABILITIES}`, `linux.rlimits`, an empty seccomp object, empty
/// labels under `linux`, a unit using every EXEC_* variable and PIDFile, an invalid Restart=.
fn atomic_system() -> Image {
    let mut mounts = runc_mounts();
    mounts.push(greeting_mount());
    let config = json!({
        "ociVersion": "0.3.0",
        "platform": {"os": "linux", "arch": "amd64"},
        "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["/usr/bin/run.sh"], "env": env(), "cwd": "/"},
        "root": {"path": "rootfs", "readonly": true},
        "mounts": mounts,
        "hooks": {},
        "linux": {
            "capabilities": {"bounding": "@CAPS@"},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "mount"}],
            "devices": null,
            "apparmorProfile": "",
            "selinuxProcessLabel": "",
            "seccomp": {"defaultAction": "", "architectures": null}
        }
    });
    let service = "[Unit]\nDescription=Hello World System Container\n\n[Service]\n\
        ExecStartPre=$EXEC_STARTPRE\nExecStart=$EXEC_START\nExecStop=$EXEC_STOP\nExecStopPost=$EXEC_STOPPOST\n\
        Restart=on-crash\nWorkingDirectory=$DESTDIR\nPIDFile=$PIDFILE\n\n[Install]\nWantedBy=multi-user.target\n\n";
    shape_image(&[
        ("config.json.template", &template_text(&config, &[("\"@CAPS@\"", "[${ALL_PROCESS_CAPABILITIES}]")])),
        ("service.template", service),
        ("tmpfiles.template", TMPFILES_RUN_DIR),
        ("manifest.json", MANIFEST_DEFAULTS),
    ])
}

/// atomic's `Dockerfile.system-update`: OCI 1.0.0, `process.rlimits`, no capabilities at all, and
/// a variable with no default that must be given with `--set`.
fn atomic_system_update() -> Image {
    let mut mounts = runc_mounts();
    mounts.push(greeting_mount());
    let mut environment = env();
    environment.as_array_mut().unwrap().push(json!("VAR_WITH_NO_DEFAULT=$VAR_WITH_NO_DEFAULT"));
    let config = json!({
        "ociVersion": "1.0.0",
        "platform": {"os": "linux", "arch": "amd64"},
        "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["/usr/bin/run.sh"], "env": environment,
                    "cwd": "/", "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]},
        "root": {"path": "rootfs", "readonly": true},
        "mounts": mounts,
        "hooks": {},
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "mount"}],
            "devices": null, "apparmorProfile": "", "selinuxProcessLabel": ""
        }
    });
    shape_image(&[
        ("config.json.template", &template_text(&config, &[])),
        ("service.template", SIMPLE_SERVICE),
        ("tmpfiles.template", TMPFILES_RUN_DIR),
        ("manifest.json", r#"{"version": "1.0", "defaultValues": {"PORT": "8081"}}"#),
    ])
    .label("summary", "Updated system container image")
}

/// atomic's `Dockerfile.system-hostfs`: a flat capability list under `linux`, host files with a
/// rename, a rendered template, an empty directory and a dangling symlink.
fn atomic_system_hostfs() -> Image {
    let mut mounts = runc_mounts();
    mounts.push(greeting_mount());
    let config = json!({
        "ociVersion": "0.3.0",
        "platform": {"os": "linux", "arch": "amd64"},
        "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["/usr/bin/run.sh"], "env": env(), "cwd": "/"},
        "root": {"path": "rootfs", "readonly": true},
        "mounts": mounts,
        "hooks": {},
        "linux": {
            "capabilities": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "mount"}],
            "devices": null, "apparmorProfile": "", "selinuxProcessLabel": "",
            "seccomp": {"defaultAction": "", "architectures": null}
        }
    });
    let manifest = r#"{
    "version": "1.0",
    "defaultValues": {"PORT": "8081", "RECEIVER": "World"},
    "renameFiles" : {"/usr/local/lib/placeholder-file" : "/usr/local/lib/renamed-$NAME"},
    "installedFilesTemplate" : ["/usr/local/lib/secret-message-template"],
    "useLinks" : false
}"#;
    shape_image(&[
        ("config.json.template", &template_text(&config, &[])),
        ("service.template", SIMPLE_SERVICE),
        ("tmpfiles.template", TMPFILES_RUN_DIR),
        ("manifest.json", manifest),
        ("hostfs/usr/local/lib/secret-message", "hello $RECEIVER\n"),
        ("hostfs/usr/local/lib/secret-message-template", "hello $RECEIVER\n"),
        ("hostfs/usr/local/lib/placeholder-file", "hello $RECEIVER\n"),
    ])
    .layer(
        Layer::gzip()
            .dir("exports/hostfs/usr/local/placeholder-lib", 0o755)
            .symlink("exports/hostfs/broken-symlink", "/does/not/exist"),
    )
    .label("atomic.has_install_files", "yes")
}

/// atomic-system-containers' current shape (etcd, kubelet): OCI 1.0.0, `process.capabilities`
/// with all five sets, a raw `$ADDTL_MOUNTS` fragment after the last mount, `rootfsPropagation`,
/// an empty `user`, no hooks, tmpfiles lines owned by `${HOST_UID}`, a renamed host file under
/// `$CONF_DIRECTORY/$NAME` and an empty host directory.
fn asc_current() -> Image {
    let mut mounts = runc_mounts();
    mounts.push(greeting_mount());
    mounts.push(json!("@ADDTL_MOUNTS@"));
    let caps = json!(["CAP_DAC_READ_SEARCH", "CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    let mut environment = env();
    environment.as_array_mut().unwrap().push(json!("EXTRA=/srv/extra"));
    let config = json!({
        "ociVersion": "1.0.0",
        "platform": {"os": "linux", "arch": "amd64"},
        "process": {"terminal": false, "user": {}, "args": ["/usr/bin/run.sh"], "env": environment, "cwd": "/",
                    "noNewPrivileges": false,
                    "capabilities": {"ambient": caps, "bounding": caps, "effective": caps, "inheritable": caps, "permitted": caps},
                    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]},
        "root": {"path": "rootfs", "readonly": true},
        "mounts": mounts,
        "linux": {
            "rootfsPropagation": "rslave",
            "resources": {"devices": [{"allow": true, "access": "rwm"}]},
            "namespaces": [{"type": "mount"}],
            "devices": null, "apparmorProfile": ""
        }
    });
    // Atomic's images put the fragment right after the last mount object, with no comma.
    let text = template_text(&config, &[(",\n    \"@ADDTL_MOUNTS@\"", "\n        $ADDTL_MOUNTS")]);
    let service = "[Unit]\nDescription=Etcd-like Server\nAfter=network.target\n\n[Service]\nExecStart=$EXEC_START\n\
        ExecStop=$EXEC_STOP\nRestart=on-failure\nWorkingDirectory=$DESTDIR\nLimitNOFILE=65536\n\n\
        [Install]\nWantedBy=multi-user.target\n";
    let tmpfiles = "D    ${RUN_DIRECTORY}/${NAME}   0700 - - - -\n\
        d    ${STATE_DIRECTORY}/${NAME}   0700 ${HOST_UID} ${HOST_GID} - -\n\
        Z    ${STATE_DIRECTORY}/${NAME}   0700 ${HOST_UID} ${HOST_GID} - -\n";
    let manifest = r#"{"version": "1.0", "defaultValues": {"PORT": "2379", "RECEIVER": "etcd", "ADDTL_MOUNTS": ""},
        "renameFiles": {"/etc/etcd/etcd.conf": "$CONF_DIRECTORY/$NAME/etcd.conf"}}"#;
    shape_image(&[
        ("config.json.template", &text),
        ("service.template", service),
        ("tmpfiles.template", tmpfiles),
        ("manifest.json", manifest),
        ("hostfs/etc/etcd/etcd.conf", "ETCD_NAME=default\n"),
    ])
    .layer(Layer::gzip().dir("exports/hostfs/etc/cni", 0o755).dir("exports/hostfs/etc/cni/net.d", 0o755))
}

/// qemu-guest-agent's shape: OCI 1.0.0-rc3, a flat capability list under `process`, and device
/// nodes listed in `linux.devices`.
fn asc_flat_process_capabilities() -> Image {
    let mut mounts = runc_mounts();
    mounts.push(greeting_mount());
    let config = json!({
        "ociVersion": "1.0.0-rc3",
        "platform": {"os": "linux", "arch": "amd64"},
        "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["/usr/bin/run.sh"], "env": env(), "cwd": "/",
                    "capabilities": ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_KILL", "CAP_SETUID", "CAP_SETGID"],
                    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]},
        "root": {"path": "rootfs", "readonly": true},
        "mounts": mounts,
        "hooks": {},
        "linux": {
            "resources": {"devices": [{"allow": true, "access": "rwm"}]},
            "namespaces": [{"type": "mount"}],
            "devices": [{"path": "/dev/test-zero", "type": "c", "major": 1, "minor": 5, "fileMode": 8630, "uid": 0, "gid": 0}]
        }
    });
    let service =
        "[Unit]\nDescription=QEMU Guest Agent-like\n\n[Service]\nExecStart=$EXEC_START\nExecStop=$EXEC_STOP\n\
        Restart=on-failure\nWorkingDirectory=$DESTDIR\n\n[Install]\nWantedBy=multi-user.target\n";
    shape_image(&[
        ("config.json.template", &template_text(&config, &[])),
        ("service.template", service),
        ("tmpfiles.template", TMPFILES_RUN_DIR),
        ("manifest.json", MANIFEST_DEFAULTS),
    ])
}

/// flannel's shape: its own hostname, masked and read-only paths, ipc/uts/mount namespaces, unit
/// ordering from variables (`After=$AFTER`, `RequiredBy=$REQUIRED_BY`), a tmpfiles `r` line and
/// an empty host directory.
fn asc_flannel_like() -> Image {
    let mut mounts = runc_mounts();
    mounts.push(greeting_mount());
    let config = json!({
        "ociVersion": "1.0.0",
        "platform": {"os": "linux", "arch": "amd64"},
        "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["/usr/bin/run.sh"], "env": env(), "cwd": "/",
                    "noNewPrivileges": false, "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                    "capabilities": {"bounding": ["CAP_NET_ADMIN", "CAP_KILL"], "effective": ["CAP_NET_ADMIN", "CAP_KILL"],
                                     "permitted": ["CAP_NET_ADMIN", "CAP_KILL"], "inheritable": ["CAP_NET_ADMIN", "CAP_KILL"],
                                     "ambient": ["CAP_NET_ADMIN", "CAP_KILL"]}},
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "flannel",
        "mounts": mounts,
        "hooks": {},
        "linux": {
            "resources": {"devices": [{"allow": true, "access": "rwm"}]},
            "namespaces": [{"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/kcore", "/proc/latency_stats", "/proc/timer_stats", "/proc/sched_debug"],
            "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sysrq-trigger"]
        }
    });
    let service = "[Unit]\nDescription=Flanneld-like overlay address etcd agent\nAfter=network.target\n\
        After=network-online.target\nWants=network-online.target\nAfter=$AFTER\nBefore=$BEFORE\n\n\
        [Service]\nExecStart=$EXEC_START\nExecStop=$EXEC_STOP\nRestart=on-failure\nWorkingDirectory=$DESTDIR\n\n\
        [Install]\nWantedBy=multi-user.target\nRequiredBy=$REQUIRED_BY\n";
    let manifest = r#"{"version": "1.0", "defaultValues": {"PORT": "8285", "RECEIVER": "flannel",
        "AFTER": "network.target", "BEFORE": "multi-user.target", "REQUIRED_BY": "multi-user.target"}}"#;
    shape_image(&[
        ("config.json.template", &template_text(&config, &[])),
        ("service.template", service),
        (
            "tmpfiles.template",
            "D    ${RUN_DIRECTORY}/${NAME}   0700 - - - -\nr    /etc/flanneld-stale-$NAME.conf - - - - -\n",
        ),
        ("manifest.json", manifest),
    ])
    .layer(Layer::gzip().dir("exports/hostfs/etc/flanneld", 0o755))
}

/// azure's shape: only `exports/service.template`, whose ExecStart runs a command itself from
/// the rootfs directory; no config template and no manifest.
fn asc_unit_only() -> Image {
    let service =
        "[Unit]\nDescription=Agent-like service\nWants=network-online.target\nAfter=network-online.target\n\n\
        [Service]\nType=simple\nWorkingDirectory=${DESTDIR}/rootfs\nRuntimeDirectory=${NAME}\n\
        ExecStart=/bin/sh -c 'pwd > /run/${NAME}/greeting; exec sleep 100000'\nRestart=always\nRestartSec=5\n\n\
        [Install]\nWantedBy=multi-user.target\n";
    shape_image(&[("service.template", service)]).cmd(&["/bin/true"])
}

/// The `atomic.run=once` shape of atomic's `Dockerfile.runonce`: OCI 0.6.0-dev, a writable root,
/// its own hostname and network namespace, no unit.
fn atomic_runonce() -> Image {
    let config = json!({
        "ociVersion": "0.6.0-dev",
        "platform": {"os": "linux", "arch": "amd64"},
        "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["/usr/bin/run.sh"],
                    "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm",
                            "NAME=$NAME", "RECEIVER=$RECEIVER"], "cwd": "/"},
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "acme",
        "mounts": runc_mounts(),
        "hooks": {},
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "network"}, {"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}]
        }
    });
    Image::new()
        .layer(busybox_layer())
        .layer(
            Layer::gzip()
                .dir("usr", 0o755)
                .dir("usr/bin", 0o755)
                .file(
                    "usr/bin/run.sh",
                    "#!/bin/sh\necho \"HI $RECEIVER from $NAME on $(hostname)\"\ntouch /written\n",
                    0o755,
                )
                .file("exports/config.json.template", template_text(&config, &[]), 0o644)
                .file("exports/manifest.json", r#"{"version": "1.0", "defaultValues": {}}"#, 0o644),
        )
        .label("atomic.run", "once")
        .label("atomic.type", "system")
}

/// A busybox image with `/usr/bin/run.sh` and the given `/exports` files.
fn shape_image(exports: &[(&str, &str)]) -> Image {
    busybox_service_image(exports).layer(Layer::gzip().dir("usr", 0o755).dir("usr/bin", 0o755).file(
        "usr/bin/run.sh",
        RUN_SH,
        0o755,
    ))
}

/// How one service shape is checked.
struct Shape {
    name: &'static str,
    image: Image,
    /// `--set` values the install needs.
    install_sets: &'static [&'static str],
    /// Host file holding what the service wrote, and what it must say after install.
    greeting_file: &'static str,
    first: &'static str,
    /// Host paths the install must create (and the uninstall remove).
    host_paths: &'static [&'static str],
}

fn shapes() -> Vec<Shape> {
    vec![
        Shape {
            name: "atomic-system",
            image: atomic_system(),
            install_sets: &["RECEIVER=Pluto"],
            greeting_file: "/run/atomic-system/greeting",
            first: "hello Pluto port=8081 name=atomic-system",
            host_paths: &[],
        },
        Shape {
            name: "atomic-system-update",
            image: atomic_system_update(),
            install_sets: &["RECEIVER=Pluto", "VAR_WITH_NO_DEFAULT=set"],
            greeting_file: "/run/atomic-system-update/greeting",
            first: "hello Pluto port=8081",
            host_paths: &[],
        },
        Shape {
            name: "atomic-system-hostfs",
            image: atomic_system_hostfs(),
            install_sets: &["RECEIVER=Venus"],
            greeting_file: "/run/atomic-system-hostfs/greeting",
            first: "hello Venus port=8081",
            host_paths: &[
                "/usr/local/lib/secret-message",
                "/usr/local/lib/secret-message-template",
                "/usr/local/lib/renamed-atomic-system-hostfs",
                "/usr/local/placeholder-lib",
                "/broken-symlink",
            ],
        },
        Shape {
            name: "asc-current",
            image: asc_current(),
            install_sets: &[
                r#"ADDTL_MOUNTS=, {"type": "bind", "source": "/var/lib/asc-current", "destination": "/srv/extra", "options": ["rbind", "ro"]}"#,
            ],
            greeting_file: "/run/asc-current/greeting",
            first: "hello etcd port=2379 name=asc-current\nextra-mount=yes",
            host_paths: &["/etc/asc-current/etcd.conf", "/etc/cni/net.d"],
        },
        Shape {
            name: "asc-flat-caps",
            image: asc_flat_process_capabilities(),
            install_sets: &[],
            greeting_file: "/run/asc-flat-caps/greeting",
            first: "hello World port=8081 name=asc-flat-caps\ndevice=yes",
            host_paths: &[],
        },
        Shape {
            name: "asc-flannel-like",
            image: asc_flannel_like(),
            install_sets: &[],
            greeting_file: "/run/asc-flannel-like/greeting",
            first: "hello flannel port=8285",
            host_paths: &["/etc/flanneld"],
        },
        Shape {
            name: "asc-unit-only",
            image: asc_unit_only(),
            install_sets: &[],
            greeting_file: "/run/asc-unit-only/greeting",
            first: "/var/lib/sysctr/deployments/asc-unit-only.0/rootfs",
            host_paths: &[],
        },
    ]
}

fn wait_greeting(host: &TestHost, shape: &Shape, expected: &str) {
    wait_for(
        &format!("{} to write '{expected}'", shape.name),
        Duration::from_secs(20),
        Duration::from_millis(200),
        || Ok(read_in_host(host, shape.greeting_file).filter(|g| g.contains(expected))),
    )
    .unwrap_or_else(|e| {
        let unit = format!("{}.service", shape.name);
        let look = |argv: &[&str]| host.exec(argv).map(|o| describe_output(&o)).unwrap_or_default();
        panic!(
            "{e:#}\nfound: {:?}\n{}\nrunc list: {}\nprocesses: {}",
            read_in_host(host, shape.greeting_file),
            host.journal(&unit),
            look(&["runc", "list"]),
            look(&["ps", "-ef"]),
        )
    });
}

/// A file as the host sees it: `/run` is the host's own tmpfs, not in the overlay seen from here.
fn read_in_host(host: &TestHost, path: &str) -> Option<String> {
    host.exec(&["cat", path])
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn host_has(host: &TestHost, path: &str) -> bool {
    std::fs::symlink_metadata(host.root().join(path.trim_start_matches('/'))).is_ok()
}

/// Removes `path` from the test host, so that an install that must create it starts without it:
/// the hosts are overlays of this machine's `/`, where a package may have made it (podman's makes
/// `/etc/cni/net.d`). Only the host's overlay changes, never this machine.
fn clear_on_host(host: &TestHost, path: &str) -> Result<()> {
    let on_host = host.root().join(path.trim_start_matches('/'));
    match std::fs::symlink_metadata(&on_host) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&on_host),
        Ok(_) => std::fs::remove_file(&on_host),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
    .with_context(|| format!("removing {path} from the test host"))
}

#[test]
fn every_shape_of_atomic_images_installs_updates_rolls_back_and_uninstalls() -> Result<()> {
    let setup = Setup::new();
    let host = TestHost::boot()?;
    for shape in shapes() {
        let image = setup.push(&shape.image, &format!("compat/{}", shape.name));
        for path in shape.host_paths {
            clear_on_host(&host, path)?;
            assert!(!host_has(&host, path), "{path} exists before {} is installed", shape.name);
        }
        let before = snapshot(&host);
        let unit = format!("{}.service", shape.name);

        let mut install = vec!["install", "--now", "--name", shape.name];
        for set in shape.install_sets {
            install.extend(["--set", set]);
        }
        install.push(&image);
        let out = host.run_sysctr(&install)?;
        assert!(out.status.success(), "{}: {}\n{}", shape.name, describe_output(&out), host.journal(&unit));
        assert_eq!(unit_property(&host, &unit, "ActiveState"), "active", "{}", shape.name);
        wait_greeting(&host, &shape, shape.first);
        for path in shape.host_paths {
            assert!(host_has(&host, path), "{}: {path} not installed", shape.name);
        }

        sysctr_ok(&host, &["update", "--set", "RECEIVER=Charon", shape.name]);
        assert_eq!(active_slot(&host, shape.name), format!("{}.1", shape.name));
        wait_active(&host, &unit);
        let updated = if shape.name == "asc-unit-only" { "asc-unit-only.1/rootfs" } else { "hello Charon" };
        wait_greeting(&host, &shape, updated);

        sysctr_ok(&host, &["rollback", shape.name]);
        assert_eq!(active_slot(&host, shape.name), format!("{}.0", shape.name));
        wait_active(&host, &unit);
        wait_greeting(&host, &shape, shape.first);

        sysctr_ok(&host, &["uninstall", shape.name]);
        assert_eq!(unit_property(&host, &unit, "LoadState"), "not-found", "{}", shape.name);
        for path in shape.host_paths {
            assert!(!host_has(&host, path), "{}: {path} left after uninstall", shape.name);
        }
        assert_same(&before, &snapshot(&host), &format!("after uninstalling {}", shape.name));
    }
    Ok(())
}

#[test]
fn what_atomic_images_need_rewritten_or_set_is_said() -> Result<()> {
    let setup = Setup::new();
    let host = TestHost::boot()?;

    // The 0.3.0 config's legacy shapes are rewritten, said at install and kept in the record. (Not
    // named `legacy`: Debian's systemd ships /usr/lib/tmpfiles.d/legacy.conf, which that would mask.)
    let image = setup.push(&atomic_system(), "compat/atomic-system");
    let out = host.run_sysctr(&["install", "--name", "legacy-config", &image])?;
    assert!(out.status.success(), "{}", describe_output(&out));
    let notes = String::from_utf8_lossy(&out.stderr);
    assert!(
        notes.contains("note: config.json rewritten for this runc: linux.seccomp had no default action"),
        "{notes}"
    );
    assert!(notes.contains("linux.capabilities (OCI 0.x) moved to process.capabilities"), "{notes}");
    let info: Value =
        serde_json::from_str(&host_file(&host, "/var/lib/sysctr/deployments/legacy-config/info").unwrap())?;
    assert_eq!(
        info["config_rewrites"],
        json!(["capabilities-moved-to-process", "rlimits-moved-to-process", "empty-seccomp-removed"])
    );
    let config: Value =
        serde_json::from_str(&host_file(&host, "/var/lib/sysctr/deployments/legacy-config/config.json").unwrap())?;
    let bounding = config["process"]["capabilities"]["bounding"].as_array().unwrap();
    assert!(bounding.contains(&json!("CAP_SYS_ADMIN")), "ALL_PROCESS_CAPABILITIES went into the moved set");
    sysctr_ok(&host, &["uninstall", "legacy-config"]);

    // A variable with no default is named, as atomic's tests expect.
    let image = setup.push(&atomic_system_update(), "compat/atomic-system-update");
    let err = sysctr_err(&host, &["install", "--set", "RECEIVER=Pluto", &image]);
    assert!(err.contains("unreplaced value for: 'VAR_WITH_NO_DEFAULT'"), "{err}");

    // The contract still holds: a writable root is refused for a service.
    let writable = shape_image(&[(
        "config.json.template",
        r#"{"root": {"path": "rootfs", "readonly": false}, "process": {"args": ["/bin/sh"]}}"#,
    )]);
    let image = setup.push(&writable, "compat/writable");
    let err = sysctr_err(&host, &["install", &image]);
    assert!(err.contains("root.readonly must be true"), "{err}");
    Ok(())
}

/// Lists what a run may leave behind: units, deployments, bundles, mounts.
fn run_leftovers(host: &TestHost) -> Vec<String> {
    let mut found = Vec::new();
    for dir in [
        "var/lib/sysctr/run",
        "var/lib/sysctr/deployments/Saturn",
        "var/lib/sysctr/deployments/Saturn.0",
        "etc/systemd/system/Saturn.service",
    ] {
        if std::fs::symlink_metadata(host.root().join(dir)).is_ok() {
            found.push(dir.to_string());
        }
    }
    let mounts = host.exec_ok(&["cat", "/proc/self/mounts"]).unwrap();
    found.extend(mounts.lines().filter(|l| l.contains("sysctr-run")).map(str::to_string));
    let containers = host.exec_ok(&["runc", "list", "-q"]).unwrap();
    found.extend(containers.lines().filter(|l| l.starts_with("sysctr-run")).map(str::to_string));
    found
}

#[test]
fn run_once_images_run_at_install_and_leave_nothing_even_when_interrupted() -> Result<()> {
    let setup = Setup::new();
    let host = TestHost::boot()?;
    let image = setup.push(&atomic_runonce(), "compat/atomic-runonce");

    // As atomic did: install runs it once in the foreground, with the image's own config.
    let out = host.run_sysctr(&["install", "--name", "Saturn", "--set", "RECEIVER=Pluto", &image])?;
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "HI Pluto from Saturn on acme");
    assert_eq!(run_leftovers(&host), Vec::<String>::new());
    assert!(json_items(sysctr_ok(&host, &["list", "--json"]).as_bytes(), "ContainerList").is_empty());

    // `run` takes the same values and a command in place of the image's.
    let out = host.run_sysctr(&["run", "--set", "RECEIVER=Pluto", &image, "echo", "Hello", "World"])?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Hello World", "{}", describe_output(&out));

    // apply cannot keep such an image installed.
    let file = host.root().join("var/tmp/once.toml");
    std::fs::write(&file, format!("[[container]]\nname = \"once\"\nimage = \"{image}\"\n"))?;
    let err = sysctr_err(&host, &["apply", "/var/tmp/once.toml"]);
    assert!(err.contains("atomic.run=once") && err.contains("container 'once'"), "{err}");

    // SIGTERM to sysctr reaches the container, whose exit status becomes sysctr's; the bundle,
    // the mounts and the runtime state are gone after.
    let bin = sysctr_bin();
    let script = format!(
        "{} run --set RECEIVER=x {image} /bin/sh -c 'trap \"echo stopping; exit 5\" TERM; echo ready; sleep 1000 & wait' & \
         echo $! > /var/tmp/run.pid; wait $!",
        bin.display()
    );
    let mut child = host.command(&["/bin/sh", "-c", &script]).stdout(Stdio::piped()).spawn()?;
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    while !seen.contains("ready") {
        let n = stdout.read(&mut buf)?;
        assert!(n > 0, "the container ended before it was ready: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let pid = host_file(&host, "/var/tmp/run.pid").unwrap();
    host.exec_ok(&["kill", "-TERM", pid.trim()])?;
    let status = child.wait()?;
    stdout.read_to_string(&mut seen)?;
    assert_eq!(status.code(), Some(5), "{seen}");
    assert!(seen.contains("stopping"), "{seen}");
    assert_eq!(run_leftovers(&host), Vec::<String>::new());

    // A container killed by a signal (SIGKILL, from outside its namespace) exits 128+N.
    let script = format!(
        "{} run --set RECEIVER=x {image} /bin/sh -c 'echo ready; sleep 1000' & echo $! > /var/tmp/run.pid; wait $!",
        bin.display()
    );
    let mut child = host.command(&["/bin/sh", "-c", &script]).stdout(Stdio::piped()).spawn()?;
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    while !seen.contains("ready") {
        let n = stdout.read(&mut buf)?;
        assert!(n > 0, "the container ended before it was ready: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let containers = host.exec_ok(&["runc", "list", "-q"])?;
    let id = containers.lines().find(|l| l.starts_with("sysctr-run")).expect("the run's container").to_string();
    let state: Value = serde_json::from_str(&host.exec_ok(&["runc", "state", &id])?)?;
    host.exec_ok(&["kill", "-KILL", &state["pid"].to_string()])?;
    assert_eq!(child.wait()?.code(), Some(137));
    assert_eq!(run_leftovers(&host), Vec::<String>::new());
    Ok(())
}
