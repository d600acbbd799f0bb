#!/usr/bin/env bash
# The main job, end to end: a local registry, the example image, a booted systemd test host, and
# `sysctr install --now` making systemd run the container under runc.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
source "$repo/tests/lib.sh"
bash "$repo/tests/setup.sh"
cargo build --quiet --manifest-path "$repo/Cargo.toml"
BIN=$repo/target/debug/sysctr
W=$(mktemp -d /var/tmp/sysctr-demo.XXXXXX)
cleanup() { testhost_stop; registry_stop; rm -rf "$W"; }
trap cleanup EXIT

registry_start "$W"
IMAGE=$REGISTRY/demo/hello:latest
bash "$repo/examples/hello/build.sh" "$W/layout" latest
skopeo copy -q --dest-tls-verify=false "oci:$W/layout:latest" "docker://$IMAGE"

echo "== booting a systemd test host"
testhost_boot
run() { echo "\$ $*"; in_host env SYSCTR_STORAGE=/var/lib/sysctr RUST_BACKTRACE=0 "$@"; }
run "$BIN" install --now --set RECEIVER=Pluto "$IMAGE"
run systemctl status --no-pager hello.service | head -12
sleep 1
run /usr/local/bin/hello-greeting
run "$BIN" list
run "$BIN" images
run systemctl stop hello.service
run systemctl is-active hello.service || true
run "$BIN" uninstall hello
run "$BIN" list
