#include "error.h"
#include "util.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int berth_make_error(berth_err_t *err, int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *msg = NULL;
  if (vasprintf(&msg, fmt, ap) < 0)
    msg = NULL;
  va_end(ap);
  if (err) {
    if (*err) berth_error_release(err);
    *err = xmalloc0(sizeof(**err));
    (*err)->status = status;
    (*err)->msg = msg ? msg : xstrdup("(out of memory)");
  } else {
    free(msg);
  }
  return status > 0 ? -status : -1;
}

int berth_error_prepend(berth_err_t *err, const char *fmt, ...) {
  if (!err || !*err) return -1;
  va_list ap;
  va_start(ap, fmt);
  char *ctx = NULL;
  if (vasprintf(&ctx, fmt, ap) >= 0) {
    char *msg = xasprintf("%s: %s", ctx, (*err)->msg);
    free((*err)->msg);
    (*err)->msg = msg;
    free(ctx);
  }
  va_end(ap);
  return (*err)->status > 0 ? -(*err)->status : -1;
}

void berth_error_release(berth_err_t *err) {
  if (!err || !*err) return;
  free((*err)->msg);
  free(*err);
  *err = NULL;
}

char *berth_error_string(berth_err_t err) {
  if (!err) return xstrdup("unknown error");
  if (err->status > 0) return xasprintf("%s: %s", err->msg, strerror(err->status));
  return xstrdup(err->msg);
}
