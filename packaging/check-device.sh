#!/bin/sh
# Can this device run berth? Prints what berth needs and what the device has; exits 1 when something
# required is missing. Plain POSIX sh: runs before anything is installed.
#   sh check-device.sh [state-dir]
STATE=${1:-/var/lib/berth}
fail=0
ok() { printf '  ok    %s\n' "$1"; }
bad() { printf '  MISSING %s\n' "$1"; fail=1; }
note() { printf '  note  %s\n' "$1"; }

echo "berth device check"
m=$(uname -m)
case "$m" in
  x86_64|aarch64|armv7l|armv8l|ppc64le) ok "arch $m" ;;
  *) bad "arch $m: berth is built for x86_64, aarch64, armv7l and ppc64le" ;;
esac
kver=$(uname -r)
kmaj=${kver%%.*}; rest=${kver#*.}; kmin=${rest%%.*}
if [ "$kmaj" -gt 4 ] || { [ "$kmaj" -eq 4 ] && [ "$kmin" -ge 18 ]; }; then ok "kernel $kver (>= 4.18)"; else bad "kernel $kver: need >= 4.18"; fi

glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
if [ -z "$glibc" ]; then
  bad "glibc not found (musl or other libc): berth needs glibc >= 2.34"
else
  gmaj=${glibc%%.*}; gmin=${glibc#*.}; gmin=${gmin%%.*}
  if [ "$gmaj" -gt 2 ] || { [ "$gmaj" -eq 2 ] && [ "$gmin" -ge 34 ]; }; then ok "glibc $glibc (>= 2.34)"; else bad "glibc $glibc: need >= 2.34 (Debian 12, Ubuntu 22.04, RHEL 9 or newer)"; fi
fi
libdirs="/lib /usr/lib /lib64 /usr/lib64 /lib/$(uname -m)-linux-gnu* /usr/lib/*-linux-gnu*"
has_lib() { for d in $libdirs; do [ -e "$d/$1" ] && return 0; done; return 1; }
if has_lib libstdc++.so.6; then
  if strings "$(for d in $libdirs; do [ -e "$d/libstdc++.so.6" ] && echo "$d/libstdc++.so.6" && break; done)" 2>/dev/null | grep -q GLIBCXX_3.4.29; then
    ok "libstdc++.so.6 with GLIBCXX_3.4.29"
  else
    note "libstdc++.so.6 present; could not confirm GLIBCXX_3.4.29 (needs gcc 11+ runtime; 'strings' may be missing)"
  fi
else
  bad "libstdc++.so.6 (package libstdc++6)"
fi
case "$m" in
  armv7l|armv8l) if has_lib libatomic.so.1; then ok "libatomic.so.1"; else bad "libatomic.so.1 (package libatomic1): the armv7 Node needs it"; fi ;;
esac

if [ -d /sys/fs/cgroup ]; then
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then ok "cgroup v2 ($(cat /sys/fs/cgroup/cgroup.controllers))"; else ok "cgroup v1/hybrid"; fi
else
  bad "cgroups not mounted at /sys/fs/cgroup"
fi
for ns in mnt pid uts ipc net; do [ -e /proc/self/ns/$ns ] || bad "namespace $ns"; done
grep -qw overlay /proc/filesystems && ok "overlayfs" || note "no overlayfs (modprobe overlay), btrfs or devmapper needed"
grep -qw btrfs /proc/filesystems && ok "btrfs" || note "no btrfs"

d=$STATE
while [ ! -d "$d" ]; do d=$(dirname "$d"); done
mnt_opts=$(awk -v d="$d" '{ if (index(d, $5) == 1 && length($5) >= best) { best = length($5); o = $6 } } END { print o }' /proc/self/mountinfo)
case ",$mnt_opts," in
  *,noexec,*) bad "$STATE is on a noexec mount: berth extracts its native parts there (set BERTH_NATIVE_CACHE elsewhere)" ;;
  *) ok "$STATE can hold executables" ;;
esac
[ -w "$d" ] && ok "$d writable" || note "$d not writable by $(id -un) (the service runs as root)"

[ "$fail" = 0 ] && echo "device can run berth" || echo "device is missing something berth needs"
exit "$fail"
