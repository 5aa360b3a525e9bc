/**
 * Docker's default seccomp profile as data, following the structure of moby's profiles/seccomp/default.json:
 * an allowlist (default action SCMP_ACT_ERRNO with EPERM) whose entries may be gated on the container's
 * capabilities (`includes.caps` / `excludes.caps`) or on the architecture. `renderDefaultSeccomp` resolves
 * the gates for one container the way dockerd does at spec time, so the runtime gets a plain
 * runtime-spec `linux.seccomp` object. Pure: no I/O.
 */
import type { LinuxSeccomp, SeccompSyscall } from './spec.js';

interface Gate {
  caps?: string[];
  arches?: string[];
}
interface ProfileEntry extends SeccompSyscall {
  includes?: Gate;
  excludes?: Gate;
}

const EPERM = 1;
const ENOSYS = 38;
/** CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET (= 2114060288): forbidden without SYS_ADMIN. */
const CLONE_NAMESPACE_FLAGS = 0x7e020000;
const AF_VSOCK = 40;

/** OCI arch names per Go/OCI platform architecture (the "archMap" of the moby profile). */
export const SECCOMP_ARCH_MAP: Record<string, string[]> = {
  amd64: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
  arm64: ['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM'],
  arm: ['SCMP_ARCH_ARM'],
  ppc64le: ['SCMP_ARCH_PPC64LE'],
  ppc64: ['SCMP_ARCH_PPC64'],
  s390x: ['SCMP_ARCH_S390X', 'SCMP_ARCH_S390'],
  riscv64: ['SCMP_ARCH_RISCV64'],
};

const ALLOWED: string[] =
  `accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64 clock_nanosleep
clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2 dup3 epoll_create epoll_create1
epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit
exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2
fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat
fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_requeue futex_time64 futex_wait
futex_waitv futex_wake futimesat getcpu getcwd getdents getdents64 getegid getegid32 geteuid geteuid32 getgid
getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp getpid getppid getpriority getrandom
getresgid getresgid32 getresuid getresuid32 getrlimit get_robust_list getrusage getsid getsockname getsockopt
get_thread_area gettid gettimeofday getuid getuid32 getxattr inotify_add_watch inotify_init inotify_init1
inotify_rm_watch io_cancel ioctl io_destroy io_getevents io_pgetevents io_pgetevents_time64 ioprio_get
ioprio_set io_setup io_submit ipc kill landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown
lchown32 lgetxattr link linkat listen listxattr llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64
madvise map_shadow_stack membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2
mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64
mq_timedsend mq_timedsend_time64 mq_unlink mremap msgctl msgget msgrcv msgsnd msync munlock munlockall munmap
name_to_handle_at nanosleep newfstatat _newselect open openat openat2 pause pidfd_open pidfd_send_signal pipe
pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2 prlimit64
process_mrelease pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv
recv recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages removexattr rename renameat renameat2
restart_syscall rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn
rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr
sched_getparam sched_get_priority_max sched_get_priority_min sched_getscheduler sched_rr_get_interval
sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam sched_setscheduler sched_yield
seccomp select semctl semget semop semtimedop semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg
sendto setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid
setpriority setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit
set_robust_list setsid setsockopt set_thread_area set_tid_address setuid setuid32 setxattr shmat shmctl shmdt
shmget shutdown sigaltstack signalfd signalfd4 sigprocmask sigreturn socketcall socketpair splice stat stat64
statfs statfs64 statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time timer_create
timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime timer_settime64 timerfd_create
timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill truncate truncate64 ugetrlimit
umask uname unlink unlinkat utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write
writev`.split(/\s+/);

const allow = (names: string[], extra: Partial<ProfileEntry> = {}): ProfileEntry => ({
  names,
  action: 'SCMP_ACT_ALLOW',
  ...extra,
});

