#!/usr/bin/env bash
# Builds a Debian package of sysctr: bash packaging/deb/build.sh [OUTDIR]
# SYSCTR_BIN=PATH packages that binary (and the sysctr-supervise beside it) instead of building
# release ones, and SYSCTR_DEB_COMPRESSION=gzip trades size for time (the tests do both).
# Depends are computed by dpkg-shlibdeps; `lintian` reports no error on the result.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$repo/target/deb}
bin=${SYSCTR_BIN:-$repo/target/release/sysctr}
if [ -z "${SYSCTR_BIN:-}" ]; then
  cargo build --release --locked --manifest-path "$repo/Cargo.toml"
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -D -s -m 755 "$bin" "$stage/usr/bin/sysctr"
# The command of every unit that waits for its container to be started or healthy; built beside
# sysctr.
install -D -s -m 755 "$(dirname "$bin")/sysctr-supervise" "$stage/usr/libexec/sysctr/sysctr-supervise"
install -D -m 644 "$repo/units/sysctr.conf" "$stage/usr/lib/tmpfiles.d/sysctr.conf"
for unit in sysctr-auto-update.service sysctr-auto-update.timer sysctr-apply.service sysctr-apply.path; do
  install -D -m 644 "$repo/units/$unit" "$stage/usr/lib/systemd/system/$unit"
done
install -D -m 644 "$repo/units/80-sysctr.preset" "$stage/usr/lib/systemd/system-preset/80-sysctr.preset"
install -D -m 644 "$repo/README.md" "$stage/usr/share/doc/sysctr/README.md"
install -D -m 644 "$repo/packaging/deb/copyright" "$stage/usr/share/doc/sysctr/copyright"
install -D -m 644 "$repo/packaging/deb/changelog" "$stage/usr/share/doc/sysctr/changelog"
gzip -9n "$stage/usr/share/doc/sysctr/changelog"
# Man pages and completions, generated from the command line itself.
docs=$(mktemp -d)
trap 'rm -rf "$stage" "$docs"' EXIT
"$bin" generate-docs "$docs"
for page in "$docs"/man/*.8; do
  install -D -m 644 "$page" "$stage/usr/share/man/man8/$(basename "$page")"
  gzip -9n "$stage/usr/share/man/man8/$(basename "$page")"
done
install -D -m 644 "$docs/completions/sysctr.bash" "$stage/usr/share/bash-completion/completions/sysctr"
install -D -m 644 "$docs/completions/_sysctr" "$stage/usr/share/zsh/vendor-completions/_sysctr"
install -D -m 644 "$docs/completions/sysctr.fish" "$stage/usr/share/fish/vendor_completions.d/sysctr.fish"
# Depends: the shared libraries the binary links, as dpkg-shlibdeps finds them, what it runs, and
# the signature policy /etc/containers/policy.json (golang-github-containers-common), without
# which nothing is pulled.
shlibs=$(mktemp -d)
trap 'rm -rf "$stage" "$docs" "$shlibs"' EXIT
mkdir -p "$shlibs/debian"
printf 'Source: sysctr\n\nPackage: sysctr\nArchitecture: any\n' > "$shlibs/debian/control"
libs=$(cd "$shlibs" && dpkg-shlibdeps -O -e"$stage/usr/bin/sysctr" -e"$stage/usr/libexec/sysctr/sysctr-supervise" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$libs" ] || { echo "dpkg-shlibdeps found no library dependencies" >&2; exit 1; }
mkdir -p "$stage/DEBIAN"
cat > "$stage/DEBIAN/control" <<CONTROL
Package: sysctr
Version: $version
Architecture: $arch
Maintainer: sysctr maintainers <maintainers@sysctr.invalid>
Depends: $libs, runc, systemd, golang-github-containers-common
Section: admin
Priority: optional
Description: system containers: OCI images run by runc as plain systemd services
 sysctr pulls OCI images into an OSTree store, checks them out read-only and
 installs them as systemd units, so they start at boot with no container daemon.
CONTROL
# The storage is private from the start, and systemd sees the shipped units.
cat > "$stage/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  # Installed into an image root (dpkg --root, an image builder's chroot), /proc may be absent
  # and systemd-tmpfiles refuses to run: the storage of sysctr.conf is then made directly.
  if [ -e /proc/self ]; then
    systemd-tmpfiles --create sysctr.conf || true
  else
    install -d -m 0700 -o root -g root /var/lib/sysctr
  fi
  if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
fi
SCRIPT
cat > "$stage/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
SCRIPT
chmod 755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/postrm"
mkdir -p "$out"
dpkg-deb -Z"${SYSCTR_DEB_COMPRESSION:-xz}" --build --root-owner-group "$stage" "$out/sysctr_${version}_${arch}.deb"
