/* cgroup v1: one hierarchy per controller under /sys/fs/cgroup/<ctrl>; the container gets the same
 * relative path in each. On a hybrid host (a cgroup2 mount at /sys/fs/cgroup/unified) the container also
 * gets that path in the unified hierarchy, as runc does, and a controller only the unified hierarchy has
 * (hugetlb on recent systemd hosts) is applied there. A limit whose controller is nowhere fails create:
 * nothing is skipped silently. */
#include "cgroup.h"
#include "cleanup.h"
#include "log.h"
#include "util.h"
#include <dirent.h>
#include <errno.h>
#include <linux/magic.h>
#include <sys/vfs.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef int (*hier_fn)(struct cgroup_manager *m, const char *hier, const char *dir, void *data, berth_err_t *err);

/* Call fn for each controller hierarchy (real directories; cpu → cpu,cpuacct symlinks are skipped). */
static int each_hierarchy(struct cgroup_manager *m, hier_fn fn, void *data, berth_err_t *err) {
  cleanup_dir DIR *d = opendir(m->root);
  if (!d) return berth_make_error(err, errno, "opendir `%s`", m->root);
  struct dirent *de;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.' || strcmp(de->d_name, "unified") == 0) continue;
    cleanup_free char *hier = xasprintf("%s/%s", m->root, de->d_name);
    struct stat st;
    if (lstat(hier, &st) < 0 || !S_ISDIR(st.st_mode)) continue;
    cleanup_free char *dir = xasprintf("%s%s", hier, m->path);
    if (fn(m, de->d_name, dir, data, err) < 0) return -1;
  }
  return 0;
}

static bool has_ctrl(const char *hier, const char *ctrl) {
  size_t n = strlen(ctrl);
  for (const char *p = hier; (p = strstr(p, ctrl)); p += n)
    if ((p == hier || p[-1] == ',') && (p[n] == 0 || p[n] == ',')) return true;
  return false;
}

static bool file_empty(const char *dir, const char *file) {
  cleanup_free char *p = xasprintf("%s/%s", dir, file);
  cleanup_free char *text = NULL;
  berth_err_t e = NULL;
  if (berth_read_file(p, &text, NULL, &e) < 0) {
    berth_error_release(&e);
    return false;
  }
  return text[strspn(text, " \n")] == 0;
}

static int copy_from_parent(const char *dir, const char *file, berth_err_t *err) {
  if (!file_empty(dir, file)) return 0;
  cleanup_free char *parent = xstrdup(dir);
  *strrchr(parent, '/') = 0;
  cleanup_free char *p = xasprintf("%s/%s", parent, file);
  cleanup_free char *text = NULL;
  if (berth_read_file(p, &text, NULL, err) < 0) return -1;
  if (text[strspn(text, " \n")] == 0) return 0;
  return cg_write(dir, file, text, err);
}

static int v1_create_one(struct cgroup_manager *m, const char *hier, const char *dir, void *data, berth_err_t *err) {
  bool cpuset = has_ctrl(hier, "cpuset");
  struct stat st;
  if (stat(dir, &st) == 0) return 0;
  /* mkdir -p, copying cpuset.cpus/mems into each new level (v1 leaves them empty). */
  size_t base = strlen(m->root) + 1 + strlen(hier);
  cleanup_free char *p = xstrdup(dir);
  for (size_t i = base + 1; i <= strlen(dir); i++) {
    if (p[i] != '/' && p[i] != 0) continue;
    char saved = p[i];
    p[i] = 0;
    if (mkdir(p, 0755) == 0) {
      if (cpuset && (copy_from_parent(p, "cpuset.cpus", err) < 0 || copy_from_parent(p, "cpuset.mems", err) < 0)) return -1;
    } else if (errno != EEXIST) {
      return berth_make_error(err, errno, "mkdir `%s`", p);
    }
    p[i] = saved;
  }
  m->created_leaf = true;
  return 0;
}

/* <root>/unified when it is a cgroup2 mount (a hybrid host), else NULL */
static char *unified_root(struct cgroup_manager *m) {
  cleanup_free char *u = xasprintf("%s/unified", m->root);
  struct statfs sfs;
  if (statfs(u, &sfs) == 0 && sfs.f_type == CGROUP2_SUPER_MAGIC) return steal_pointer(&u);
  return NULL;
}

