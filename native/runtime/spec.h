/* runtime-spec config.json, decoded and validated before any side effect (a bad config leaves nothing
 * behind). Subsystems with large subtrees (resources, seccomp) keep a pointer into the JSON document and
 * check it in their own *_validate function, also called before side effects. */
#ifndef BERTH_SPEC_H
#define BERTH_SPEC_H
#include "error.h"
#include "json.h"
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define HOOK_KINDS 6
enum hook_kind { HOOK_PRESTART, HOOK_CREATE_RUNTIME, HOOK_CREATE_CONTAINER, HOOK_START_CONTAINER, HOOK_POSTSTART, HOOK_POSTSTOP };
extern const char *const hook_kind_names[HOOK_KINDS];

struct spec_hook {
  char *path;
  char **args; /* NULL-terminated; may be NULL */
  char **env;
  int timeout; /* seconds, 0 = none */
};

struct spec_mount {
  char *destination, *type, *source;
  unsigned long flags, propagation; /* MS_* */
  bool bind, recursive_ro;
  char *data; /* options the kernel takes as data */
};

struct spec_namespace {
  int flag;   /* CLONE_NEW* */
  char *path; /* join instead of create */
};

struct spec_idmap {
  uint32_t container, host, size;
};

struct spec_rlimit {
  int resource;
  uint64_t soft, hard;
};

struct spec_device {
  char *path;
  char type; /* c, b, u, p */
  int64_t major, minor;
  uint32_t mode;
  bool has_mode, has_uid, has_gid;
  uid_t uid;
  gid_t gid;
};

struct spec_sysctl {
  char *key, *value;
};

struct container_spec {
  json_value *doc; /* owns everything borrowed below */
  char *bundle;    /* absolute */
  char *root;      /* absolute rootfs path */
  bool root_readonly;
  /* process */
  bool terminal;
  char **args, **env;
  char *cwd;
  uid_t uid;
  gid_t gid;
  gid_t *additional_gids;
  size_t n_additional_gids;
  bool has_umask;
  mode_t umask;
  bool no_new_privileges;
  bool has_oom_score_adj;
  int oom_score_adj;
  struct spec_rlimit *rlimits;
  size_t n_rlimits;
  json_value *capabilities; /* process.capabilities */
  char *hostname, *domainname;
  struct spec_mount *mounts;
  size_t n_mounts;
  struct spec_hook *hooks[HOOK_KINDS];
  size_t n_hooks[HOOK_KINDS];
  /* linux */
  struct spec_namespace *namespaces;
  size_t n_namespaces;
  struct spec_idmap *uid_mappings, *gid_mappings;
  size_t n_uid_mappings, n_gid_mappings;
  struct spec_device *devices;
  size_t n_devices;
  struct spec_sysctl *sysctls;
  size_t n_sysctls;
  char **masked_paths, **readonly_paths;
  size_t n_masked_paths, n_readonly_paths;
  unsigned long rootfs_propagation; /* 0 = default (rslave for the host side, private inside) */
  char *cgroups_path;
  char *mount_label;
  json_value *resources; /* linux.resources */
  json_value *seccomp;   /* linux.seccomp */
  json_value *annotations;
};

int spec_load(const char *bundle, struct container_spec **out, berth_err_t *err);
void spec_free(struct container_spec *s);
/* exec --process: replace `process` with the object in file and decode it again */
int spec_replace_process(struct container_spec *s, const char *file, berth_err_t *err);
bool spec_has_namespace(const struct container_spec *s, int flag);
const struct spec_namespace *spec_namespace(const struct container_spec *s, int flag);
/* Parse "rw,nosuid,mode=755" style mount options. Unknown options go to data. */
void spec_parse_mount_options(char **opts, size_t n, struct spec_mount *m);

#endif
