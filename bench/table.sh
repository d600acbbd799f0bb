#!/usr/bin/env bash
# One run that measures sysctr against its peers, row by row, and prints a markdown table:
#   1. cold pull + install of a 3-layer gzip image (~150 MB of files, 40,000 files) from a
#      loopback registry, against the untar floor: three concurrent GNU `tar xzf` of the layer
#      blobs (one per layer) with `sha256sum` of the blobs running alongside them.
#   2. a pull with nothing new behind the tag, against `skopeo copy` to an OCI layout that already
#      holds the blobs (both under /etc/containers/policy.json).
#   3. `sysctr update` to an image that shares two layers of three, against row 1's cold install;
#      and the bytes the registry served for it (its access log), against the changed layer.
#   4. the re-install (uninstall, then install) of an image already in the store, against 0.15 s.
#   5. peak RSS of `sysctr pull` of the image of row 1, against the larger of `skopeo copy`'s and
#      `umoci unpack`'s peaks.
#   6. `sysctr apply` of 10, 50 and 100 containers of 3 small images, then `sysctr list`,
#      `sysctr list --all --json` and `sysctr update --all --check` at each size.
# Rows 1-5 run on a booted test host (tests/lib.sh), installs without --now, with their stores,
# trees and layouts on an ext4 file system of an image file (a loop device) mounted in the host:
# this machine's root file system is mounted with `discard`, which makes deleting a tree of 40,000
# files take minutes. Row 6 composes an offline root (`sysctr --root DIR`): no systemd, no unit
# starts.
# Usage: bash bench/table.sh
#   RUNS=N        rounds of rows 1, 3 and 4 (default 5)
#   NOOP_RUNS=N   pulls of row 2 on each side (default 11)
#   SIZES="..."   container counts of row 6 (default "10 50 100")
#   FILES=N BYTES=N   the image of row 1 (default 40000 files, 150000000 bytes)
#   MEMORY_SHAPES="files ..."   also run bench/memory.sh for these shapes (default: none)
set -euo pipefail
RUNS=${RUNS:-5}
NOOP_RUNS=${NOOP_RUNS:-11}
SIZES=${SIZES:-10 50 100}
FILES=${FILES:-40000}
BYTES=${BYTES:-150000000}
MEMORY_SHAPES=${MEMORY_SHAPES:-}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
source "$repo/tests/lib.sh"
bash "$repo/tests/setup.sh" >/dev/null
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
export BIN=$repo/target/release/sysctr
export W=$(mktemp -d /var/tmp/sysctr-bench-table.XXXXXX)
export D=$W/disk   # the loop file system's mount point in the test host
LOOP=
cleanup() {
  if [ -n "${TH_DIR:-}" ] && [ -n "${TH_LEADER:-}" ]; then in_host umount "$D" 2>/dev/null || true; fi
  testhost_stop
  registry_stop
  if [ -n "$LOOP" ]; then losetup -d "$LOOP" 2>/dev/null || true; fi
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
began=$(date +%s)
say() { printf '[%4ds] %s\n' "$(($(date +%s) - began))" "$*" >&2; }
R=$W/results   # "KEY VALUE" lines, VALUE in microseconds, KiB or bytes
: > "$R"
record() { echo "$1 $2" >> "$R"; }

# Wall time of a shell snippet, in microseconds, measured inside the test host (so nsenter's own
# start is not counted). The snippet sees the exported variables.
th_time() {
  in_host bash -ec 's=$(date +%s%N); eval "$1" >/dev/null; e=$(date +%s%N); echo $(((e - s) / 1000))' _ "$1"
}
# The same, here.
here_time() {
  local s e
  s=$(date +%s%N)
  "$@" >/dev/null
  e=$(date +%s%N)
  echo $(((e - s) / 1000))
}

registry_start "$W"
export IMAGE=$REGISTRY/bench/big:latest
say "registry at $REGISTRY; writing the images ($FILES files, ~$BYTES bytes, 3 gzip layers; v2 changes layer 3)"
read -r L1 L2 L3 L3B BLOB_TOTAL TAR_TOTAL < <(python3 "$here/table.py" image "$W/img" "$FILES" "$BYTES" /bin/busybox)
export BLOBS="$W/img/blobs/sha256/$L1 $W/img/blobs/sha256/$L2 $W/img/blobs/sha256/$L3"
CHANGED_LAYER=$(stat -c %s "$W/img/blobs/sha256/$L3B")
for tag in v1 v2; do
  skopeo copy -q --dest-tls-verify=false "oci:$W/img:$tag" "docker://$REGISTRY/bench/big:$tag"
done
retag() {
  skopeo copy -q --src-tls-verify=false --dest-tls-verify=false \
    "docker://$REGISTRY/bench/big:$1" "docker://$REGISTRY/bench/big:latest"
}
retag v1
for n in 1 2 3; do
  python3 "$here/table.py" small "$W/small" "s$n" "$n" /bin/busybox
  skopeo copy -q --dest-tls-verify=false "oci:$W/small:s$n" "docker://$REGISTRY/bench/small$n:latest"
done
say "image: blobs $((BLOB_TOTAL / 1000000)) MB, tars $((TAR_TOTAL / 1000000)) MB; changed layer $((CHANGED_LAYER / 1000000)) MB"

say "booting the test host"
mkdir -p "$D"
testhost_boot
truncate -s 8G "$W/disk.img"
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$W/disk.img"
LOOP=$(losetup --find --show "$W/disk.img")
in_host mknod /dev/bench-disk b "$((0x$(stat -c %t "$LOOP")))" "$((0x$(stat -c %T "$LOOP")))"
in_host mount /dev/bench-disk "$D"

# Rows 1, 3, 4: rounds of cold pull + install (peak RSS of the pull kept) and the untar floor,
# in alternating order; then uninstall + install; then update to v2. Each round has a fresh store.
# shellcheck disable=SC2016
ours_cold='/usr/bin/time -f %M -o "$S-rss" env SYSCTR_STORAGE="$S" "$BIN" pull "$IMAGE"
  env SYSCTR_STORAGE="$S" "$BIN" install --name big "$IMAGE"'
# shellcheck disable=SC2016
floor='mkdir -p "$F"; pids=""
  for b in $BLOBS; do tar xzf "$b" -C "$F" & pids="$pids $!"; done
  sha256sum $BLOBS & pids="$pids $!"
  for p in $pids; do wait "$p"; done'
for run in $(seq "$RUNS"); do
  export S=$D/$run/store F=$D/$run/floor
  retag v1
  in_host mkdir -p "$D/$run"
  sync
  if ((run % 2)); then
    ours=$(th_time "$ours_cold"); sync; peer=$(th_time "$floor"); flush=$(th_time sync)
  else
    peer=$(th_time "$floor"); flush=$(th_time sync); ours=$(th_time "$ours_cold"); sync
  fi
  record cold "$ours"; record floor "$peer"; record floor_sync "$((peer + flush))"
  rss=$(in_host cat "$S-rss"); record rss_pull "$rss"
  uninstall=$(th_time 'env SYSCTR_STORAGE="$S" "$BIN" uninstall big')
  sync
  reinstall=$(th_time 'env SYSCTR_STORAGE="$S" "$BIN" install --name big "$IMAGE"')
  record uninstall "$uninstall"; record reinstall "$reinstall"
  retag v2
  sync
  from=$(($(wc -l < "$W/registry.log") + 1))
  update=$(th_time 'env SYSCTR_STORAGE="$S" "$BIN" update big')
  read -r requests served blob_bytes fetched < <(python3 "$here/table.py" served "$W/registry.log" "$from")
  record update "$update"; record served "$served"; record served_blobs "$blob_bytes"
  say "round $run/$RUNS: cold $((ours / 1000)) ms, floor $((peer / 1000)) ms, re-install $((reinstall / 1000)) ms, update $((update / 1000)) ms (registry: $requests requests, $served bytes; blobs $fetched)"
  # The container goes (its unit is in the host's /etc); the last round's store stays for row 2.
  in_host env SYSCTR_STORAGE="$S" "$BIN" uninstall big >/dev/null
  [ "$run" = "$RUNS" ] || in_host rm -rf "$D/$run"
done

# Row 5, the peer: skopeo copy + umoci unpack of the same image (v1), once.
retag v1
say "row 5: skopeo copy + umoci unpack of the image, under /usr/bin/time"
sync
# shellcheck disable=SC2016
copy=$(th_time '/usr/bin/time -f %M -o "$D/rss-skopeo" skopeo copy -q --src-tls-verify=false "docker://$IMAGE" "oci:$D/peer:bench"')
sync
# shellcheck disable=SC2016
unpack=$(th_time '/usr/bin/time -f %M -o "$D/rss-umoci" umoci unpack --image "$D/peer:bench" "$D/peer-bundle"')
record skopeo_copy "$copy"; record umoci_unpack "$unpack"
rss=$(in_host cat "$D/rss-skopeo"); record rss_skopeo "$rss"
rss=$(in_host cat "$D/rss-umoci"); record rss_umoci "$rss"
in_host rm -rf "$D/peer-bundle"

# Row 2: pulls with nothing new, alternating; one of each first, untimed, so that both hold v1
# under the tag.
say "row 2: $NOOP_RUNS pulls with nothing new on each side"
# shellcheck disable=SC2016
noop_ours='env SYSCTR_STORAGE="$S" "$BIN" pull "$IMAGE"'
# shellcheck disable=SC2016
noop_peer='skopeo copy -q --src-tls-verify=false "docker://$IMAGE" "oci:$D/peer:bench"'
th_time "$noop_ours" >/dev/null; th_time "$noop_peer" >/dev/null
for i in $(seq "$NOOP_RUNS"); do
  if ((i % 2)); then
    ours=$(th_time "$noop_ours"); peer=$(th_time "$noop_peer")
  else
    peer=$(th_time "$noop_peer"); ours=$(th_time "$noop_ours")
  fi
  record noop_ours "$ours"; record noop_peer "$peer"
done
in_host umount "$D"
testhost_stop

# Row 6: an offline root; the containers are listed in one apply file that grows.
ROOT6=$W/root6
# The root has what sysctr looks for in a target: runc, itself, and multi-user.target.
mkdir -p "$ROOT6/usr/sbin" "$ROOT6/usr/bin" "$ROOT6/usr/lib/systemd/system"
cp /usr/sbin/runc "$ROOT6/usr/sbin/"; cp "$BIN" "$ROOT6/usr/bin/"
cp /usr/lib/systemd/system/multi-user.target "$ROOT6/usr/lib/systemd/system/"
prev=0
for size in $SIZES; do
  for i in $(seq "$size"); do
    printf '[[container]]\nname = "c%03d"\nimage = "%s/bench/small%d:latest"\n\n' "$i" "$REGISTRY" $((i % 3 + 1))
  done > "$W/apply-$size.toml"
  say "row 6: apply $size containers ($((size - prev)) new), then list, list --all --json, update --all --check"
  t=$(here_time "$BIN" --root "$ROOT6" apply "$W/apply-$size.toml"); record "apply_$size" "$t"
  installed=$("$BIN" --root "$ROOT6" list --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d["items"]))')
  [ "$installed" = "$size" ] || { echo "apply of $size containers left $installed installed" >&2; exit 1; }
  for _ in 1 2 3 4 5; do
    t=$(here_time "$BIN" --root "$ROOT6" list); record "list_$size" "$t"
    t=$(here_time "$BIN" --root "$ROOT6" list --all --json); record "listjson_$size" "$t"
  done
  for _ in 1 2 3; do
    t=$(here_time "$BIN" --root "$ROOT6" update --all --check); record "check_$size" "$t"
  done
  prev=$size
