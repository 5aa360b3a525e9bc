/* berth-storage: storage operations Node cannot do itself (btrfs ioctls, mknod, xattrs).
 * Self-contained (no native/common): errors go through bs_err, the crun way. */
#ifndef BERTH_STORAGE_H
#define BERTH_STORAGE_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct bs_err {
  int errno_;
  char msg[512];
} bs_err;

/* Fill *err and return -1: `return bs_fail(err, errno, "open %s", path);` */
int bs_fail(bs_err *err, int errnum, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static inline void bs_closep(int *fd) {
  if (*fd >= 0) close(*fd);
}
static inline void bs_freep(void *p) { free(*(void **)p); }
#define cleanup_close __attribute__((cleanup(bs_closep)))
#define cleanup_free __attribute__((cleanup(bs_freep)))

/* btrfs.c */
int bs_btrfs_create(const char *path, bs_err *err);
int bs_btrfs_snapshot(const char *src, const char *dst, int readonly, bs_err *err);
int bs_btrfs_delete(const char *path, bs_err *err);
int bs_btrfs_set_readonly(const char *path, int readonly, bs_err *err);
int bs_btrfs_info(const char *path, FILE *out, bs_err *err);
int bs_btrfs_usage(const char *path, FILE *out, bs_err *err);

/* special.c */
int bs_apply_specials(const char *root, FILE *in, bs_err *err);

#endif
