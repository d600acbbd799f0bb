#!/usr/bin/env bash
# Sets up a Debian 12 machine (packages) and runs every test: unit, integration (real registry,
# real libostree, umoci as the reference unpacker) and system (booted systemd test hosts), then
# ansible-test sanity on the Ansible collection.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
# crash-hooks: the crash tests kill sysctr after each journaled step (never in release builds).
# test-support: the in-memory systemd, for tests in tests/ as for the unit tests.
cargo test --locked --features crash-hooks,test-support "$@"
# The Ansible collection's own checks (its behaviour on booted hosts is in tests/system/fleet.rs).
ANSIBLE_BIN=target/ansible-venv/bin bash packaging/ansible/sanity.sh
