#!/usr/bin/env bash
# Times `sysctr pull` + `sysctr install` (no start) of a 5-layer, ~100 MB / 5k-file image from a
# loopback registry against `skopeo copy` + `umoci unpack` of the same image, in one run, on a
# booted test host; then the re-install of the already pulled image. Prints medians and ratios.
# Usage: bash bench/pull-install.sh   (RUNS=N to change the number of rounds, default 5)
set -euo pipefail
RUNS=${RUNS:-5}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
source "$repo/tests/lib.sh"
bash "$repo/tests/setup.sh" >/dev/null
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
BIN=$repo/target/release/sysctr
W=$(mktemp -d /var/tmp/sysctr-bench.XXXXXX)
cleanup() { testhost_stop; registry_stop; rm -rf "$W"; }
trap cleanup EXIT

registry_start "$W"

echo "building the benchmark image (5 layers, 5000 files)..."
umoci init --layout "$W/img" && umoci new --image "$W/img:bench"
for layer in 1 2 3 4 5; do
  umoci unpack --image "$W/img:bench" "$W/bundle" >/dev/null
  python3 "$here/make-files.py" "$W/bundle/rootfs/data$layer" 1000 "$layer"
  if [ "$layer" = 1 ]; then mkdir -p "$W/bundle/rootfs/bin" && cp /bin/busybox "$W/bundle/rootfs/bin/sh"; fi
  umoci repack --image "$W/img:bench" "$W/bundle" && rm -rf "$W/bundle"
done
umoci config --image "$W/img:bench" --config.cmd /bin/sh --config.cmd=-c --config.cmd='sleep 3600'
IMAGE=$REGISTRY/bench/big:latest
skopeo copy -q --dest-tls-verify=false "oci:$W/img:bench" "docker://$IMAGE"
du -sh --apparent-size "$W/registry" | awk '{print "registry holds", $1}'

testhost_boot
now() { date +%s.%N; }
for run in $(seq "$RUNS"); do
  S=$W/store-$run
  t0=$(now)
  in_host env SYSCTR_STORAGE="$S" "$BIN" pull "$IMAGE" >/dev/null
  in_host env SYSCTR_STORAGE="$S" "$BIN" install --name big "$IMAGE" >/dev/null
  t1=$(now)
  in_host skopeo copy -q --src-tls-verify=false "docker://$IMAGE" "oci:$W/peer-$run:bench"
  in_host umoci unpack --image "$W/peer-$run:bench" "$W/peer-bundle-$run" >/dev/null
  t2=$(now)
  in_host env SYSCTR_STORAGE="$S" "$BIN" uninstall big >/dev/null
  t3=$(now)
  in_host env SYSCTR_STORAGE="$S" "$BIN" install --name big "$IMAGE" >/dev/null
  t4=$(now)
  in_host env SYSCTR_STORAGE="$S" "$BIN" uninstall big >/dev/null
  rm -rf "$S" "$W/peer-$run" "$W/peer-bundle-$run"
  echo "$t0 $t1 $t2 $t3 $t4" >> "$W/times"
  echo "round $run done"
done
python3 - "$W/times" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
ours = statistics.median(r[1] - r[0] for r in rows)
peer = statistics.median(r[2] - r[1] for r in rows)
again = statistics.median(r[4] - r[3] for r in rows)
print(f"rounds: {len(rows)}")
print(f"sysctr pull + install:        median {ours:.2f} s")
print(f"skopeo copy + umoci unpack:   median {peer:.2f} s")
print(f"ratio sysctr / peer:          {ours / peer:.2f}x")
print(f"sysctr re-install (pulled):   median {again:.2f} s  ({again / peer:.2f}x the peer)")
PY
