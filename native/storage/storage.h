/* berth-storage: storage operations Node cannot do itself or does slower: btrfs ioctls, mknod and
 * xattrs for the fallback unpacker, and the layer extractor. Errors are native/common's: functions return
 * a negative int and fill a berth_err_t (error.h), context is prepended on the way up. */
#ifndef BERTH_STORAGE_H
#define BERTH_STORAGE_H

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "error.h"

/* btrfs.c */
int bs_btrfs_create(const char *path, berth_err_t *err);
int bs_btrfs_snapshot(const char *src, const char *dst, int readonly, berth_err_t *err);
int bs_btrfs_delete(const char *path, berth_err_t *err);
int bs_btrfs_set_readonly(const char *path, int readonly, berth_err_t *err);
int bs_btrfs_info(const char *path, FILE *out, berth_err_t *err);
int bs_btrfs_usage(const char *path, FILE *out, berth_err_t *err);

/* special.c */
int bs_apply_specials(const char *root, FILE *in, berth_err_t *err);
int bs_overlay_opaque(int argc, char **argv, FILE *out, berth_err_t *err);

/* usage.c */
int bs_usage(const char *dir, FILE *out, berth_err_t *err);

/* pageout.c */
int bs_page_out(const char *pid, FILE *out, berth_err_t *err);

/* extract.c */
int bs_extract(const char *root, bool overlay, char **lowers, size_t nlowers, int in, FILE *out, berth_err_t *err);
int bs_extract_probe(berth_err_t *err);

#endif
