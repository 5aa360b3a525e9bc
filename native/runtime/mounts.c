/* The container's filesystem: spec mounts under the rootfs (destinations resolved inside it, symlinks never
 * leave it), default and spec devices, /dev symlinks, pivot_root, masked and read-only paths. */
#include "cleanup.h"
#include "container.h"
#include "util.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#ifndef STATX_MNT_ID
#define STATX_MNT_ID 0x00001000U
#endif

/* Resolve path (absolute, inside the container) against root without escaping it; like securejoin. */
static int resolve_in_root(const char *root, const char *path, char **out, berth_err_t *err) {
  berth_buf resolved = {0};
  berth_buf_puts(&resolved, "");
  cleanup_free char *todo = xstrdup(path);
  int links = 0;
  char *p = todo;
  while (*p) {
    while (*p == '/') p++;
    if (!*p) break;
    char *end = strchr(p, '/');
    size_t n = end ? (size_t) (end - p) : strlen(p);
    char comp[NAME_MAX + 1];
    if (n > NAME_MAX) {
      free(resolved.buf);
      return berth_make_error(err, ENAMETOOLONG, "path `%s`", path);
    }
    memcpy(comp, p, n);
    comp[n] = 0;
    p += n;
    if (strcmp(comp, ".") == 0) continue;
    if (strcmp(comp, "..") == 0) {
      char *slash = strrchr(resolved.buf, '/');
      if (slash) {
        *slash = 0;
        resolved.len = (size_t) (slash - resolved.buf);
      }
      continue;
    }
    size_t saved = resolved.len;
    berth_buf_printf(&resolved, "/%s", comp);
    cleanup_free char *full = xasprintf("%s%s", root, resolved.buf);
    char target[PATH_MAX];
    ssize_t tl = readlink(full, target, sizeof target - 1);
    if (tl < 0) continue; /* not a link (or missing): keep it */
    if (++links > 40) {
      free(resolved.buf);
      return berth_make_error(err, ELOOP, "path `%s`", path);
    }
    target[tl] = 0;
    resolved.len = saved;
    resolved.buf[saved] = 0;
    if (target[0] == '/') {
      resolved.len = 0;
      resolved.buf[0] = 0;
    }
    char *rest = xasprintf("%s/%s", target, p);
    free(todo);
    todo = rest;
    p = todo;
  }
  *out = xasprintf("%s%s", root, resolved.buf);
  free(resolved.buf);
  return 0;
}

static char *xstrndup_upto(const char *s, char stop) {
  const char *e = strchr(s, stop);
  return e ? xasprintf("%.*s", (int) (e - s), s) : xstrdup(s);
}

/* mkdir -p, trying the leaf first: most destinations (or their parents) already exist */
static int mkdir_in(const char *path, berth_err_t *err) {
  struct stat st;
  if (stat(path, &st) == 0) return 0;
  if (mkdir(path, 0755) == 0 || errno == EEXIST) return 0;
  return berth_mkdir_p(path, 0755, err);
}

static int create_file(const char *path, berth_err_t *err) {
  cleanup_free char *dir = xstrdup(path);
  char *slash = strrchr(dir, '/');
  if (slash && slash != dir) {
    *slash = 0;
    if (mkdir_in(dir, err) < 0) return -1;
  }
  int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0 && errno != EEXIST && errno != EISDIR) return berth_make_error(err, errno, "create `%s`", path);
  if (fd >= 0) close(fd);
  return 0;
}

static bool in_userns(struct init_ctx *ctx) { return spec_has_namespace(ctx->spec, CLONE_NEWUSER); }

/* Remount a bind mount with flags, keeping flags the kernel locked (user namespaces). */
static int remount_bind(const char *dest, unsigned long flags, bool rec, berth_err_t *err) {
  unsigned long f = MS_BIND | MS_REMOUNT | flags | (rec ? MS_REC : 0);
  if (mount(NULL, dest, NULL, f, NULL) == 0) return 0;
  struct statvfs sv;
  if (errno == EPERM && statvfs(dest, &sv) == 0) {
    unsigned long locked = 0;
    if (sv.f_flag & ST_NOSUID) locked |= MS_NOSUID;
    if (sv.f_flag & ST_NODEV) locked |= MS_NODEV;
    if (sv.f_flag & ST_NOEXEC) locked |= MS_NOEXEC;
    if (sv.f_flag & ST_RDONLY) locked |= MS_RDONLY;
    if (sv.f_flag & ST_NOATIME) locked |= MS_NOATIME;
    if (sv.f_flag & ST_NODIRATIME) locked |= MS_NODIRATIME;
    if (sv.f_flag & ST_RELATIME) locked |= MS_RELATIME;
    if (mount(NULL, dest, NULL, f | locked, NULL) == 0) return 0;
  }
  return berth_make_error(err, errno, "remount `%s`", dest);
}

