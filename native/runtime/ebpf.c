#include "cgroup.h"
#include <errno.h>
int cg_bpf_devices_attach(const char *cgroup_dir, const struct cg_dev_rule *rules, size_t n, berth_err_t *err) { return 0; }
