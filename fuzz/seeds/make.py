#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/TARGET/seed-*.

The seeds are committed; run this again only to change them. Layers are real tar streams
written by Python's tarfile and GNU tar, compressed by gzip and the zstd tool; the text seeds
are the shapes the example images and the public atomic images use.
"""
import gzip
import io
import json
import os
import pathlib
import shutil
import subprocess
import tarfile
import tempfile

HERE = pathlib.Path(__file__).resolve().parent.parent
CORPUS = HERE / "corpus"
EXAMPLES = HERE.parent / "examples"
FIELD = "\x1f"
LAYER_SEPARATOR = b"\n--sysctr-fuzz-layer--\n"


def write(target, name, data):
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (directory / f"seed-{name}").write_bytes(data)


def trim(tar_bytes):
    """Drops tarfile's record padding, keeping the two zero blocks that end an archive."""
    end = len(tar_bytes.rstrip(b"\0"))
    end = (end + 511) // 512 * 512
    return tar_bytes[:end] + b"\0" * 1024


def tar(entries, fmt=tarfile.GNU_FORMAT, pax_headers=None):
    """entries: (name, kind, extra) with kind file/dir/symlink/hardlink/fifo/chr."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, pax_headers=pax_headers or {}) as t:
        for name, kind, extra in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.mode = 0o755 if kind == "dir" else 0o644
            data = None
            if kind == "file":
                data = extra.get("data", b"") if extra else b""
                info.size = len(data)
                info.mode = extra.get("mode", 0o644) if extra else 0o644
                if extra and "pax" in extra:
                    info.pax_headers = extra["pax"]
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                if extra and "mode" in extra:
                    info.mode = extra["mode"]
                if extra and "pax" in extra:
                    info.pax_headers = extra["pax"]
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = extra["target"]
            elif kind == "hardlink":
                info.type = tarfile.LNKTYPE
                info.linkname = extra["target"]
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            elif kind == "chr":
                info.type = tarfile.CHRTYPE
                info.devmajor, info.devminor = 1, 3
            if extra and "uid" in extra:
                info.uid = info.gid = extra["uid"]
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return trim(buf.getvalue())


def zstd(data, *args):
    return subprocess.run(["zstd", "-q", "-c", *args], input=data, stdout=subprocess.PIPE, check=True).stdout


def layer(mode, blob):
    return bytes([mode]) + blob


def layers(*blobs):
    return LAYER_SEPARATOR.join(blobs)


def layer_seeds():
    basic = tar([
        ("etc", "dir", None),
        ("etc/hostname", "file", {"data": b"fuzz\n"}),
        ("etc/passwd", "file", {"data": b"root:x:0:0::/root:/bin/sh\n", "uid": 0}),
        ("usr/bin/tool", "file", {"data": b"#!/bin/sh\necho hi\n", "mode": 0o4755, "uid": 1000}),
        ("usr/bin/tool-link", "hardlink", {"target": "usr/bin/tool"}),
        ("usr/bin/sh", "symlink", {"target": "/bin/busybox"}),
        ("run/fifo", "fifo", None),
        ("dev/null", "chr", None),
        ("home/user", "dir", {"mode": 0o700, "uid": 1000}),
    ])
    long_name = "usr/share/" + "long-directory-name/" * 8 + "file.txt"
    pax = tar([
        (long_name, "file", {"data": b"long\n"}),
        ("usr/bin/ping", "file", {"data": b"ping", "pax": {
            "SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00" + "\x00" * 12,
            "SCHILY.xattr.user.origin": "fuzz",
        }}),
        ("var/lib/data", "dir", {"pax": {"SCHILY.xattr.user.dir": "yes"}}),
        ("link-to-long", "symlink", {"target": long_name}),
    ], fmt=tarfile.PAX_FORMAT, pax_headers={"comment": "a global header, as some images carry"})
    lower = tar([
        ("a", "file", {"data": b"a"}),
        ("b", "file", {"data": b"b"}),
        ("d", "dir", None),
        ("d/x", "file", {"data": b"x"}),
        ("d/fifo", "fifo", None),
        ("e/deep/er", "file", {"data": b"implied directories"}),
        ("s", "dir", None),
        ("s/t", "file", {"data": b"t"}),
    ])
    upper = tar([
        (".wh.a", "file", None),
        ("d/.wh..wh..opq", "file", None),
        ("d/y", "file", {"data": b"y"}),
        ("e", "dir", {"mode": 0o750}),
        ("s", "symlink", {"target": "d"}),
        ("b", "dir", None),
        (".wh.", "file", None),
    ])
    top = tar([
        ("d/.wh.y", "file", None),
        ("s/.wh.t", "file", None),
        ("a", "fifo", None),
    ])
    write("layer", "tar", layer(0, basic))
    write("layer", "pax", layer(0, pax))
    write("layer", "gzip", layer(1, gzip.compress(basic, mtime=0)))
    half = len(pax) // 2
    write("layer", "gzip-members", layer(1, gzip.compress(pax[:half], mtime=0) + gzip.compress(pax[half:], mtime=0)))
    write("layer", "zstd", layer(2, zstd(basic)))
    # zstd:chunked: several frames and a skippable frame.
    skippable = b"\x50\x2a\x4d\x18" + (8).to_bytes(4, "little") + b"chunked!"
    write("layer", "zstd-frames", layer(2, zstd(pax[:half]) + skippable + zstd(pax[half:], "--no-check")))
    write("layer", "whiteouts", layers(layer(0, lower), layer(0, upper), layer(0, top)))
    write("layer", "whiteouts-gzip-zstd", layers(layer(1, gzip.compress(lower, mtime=0)), layer(2, zstd(upper))))
    # GNU tar's own formats: sparse files (GNU 'S' and PAX GNU.sparse.*), long names.
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp) / "root"
        (root / "var").mkdir(parents=True)
        with open(root / "var/sparse", "wb") as f:
            f.write(b"head")
            f.seek(64 * 1024)
            f.write(b"tail")
        (root / ("x" * 120)).write_bytes(b"gnu long name")
        for fmt, name in [("gnu", "gnu-sparse"), ("posix", "pax-sparse")]:
            out = subprocess.run(
                ["tar", "--sparse", f"--format={fmt}", "--owner=0", "--group=0", "--mtime=@0", "-C", str(root), "-cf", "-", "."],
                stdout=subprocess.PIPE, check=True).stdout
            write("layer", name, layer(0, trim(out)))


def read(path):
    return (EXAMPLES / path).read_text()


def template_seeds():
    values = FIELD.join([
        "NAME=hello", "DESTDIR=/var/lib/sysctr/deployments/hello.0", "EXEC_START=/usr/bin/runc --systemd-cgroup run 'hello'",
        "EXEC_STOP=/usr/bin/runc --systemd-cgroup kill 'hello'", "EXEC_STARTPRE=", "EXEC_STOPPOST=", "UUID=0123",
        "RECEIVER=Pluto", "ADDTL_MOUNTS=", "STATE_DIRECTORY=/var/lib", "RUN_DIRECTORY=/run",
    ])
    for image in ["hello", "etcd", "containerd", "flannel-standin"]:
        for name in ["service.template", "tmpfiles.template", "config.json.template"]:
            write("template", f"{image}-{name}", read(f"{image}/rootfs/exports/{name}") + FIELD + values)
    write("template", "escapes", "$$ ${NAME} $NAME_x ${a}b $" + FIELD + "NAME=x" + FIELD + "a=\\")
    write("template", "json-string", '{"env": ["A=$A", "B=\\"${B}\\""], "n": $N}' + FIELD + 'A=x"y' + FIELD + "B=b" + FIELD + "N=1")
    write("template", "continuation", "ExecStart=/bin/x $ARG\nUser=$USER\r\n" + FIELD + "ARG=a\\" + FIELD + "USER=root")


def manifest_seeds():
    for image in ["hello", "etcd", "containerd", "flannel-standin"]:
        write("manifest", image, read(f"{image}/rootfs/exports/manifest.json") + FIELD + "PORT=2379")
    write("manifest", "rename-and-template", json.dumps({
        "version": "1.0",
        "defaultValues": {"PORT": 8080, "DEBUG": False, "EMPTY": None},
        "renameFiles": {"/etc/sysctr-fuzz": "/etc/${NAME}", "/usr/local/bin/fuzzctl": "/usr/local/bin/${NAME}ctl"},
        "installedFilesTemplate": ["/etc/sysctr-fuzz/fuzz.conf"],
        "noContainerService": False,
    }) + FIELD + "STATE_DIRECTORY=/srv")
    write("manifest", "rename-escape", json.dumps({"renameFiles": {"/etc/fuzz-link": "/etc/$SUB"}}) + FIELD + "SUB=../x")


def reference_seeds():
    refs = [
        "127.0.0.1:5000/demo/hello:latest", "docker://registry.lan:5000/k8s/etcd:3.4", "busybox",
        "alpine:3.18@sha256:" + "0123456789abcdef" * 4, "oci:/srv/images/etcd:3.4", "oci:./etcd",
        "oci-archive:/srv/etcd.tar:v1", "docker-archive:/srv/all.tar:registry.lan:5000/k8s/etcd:3.4",
        "docker-archive:/srv/all.tar:@1", "containers-storage:alpine", "[::1]:5000/x", "etcd-3.4",
        "sha256:" + "a" * 64, "RECEIVER=Pluto=Charon",
    ]
    for i, ref in enumerate(refs):
        write("reference", f"{i:02}", ref)


def registries_conf_seeds():
    write("registries_conf", "insecure", 'unqualified-search-registries = ["docker.io"]\n\n[[registry]]\nlocation = "reg.lan:5000"\ninsecure = true\n\n[[registry]]\nprefix = "reg.lan:5000/mirror"\nlocation = "mirror.lan"\ninsecure = true\n' + FIELD + "reg.lan:5000")
    write("registries_conf", "v1", '[registries.search]\nregistries = ["docker.io"]\n[registries.insecure]\nregistries = ["old.lan"]\n' + FIELD + "old.lan")
    write("registries_conf", "loopback", '[[registry]]\nlocation = "localhost:5000"\n' + FIELD + "[::1]:5000")


def signature_seeds():
    claim = ('{"critical": {"type": "atomic container signature", "image": {"docker-manifest-digest": "sha256:'
             + "ab" * 32 + '"}, "identity": {"docker-reference": "reg.lan:5000/team/app:v1"}}, "optional": {}}')
    identity = '{"type": "remapIdentity", "prefix": "reg.lan:5000/team", "signedPrefix": "quay.io/team"}'
    registries_d = "docker:\n  reg.lan:5000/team:\n    lookaside: file:///var/lib/sigs\ndefault-docker:\n  use-sigstore-attachments: true\n"
    # A signed message as skopeo writes it is kept in corpus/signature/skopeo-message (binary).
    write("signature", "claim", FIELD + claim + FIELD + identity + FIELD + registries_d)
    write("signature", "cosign", FIELD + claim.replace("atomic", "cosign").replace("signature\"", "image signature\"")
          + FIELD + '{"type": "matchRepository"}' + FIELD + "default-docker: {}\n")


def spec_seeds():
    hello = read("hello/rootfs/exports/config.json.template").replace("$ADDTL_MOUNTS", "").replace("$", "")
    write("spec_check", "hello", hello)
    write("spec_check", "atomic-0.3", json.dumps({
        "ociVersion": "0.3.0", "platform": {"os": "linux", "arch": "amd64"},
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": ["/usr/bin/run.sh"], "cwd": "/",
                    "capabilities": ["CAP_CHOWN", "CAP_KILL"]},
        "root": {"path": "rootfs", "readonly": True},
        "linux": {"capabilities": {"bounding": ["CAP_KILL"]}, "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                  "resources": {"oomScoreAdj": 100, "devices": [{"allow": False, "access": "rwm"}]},
                  "apparmorProfile": "unconfined", "selinuxProcessLabel": "",
                  "seccomp": {"defaultAction": "", "architectures": None, "syscalls": [{"name": "kill", "action": "SCMP_ACT_ALLOW"}]},
                  "devices": None},
    }))
    write("spec_check", "empty-seccomp", json.dumps({
        "root": {"path": "rootfs", "readonly": True}, "process": {"args": ["/bin/sh"]},
        "linux": {"seccomp": {"defaultAction": "", "syscalls": []}},
    }))
    passwd = "root:x:0:0:root:/root:/bin/sh\netcd:x:999:998::/var/lib/etcd:/sbin/nologin\n"
    group = "root:x:0:\netcd:x:998:\nwheel:x:10:etcd\n"
    write("spec_check", "image-config", json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"User": "etcd:wheel", "Env": ["PATH=/bin", "ETCD_DATA_DIR=/var/lib/etcd"],
                   "Entrypoint": ["/usr/bin/etcd"], "Cmd": ["--name", "default"], "WorkingDir": "/var/lib/etcd"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]},
    }) + FIELD + passwd + FIELD + group)
    write("spec_check", "image-config-uid", json.dumps({
        "architecture": "amd64", "os": "linux", "config": {"User": "1000:1000", "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": []},
    }))


def main():
    for target in ["layer", "template", "manifest", "reference", "registries_conf", "signature", "spec_check"]:
        directory = CORPUS / target
        if directory.exists():
            for old in directory.glob("seed-*"):
                old.unlink()
    layer_seeds()
    template_seeds()
    manifest_seeds()
    reference_seeds()
    registries_conf_seeds()
    signature_seeds()
    spec_seeds()


if __name__ == "__main__":
    main()
