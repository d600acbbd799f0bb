#!/usr/bin/env bash
# Builds an RPM of sysctr with rpmbuild, from a source tarball of this tree:
#   bash packaging/rpm/build.sh [OUTDIR]
# SYSCTR_BIN=PATH packages that binary instead of compiling one inside rpmbuild (the tests do).
# On Debian, `rpm` provides rpmbuild; its dependency check is skipped there (--nodeps), since
# the BuildRequires name Fedora's packages.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$repo/target/rpm}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)
top=$(mktemp -d)
trap 'rm -rf "$top"' EXIT
mkdir -p "$top/SOURCES" "$top/SPECS"
# The source tarball: the files git tracks, as they are in the tree, under sysctr-VERSION/.
(cd "$repo" && git ls-files -z | tar --null -T - --transform "s,^,sysctr-$version/," -czf "$top/SOURCES/sysctr-$version.tar.gz")
defines=(--define "_topdir $top" --define "sysctr_version $version")
if [ -n "${SYSCTR_BIN:-}" ]; then
  defines+=(--define "sysctr_prebuilt $(realpath "$SYSCTR_BIN")")
fi
extra=()
if ! rpm -q rpm >/dev/null 2>&1; then extra+=(--nodeps); fi
rpmbuild -bb "${defines[@]}" "${extra[@]}" "$repo/packaging/rpm/sysctr.spec"
mkdir -p "$out"
find "$top/RPMS" -name '*.rpm' -exec cp {} "$out/" \;
ls "$out"/sysctr-*.rpm
