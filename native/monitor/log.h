/* berth-monitor: the container log writer (docker json-file lines, size-capped rotation). */
#ifndef BERTH_MONITOR_LOG_H
#define BERTH_MONITOR_LOG_H
#include "error.h"
#include <stddef.h>
#include <sys/types.h>

#define LOG_LINE_MAX 16384 /* like docker: longer lines are split into partial entries */
#define LOG_OUT_BUF 65536

typedef struct log_stream {
  const char *name; /* "stdout" / "stderr" */
  char pending[LOG_LINE_MAX];
  size_t len;
} log_stream;

typedef struct log_writer {
  char dir[4096];
  int fd;
  off_t size;     /* bytes in the current file, including unflushed ones */
  off_t max_size; /* rotate when the current file would exceed this (0: never) */
  int max_files;  /* files kept, including the current one (>= 1) */
  char out[LOG_OUT_BUF];
  size_t out_len;
} log_writer;

int log_open(log_writer *w, const char *dir, off_t max_size, int max_files, berth_err_t *err);
/* Feed raw bytes read from a stream; complete lines become entries. */
int log_feed(log_writer *w, log_stream *s, const char *data, size_t len, berth_err_t *err);
/* Emit a trailing partial line (at EOF). */
int log_finish_stream(log_writer *w, log_stream *s, berth_err_t *err);
/* Hand buffered entries to the kernel (write, no fsync). */
int log_flush(log_writer *w, berth_err_t *err);
/* Flush and fsync: at rotation and at exit only, to spare flash. */
int log_sync(log_writer *w, berth_err_t *err);

/* RFC 3339 UTC time with nanoseconds into buf (>= 40 bytes). */
void format_now(char *buf, size_t len);
/* Append s (len bytes) to out as a JSON string body (no quotes), into a fixed buffer (no allocation per
 * log line); returns the bytes written or -1 if there is no room. */
ssize_t json_escape(const char *s, size_t len, char *out, size_t cap);

#endif
