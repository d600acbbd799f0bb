//! The system-container images of `examples/`, built from this machine's Debian binaries: the
//! hello demo, etcd, the flanneld stand-in and containerd.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use super::fixtures::busybox_layer;
use super::image::{push, Image, Layer};
use super::registry::Registry;
use super::{cmd_ok, sysctr_bin, wait_for, TestHost};

/// `examples/` of this repository.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// A layer holding a directory tree of this repository, modes kept.
pub fn layer_from_dir(root: &Path) -> Layer {
    fn add(layer: Layer, root: &Path, dir: &Path) -> Layer {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        let mut layer = layer;
        for path in entries {
            let relative = path.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            let mode =
                std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions()) & 0o7777;
            if path.is_dir() {
                layer = add(layer.dir(&relative, mode), root, &path);
            } else {
                layer = layer.file(&relative, std::fs::read(&path).unwrap(), mode);
            }
        }
        layer
    }
    add(Layer::gzip().created_by("examples/hello"), root, root)
}

/// The example image of `examples/hello`: busybox plus the hello service and its exports.
pub fn hello_image() -> Image {
    Image::new()
        .layer(busybox_layer())
        .layer(layer_from_dir(&examples_dir().join("hello/rootfs")))
        .label("atomic.type", "system")
}

/// An etcd image from Debian's etcd-server and etcd-client: the binaries, the C library they
/// load, and the exports of `examples/etcd` (etcdctl also goes to the host through hostfs).
pub fn etcd_image() -> Image {
    let binaries = Layer::gzip()
        .created_by("etcd binaries")
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .host_file("usr/bin/etcd", "/usr/bin/etcd", 0o755)
        .host_file("usr/bin/etcdctl", "/usr/bin/etcdctl", 0o755)
        .dir("lib", 0o755)
        .dir("lib/x86_64-linux-gnu", 0o755)
        .host_file("lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6", 0o755)
        .dir("lib64", 0o755)
        .host_file("lib64/ld-linux-x86-64.so.2", "/lib64/ld-linux-x86-64.so.2", 0o755)
        .dir("etc", 0o755)
        .file("etc/passwd", "root:x:0:0:root:/:/sbin/nologin\n", 0o644)
        .dir("var", 0o755)
        .dir("var/lib", 0o755)
        .dir("var/lib/etcd", 0o700)
        .dir("tmp", 0o1777);
    let exports = layer_from_dir(&examples_dir().join("etcd/rootfs"))
        .dir("exports/hostfs", 0o755)
        .dir("exports/hostfs/usr", 0o755)
        .dir("exports/hostfs/usr/local", 0o755)
        .dir("exports/hostfs/usr/local/bin", 0o755)
        .host_file("exports/hostfs/usr/local/bin/etcdctl", "/usr/bin/etcdctl", 0o755);
    Image::new().layer(binaries).layer(exports).label("atomic.type", "system")
}

/// Adds a binary of this machine and every library `ldd` says it loads, at the same paths.
fn with_host_binary(mut layer: Layer, path: &str, dirs: &mut std::collections::BTreeSet<String>) -> Layer {
    let ldd = cmd_ok(&["ldd", path]).unwrap_or_default();
    let libraries = ldd.lines().filter_map(|line| {
        let candidate = line.split("=>").last()?.split_whitespace().next()?;
        candidate.starts_with('/').then(|| candidate.to_string())
    });
    for file in std::iter::once(path.to_string()).chain(libraries) {
        let real = std::fs::canonicalize(&file).unwrap();
        let in_image = file.trim_start_matches('/').to_string();
        let mut parent = Path::new(&in_image).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            if dirs.insert(dir.to_string_lossy().into_owned()) {
                layer = layer.dir(&dir.to_string_lossy(), 0o755);
            }
            parent = dir.parent();
        }
        layer = layer.host_file(&in_image, real, 0o755);
    }
    layer
}

/// Binaries of this machine in one layer; directories are created in an order tar accepts.
fn binaries_layer(paths: &[&str]) -> Layer {
    let mut dirs = std::collections::BTreeSet::from(["bin".to_string(), "etc".to_string(), "tmp".to_string()]);
    let mut layer = Layer::gzip().created_by("binaries");
    for path in paths {
        layer = with_host_binary(layer, path, &mut dirs);
    }
    layer
}

/// The flanneld stand-in of `examples/flannel-standin`: busybox, etcdctl and systemd-notify.
pub fn flannel_image() -> Image {
    Image::new()
        .layer(busybox_layer())
        .layer(binaries_layer(&["/usr/bin/etcdctl", "/usr/bin/systemd-notify"]))
        .layer(layer_from_dir(&examples_dir().join("flannel-standin/rootfs")))
        .label("atomic.type", "system")
}

