/* Resolving a layer's parent directories inside the snapshot root.
 *
 * Fast path: one openat2(root, "a/b/c", RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS): the kernel evaluates
 * every symlink with the root as "/" and clamps ".." at it, so nothing resolves outside. When that says
 * ENOENT (a directory is missing, or a symlink dangles), a walk one component at a time does the same by
 * hand — openat(O_PATH | O_NOFOLLOW), symlinks read and substituted, absolute ones restarting at the root,
 * ".." never above it — and creates the missing directories (mkdirat never follows its last component).
 * The results are cached by the name the layer used; the cache is dropped whenever the layer removes a
 * directory or a symlink, the only ways a resolution can change while the layer is applied (the snapshot
 * is ours alone until commit). */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cleanup.h"
#include "extract.h"
#include "util.h"

#ifndef SYS_openat2
#define SYS_openat2 437
#endif

void xpath_free(struct xpath *p) {
  for (size_t i = 0; i < p->n; i++) free(p->c[i]);
  free(p->c);
  free(p->joined);
  memset(p, 0, sizeof *p);
}

char *xpath_join(char *const *c, size_t n) {
  size_t len = 1;
  for (size_t i = 0; i < n; i++) len += strlen(c[i]) + 1;
  char *s = xmalloc(len);
  char *o = s;
  for (size_t i = 0; i < n; i++) {
    if (i) *o++ = '/';
    size_t l = strlen(c[i]);
    memcpy(o, c[i], l);
    o += l;
  }
  *o = '\0';
  return s;
}

int xpath_parse(const char *name, const char *what, struct xpath *out, berth_err_t *err) {
  memset(out, 0, sizeof *out);
  size_t cap = 0;
  const char *p = name;
  while (*p) {
    const char *e = strchr(p, '/');
    size_t l = e ? (size_t)(e - p) : strlen(p);
    if (l == 2 && p[0] == '.' && p[1] == '.') {
      xpath_free(out);
      return berth_make_error(err, EINVAL, "%s \"%s\" climbs out with '..'", what, name);
    }
    if (l > 0 && !(l == 1 && p[0] == '.')) {
      if (out->n == cap) out->c = xrealloc(out->c, (cap = cap ? cap * 2 : 8) * sizeof *out->c);
      out->c[out->n] = xmalloc(l + 1);
      memcpy(out->c[out->n], p, l);
      out->c[out->n][l] = '\0';
      out->n++;
    }
    p += l;
    if (*p == '/') p++;
  }
  out->joined = xpath_join(out->c, out->n);
  return 0;
}

void todo_init(struct walk_todo *t, const char *path) {
  t->s = xstrdup(path);
  t->at = 0;
}

int todo_next(struct walk_todo *t, char *comp, size_t size) {
  while (t->s[t->at]) {
    const char *s = t->s + t->at;
    const char *slash = strchr(s, '/');
    size_t l = slash ? (size_t)(slash - s) : strlen(s);
    t->at += l + (slash ? 1 : 0);
    if (l == 0 || (l == 1 && s[0] == '.')) continue;
    if (l >= size) return -1;
    memcpy(comp, s, l);
    comp[l] = '\0';
    return 1;
  }
  return 0;
}

void todo_prepend(struct walk_todo *t, const char *target) {
  char *next = xasprintf("%s/%s", target, t->s + t->at);
  free(t->s);
  t->s = next;
  t->at = 0;
}

void todo_free(struct walk_todo *t) {
  free(t->s);
  t->s = NULL;
}

void resolve_invalidate(struct extract_ctx *x) { x->cache_stale = true; }

void resolve_cache_clear(struct extract_ctx *x) {
  x->cache_stale = false;
  for (size_t i = 0; i < RESOLVE_CACHE; i++) {
    free(x->cache[i].key);
    x->cache[i].key = NULL;
    if (x->cache[i].fd >= 0) close(x->cache[i].fd);
    x->cache[i].fd = -1;
  }
}

