#!/usr/bin/env bash
# Builds the sysctr.sysctr Ansible collection into OUTDIR (sysctr-sysctr-VERSION.tar.gz), with
# the ansible-galaxy of ANSIBLE_BIN (default: the one in PATH). The version is the crate's.
set -euo pipefail
out="${1:?usage: build.sh OUTDIR}"
here="$(cd "$(dirname "$0")" && pwd)"
galaxy="${ANSIBLE_BIN:+$ANSIBLE_BIN/}ansible-galaxy"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$here/../../Cargo.toml" | head -1)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$here/sysctr" "$work/sysctr"
sed -i "s/^version: .*/version: $version/" "$work/sysctr/galaxy.yml"
mkdir -p "$out"
"$galaxy" collection build --force --output-path "$out" "$work/sysctr" >/dev/null
ls "$out"/sysctr-sysctr-"$version".tar.gz
