/* Small helpers shared by the native programs. Allocation failures abort (there is no useful recovery). */
#ifndef BERTH_UTIL_H
#define BERTH_UTIL_H
#include "error.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

void *xmalloc(size_t n);
/* Default disposition for every signal and an empty mask, right before exec'ing a container's process:
   SIG_IGN and the mask survive execve, and a caller's ignored SIGTERM would make the app deaf to `stop`. */
void berth_reset_signals(void);
void *xmalloc0(size_t n);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* IDs that become path components: [A-Za-z0-9][A-Za-z0-9_.-]{0,127}, never "." or "..". */
bool berth_valid_id(const char *id);

/* Read a whole file (NUL-terminated); *len_out may be NULL. */
int berth_read_file(const char *path, char **out, size_t *len_out, berth_err_t *err);
int berth_read_fd(int fd, char **out, size_t *len_out, berth_err_t *err);
/* Write data to path (O_TRUNC|O_CREAT, 0644, O_CLOEXEC); no fsync. For /proc and /sys knobs. */
int berth_write_file(const char *path, const char *data, size_t len, berth_err_t *err);
int berth_write_file_at(int dirfd, const char *name, const char *data, size_t len, berth_err_t *err);
/* Write to "<path>.tmp", fsync, rename over path, fsync the directory. */
int berth_write_file_atomic(const char *path, const char *data, size_t len, berth_err_t *err);
/* mkdir -p with mode for the created components. */
int berth_mkdir_p(const char *path, mode_t mode, berth_err_t *err);
/* rm -rf (does not cross mount points it cannot unlink; returns the first error). */
int berth_rm_rf(const char *path, berth_err_t *err);
/* write() / read() that retry on EINTR and short counts. */
ssize_t berth_write_all(int fd, const void *buf, size_t len);
ssize_t berth_read_all(int fd, void *buf, size_t len);

/* Dynamic string buffer. */
typedef struct {
  char *buf;
  size_t len, cap;
} berth_buf;
void berth_buf_append(berth_buf *b, const char *s, size_t n);
void berth_buf_puts(berth_buf *b, const char *s);
void berth_buf_printf(berth_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append s as a JSON string literal (quoted, escaped). */
void berth_buf_json_string(berth_buf *b, const char *s);

#endif