/* Insert (takes ownership of fd); returns the slot. */
static size_t cache_put(struct extract_ctx *x, const char *key, int fd) {
  size_t i = x->cache_next;
  x->cache_next = (x->cache_next + 1) % RESOLVE_CACHE;
  free(x->cache[i].key);
  if (x->cache[i].fd >= 0) close(x->cache[i].fd);
  x->cache[i].key = xstrdup(key);
  x->cache[i].fd = fd;
  struct stat st;
  if (fstat(fd, &st) == 0) {
    x->cache[i].dev = st.st_dev;
    x->cache[i].ino = st.st_ino;
  } else {
    x->cache[i].dev = 0;
    x->cache[i].ino = 0;
  }
  return i;
}

/* A directory the layer just made (or found) at dirfd/name is the resolution of logical key. */
int resolve_remember(struct extract_ctx *x, const char *key, int dirfd_borrowed, const char *name) {
  if (x->cache_stale) return 0; /* dirfd_borrowed may be an entry of the stale cache: add nothing now */
  for (size_t i = 0; i < RESOLVE_CACHE; i++)
    if (x->cache[i].key && strcmp(x->cache[i].key, key) == 0) return 0;
  int fd = openat(dirfd_borrowed, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return -1;
  cache_put(x, key, fd);
  return 0;
}

static int openat2_in_root(int rootfd, const char *path) {
  struct open_how how = {
      .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
      .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
  };
  for (int tries = 0; tries < 8; tries++) {
    int fd = (int)syscall(SYS_openat2, rootfd, path, &how, sizeof how);
    if (fd >= 0 || errno != EAGAIN) return fd;
  }
  return -1;
}

int resolve_probe(berth_err_t *err) {
  int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root < 0) return berth_make_error(err, errno, "open /");
  int fd = openat2_in_root(root, ".");
  int saved = errno;
  close(root);
  if (fd < 0) return berth_make_error(err, saved, "openat2 RESOLVE_IN_ROOT");
  close(fd);
  return 0;
}

