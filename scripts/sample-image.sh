#!/usr/bin/env bash
# Build berth's sample image from busybox-static with umoci: an OCI image layout at <dir>, tag <tag>.
#   scripts/sample-image.sh <dir> [tag] [message]
# Two layers: a shared base (busybox, tag "base" in <dir>, built once) and a small app layer with
# <message>, so v1 and v2 built into one <dir> differ in one layer only. The image prints <message>
# every 2 s and serves it over HTTP on :8080 (busybox httpd); it exits 0 on SIGTERM.
set -euo pipefail
dir=$1 tag=${2:-v1} msg=${3:-"hello from berth sample $tag"}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[[ -f $dir/oci-layout ]] || umoci init --layout "$dir" >/dev/null
if ! umoci stat --image "$dir:base" >/dev/null 2>&1; then
  umoci new --image "$dir:base" >/dev/null
  umoci unpack --image "$dir:base" "$work/base" >/dev/null
  r=$work/base/rootfs
  mkdir -p "$r/bin" "$r/etc" "$r/tmp" "$r/proc" "$r/sys" "$r/dev" "$r/www" "$r/data"
  chmod 1777 "$r/tmp"
  cp /bin/busybox "$r/bin/busybox"
  for a in sh ls cat echo sleep date httpd wget nc id hostname true false ps kill touch mkdir rm; do ln -sf busybox "$r/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/tmp:/bin/sh\n' >"$r/etc/passwd"
  printf 'root:x:0:\napp:x:1000:\n' >"$r/etc/group"
  umoci repack --image "$dir:base" "$work/base" >/dev/null
  umoci config --image "$dir:base" --os linux --architecture amd64 >/dev/null
fi
umoci unpack --image "$dir:base" "$work/b" >/dev/null
r=$work/b/rootfs
echo "$msg" >"$r/www/index.html"
# As PID 1 the shell gets no default action for SIGTERM: without the trap every stop would wait out the
# stop timeout and end in SIGKILL. `sleep & wait` lets the trap run at once.
cat >"$r/bin/app" <<APP
#!/bin/sh
trap 'exit 0' TERM INT
httpd -p 8080 -h /www
while true; do echo "\$(date -u +%H:%M:%S) $msg"; sleep 2 & wait \$!; done
APP
chmod 755 "$r/bin/app"
umoci repack --image "$dir:$tag" "$work/b" >/dev/null
umoci config --image "$dir:$tag" --os linux --architecture amd64 \
  --config.cmd /bin/app --config.env PATH=/bin --config.workingdir / --config.exposedports 8080/tcp >/dev/null
umoci gc --layout "$dir"
