/* Shared between the extractor's files (extract.c, resolve.c, lowers.c). */
#ifndef BERTH_STORAGE_EXTRACT_H
#define BERTH_STORAGE_EXTRACT_H
#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include "error.h"

#define RESOLVE_CACHE 32
#define MAX_SYMLINK_HOPS 255

/* A path split into components (no "", ".", ".."), joined form kept for cache keys. */
struct xpath {
  char **c;
  size_t n;
  char *joined;
};
void xpath_free(struct xpath *p);
/* Components of a name from a layer: leading '/' and "./" dropped; '..' refused (EINVAL, "climbs out"). */
int xpath_parse(const char *name, const char *what, struct xpath *out, berth_err_t *err);
char *xpath_join(char *const *c, size_t n);

/* The components a walk still has to take: a string, so a symlink's target can be put in front of the rest. */
struct walk_todo {
  char *s;
  size_t at;
};
void todo_init(struct walk_todo *t, const char *path);
/* The next component ("" and "." skipped) into comp: 1, or 0 when none is left, -1 when longer than size. */
int todo_next(struct walk_todo *t, char *comp, size_t size);
void todo_prepend(struct walk_todo *t, const char *target);
void todo_free(struct walk_todo *t);

struct created_set;
struct extract_ctx;
/* dirfd/name was created by this layer (a parent made on the way counts): its whiteouts leave it. */
void created_mark(struct extract_ctx *x, int dirfd, const char *name);

struct extract_ctx {
  int rootfd;   /* O_PATH directory: the snapshot root (or overlay upperdir) */
  int rootrw;   /* the same, opened O_RDONLY for fchown/fchmod/futimens/fsetxattr of the root itself */
  bool overlay; /* whiteouts as overlay's 0/0 devices + opaque xattr, lowers below */
  int *lowerfds; /* overlay: O_RDONLY directories of the parent layers, nearest first */
  size_t nlowers;
  struct {
    char *key; /* logical path as named in the layer */
    int fd;    /* O_PATH directory it resolved to */
    dev_t dev;
    ino_t ino;
  } cache[RESOLVE_CACHE];
  size_t cache_next;
  bool cache_stale;
  struct created_set *created;
  struct dirtime {
    char *path; /* resolved again at the end, inside the root */
    struct timespec t;
  } *dirtimes;
  size_t ndirtimes, capdirtimes;
  unsigned long long entries;
  uid_t euid;
  gid_t egid;
};

/* resolve.c: a directory of the layer, resolved INSIDE the root (openat2 RESOLVE_IN_ROOT, and a
 * component walk that creates what is missing). The fd is borrowed from the cache: do not close it. */
int resolve_dir(struct extract_ctx *x, char *const *c, size_t n, bool create, int *fd, dev_t *dev, ino_t *ino,
                berth_err_t *err);
/* Forget every resolution (a directory or symlink was removed). Deferred to the next resolve_dir, so the
 * fd a caller is holding stays open until it is done with it. */
void resolve_invalidate(struct extract_ctx *x);
void resolve_cache_clear(struct extract_ctx *x);
/* 0 when openat2 with RESOLVE_IN_ROOT works here, else an error (ENOSYS on kernels before 5.6). */
int resolve_probe(berth_err_t *err);
int resolve_remember(struct extract_ctx *x, const char *key, int dirfd_borrowed, const char *name);
/* overlay: the directory real/…/c[n-1] of the upper takes the mode, owner and mtime the lowers show there. */
int lowers_copy_dir_meta(struct extract_ctx *x, char *const *real, size_t n, int newdirfd, berth_err_t *err);

/* lowers.c: overlay's merged view (upper on top of the lowers), walked component by component with
 * overlay's own rules (whiteouts, opaque directories, a non-directory ends a merge) and symlinks
 * resolved against the merged root. Never leaves the layers' roots. */
struct merged_hit {
  size_t layer; /* 0 = upper, i = lowerfds[i-1] */
  int dirfd;    /* owned: O_RDONLY directory holding name, in that layer */
  char *name;
  char **real; /* the directory's path in the merged tree, symlink-free */
  size_t nreal;
  struct stat st;
};
void merged_hit_free(struct merged_hit *h);
/* 1 found (not a directory), 0 not there (absent, whited out, or a directory when !want_dir), <0 error. */
int merged_lookup(struct extract_ctx *x, char *const *c, size_t n, struct merged_hit *hit, berth_err_t *err);
/* The first lower that shows a directory at real[0..n) through the merge: its stat, or 0 when none does. */
int merged_lower_dir(struct extract_ctx *x, char *const *real, size_t n, struct stat *st, berth_err_t *err);
/* Names in the lower layers' roots (for an opaque root). Calls fn(name) for each, once per lower. */
int lowers_root_names(struct extract_ctx *x, int (*fn)(struct extract_ctx *, const char *, berth_err_t *),
                      berth_err_t *err);

/* Is st overlay's whiteout (a 0/0 character device)? */
static inline bool is_whiteout(const struct stat *st) { return S_ISCHR(st->st_mode) && st->st_rdev == 0; }

#endif
