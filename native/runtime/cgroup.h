/* cgroups: linux.resources decoded once (cgroup_resources_parse, before any side effect), then applied by
 * one of two backends behind struct cgroup_ops: v1 (one hierarchy per controller) and v2 (unified). */
#ifndef BERTH_CGROUP_H
#define BERTH_CGROUP_H
#include "error.h"
#include "json.h"
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct {
  bool set;
  int64_t v;
} opt_i64;

struct cg_dev_rule {
  bool allow;
  char type; /* a, b, c */
  int64_t major, minor; /* -1 = any */
  char access[4];
};

struct cg_blkio_dev {
  int64_t major, minor;
  uint64_t value;      /* rate for throttles */
  opt_i64 weight, leaf_weight;
};

struct cg_kv {
  char *key, *value;
};

struct cgroup_resources {
  opt_i64 mem_limit, mem_reservation, mem_swap, mem_swappiness, mem_kernel, mem_kernel_tcp;
  bool mem_disable_oom_killer;
  opt_i64 cpu_shares, cpu_quota, cpu_period, cpu_rt_runtime, cpu_rt_period, cpu_idle;
  char *cpus, *mems;
  opt_i64 pids_limit;
  opt_i64 blkio_weight, blkio_leaf_weight;
  struct cg_blkio_dev *weight_dev, *throttle[4]; /* read bps, write bps, read iops, write iops */
  size_t n_weight_dev, n_throttle[4];
  struct cg_dev_rule *dev_rules; /* spec rules followed by the default device allows */
  size_t n_dev_rules;
  bool has_dev_rules;
  struct cg_kv *hugetlb, *unified;
  size_t n_hugetlb, n_unified;
  opt_i64 net_classid;      /* linux.resources.network.classID */
  struct cg_kv *net_prio;   /* network.priorities: interface name → priority */
  size_t n_net_prio;
};

struct cgroup_manager;
struct cgroup_ops {
  const char *name;
  int (*create)(struct cgroup_manager *m, berth_err_t *err);
  int (*enter)(struct cgroup_manager *m, pid_t pid, berth_err_t *err);
  int (*apply)(struct cgroup_manager *m, const struct cgroup_resources *r, berth_err_t *err);
  int (*destroy)(struct cgroup_manager *m, berth_err_t *err);
  /* pids in the cgroup (for kill --all and delete --force); *out is malloc'd */
  int (*pids)(struct cgroup_manager *m, pid_t **out, size_t *n, berth_err_t *err);
  /* 1 when the kernel recorded an OOM kill in this cgroup, 0 when not, <0 when unknown */
  int (*oom_killed)(struct cgroup_manager *m);
  /* pause/resume: v1 freezer.state, v2 cgroup.freeze; waits until the kernel reports the new state */
  int (*freeze)(struct cgroup_manager *m, bool frozen, berth_err_t *err);
  /* 1 frozen, 0 not, <0 unknown */
  int (*frozen)(struct cgroup_manager *m);
};

struct cgroup_manager {
  const struct cgroup_ops *ops;
  char *root; /* mount point of the v2 hierarchy, or the v1 base (/sys/fs/cgroup) */
  char *path; /* "/a/b", relative to each hierarchy root */
  bool created_leaf;
};

extern const struct cgroup_ops cgroup_v1_ops, cgroup_v2_ops;

int cgroup_resources_parse(json_value *resources, struct cgroup_resources *out, berth_err_t *err);
void cgroup_resources_free(struct cgroup_resources *r);
/* Map cgroupsPath ("/abs/path", "slice:prefix:name", relative, or NULL) to a path; pick the backend.
 * mode: NULL (detect), "v1" or "v2"; v2_root overrides where the unified hierarchy is (testing). */
int cgroup_manager_new(const char *cgroups_path, const char *id, const char *mode, const char *v2_root,
                       struct cgroup_manager **out, berth_err_t *err);
void cgroup_manager_free(struct cgroup_manager *m);

/* helpers shared by the backends */
int cg_write(const char *dir, const char *file, const char *value, berth_err_t *err);
int cg_write_i64(const char *dir, const char *file, int64_t v, berth_err_t *err);
int cg_read_pids(const char *dir, pid_t **out, size_t *n, berth_err_t *err);
int cg_rmdir(const char *dir, berth_err_t *err);
bool cg_file_exists(const char *dir, const char *file);
/* does the v2 cgroup at dir offer controller (its cgroup.controllers)? */
bool cg_v2_has_controller(const char *dir, const char *controller);
/* enable controller in cgroup.subtree_control from root down to the parent of root+path */
int cg_v2_enable_down(const char *root, const char *path, const char *controller, berth_err_t *err);
/* the eBPF device controller for v2 (ebpf.c) */
int cg_bpf_devices_attach(const char *cgroup_dir, const struct cg_dev_rule *rules, size_t n, berth_err_t *err);

#endif
