/* berth-monitor: running the OCI runtime — fork + exec with chosen stdio, and waiting for it. */
#ifndef BERTH_MONITOR_SPAWN_H
#define BERTH_MONITOR_SPAWN_H
#include "error.h"
#include <sys/types.h>

/* fork + exec argv with in/out/err as fds 0-2 (-1: /dev/null), signals back to their defaults (the
 * monitor ignores SIGTERM & co. for itself; the runtime, and so the app, starts without that).
 * Returns the child's pid, or a negative value with *err set. */
pid_t spawn_process(char *const argv[], int in_fd, int out_fd, int err_fd, berth_err_t *err);
/* waitpid for pid, retrying on EINTR; *status is the raw wait status. */
int wait_for(pid_t pid, int *status, berth_err_t *err);

#endif