static int v1_create(struct cgroup_manager *m, berth_err_t *err) {
  if (each_hierarchy(m, v1_create_one, NULL, err) < 0) return -1;
  cleanup_free char *unified = unified_root(m);
  if (!unified) return 0;
  cleanup_free char *dir = xasprintf("%s%s", unified, m->path);
  return berth_mkdir_p(dir, 0755, err);
}

static int v1_enter_one(struct cgroup_manager *m, const char *hier, const char *dir, void *data, berth_err_t *err) {
  return cg_write(dir, "cgroup.procs", data, err);
}

static int v1_enter(struct cgroup_manager *m, pid_t pid, berth_err_t *err) {
  char buf[32];
  snprintf(buf, sizeof buf, "%d", pid);
  if (each_hierarchy(m, v1_enter_one, buf, err) < 0) return -1;
  cleanup_free char *unified = unified_root(m);
  if (!unified) return 0;
  cleanup_free char *dir = xasprintf("%s%s", unified, m->path);
  /* exec into a container an older berth-runtime created (no unified cgroup): the v1 ones are its cgroups */
  if (access(dir, F_OK) < 0 && errno == ENOENT) return 0;
  return cg_write(dir, "cgroup.procs", buf, err);
}

static int dev_rule_string(const struct cg_dev_rule *r, char *buf, size_t n) {
  char maj[24], min[24];
  if (r->type == 'a') return snprintf(buf, n, "a");
  if (r->major < 0) strcpy(maj, "*");
  else snprintf(maj, sizeof maj, "%lld", (long long) r->major);
  if (r->minor < 0) strcpy(min, "*");
  else snprintf(min, sizeof min, "%lld", (long long) r->minor);
  return snprintf(buf, n, "%c %s:%s %s", r->type, maj, min, r->access);
}

static int write_throttles(const char *dir, const char *file, const struct cg_blkio_dev *d, size_t n, berth_err_t *err) {
  for (size_t i = 0; i < n; i++) {
    char buf[96];
    snprintf(buf, sizeof buf, "%lld:%lld %llu", (long long) d[i].major, (long long) d[i].minor, (unsigned long long) d[i].value);
    if (cg_write(dir, file, buf, err) < 0) return -1;
  }
  return 0;
}

