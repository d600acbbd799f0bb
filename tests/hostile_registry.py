#!/usr/bin/python3
"""A registry that misbehaves, for tests/integration/hostile_registry.rs. Standard library only.

Prints its port on the first line of stdout, then serves on 127.0.0.1 until killed. Each
repository is one way of misbehaving (see REPOS below); every answer closes its connection. GET
/stats gives the peak number of requests in flight: a request counts from its connection's accept
until the body of its answer starts being written (or the connection ends), not until the server
thread gets round to closing the connection, by when the client may already have the whole answer
and be on its next request.

  hostile_registry.py                       plain HTTP, the repositories below
  hostile_registry.py --tls CERT KEY --redirect-to http://HOST:PORT
                                            HTTPS, every request redirected to that plain-HTTP
                                            address, same path
"""

import argparse
import hashlib
import io
import json
import os
import platform
import re
import ssl
import sys
import tarfile
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MIB = 1024 * 1024

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def config_for(diff_ids):
    return json.dumps({
        "architecture": ARCH, "os": "linux", "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }).encode()


def manifest_for(config, layers):
    """`config`: (digest, size); `layers`: [(media type, digest, size)]."""
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config[0], "size": config[1]},
        "layers": [{"mediaType": t, "digest": d, "size": s} for t, d, s in layers],
    }).encode()


def one_file_tar(name, content):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


class Repo:
    """A manifest and blobs; `stream` answers override some of them."""

    def __init__(self, config, layers):
        self.config = config
        self.blobs = {digest(config): config}
        self.manifest = manifest_for((digest(config), len(config)), layers)
        self.streams = {}
        self.manifest_stream = None


def build_repos():
    repos = {}

    # 256 MiB of manifest, with no Content-Length: the reader must stop on its own.
    big = Repo(config_for([]), [])
    head = b'{"schemaVersion":2,"layers":['
    big.manifest_stream = lambda h: h.send_endless_or_long(
        OCI_MANIFEST, [head + b" " * (MIB - len(head))] + [b" " * MIB] * 255)
    repos["big-manifest"] = big

    # A config whose descriptor gives its first bytes only; the rest is 64 MiB of JSON whitespace,
    # and the descriptor's digest covers all of it, so only the size tells.
    small = config_for([])
    padded = small + b" " * (64 * MIB)
    big_config = Repo(small, [])
    big_config.blobs = {digest(padded): padded}
    big_config.manifest = manifest_for((digest(padded), len(small)), [])
    repos["big-config"] = big_config

    # A gzip layer that never ends: a tar header for a 4 GiB file, then random data forever
    # (stored deflate blocks, so it costs nothing to serve). The descriptor says 1 MiB.
    compressor = zlib.compressobj(0, zlib.DEFLATED, 31)
    header = tarfile.TarInfo("big")
    header.size = 4 << 30
    first = compressor.compress(header.tobuf(tarfile.USTAR_FORMAT)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    again = compressor.compress(os.urandom(MIB)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    endless_digest = "sha256:" + "e" * 64
    endless = Repo(config_for(["sha256:" + "d" * 64]), [(LAYER_GZIP, endless_digest, MIB)])
    endless.streams[endless_digest] = lambda h: h.send_endless_or_long(LAYER_GZIP, [first], again)
    repos["endless-layer"] = endless

    # Headers, then silence: on the manifest, and on a layer.
    stall = Repo(config_for([]), [])
    stall.manifest_stream = lambda h: h.send_headers_then_stall(OCI_MANIFEST, 500)
    repos["stall-manifest"] = stall
    stall_digest = "sha256:" + "5" * 64
    stall_layer = Repo(config_for(["sha256:" + "6" * 64]), [(LAYER_GZIP, stall_digest, MIB)])
    stall_layer.streams[stall_digest] = lambda h: h.send_headers_then_stall("application/octet-stream", MIB)
    repos["stall-layer"] = stall_layer

    # 1,000 small valid layers; each answer waits a little, so that parallel requests overlap.
    tars = [one_file_tar(f"layer-{i}", f"{i}\n".encode()) for i in range(1000)]
    many = Repo(config_for([digest(t) for t in tars]), [(LAYER_TAR, digest(t), len(t)) for t in tars])
    for t in tars:
        many.blobs[digest(t)] = t
    many.delay = 0.02
    repos["many-layers"] = many
    return repos


class Stats:
    lock = threading.Lock()
    open = 0
    peak = 0
    requests = 0


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection.
    protocol_version = "HTTP/1.0"
    repos = {}
    redirect_to = None

    def setup(self):
        super().setup()
        self.in_flight = True
        with Stats.lock:
            Stats.open += 1
            Stats.requests += 1
            Stats.peak = max(Stats.peak, Stats.open)

    def answered(self):
        """No longer in flight: the client may have all of the answer from here on."""
        with Stats.lock:
            if self.in_flight:
                self.in_flight = False
                Stats.open -= 1

    def finish(self):
        try:
            super().finish()
        finally:
            self.answered()

    def log_message(self, *args):
        pass

    def send_bytes(self, status, content_type, body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.answered()
        self.wfile.write(body)

    def send_endless_or_long(self, content_type, chunks, forever=None):
        """Sends `chunks`, then `forever` until the client goes away; no Content-Length."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.end_headers()
        try:
            for chunk in chunks:
                self.wfile.write(chunk)
            while forever is not None:
                self.wfile.write(forever)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def send_headers_then_stall(self, content_type, length):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.flush()
        time.sleep(600)

    def do_GET(self):
        if self.redirect_to:
            self.send_response(307)
            self.send_header("Location", self.redirect_to + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/v2/":
            return self.send_bytes(200, "application/json", b"{}")
        if self.path == "/stats":
            body = json.dumps({"peak_connections": Stats.peak, "requests": Stats.requests}).encode()
            return self.send_bytes(200, "application/json", body)
        found = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/([^/]+)", self.path)
        repo = found and self.repos.get(found.group(1))
        if not repo:
            return self.send_bytes(404, "application/json", b'{"errors":[{"code":"NAME_UNKNOWN"}]}')
        kind, ref = found.group(2), found.group(3)
        time.sleep(getattr(repo, "delay", 0))
        if kind == "manifests":
            if repo.manifest_stream:
                return repo.manifest_stream(self)
            return self.send_bytes(200, OCI_MANIFEST, repo.manifest)
        if ref in repo.streams:
            return repo.streams[ref](self)
        if ref in repo.blobs:
            return self.send_bytes(200, "application/octet-stream", repo.blobs[ref])
        return self.send_bytes(404, "application/json", b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')


class Server(ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that went away mid-answer is what the tests are about


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--redirect-to")
    args = parser.parse_args()
    Handler.redirect_to = args.redirect_to
    if not args.redirect_to:
        Handler.repos = build_repos()
    server = Server(("127.0.0.1", 0), Handler)
    if args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*args.tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