/* Super options of the host's cgroup v1 mount at mp ("cpu,cpuacct", "name=systemd"), for a cgroupns mount. */
static char *cgroup_super_options(const char *mp) {
  cleanup_fclose FILE *f = fopen("/proc/self/mountinfo", "re");
  char line[4096];
  while (f && fgets(line, sizeof line, f)) {
    char point[PATH_MAX];
    if (sscanf(line, "%*s %*s %*s %*s %4095s", point) != 1 || strcmp(point, mp) != 0) continue;
    char *sep = strstr(line, " - ");
    char fstype[64], source[256], opts[1024];
    if (!sep || sscanf(sep + 3, "%63s %255s %1023s", fstype, source, opts) != 3 || strcmp(fstype, "cgroup") != 0) continue;
    berth_buf b = {0};
    char *save = NULL;
    for (char *o = strtok_r(opts, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
      if (!strcmp(o, "rw") || !strcmp(o, "ro")) continue;
      if (b.len) berth_buf_puts(&b, ",");
      berth_buf_puts(&b, o);
    }
    return b.buf;
  }
  return NULL;
}

static int mount_cgroup_v1(struct init_ctx *ctx, const char *dest, const struct spec_mount *m, berth_err_t *err) {
  if (mount("tmpfs", dest, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755") < 0) return berth_make_error(err, errno, "mount tmpfs on `%s`", dest);
  cleanup_dir DIR *d = opendir("/sys/fs/cgroup");
  if (!d) return berth_make_error(err, errno, "opendir /sys/fs/cgroup");
  struct dirent *de;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.' || strcmp(de->d_name, "unified") == 0) continue;
    cleanup_free char *host = xasprintf("/sys/fs/cgroup/%s", de->d_name);
    cleanup_free char *target = xasprintf("%s/%s", dest, de->d_name);
    struct stat st;
    if (lstat(host, &st) < 0) continue;
    if (S_ISLNK(st.st_mode)) {
      char link[PATH_MAX];
      ssize_t n = readlink(host, link, sizeof link - 1);
      if (n > 0) {
        link[n] = 0;
        if (symlink(link, target) < 0 && errno != EEXIST) return berth_make_error(err, errno, "symlink `%s`", target);
      }
      continue;
    }
    if (!S_ISDIR(st.st_mode)) continue;
    /* the container's own cgroup in each hierarchy, like runc without a cgroup namespace */
    cleanup_free char *src = !ctx->cgroup ? xstrdup(host) : xasprintf("%s%s", host, ctx->cgroup->path);
    if (access(src, F_OK) < 0) {
      free(src);
      src = xstrdup(host);
    }
    if (mkdir(target, 0755) < 0 && errno != EEXIST) return berth_make_error(err, errno, "mkdir `%s`", target);
    unsigned long f = (m->flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME)) | MS_NOSUID | MS_NODEV | MS_NOEXEC;
    cleanup_free char *super = spec_has_namespace(ctx->spec, CLONE_NEWCGROUP) ? cgroup_super_options(host) : NULL;
    if (super) {
      /* in a cgroup namespace the hierarchy is mounted for real; its root is the container's cgroup */
      char *name = strstr(super, "name=");
      cleanup_free char *source = name ? xstrndup_upto(name + 5, ',') : xstrdup("cgroup");
      if (mount(source, target, "cgroup", f, super) == 0) continue;
    }
    if (mount(src, target, NULL, MS_BIND | MS_REC, NULL) < 0) return berth_make_error(err, errno, "bind `%s` on `%s`", src, target);
    if (remount_bind(target, f, false, err) < 0) return -1;
  }
  return 0;
}

static int do_mount(struct init_ctx *ctx, const struct spec_mount *m, berth_err_t *err) {
  const char *root = ctx->spec->root;
  cleanup_free char *dest = NULL;
  if (resolve_in_root(root, m->destination, &dest, err) < 0) return -1;
  if (m->bind) {
    struct stat st;
    if (stat(m->source, &st) < 0) return berth_make_error(err, errno, "bind mount source `%s`", m->source);
    if (S_ISDIR(st.st_mode) ? mkdir_in(dest, err) < 0 : create_file(dest, err) < 0) return -1;
    if (mount(m->source, dest, NULL, MS_BIND | (m->flags & MS_REC), NULL) < 0) return berth_make_error(err, errno, "bind `%s` on `%s`", m->source, m->destination);
    unsigned long extra = m->flags & ~(MS_BIND | MS_REC | MS_REMOUNT);
    if (extra && remount_bind(dest, extra, m->recursive_ro, err) < 0) return -1;
  } else {
    if (mkdir_in(dest, err) < 0) return -1;
    if (strcmp(m->type, "cgroup") == 0 || strcmp(m->type, "cgroup2") == 0) {
      bool v2 = ctx->cgroup && ctx->cgroup->ops == &cgroup_v2_ops && strcmp(ctx->cgroup->root, "/sys/fs/cgroup") == 0;
      if (!v2) return mount_cgroup_v1(ctx, dest, m, err);
      unsigned long f = (m->flags & ~(MS_BIND | MS_REC)) | MS_NOSUID | MS_NODEV | MS_NOEXEC;
      /* in a cgroup namespace a fresh cgroup2 mount is rooted at the container's cgroup; without one it
       * would show the whole hierarchy, so the container's own cgroup is bound instead (as runc does) */
      if (spec_has_namespace(ctx->spec, CLONE_NEWCGROUP) && mount("cgroup2", dest, "cgroup2", f, NULL) == 0) return 0;
      cleanup_free char *src = xasprintf("%s%s", ctx->cgroup->root, ctx->cgroup->path);
      if (mount(src, dest, NULL, MS_BIND | MS_REC, NULL) < 0) return berth_make_error(err, errno, "bind cgroup2 `%s` on `%s`", src, m->destination);
      if (remount_bind(dest, f, false, err) < 0) return -1;
      return 0;
    }
    unsigned long f = m->flags & ~(MS_BIND | MS_REC | MS_REMOUNT);
    const char *data = m->data && *m->data ? m->data : NULL;
    if (mount(m->source ? m->source : m->type, dest, m->type, f, data) < 0) {
      int e = errno;
      /* sysfs in a user namespace without its own netns cannot be mounted: bind the host's, like runc */
      if (strcmp(m->type, "sysfs") == 0 && (e == EPERM || e == EBUSY) && in_userns(ctx)) {
        if (mount("/sys", dest, NULL, MS_BIND | MS_REC, NULL) < 0) return berth_make_error(err, errno, "bind /sys on `%s`", m->destination);
        if (remount_bind(dest, f, true, err) < 0) return -1;
      } else if (strcmp(m->type, "mqueue") == 0 && (e == EPERM || e == EBUSY) && in_userns(ctx)) {
        if (mount("/dev/mqueue", dest, NULL, MS_BIND | MS_REC, NULL) < 0) return berth_make_error(err, errno, "bind /dev/mqueue on `%s`", m->destination);
      } else {
        return berth_make_error(err, e, "mount %s on `%s`", m->type, m->destination);
      }
    }
  }
  if (m->propagation && mount(NULL, dest, NULL, m->propagation, NULL) < 0) return berth_make_error(err, errno, "set propagation of `%s`", m->destination);
  return 0;
}

struct default_dev {
  const char *name;
  unsigned maj, min;
  mode_t mode;
};
static const struct default_dev default_devs[] = {
    {"null", 1, 3, 0666}, {"zero", 1, 5, 0666}, {"full", 1, 7, 0666}, {"random", 1, 8, 0666}, {"urandom", 1, 9, 0666}, {"tty", 5, 0, 0666},
};

static int create_device(struct init_ctx *ctx, const char *path, char type, unsigned maj, unsigned min, mode_t mode, uid_t uid, gid_t gid, bool chown_it, berth_err_t *err) {
  cleanup_free char *dest = NULL;
  if (resolve_in_root(ctx->spec->root, path, &dest, err) < 0) return -1;
  cleanup_free char *dir = xstrdup(dest);
  *strrchr(dir, '/') = 0;
  if (mkdir_in(dir, err) < 0) return -1;
  if (in_userns(ctx)) {
    /* mknod is not allowed in a user namespace: bind the host's node */
    if (create_file(dest, err) < 0) return -1;
    if (mount(path, dest, NULL, MS_BIND, NULL) < 0) return berth_make_error(err, errno, "bind device `%s`", path);
    return 0;
  }
  mode_t kind = type == 'b' ? S_IFBLK : type == 'p' ? S_IFIFO : S_IFCHR;
  unlink(dest);
  if (mknod(dest, kind | (mode & 07777), makedev(maj, min)) < 0) return berth_make_error(err, errno, "mknod `%s`", path);
  if (chmod(dest, mode & 07777) < 0) return berth_make_error(err, errno, "chmod `%s`", path);
  if (chown_it && chown(dest, uid, gid) < 0) return berth_make_error(err, errno, "chown `%s`", path);
  return 0;
}

static int setup_dev(struct init_ctx *ctx, berth_err_t *err) {
  struct container_spec *s = ctx->spec;
  /* runc skips default devices when /dev is bind mounted from the host */
  for (size_t i = 0; i < s->n_mounts; i++)
    if (strcmp(s->mounts[i].destination, "/dev") == 0 && s->mounts[i].bind) return 0;
  for (size_t i = 0; i < sizeof default_devs / sizeof default_devs[0]; i++) {
    cleanup_free char *p = xasprintf("/dev/%s", default_devs[i].name);
    if (create_device(ctx, p, 'c', default_devs[i].maj, default_devs[i].min, default_devs[i].mode, 0, 0, false, err) < 0) return -1;
  }
  for (size_t i = 0; i < s->n_devices; i++) {
    struct spec_device *d = &s->devices[i];
    mode_t mode = d->has_mode ? d->mode : 0666;
    if (create_device(ctx, d->path, d->type == 'u' ? 'c' : d->type, (unsigned) d->major, (unsigned) d->minor, mode, d->has_uid ? d->uid : 0, d->has_gid ? d->gid : 0, d->has_uid || d->has_gid, err) < 0) return -1;
  }
  static const char *const links[][2] = {
      {"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"}, {"pts/ptmx", "ptmx"},
  };
  cleanup_free char *devdir = NULL;
  if (resolve_in_root(s->root, "/dev", &devdir, err) < 0 || mkdir_in(devdir, err) < 0) return -1;
  for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
    cleanup_free char *l = xasprintf("%s/%s", devdir, links[i][1]);
    if (strcmp(links[i][1], "ptmx") == 0) unlink(l);
    if (symlink(links[i][0], l) < 0 && errno != EEXIST) return berth_make_error(err, errno, "symlink `/dev/%s`", links[i][1]);
  }
  if (access("/proc/kcore", F_OK) == 0) {
    cleanup_free char *l = xasprintf("%s/core", devdir);
    if (symlink("/proc/kcore", l) < 0 && errno != EEXIST) return berth_make_error(err, errno, "symlink `/dev/core`");
  }
  if (s->terminal) {
    cleanup_free char *console = xasprintf("%s/console", devdir);
    if (create_file(console, err) < 0) return -1;
  }
  return 0;
}