static int v1_apply_one(struct cgroup_manager *m, const char *hier, const char *dir, void *data, berth_err_t *err) {
  const struct cgroup_resources *r = data;
  if (has_ctrl(hier, "memory")) {
    if (r->mem_limit.set) {
      int64_t limit = r->mem_limit.v;
      /* memsw must stay >= limit: when raising both, swap first; when it fails, try the other order */
      if (r->mem_swap.set) {
        if (cg_write_i64(dir, "memory.limit_in_bytes", limit, err) < 0) {
          berth_error_release(err);
          if (cg_write_i64(dir, "memory.memsw.limit_in_bytes", r->mem_swap.v, err) < 0 || cg_write_i64(dir, "memory.limit_in_bytes", limit, err) < 0) return -1;
        } else if (cg_write_i64(dir, "memory.memsw.limit_in_bytes", r->mem_swap.v, err) < 0) {
          return -1;
        }
      } else if (cg_write_i64(dir, "memory.limit_in_bytes", limit, err) < 0) {
        return -1;
      }
    } else if (r->mem_swap.set && cg_write_i64(dir, "memory.memsw.limit_in_bytes", r->mem_swap.v, err) < 0) {
      return -1;
    }
    if (r->mem_reservation.set && cg_write_i64(dir, "memory.soft_limit_in_bytes", r->mem_reservation.v, err) < 0) return -1;
    if (r->mem_swappiness.set && r->mem_swappiness.v >= 0 && r->mem_swappiness.v <= 100 && cg_write_i64(dir, "memory.swappiness", r->mem_swappiness.v, err) < 0) return -1;
    if (r->mem_disable_oom_killer && cg_write(dir, "memory.oom_control", "1", err) < 0) return -1;
    if (r->mem_kernel_tcp.set) {
      if (cg_file_exists(dir, "memory.kmem.tcp.limit_in_bytes")) {
        if (cg_write_i64(dir, "memory.kmem.tcp.limit_in_bytes", r->mem_kernel_tcp.v, err) < 0) return -1;
      } else {
        runtime_warn("`linux.resources.memory.kernelTCP` ignored: this kernel has no memory.kmem.tcp.limit_in_bytes (runc ignores it too)");
      }
    }
  }
  if (has_ctrl(hier, "cpu")) {
    if (r->cpu_shares.set && r->cpu_shares.v > 0 && cg_write_i64(dir, "cpu.shares", r->cpu_shares.v, err) < 0) return -1;
    if (r->cpu_period.set && r->cpu_period.v > 0 && cg_write_i64(dir, "cpu.cfs_period_us", r->cpu_period.v, err) < 0) return -1;
    if (r->cpu_quota.set && r->cpu_quota.v != 0 && cg_write_i64(dir, "cpu.cfs_quota_us", r->cpu_quota.v, err) < 0) return -1;
    if (r->cpu_rt_period.set && cg_write_i64(dir, "cpu.rt_period_us", r->cpu_rt_period.v, err) < 0) return -1;
    if (r->cpu_rt_runtime.set && cg_write_i64(dir, "cpu.rt_runtime_us", r->cpu_rt_runtime.v, err) < 0) return -1;
  }
  if (has_ctrl(hier, "cpuset")) {
    if (r->cpus && *r->cpus && cg_write(dir, "cpuset.cpus", r->cpus, err) < 0) return -1;
    if (r->mems && *r->mems && cg_write(dir, "cpuset.mems", r->mems, err) < 0) return -1;
  }
  if (has_ctrl(hier, "pids") && r->pids_limit.set) {
    if (r->pids_limit.v > 0 ? cg_write_i64(dir, "pids.max", r->pids_limit.v, err) < 0 : cg_write(dir, "pids.max", "max", err) < 0) return -1;
  }
  if (has_ctrl(hier, "blkio")) {
    /* proportional weights belong to the I/O scheduler: BFQ's files, else CFQ's (kernels before 5.0),
     * else this kernel has none and the limit cannot be applied */
    bool bfq = cg_file_exists(dir, "blkio.bfq.weight"), cfq = cg_file_exists(dir, "blkio.weight");
    bool want_weight = (r->blkio_weight.set && r->blkio_weight.v) || r->n_weight_dev;
    if (want_weight && !bfq && !cfq)
      return berth_make_error(err, ENOENT, "`linux.resources.blockIO` weights: `%s` has neither blkio.bfq.weight (BFQ scheduler) nor blkio.weight (CFQ scheduler)", dir);
    if (r->blkio_weight.set && r->blkio_weight.v && cg_write_i64(dir, bfq ? "blkio.bfq.weight" : "blkio.weight", r->blkio_weight.v, err) < 0) return -1;
    bool want_leaf = r->blkio_leaf_weight.set && r->blkio_leaf_weight.v;
    for (size_t i = 0; i < r->n_weight_dev; i++) want_leaf |= r->weight_dev[i].leaf_weight.set;
    if (want_leaf && !cg_file_exists(dir, "blkio.leaf_weight"))
      return berth_make_error(err, ENOENT, "`linux.resources.blockIO.leafWeight`: `%s` has no blkio.leaf_weight (only the CFQ scheduler had leaf weights)", dir);
    if (r->blkio_leaf_weight.set && r->blkio_leaf_weight.v && cg_write_i64(dir, "blkio.leaf_weight", r->blkio_leaf_weight.v, err) < 0) return -1;
    for (size_t i = 0; i < r->n_weight_dev; i++) {
      const struct cg_blkio_dev *d = &r->weight_dev[i];
      char buf[96];
      if (d->weight.set) {
        snprintf(buf, sizeof buf, "%lld:%lld %lld", (long long) d->major, (long long) d->minor, (long long) d->weight.v);
        if (cg_write(dir, bfq ? "blkio.bfq.weight_device" : "blkio.weight_device", buf, err) < 0) return -1;
      }
      if (d->leaf_weight.set) {
        snprintf(buf, sizeof buf, "%lld:%lld %lld", (long long) d->major, (long long) d->minor, (long long) d->leaf_weight.v);
        if (cg_write(dir, "blkio.leaf_weight_device", buf, err) < 0) return -1;
      }
    }
    static const char *const files[4] = {"blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device", "blkio.throttle.read_iops_device", "blkio.throttle.write_iops_device"};
    for (int k = 0; k < 4; k++)
      if (write_throttles(dir, files[k], r->throttle[k], r->n_throttle[k], err) < 0) return -1;
  }
  if (has_ctrl(hier, "devices") && r->has_dev_rules) {
    if (cg_write(dir, "devices.deny", "a", err) < 0) return -1;
    for (size_t i = 0; i < r->n_dev_rules; i++) {
      char buf[96];
      dev_rule_string(&r->dev_rules[i], buf, sizeof buf);
      if (cg_write(dir, r->dev_rules[i].allow ? "devices.allow" : "devices.deny", buf, err) < 0) return -1;
    }
  }
  if (has_ctrl(hier, "hugetlb"))
    for (size_t i = 0; i < r->n_hugetlb; i++) {
      cleanup_free char *f = xasprintf("hugetlb.%s.limit_in_bytes", r->hugetlb[i].key);
      if (cg_write(dir, f, r->hugetlb[i].value, err) < 0) return -1;
    }
  if (has_ctrl(hier, "net_cls") && r->net_classid.set && cg_write_i64(dir, "net_cls.classid", r->net_classid.v, err) < 0) return -1;
  if (has_ctrl(hier, "net_prio"))
    for (size_t i = 0; i < r->n_net_prio; i++) {
      cleanup_free char *line = xasprintf("%s %s", r->net_prio[i].key, r->net_prio[i].value);
      if (cg_write(dir, "net_prio.ifpriomap", line, err) < 0) return -1;
    }
  return 0;
}