done

if [ -n "$MEMORY_SHAPES" ]; then
  say "bench/memory.sh for: $MEMORY_SHAPES"
  SHAPES=$MEMORY_SHAPES bash "$here/memory.sh" > "$W/memory.txt"
fi

say "done in $(($(date +%s) - began)) s"
python3 - "$R" "$SIZES" "$CHANGED_LAYER" "$BLOB_TOTAL" "$TAR_TOTAL" "$FILES" "$RUNS" "$W/memory.txt" <<'PY'
import collections, os, statistics, sys
res = collections.defaultdict(list)
for line in open(sys.argv[1]):
    key, value = line.split()
    res[key].append(int(value))
sizes = [int(s) for s in sys.argv[2].split()]
changed, blob_total, tar_total, files, runs = map(int, sys.argv[3:8])
med = lambda key: statistics.median(res[key])
s = lambda us: f"{us / 1e6:.2f} s"
ms = lambda us: f"{us / 1e3:.0f} ms"
mib = lambda kib: f"{kib / 1024:.0f} MiB"
mb = lambda b: f"{b / 1e6:.1f} MB"
rows = []
cold, floor = med("cold"), med("floor")
rows.append(("1", f"cold pull + install ({mb(blob_total)} gzip, {mb(tar_total)} of tar, {files} files, 3 layers)",
             s(cold), f"untar floor {s(floor)}", f"{cold / floor:.2f}x",
             f"medians of {runs} alternating pairs; range {s(min(res['cold']))}-{s(max(res['cold']))} vs "
             f"{s(min(res['floor']))}-{s(max(res['floor']))}; floor + sync {s(med('floor_sync'))}; "
             f"skopeo copy + umoci unpack (one run) {s(res['skopeo_copy'][0] + res['umoci_unpack'][0])}"))