/* The mount that contains path (longest mountinfo prefix), made private so pivot_root accepts it. */
static void make_parent_mount_private(const char *path) {
  cleanup_fclose FILE *f = fopen("/proc/self/mountinfo", "re");
  if (!f) return;
  char line[4096], best[PATH_MAX] = "/";
  size_t best_len = 1;
  while (fgets(line, sizeof line, f)) {
    char mp[PATH_MAX];
    if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) != 1) continue;
    size_t n = strlen(mp);
    if (n > best_len && strncmp(path, mp, n) == 0 && (path[n] == '/' || path[n] == 0)) {
      strcpy(best, mp);
      best_len = n;
    }
  }
  mount(NULL, best, NULL, MS_PRIVATE, NULL);
}

int rootfs_prepare(struct init_ctx *ctx, berth_err_t *err) {
  struct container_spec *s = ctx->spec;
  if (spec_has_namespace(s, CLONE_NEWNS)) {
    unsigned long prop = s->rootfs_propagation ? s->rootfs_propagation : MS_SLAVE | MS_REC;
    if (mount(NULL, "/", NULL, prop, NULL) < 0)
      return berth_make_error(err, errno, "set propagation of /");
    cleanup_free char *parent = xstrdup(s->root);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) *slash = 0;
    make_parent_mount_private(parent);
    if (mount(s->root, s->root, NULL, MS_BIND | MS_REC, NULL) < 0) return berth_make_error(err, errno, "bind rootfs `%s`", s->root);
  } else {
    /* the caller's namespace: its mounts' propagation is not ours to change; only our own bind of the
     * rootfs is made private (rootfsPropagation if given), so what the container mounts stays under it */
    if (mount(s->root, s->root, NULL, MS_BIND | MS_REC, NULL) < 0) return berth_make_error(err, errno, "bind rootfs `%s`", s->root);
    unsigned long prop = s->rootfs_propagation ? s->rootfs_propagation : MS_PRIVATE | MS_REC;
    if (mount(NULL, s->root, NULL, prop, NULL) < 0) return berth_make_error(err, errno, "set propagation of rootfs `%s`", s->root);
  }
  for (size_t i = 0; i < s->n_mounts; i++)
    if (do_mount(ctx, &s->mounts[i], err) < 0) return berth_error_prepend(err, "mount `%s`", s->mounts[i].destination);
  if (setup_dev(ctx, err) < 0) return -1;
  return 0;
}