/** The profile: entries are evaluated as a whole; gates decide which ones a container gets. */
export const DEFAULT_SECCOMP_PROFILE: {
  defaultAction: string;
  defaultErrnoRet: number;
  syscalls: ProfileEntry[];
} = {
  defaultAction: 'SCMP_ACT_ERRNO',
  defaultErrnoRet: EPERM,
  syscalls: [
    allow(ALLOWED),
    // socket(2) for every family except vsock (host <-> VM channel).
    allow(['socket'], { args: [{ index: 0, value: AF_VSOCK, op: 'SCMP_CMP_NE' }] }),
    // personality(2): only the harmless personas (PER_LINUX, PER_LINUX32, UNAME26 variants, query).
    ...[0, 8, 131072, 131080, 4294967295].map((value) =>
      allow(['personality'], { args: [{ index: 0, value, op: 'SCMP_CMP_EQ' }] }),
    ),
    // Kernel >= 4.8 closes the ptrace seccomp bypass, so moby allows these for everyone.
    allow(['process_vm_readv', 'process_vm_writev', 'ptrace']),
    allow(['sync_file_range2', 'swapcontext'], { includes: { arches: ['ppc64le'] } }),
    allow(
      ['arm_fadvise64_64', 'arm_sync_file_range', 'sync_file_range2', 'breakpoint', 'cacheflush', 'set_tls'],
      {
        includes: { arches: ['arm', 'arm64'] },
      },
    ),
    allow(['arch_prctl'], { includes: { arches: ['amd64'] } }),
    allow(['modify_ldt'], { includes: { arches: ['amd64'] } }),
    allow(['riscv_flush_icache'], { includes: { arches: ['riscv64'] } }),
    allow(['open_by_handle_at'], { includes: { caps: ['CAP_DAC_READ_SEARCH'] } }),
    allow(
      `bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount mount_setattr move_mount
open_tree perf_event_open quotactl quotactl_fd setdomainname sethostname setns syslog umount umount2 unshare`.split(
        /\s+/,
      ),
      { includes: { caps: ['CAP_SYS_ADMIN'] } },
    ),
    // Without SYS_ADMIN: clone(2) only without namespace flags; clone3 reports ENOSYS so libc falls back
    // to clone (its flags live in memory seccomp cannot inspect).
    allow(['clone'], {
      args: [{ index: 0, value: CLONE_NAMESPACE_FLAGS, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }],
      excludes: { caps: ['CAP_SYS_ADMIN'] },
    }),
    {
      names: ['clone3'],
      action: 'SCMP_ACT_ERRNO',
      errnoRet: ENOSYS,
      excludes: { caps: ['CAP_SYS_ADMIN'] },
    },
    allow(['reboot'], { includes: { caps: ['CAP_SYS_BOOT'] } }),
    allow(['chroot'], { includes: { caps: ['CAP_SYS_CHROOT'] } }),
    allow(['delete_module', 'init_module', 'finit_module'], { includes: { caps: ['CAP_SYS_MODULE'] } }),
    allow(['acct'], { includes: { caps: ['CAP_SYS_PACCT'] } }),
    allow(['kcmp', 'pidfd_getfd', 'process_madvise'], { includes: { caps: ['CAP_SYS_PTRACE'] } }),
    allow(['iopl', 'ioperm'], { includes: { caps: ['CAP_SYS_RAWIO'] } }),
    allow(['settimeofday', 'stime', 'clock_settime', 'clock_settime64'], {
      includes: { caps: ['CAP_SYS_TIME'] },
    }),
    allow(['vhangup'], { includes: { caps: ['CAP_SYS_TTY_CONFIG'] } }),
    allow(['get_mempolicy', 'mbind', 'set_mempolicy', 'set_mempolicy_home_node'], {
      includes: { caps: ['CAP_SYS_NICE'] },
    }),
    allow(['syslog'], { includes: { caps: ['CAP_SYSLOG'] } }),
    allow(['bpf'], { includes: { caps: ['CAP_BPF'] } }),
    allow(['perf_event_open'], { includes: { caps: ['CAP_PERFMON'] } }),
  ],
};

function gateHolds(gate: Gate, caps: ReadonlySet<string>, arch: string): boolean {
  if (gate.caps && !gate.caps.every((c) => caps.has(c))) return false;
  if (gate.arches && !gate.arches.includes(arch)) return false;
  return true;
}

/**
 * The profile for one container: entries whose `includes` hold and whose `excludes` do not, for the OCI
 * platform `arch` (amd64, arm64, arm, ppc64le…) and the container's bounding capabilities.
 */
export function renderDefaultSeccomp(caps: ReadonlySet<string>, arch: string): LinuxSeccomp {
  const syscalls: SeccompSyscall[] = [];
  for (const e of DEFAULT_SECCOMP_PROFILE.syscalls) {
    if (e.includes && !gateHolds(e.includes, caps, arch)) continue;
    if (e.excludes && (e.excludes.caps || e.excludes.arches) && gateHolds(e.excludes, caps, arch)) continue;
    const { includes: _i, excludes: _e, ...rule } = e;
    syscalls.push(rule);
  }
  return {
    defaultAction: DEFAULT_SECCOMP_PROFILE.defaultAction,
    defaultErrnoRet: DEFAULT_SECCOMP_PROFILE.defaultErrnoRet,
    architectures: SECCOMP_ARCH_MAP[arch] ?? [],
    syscalls,
  };
}
