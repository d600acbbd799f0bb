#!/usr/bin/env bash
# Builds the hello demo image as an OCI layout: busybox (static, from the host's busybox-static
# package) plus rootfs/ from this directory, including /exports.
# Usage: build.sh LAYOUT_DIR TAG
set -euo pipefail
layout=$1 tag=$2
here=$(cd "$(dirname "$0")" && pwd)
bundle=$(mktemp -d /var/tmp/hello-bundle.XXXXXX)
trap 'rm -rf "$bundle"' EXIT
[ -d "$layout" ] || umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci unpack --image "$layout:$tag" "$bundle/b" >/dev/null
root=$bundle/b/rootfs
mkdir -p "$root/bin" "$root/etc"
cp /bin/busybox "$root/bin/busybox"
for applet in sh cat echo sleep touch hostname ls id; do ln -s busybox "$root/bin/$applet"; done
cp -a "$here/rootfs/." "$root/"
echo "root:x:0:0:root:/:/bin/sh" > "$root/etc/passwd"
umoci repack --image "$layout:$tag" "$bundle/b" >/dev/null
umoci config --image "$layout:$tag" --config.cmd /usr/bin/hello --config.label atomic.type=system
