/**
 * berth-runtime's v1 backend on a hybrid host the test VM builds for the purpose (test/vm, Debian's
 * kernel): before any cgroup exists the guest moves its cgroup2 mount to /sys/fs/cgroup/unified, takes io
 * and memory off it and mounts blkio, memory, devices and net_cls,net_prio as v1 hierarchies, loads BFQ
 * and switches the disk to it. That exercises what the dev host cannot: BFQ's v1 files
 * (blkio.bfq.weight[_device]), net_cls/net_prio applied, memory.kmem.tcp on another kernel, hugetlb
 * applied in the unified hierarchy with the container's process there, and a missing v1 controller (pids)
 * failing create. The guest prints `RESULT <name> <value>` lines.
 */
import test from 'ava';
import { needPrivileges } from '../../helpers/privileged.js';
import { baseConfig, type OciConfig } from '../../helpers/runtime-native.js';
import { DISK, runGuest, vmShare, writeBundles } from '../../helpers/runtime-vm.js';
import { VM_HOST_TOOLS } from '../../vm/vm.js';

const GUEST_SCRIPT = `
set -u
D=$SHARE
R="$D/berth-runtime --root /run/rt"
res() { echo "RESULT $1 $2"; }
U=/sys/fs/cgroup/unified
mkdir -p /run/cg2 && mount --move /sys/fs/cgroup /run/cg2
mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
mkdir $U && mount --move /run/cg2 $U
for c in io memory; do echo "-$c" > $U/cgroup.subtree_control; done
for h in blkio memory devices net_cls,net_prio; do
  mkdir /sys/fs/cgroup/$h && mount -t cgroup -o $h cgroup /sys/fs/cgroup/$h || res mount-failed $h
done
res layout "$(ls /sys/fs/cgroup | tr '\\n' ' ')"
insmod "$BFQ_KO" && echo bfq > /sys/block/vda/queue/scheduler
DISK=$(cat /sys/block/vda/dev)
res disk "$DISK"
sed -i "s/DISK_MAJOR/\${DISK%:*}/;s/DISK_MINOR/\${DISK#*:}/" $D/limits/config.json
$R create --bundle $D/limits limits > /run/limits.out 2>&1 < /dev/null; res create-exit $?
PID=$($R state limits | sed 's/.*"pid":\\([0-9]*\\).*/\\1/')
res hugetlb-unified "$(cat $U/berth-vm-h/hugetlb.2MB.max)"
res in-unified "$(grep -c "^$PID$" $U/berth-vm-h/cgroup.procs)"
$R start limits
for i in $(seq 100); do $R state limits | grep -q '"stopped"' && break; sleep 0.2; done
while read -r k v; do res "in-$k" "$v"; done < /run/limits.out
$R delete limits; res delete-exit $?
$R create --bundle $D/pids pids > /run/pids.out 2>&1 < /dev/null; res pids-exit $?
res pids-error "$(grep -c 'needs the pids cgroup controller: no v1 hierarchy' /run/pids.out)"
res leftover "$(ls -d /sys/fs/cgroup/*/berth-vm-* 2>/dev/null | wc -l)"
`;

test('cgroup v1 on a hybrid host in a VM: BFQ weights, net_cls/net_prio, kmem.tcp, hugetlb in the unified tree', async (t) => {
  if (!needPrivileges(t, { root: true, paths: VM_HOST_TOOLS })) return;
  t.timeout(15 * 60_000);
  const share = await vmShare(t, 'berth-rt-hybrid-vm-');
  const { rootfs } = share;
  const probe = [
    'cd /sys/fs/cgroup',
    'echo "bfq-weight $(cat blkio/blkio.bfq.weight | tr " " _)"',
    'echo "bfq-weight-device $(cat blkio/blkio.bfq.weight_device | tr " \\n" "_ ")"',
    'echo "classid $(cat net_cls,net_prio/net_cls.classid)"',
    'echo "ifpriomap $(grep "^lo " net_cls,net_prio/net_prio.ifpriomap | tr " " _)"',
    'echo "kmem-tcp $(cat memory/memory.kmem.tcp.limit_in_bytes)"',
    'echo "memory-limit $(cat memory/memory.limit_in_bytes)"',
  ].join('; ');
  const limits: OciConfig = baseConfig(rootfs, ['sh', '-c', probe], '/berth-vm-h');
  limits.linux.resources = {
    ...limits.linux.resources,
    blockIO: { weight: 300, weightDevice: [{ major: DISK[0], minor: DISK[1], weight: 500 }] },
    network: { classID: 0x100001, priorities: [{ name: 'lo', priority: 5 }] },
    memory: { limit: 64 << 20, kernelTCP: 3 << 20 },
    hugepageLimits: [{ pageSize: '2MB', limit: 4 << 20 }],
  };
  const pids: OciConfig = baseConfig(rootfs, ['true'], '/berth-vm-p');
  pids.linux.resources = { ...pids.linux.resources, pids: { limit: 10 } };
  await writeBundles(share.dir, { limits, pids });
  const results = await runGuest(t, share, GUEST_SCRIPT);
  t.false(results.has('mount-failed'), `v1 mounts: ${results.get('mount-failed')}`);
  t.is(results.get('layout'), 'blkio devices memory net_cls,net_prio unified');
  const disk = results.get('disk') ?? '?';
  t.is(results.get('create-exit'), '0');
  t.is(results.get('hugetlb-unified'), String(4 << 20), 'hugetlb applied in the unified hierarchy');
  t.is(results.get('in-unified'), '1', "the container's init is in the unified cgroup too");
  t.is(results.get('in-bfq-weight'), '300');
  t.is(results.get('in-bfq-weight-device'), `default_300 ${disk}_500`);
  t.is(results.get('in-classid'), String(0x100001));
  t.is(results.get('in-ifpriomap'), 'lo_5');
  t.is(results.get('in-kmem-tcp'), String(3 << 20));
  t.is(results.get('in-memory-limit'), String(64 << 20));
  t.is(results.get('delete-exit'), '0');
  t.is(results.get('pids-exit'), '1', 'a limit whose v1 controller is not mounted fails create');
  t.is(results.get('pids-error'), '1');
  t.is(results.get('leftover'), '0');
});
