/* extract: apply one OCI layer (an uncompressed tar on an fd) to a snapshot directory.
 *
 *   berth-storage extract <root> [--input <layer.tar>] [--overlay [--lower <dir>]...]   (else stdin)
 *
 * Prints {"entries":N,"bytes":N} on success. The caller hashes the stream (the DiffID) and removes the
 * snapshot on any failure; nothing here needs undoing.
 *
 * Where it writes: without --overlay the root holds the parent's content already (btrfs or devmapper
 * snapshot, or a first layer): `.wh.x` deletes x, `.wh..wh..opq` empties the directory of what lower
 * layers put there. With --overlay the root is an upperdir and the lowers its lowerdirs, nearest first:
 * `.wh.x` becomes a 0/0 character device, an opaque directory gets trusted.overlay.opaque=y (an opaque
 * root, which overlayfs ignores on the upper root, becomes a whiteout per name of the lowers), a missing
 * parent directory takes the metadata the lowers show for it, and a hardlink to a file that only a lower
 * layer has copies it up first (lowers.c). OCI: a whiteout never removes what this same layer created.
 *
 * Safety: a name is made relative and '..' refused; parents are resolved inside the root (resolve.c:
 * openat2 RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS, or a component walk); the last component is never
 * followed (O_EXCL|O_NOFOLLOW, *at(AT_SYMLINK_NOFOLLOW), linkat without AT_SYMLINK_FOLLOW, whatever is
 * in the way is removed first); hardlink sources resolve the same way and must exist in the snapshot
 * (overlay: in the merged view); lowers are only ever read, through lowers.c's walk.
 *
 * Entries: files (incl. GNU sparse ones, holes kept), directories, symlinks, hardlinks, character and
 * block devices, fifos; owner, mode (incl. set-id, set after chown, which clears it), mtime (directories
 * at the end, deepest first), xattrs from PAX SCHILY.xattr.* with binary values (trusted.overlay.* from a
 * layer is dropped: it would steer overlayfs on the host; EOPNOTSUPP is ignored, as containerd does).
 * Other entry types fail the layer, as containerd's applier does. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "cleanup.h"
#include "extract.h"
#include "storage.h"
#include "tar.h"
#include "util.h"

#define WH_PREFIX ".wh."
#define WH_OPAQUE ".wh..wh..opq"

/* ---- the set of entries this layer created: (parent directory inode, name) ---- */

struct created_set {
  size_t n, cap;
  struct created_item {
    dev_t dev;
    ino_t ino;
    char *name; /* NULL = empty slot */
  } *items;
};

static uint64_t hash_item(dev_t dev, ino_t ino, const char *name) {
  uint64_t h = 1469598103934665603ull ^ (uint64_t)ino ^ ((uint64_t)dev << 32);
  for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 1099511628211ull;
  return h;
}

static bool created_has(struct created_set *s, dev_t dev, ino_t ino, const char *name) {
  if (s->cap == 0) return false;
  for (size_t i = hash_item(dev, ino, name) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
    struct created_item *it = &s->items[i];
    if (!it->name) return false;
    if (it->ino == ino && it->dev == dev && strcmp(it->name, name) == 0) return true;
  }
}

static void created_add(struct created_set *s, dev_t dev, ino_t ino, const char *name) {
  if (created_has(s, dev, ino, name)) return;
  if ((s->n + 1) * 2 > s->cap) {
    struct created_set bigger = {0, s->cap ? s->cap * 2 : 1024, NULL};
    bigger.items = xmalloc0(bigger.cap * sizeof *bigger.items);
    for (size_t i = 0; i < s->cap; i++) {
      struct created_item *it = &s->items[i];
      if (!it->name) continue;
      size_t j = hash_item(it->dev, it->ino, it->name) & (bigger.cap - 1);
      while (bigger.items[j].name) j = (j + 1) & (bigger.cap - 1);
      bigger.items[j] = *it;
      bigger.n++;
    }
    free(s->items);
    *s = bigger;
  }
  size_t i = hash_item(dev, ino, name) & (s->cap - 1);
  while (s->items[i].name) i = (i + 1) & (s->cap - 1);
  s->items[i] = (struct created_item){dev, ino, xstrdup(name)};
  s->n++;
}

void created_mark(struct extract_ctx *x, int dirfd, const char *name) {
  struct stat st;
  if (fstat(dirfd, &st) == 0) created_add(x->created, st.st_dev, st.st_ino, name);
}

