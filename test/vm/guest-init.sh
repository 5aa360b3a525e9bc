#!/bin/busybox sh
# /init of berth's test VM (built into the initramfs by test/vm/vm.ts). Runs as PID 1 in the guest.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
up() { cut -d' ' -f1 /proc/uptime; }

# pivot_root cannot leave an initramfs root (EINVAL), so containers in the guest would fail: copy the
# initramfs into a tmpfs and switch_root there once.
# Modules are loaded before that so the copy stays small.
if [ ! -e /.switched ]; then
  /bin/mount -t proc proc /proc
  echo "INIT: started at $(up)s"
  for m in $(/bin/cat /kmod/load-order); do /bin/insmod "/kmod/$m" || echo "INIT: insmod $m failed"; done
  echo "INIT: modules loaded at $(up)s"
  /bin/umount /proc
  /bin/mkdir /newroot
  /bin/mount -t tmpfs -o size=75%,mode=755 rootfs /newroot
  for f in /*; do
    case "$f" in /newroot | /kmod) ;; *) /bin/cp -a "$f" /newroot/ ;; esac
  done
  /bin/touch /newroot/.switched
  exec /bin/switch_root /newroot /init
fi

/bin/mount -t devtmpfs dev /dev
/bin/mount -t proc proc /proc
echo "INIT: switched root at $(up)s"
/bin/mkdir -p /dev/pts /dev/shm /dev/mqueue
/bin/mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
/bin/mount -t tmpfs -o mode=1777 shm /dev/shm
/bin/mount -t sysfs sys /sys
/bin/mount -t tmpfs -o mode=1777 tmp /tmp
/bin/mount -t tmpfs -o mode=755 run /run

# pure cgroup v2, every controller delegated to children (like systemd does)
/bin/mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
for c in $(/bin/cat /sys/fs/cgroup/cgroup.controllers); do
  echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || echo "INIT: cannot enable cgroup controller $c"
done

/bin/mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostusr /usr || echo "INIT: 9p /usr failed"
/bin/mkdir -p /run/berth-vm
/bin/mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 berthrun /run/berth-vm || echo "INIT: 9p run dir failed"

shares=-; cwd=/root
for arg in $(/bin/cat /proc/cmdline); do
  case "$arg" in
    berth.shares=*) shares=${arg#berth.shares=} ;;
    berth.cwd=*) cwd=${arg#berth.cwd=} ;;
  esac
done
if [ "$shares" != - ]; then
  for s in $(echo "$shares" | /bin/tr , ' '); do
    tag=${s%%:*}; rest=${s#*:}; dir=${rest%:*}; mode=${rest##*:}
    /bin/mkdir -p "$dir"
    /bin/mount -t 9p -o "trans=virtio,version=9p2000.L,msize=512000,$mode" "$tag" "$dir" || echo "INIT: 9p $dir failed"
  done
fi

/bin/hostname berth-vm
/bin/ip link set lo up 2>/dev/null
export HOME=/root TMPDIR=/tmp
. /run/berth-vm/env.sh
cd "$cwd" || cd /
echo "BERTH-VM-BEGIN uptime=$(up)"
/bin/sh /run/berth-vm/cmd.sh < /dev/null
rc=$?
echo "BERTH-VM-RESULT code=$rc uptime=$(up)"
/bin/sync
/bin/poweroff -f
