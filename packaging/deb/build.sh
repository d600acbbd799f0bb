#!/usr/bin/env bash
# Builds a Debian package of sysctr: bash packaging/deb/build.sh [OUTDIR]
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$repo/target/deb}
cargo build --release --locked --manifest-path "$repo/Cargo.toml"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -D -m 755 "$repo/target/release/sysctr" "$stage/usr/bin/sysctr"
install -D -m 644 "$repo/units/sysctr.conf" "$stage/usr/lib/tmpfiles.d/sysctr.conf"
for unit in sysctr-auto-update.service sysctr-auto-update.timer; do
  install -D -m 644 "$repo/units/$unit" "$stage/usr/lib/systemd/system/$unit"
done
install -D -m 644 "$repo/README.md" "$stage/usr/share/doc/sysctr/README.md"
mkdir -p "$stage/DEBIAN"
cat > "$stage/DEBIAN/control" <<CONTROL
Package: sysctr
Version: $version
Architecture: $arch
Maintainer: sysctr developers <sysctr@localhost>
Depends: libostree-1-1 (>= 2022.7), runc, systemd, libssl3
Section: admin
Priority: optional
Description: system containers: OCI images run by runc as plain systemd services
 sysctr pulls OCI images into an OSTree store, checks them out read-only and
 installs them as systemd units, so they start at boot with no container daemon.
CONTROL
mkdir -p "$out"
dpkg-deb --build --root-owner-group "$stage" "$out/sysctr_${version}_${arch}.deb"
