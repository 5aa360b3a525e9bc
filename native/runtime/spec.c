#include "spec.h"
#include "cleanup.h"
#include "util.h"
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>

const char *const hook_kind_names[HOOK_KINDS] = {"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"};

static int string_array(json_value *arr, const char *what, char ***out, size_t *n_out, berth_err_t *err) {
  *out = NULL;
  if (n_out) *n_out = 0;
  if (!arr) return 0;
  if (arr->type != JSON_ARRAY) return berth_make_error(err, 0, "`%s` must be an array of strings", what);
  char **v = xmalloc0((arr->len + 1) * sizeof(char *));
  for (size_t i = 0; i < arr->len; i++) {
    if (arr->items[i]->type != JSON_STRING) {
      free(v);
      return berth_make_error(err, 0, "`%s[%zu]` must be a string", what, i);
    }
    v[i] = arr->items[i]->str;
  }
  *out = v;
  if (n_out) *n_out = arr->len;
  return 0;
}

static int get_u32(json_value *obj, const char *key, const char *what, uint32_t *out, bool required, berth_err_t *err) {
  json_value *v = json_get(obj, key);
  uint64_t u;
  if (!v) {
    if (required) return berth_make_error(err, 0, "`%s.%s` is required", what, key);
    return 0;
  }
  if (json_as_uint64(v, &u) < 0 || u > UINT32_MAX) return berth_make_error(err, 0, "`%s.%s` must be a 32-bit unsigned integer", what, key);
  *out = (uint32_t) u;
  return 1;
}

static const struct {
  const char *name;
  int flag;
} ns_names[] = {
    {"mount", CLONE_NEWNS}, {"pid", CLONE_NEWPID}, {"network", CLONE_NEWNET}, {"ipc", CLONE_NEWIPC},
    {"uts", CLONE_NEWUTS},  {"user", CLONE_NEWUSER}, {"cgroup", CLONE_NEWCGROUP},
};

