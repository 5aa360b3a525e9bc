#include "cgroup.h"
#include "cleanup.h"
#include "util.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

static int opt(json_value *obj, const char *key, opt_i64 *out, const char *what, berth_err_t *err) {
  json_value *v = json_get(obj, key);
  if (!v || v->type == JSON_NULL) return 0;
  if (json_as_int64(v, &out->v) < 0) {
    uint64_t u;
    if (json_as_uint64(v, &u) < 0) return berth_make_error(err, 0, "`linux.resources.%s.%s` must be an integer", what, key);
    out->v = INT64_MAX; /* e.g. 2^64-1 meaning "unlimited" */
  }
  out->set = true;
  return 0;
}

static int dev_list(json_value *arr, const char *what, bool rate, struct cg_blkio_dev **out, size_t *n, berth_err_t *err) {
  if (!arr) return 0;
  if (arr->type != JSON_ARRAY) return berth_make_error(err, 0, "`linux.resources.blockIO.%s` must be an array", what);
  *out = xmalloc0((arr->len + 1) * sizeof **out);
  *n = arr->len;
  for (size_t i = 0; i < arr->len; i++) {
    struct cg_blkio_dev *d = &(*out)[i];
    if (json_as_int64(json_get(arr->items[i], "major"), &d->major) < 0 || json_as_int64(json_get(arr->items[i], "minor"), &d->minor) < 0)
      return berth_make_error(err, 0, "`linux.resources.blockIO.%s[%zu]` needs major and minor", what, i);
    if (rate && json_as_uint64(json_get(arr->items[i], "rate"), &d->value) < 0)
      return berth_make_error(err, 0, "`linux.resources.blockIO.%s[%zu].rate` must be an integer", what, i);
    if (!rate && (opt(arr->items[i], "weight", &d->weight, "blockIO.weightDevice", err) < 0 ||
                  opt(arr->items[i], "leafWeight", &d->leaf_weight, "blockIO.weightDevice", err) < 0))
      return -1;
  }
  return 0;
}

static int kv_list(json_value *obj, const char *what, struct cg_kv **out, size_t *n, berth_err_t *err) {
  if (!obj) return 0;
  if (obj->type != JSON_OBJECT) return berth_make_error(err, 0, "`linux.resources.%s` must be an object", what);
  *out = xmalloc0((obj->len + 1) * sizeof **out);
  *n = obj->len;
  for (size_t i = 0; i < obj->len; i++) {
    if (obj->items[i]->type != JSON_STRING) return berth_make_error(err, 0, "`linux.resources.%s.%s` must be a string", what, obj->keys[i]);
    if (strchr(obj->keys[i], '/') || obj->keys[i][0] == '.') return berth_make_error(err, 0, "`linux.resources.%s`: bad key `%s`", what, obj->keys[i]);
    (*out)[i].key = obj->keys[i];
    (*out)[i].value = obj->items[i]->str;
  }
  return 0;
}

/* Devices every container gets, as runc's AllowedDevices. */
static const struct cg_dev_rule default_allows[] = {
    {true, 'c', -1, -1, "m"},  {true, 'b', -1, -1, "m"},  {true, 'c', 1, 3, "rwm"}, {true, 'c', 1, 5, "rwm"},
    {true, 'c', 1, 7, "rwm"},  {true, 'c', 1, 8, "rwm"},  {true, 'c', 1, 9, "rwm"}, {true, 'c', 5, 0, "rwm"},
    {true, 'c', 5, 2, "rwm"},  {true, 'c', 136, -1, "rwm"}, {true, 'c', 10, 200, "rwm"},
};

