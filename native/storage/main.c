/* berth-storage: command table → one function per verb (btrfs.c, special.c).
 *
 *   berth-storage btrfs-create <path>                  new empty subvolume
 *   berth-storage btrfs-snapshot <src> <dst> [--readonly]
 *   berth-storage btrfs-delete <path>                  subvolume (and its content) gone
 *   berth-storage btrfs-set-readonly <path> on|off
 *   berth-storage btrfs-info <path>                    {"subvolid":N,"readonly":bool}
 *   berth-storage btrfs-usage <path>                   {"source":"qgroup","referenced":N,"exclusive":N}
 *                                                      or {"source":"none"} when quotas are off
 *   berth-storage apply-specials <root>                 records on stdin (see special.c)
 *
 * Exit 0 on success; otherwise one line "berth-storage: <verb>: <message> (errno N)" on stderr and the
 * exit status is the errno (1 when there is none), so callers map ENOSPC, EEXIST… without parsing text.
 */
#include <stdarg.h>

#include "storage.h"

int bs_fail(bs_err *err, int errnum, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  va_end(ap);
  err->errno_ = errnum;
  return -1;
}

typedef int (*verb_fn)(int argc, char **argv, bs_err *err);

static int cmd_btrfs_create(int argc, char **argv, bs_err *err) {
  if (argc != 1) return bs_fail(err, EINVAL, "usage: btrfs-create <path>");
  return bs_btrfs_create(argv[0], err);
}

static int cmd_btrfs_snapshot(int argc, char **argv, bs_err *err) {
  int ro = argc == 3 && strcmp(argv[2], "--readonly") == 0;
  if (argc != 2 && !ro) return bs_fail(err, EINVAL, "usage: btrfs-snapshot <src> <dst> [--readonly]");
  return bs_btrfs_snapshot(argv[0], argv[1], ro, err);
}

static int cmd_btrfs_delete(int argc, char **argv, bs_err *err) {
  if (argc != 1) return bs_fail(err, EINVAL, "usage: btrfs-delete <path>");
  return bs_btrfs_delete(argv[0], err);
}

static int cmd_btrfs_set_readonly(int argc, char **argv, bs_err *err) {
  if (argc != 2 || (strcmp(argv[1], "on") != 0 && strcmp(argv[1], "off") != 0))
    return bs_fail(err, EINVAL, "usage: btrfs-set-readonly <path> on|off");
  return bs_btrfs_set_readonly(argv[0], strcmp(argv[1], "on") == 0, err);
}

static int cmd_btrfs_info(int argc, char **argv, bs_err *err) {
  if (argc != 1) return bs_fail(err, EINVAL, "usage: btrfs-info <path>");
  return bs_btrfs_info(argv[0], stdout, err);
}

static int cmd_btrfs_usage(int argc, char **argv, bs_err *err) {
  if (argc != 1) return bs_fail(err, EINVAL, "usage: btrfs-usage <path>");
  return bs_btrfs_usage(argv[0], stdout, err);
}

static int cmd_apply_specials(int argc, char **argv, bs_err *err) {
  if (argc != 1) return bs_fail(err, EINVAL, "usage: apply-specials <root>  (records on stdin)");
  return bs_apply_specials(argv[0], stdin, err);
}

static const struct {
  const char *name;
  verb_fn fn;
} verbs[] = {
    {"btrfs-create", cmd_btrfs_create},
    {"btrfs-snapshot", cmd_btrfs_snapshot},
    {"btrfs-delete", cmd_btrfs_delete},
    {"btrfs-set-readonly", cmd_btrfs_set_readonly},
    {"btrfs-info", cmd_btrfs_info},
    {"btrfs-usage", cmd_btrfs_usage},
    {"apply-specials", cmd_apply_specials},
};

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: berth-storage <verb> [args]; verbs:");
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) fprintf(stderr, " %s", verbs[i].name);
    fprintf(stderr, "\n");
    return 1;
  }
  for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
    if (strcmp(argv[1], verbs[i].name) != 0) continue;
    bs_err err = {0, ""};
    if (verbs[i].fn(argc - 2, argv + 2, &err) < 0) {
      fprintf(stderr, "berth-storage: %s: %s (errno %d)\n", argv[1], err.msg, err.errno_);
      return err.errno_ > 0 && err.errno_ < 256 ? err.errno_ : 1;
    }
    if (fflush(stdout) != 0) return errno ? errno : 1;
    return 0;
  }
  fprintf(stderr, "berth-storage: unknown verb %s\n", argv[1]);
  return 1;
}
