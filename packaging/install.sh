#!/bin/sh
# Install a berth executable on a device without the .deb:
#   sh install.sh [--root DIR] [--no-start] [path/to/berth-linux-<arch>]
# Without a path, picks ./berth-linux-<arch> for this machine. --root installs into DIR (an image being built,
# or a test); systemd is then left alone. The config is installed only when none exists.
set -eu
ROOT=
START=1
EXE=
here=$(cd "$(dirname "$0")" && pwd)
while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT=$2; shift 2 ;;
    --no-start) START=0; shift ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) EXE=$1; shift ;;
  esac
done
case "$(uname -m)" in
  x86_64) arch=x64 ;;
  aarch64|arm64) arch=arm64 ;;
  armv7l|armv8l) arch=armv7 ;;
  ppc64le) arch=ppc64le ;;
  *) arch=unknown ;;
esac
if [ -z "$EXE" ]; then
  EXE=$here/berth-linux-$arch
  [ -f "$EXE" ] || EXE=$here/../dist/berth-linux-$arch
fi
[ -f "$EXE" ] || { echo "install.sh: no executable (looked for berth-linux-$arch); pass its path" >&2; exit 1; }
for f in berth.service config.yaml; do
  [ -f "$here/$f" ] || { echo "install.sh: $here/$f missing (run from the packaging/ directory)" >&2; exit 1; }
done

install -d "$ROOT/usr/local/bin" "$ROOT/etc/systemd/system" "$ROOT/etc/berth"
install -d -m 0700 "$ROOT/var/lib/berth"
install -m 0755 "$EXE" "$ROOT/usr/local/bin/berth"
sed 's#/usr/bin/berth#/usr/local/bin/berth#' "$here/berth.service" >"$ROOT/etc/systemd/system/berth.service"
chmod 0644 "$ROOT/etc/systemd/system/berth.service"
if [ ! -f "$ROOT/etc/berth/config.yaml" ]; then
  install -m 0644 "$here/config.yaml" "$ROOT/etc/berth/config.yaml"
else
  echo "install.sh: keeping existing $ROOT/etc/berth/config.yaml"
fi
echo "install.sh: installed $ROOT/usr/local/bin/berth ($("$ROOT/usr/local/bin/berth" version 2>/dev/null | head -1 || echo 'not runnable here'))"

if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  if [ "$START" = 1 ]; then
    systemctl enable --now berth.service
  else
    systemctl enable berth.service
  fi
fi
