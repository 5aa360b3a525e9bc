/* Log lines are docker json-file entries: {"log":"<line>\n","stream":"stdout","time":"<RFC3339Nano>"}.
 * Flash wear: entries collect in a 64 KiB buffer handed to the kernel when full or every flush interval
 * (main.c), never one write per line; fsync only at rotation and at exit. Rotation keeps max_files files
 * (log.json, log.json.1 … log.json.<max_files-1>), each at most max_size bytes, so the cap on disk is
 * max_size * max_files. */
#include "log.h"
#include "util.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int open_current(log_writer *w, berth_err_t *err) {
  char path[4200];
  snprintf(path, sizeof path, "%s/log.json", w->dir);
  w->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (w->fd < 0) return berth_make_error(err, errno, "open `%s`", path);
  struct stat st;
  if (fstat(w->fd, &st) < 0) return berth_make_error(err, errno, "stat `%s`", path);
  w->size = st.st_size;
  return 0;
}

int log_open(log_writer *w, const char *dir, off_t max_size, int max_files, berth_err_t *err) {
  if (snprintf(w->dir, sizeof w->dir, "%s", dir) >= (int) sizeof w->dir) return berth_make_error(err, ENAMETOOLONG, "log dir `%s`", dir);
  w->max_size = max_size;
  w->max_files = max_files < 1 ? 1 : max_files;
  w->out_len = 0;
  return open_current(w, err);
}

int log_flush(log_writer *w, berth_err_t *err) {
  if (w->out_len == 0) return 0;
  if (berth_write_all(w->fd, w->out, w->out_len) < 0) {
    int e = errno;
    w->out_len = 0; /* a full disk must not wedge the monitor: drop and report */
    return berth_make_error(err, e, "write `%s/log.json`", w->dir);
  }
  w->out_len = 0;
  return 0;
}

int log_sync(log_writer *w, berth_err_t *err) {
  if (log_flush(w, err) < 0) return -1;
  if (fsync(w->fd) < 0 && errno != EINVAL) return berth_make_error(err, errno, "fsync `%s/log.json`", w->dir);
  return 0;
}

static int rotate(log_writer *w, berth_err_t *err) {
  if (log_sync(w, err) < 0) return -1;
  if (w->max_files == 1) {
    if (ftruncate(w->fd, 0) < 0) return berth_make_error(err, errno, "truncate `%s/log.json`", w->dir);
    w->size = 0;
    return 0;
  }
  close(w->fd);
  w->fd = -1;
  char from[4200], to[4200];
  for (int i = w->max_files - 1; i >= 1; i--) {
    if (i == 1) snprintf(from, sizeof from, "%s/log.json", w->dir);
    else snprintf(from, sizeof from, "%s/log.json.%d", w->dir, i - 1);
    snprintf(to, sizeof to, "%s/log.json.%d", w->dir, i);
    if (rename(from, to) < 0 && errno != ENOENT) return berth_make_error(err, errno, "rotate `%s`", from);
  }
  return open_current(w, err);
}

static int emit(log_writer *w, const char *stream, const char *line, size_t len, int newline, berth_err_t *err) {
  /* worst case: every byte escaped to \u00XX, plus the envelope */
  char entry[LOG_LINE_MAX * 6 + 128];
  char ts[48];
  format_now(ts, sizeof ts);
  size_t o = (size_t) snprintf(entry, sizeof entry, "{\"log\":\"");
  ssize_t n = json_escape(line, len, entry + o, sizeof entry - o - 96);
  if (n < 0) return berth_make_error(err, E2BIG, "log line too long");
  o += (size_t) n;
  o += (size_t) snprintf(entry + o, sizeof entry - o, "%s\",\"stream\":\"%s\",\"time\":\"%s\"}\n", newline ? "\\n" : "", stream, ts);
  if (w->max_size > 0 && w->size > 0 && w->size + (off_t) o > w->max_size && rotate(w, err) < 0) return -1;
  if (w->out_len + o > sizeof w->out && log_flush(w, err) < 0) return -1;
  if (o > sizeof w->out) {
    if (berth_write_all(w->fd, entry, o) < 0) return berth_make_error(err, errno, "write `%s/log.json`", w->dir);
  } else {
    memcpy(w->out + w->out_len, entry, o);
    w->out_len += o;
  }
  w->size += (off_t) o;
  return 0;
}

int log_feed(log_writer *w, log_stream *s, const char *data, size_t len, berth_err_t *err) {
  for (size_t i = 0; i < len; i++) {
    char c = data[i];
    if (c == '\n') {
      if (emit(w, s->name, s->pending, s->len, 1, err) < 0) return -1;
      s->len = 0;
      continue;
    }
    s->pending[s->len++] = c;
    if (s->len == sizeof s->pending) {
      if (emit(w, s->name, s->pending, s->len, 0, err) < 0) return -1;
      s->len = 0;
    }
  }
  return 0;
}

int log_finish_stream(log_writer *w, log_stream *s, berth_err_t *err) {
  if (s->len == 0) return 0;
  int r = emit(w, s->name, s->pending, s->len, 0, err);
  s->len = 0;
  return r;
}

void format_now(char *buf, size_t len) {
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec);
}

ssize_t json_escape(const char *s, size_t len, char *out, size_t cap) {
  static const char hex[] = "0123456789abcdef";
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char) s[i];
    char tmp[6];
    size_t n = 2;
    tmp[0] = '\\';
    switch (c) {
    case '"': tmp[1] = '"'; break;
    case '\\': tmp[1] = '\\'; break;
    case '\n': tmp[1] = 'n'; break;
    case '\r': tmp[1] = 'r'; break;
    case '\t': tmp[1] = 't'; break;
    default:
      if (c < 0x20 || c == 0x7f) {
        memcpy(tmp + 1, "u00", 3);
        tmp[4] = hex[c >> 4];
        tmp[5] = hex[c & 15];
        n = 6;
      } else {
        tmp[0] = (char) c;
        n = 1;
      }
    }
    if (o + n > cap) return -1;
    memcpy(out + o, tmp, n);
    o += n;
  }
  return (ssize_t) o;
}