/* which controllers the v1 hierarchies under root offer */
struct v1_controllers {
  bool memory, cpu, cpuset, pids, blkio, devices, hugetlb, net_cls, net_prio;
};

static int v1_scan_one(struct cgroup_manager *m, const char *hier, const char *dir, void *data, berth_err_t *err) {
  struct v1_controllers *c = data;
  c->memory |= has_ctrl(hier, "memory");
  c->cpu |= has_ctrl(hier, "cpu");
  c->cpuset |= has_ctrl(hier, "cpuset");
  c->pids |= has_ctrl(hier, "pids");
  c->blkio |= has_ctrl(hier, "blkio");
  c->devices |= has_ctrl(hier, "devices");
  c->hugetlb |= has_ctrl(hier, "hugetlb");
  c->net_cls |= has_ctrl(hier, "net_cls");
  c->net_prio |= has_ctrl(hier, "net_prio");
  return 0;
}

static int missing(const struct cgroup_manager *m, const char *what, const char *controller, berth_err_t *err) {
  return berth_make_error(err, ENOTSUP, "`linux.resources.%s` needs the %s cgroup controller: no v1 hierarchy under %s has it", what, controller, m->root);
}

static int v1_apply(struct cgroup_manager *m, const struct cgroup_resources *r, berth_err_t *err) {
  if (r->n_unified) return berth_make_error(err, ENOTSUP, "`linux.resources.unified` needs cgroup v2");
  if (r->cpu_idle.set) return berth_make_error(err, ENOTSUP, "`linux.resources.cpu.idle` needs cgroup v2");
  struct v1_controllers c = {0};
  if (each_hierarchy(m, v1_scan_one, &c, err) < 0) return -1;
  if (!c.memory && (r->mem_limit.set || r->mem_reservation.set || r->mem_swap.set || r->mem_swappiness.set || r->mem_disable_oom_killer || r->mem_kernel_tcp.set))
    return missing(m, "memory", "memory", err);
  if (!c.cpu && (r->cpu_shares.set || r->cpu_quota.set || r->cpu_period.set || r->cpu_rt_runtime.set || r->cpu_rt_period.set))
    return missing(m, "cpu", "cpu", err);
  if (!c.cpuset && ((r->cpus && *r->cpus) || (r->mems && *r->mems))) return missing(m, "cpu.cpus/mems", "cpuset", err);
  if (!c.pids && r->pids_limit.set) return missing(m, "pids", "pids", err);
  bool blkio = r->blkio_weight.set || r->blkio_leaf_weight.set || r->n_weight_dev;
  for (int k = 0; k < 4; k++) blkio |= r->n_throttle[k] > 0;
  if (!c.blkio && blkio) return missing(m, "blockIO", "blkio", err);
  if (!c.devices && r->has_dev_rules) return missing(m, "devices", "devices", err);
  if (!c.net_cls && r->net_classid.set) return missing(m, "network.classID", "net_cls", err);
  if (!c.net_prio && r->n_net_prio) return missing(m, "network.priorities", "net_prio", err);
  /* hugetlb: a v1 hierarchy, else the unified one of a hybrid host */
  cleanup_free char *unified = NULL;
  if (r->n_hugetlb && !c.hugetlb) {
    unified = unified_root(m);
    if (!unified || !cg_v2_has_controller(unified, "hugetlb"))
      return berth_make_error(err, ENOTSUP, "`linux.resources.hugepageLimits` needs the hugetlb cgroup controller: neither a v1 hierarchy under %s nor the unified hierarchy has it", m->root);
  }
  if (r->mem_kernel.set) runtime_warn("`linux.resources.memory.kernel` ignored: kernel memory limits are obsolete since Linux 5.4 (runc ignores them too)");
  if (each_hierarchy(m, v1_apply_one, (void *) r, err) < 0) return -1;
  if (unified) {
    if (cg_v2_enable_down(unified, m->path, "hugetlb", err) < 0) return -1;
    cleanup_free char *dir = xasprintf("%s%s", unified, m->path);
    for (size_t i = 0; i < r->n_hugetlb; i++) {
      cleanup_free char *f = xasprintf("hugetlb.%s.max", r->hugetlb[i].key);
      if (cg_write(dir, f, r->hugetlb[i].value, err) < 0) return -1;
    }
  }
  return 0;
}

