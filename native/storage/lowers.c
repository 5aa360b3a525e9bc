/* overlay's merged view, for the two things an upper layer needs from its lowers: the metadata of a
 * directory it must create (so the merged view keeps it), and the file a hardlink names when that file
 * lives in a lower layer (copied up, then linked).
 *
 * A "level" is one directory of the merged tree: the directories of the layers that make it up, top
 * first. Looking a name up in a level follows overlayfs: the topmost layer that has the name decides; a
 * whiteout (0/0 character device) hides it; a directory merges with the same name in the layers below
 * until one of them is not a directory, is a whiteout, or a directory is opaque
 * (trusted.overlay.opaque=y). Every step is an openat/fstatat relative to a layer's directory fd with
 * O_NOFOLLOW; symlinks met on the way are read and resolved against the merged root, ".." never climbs
 * above it. Nothing here can reach a file outside the layers (issue: a symlink in a lower layer used to
 * lead the copy-up out to the host). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "cleanup.h"
#include "extract.h"
#include "util.h"

struct level {
  size_t n;
  size_t *layer;
  int *fd;
};

static void level_free(struct level *l) {
  for (size_t i = 0; i < l->n; i++) close(l->fd[i]);
  free(l->layer);
  free(l->fd);
  memset(l, 0, sizeof *l);
}

static void level_push(struct level *l, size_t layer, int fd) {
  l->layer = xrealloc(l->layer, (l->n + 1) * sizeof *l->layer);
  l->fd = xrealloc(l->fd, (l->n + 1) * sizeof *l->fd);
  l->layer[l->n] = layer;
  l->fd[l->n] = fd;
  l->n++;
}

static bool is_opaque(int dirfd) {
  char v[2];
  ssize_t n = fgetxattr(dirfd, "trusted.overlay.opaque", v, sizeof v);
  return n == 1 && v[0] == 'y';
}

/* The root level: the upper (when with_upper) and every lower. */
static int root_level(struct extract_ctx *x, bool with_upper, struct level *out, berth_err_t *err) {
  memset(out, 0, sizeof *out);
  if (with_upper) {
    int fd = openat(x->rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return berth_make_error(err, errno, "open the upper layer");
    level_push(out, 0, fd);
  }
  for (size_t i = 0; i < x->nlowers; i++) {
    int fd = openat(x->lowerfds[i], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      level_free(out);
      return berth_make_error(err, errno, "open lower layer %zu", i + 1);
    }
    level_push(out, i + 1, fd);
  }
  return 0;
}

/* Look name up in level l. Returns 1 and fills *st, *which (index into l) when the merged view shows
 * something there; 0 when it shows nothing. When it is a directory, *next is its level. */
static int level_lookup(struct level *l, const char *name, struct stat *st, size_t *which, struct level *next,
                        berth_err_t *err) {
  memset(next, 0, sizeof *next);
  for (size_t k = 0; k < l->n; k++) {
    if (fstatat(l->fd[k], name, st, AT_SYMLINK_NOFOLLOW) < 0) {
      if (errno == ENOENT) continue;
      return berth_make_error(err, errno, "stat %s", name);
    }
    if (is_whiteout(st)) return 0;
    *which = k;
    if (!S_ISDIR(st->st_mode)) return 1;
    for (size_t j = k; j < l->n; j++) {
      struct stat s2;
      if (j > k) {
        if (fstatat(l->fd[j], name, &s2, AT_SYMLINK_NOFOLLOW) < 0) {
          if (errno == ENOENT) continue;
          level_free(next);
          return berth_make_error(err, errno, "stat %s", name);
        }
        if (!S_ISDIR(s2.st_mode)) break; /* a whiteout or a non-directory ends the merge */
      }
      int fd = openat(l->fd[j], name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) {
        level_free(next);
        return berth_make_error(err, errno, "open %s", name);
      }
      level_push(next, l->layer[j], fd);
      if (is_opaque(fd)) break;
    }
    return 1;
  }
  return 0;
}

void merged_hit_free(struct merged_hit *h) {
  if (h->dirfd >= 0) close(h->dirfd);
  free(h->name);
  for (size_t i = 0; i < h->nreal; i++) free(h->real[i]);
  free(h->real);
  memset(h, 0, sizeof *h);
  h->dirfd = -1;
}

int merged_lookup(struct extract_ctx *x, char *const *c, size_t n, struct merged_hit *hit, berth_err_t *err) {
  memset(hit, 0, sizeof *hit);
  hit->dirfd = -1;
  if (n == 0) return 0;
  size_t cap = 8, depth = 0;
  struct level *lv = xmalloc0(cap * sizeof *lv);
  char **real = xmalloc(cap * sizeof *real);
  int rc = root_level(x, true, &lv[0], err);
  if (rc < 0) {
    free(lv);
    free(real);
    return rc;
  }
  cleanup_free char *logical = xpath_join(c, n);
  cleanup_free char *parent = xpath_join(c, n - 1);
  struct walk_todo todo;
  todo_init(&todo, parent);
  const char *final = c[n - 1];
  int hops = 0;
  bool final_done = false;
  for (;;) {
    char comp[4097];
    bool is_final = false;
    int more = todo_next(&todo, comp, sizeof comp);
    if (more < 0) {
      rc = berth_make_error(err, ENAMETOOLONG, "path \"%s\": name too long", logical);
      goto out;
    }
    if (more == 0) {
      if (final_done) break;
      snprintf(comp, sizeof comp, "%s", final);
      final_done = is_final = true;
    }
    if (strcmp(comp, "..") == 0) {
      if (depth > 0) {
        level_free(&lv[depth]);
        free(real[--depth]);
      }
      continue;
    }
    struct stat st;
    size_t which = 0;
    struct level next;
    int found = level_lookup(&lv[depth], comp, &st, &which, &next, err);
    if (found < 0) {
      rc = -1;
      goto out;
    }
    if (found == 0) {
      rc = 0;
      goto out;
    }
    if (is_final) {
      if (S_ISDIR(st.st_mode)) {
        level_free(&next);
        rc = 0; /* the caller says "points at a directory" */
        hit->st = st;
        goto out;
      }
      hit->layer = lv[depth].layer[which];
      hit->dirfd = dup(lv[depth].fd[which]);
      if (hit->dirfd < 0) {
        rc = berth_make_error(err, errno, "dup");
        goto out;
      }
      hit->name = xstrdup(comp);
      hit->real = real;
      hit->nreal = depth;
      real = NULL;
      hit->st = st;
      rc = 1;
      goto out;
    }
    if (S_ISDIR(st.st_mode)) {
      if (depth + 2 >= cap) {
        cap *= 2;
        lv = xrealloc(lv, cap * sizeof *lv);
        real = xrealloc(real, cap * sizeof *real);
      }
      real[depth] = xstrdup(comp);
      lv[++depth] = next;
      continue;
    }
    if (S_ISLNK(st.st_mode)) {
      if (++hops > MAX_SYMLINK_HOPS) {
        rc = berth_make_error(err, ELOOP, "path \"%s\": too many symlinks", logical);
        goto out;
      }
      char target[4097];
      ssize_t tl = readlinkat(lv[depth].fd[which], comp, target, sizeof target - 1);
      if (tl < 0) {
        rc = berth_make_error(err, errno, "readlink %s", comp);
        goto out;
      }
      target[tl] = '\0';
      if (target[0] == '/') {
        while (depth > 0) {
          level_free(&lv[depth]);
          free(real[--depth]);
        }
      }
      todo_prepend(&todo, target);
      continue;
    }
    rc = berth_make_error(err, ENOTDIR, "path \"%s\": %s is not a directory", logical, comp);
    goto out;
  }
out:
  todo_free(&todo);
  for (size_t i = 0; i <= depth; i++) level_free(&lv[i]);
  if (real)
    for (size_t i = 0; i < depth; i++) free(real[i]);
  free(real);
  free(lv);
  return rc;
}

int merged_lower_dir(struct extract_ctx *x, char *const *real, size_t n, struct stat *st, berth_err_t *err) {
  if (x->nlowers == 0) return 0;
  struct level cur;
  if (root_level(x, false, &cur, err) < 0) return -1;
  for (size_t i = 0; i < n; i++) {
    struct stat s;
    size_t which;
    struct level next;
    int found = level_lookup(&cur, real[i], &s, &which, &next, err);
    level_free(&cur);
    if (found <= 0) return found;
    if (!S_ISDIR(s.st_mode)) return 0;
    cur = next;
  }
  int rc = 0;
  if (cur.n > 0) {
    rc = fstat(cur.fd[0], st) < 0 ? berth_make_error(err, errno, "stat") : 1;
  }
  level_free(&cur);
  return rc;
}

int lowers_root_names(struct extract_ctx *x, int (*fn)(struct extract_ctx *, const char *, berth_err_t *),
                      berth_err_t *err) {
  for (size_t i = 0; i < x->nlowers; i++) {
    int fd = openat(x->lowerfds[i], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return berth_make_error(err, errno, "open lower layer %zu", i + 1);
    cleanup_dir DIR *d = fdopendir(fd);
    if (!d) {
      close(fd);
      return berth_make_error(err, errno, "read lower layer %zu", i + 1);
    }
    struct dirent *de;
    while ((errno = 0, de = readdir(d))) {
      if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
      if (fn(x, de->d_name, err) < 0) return -1;
    }
    if (errno) return berth_make_error(err, errno, "read lower layer %zu", i + 1);
  }
  return 0;
}