int cgroup_resources_parse(json_value *res, struct cgroup_resources *r, berth_err_t *err) {
  memset(r, 0, sizeof *r);
  if (!res) return 0;
  json_value *mem = json_get_object(res, "memory");
  if (opt(mem, "limit", &r->mem_limit, "memory", err) < 0 || opt(mem, "reservation", &r->mem_reservation, "memory", err) < 0 ||
      opt(mem, "swap", &r->mem_swap, "memory", err) < 0 || opt(mem, "swappiness", &r->mem_swappiness, "memory", err) < 0)
    return -1;
  if (opt(mem, "kernel", &r->mem_kernel, "memory", err) < 0 || opt(mem, "kernelTCP", &r->mem_kernel_tcp, "memory", err) < 0) return -1;
  json_value *doom = json_get(mem, "disableOOMKiller");
  r->mem_disable_oom_killer = doom && doom->type == JSON_BOOL && doom->boolean;
  json_value *cpu = json_get_object(res, "cpu");
  if (opt(cpu, "shares", &r->cpu_shares, "cpu", err) < 0 || opt(cpu, "quota", &r->cpu_quota, "cpu", err) < 0 ||
      opt(cpu, "period", &r->cpu_period, "cpu", err) < 0 || opt(cpu, "realtimeRuntime", &r->cpu_rt_runtime, "cpu", err) < 0 ||
      opt(cpu, "realtimePeriod", &r->cpu_rt_period, "cpu", err) < 0 || opt(cpu, "idle", &r->cpu_idle, "cpu", err) < 0)
    return -1;
  r->cpus = (char *) json_get_string(cpu, "cpus");
  r->mems = (char *) json_get_string(cpu, "mems");
  if (opt(json_get_object(res, "pids"), "limit", &r->pids_limit, "pids", err) < 0) return -1;
  json_value *bio = json_get_object(res, "blockIO");
  if (opt(bio, "weight", &r->blkio_weight, "blockIO", err) < 0 || opt(bio, "leafWeight", &r->blkio_leaf_weight, "blockIO", err) < 0 ||
      dev_list(json_get(bio, "weightDevice"), "weightDevice", false, &r->weight_dev, &r->n_weight_dev, err) < 0 ||
      dev_list(json_get(bio, "throttleReadBpsDevice"), "throttleReadBpsDevice", true, &r->throttle[0], &r->n_throttle[0], err) < 0 ||
      dev_list(json_get(bio, "throttleWriteBpsDevice"), "throttleWriteBpsDevice", true, &r->throttle[1], &r->n_throttle[1], err) < 0 ||
      dev_list(json_get(bio, "throttleReadIOPSDevice"), "throttleReadIOPSDevice", true, &r->throttle[2], &r->n_throttle[2], err) < 0 ||
      dev_list(json_get(bio, "throttleWriteIOPSDevice"), "throttleWriteIOPSDevice", true, &r->throttle[3], &r->n_throttle[3], err) < 0)
    return -1;
  json_value *devs = json_get(res, "devices");
  if (devs && devs->type != JSON_ARRAY) return berth_make_error(err, 0, "`linux.resources.devices` must be an array");
  size_t nd = devs ? devs->len : 0, ndef = sizeof default_allows / sizeof default_allows[0];
  r->has_dev_rules = devs != NULL;
  r->dev_rules = xmalloc0((nd + ndef + 1) * sizeof *r->dev_rules);
  for (size_t i = 0; i < nd; i++) {
    struct cg_dev_rule *d = &r->dev_rules[r->n_dev_rules++];
    json_value *o = devs->items[i];
    json_value *allow = json_get(o, "allow");
    if (!allow || allow->type != JSON_BOOL) return berth_make_error(err, 0, "`linux.resources.devices[%zu].allow` must be a boolean", i);
    d->allow = allow->boolean;
    const char *type = json_get_string(o, "type");
    d->type = type && *type ? type[0] : 'a';
    if (!strchr("abc", d->type) || (type && strlen(type) > 1)) return berth_make_error(err, 0, "`linux.resources.devices[%zu].type` must be a, b or c", i);
    d->major = d->minor = -1;
    json_value *maj = json_get(o, "major"), *min = json_get(o, "minor");
    if ((maj && maj->type != JSON_NULL && json_as_int64(maj, &d->major) < 0) || (min && min->type != JSON_NULL && json_as_int64(min, &d->minor) < 0))
      return berth_make_error(err, 0, "`linux.resources.devices[%zu]`: bad major/minor", i);
    const char *access = json_get_string(o, "access");
    if (!access || !*access) access = "rwm";
    if (strlen(access) > 3 || strspn(access, "rwm") != strlen(access)) return berth_make_error(err, 0, "`linux.resources.devices[%zu].access` must be made of r, w, m", i);
    strcpy(d->access, access);
  }
  for (size_t i = 0; i < ndef; i++) r->dev_rules[r->n_dev_rules++] = default_allows[i];
  json_value *net = json_get(res, "network");
  if (net && net->type != JSON_OBJECT) return berth_make_error(err, 0, "`linux.resources.network` must be an object");
  if (opt(net, "classID", &r->net_classid, "network", err) < 0) return -1;
  if (r->net_classid.set && (r->net_classid.v < 0 || r->net_classid.v > UINT32_MAX))
    return berth_make_error(err, 0, "`linux.resources.network.classID` must be a 32-bit unsigned integer");
  json_value *prios = json_get(net, "priorities");
  if (prios) {
    if (prios->type != JSON_ARRAY) return berth_make_error(err, 0, "`linux.resources.network.priorities` must be an array");
    r->net_prio = xmalloc0((prios->len + 1) * sizeof *r->net_prio);
    for (size_t i = 0; i < prios->len; i++) {
      const char *name = json_get_string(prios->items[i], "name");
      uint64_t prio;
      /* an interface name (IFNAMSIZ), written as "<name> <prio>" */
      if (!name || !*name || strlen(name) > 15 || strpbrk(name, " /\n") || json_as_uint64(json_get(prios->items[i], "priority"), &prio) < 0 || prio > UINT32_MAX)
        return berth_make_error(err, 0, "`linux.resources.network.priorities[%zu]` needs an interface name and a 32-bit priority", i);
      r->net_prio[i].key = (char *) name;
      r->net_prio[i].value = xasprintf("%llu", (unsigned long long) prio);
      r->n_net_prio++;
    }
  }
  if (kv_list(json_get(res, "unified"), "unified", &r->unified, &r->n_unified, err) < 0) return -1;
  json_value *hp = json_get(res, "hugepageLimits");
  if (hp) {
    if (hp->type != JSON_ARRAY) return berth_make_error(err, 0, "`linux.resources.hugepageLimits` must be an array");
    r->hugetlb = xmalloc0((hp->len + 1) * sizeof *r->hugetlb);
    for (size_t i = 0; i < hp->len; i++) {
      const char *size = json_get_string(hp->items[i], "pageSize");
      uint64_t limit;
      if (!size || strchr(size, '/') || json_as_uint64(json_get(hp->items[i], "limit"), &limit) < 0)
        return berth_make_error(err, 0, "`linux.resources.hugepageLimits[%zu]` needs pageSize and limit", i);
      r->hugetlb[i].key = (char *) size;
      r->hugetlb[i].value = xasprintf("%llu", (unsigned long long) limit);
      r->n_hugetlb++;
    }
  }
  return 0;
}