static int v1_destroy_one(struct cgroup_manager *m, const char *hier, const char *dir, void *data, berth_err_t *err) {
  int *failed = data;
  if (cg_rmdir(dir, err) < 0) {
    /* keep going so one busy hierarchy does not leak the others */
    if (!*failed) *failed = 1;
    else berth_error_release(err);
  }
  return 0;
}

static int v1_destroy(struct cgroup_manager *m, berth_err_t *err) {
  int failed = 0;
  if (each_hierarchy(m, v1_destroy_one, &failed, err) < 0) return -1;
  cleanup_free char *unified = unified_root(m);
  if (unified) {
    cleanup_free char *dir = xasprintf("%s%s", unified, m->path);
    v1_destroy_one(m, "unified", dir, &failed, err);
  }
  return failed ? -1 : 0;
}

static int v1_pids(struct cgroup_manager *m, pid_t **out, size_t *n, berth_err_t *err) {
  cleanup_free char *dir = xasprintf("%s/pids%s", m->root, m->path);
  if (access(dir, F_OK) < 0) {
    free(dir);
    dir = xasprintf("%s/memory%s", m->root, m->path);
  }
  return cg_read_pids(dir, out, n, err);
}

static int v1_oom_killed(struct cgroup_manager *m) {
  cleanup_free char *p = xasprintf("%s/memory%s/memory.oom_control", m->root, m->path);
  cleanup_free char *text = NULL;
  berth_err_t e = NULL;
  if (berth_read_file(p, &text, NULL, &e) < 0) {
    berth_error_release(&e);
    return -1;
  }
  char *k = strstr(text, "oom_kill ");
  return k ? atoll(k + 9) > 0 : -1;
}

static int v1_frozen(struct cgroup_manager *m) {
  cleanup_free char *p = xasprintf("%s/freezer%s/freezer.state", m->root, m->path);
  cleanup_free char *text = NULL;
  berth_err_t e = NULL;
  if (berth_read_file(p, &text, NULL, &e) < 0) {
    berth_error_release(&e);
    return -1;
  }
  return strncmp(text, "FROZEN", 6) == 0;
}

static int v1_freeze(struct cgroup_manager *m, bool frozen, berth_err_t *err) {
  cleanup_free char *dir = xasprintf("%s/freezer%s", m->root, m->path);
  if (access(dir, F_OK) < 0) return berth_make_error(err, ENOTSUP, "no freezer cgroup `%s`", dir);
  /* FREEZING can last while tasks are in uninterruptible sleep: rewrite until the state settles */
  for (int i = 0; i < 1000; i++) {
    if (cg_write(dir, "freezer.state", frozen ? "FROZEN" : "THAWED", err) < 0) return -1;
    if (v1_frozen(m) == (frozen ? 1 : 0)) return 0;
    usleep(1000);
  }
  return berth_make_error(err, ETIMEDOUT, "freezer `%s` did not reach %s", dir, frozen ? "FROZEN" : "THAWED");
}

const struct cgroup_ops cgroup_v1_ops = {
    .name = "v1", .create = v1_create, .enter = v1_enter, .apply = v1_apply, .destroy = v1_destroy, .pids = v1_pids, .oom_killed = v1_oom_killed,
    .freeze = v1_freeze, .frozen = v1_frozen,
};
