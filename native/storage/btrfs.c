/* btrfs subvolumes through ioctls (linux/btrfs.h), so a device needs no btrfs-progs. */
#include <endian.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "storage.h"

/* Split "a/b/c" into an O_DIRECTORY fd on "a/b" and the name "c" (copied into name). */
static int open_parent(const char *path, char *name, size_t name_len, berth_err_t *err) {
  cleanup_free char *copy = strdup(path);
  if (!copy) return berth_make_error(err, ENOMEM, "out of memory");
  size_t len = strlen(copy);
  while (len > 1 && copy[len - 1] == '/') copy[--len] = '\0';
  char *slash = strrchr(copy, '/');
  const char *dir = ".";
  const char *base = copy;
  if (slash) {
    *slash = '\0';
    dir = slash == copy ? "/" : copy;
    base = slash + 1;
  }
  if (*base == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
    return berth_make_error(err, EINVAL, "%s: not a subvolume path", path);
  if (strlen(base) >= name_len) return berth_make_error(err, ENAMETOOLONG, "%s: name too long", path);
  strcpy(name, base);
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return berth_make_error(err, errno, "open %s", dir);
  return fd;
}

int bs_btrfs_create(const char *path, berth_err_t *err) {
  struct btrfs_ioctl_vol_args args;
  memset(&args, 0, sizeof args);
  cleanup_close int dirfd = open_parent(path, args.name, sizeof args.name, err);
  if (dirfd < 0) return -1;
  if (ioctl(dirfd, BTRFS_IOC_SUBVOL_CREATE, &args) < 0)
    return berth_make_error(err, errno, "BTRFS_IOC_SUBVOL_CREATE %s", path);
  return 0;
}

int bs_btrfs_snapshot(const char *src, const char *dst, int readonly, berth_err_t *err) {
  struct btrfs_ioctl_vol_args_v2 args;
  memset(&args, 0, sizeof args);
  cleanup_close int srcfd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (srcfd < 0) return berth_make_error(err, errno, "open %s", src);
  cleanup_close int dirfd = open_parent(dst, args.name, sizeof args.name, err);
  if (dirfd < 0) return -1;
  args.fd = srcfd;
  args.flags = readonly ? BTRFS_SUBVOL_RDONLY : 0;
  if (ioctl(dirfd, BTRFS_IOC_SNAP_CREATE_V2, &args) < 0)
    return berth_make_error(err, errno, "BTRFS_IOC_SNAP_CREATE_V2 %s -> %s", src, dst);
  return 0;
}

int bs_btrfs_delete(const char *path, berth_err_t *err) {
  struct btrfs_ioctl_vol_args_v2 args;
  memset(&args, 0, sizeof args);
  cleanup_close int dirfd = open_parent(path, args.name, sizeof args.name, err);
  if (dirfd < 0) return -1;
  if (ioctl(dirfd, BTRFS_IOC_SNAP_DESTROY_V2, &args) == 0) return 0;
  if (errno != ENOTTY && errno != EOPNOTSUPP) {
    if (errno == ENOENT) return 0; /* already gone: removal is idempotent */
    return berth_make_error(err, errno, "BTRFS_IOC_SNAP_DESTROY_V2 %s", path);
  }
  /* kernels before 5.7: the v1 ioctl takes the name the same way */
  struct btrfs_ioctl_vol_args v1;
  memset(&v1, 0, sizeof v1);
  snprintf(v1.name, sizeof v1.name, "%s", args.name);
  if (ioctl(dirfd, BTRFS_IOC_SNAP_DESTROY, &v1) < 0 && errno != ENOENT)
    return berth_make_error(err, errno, "BTRFS_IOC_SNAP_DESTROY %s", path);
  return 0;
}

int bs_btrfs_set_readonly(const char *path, int readonly, berth_err_t *err) {
  cleanup_close int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return berth_make_error(err, errno, "open %s", path);
  __u64 flags = 0;
  if (ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, &flags) < 0)
    return berth_make_error(err, errno, "BTRFS_IOC_SUBVOL_GETFLAGS %s", path);
  __u64 want = readonly ? (flags | BTRFS_SUBVOL_RDONLY) : (flags & ~(__u64)BTRFS_SUBVOL_RDONLY);
  if (want == flags) return 0;
  if (ioctl(fd, BTRFS_IOC_SUBVOL_SETFLAGS, &want) < 0)
    return berth_make_error(err, errno, "BTRFS_IOC_SUBVOL_SETFLAGS %s", path);
  return 0;
}

