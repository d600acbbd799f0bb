#!/usr/bin/env bash
# The main job, end to end: a local registry, the example image, a booted systemd test host, and
# `sysctr install --now` making systemd run the container under runc.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
source "$repo/tests/testhost.sh"
bash "$repo/tests/setup.sh"
cargo build --quiet --manifest-path "$repo/Cargo.toml"
BIN=$repo/target/debug/sysctr
W=$(mktemp -d /var/tmp/sysctr-demo.XXXXXX)
REG=
cleanup() { testhost_stop; [ -n "$REG" ] && kill "$REG" 2>/dev/null; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s/registry\nhttp:\n  addr: 127.0.0.1:%s\nlog:\n  level: error\n' "$W" "$PORT" > "$W/registry.yml"
docker-registry serve "$W/registry.yml" > "$W/registry.log" 2>&1 &
REG=$!
until python3 -c "import socket; socket.create_connection(('127.0.0.1',$PORT))" 2>/dev/null; do sleep 0.1; done
IMAGE=127.0.0.1:$PORT/demo/hello:latest
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
