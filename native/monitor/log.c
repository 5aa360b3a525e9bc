/*
 * Log lines are docker json-file entries: {"log":"<line>\n","stream":"stdout","time":"<RFC3339Nano>"}.
 * Flash wear: entries collect in a 64 KiB buffer handed to the kernel when full or every flush interval
 * (main.c), never one write per line; fsync only at rotation and at exit. Rotation keeps max_files files
 * (log.json, log.json.1 … log.json.<max_files-1>), each at most max_size bytes, so the cap on disk is
 * max_size * max_files.
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int
open_current (log_writer *w, mon_err *err)
{
  char path[4200];
  snprintf (path, sizeof path, "%s/log.json", w->dir);
  w->fd = open (path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (w->fd < 0)
    return mon_fail (err, errno, "open %s", path);
  struct stat st;
  if (fstat (w->fd, &st) < 0)
    return mon_fail (err, errno, "stat %s", path);
  w->size = st.st_size;
  return 0;
}

int
log_open (log_writer *w, const char *dir, off_t max_size, int max_files, mon_err *err)
{
  if (snprintf (w->dir, sizeof w->dir, "%s", dir) >= (int) sizeof w->dir)
    return mon_fail (err, ENAMETOOLONG, "log dir %s", dir);
  w->max_size = max_size;
  w->max_files = max_files < 1 ? 1 : max_files;
  w->out_len = 0;
  return open_current (w, err);
}

int
log_flush (log_writer *w, mon_err *err)
{
  if (w->out_len == 0)
    return 0;
  if (write_all (w->fd, w->out, w->out_len) < 0)
    {
      int e = errno;
      w->out_len = 0; /* a full disk must not wedge the monitor: drop and report */
      return mon_fail (err, e, "write %s/log.json", w->dir);
    }
  w->out_len = 0;
  return 0;
}

int
log_sync (log_writer *w, mon_err *err)
{
  if (log_flush (w, err) < 0)
    return -1;
  if (fsync (w->fd) < 0 && errno != EINVAL)
    return mon_fail (err, errno, "fsync %s/log.json", w->dir);
  return 0;
}

static int
rotate (log_writer *w, mon_err *err)
{
  if (log_sync (w, err) < 0)
    return -1;
  if (w->max_files == 1)
    {
      if (ftruncate (w->fd, 0) < 0)
        return mon_fail (err, errno, "truncate %s/log.json", w->dir);
      w->size = 0;
      return 0;
    }
  close (w->fd);
  w->fd = -1;
  char from[4200], to[4200];
  for (int i = w->max_files - 1; i >= 1; i--)
    {
      if (i == 1)
        snprintf (from, sizeof from, "%s/log.json", w->dir);
      else
        snprintf (from, sizeof from, "%s/log.json.%d", w->dir, i - 1);
      snprintf (to, sizeof to, "%s/log.json.%d", w->dir, i);
      if (rename (from, to) < 0 && errno != ENOENT)
        return mon_fail (err, errno, "rotate %s", from);
    }
  return open_current (w, err);
}

static int
emit (log_writer *w, const char *stream, const char *line, size_t len, int newline, mon_err *err)
{
  /* worst case: every byte escaped to \u00XX, plus the envelope */
  char entry[LOG_LINE_MAX * 6 + 128];
  char ts[48];
  format_now (ts, sizeof ts);
  size_t o = (size_t) snprintf (entry, sizeof entry, "{\"log\":\"");
  ssize_t n = json_escape (line, len, entry + o, sizeof entry - o - 96);
  if (n < 0)
    return mon_fail (err, E2BIG, "log line too long");
  o += (size_t) n;
  o += (size_t) snprintf (entry + o, sizeof entry - o, "%s\",\"stream\":\"%s\",\"time\":\"%s\"}\n",
                          newline ? "\\n" : "", stream, ts);
  if (w->max_size > 0 && w->size > 0 && w->size + (off_t) o > w->max_size)
    if (rotate (w, err) < 0)
      return -1;
  if (w->out_len + o > sizeof w->out && log_flush (w, err) < 0)
    return -1;
  if (o > sizeof w->out)
    {
      if (write_all (w->fd, entry, o) < 0)
        return mon_fail (err, errno, "write log");
    }
  else
    {
      memcpy (w->out + w->out_len, entry, o);
      w->out_len += o;
    }
  w->size += (off_t) o;
  return 0;
}

int
log_feed (log_writer *w, log_stream *s, const char *data, size_t len, mon_err *err)
{
  for (size_t i = 0; i < len; i++)
    {
      char c = data[i];
      if (c == '\n')
        {
          if (emit (w, s->name, s->pending, s->len, 1, err) < 0)
            return -1;
          s->len = 0;
          continue;
        }
      s->pending[s->len++] = c;
      if (s->len == sizeof s->pending)
        {
          if (emit (w, s->name, s->pending, s->len, 0, err) < 0)
            return -1;
          s->len = 0;
        }
    }
  return 0;
}

int
log_finish_stream (log_writer *w, log_stream *s, mon_err *err)
{
  if (s->len == 0)
    return 0;
  int r = emit (w, s->name, s->pending, s->len, 0, err);
  s->len = 0;
  return r;
}