static const struct {
  const char *name;
  int res;
} rlimit_names[] = {
    {"RLIMIT_CPU", RLIMIT_CPU},         {"RLIMIT_FSIZE", RLIMIT_FSIZE},   {"RLIMIT_DATA", RLIMIT_DATA},
    {"RLIMIT_STACK", RLIMIT_STACK},     {"RLIMIT_CORE", RLIMIT_CORE},     {"RLIMIT_RSS", RLIMIT_RSS},
    {"RLIMIT_NPROC", RLIMIT_NPROC},     {"RLIMIT_NOFILE", RLIMIT_NOFILE}, {"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK},
    {"RLIMIT_AS", RLIMIT_AS},           {"RLIMIT_LOCKS", RLIMIT_LOCKS},   {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING},
    {"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE}, {"RLIMIT_NICE", RLIMIT_NICE},   {"RLIMIT_RTPRIO", RLIMIT_RTPRIO},
    {"RLIMIT_RTTIME", RLIMIT_RTTIME},
};

void spec_parse_mount_options(char **opts, size_t n, struct spec_mount *m) {
  static const struct {
    const char *name;
    bool clear;
    unsigned long flag;
  } flags[] = {
      {"ro", false, MS_RDONLY},         {"rw", true, MS_RDONLY},          {"nosuid", false, MS_NOSUID},
      {"suid", true, MS_NOSUID},        {"nodev", false, MS_NODEV},       {"dev", true, MS_NODEV},
      {"noexec", false, MS_NOEXEC},     {"exec", true, MS_NOEXEC},        {"sync", false, MS_SYNCHRONOUS},
      {"async", true, MS_SYNCHRONOUS},  {"dirsync", false, MS_DIRSYNC},   {"remount", false, MS_REMOUNT},
      {"mand", false, MS_MANDLOCK},     {"nomand", true, MS_MANDLOCK},    {"atime", true, MS_NOATIME},
      {"noatime", false, MS_NOATIME},   {"diratime", true, MS_NODIRATIME}, {"nodiratime", false, MS_NODIRATIME},
      {"relatime", false, MS_RELATIME}, {"norelatime", true, MS_RELATIME}, {"strictatime", false, MS_STRICTATIME},
      {"nostrictatime", true, MS_STRICTATIME}, {"bind", false, MS_BIND}, {"rbind", false, MS_BIND | MS_REC},
  };
  static const struct {
    const char *name;
    unsigned long flag;
  } props[] = {
      {"private", MS_PRIVATE}, {"rprivate", MS_PRIVATE | MS_REC}, {"shared", MS_SHARED},
      {"rshared", MS_SHARED | MS_REC}, {"slave", MS_SLAVE}, {"rslave", MS_SLAVE | MS_REC},
      {"unbindable", MS_UNBINDABLE}, {"runbindable", MS_UNBINDABLE | MS_REC},
  };
  berth_buf data = {0};
  for (size_t i = 0; i < n; i++) {
    const char *o = opts[i];
    bool found = false;
    for (size_t j = 0; j < sizeof flags / sizeof flags[0] && !found; j++)
      if (strcmp(o, flags[j].name) == 0) {
        if (flags[j].clear) m->flags &= ~flags[j].flag;
        else m->flags |= flags[j].flag;
        found = true;
      }
    for (size_t j = 0; j < sizeof props / sizeof props[0] && !found; j++)
      if (strcmp(o, props[j].name) == 0) {
        m->propagation = props[j].flag;
        found = true;
      }
    if (!found && strcmp(o, "rro") == 0) {
      m->recursive_ro = true;
      m->flags |= MS_RDONLY;
      found = true;
    }
    if (!found && (strcmp(o, "tmpcopyup") == 0 || strcmp(o, "idmap") == 0 || strcmp(o, "ridmap") == 0 || strcmp(o, "rrw") == 0))
      found = true; /* accepted, not implemented */
    if (!found) {
      if (data.len) berth_buf_append(&data, ",", 1);
      berth_buf_puts(&data, o);
    }
  }
  if (m->flags & MS_BIND) {
    m->bind = true;
    m->recursive_ro = m->recursive_ro && (m->flags & MS_REC);
  }
  m->data = data.buf;
}

static int parse_hooks(struct container_spec *s, berth_err_t *err) {
  json_value *hooks = json_get_object(s->doc, "hooks");
  if (!hooks) return 0;
  for (int k = 0; k < HOOK_KINDS; k++) {
    json_value *arr = json_get(hooks, hook_kind_names[k]);
    if (!arr) continue;
    if (arr->type != JSON_ARRAY) return berth_make_error(err, 0, "`hooks.%s` must be an array", hook_kind_names[k]);
    s->hooks[k] = xmalloc0((arr->len + 1) * sizeof(struct spec_hook));
    s->n_hooks[k] = arr->len;
    for (size_t i = 0; i < arr->len; i++) {
      struct spec_hook *h = &s->hooks[k][i];
      h->path = (char *) json_get_string(arr->items[i], "path");
      if (!h->path || h->path[0] != '/') return berth_make_error(err, 0, "`hooks.%s[%zu].path` must be an absolute path", hook_kind_names[k], i);
      if (string_array(json_get(arr->items[i], "args"), "hook args", &h->args, NULL, err) < 0) return -1;
      if (string_array(json_get(arr->items[i], "env"), "hook env", &h->env, NULL, err) < 0) return -1;
      json_value *t = json_get(arr->items[i], "timeout");
      int64_t to = 0;
      if (t && (json_as_int64(t, &to) < 0 || to <= 0 || to > INT_MAX))
        return berth_make_error(err, 0, "`hooks.%s[%zu].timeout` must be a positive integer", hook_kind_names[k], i);
      h->timeout = (int) to;
    }
  }
  return 0;
}

static int parse_process(struct container_spec *s, berth_err_t *err) {
  json_value *p = json_get_object(s->doc, "process");
  if (!p) return berth_make_error(err, 0, "`process` is required");
  json_value *t = json_get(p, "terminal");
  s->terminal = t && t->type == JSON_BOOL && t->boolean;
  size_t nargs = 0;
  if (string_array(json_get(p, "args"), "process.args", &s->args, &nargs, err) < 0) return -1;
  if (nargs == 0) return berth_make_error(err, 0, "`process.args` must name the program to run");
  if (string_array(json_get(p, "env"), "process.env", &s->env, NULL, err) < 0) return -1;
  if (!s->env) s->env = xmalloc0(sizeof(char *));
  s->cwd = (char *) json_get_string(p, "cwd");
  if (!s->cwd) s->cwd = "/";
  if (s->cwd[0] != '/') return berth_make_error(err, 0, "`process.cwd` must be an absolute path, got `%s`", s->cwd);
  json_value *user = json_get_object(p, "user");
  uint32_t u = 0;
  if (get_u32(user, "uid", "process.user", &u, false, err) < 0) return -1;
  s->uid = u;
  u = 0;
  if (get_u32(user, "gid", "process.user", &u, false, err) < 0) return -1;
  s->gid = u;
  int r = get_u32(user, "umask", "process.user", &u, false, err);
  if (r < 0) return -1;
  if (r > 0) {
    s->has_umask = true;
    s->umask = u & 07777;
  }
  json_value *ag = json_get(user, "additionalGids");
  if (ag) {
    if (ag->type != JSON_ARRAY) return berth_make_error(err, 0, "`process.user.additionalGids` must be an array");
    s->additional_gids = xmalloc0((ag->len + 1) * sizeof(gid_t));
    s->n_additional_gids = ag->len;
    for (size_t i = 0; i < ag->len; i++) {
      uint64_t g;
      if (json_as_uint64(ag->items[i], &g) < 0 || g > UINT32_MAX) return berth_make_error(err, 0, "`process.user.additionalGids[%zu]` must be a gid", i);
      s->additional_gids[i] = (gid_t) g;
    }
  }
  json_value *nnp = json_get(p, "noNewPrivileges");
  s->no_new_privileges = nnp && nnp->type == JSON_BOOL && nnp->boolean;
  json_value *oom = json_get(p, "oomScoreAdj");
  if (oom) {
    int64_t v;
    if (json_as_int64(oom, &v) < 0 || v < -1000 || v > 1000) return berth_make_error(err, 0, "`process.oomScoreAdj` must be an integer in [-1000, 1000]");
    s->has_oom_score_adj = true;
    s->oom_score_adj = (int) v;
  }
  json_value *rl = json_get(p, "rlimits");
  if (rl) {
    if (rl->type != JSON_ARRAY) return berth_make_error(err, 0, "`process.rlimits` must be an array");
    s->rlimits = xmalloc0((rl->len + 1) * sizeof *s->rlimits);
    s->n_rlimits = rl->len;
    for (size_t i = 0; i < rl->len; i++) {
      const char *type = json_get_string(rl->items[i], "type");
      int res = -1;
      for (size_t j = 0; type && j < sizeof rlimit_names / sizeof rlimit_names[0]; j++)
        if (strcmp(type, rlimit_names[j].name) == 0) res = rlimit_names[j].res;
      if (res < 0) return berth_make_error(err, 0, "`process.rlimits[%zu].type`: unknown rlimit `%s`", i, type ? type : "(missing)");
      s->rlimits[i].resource = res;
      if (json_as_uint64(json_get(rl->items[i], "soft"), &s->rlimits[i].soft) < 0 ||
          json_as_uint64(json_get(rl->items[i], "hard"), &s->rlimits[i].hard) < 0)
        return berth_make_error(err, 0, "`process.rlimits[%zu]` needs integer soft and hard", i);
    }
  }
  s->capabilities = json_get(p, "capabilities");
  if (s->capabilities && s->capabilities->type != JSON_OBJECT) return berth_make_error(err, 0, "`process.capabilities` must be an object");
  return 0;
}

static int parse_mounts(struct container_spec *s, berth_err_t *err) {
  json_value *arr = json_get(s->doc, "mounts");
  if (!arr) return 0;
  if (arr->type != JSON_ARRAY) return berth_make_error(err, 0, "`mounts` must be an array");
  s->mounts = xmalloc0((arr->len + 1) * sizeof *s->mounts);
  s->n_mounts = arr->len;
  for (size_t i = 0; i < arr->len; i++) {
    struct spec_mount *m = &s->mounts[i];
    m->destination = (char *) json_get_string(arr->items[i], "destination");
    if (!m->destination || m->destination[0] != '/') return berth_make_error(err, 0, "`mounts[%zu].destination` must be an absolute path", i);
    m->type = (char *) json_get_string(arr->items[i], "type");
    m->source = (char *) json_get_string(arr->items[i], "source");
    cleanup_free char **opts = NULL;
    size_t n = 0;
    if (string_array(json_get(arr->items[i], "options"), "mount options", &opts, &n, err) < 0) return -1;
    spec_parse_mount_options(opts, n, m);
    if (m->type && strcmp(m->type, "bind") == 0) m->bind = true;
    if (m->bind && !m->source) return berth_make_error(err, 0, "`mounts[%zu]`: a bind mount needs a source", i);
    if (!m->bind && !m->type) return berth_make_error(err, 0, "`mounts[%zu]` needs a type", i);
  }
  return 0;
}

static int parse_linux(struct container_spec *s, berth_err_t *err) {
  json_value *l = json_get_object(s->doc, "linux");
  if (!l) return 0;
  json_value *ns = json_get(l, "namespaces");
  if (ns) {
    if (ns->type != JSON_ARRAY) return berth_make_error(err, 0, "`linux.namespaces` must be an array");
    s->namespaces = xmalloc0((ns->len + 1) * sizeof *s->namespaces);
    for (size_t i = 0; i < ns->len; i++) {
      const char *type = json_get_string(ns->items[i], "type");
      int flag = 0;
      for (size_t j = 0; type && j < sizeof ns_names / sizeof ns_names[0]; j++)
        if (strcmp(type, ns_names[j].name) == 0) flag = ns_names[j].flag;
      if (!flag) return berth_make_error(err, 0, "`linux.namespaces[%zu].type`: unknown namespace `%s`", i, type ? type : "(missing)");
      if (spec_has_namespace(s, flag)) return berth_make_error(err, 0, "`linux.namespaces`: `%s` given twice", type);
      s->namespaces[s->n_namespaces].flag = flag;
      s->namespaces[s->n_namespaces].path = (char *) json_get_string(ns->items[i], "path");
      s->n_namespaces++;
    }
  }
  for (int which = 0; which < 2; which++) {
    json_value *arr = json_get(l, which ? "gidMappings" : "uidMappings");
    if (!arr) continue;
    if (arr->type != JSON_ARRAY) return berth_make_error(err, 0, "`linux.%s` must be an array", which ? "gidMappings" : "uidMappings");
    struct spec_idmap *m = xmalloc0((arr->len + 1) * sizeof *m);
    if (which) {
      s->gid_mappings = m;
      s->n_gid_mappings = arr->len;
    } else {
      s->uid_mappings = m;
      s->n_uid_mappings = arr->len;
    }
    for (size_t i = 0; i < arr->len; i++)
      if (get_u32(arr->items[i], "containerID", "linux.idMappings", &m[i].container, true, err) < 0 ||
          get_u32(arr->items[i], "hostID", "linux.idMappings", &m[i].host, true, err) < 0 ||
          get_u32(arr->items[i], "size", "linux.idMappings", &m[i].size, true, err) < 0)
        return -1;
  }
  if ((s->n_uid_mappings || s->n_gid_mappings) && !spec_has_namespace(s, CLONE_NEWUSER))
    return berth_make_error(err, 0, "`linux.uidMappings` given without a user namespace");
  const struct spec_namespace *userns = spec_namespace(s, CLONE_NEWUSER);
  if (userns && !userns->path && (!s->n_uid_mappings || !s->n_gid_mappings))
    return berth_make_error(err, 0, "a new user namespace needs `linux.uidMappings` and `linux.gidMappings`");
  json_value *devs = json_get(l, "devices");
  if (devs) {
    if (devs->type != JSON_ARRAY) return berth_make_error(err, 0, "`linux.devices` must be an array");
    s->devices = xmalloc0((devs->len + 1) * sizeof *s->devices);
    s->n_devices = devs->len;
    for (size_t i = 0; i < devs->len; i++) {
      struct spec_device *d = &s->devices[i];
      json_value *o = devs->items[i];
      d->path = (char *) json_get_string(o, "path");
      const char *type = json_get_string(o, "type");
      if (!d->path || d->path[0] != '/') return berth_make_error(err, 0, "`linux.devices[%zu].path` must be an absolute path", i);
      if (!type || strlen(type) != 1 || !strchr("cbup", type[0])) return berth_make_error(err, 0, "`linux.devices[%zu].type` must be c, b, u or p", i);
      d->type = type[0];
      if (d->type != 'p' && (json_as_int64(json_get(o, "major"), &d->major) < 0 || json_as_int64(json_get(o, "minor"), &d->minor) < 0))
        return berth_make_error(err, 0, "`linux.devices[%zu]` needs major and minor", i);
      uint32_t v;
      int r;
      if ((r = get_u32(o, "fileMode", "linux.devices", &v, false, err)) < 0) return -1;
      if (r) {
        d->has_mode = true;
        d->mode = v;
      }
      if ((r = get_u32(o, "uid", "linux.devices", &v, false, err)) < 0) return -1;
      if (r) {
        d->has_uid = true;
        d->uid = v;
      }
      if ((r = get_u32(o, "gid", "linux.devices", &v, false, err)) < 0) return -1;
      if (r) {
        d->has_gid = true;
        d->gid = v;
      }
    }
  }
  json_value *sys = json_get(l, "sysctl");
  if (sys) {
    if (sys->type != JSON_OBJECT) return berth_make_error(err, 0, "`linux.sysctl` must be an object");
    s->sysctls = xmalloc0((sys->len + 1) * sizeof *s->sysctls);
    s->n_sysctls = sys->len;
    for (size_t i = 0; i < sys->len; i++) {
      if (sys->items[i]->type != JSON_STRING) return berth_make_error(err, 0, "`linux.sysctl.%s` must be a string", sys->keys[i]);
      if (strstr(sys->keys[i], "..") || sys->keys[i][0] == '/' || sys->keys[i][0] == '.') return berth_make_error(err, 0, "`linux.sysctl`: bad key `%s`", sys->keys[i]);
      s->sysctls[i].key = sys->keys[i];
      s->sysctls[i].value = sys->items[i]->str;
    }
  }
  if (string_array(json_get(l, "maskedPaths"), "linux.maskedPaths", &s->masked_paths, &s->n_masked_paths, err) < 0) return -1;
  if (string_array(json_get(l, "readonlyPaths"), "linux.readonlyPaths", &s->readonly_paths, &s->n_readonly_paths, err) < 0) return -1;
  const char *prop = json_get_string(l, "rootfsPropagation");
  if (prop && *prop) {
    struct spec_mount m = {0};
    char *opt = (char *) prop;
    spec_parse_mount_options(&opt, 1, &m);
    if (!m.propagation) {
      free(m.data);
      return berth_make_error(err, 0, "`linux.rootfsPropagation`: unknown value `%s`", prop);
    }
    s->rootfs_propagation = m.propagation;
  }
  s->cgroups_path = (char *) json_get_string(l, "cgroupsPath");
  s->mount_label = (char *) json_get_string(l, "mountLabel");
  s->resources = json_get_object(l, "resources");
  s->seccomp = json_get_object(l, "seccomp");
  return 0;
}

int spec_load(const char *bundle, struct container_spec **out, berth_err_t *err) {
  char abs[PATH_MAX];
  if (!realpath(bundle, abs)) return berth_make_error(err, errno, "bundle `%s`", bundle);
  cleanup_free char *file = xasprintf("%s/config.json", abs);
  cleanup_free char *text = NULL;
  size_t len;
  if (berth_read_file(file, &text, &len, err) < 0) return -1;
  struct container_spec *s = xmalloc0(sizeof *s);
  s->bundle = xstrdup(abs);
  if (json_parse(text, len, &s->doc, err) < 0 || s->doc->type != JSON_OBJECT) {
    if (!*err) berth_make_error(err, 0, "not a JSON object");
    spec_free(s);
    return berth_error_prepend(err, "`%s`", file);
  }
  const char *ver = json_get_string(s->doc, "ociVersion");
  json_value *root = json_get_object(s->doc, "root");
  const char *rpath = json_get_string(root, "path");
  int ret = 0;
  if (!ver) ret = berth_make_error(err, 0, "`ociVersion` is required");
  else if (!rpath || !*rpath) ret = berth_make_error(err, 0, "`root.path` is required");
  if (ret == 0) {
    s->root = rpath[0] == '/' ? xstrdup(rpath) : xasprintf("%s/%s", abs, rpath);
    json_value *ro = json_get(root, "readonly");
    s->root_readonly = ro && ro->type == JSON_BOOL && ro->boolean;
    s->hostname = (char *) json_get_string(s->doc, "hostname");
    s->domainname = (char *) json_get_string(s->doc, "domainname");
    s->annotations = json_get_object(s->doc, "annotations");
    if (parse_process(s, err) < 0 || parse_mounts(s, err) < 0 || parse_hooks(s, err) < 0 || parse_linux(s, err) < 0) ret = -1;
  }
  if (ret == 0) {
    char rabs[PATH_MAX];
    if (!realpath(s->root, rabs)) ret = berth_make_error(err, errno, "root.path `%s`", s->root);
    else {
      free(s->root);
      s->root = xstrdup(rabs);
    }
  }
  if (ret == 0 && s->hostname && *s->hostname && !spec_has_namespace(s, CLONE_NEWUTS))
    ret = berth_make_error(err, 0, "`hostname` needs a uts namespace");
  if (ret < 0) {
    spec_free(s);
    return berth_error_prepend(err, "`%s`", file);
  }
  *out = s;
  return 0;
}

int spec_replace_process(struct container_spec *s, const char *file, berth_err_t *err) {
  cleanup_free char *text = NULL;
  size_t len;
  json_value *p = NULL;
  if (berth_read_file(file, &text, &len, err) < 0) return -1;
  if (json_parse(text, len, &p, err) < 0 || p->type != JSON_OBJECT) {
    if (!*err) berth_make_error(err, 0, "not a JSON object");
    json_free(p);
    return berth_error_prepend(err, "process `%s`", file);
  }
  size_t i = 0;
  while (i < s->doc->len && strcmp(s->doc->keys[i], "process") != 0) i++;
  if (i == s->doc->len) {
    json_free(p);
    return berth_make_error(err, 0, "config.json has no `process` to replace");
  }
  json_free(s->doc->items[i]);
  s->doc->items[i] = p;
  free(s->args);
  free(s->env);
  free(s->additional_gids);
  free(s->rlimits);
  s->args = s->env = NULL;
  s->additional_gids = NULL;
  s->rlimits = NULL;
  s->n_additional_gids = s->n_rlimits = 0;
  s->has_umask = s->has_oom_score_adj = false;
  if (parse_process(s, err) < 0) return berth_error_prepend(err, "process `%s`", file);
  return 0;
}

bool spec_has_namespace(const struct container_spec *s, int flag) { return spec_namespace(s, flag) != NULL; }

const struct spec_namespace *spec_namespace(const struct container_spec *s, int flag) {
  for (size_t i = 0; i < s->n_namespaces; i++)
    if (s->namespaces[i].flag == flag) return &s->namespaces[i];
  return NULL;
}

void spec_free(struct container_spec *s) {
  if (!s) return;
  free(s->args);
  free(s->env);
  free(s->additional_gids);
  free(s->rlimits);
  for (size_t i = 0; i < s->n_mounts; i++) free(s->mounts[i].data);
  free(s->mounts);
  for (int k = 0; k < HOOK_KINDS; k++) {
    for (size_t i = 0; i < s->n_hooks[k]; i++) {
      free(s->hooks[k][i].args);
      free(s->hooks[k][i].env);
    }
    free(s->hooks[k]);
  }
  free(s->namespaces);
  free(s->uid_mappings);
  free(s->gid_mappings);
  free(s->devices);
  free(s->sysctls);
  free(s->masked_paths);
  free(s->readonly_paths);
  free(s->root);
  free(s->bundle);
  json_free(s->doc);
  free(s);
}