static int subvol_id(int fd, const char *path, __u64 *id, berth_err_t *err) {
  struct btrfs_ioctl_ino_lookup_args args;
  memset(&args, 0, sizeof args);
  args.objectid = BTRFS_FIRST_FREE_OBJECTID;
  if (ioctl(fd, BTRFS_IOC_INO_LOOKUP, &args) < 0)
    return berth_make_error(err, errno, "BTRFS_IOC_INO_LOOKUP %s", path);
  *id = args.treeid;
  return 0;
}

int bs_btrfs_info(const char *path, FILE *out, berth_err_t *err) {
  cleanup_close int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return berth_make_error(err, errno, "open %s", path);
  __u64 id = 0, flags = 0;
  if (subvol_id(fd, path, &id, err) < 0) return -1;
  if (ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, &flags) < 0)
    return berth_make_error(err, errno, "BTRFS_IOC_SUBVOL_GETFLAGS %s", path);
  fprintf(out, "{\"subvolid\":%llu,\"readonly\":%s}\n", (unsigned long long)id,
          (flags & BTRFS_SUBVOL_RDONLY) ? "true" : "false");
  return 0;
}

/* Exclusive and referenced bytes of the subvolume's level-0 qgroup, read from the quota tree with
 * BTRFS_IOC_TREE_SEARCH. Quotas off (no quota tree) → {"source":"none"}: the caller walks instead. */
int bs_btrfs_usage(const char *path, FILE *out, berth_err_t *err) {
  cleanup_close int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return berth_make_error(err, errno, "open %s", path);
  __u64 id = 0;
  if (subvol_id(fd, path, &id, err) < 0) return -1;
  /* qgroup numbers are brought up to date when a transaction commits */
  if (syncfs(fd) < 0) return berth_make_error(err, errno, "syncfs %s", path);
  struct btrfs_ioctl_search_args args;
  memset(&args, 0, sizeof args);
  struct btrfs_ioctl_search_key *sk = &args.key;
  sk->tree_id = BTRFS_QUOTA_TREE_OBJECTID;
  sk->min_objectid = 0;
  sk->max_objectid = 0;
  sk->min_type = BTRFS_QGROUP_INFO_KEY;
  sk->max_type = BTRFS_QGROUP_INFO_KEY;
  sk->min_offset = id;
  sk->max_offset = id;
  sk->max_transid = (__u64)-1;
  sk->nr_items = 1;
  if (ioctl(fd, BTRFS_IOC_TREE_SEARCH, &args) < 0) {
    if (errno == ENOENT) {
      fprintf(out, "{\"source\":\"none\"}\n");
      return 0;
    }
    return berth_make_error(err, errno, "BTRFS_IOC_TREE_SEARCH (quota tree) %s", path);
  }
  if (sk->nr_items == 0) {
    fprintf(out, "{\"source\":\"none\"}\n");
    return 0;
  }
  struct btrfs_ioctl_search_header sh;
  memcpy(&sh, args.buf, sizeof sh);
  if (sh.type != BTRFS_QGROUP_INFO_KEY || sh.len < sizeof(struct btrfs_qgroup_info_item))
    return berth_make_error(err, EIO, "%s: unexpected quota tree item (type %u, len %u)", path, sh.type, sh.len);
  struct btrfs_qgroup_info_item item;
  memcpy(&item, args.buf + sizeof sh, sizeof item);
  fprintf(out, "{\"source\":\"qgroup\",\"subvolid\":%llu,\"referenced\":%llu,\"exclusive\":%llu}\n",
          (unsigned long long)id, (unsigned long long)le64toh(item.rfer),
          (unsigned long long)le64toh(item.excl));
  return 0;
}
