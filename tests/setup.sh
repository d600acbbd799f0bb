#!/usr/bin/env bash
# Installs everything sysctr's build, tests, demo and benchmarks need on Debian 12.
# Idempotent: packages already present are left alone.
set -euo pipefail

packages=(
  pkg-config gcc libostree-dev libssl-dev   # build: libostree for the store, OpenSSL for HTTPS
  ostree runc dbus systemd-container        # run: the runtime, and systemd-nspawn for test hosts
  golang-github-containers-common           # run: /etc/containers/policy.json, the signature policy
  docker-registry umoci skopeo              # tests: a real registry, reference unpacker, pusher
  busybox-static etcd-server etcd-client   # tests: the payload of the service images...
  containerd containernetworking-plugins    # ...and of the CRI runtime's image
  iproute2 procps util-linux python3        # tests and scripts: nsenter, pgrep, mount
  strace                                    # tests: the syscall trace that checks durable writes
  time openssl                              # tests: peak memory of a pull, a TLS certificate
  apache2-utils                             # tests: htpasswd, for a registry that wants a password
  python3-cryptography                      # tests: a token service that signs registry tokens
  gnupg                                     # tests: GPG keys that sign images (skopeo --sign-by)
  dpkg-dev lintian rpm                      # packages: computed Depends, the .deb's check, rpmbuild
  mkosi debootstrap                         # tests: the OS image recipe of examples/os-image
  python3-venv                              # tests: ansible-core's venv (the Ansible collection)
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
# sysctr pulls nothing without a signature policy: put the package's default back if it was
# removed since (a deleted conffile stays deleted on a plain reinstall).
if [ ! -e /etc/containers/policy.json ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --reinstall -o Dpkg::Options::=--force-confmiss \
    golang-github-containers-common
fi
# Where systemd runs, Debian starts these on install; the tests run their own, on the same
# loopback addresses.
if [ -d /run/systemd/system ]; then
  systemctl disable --now docker-registry.service etcd.service containerd.service 2>/dev/null || true
fi
# ansible-core from PyPI for the Ansible collection's tests (Debian's is too old for it), in a
# venv of Debian's Python, the one the managed test hosts run modules with.
ansible_venv="$(dirname "$0")/../target/ansible-venv"
if [ ! -x "$ansible_venv/bin/ansible-test" ]; then
  /usr/bin/python3 -m venv "$ansible_venv"
  "$ansible_venv/bin/pip" install -q --disable-pip-version-check 'ansible-core>=2.17,<2.20'
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