int rootfs_pivot(struct init_ctx *ctx, berth_err_t *err) {
  struct container_spec *s = ctx->spec;
  if (!spec_has_namespace(s, CLONE_NEWNS)) {
    /* pivot_root would change the root of every process of the caller's namespace: chroot, as runc */
    if (chdir(s->root) < 0) return berth_make_error(err, errno, "chdir rootfs `%s`", s->root);
    if (chroot(".") < 0) return berth_make_error(err, errno, "chroot `%s`", s->root);
    if (chdir("/") < 0) return berth_make_error(err, errno, "chdir /");
    return 0;
  }
  cleanup_close int oldroot = open("/", O_DIRECTORY | O_RDONLY | O_CLOEXEC);
  cleanup_close int newroot = open(s->root, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
  if (oldroot < 0 || newroot < 0) return berth_make_error(err, errno, "open rootfs");
  if (fchdir(newroot) < 0) return berth_make_error(err, errno, "chdir rootfs");
  if (syscall(SYS_pivot_root, ".", ".") < 0) return berth_make_error(err, errno, "pivot_root `%s`", s->root);
  if (fchdir(oldroot) < 0) return berth_make_error(err, errno, "fchdir old root");
  if (mount(NULL, ".", NULL, MS_SLAVE | MS_REC, NULL) < 0) return berth_make_error(err, errno, "make old root slave");
  if (umount2(".", MNT_DETACH) < 0) return berth_make_error(err, errno, "detach old root");
  if (chdir("/") < 0) return berth_make_error(err, errno, "chdir /");
  if (s->rootfs_propagation && mount(NULL, "/", NULL, s->rootfs_propagation, NULL) < 0)
    return berth_make_error(err, errno, "set rootfsPropagation");
  return 0;
}

unsigned long long mount_id_at(const char *path) {
  struct statx stx;
  if (statx(AT_FDCWD, path, AT_NO_AUTOMOUNT, STATX_MNT_ID, &stx) == 0 && (stx.stx_mask & STATX_MNT_ID)) return stx.stx_mnt_id;
  /* kernels before 5.8: the last mountinfo entry at path is the topmost mount there */
  cleanup_fclose FILE *f = fopen("/proc/self/mountinfo", "re");
  char line[4096];
  unsigned long long id = 0;
  while (f && fgets(line, sizeof line, f)) {
    unsigned long long mid;
    char mp[PATH_MAX];
    if (sscanf(line, "%llu %*s %*s %*s %4095s", &mid, mp) == 2 && strcmp(mp, path) == 0) id = mid;
  }
  return id;
}

int rootfs_detach(const char *root, berth_err_t *err) {
  if (umount2(root, MNT_DETACH | UMOUNT_NOFOLLOW) < 0 && errno != EINVAL && errno != ENOENT)
    return berth_make_error(err, errno, "detach the container's mounts at `%s`", root);
  return 0;
}

int rootfs_finalize(struct init_ctx *ctx, berth_err_t *err) {
  struct container_spec *s = ctx->spec;
  for (size_t i = 0; i < s->n_readonly_paths; i++) {
    const char *p = s->readonly_paths[i];
    if (mount(p, p, NULL, MS_BIND | MS_REC, NULL) < 0) {
      if (errno == ENOENT) continue;
      return berth_make_error(err, errno, "readonly path `%s`", p);
    }
    if (remount_bind(p, MS_RDONLY, true, err) < 0) return -1;
  }
  for (size_t i = 0; i < s->n_masked_paths; i++) {
    const char *p = s->masked_paths[i];
    struct stat st;
    if (stat(p, &st) < 0) continue;
    int r = S_ISDIR(st.st_mode) ? mount("tmpfs", p, "tmpfs", MS_RDONLY, NULL) : mount("/dev/null", p, NULL, MS_BIND, NULL);
    if (r < 0 && errno != ENOENT) return berth_make_error(err, errno, "mask `%s`", p);
  }
  if (s->root_readonly && remount_bind("/", MS_RDONLY, false, err) < 0) return berth_error_prepend(err, "readonly root");
  return 0;
}
