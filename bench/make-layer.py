"""Writes an OCI image layout DIR holding one image, tagged `bench`, of a single gzip layer
of SHAPE, streamed (the tar is never held whole, in memory or on disk):

  zeros N        one file of N bytes of zeros
  files N        N small files of distinct content, 2,000 to a directory
  deep DEPTH N   N chains of directories DEPTH levels deep (counting the file at the end of each)
  entries N      N empty files in one directory, by name only (for entry-count caps)

Usage: python3 make-layer.py DIR SHAPE ARGS...
"""
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile


class Hashing(io.RawIOBase):
    """A write-only stream that hashes and counts what goes through it, then passes it on."""

    def __init__(self, out):
        self.out, self.sha, self.size = out, hashlib.sha256(), 0

    def writable(self):
        return True

    def write(self, data):
        self.sha.update(data)
        self.size += len(data)
        self.out.write(data)
        return len(data)


class Zeros(io.RawIOBase):
    def __init__(self, size):
        self.left = size

    def readable(self):
        return True

    def readinto(self, buf):
        n = min(len(buf), self.left)
        buf[:n] = bytes(n)
        self.left -= n
        return n


def entries(shape, args):
    """(TarInfo, content bytes or a file object or None) of the layer, in order."""
    if shape == "zeros":
        size = int(args[0])
        info = tarfile.TarInfo("zeros")
        info.size = size
        yield info, Zeros(size)
    elif shape in ("files", "entries"):
        count = int(args[0])
        for i in range(count):
            name = f"d{i // 2000:04d}/f{i:07d}" if shape == "files" else f"e/{i:07d}"
            data = f"{i}\n".encode() if shape == "files" else b""
            info = tarfile.TarInfo(name)
            info.size = len(data)
            yield info, data
    elif shape == "deep":
        depth, count = int(args[0]), int(args[1])
        for branch in range(count):
            path = f"b{branch}/" + "d/" * (depth - 2) + "leaf"
            data = f"{branch}\n".encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            yield info, data
    else:
        sys.exit(f"unknown shape {shape}")


def main():
    out_dir, shape, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    blobs = os.path.join(out_dir, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    partial = os.path.join(blobs, "partial")
    with open(partial, "wb") as raw:
        blob = Hashing(raw)
        with gzip.GzipFile(fileobj=blob, mode="wb", mtime=0, compresslevel=6) as gz:
            tar_stream = Hashing(gz)
            with tarfile.open(fileobj=tar_stream, mode="w|", format=tarfile.GNU_FORMAT) as tar:
                for info, content in entries(shape, args):
                    info.mtime = 0
                    info.mode = 0o644
                    if isinstance(content, bytes):
                        content = io.BytesIO(content)
                    tar.addfile(info, content)
                    tar.members.clear()  # a streamed TarFile still lists every member
    digest = blob.sha.hexdigest()
    os.rename(partial, os.path.join(blobs, digest))

    def write_blob(data):
        d = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, d), "wb") as f:
            f.write(data)
        return {"digest": "sha256:" + d, "size": len(data)}

    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + tar_stream.sha.hexdigest()]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **write_blob(config)},
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": "sha256:" + digest,
            "size": blob.size,
        }],
    }).encode()
    with open(os.path.join(out_dir, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        **write_blob(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "bench"},
    }]}
    with open(os.path.join(out_dir, "index.json"), "w") as f:
        json.dump(index, f)
    print(f"{shape} {' '.join(args)}: tar {tar_stream.size} bytes, blob {blob.size} bytes")


if __name__ == '__main__':
    main()