void cgroup_resources_free(struct cgroup_resources *r) {
  free(r->weight_dev);
  for (int i = 0; i < 4; i++) free(r->throttle[i]);
  free(r->dev_rules);
  free(r->unified);
  for (size_t i = 0; i < r->n_hugetlb; i++) free(r->hugetlb[i].value);
  free(r->hugetlb);
  for (size_t i = 0; i < r->n_net_prio; i++) free(r->net_prio[i].value);
  free(r->net_prio);
}

static bool is_cgroup2(const char *path) {
  struct statfs sfs;
  return statfs(path, &sfs) == 0 && sfs.f_type == CGROUP2_SUPER_MAGIC;
}

int cgroup_manager_new(const char *cgroups_path, const char *id, const char *mode, const char *v2_root,
                       struct cgroup_manager **out, berth_err_t *err) {
  cleanup_free char *path = NULL;
  if (!cgroups_path || !*cgroups_path) {
    path = xasprintf("/berth/%s", id);
  } else if (cgroups_path[0] == '/') {
    path = xstrdup(cgroups_path);
  } else if (strchr(cgroups_path, ':')) {
    /* systemd style "slice:prefix:name" → /slice/prefix-name.scope (slices nest by their dashes, as
     * systemd does: "a-b.slice" lives in "a.slice/a-b.slice"). */
    cleanup_free char *copy = xstrdup(cgroups_path);
    char *slice = copy, *prefix = strchr(copy, ':');
    *prefix++ = 0;
    char *name = strchr(prefix, ':');
    if (!name) return berth_make_error(err, 0, "cgroupsPath `%s`: expected slice:prefix:name", cgroups_path);
    *name++ = 0;
    if (!*slice) slice = "system.slice";
    berth_buf b = {0};
    if (strcmp(slice, "-.slice") != 0) {
      const char *end = strstr(slice, ".slice");
      if (!end) return berth_make_error(err, 0, "cgroupsPath `%s`: slice must end in .slice", cgroups_path);
      for (const char *dash = strchr(slice, '-'); dash && dash < end; dash = strchr(dash + 1, '-'))
        berth_buf_printf(&b, "/%.*s.slice", (int) (dash - slice), slice);
      berth_buf_printf(&b, "/%s", slice);
    }
    if (*prefix) berth_buf_printf(&b, "/%s-%s.scope", prefix, name);
    else berth_buf_printf(&b, "/%s", name);
    path = b.buf;
  } else {
    path = xasprintf("/%s", cgroups_path);
  }
  if (strstr(path, "/../") || strstr(path, "/./") || (strlen(path) >= 3 && strcmp(path + strlen(path) - 3, "/..") == 0))
    return berth_make_error(err, 0, "cgroupsPath `%s` must not contain `..`", path);
  struct cgroup_manager *m = xmalloc0(sizeof *m);
  bool v2;
  if (mode && strcmp(mode, "v2") == 0) v2 = true;
  else if (mode && strcmp(mode, "v1") == 0) v2 = false;
  else v2 = is_cgroup2("/sys/fs/cgroup");
  m->ops = v2 ? &cgroup_v2_ops : &cgroup_v1_ops;
  m->root = xstrdup(v2 ? (v2_root && *v2_root ? v2_root : "/sys/fs/cgroup") : "/sys/fs/cgroup");
  m->path = steal_pointer(&path);
  *out = m;
  return 0;
}

