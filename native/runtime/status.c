#include "status.h"
#include "cleanup.h"
#include "util.h"
#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *status_dir(const char *root, const char *id) { return xasprintf("%s/%s", root, id); }

int status_write(const char *dir, const struct container_status *st, berth_err_t *err) {
  berth_buf b = {0};
  berth_buf_puts(&b, "{\"id\":");
  berth_buf_json_string(&b, st->id);
  berth_buf_printf(&b, ",\"pid\":%d,\"startTime\":%llu,\"bundle\":", st->pid, st->start_time);
  berth_buf_json_string(&b, st->bundle);
  berth_buf_puts(&b, ",\"rootfs\":");
  berth_buf_json_string(&b, st->rootfs);
  berth_buf_puts(&b, ",\"created\":");
  berth_buf_json_string(&b, st->created);
  berth_buf_puts(&b, ",\"cgroupPath\":");
  berth_buf_json_string(&b, st->cgroup_path);
  berth_buf_puts(&b, ",\"cgroupMode\":");
  berth_buf_json_string(&b, st->cgroup_mode);
  berth_buf_puts(&b, ",\"cgroupRoot\":");
  berth_buf_json_string(&b, st->cgroup_root);
  if (st->rootfs_mount_id) berth_buf_printf(&b, ",\"rootfsMountId\":%llu", st->rootfs_mount_id);
  berth_buf_puts(&b, ",\"annotations\":");
  if (st->annotations) json_serialize(st->annotations, &b);
  else berth_buf_puts(&b, "{}");
  berth_buf_puts(&b, "}\n");
  cleanup_free char *file = xasprintf("%s/state.json", dir);
  int r = berth_write_file_atomic(file, b.buf, b.len, err);
  free(b.buf);
  return r;
}

int status_read(const char *root, const char *id, struct container_status *st, berth_err_t *err) {
  memset(st, 0, sizeof *st);
  if (!berth_valid_id(id)) return berth_make_error(err, EINVAL, "invalid container id `%s`", id);
  cleanup_free char *file = xasprintf("%s/%s/state.json", root, id);
  cleanup_free char *text = NULL;
  size_t len;
  if (berth_read_file(file, &text, &len, err) < 0) {
    if ((*err)->status == ENOENT) {
      cleanup_free char *dir = xasprintf("%s/%s", root, id);
      if (access(dir, F_OK) == 0) return berth_make_error(err, EAGAIN, "container `%s` is being created", id);
      return berth_make_error(err, ENOENT, "container `%s` does not exist", id);
    }
    return -1;
  }
  if (json_parse(text, len, &st->doc, err) < 0) return berth_error_prepend(err, "`%s`", file);
  int64_t pid = 0, start = 0, mnt = 0;
  json_as_int64(json_get(st->doc, "startTime"), &start);
  if (json_as_int64(json_get(st->doc, "pid"), &pid) < 0 || pid <= 0 || pid > INT32_MAX)
    return berth_make_error(err, EBADMSG, "`%s`: no valid pid", file);
  json_as_int64(json_get(st->doc, "rootfsMountId"), &mnt);
  st->pid = (pid_t) pid;
  st->start_time = (unsigned long long) start;
  st->rootfs_mount_id = mnt > 0 ? (unsigned long long) mnt : 0;
  st->id = xstrdup(id);
  st->bundle = xstrdup(json_get_string(st->doc, "bundle"));
  st->rootfs = xstrdup(json_get_string(st->doc, "rootfs"));
  st->created = xstrdup(json_get_string(st->doc, "created"));
  st->cgroup_path = xstrdup(json_get_string(st->doc, "cgroupPath"));
  st->cgroup_mode = xstrdup(json_get_string(st->doc, "cgroupMode"));
  st->cgroup_root = xstrdup(json_get_string(st->doc, "cgroupRoot"));
  st->annotations = json_get_object(st->doc, "annotations");
  return 0;
}

void status_free(struct container_status *st) {
  free(st->id);
  free(st->bundle);
  free(st->rootfs);
  free(st->created);
  free(st->cgroup_path);
  free(st->cgroup_mode);
  free(st->cgroup_root);
  json_free(st->doc);
  memset(st, 0, sizeof *st);
}

unsigned long long process_start_time(pid_t pid, bool *zombie) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  cleanup_free char *text = NULL;
  berth_err_t e = NULL;
  if (zombie) *zombie = false;
  if (pid <= 0 || berth_read_file(path, &text, NULL, &e) < 0) {
    berth_error_release(&e);
    return 0;
  }
  char *p = strrchr(text, ')');
  if (!p) return 0;
  p += 2; /* field 3: state */
  if (zombie) *zombie = *p == 'Z' || *p == 'X';
  for (int field = 3; field < 22 && p; field++) {
    p = strchr(p, ' ');
    if (p) p++;
  }
  return p ? strtoull(p, NULL, 10) : 0;
}

const char *status_compute(const char *dir, const struct container_status *st) {
  bool zombie = false;
  unsigned long long t = process_start_time(st->pid, &zombie);
  if (t == 0 || t != st->start_time || zombie) return "stopped";
  cleanup_free char *fifo = xasprintf("%s/exec.fifo", dir);
  if (access(fifo, F_OK) == 0) return "created";
  struct cgroup_manager *cg = NULL;
  berth_err_t e = NULL;
  int frozen = -1;
  if (st->cgroup_path && *st->cgroup_path && status_cgroup(st, &cg, &e) == 0) frozen = cg->ops->frozen(cg);
  berth_error_release(&e);
  cgroup_manager_free(cg);
  return frozen == 1 ? "paused" : "running";
}

int status_cgroup(const struct container_status *st, struct cgroup_manager **out, berth_err_t *err) {
  struct cgroup_manager *m = xmalloc0(sizeof *m);
  m->ops = st->cgroup_mode && strcmp(st->cgroup_mode, "v2") == 0 ? &cgroup_v2_ops : &cgroup_v1_ops;
  m->root = xstrdup(st->cgroup_root && *st->cgroup_root ? st->cgroup_root : "/sys/fs/cgroup");
  m->path = xstrdup(st->cgroup_path);
  if (!*m->path) {
    cgroup_manager_free(m);
    return berth_make_error(err, 0, "container `%s` has no cgroup recorded", st->id);
  }
  *out = m;
  return 0;
}