a, b = med("noop_ours"), med("noop_peer")
rows.append(("2", "pull, nothing new behind the tag", ms(a), f"skopeo copy {ms(b)}", f"{a / b:.2f}x",
             f"medians of {len(res['noop_ours'])} runs each, alternating; default policy.json"))
u = med("update")
served, blobs = med("served"), med("served_blobs")
rows.append(("3", "update, 1 layer of 3 changed", s(u), f"cold install {s(cold)}", f"{u / cold:.2f}x",
             f"median of {runs}; registry served {mb(served)} (blob GETs {mb(blobs)}) against the changed "
             f"layer's {mb(changed)} ({served / changed:.2f}x)"))
r = med("reinstall")
rows.append(("4", f"re-install of a stored image ({files} files)", s(r), "goal 0.15 s", f"{r / 150000:.2f}x",
             f"install after uninstall, median of {runs}; the uninstall took {s(med('uninstall'))}"))
rss, peer = max(res["rss_pull"]), max(res["rss_skopeo"][0], res["rss_umoci"][0])
rows.append(("5", "peak RSS, pull of the image of row 1", mib(rss), f"max(skopeo, umoci) {mib(peer)}",
             f"{rss / peer:.2f}x", f"largest of {runs} pulls (median {mib(med('rss_pull'))}); "
             f"skopeo {mib(res['rss_skopeo'][0])}, umoci {mib(res['rss_umoci'][0])}"))