void cgroup_manager_free(struct cgroup_manager *m) {
  if (!m) return;
  free(m->root);
  free(m->path);
  free(m);
}

int cg_write(const char *dir, const char *file, const char *value, berth_err_t *err) {
  cleanup_free char *p = xasprintf("%s/%s", dir, file);
  cleanup_close int fd = open(p, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return berth_make_error(err, errno, "open `%s`", p);
  if (write(fd, value, strlen(value)) < 0) return berth_make_error(err, errno, "write `%s` to `%s`", value, p);
  return 0;
}

int cg_write_i64(const char *dir, const char *file, int64_t v, berth_err_t *err) {
  char buf[32];
  snprintf(buf, sizeof buf, "%lld", (long long) v);
  return cg_write(dir, file, buf, err);
}

int cg_read_pids(const char *dir, pid_t **out, size_t *n, berth_err_t *err) {
  cleanup_free char *p = xasprintf("%s/cgroup.procs", dir);
  cleanup_free char *text = NULL;
  *out = NULL;
  *n = 0;
  if (berth_read_file(p, &text, NULL, err) < 0) return -1;
  size_t cap = 16;
  pid_t *pids = xmalloc(cap * sizeof *pids);
  for (char *s = text, *end; *s; s = end) {
    long v = strtol(s, &end, 10);
    if (end == s) break;
    if (*n == cap) pids = xrealloc(pids, (cap *= 2) * sizeof *pids);
    pids[(*n)++] = (pid_t) v;
  }
  *out = pids;
  return 0;
}

bool cg_file_exists(const char *dir, const char *file) {
  cleanup_free char *p = xasprintf("%s/%s", dir, file);
  return access(p, F_OK) == 0;
}

bool cg_v2_has_controller(const char *dir, const char *controller) {
  cleanup_free char *p = xasprintf("%s/cgroup.controllers", dir);
  cleanup_free char *text = NULL;
  berth_err_t e = NULL;
  if (berth_read_file(p, &text, NULL, &e) < 0) {
    berth_error_release(&e);
    return false;
  }
  char *save = NULL;
  for (char *tok = strtok_r(text, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save))
    if (strcmp(tok, controller) == 0) return true;
  return false;
}

int cg_v2_enable_down(const char *root, const char *path, const char *controller, berth_err_t *err) {
  cleanup_free char *dir = xasprintf("%s%s", root, path);
  cleanup_free char *v = xasprintf("+%s", controller);
  /* every ancestor of the leaf, root first: the leaf itself keeps an empty subtree_control */
  for (size_t i = strlen(root); dir[i]; i++) {
    if (dir[i] != '/') continue;
    dir[i] = 0;
    int r = cg_write(dir, "cgroup.subtree_control", v, err);
    dir[i] = '/';
    if (r < 0) return berth_error_prepend(err, "enable the %s controller", controller);
  }
  return 0;
}

/* rmdir, killing what is left and retrying while the kernel still reports the cgroup busy. */
int cg_rmdir(const char *dir, berth_err_t *err) {
  for (int attempt = 0; attempt < 200; attempt++) {
    if (rmdir(dir) == 0 || errno == ENOENT) return 0;
    if (errno != EBUSY) return berth_make_error(err, errno, "rmdir `%s`", dir);
    cleanup_free pid_t *pids = NULL;
    size_t n = 0;
    berth_err_t e2 = NULL;
    if (cg_read_pids(dir, &pids, &n, &e2) == 0)
      for (size_t i = 0; i < n; i++) kill(pids[i], SIGKILL);
    berth_error_release(&e2);
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return berth_make_error(err, EBUSY, "rmdir `%s`", dir);
}