static void created_free(struct created_set *s) {
  for (size_t i = 0; i < s->cap; i++) free(s->items[i].name);
  free(s->items);
}

/* ---- helpers ---- */

/* rm -rf of dirfd/name, never following a symlink. */
static int remove_at(struct extract_ctx *x, int dfd, const char *name, berth_err_t *err) {
  struct stat st;
  if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
    if (errno == ENOENT) return 0;
    return berth_make_error(err, errno, "stat %s", name);
  }
  if (!S_ISDIR(st.st_mode)) {
    if (S_ISLNK(st.st_mode)) resolve_invalidate(x);
    if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT) return berth_make_error(err, errno, "remove %s", name);
    return 0;
  }
  resolve_invalidate(x);
  int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return berth_make_error(err, errno, "open %s", name);
  cleanup_dir DIR *d = fdopendir(fd);
  if (!d) {
    close(fd);
    return berth_make_error(err, errno, "read %s", name);
  }
  struct dirent *de;
  while ((errno = 0, de = readdir(d))) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
    if (remove_at(x, dirfd(d), de->d_name, err) < 0) return berth_error_prepend(err, "%s", name);
  }
  if (errno) return berth_make_error(err, errno, "read %s", name);
  if (unlinkat(dfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
    return berth_make_error(err, errno, "remove %s", name);
  return 0;
}

static bool skip_xattr(const char *name) { return strncmp(name, "trusted.overlay.", 16) == 0; }

/* xattrs on an open fd (files, directories) or, for symlinks and devices, on dirfd/name without following. */
static int set_xattrs(const struct tar_entry *e, int fd, int dirfd, const char *name, berth_err_t *err) {
  char proc[64];
  if (fd < 0) snprintf(proc, sizeof proc, "/proc/self/fd/%d", dirfd);
  for (size_t i = 0; i < e->nxattrs; i++) {
    const struct tar_xattr *a = &e->xattrs[i];
    if (skip_xattr(a->name)) continue;
    int r;
    if (fd >= 0) {
      r = fsetxattr(fd, a->name, a->value, a->value_len, 0);
    } else {
      /* /proc/self/fd/N names the (already resolved) parent; the entry itself is not followed */
      cleanup_free char *p = xasprintf("%s/%s", proc, name);
      r = lsetxattr(p, a->name, a->value, a->value_len, 0);
    }
    if (r < 0 && errno != EOPNOTSUPP) return berth_make_error(err, errno, "setxattr %s", a->name);
  }
  return 0;
}

static void add_dirtime(struct extract_ctx *x, const char *path, struct timespec t) {
  if (x->ndirtimes == x->capdirtimes)
    x->dirtimes = xrealloc(x->dirtimes, (x->capdirtimes = x->capdirtimes ? x->capdirtimes * 2 : 64) *
                                            sizeof *x->dirtimes);
  x->dirtimes[x->ndirtimes].path = xstrdup(path);
  x->dirtimes[x->ndirtimes].t = t;
  x->ndirtimes++;
}

/* ---- entries ---- */

static int write_file(struct extract_ctx *x, tar_reader *r, const struct tar_entry *e, int pfd, const char *base,
                      berth_err_t *err) {
  int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
  cleanup_close int fd = openat(pfd, base, flags, e->mode & 0777);
  if (fd < 0 && errno == EEXIST) {
    if (remove_at(x, pfd, base, err) < 0) return -1;
    fd = openat(pfd, base, flags, e->mode & 0777);
  }
  if (fd < 0) return berth_make_error(err, errno, "create");
  if (e->sparse_kind == TAR_SPARSE_NONE) {
    if (tar_copy_data(r, fd, e->size, err) < 0) return -1;
  } else {
    for (size_t i = 0; i < e->nsparse; i++) {
      if (e->sparse[i].length == 0) continue;
      if (lseek(fd, (off_t)e->sparse[i].offset, SEEK_SET) < 0) return berth_make_error(err, errno, "seek");
      if (tar_copy_data(r, fd, e->sparse[i].length, err) < 0) return -1;
    }
    if (ftruncate(fd, (off_t)e->realsize) < 0) return berth_make_error(err, errno, "truncate");
  }
  bool chowned = false;
  if (e->uid != x->euid || e->gid != x->egid) {
    if (fchown(fd, (uid_t)e->uid, (gid_t)e->gid) < 0) return berth_make_error(err, errno, "chown");
    chowned = true;
  }
  /* created with the umask at 0, so only set-id bits (cleared by chown, not given by open) need fchmod */
  if ((e->mode & 07000) || chowned)
    if (fchmod(fd, e->mode) < 0) return berth_make_error(err, errno, "chmod");
  if (set_xattrs(e, fd, -1, NULL, err) < 0) return -1;
  struct timespec ts[2] = {e->mtime, e->mtime};
  if (futimens(fd, ts) < 0) return berth_make_error(err, errno, "set times");
  return 0;
}

static int make_dir(struct extract_ctx *x, const struct tar_entry *e, const struct xpath *p, int pfd,
                    const char *base, berth_err_t *err) {
  struct stat st;
  bool exists = fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0;
  if (exists && !S_ISDIR(st.st_mode)) {
    if (remove_at(x, pfd, base, err) < 0) return -1;
    exists = false;
  }
  if (!exists && mkdirat(pfd, base, 0700) < 0) return berth_make_error(err, errno, "mkdir");
  cleanup_close int fd = openat(pfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return berth_make_error(err, errno, "open");
  if (fchown(fd, (uid_t)e->uid, (gid_t)e->gid) < 0) return berth_make_error(err, errno, "chown");
  if (fchmod(fd, e->mode) < 0) return berth_make_error(err, errno, "chmod");
  if (set_xattrs(e, fd, -1, NULL, err) < 0) return -1;
  add_dirtime(x, p->joined, e->mtime);
  /* later entries below it start here */
  resolve_remember(x, p->joined, pfd, base);
  return 0;
}

static int make_symlink(struct extract_ctx *x, const struct tar_entry *e, int pfd, const char *base,
                        berth_err_t *err) {
  if (remove_at(x, pfd, base, err) < 0) return -1;
  if (symlinkat(e->linkname, pfd, base) < 0) return berth_make_error(err, errno, "symlink");
  if (fchownat(pfd, base, (uid_t)e->uid, (gid_t)e->gid, AT_SYMLINK_NOFOLLOW) < 0)
    return berth_make_error(err, errno, "chown");
  if (set_xattrs(e, -1, pfd, base, err) < 0) return -1;
  struct timespec ts[2] = {e->mtime, e->mtime};
  if (utimensat(pfd, base, ts, AT_SYMLINK_NOFOLLOW) < 0) return berth_make_error(err, errno, "set times");
  return 0;
}

static int make_node(struct extract_ctx *x, const struct tar_entry *e, int pfd, const char *base, berth_err_t *err) {
  mode_t type = e->type == '3' ? S_IFCHR : e->type == '4' ? S_IFBLK : S_IFIFO;
  if (remove_at(x, pfd, base, err) < 0) return -1;
  if (mknodat(pfd, base, type | e->mode, makedev(e->devmajor, e->devminor)) < 0)
    return berth_make_error(err, errno, "mknod");
  if (fchownat(pfd, base, (uid_t)e->uid, (gid_t)e->gid, AT_SYMLINK_NOFOLLOW) < 0)
    return berth_make_error(err, errno, "chown");
  /* the node was just made here (not a symlink): fchmodat may follow nothing */
  if (fchmodat(pfd, base, e->mode, 0) < 0) return berth_make_error(err, errno, "chmod");
  if (set_xattrs(e, -1, pfd, base, err) < 0) return -1;
  struct timespec ts[2] = {e->mtime, e->mtime};
  if (utimensat(pfd, base, ts, AT_SYMLINK_NOFOLLOW) < 0) return berth_make_error(err, errno, "set times");
  return 0;
}

/* overlay: copy a lower layer's file up to the same place in the upper, creating its parents. Returns
 * the upper directory fd (owned) holding it. */
static int copy_up(struct extract_ctx *x, const char *linkname, struct merged_hit *h, int *out_dirfd,
                   berth_err_t *err) {
  if (!S_ISREG(h->st.st_mode))
    return berth_make_error(err, EINVAL, "hardlink target \"%s\" is not a regular file in a lower layer", linkname);
  int dirfd;
  if (resolve_dir(x, h->real, h->nreal, true, &dirfd, NULL, NULL, err) < 0) return -1;
  cleanup_close int src = openat(h->dirfd, h->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (src < 0) return berth_make_error(err, errno, "open %s in a lower layer", linkname);
  cleanup_close int dst = openat(dirfd, h->name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (dst < 0) return berth_make_error(err, errno, "copy up %s", linkname);
  off_t left = h->st.st_size;
  while (left > 0) {
    ssize_t n = copy_file_range(src, NULL, dst, NULL, (size_t)left, 0);
    if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
      char buf[65536];
      n = read(src, buf, sizeof buf);
      if (n > 0 && berth_write_all(dst, buf, (size_t)n) < 0) n = -1;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      return berth_make_error(err, errno, "copy up %s", linkname);
    }
    if (n == 0) break;
    left -= n;
  }
  if (fchown(dst, h->st.st_uid, h->st.st_gid) < 0 || fchmod(dst, h->st.st_mode & 07777) < 0)
    return berth_make_error(err, errno, "copy up %s", linkname);
  struct timespec ts[2] = {h->st.st_mtim, h->st.st_mtim};
  if (futimens(dst, ts) < 0) return berth_make_error(err, errno, "copy up %s", linkname);
  *out_dirfd = openat(dirfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (*out_dirfd < 0) return berth_make_error(err, errno, "open");
  return 0;
}

static int make_hardlink(struct extract_ctx *x, const struct tar_entry *e, int pfd, dev_t pdev, ino_t pino,
                         const char *base, berth_err_t *err) {
  struct xpath src;
  if (xpath_parse(e->linkname, "hardlink target", &src, err) < 0) return -1;
  int rc = -1;
  cleanup_close int own_srcdir = -1;
  int srcdir = -1;
  const char *srcname = NULL;
  struct merged_hit hit = {.dirfd = -1};
  if (src.n == 0) {
    rc = berth_make_error(err, EINVAL, "hardlink \"%s\" has no target", e->name);
    goto out;
  }
  srcname = src.c[src.n - 1];
  if (x->overlay) {
    int found = merged_lookup(x, src.c, src.n, &hit, err);
    if (found < 0) goto out;
    if (found == 0) {
      rc = S_ISDIR(hit.st.st_mode)
               ? berth_make_error(err, EINVAL, "hardlink \"%s\" points at a directory", e->name)
               : berth_make_error(err, EINVAL, "hardlink \"%s\": target \"%s\" does not exist in the layer",
                                  e->name, e->linkname);
      goto out;
    }
    srcname = hit.name;
    if (hit.layer == 0) {
      srcdir = hit.dirfd;
    } else {
      if (copy_up(x, e->linkname, &hit, &own_srcdir, err) < 0) goto out;
      srcdir = own_srcdir;
    }
  } else {
    berth_err_t lookup_err = NULL;
    if (resolve_dir(x, src.c, src.n - 1, false, &srcdir, NULL, NULL, &lookup_err) < 0) {
      if (lookup_err->status != ENOENT) {
        *err = lookup_err;
        goto out;
      }
      berth_error_release(&lookup_err);
      rc = berth_make_error(err, EINVAL, "hardlink \"%s\": target \"%s\" does not exist in the layer", e->name,
                            e->linkname);
      goto out;
    }
  }
  struct stat sst;
  if (fstatat(srcdir, srcname, &sst, AT_SYMLINK_NOFOLLOW) < 0) {
    if (errno == ENOENT || errno == ENOTDIR)
      rc = berth_make_error(err, EINVAL, "hardlink \"%s\": target \"%s\" does not exist in the layer", e->name,
                            e->linkname);
    else rc = berth_make_error(err, errno, "stat %s", e->linkname);
    goto out;
  }
  if (S_ISDIR(sst.st_mode)) {
    rc = berth_make_error(err, EINVAL, "hardlink \"%s\" points at a directory", e->name);
    goto out;
  }
  struct stat dst;
  if (fstatat(pfd, base, &dst, AT_SYMLINK_NOFOLLOW) == 0 && dst.st_ino == sst.st_ino && dst.st_dev == sst.st_dev) {
    struct stat sdir;
    if (fstat(srcdir, &sdir) == 0 && sdir.st_ino == pino && sdir.st_dev == pdev && strcmp(srcname, base) == 0) {
      rc = 0; /* a link to itself */
      goto out;
    }
  }
  if (remove_at(x, pfd, base, err) < 0) goto out;
  if (linkat(srcdir, srcname, pfd, base, 0) < 0) {
    rc = berth_make_error(err, errno, "link to %s", e->linkname);
    goto out;
  }
  rc = 0;
out:
  merged_hit_free(&hit);
  xpath_free(&src);
  return rc;
}

static int whiteout_name(struct extract_ctx *x, int pfd, dev_t pdev, ino_t pino, const char *name, berth_err_t *err) {
  /* OCI: a whiteout only hides lower layers; what this layer itself created stays */
  if (created_has(x->created, pdev, pino, name)) return 0;
  if (remove_at(x, pfd, name, err) < 0) return -1;
  if (x->overlay) {
    if (mknodat(pfd, name, S_IFCHR | 0, makedev(0, 0)) < 0) return berth_make_error(err, errno, "whiteout %s", name);
    created_add(x->created, pdev, pino, name);
  }
  return 0;
}

static int whiteout_root_name(struct extract_ctx *x, const char *name, berth_err_t *err) {
  int fd;
  dev_t dev;
  ino_t ino;
  if (resolve_dir(x, NULL, 0, false, &fd, &dev, &ino, err) < 0) return -1;
  return whiteout_name(x, fd, dev, ino, name, err);
}

static int opaque(struct extract_ctx *x, const struct xpath *dir, berth_err_t *err) {
  int pfd;
  dev_t dev;
  ino_t ino;
  if (resolve_dir(x, dir->c, dir->n, true, &pfd, &dev, &ino, err) < 0) return -1;
  if (x->overlay) {
    /* overlayfs ignores an opaque upper root: hide every name of the lowers instead */
    if (dir->n == 0) return lowers_root_names(x, whiteout_root_name, err);
    cleanup_close int fd = openat(pfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return berth_make_error(err, errno, "open");
    if (fsetxattr(fd, "trusted.overlay.opaque", "y", 1, 0) < 0)
      return berth_make_error(err, errno, "set trusted.overlay.opaque");
    return 0;
  }
  cleanup_close int fd = openat(pfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return berth_make_error(err, errno, "open");
  cleanup_dir DIR *d = fdopendir(fd);
  if (!d) return berth_make_error(err, errno, "read");
  fd = -1;
  /* names first: removing while reading would skip some */
  char **names = NULL;
  size_t n = 0;
  struct dirent *de;
  while ((errno = 0, de = readdir(d))) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
    if (created_has(x->created, dev, ino, de->d_name)) continue;
    names = xrealloc(names, (n + 1) * sizeof *names);
    names[n++] = xstrdup(de->d_name);
  }
  int rc = errno ? berth_make_error(err, errno, "read") : 0;
  for (size_t i = 0; i < n; i++) {
    if (rc == 0) rc = remove_at(x, dirfd(d), names[i], err);
    free(names[i]);
  }
  free(names);
  return rc;
}

static int apply_entry(struct extract_ctx *x, tar_reader *r, struct tar_entry *e, berth_err_t *err) {
  struct xpath p;
  if (xpath_parse(e->name, "tar entry", &p, err) < 0) return -1;
  int rc = -1;
  if (p.n == 0) {
    /* the layer's root directory itself ("./") */
    if (e->type == '5') {
      if (fchown(x->rootrw, (uid_t)e->uid, (gid_t)e->gid) < 0 || fchmod(x->rootrw, e->mode) < 0) {
        rc = berth_make_error(err, errno, "set the root's owner and mode");
        goto out;
      }
      add_dirtime(x, "", e->mtime);
    }
    rc = 0;
    goto out;
  }
  const char *base = p.c[p.n - 1];
  /* whiteouts */
  if (strncmp(base, WH_PREFIX, strlen(WH_PREFIX)) == 0) {
    struct xpath dir = {p.c, p.n - 1, NULL};
    if (strcmp(base, WH_OPAQUE) == 0) {
      rc = opaque(x, &dir, err);
      goto out;
    }
    const char *victim = base + strlen(WH_PREFIX);
    if (!*victim || strcmp(victim, ".") == 0 || strcmp(victim, "..") == 0 ||
        strncmp(victim, WH_PREFIX, strlen(WH_PREFIX)) == 0) {
      rc = berth_make_error(err, EINVAL, "tar entry \"%s\" is a malformed whiteout", e->name);
      goto out;
    }
    int pfd;
    dev_t dev;
    ino_t ino;
    if (resolve_dir(x, dir.c, dir.n, true, &pfd, &dev, &ino, err) < 0) goto out;
    rc = whiteout_name(x, pfd, dev, ino, victim, err);
    goto out;
  }
  if (e->type != '0' && e->type != '1' && e->type != '2' && e->type != '3' && e->type != '4' && e->type != '5' &&
      e->type != '6') {
    rc = berth_make_error(err, EINVAL, "tar entry \"%s\" has unsupported type '%c'", e->name, e->type);
    goto out;
  }
  int pfd;
  dev_t pdev;
  ino_t pino;
  if (resolve_dir(x, p.c, p.n - 1, true, &pfd, &pdev, &pino, err) < 0) goto out;
  switch (e->type) {
  case '0': rc = write_file(x, r, e, pfd, base, err); break;
  case '5': rc = make_dir(x, e, &p, pfd, base, err); break;
  case '2': rc = make_symlink(x, e, pfd, base, err); break;
  case '1': rc = make_hardlink(x, e, pfd, pdev, pino, base, err); break;
  default: rc = make_node(x, e, pfd, base, err); break;
  }
  if (rc == 0) created_add(x->created, pdev, pino, base);
out:
  /* what the layer got wrong names the entry already (EINVAL); a failed system call gets it here */
  if (rc < 0 && err && *err && (*err)->status != EINVAL) berth_error_prepend(err, "tar entry \"%s\"", e->name);
  xpath_free(&p);
  return rc;
}

/* Directory mtimes last (their children changed them), deepest first. */
static int finish_dirtimes(struct extract_ctx *x, berth_err_t *err) {
  for (size_t i = x->ndirtimes; i-- > 0;) {
    struct dirtime *d = &x->dirtimes[i];
    struct timespec ts[2] = {d->t, d->t};
    if (d->path[0] == '\0') {
      if (futimens(x->rootrw, ts) < 0) return berth_make_error(err, errno, "set the root's times");
      continue;
    }
    struct xpath p;
    if (xpath_parse(d->path, "directory", &p, err) < 0) return -1;
    int pfd;
    berth_err_t ignored = NULL;
    int rc = 0;
    if (resolve_dir(x, p.c, p.n - 1, false, &pfd, NULL, NULL, &ignored) == 0) {
      if (utimensat(pfd, p.c[p.n - 1], ts, AT_SYMLINK_NOFOLLOW) < 0 && errno != ENOENT)
        rc = berth_make_error(err, errno, "set times of %s", d->path);
    }
    berth_error_release(&ignored);
    xpath_free(&p);
    if (rc < 0) return rc;
  }
  return 0;
}

int bs_extract(const char *root, bool overlay, char **lowers, size_t nlowers, int in, FILE *out, berth_err_t *err) {
  struct created_set created = {0, 0, NULL};
  struct extract_ctx x;
  memset(&x, 0, sizeof x);
  for (size_t i = 0; i < RESOLVE_CACHE; i++) x.cache[i].fd = -1;
  x.created = &created;
  x.overlay = overlay;
  x.euid = geteuid();
  x.egid = getegid();
  x.rootfd = x.rootrw = -1;
  int rc = -1;
  tar_reader *r = NULL;
  struct tar_entry e;
  memset(&e, 0, sizeof e);
  umask(0);
  x.rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (x.rootfd < 0) {
    rc = berth_make_error(err, errno, "open %s", root);
    goto out;
  }
  x.rootrw = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (x.rootrw < 0) {
    rc = berth_make_error(err, errno, "open %s", root);
    goto out;
  }
  x.lowerfds = xmalloc0((nlowers ? nlowers : 1) * sizeof *x.lowerfds);
  for (size_t i = 0; i < nlowers; i++) {
    x.lowerfds[i] = open(lowers[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (x.lowerfds[i] < 0) {
      rc = berth_make_error(err, errno, "open lower %s", lowers[i]);
      x.nlowers = i;
      goto out;
    }
  }
  x.nlowers = nlowers;
  r = tar_reader_new(in);
  for (;;) {
    int got = tar_next(r, &e, err);
    if (got < 0) goto out;
    if (got == 0) break;
    x.entries++;
    if (apply_entry(&x, r, &e, err) < 0) goto out;
  }
  if (finish_dirtimes(&x, err) < 0) goto out;
  if (tar_drain(r, err) < 0) goto out;
  fprintf(out, "{\"entries\":%llu,\"bytes\":%llu}\n", x.entries, (unsigned long long)tar_reader_offset(r));
  rc = 0;
out:
  tar_entry_clear(&e);
  tar_reader_free(r);
  resolve_cache_clear(&x);
  created_free(&created);
  for (size_t i = 0; i < x.ndirtimes; i++) free(x.dirtimes[i].path);
  free(x.dirtimes);
  for (size_t i = 0; i < x.nlowers; i++) close(x.lowerfds[i]);
  free(x.lowerfds);
  if (x.rootfd >= 0) close(x.rootfd);
  if (x.rootrw >= 0) close(x.rootrw);
  return rc;
}

/* The kernel resolves inside a root (openat2, Linux >= 5.6)? The caller falls back to its own unpacker
 * when not (exit status ENOSYS). */
int bs_extract_probe(berth_err_t *err) { return resolve_probe(err); }