big = sizes[-1]
rows.append(("6", f"list of {big} containers", ms(med(f"list_{big}")), "goal 100 ms",
             f"{med(f'list_{big}') / 100000:.2f}x", "offline root (--root DIR), median of 5; sizes below"))
print()
print("| row | measure | sysctr | peer | ratio | notes |")
print("|---|---|---|---|---|---|")
for row in rows:
    print("| " + " | ".join(row) + " |")
print()
print("Row 6, offline root (`sysctr --root DIR`: no systemd, no units started); medians (list: 5 runs, check: 3):")
print()
print("| containers | apply (new ones) | list | list --all --json | update --all --check |")
print("|---|---|---|---|---|")
for n in sizes:
    print(f"| {n} | {ms(res[f'apply_{n}'][0])} | {ms(med(f'list_{n}'))} | {ms(med(f'listjson_{n}'))} | {ms(med(f'check_{n}'))} |")
if len(sizes) > 1:
    def slope(key):  # least squares over the sizes' medians
        ys = [med(f"{key}_{n}") for n in sizes]
        mx, my = statistics.mean(sizes), statistics.mean(ys)
        return sum((x - mx) * (y - my) for x, y in zip(sizes, ys)) / sum((x - mx) ** 2 for x in sizes)
    print(f"| slope per container (least squares) | | {slope('list') / 1e3:.2f} ms | {slope('listjson') / 1e3:.2f} ms | {slope('check') / 1e3:.2f} ms |")
print()
print("Rows 1-5 ran on a booted test host (systemd-nspawn over an overlay of /), installs without --now, times")
print("taken inside it; stores, trees and layouts on an ext4 file system on a loop device (no discard).")
print("`sysctr status` has no --all: row 6 times `sysctr list --all --json`.")
if os.path.exists(sys.argv[8]):
    print()
    print("bench/memory.sh:")
    print()
    print(open(sys.argv[8]).read().rstrip())
PY
