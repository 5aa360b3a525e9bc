#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int
mon_fail (mon_err *err, int errno_, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (err->msg, sizeof err->msg, fmt, ap);
  va_end (ap);
  err->errno_ = errno_;
  if (errno_ != 0)
    {
      size_t n = strlen (err->msg);
      snprintf (err->msg + n, sizeof err->msg - n, ": %s", strerror (errno_));
    }
  return -1;
}

int
mon_context (mon_err *err, const char *fmt, ...)
{
  char prefix[256];
  char old[sizeof err->msg];
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (prefix, sizeof prefix, fmt, ap);
  va_end (ap);
  memcpy (old, err->msg, sizeof old);
  size_t pl = strnlen (prefix, sizeof prefix);
  size_t ol = strnlen (old, sizeof old);
  size_t cap = sizeof err->msg - 1;
  size_t o = 0;
  for (size_t i = 0; i < pl && o < cap; i++)
    err->msg[o++] = prefix[i];
  for (size_t i = 0; i < 2 && o < cap; i++)
    err->msg[o++] = ": "[i];
  for (size_t i = 0; i < ol && o < cap; i++)
    err->msg[o++] = old[i];
  err->msg[o] = '\0';
  return -1;
}

void
mon_cleanup_closep (int *fd)
{
  if (*fd >= 0)
    close (*fd);
}

void
mon_cleanup_freep (void *p)
{
  free (*(void **) p);
}

int
write_all (int fd, const char *buf, size_t len)
{
  while (len > 0)
    {
      ssize_t n = write (fd, buf, len);
      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          return -1;
        }
      buf += n;
      len -= (size_t) n;
    }
  return 0;
}

int
write_file_atomic (const char *dir, const char *name, const char *data, size_t len, mon_err *err)
{
  char tmp[4096], dst[4096];
  if (snprintf (tmp, sizeof tmp, "%s/.tmp-%s-%d", dir, name, (int) getpid ()) >= (int) sizeof tmp
      || snprintf (dst, sizeof dst, "%s/%s", dir, name) >= (int) sizeof dst)
    return mon_fail (err, ENAMETOOLONG, "path %s/%s", dir, name);
  cleanup_close int fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return mon_fail (err, errno, "create %s", tmp);
  if (write_all (fd, data, len) < 0 || fsync (fd) < 0)
    {
      int e = errno;
      unlink (tmp);
      return mon_fail (err, e, "write %s", tmp);
    }
  if (rename (tmp, dst) < 0)
    {
      int e = errno;
      unlink (tmp);
      return mon_fail (err, e, "rename %s to %s", tmp, dst);
    }
  cleanup_close int dfd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0)
    (void) fsync (dfd);
  return 0;
}

ssize_t
read_small_file (const char *path, char *buf, size_t cap, mon_err *err)
{
  cleanup_close int fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return mon_fail (err, errno, "open %s", path);
  size_t off = 0;
  while (off + 1 < cap)
    {
      ssize_t n = read (fd, buf + off, cap - 1 - off);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return mon_fail (err, errno, "read %s", path);
      if (n == 0)
        break;
      off += (size_t) n;
    }
  buf[off] = '\0';
  return (ssize_t) off;
}

pid_t
spawn_process (char *const argv[], int in_fd, int out_fd, int err_fd, mon_err *err)
{
  pid_t pid = fork ();
  if (pid < 0)
    return mon_fail (err, errno, "fork for %s", argv[0]);
  if (pid == 0)
    {
      int null = open ("/dev/null", O_RDWR);
      int fds[3] = { in_fd, out_fd, err_fd };
      for (int i = 0; i < 3; i++)
        if (dup2 (fds[i] >= 0 ? fds[i] : null, i) < 0)
          _exit (127);
      /* the monitor ignores SIGTERM & co. for itself; the runtime (and so the app) starts with defaults */
      for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
          signal (sig, SIG_DFL);
      sigset_t none;
      sigemptyset (&none);
      sigprocmask (SIG_SETMASK, &none, NULL);
      execv (argv[0], argv);
      dprintf (2, "berth-monitor: exec %s: %s\n", argv[0], strerror (errno));
      _exit (127);
    }
  return pid;
}

int
wait_for (pid_t pid, int *status, mon_err *err)
{
  for (;;)
    {
      pid_t r = waitpid (pid, status, 0);
      if (r == pid)
        return 0;
      if (r < 0 && errno == EINTR)
        continue;
      return mon_fail (err, errno, "waitpid %d", (int) pid);
    }
}

void
format_now (char *buf, size_t len)
{
  struct timespec ts;
  struct tm tm;
  clock_gettime (CLOCK_REALTIME, &ts);
  gmtime_r (&ts.tv_sec, &tm);
  snprintf (buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
            tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec);
}

ssize_t
json_escape (const char *s, size_t len, char *out, size_t cap)
{
  static const char hex[] = "0123456789abcdef";
  size_t o = 0;
  for (size_t i = 0; i < len; i++)
    {
      unsigned char c = (unsigned char) s[i];
      char tmp[6];
      size_t n = 0;
      switch (c)
        {
        case '"': tmp[0] = '\\'; tmp[1] = '"'; n = 2; break;
        case '\\': tmp[0] = '\\'; tmp[1] = '\\'; n = 2; break;
        case '\n': tmp[0] = '\\'; tmp[1] = 'n'; n = 2; break;
        case '\r': tmp[0] = '\\'; tmp[1] = 'r'; n = 2; break;
        case '\t': tmp[0] = '\\'; tmp[1] = 't'; n = 2; break;
        default:
          if (c < 0x20 || c == 0x7f)
            {
              tmp[0] = '\\'; tmp[1] = 'u'; tmp[2] = '0'; tmp[3] = '0';
              tmp[4] = hex[c >> 4]; tmp[5] = hex[c & 15];
              n = 6;
            }
          else
            {
              tmp[0] = (char) c;
              n = 1;
            }
        }
      if (o + n > cap)
        return -1;
      memcpy (out + o, tmp, n);
      o += n;
    }
  return (ssize_t) o;
}