/* The component walk (see the file comment). real/nreal: the resolved path, for overlay's metadata. */
static int walk(struct extract_ctx *x, char *const *c, size_t n, bool create, int *out, berth_err_t *err) {
  size_t cap = 16, depth = 0;
  int *fds = xmalloc(cap * sizeof *fds);
  char **real = xmalloc(cap * sizeof *real);
  fds[0] = openat(x->rootfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  int rc = 0;
  if (fds[0] < 0) {
    free(fds);
    free(real);
    return berth_make_error(err, errno, "open the root");
  }
  cleanup_free char *logical = xpath_join(c, n);
  struct walk_todo todo;
  todo_init(&todo, logical);
  int hops = 0;
  char comp[4097];
  for (;;) {
    int more = todo_next(&todo, comp, sizeof comp);
    if (more == 0) break;
    if (more < 0) {
      rc = berth_make_error(err, ENAMETOOLONG, "path \"%s\": name too long", logical);
      goto out;
    }
    if (strcmp(comp, "..") == 0) {
      if (depth > 0) {
        close(fds[depth]);
        free(real[depth - 1]);
        depth--;
      }
      continue;
    }
    int fd = openat(fds[depth], comp, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    bool made = false;
    if (fd < 0 && errno == ENOENT && create) {
      if (mkdirat(fds[depth], comp, 0755) < 0 && errno != EEXIST) {
        rc = berth_make_error(err, errno, "mkdir %s", comp);
        goto out;
      }
      fd = openat(fds[depth], comp, O_PATH | O_NOFOLLOW | O_CLOEXEC);
      made = true;
      created_mark(x, fds[depth], comp);
    }
    if (fd < 0) {
      if (errno == ENOENT) rc = berth_make_error(err, ENOENT, "path \"%s\" does not exist in the layer", logical);
      else rc = berth_make_error(err, errno, "open %s", comp);
      goto out;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
      rc = berth_make_error(err, errno, "stat %s", comp);
      close(fd);
      goto out;
    }
    if (S_ISDIR(st.st_mode)) {
      if (depth + 2 >= cap) {
        cap *= 2;
        fds = xrealloc(fds, cap * sizeof *fds);
        real = xrealloc(real, cap * sizeof *real);
      }
      real[depth] = xstrdup(comp);
      fds[++depth] = fd;
      if (made && x->overlay) {
        int rw = openat(fds[depth - 1], comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (rw < 0) {
          rc = berth_make_error(err, errno, "open %s", comp);
          goto out;
        }
        rc = lowers_copy_dir_meta(x, real, depth, rw, err);
        close(rw);
        if (rc < 0) goto out;
      }
      continue;
    }
    if (S_ISLNK(st.st_mode)) {
      if (++hops > MAX_SYMLINK_HOPS) {
        close(fd);
        rc = berth_make_error(err, ELOOP, "path \"%s\": too many symlinks", logical);
        goto out;
      }
      char target[4097];
      ssize_t tl = readlinkat(fd, "", target, sizeof target - 1);
      close(fd);
      if (tl < 0) {
        rc = berth_make_error(err, errno, "readlink %s", comp);
        goto out;
      }
      target[tl] = '\0';
      if (target[0] == '/') {
        while (depth > 0) {
          close(fds[depth]);
          free(real[depth - 1]);
          depth--;
        }
      }
      todo_prepend(&todo, target);
      continue;
    }
    close(fd);
    cleanup_free char *so_far = xpath_join(real, depth);
    rc = berth_make_error(err, ENOTDIR, "path \"%s\": %s%s%s is not a directory", logical, so_far, depth ? "/" : "",
                          comp);
    goto out;
  }
  *out = fds[depth];
  fds[depth] = -1;
out:
  todo_free(&todo);
  for (size_t i = 0; i <= depth; i++)
    if (fds[i] >= 0) close(fds[i]);
  for (size_t i = 0; i < depth; i++) free(real[i]);
  free(fds);
  free(real);
  return rc;
}

int resolve_dir(struct extract_ctx *x, char *const *c, size_t n, bool create, int *fd, dev_t *dev, ino_t *ino,
                berth_err_t *err) {
  if (x->cache_stale) resolve_cache_clear(x);
  cleanup_free char *key = xpath_join(c, n);
  /* most recent first: entries come grouped by directory */
  for (size_t k = 0; k < RESOLVE_CACHE; k++) {
    size_t i = (x->cache_next + RESOLVE_CACHE - 1 - k) % RESOLVE_CACHE;
    if (x->cache[i].key && strcmp(x->cache[i].key, key) == 0) {
      *fd = x->cache[i].fd;
      if (dev) *dev = x->cache[i].dev;
      if (ino) *ino = x->cache[i].ino;
      return 0;
    }
  }
  int got;
  if (n == 0) {
    got = openat(x->rootfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (got < 0) return berth_make_error(err, errno, "open the root");
  } else {
    got = openat2_in_root(x->rootfd, key);
    if (got < 0) {
      if (errno == ENOTDIR || errno == ELOOP || errno == ENOENT || errno == ENOSYS) {
        /* the walk says which component, creates what is missing, or follows a dangling link (and does
           it all where openat2 is missing: the caller normally probes and uses its own fallback then) */
        if (walk(x, c, n, create, &got, err) < 0) return -1;
      } else {
        return berth_make_error(err, errno, "resolve %s", key);
      }
    }
  }
  size_t i = cache_put(x, key, got);
  *fd = x->cache[i].fd;
  if (dev) *dev = x->cache[i].dev;
  if (ino) *ino = x->cache[i].ino;
  return 0;
}

int lowers_copy_dir_meta(struct extract_ctx *x, char *const *real, size_t n, int newdirfd, berth_err_t *err) {
  struct stat st;
  int r = merged_lower_dir(x, real, n, &st, err);
  if (r <= 0) return r;
  if (fchown(newdirfd, st.st_uid, st.st_gid) < 0) return berth_make_error(err, errno, "chown");
  if (fchmod(newdirfd, st.st_mode & 07777) < 0) return berth_make_error(err, errno, "chmod");
  if (x->ndirtimes == x->capdirtimes)
    x->dirtimes = xrealloc(x->dirtimes, (x->capdirtimes = x->capdirtimes ? x->capdirtimes * 2 : 64) *
                                            sizeof *x->dirtimes);
  x->dirtimes[x->ndirtimes].path = xpath_join(real, n);
  x->dirtimes[x->ndirtimes].t = st.st_mtim;
  x->ndirtimes++;
  return 0;
}
