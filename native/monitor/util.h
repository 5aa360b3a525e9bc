/* berth-monitor: small shared helpers (errors, cleanup attributes, atomic files, spawning). */
#ifndef BERTH_MONITOR_UTIL_H
#define BERTH_MONITOR_UTIL_H

#include <stddef.h>
#include <sys/types.h>

/* Errors the crun way: functions return a negative int and fill this out-parameter. */
typedef struct mon_err {
  int errno_;
  char msg[512];
} mon_err;

int mon_fail (mon_err *err, int errno_, const char *fmt, ...) __attribute__ ((format (printf, 3, 4)));
/* Prefix the message already in err with more context (going up the stack). */
int mon_context (mon_err *err, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

void mon_cleanup_closep (int *fd);
void mon_cleanup_freep (void *p);
#define cleanup_close __attribute__ ((cleanup (mon_cleanup_closep)))
#define cleanup_free __attribute__ ((cleanup (mon_cleanup_freep)))

/* Write data to dir/name via a temp file, fsync, rename, fsync(dir). */
int write_file_atomic (const char *dir, const char *name, const char *data, size_t len, mon_err *err);
/* Read a small file (up to cap-1 bytes) into buf, NUL-terminated. Returns bytes read or negative. */
ssize_t read_small_file (const char *path, char *buf, size_t cap, mon_err *err);
/* write() all of buf, retrying on EINTR and short writes. */
int write_all (int fd, const char *buf, size_t len);

/* fork + exec argv with the given fds as stdin/stdout/stderr (-1: /dev/null). Returns the child pid. */
pid_t spawn_process (char *const argv[], int in_fd, int out_fd, int err_fd, mon_err *err);
/* waitpid for one pid, retrying on EINTR; returns 0 and the raw status. */
int wait_for (pid_t pid, int *status, mon_err *err);

/* RFC 3339 UTC time with nanoseconds into buf (>= 40 bytes). */
void format_now (char *buf, size_t len);
/* Append s (len bytes) to out as a JSON string body (no quotes); returns bytes written or -1 if no room. */
ssize_t json_escape (const char *s, size_t len, char *out, size_t cap);

#endif
