#!/usr/bin/env bash
# What checking a signature costs a pull, against the reference in the same run.
# One image (a layer of 2,000 files) is signed with `skopeo copy --sign-by` (GPG, a key made
# here, signatures in a file:// lookaside). Each side pulls it N times into a store that already
# holds its layers, so that the manifest, the config and the signature dominate:
#   sysctr: `sysctr pull` under a signedBy policy, and under insecureAcceptAnything;
#   peer:   `skopeo copy` to an OCI layout that already holds the blobs, under the same two.
# Prints the medians, each side's signature overhead, and the ratio of the overheads.
# Usage: bash bench/signatures.sh   (N=20 by default)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
source "$repo/tests/lib.sh"
N=${N:-20}
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
BIN=$repo/target/release/sysctr
W=$(mktemp -d /var/tmp/sysctr-bench-signatures.XXXXXX)
export GNUPGHOME=$W/gnupg
cleanup() { registry_stop; gpgconf --kill gpg-agent 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
registry_start "$W"
mkdir -m 700 "$GNUPGHOME"
gpg --batch --passphrase '' --quick-gen-key "bench <bench@sysctr.invalid>" ed25519 sign never 2>/dev/null
fpr=$(gpg --list-keys --with-colons | sed -n 's/^fpr:*\([0-9A-F]*\):*$/\1/p' | head -1)
gpg --export "$fpr" > "$W/key.gpg"

mkdir -p "$W/registries.d"
printf 'default-docker:\n  lookaside: file://%s/sigstore\n  lookaside-staging: file://%s/sigstore\n' "$W" "$W" \
  > "$W/registries.d/default.yaml"
python3 "$here/make-layer.py" "$W/image" files 2000 >/dev/null
image=$REGISTRY/bench/signed:latest
skopeo copy -q --dest-tls-verify=false --sign-by "$fpr" --registries.d "$W/registries.d" \
  "oci:$W/image:bench" "docker://$image"
printf '{"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "%s/key.gpg"}]}\n' "$W" > "$W/signed.json"
printf '{"default": [{"type": "insecureAcceptAnything"}]}\n' > "$W/any.json"

# Median wall time of N runs of a command, in milliseconds.
median_ms() {
  local times=()
  for _ in $(seq "$N"); do
    local start end
    start=$(date +%s%N)
    "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
    end=$(date +%s%N)
    times+=($(( (end - start) / 1000000 )))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

sysctr_pull() { SYSCTR_STORAGE=$W/store "$BIN" pull --signature-policy "$1" --registries-d "$W/registries.d" "$image"; }
skopeo_copy() {
  skopeo copy -q --remove-signatures --src-tls-verify=false --policy "$1" --registries.d "$W/registries.d" \
    "docker://$image" "oci:$W/peer:bench"
}
sysctr_pull "$W/any.json" >/dev/null; skopeo_copy "$W/any.json" >/dev/null   # layers in place
ours_signed=$(median_ms sysctr_pull "$W/signed.json")
ours_any=$(median_ms sysctr_pull "$W/any.json")
peer_signed=$(median_ms skopeo_copy "$W/signed.json")
peer_any=$(median_ms skopeo_copy "$W/any.json")
printf '%-7s %12s %12s %10s\n' side "signed (ms)" "any (ms)" "overhead"
printf '%-7s %12s %12s %10s\n' sysctr "$ours_signed" "$ours_any" "$((ours_signed - ours_any))"
printf '%-7s %12s %12s %10s\n' skopeo "$peer_signed" "$peer_any" "$((peer_signed - peer_any))"
python3 -c "import sys; s,p,a,b=map(int,sys.argv[1:5]); print(f'signed pull, sysctr/skopeo: {s/p:.2f}x; unsigned: {a/b:.2f}x')" \
  "$ours_signed" "$peer_signed" "$ours_any" "$peer_any"
