/* Warnings: what the runtime tells the caller without failing the operation (main.c writes them to stderr
 * and, with --log, to the log file as level "warning"). */
#ifndef BERTH_RUNTIME_LOG_H
#define BERTH_RUNTIME_LOG_H
#include "error.h"

void runtime_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The same for an error that does not stop the operation; releases *err. */
void runtime_warn_error(berth_err_t *err);

#endif
