/* page-out <pid>: {"bytes":N,"ranges":N} — hand the clean file-backed pages of a process's read-only
 * private mappings (its executable's code and read-only data, its libraries) back to the kernel with
 * process_madvise(MADV_PAGEOUT) (Linux >= 5.10; needs CAP_SYS_NICE and ptrace access to the process).
 *
 * What for: a Node process touches far more of its executable while starting than it uses afterwards
 * (bootstrap, the compiler tiers, start-up-only JavaScript), and those clean pages stay mapped — counted in
 * its RSS — until memory runs short. The agent calls this on itself once it has settled (src/agent/page-out.ts);
 * whatever it touches again is read back on the next fault, so what stays is its working set. Android's
 * app compaction does the same to cached apps. The kernel skips pages other processes map too (a shared
 * libc), writable mappings are left alone (their copied pages are anonymous: without swap, nothing to do),
 * and a mapping the kernel refuses (locked, PFN-mapped) is skipped. Nothing is lost: the pages are clean. */
#include <fcntl.h>
#include <inttypes.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include "storage.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434 /* the same number on every architecture since 5.3 */
#endif
#ifndef SYS_process_madvise
#define SYS_process_madvise 440
#endif
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

int bs_page_out(const char *pid_text, FILE *out, berth_err_t *err) {
  char *end = NULL;
  errno = 0;
  long pid = strtol(pid_text, &end, 10);
  if (errno || !end || *end || pid <= 0 || pid > 4194304) return berth_make_error(err, EINVAL, "not a pid: %s", pid_text);
  cleanup_close int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
  if (pidfd < 0) return berth_make_error(err, errno, "pidfd_open %ld", pid);
  char path[64];
  snprintf(path, sizeof path, "/proc/%ld/maps", pid);
  cleanup_fclose FILE *maps = fopen(path, "re");
  if (!maps) return berth_make_error(err, errno, "open %s", path);
  uint64_t bytes = 0, ranges = 0;
  char line[4352];
  while (fgets(line, sizeof line, maps)) {
    unsigned long start, stop, inode;
    char perms[5];
    if (sscanf(line, "%lx-%lx %4s %*s %*s %lu", &start, &stop, perms, &inode) != 4) continue;
    if (inode == 0 || perms[0] != 'r' || perms[1] == 'w' || perms[3] != 'p') continue;
    struct iovec iov = {(void *)start, stop - start};
    ssize_t n = syscall(SYS_process_madvise, pidfd, &iov, (size_t)1, MADV_PAGEOUT, 0u);
    if (n < 0) {
      /* no such call, not allowed, or this kernel takes no MADV_PAGEOUT from another process: say so */
      if (errno == ENOSYS || errno == EPERM || errno == ESRCH) return berth_make_error(err, errno, "process_madvise");
      continue; /* EINVAL: a mapping the kernel will not page out (VM_LOCKED, VM_PFNMAP…) */
    }
    bytes += (uint64_t)n;
    ranges++;
  }
  if (ranges == 0) return berth_make_error(err, EINVAL, "process %ld: no mapping could be paged out", pid);
  fprintf(out, "{\"bytes\":%" PRIu64 ",\"ranges\":%" PRIu64 "}\n", bytes, ranges);
  return 0;
}
