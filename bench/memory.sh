#!/usr/bin/env bash
# Peak memory (maximum resident set size, as /usr/bin/time reports it) of `sysctr pull` from a
# loopback registry, for single-layer images of three shapes, against a peer that does the same
# job in the same run: `skopeo copy` of the image to an OCI layout, then `umoci unpack` (the peer's
# peak is the larger of the two). Layers are written by bench/make-layer.py, streamed.
#   zeros  one file of 2 GiB of zeros
#   files  200,000 small files
#   deep   1,000 branches 256 levels deep (the depth bound), 255,000 directories
#   deeper one branch 5,000 levels deep: sysctr refuses it (--max-path-depth), the peer unpacks it
# Usage: bash bench/memory.sh   (SHAPES="zeros files" to run some of them)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
source "$repo/tests/lib.sh"
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
BIN=$repo/target/release/sysctr
W=$(mktemp -d /var/tmp/sysctr-bench-memory.XXXXXX)
cleanup() { registry_stop; rm -rf "$W"; }
trap cleanup EXIT
registry_start "$W"

declare -A ARGS=([zeros]="zeros 2147483648" [files]="files 200000" [deep]="deep 256 1000" [deeper]="deep 5000 1")
SHAPES=${SHAPES:-zeros files deep deeper}

# Runs a command under /usr/bin/time; prints "PEAK_KIB SECONDS". A failure is shown, not fatal:
# sysctr refusing a layer over its bounds is a result too.
measure() {
  if ! /usr/bin/time -f '%M %e' -o "$W/time" "$@" >"$W/out" 2>&1; then
    echo "($1 ... failed: $(grep -v 'exit status' "$W/out" | tail -1 | cut -c1-150))" >&2
  fi
  tail -1 "$W/time"
}

printf '%-6s %14s %14s %14s %8s   %s\n' shape "sysctr MiB" "skopeo MiB" "umoci MiB" ratio "times (s): sysctr, skopeo, umoci"
for shape in $SHAPES; do
  python3 "$here/make-layer.py" "$W/$shape" ${ARGS[$shape]} >/dev/null
  image=$REGISTRY/bench/$shape:latest
  skopeo copy -q --dest-tls-verify=false "oci:$W/$shape:bench" "docker://$image"
  rm -rf "$W/$shape"
  result=$(measure env SYSCTR_STORAGE="$W/store" "$BIN" pull "$image")
  read -r ours ours_s <<<"$result"
  rm -rf "$W/store"
  result=$(measure skopeo copy -q --src-tls-verify=false "docker://$image" "oci:$W/peer:bench")
  read -r copy copy_s <<<"$result"
  result=$(measure umoci unpack --image "$W/peer:bench" "$W/bundle")
  read -r unpack unpack_s <<<"$result"
  rm -rf "$W/peer" "$W/bundle"
  peer=$(( copy > unpack ? copy : unpack ))
  python3 -c "import sys; o,c,u,p=map(int,sys.argv[2:6]); print(f'{sys.argv[1]:<6} {o/1024:14.1f} {c/1024:14.1f} {u/1024:14.1f} {o/p:7.2f}x   {sys.argv[6]}, {sys.argv[7]}, {sys.argv[8]}')" \
    "$shape" "$ours" "$copy" "$unpack" "$peer" "$ours_s" "$copy_s" "$unpack_s"
done
echo "ratio: sysctr's peak over the peer's (the larger of skopeo's and umoci's)"