/// containerd of `examples/containerd`: Debian's containerd, runc and CNI plugins, on busybox.
pub fn containerd_image() -> Image {
    let mut paths = vec!["/usr/bin/containerd", "/usr/bin/containerd-shim-runc-v2", "/usr/sbin/runc"];
    let plugins = ["/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/loopback", "/usr/lib/cni/portmap"];
    paths.extend(plugins);
    Image::new()
        .layer(busybox_layer())
        .layer(binaries_layer(&paths))
        .layer(layer_from_dir(&examples_dir().join("containerd/rootfs")))
        .label("atomic.type", "system")
}

/// A socket-activated server: Debian's python3.11 (whose `_socket` and `_signal` are built in),
/// the `encodings` package it needs to start, and a script that answers each connection on the
/// socket systemd passed (fd 3) with one line naming what it was given. It ends on SIGTERM.
pub fn socket_server_image() -> Image {
    const SERVER: &str = r#"import _signal, _socket, posix
_signal.signal(15, lambda *_: posix._exit(0))
env = posix.environ
listener = _socket.socket(fileno=3)
while True:
    fd, _ = listener._accept()
    conn = _socket.socket(fileno=fd)
    conn.sendall(b"hello from fd 3, LISTEN_FDS=" + env.get(b"LISTEN_FDS", b"-") + b"\n")
    conn.close()
"#;
    let stdlib = "usr/lib/python3.11";
    let mut layer = binaries_layer(&["/usr/bin/python3.11"])
        .dir("usr/lib", 0o755)
        .dir(stdlib, 0o755)
        .dir(&format!("{stdlib}/lib-dynload"), 0o755)
        .dir(&format!("{stdlib}/encodings"), 0o755)
        .host_file(&format!("{stdlib}/os.py"), format!("/{stdlib}/os.py"), 0o644)
        .file("serve.py", SERVER, 0o644);
    for module in ["__init__", "aliases", "utf_8"] {
        let path = format!("{stdlib}/encodings/{module}.py");
        layer = layer.host_file(&path, format!("/{path}"), 0o644);
    }
    Image::new()
        .layer(busybox_layer())
        .layer(layer)
        .cmd(&["/usr/bin/python3.11", "-S", "-B", "/serve.py"])
        .label("atomic.type", "system")
}

/// Pushes the etcd, flannel and containerd images as `k8s/NAME:latest` and writes
/// `examples/k8s-node-bootstrap.toml`, pointed at `registry`, into `work`; returns its path.
pub fn prepare_node(registry: &Registry, work: &Path) -> Result<PathBuf> {
    for (image, repo) in [(etcd_image(), "etcd"), (flannel_image(), "flannel"), (containerd_image(), "containerd")] {
        let layout = work.join(repo);
        image.write_oci_layout(&layout, "latest")?;
        push(&layout, "latest", &registry.image_ref(&format!("k8s/{repo}:latest")))?;
    }
    let example = std::fs::read_to_string(examples_dir().join("k8s-node-bootstrap.toml"))?;
    let file = work.join("node.toml");
    std::fs::write(&file, example.replace("registry.lan:5000", &registry.addr()))?;
    Ok(file)
}

/// Runs `sysctr apply FILE` in the host and, as a node's bootstrap would, puts flannel's network
/// config into etcd as soon as etcd answers. Returns the output of `apply`.
pub fn apply_node(host: &TestHost, file: &Path) -> Result<Output> {
    // This machine enables Debian's own etcd and containerd, which the test host masks.
    host.exec_ok(&["systemctl", "unmask", "etcd.service", "containerd.service"])?;
    let apply = host
        .command(&[sysctr_bin().to_str().context("binary path")?, "apply", file.to_str().context("file path")?])
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    wait_for("etcd to take the network config", Duration::from_secs(120), Duration::from_millis(300), || {
        let put =
            host.exec(&["/usr/local/bin/etcdctl", "put", "/atomic.io/network/config", r#"{"Network":"10.1.0.0/16"}"#])?;
        Ok(put.status.success().then_some(()))
    })?;
    Ok(apply.wait_with_output()?)
}

/// Whether containerd's CRI plugin is loaded and healthy, asked through the host's `ctr`.
pub fn cri_serving(host: &TestHost) -> bool {
    host.exec(&["ctr", "plugins", "ls"])
        .map(|out| {
            String::from_utf8_lossy(&out.stdout).lines().any(|l| l.contains(" cri ") && l.trim_end().ends_with("ok"))
        })
        .unwrap_or(false)
}
