#!/usr/bin/env bash
# Sets up a Debian 12 machine (packages) and runs every test: unit, integration (real registry,
# real libostree, umoci as the reference unpacker) and system (booted systemd test hosts).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
cargo test --locked "$@"
