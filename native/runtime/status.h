/* The per-container state directory (<root>/<id>/): state.json written atomically, exec.fifo while the
 * container is created but not started. */
#ifndef BERTH_STATUS_H
#define BERTH_STATUS_H
#include "cgroup.h"
#include "error.h"
#include "json.h"
#include <sys/types.h>

struct container_status {
  char *id, *bundle, *rootfs, *created;
  pid_t pid;
  unsigned long long start_time;
  char *cgroup_path, *cgroup_mode, *cgroup_root;
  /* without a mount namespace of its own the container's mounts live in the caller's namespace under a
   * bind mount of the rootfs onto itself: its mount id, so delete detaches exactly that one (0: none) */
  unsigned long long rootfs_mount_id;
  json_value *doc; /* owns annotations */
  json_value *annotations;
};

char *status_dir(const char *root, const char *id);
int status_write(const char *dir, const struct container_status *st, berth_err_t *err);
int status_read(const char *root, const char *id, struct container_status *st, berth_err_t *err);
void status_free(struct container_status *st);
/* Field 22 of /proc/<pid>/stat, 0 when the process is gone; *zombie set when it is a zombie. */
unsigned long long process_start_time(pid_t pid, bool *zombie);
/* "creating" | "created" | "running" | "paused" | "stopped" */
const char *status_compute(const char *dir, const struct container_status *st);
int status_cgroup(const struct container_status *st, struct cgroup_manager **out, berth_err_t *err);

#endif
