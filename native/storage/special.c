/* apply-specials: the parts of layer unpacking Node has no call for — device nodes and fifos (mknod),
 * extended attributes (lsetxattr) — applied under a root directory.
 *
 * stdin carries records; every field ends with a NUL byte:
 *   mknod  <rel> <mode, octal, with S_IFCHR|S_IFBLK|S_IFIFO> <major> <minor> <uid> <gid> <sec> <nsec>
 *   xattr  <rel> <name> <value, hex>
 * <rel> is relative to <root>. Parent directories are opened one component at a time with
 * O_NOFOLLOW, so a symlink anywhere in the parent path is refused (ELOOP): the caller has already
 * resolved symlinks inside the root, and nothing here can be steered outside it. The final component
 * is never followed either (mknod replaces a non-directory; lsetxattr does not follow). */
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include "storage.h"


/* fd of the directory holding rel (resolved component by component, no symlinks), base name out. */
static int open_parent_in_root(int rootfd, const char *rel, const char **base, berth_err_t *err) {
  const char *slash = strrchr(rel, '/');
  *base = slash ? slash + 1 : rel;
  if (**base == '\0' || strcmp(*base, ".") == 0 || strcmp(*base, "..") == 0)
    return berth_make_error(err, EINVAL, "%s: bad name", rel);
  int fd = openat(rootfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return berth_make_error(err, errno, "open root");
  if (!slash) return fd;
  cleanup_free char *dir = strndup(rel, (size_t)(slash - rel));
  if (!dir) {
    close(fd);
    return berth_make_error(err, ENOMEM, "out of memory");
  }
  char *save = NULL;
  for (char *c = strtok_r(dir, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
    if (strcmp(c, ".") == 0) continue;
    if (strcmp(c, "..") == 0) {
      close(fd);
      return berth_make_error(err, EINVAL, "%s: '..' not allowed", rel);
    }
    int next = openat(fd, c, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int saved = errno;
    close(fd);
    if (next < 0) return berth_make_error(err, saved, "%s: parent component %s", rel, c);
    fd = next;
  }
  return fd;
}

static int do_mknod(int rootfd, char **f, berth_err_t *err) {
  const char *base;
  cleanup_close int dirfd = open_parent_in_root(rootfd, f[0], &base, err);
  if (dirfd < 0) return -1;
  mode_t mode = (mode_t)strtoul(f[1], NULL, 8);
  dev_t dev = makedev(strtoul(f[2], NULL, 10), strtoul(f[3], NULL, 10));
  if (!S_ISCHR(mode) && !S_ISBLK(mode) && !S_ISFIFO(mode))
    return berth_make_error(err, EINVAL, "%s: mode %s is not a device or fifo", f[0], f[1]);
  if (mknodat(dirfd, base, mode, dev) < 0) {
    if (errno != EEXIST) return berth_make_error(err, errno, "mknod %s", f[0]);
    if (unlinkat(dirfd, base, 0) < 0) return berth_make_error(err, errno, "replace %s", f[0]);
    if (mknodat(dirfd, base, mode, dev) < 0) return berth_make_error(err, errno, "mknod %s", f[0]);
  }
  if (fchownat(dirfd, base, (uid_t)strtoul(f[4], NULL, 10), (gid_t)strtoul(f[5], NULL, 10),
               AT_SYMLINK_NOFOLLOW) < 0)
    return berth_make_error(err, errno, "chown %s", f[0]);
  /* mknod applies the umask: set the permission bits exactly */
  if (fchmodat(dirfd, base, mode & 07777, 0) < 0) return berth_make_error(err, errno, "chmod %s", f[0]);
  struct timespec ts[2];
  ts[0].tv_sec = ts[1].tv_sec = (time_t)strtoll(f[6], NULL, 10);
  ts[0].tv_nsec = ts[1].tv_nsec = strtol(f[7], NULL, 10);
  if (utimensat(dirfd, base, ts, AT_SYMLINK_NOFOLLOW) < 0)
    return berth_make_error(err, errno, "utimes %s", f[0]);
  return 0;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int do_xattr(int rootfd, char **f, berth_err_t *err) {
  const char *base;
  cleanup_close int dirfd = open_parent_in_root(rootfd, f[0], &base, err);
  if (dirfd < 0) return -1;
  size_t hl = strlen(f[2]);
  if (hl % 2) return berth_make_error(err, EINVAL, "%s: xattr %s: odd hex length", f[0], f[1]);
  cleanup_free unsigned char *val = malloc(hl / 2 + 1);
  if (!val) return berth_make_error(err, ENOMEM, "out of memory");
  for (size_t i = 0; i < hl / 2; i++) {
    int hi = hexval(f[2][2 * i]), lo = hexval(f[2][2 * i + 1]);
    if (hi < 0 || lo < 0) return berth_make_error(err, EINVAL, "%s: xattr %s: bad hex", f[0], f[1]);
    val[i] = (unsigned char)(hi << 4 | lo);
  }
  /* lsetxattr needs a path: /proc/self/fd/<dirfd>/<base> names the entry without following it */
  char p[4200];
  if (snprintf(p, sizeof p, "/proc/self/fd/%d/%s", dirfd, base) >= (int)sizeof p)
    return berth_make_error(err, ENAMETOOLONG, "%s: name too long", f[0]);
  /* a filesystem without that namespace: skipped, as extract.c and containerd do */
  if (lsetxattr(p, f[1], val, hl / 2, 0) < 0 && errno != EOPNOTSUPP)
    return berth_make_error(err, errno, "setxattr %s %s", f[0], f[1]);
  return 0;
}

int bs_apply_specials(const char *root, FILE *in, berth_err_t *err) {
  cleanup_close int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (rootfd < 0) return berth_make_error(err, errno, "open %s", root);
  char *fields[9] = {0};
  size_t caps[9] = {0};
  char *op = NULL;
  size_t opcap = 0;
  int rc = 0;
  long n = 0;
  while (getdelim(&op, &opcap, '\0', in) > 0) {
    n++;
    int want = strcmp(op, "mknod") == 0 ? 8 : strcmp(op, "xattr") == 0 ? 3 : -1;
    if (want < 0) {
      rc = berth_make_error(err, EINVAL, "record %ld: unknown op %s", n, op);
      break;
    }
    for (int i = 0; i < want; i++) {
      if (getdelim(&fields[i], &caps[i], '\0', in) <= 0) {
        rc = berth_make_error(err, EINVAL, "record %ld (%s): truncated", n, op);
        goto out;
      }
    }
    rc = want == 8 ? do_mknod(rootfd, fields, err) : do_xattr(rootfd, fields, err);
    if (rc < 0) break;
  }
out:
  free(op);
  for (int i = 0; i < 9; i++) free(fields[i]);
  return rc;
}

/* overlay-opaque <dir>...: a JSON array, true where the directory carries trusted.overlay.opaque=y (the
 * fallback unpacker's view of its lower layers; Node has no xattr call). Never follows a symlink. */
int bs_overlay_opaque(int argc, char **argv, FILE *out, berth_err_t *err) {
  fputc('[', out);
  for (int i = 0; i < argc; i++) {
    char v[2];
    ssize_t n = lgetxattr(argv[i], "trusted.overlay.opaque", v, sizeof v);
    if (n < 0 && errno != ENODATA && errno != EOPNOTSUPP && errno != ERANGE)
      return berth_make_error(err, errno, "getxattr %s", argv[i]);
    fprintf(out, "%s%s", i ? "," : "", n == 1 && v[0] == 'y' ? "true" : "false");
  }
  fputs("]\n", out);
  return 0;
}
