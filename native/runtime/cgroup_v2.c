/* cgroup v2: one unified hierarchy; controllers are enabled in each ancestor's cgroup.subtree_control and
 * the device controller is an eBPF program (ebpf.c). */
#include "cgroup.h"
#include "cleanup.h"
#include "log.h"
#include "util.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *dir_of(struct cgroup_manager *m) { return xasprintf("%s%s", m->root, m->path); }

/* Enable every available controller for the children of dir. */
static void enable_controllers(const char *dir) {
  cleanup_free char *p = xasprintf("%s/cgroup.controllers", dir);
  cleanup_free char *text = NULL;
  berth_err_t e = NULL;
  if (berth_read_file(p, &text, NULL, &e) < 0) {
    berth_error_release(&e);
    return;
  }
  char *save = NULL;
  for (char *tok = strtok_r(text, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
    cleanup_free char *v = xasprintf("+%s", tok);
    if (cg_write(dir, "cgroup.subtree_control", v, &e) < 0) berth_error_release(&e);
  }
}

static int v2_create(struct cgroup_manager *m, berth_err_t *err) {
  cleanup_free char *dir = dir_of(m);
  cleanup_free char *p = xstrdup(dir);
  size_t base = strlen(m->root);
  enable_controllers(m->root);
  for (size_t i = base + 1; i <= strlen(dir); i++) {
    if (p[i] != '/' && p[i] != 0) continue;
    char saved = p[i];
    p[i] = 0;
    if (mkdir(p, 0755) < 0 && errno != EEXIST) return berth_make_error(err, errno, "mkdir `%s`", p);
    if (saved) enable_controllers(p);
    p[i] = saved;
  }
  m->created_leaf = true;
  return 0;
}

static int v2_enter(struct cgroup_manager *m, pid_t pid, berth_err_t *err) {
  cleanup_free char *dir = dir_of(m);
  char buf[32];
  snprintf(buf, sizeof buf, "%d", pid);
  return cg_write(dir, "cgroup.procs", buf, err);
}

static int write_max(const char *dir, const char *file, int64_t v, berth_err_t *err) {
  if (v < 0 || v == INT64_MAX) return cg_write(dir, file, "max", err);
  return cg_write_i64(dir, file, v, err);
}

/* blkio weight (10..1000) to io.weight (1..10000), runc's and crun's conversion */
static int64_t io_weight(int64_t blkio) { return 1 + ((blkio - 10) * 9999) / 990; }

static int v2_apply_io_weights(const char *dir, const struct cgroup_resources *r, berth_err_t *err) {
  bool want = (r->blkio_weight.set && r->blkio_weight.v) || r->n_weight_dev;
  if (r->blkio_leaf_weight.set && r->blkio_leaf_weight.v) runtime_warn("`linux.resources.blockIO.leafWeight` ignored: cgroup v2 has no leaf weights");
  if (!want) return 0;
  /* BFQ's io.bfq.weight takes blkio weights as they are; else io.weight (the io.cost controller), converted */
  bool bfq = cg_file_exists(dir, "io.bfq.weight");
  if (!bfq && !cg_file_exists(dir, "io.weight"))
    return berth_make_error(err, ENOENT, "`linux.resources.blockIO` weights: `%s` has neither io.bfq.weight (BFQ scheduler) nor io.weight (io controller with io.cost)", dir);
  if (r->blkio_weight.set && r->blkio_weight.v &&
      cg_write_i64(dir, bfq ? "io.bfq.weight" : "io.weight", bfq ? r->blkio_weight.v : io_weight(r->blkio_weight.v), err) < 0)
    return -1;
  for (size_t i = 0; i < r->n_weight_dev; i++) {
    const struct cg_blkio_dev *d = &r->weight_dev[i];
    if (d->leaf_weight.set) runtime_warn("`linux.resources.blockIO.weightDevice[%zu].leafWeight` ignored: cgroup v2 has no leaf weights", i);
    if (!d->weight.set) continue;
    char buf[96];
    snprintf(buf, sizeof buf, "%lld:%lld %lld", (long long) d->major, (long long) d->minor, (long long) (bfq ? d->weight.v : io_weight(d->weight.v)));
    if (cg_write(dir, bfq ? "io.bfq.weight" : "io.weight", buf, err) < 0) return -1;
  }
  return 0;
}

static int v2_apply(struct cgroup_manager *m, const struct cgroup_resources *r, berth_err_t *err) {
  cleanup_free char *dir = dir_of(m);
  if (r->net_classid.set || r->n_net_prio)
    return berth_make_error(err, ENOTSUP, "`linux.resources.network` needs the net_cls/net_prio controllers of cgroup v1; cgroup v2 has neither");
  if (r->mem_kernel.set) runtime_warn("`linux.resources.memory.kernel` ignored: cgroup v2 has no kernel memory limit (kernel memory counts toward memory.max)");
  if (r->mem_kernel_tcp.set) runtime_warn("`linux.resources.memory.kernelTCP` ignored: cgroup v2 has no TCP buffer limit (socket memory counts toward memory.max); runc ignores it too");
  if (r->mem_limit.set && write_max(dir, "memory.max", r->mem_limit.v, err) < 0) return -1;
  if (r->mem_reservation.set && write_max(dir, "memory.low", r->mem_reservation.v, err) < 0) return -1;
  if (r->mem_swap.set) {
    /* spec swap is memory+swap (v1 memsw); v2 swap.max is swap alone */
    int64_t swap = r->mem_swap.v;
    if (swap > 0 && swap != INT64_MAX && r->mem_limit.set && r->mem_limit.v > 0) {
      if (swap < r->mem_limit.v) return berth_make_error(err, EINVAL, "memory.swap (%lld) must not be below memory.limit", (long long) swap);
      swap -= r->mem_limit.v;
    }
    if (write_max(dir, "memory.swap.max", swap, err) < 0) return -1;
  }
  if (r->cpu_shares.set && r->cpu_shares.v > 0) {
    int64_t w = 1 + ((r->cpu_shares.v - 2) * 9999) / 262142;
    if (w < 1) w = 1;
    if (w > 10000) w = 10000;
    if (cg_write_i64(dir, "cpu.weight", w, err) < 0) return -1;
  }
  if ((r->cpu_quota.set && r->cpu_quota.v != 0) || (r->cpu_period.set && r->cpu_period.v > 0)) {
    char buf[64];
    int64_t period = r->cpu_period.set && r->cpu_period.v > 0 ? r->cpu_period.v : 100000;
    if (r->cpu_quota.set && r->cpu_quota.v > 0) snprintf(buf, sizeof buf, "%lld %lld", (long long) r->cpu_quota.v, (long long) period);
    else snprintf(buf, sizeof buf, "max %lld", (long long) period);
    if (cg_write(dir, "cpu.max", buf, err) < 0) return -1;
  }
  if (r->cpu_idle.set && cg_write_i64(dir, "cpu.idle", r->cpu_idle.v, err) < 0) return -1;
  if (r->cpus && *r->cpus && cg_write(dir, "cpuset.cpus", r->cpus, err) < 0) return -1;
  if (r->mems && *r->mems && cg_write(dir, "cpuset.mems", r->mems, err) < 0) return -1;
  if (r->pids_limit.set && write_max(dir, "pids.max", r->pids_limit.v > 0 ? r->pids_limit.v : -1, err) < 0) return -1;
  if (v2_apply_io_weights(dir, r, err) < 0) return -1;
  static const char *const keys[4] = {"rbps", "wbps", "riops", "wiops"};
  for (int k = 0; k < 4; k++)
    for (size_t i = 0; i < r->n_throttle[k]; i++) {
      const struct cg_blkio_dev *d = &r->throttle[k][i];
      char buf[96];
      snprintf(buf, sizeof buf, "%lld:%lld %s=%llu", (long long) d->major, (long long) d->minor, keys[k], (unsigned long long) d->value);
      if (cg_write(dir, "io.max", buf, err) < 0) return -1;
    }
  if (r->n_hugetlb && !cg_v2_has_controller(dir, "hugetlb"))
    return berth_make_error(err, ENOTSUP, "`linux.resources.hugepageLimits` needs the hugetlb controller, which `%s` does not have", dir);
  for (size_t i = 0; i < r->n_hugetlb; i++) {
    cleanup_free char *f = xasprintf("hugetlb.%s.max", r->hugetlb[i].key);
    if (cg_write(dir, f, r->hugetlb[i].value, err) < 0) return -1;
  }
  for (size_t i = 0; i < r->n_unified; i++)
    if (cg_write(dir, r->unified[i].key, r->unified[i].value, err) < 0) return -1;
  if (r->has_dev_rules && cg_bpf_devices_attach(dir, r->dev_rules, r->n_dev_rules, err) < 0) return -1;
  return 0;
}

static int v2_destroy(struct cgroup_manager *m, berth_err_t *err) {
  cleanup_free char *dir = dir_of(m);
  return cg_rmdir(dir, err);
}

static int v2_pids(struct cgroup_manager *m, pid_t **out, size_t *n, berth_err_t *err) {
  cleanup_free char *dir = dir_of(m);
  return cg_read_pids(dir, out, n, err);
}

static int v2_oom_killed(struct cgroup_manager *m) {
  cleanup_free char *p = xasprintf("%s%s/memory.events", m->root, m->path);
  cleanup_free char *text = NULL;
  berth_err_t e = NULL;
  if (berth_read_file(p, &text, NULL, &e) < 0) {
    berth_error_release(&e);
    return -1;
  }
  char *k = strstr(text, "oom_kill ");
  return k ? atoll(k + 9) > 0 : -1;
}

static int v2_frozen(struct cgroup_manager *m) {
  cleanup_free char *dir = dir_of(m);
  cleanup_free char *p = xasprintf("%s/cgroup.events", dir);
  cleanup_free char *text = NULL;
  berth_err_t e = NULL;
  if (berth_read_file(p, &text, NULL, &e) < 0) {
    berth_error_release(&e);
    return -1;
  }
  char *f = strstr(text, "frozen ");
  return f ? atoi(f + 7) == 1 : -1;
}

static int v2_freeze(struct cgroup_manager *m, bool frozen, berth_err_t *err) {
  cleanup_free char *dir = dir_of(m);
  if (cg_write(dir, "cgroup.freeze", frozen ? "1" : "0", err) < 0) return -1;
  for (int i = 0; i < 1000; i++) {
    if (v2_frozen(m) == (frozen ? 1 : 0)) return 0;
    usleep(1000);
  }
  return berth_make_error(err, ETIMEDOUT, "cgroup `%s` did not become %s", dir, frozen ? "frozen" : "thawed");
}

const struct cgroup_ops cgroup_v2_ops = {
    .name = "v2", .create = v2_create, .enter = v2_enter, .apply = v2_apply, .destroy = v2_destroy, .pids = v2_pids, .oom_killed = v2_oom_killed,
    .freeze = v2_freeze, .frozen = v2_frozen,
};
