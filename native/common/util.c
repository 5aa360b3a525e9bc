#include "util.h"
#include "cleanup.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void berth_reset_signals(void) {
  for (int sig = 1; sig < NSIG; sig++)
    if (sig != SIGKILL && sig != SIGSTOP) signal(sig, SIG_DFL); /* the libc-reserved RT ones fail: fine */
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
}

void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) abort();
  return p;
}
void *xmalloc0(size_t n) {
  void *p = calloc(1, n ? n : 1);
  if (!p) abort();
  return p;
}
void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) abort();
  return q;
}
char *xstrdup(const char *s) {
  char *p = strdup(s ? s : "");
  if (!p) abort();
  return p;
}
char *xasprintf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  if (vasprintf(&s, fmt, ap) < 0) abort();
  va_end(ap);
  return s;
}

bool berth_valid_id(const char *id) {
  size_t n = id ? strlen(id) : 0;
  if (n == 0 || n > 128) return false;
  if (strcmp(id, ".") == 0 || strcmp(id, "..") == 0) return false;
  for (size_t i = 0; i < n; i++) {
    char c = id[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              (i > 0 && (c == '_' || c == '.' || c == '-'));
    if (!ok) return false;
  }
  return true;
}

ssize_t berth_write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  size_t done = 0;
  while (done < len) {
    ssize_t r = write(fd, p + done, len - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    done += (size_t) r;
  }
  return (ssize_t) done;
}

ssize_t berth_read_all(int fd, void *buf, size_t len) {
  char *p = buf;
  size_t done = 0;
  while (done < len) {
    ssize_t r = read(fd, p + done, len - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) break;
    done += (size_t) r;
  }
  return (ssize_t) done;
}

int berth_read_fd(int fd, char **out, size_t *len_out, berth_err_t *err) {
  size_t cap = 4096, len = 0;
  char *buf = xmalloc(cap + 1);
  for (;;) {
    if (len == cap) {
      cap *= 2;
      buf = xrealloc(buf, cap + 1);
    }
    ssize_t r = read(fd, buf + len, cap - len);
    if (r < 0) {
      if (errno == EINTR) continue;
      free(buf);
      return berth_make_error(err, errno, "read");
    }
    if (r == 0) break;
    len += (size_t) r;
  }
  buf[len] = 0;
  *out = buf;
  if (len_out) *len_out = len;
  return 0;
}

int berth_read_file(const char *path, char **out, size_t *len_out, berth_err_t *err) {
  cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return berth_make_error(err, errno, "open `%s`", path);
  if (berth_read_fd(fd, out, len_out, err) < 0) return berth_error_prepend(err, "`%s`", path);
  return 0;
}

int berth_write_file_at(int dirfd, const char *name, const char *data, size_t len, berth_err_t *err) {
  cleanup_close int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return berth_make_error(err, errno, "open `%s`", name);
  if (berth_write_all(fd, data, len) < 0) return berth_make_error(err, errno, "write `%s`", name);
  return 0;
}

int berth_write_file(const char *path, const char *data, size_t len, berth_err_t *err) {
  return berth_write_file_at(AT_FDCWD, path, data, len, err);
}

int berth_write_file_atomic(const char *path, const char *data, size_t len, berth_err_t *err) {
  cleanup_free char *tmp = xasprintf("%s.tmp", path);
  cleanup_close int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return berth_make_error(err, errno, "open `%s`", tmp);
  if (berth_write_all(fd, data, len) < 0 || fsync(fd) < 0) {
    int e = errno;
    unlink(tmp);
    return berth_make_error(err, e, "write `%s`", tmp);
  }
  if (rename(tmp, path) < 0) {
    int e = errno;
    unlink(tmp);
    return berth_make_error(err, e, "rename `%s` to `%s`", tmp, path);
  }
  cleanup_free char *dir = xstrdup(path);
  char *slash = strrchr(dir, '/');
  if (slash) {
    if (slash == dir) slash[1] = 0;
    else *slash = 0;
    cleanup_close int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) fsync(dfd);
  }
  return 0;
}

int berth_mkdir_p(const char *path, mode_t mode, berth_err_t *err) {
  cleanup_free char *p = xstrdup(path);
  size_t n = strlen(p);
  for (size_t i = 1; i <= n; i++) {
    if (p[i] == '/' || p[i] == 0) {
      char saved = p[i];
      p[i] = 0;
      if (mkdir(p, mode) < 0 && errno != EEXIST) return berth_make_error(err, errno, "mkdir `%s`", p);
      p[i] = saved;
    }
  }
  return 0;
}

static int rm_rf_at(int parent, const char *name, berth_err_t *err) {
  if (unlinkat(parent, name, 0) == 0 || errno == ENOENT) return 0;
  if (errno != EISDIR && errno != EPERM) return berth_make_error(err, errno, "unlink `%s`", name);
  int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return berth_make_error(err, errno, "open `%s`", name);
  cleanup_dir DIR *d = fdopendir(fd);
  if (!d) {
    close(fd);
    return berth_make_error(err, errno, "opendir `%s`", name);
  }
  int ret = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
    if (rm_rf_at(dirfd(d), de->d_name, err) < 0 && ret == 0) ret = -1;
  }
  if (unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT && ret == 0)
    return berth_make_error(err, errno, "rmdir `%s`", name);
  return ret;
}

int berth_rm_rf(const char *path, berth_err_t *err) { return rm_rf_at(AT_FDCWD, path, err); }

void berth_buf_append(berth_buf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    b->cap = (b->len + n + 1) * 2;
    b->buf = xrealloc(b->buf, b->cap);
  }
  memcpy(b->buf + b->len, s, n);
  b->len += n;
  b->buf[b->len] = 0;
}
void berth_buf_puts(berth_buf *b, const char *s) { berth_buf_append(b, s, strlen(s)); }
void berth_buf_printf(berth_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  if (vasprintf(&s, fmt, ap) < 0) abort();
  va_end(ap);
  berth_buf_puts(b, s);
  free(s);
}
void berth_buf_json_string(berth_buf *b, const char *s) {
  berth_buf_append(b, "\"", 1);
  for (const unsigned char *p = (const unsigned char *) (s ? s : ""); *p; p++) {
    char esc[8];
    switch (*p) {
    case '"': berth_buf_append(b, "\\\"", 2); break;
    case '\\': berth_buf_append(b, "\\\\", 2); break;
    case '\n': berth_buf_append(b, "\\n", 2); break;
    case '\r': berth_buf_append(b, "\\r", 2); break;
    case '\t': berth_buf_append(b, "\\t", 2); break;
    default:
      if (*p < 0x20) {
        snprintf(esc, sizeof esc, "\\u%04x", *p);
        berth_buf_puts(b, esc);
      } else {
        berth_buf_append(b, (const char *) p, 1);
      }
    }
  }
  berth_buf_append(b, "\"", 1);
}
