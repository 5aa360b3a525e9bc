/* The error type every native function fills: a negative int is returned and *err carries errno + message.
 * Callers add context on the way up with berth_error_prepend(). */
#ifndef BERTH_ERROR_H
#define BERTH_ERROR_H
#include <stdarg.h>

typedef struct berth_error_s {
  int status; /* errno, or 0 when the failure is not a system call's */
  char *msg;
} *berth_err_t;

/* Always returns a negative value (-errno or -1) so callers can `return berth_make_error(...)`. */
int berth_make_error(berth_err_t *err, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prefix "ctx: " to an existing error; returns its negative status. */
int berth_error_prepend(berth_err_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void berth_error_release(berth_err_t *err);
/* "msg: strerror(status)" in a static-free buffer owned by the caller. */
char *berth_error_string(berth_err_t err);

#endif
