#!/usr/bin/env bash
# Installs everything sysctr's build, tests, demo and benchmarks need on Debian 12.
# Idempotent: packages already present are left alone.
set -euo pipefail

packages=(
  pkg-config gcc libostree-dev libssl-dev   # build: libostree for the store, OpenSSL for HTTPS
  ostree runc dbus systemd-container        # run: the runtime, and systemd-nspawn for test hosts
  docker-registry umoci skopeo              # tests: a real registry, reference unpacker, pusher
  busybox-static etcd-server etcd-client   # tests: the payload of the service images
  iproute2 procps util-linux                # tests: nsenter, pgrep, mount
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Debian starts the registry on install where systemd runs; the tests start their own.
if pidof docker-registry >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable --now docker-registry.service || true
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
