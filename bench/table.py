"""Helpers of bench/table.sh.

  image DIR FILES BYTES [BUSYBOX]
      Writes an OCI image layout DIR holding two images of three gzip layers each, streamed:
      tag `v1`, and tag `v2`, which shares v1's first two layers and has a third of its own (same
      paths, other content). FILES files of about BYTES bytes in all, a third to a layer, half
      random bytes and half text, 500 files to a directory. BUSYBOX, if given, goes in the first
      layer as /bin/sh. Prints one line: the layers' digests (v1's three, then v2's third), then
      the total blob size and tar size of v1.
  small DIR TAG SEED BUSYBOX
      Adds to DIR a small one-layer image tagged TAG: BUSYBOX as /bin/sh and a file of SEED.
  served LOG FROM
      Sums the registry's access log (combined format) from line FROM on: prints the number of
      requests, the bytes written, and the bytes written for blob GETs, and the blobs fetched.
"""
import gzip
import hashlib
import importlib
import io
import json
import os
import random
import re
import sys
import tarfile


# The hashing stream of make-layer.py (a script, hence the import by name).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
Hashing = importlib.import_module('make-layer').Hashing


WORDS = ["etcd", "flannel", "node", "lease", "subnet", "10.1.0.0", "containerd", "runc", "overlay"]


def tree(layer, count, size, seed):
    """(path, bytes) of the files of one layer: COUNT files of SIZE bytes on average."""
    rng = random.Random(seed)
    for i in range(count):
        n = rng.randint(size // 4, size * 7 // 4)
        if i % 2:
            data = rng.randbytes(n)
        else:
            data = " ".join(rng.choice(WORDS) for _ in range(n // 6 + 1)).encode()[:n]
        yield f"data{layer}/d{i // 500:03d}/f{i:06d}", data


def write_layer(blobs, entries):
    """Writes one gzip tar layer of ENTRIES ((path, bytes, mode)) into BLOBS; returns
    (digest, size, diff_id, tar size)."""
    partial = os.path.join(blobs, "partial")
    dirs = set()
    with open(partial, "wb") as raw:
        blob = Hashing(raw)
        with gzip.GzipFile(fileobj=blob, mode="wb", mtime=0, compresslevel=6) as gz:
            tar_stream = Hashing(gz)
            with tarfile.open(fileobj=tar_stream, mode="w|", format=tarfile.GNU_FORMAT) as tar:
                for path, data, mode in entries:
                    parts = path.split("/")[:-1]
                    for depth in range(1, len(parts) + 1):
                        d = "/".join(parts[:depth])
                        if d not in dirs:
                            dirs.add(d)
                            info = tarfile.TarInfo(d)
                            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                            tar.addfile(info)
                    info = tarfile.TarInfo(path)
                    info.size, info.mode, info.mtime = len(data), mode, 0
                    tar.addfile(info, io.BytesIO(data))
                    tar.members.clear()
    digest = blob.sha.hexdigest()
    os.rename(partial, os.path.join(blobs, digest))
    return digest, blob.size, tar_stream.sha.hexdigest(), tar_stream.size


def write_blob(blobs, data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, d), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + d, "size": len(data)}


def add_image(out_dir, tag, layers):
    """Writes the config and manifest of LAYERS (write_layer's results) and tags it in the
    layout's index."""
    blobs = os.path.join(out_dir, "blobs", "sha256")
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh", "-c", "sleep 3600"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + l[2] for l in layers]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **write_blob(blobs, config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": "sha256:" + l[0], "size": l[1]} for l in layers],
    }).encode()
    index_path = os.path.join(out_dir, "index.json")
    index = {"schemaVersion": 2, "manifests": []}
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
    index["manifests"].append({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        **write_blob(blobs, manifest),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    })
    with open(os.path.join(out_dir, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    with open(index_path, "w") as f:
        json.dump(index, f)


def image(out_dir, files, total, busybox=None):
    blobs = os.path.join(out_dir, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    per_layer, size = files // 3, total // files
    shell = []
    if busybox:
        with open(busybox, "rb") as f:
            shell = [("bin/sh", f.read(), 0o755)]

    def layer(n, seed):
        return write_layer(blobs, shell * (n == 1) + [(p, d, 0o644) for p, d in tree(n, per_layer, size, seed)])

    v1 = [layer(1, 1), layer(2, 2), layer(3, 3)]
    v2 = v1[:2] + [layer(3, 33)]
    add_image(out_dir, "v1", v1)
    add_image(out_dir, "v2", v2)
    print(" ".join(l[0] for l in v1), v2[2][0], sum(l[1] for l in v1), sum(l[3] for l in v1))


def small(out_dir, tag, seed, busybox):
    blobs = os.path.join(out_dir, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    with open(busybox, "rb") as f:
        sh = f.read()
    add_image(out_dir, tag, [write_layer(blobs, [("bin/sh", sh, 0o755), (f"etc/seed-{seed}", f"{seed}\n".encode(), 0o644)])])


LINE = re.compile(r'"(\w+) (\S+) [^"]*" (\d{3}) (\d+|-)')


def served(log, start):
    requests = written = blob_bytes = 0
    fetched = []
    with open(log, errors="replace") as f:
        for number, line in enumerate(f, 1):
            m = LINE.search(line)
            if number < start or not m:
                continue
            method, path, _status, size = m.groups()
            size = 0 if size == "-" else int(size)
            requests += 1
            written += size
            if method == "GET" and "/blobs/" in path:
                blob_bytes += size
                fetched.append(path.rsplit(":", 1)[-1][:12])
    print(requests, written, blob_bytes, ",".join(fetched) or "-")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "image":
        image(args[0], int(args[1]), int(args[2]), args[3] if len(args) > 3 else None)
    elif cmd == "small":
        small(*args)
    elif cmd == "served":
        served(args[0], int(args[1]))
    else:
        sys.exit(__doc__)


main()
