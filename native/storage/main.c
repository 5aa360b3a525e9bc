/* berth-storage: command table → one function per verb (btrfs.c, special.c, extract.c).
 *
 *   berth-storage btrfs-create <path>                  new empty subvolume
 *   berth-storage btrfs-snapshot <src> <dst> [--readonly]
 *   berth-storage btrfs-delete <path>                  subvolume (and its content) gone
 *   berth-storage btrfs-set-readonly <path> on|off
 *   berth-storage btrfs-info <path>                    {"subvolid":N,"readonly":bool}
 *   berth-storage btrfs-usage <path>                   {"source":"qgroup","referenced":N,"exclusive":N}
 *                                                      or {"source":"none"} when quotas are off
 *   berth-storage apply-specials <root>                records on stdin (see special.c)
 *   berth-storage usage <dir>                          {"size":N,"inodes":N} (see usage.c)
 *   berth-storage overlay-opaque <dir>...              [bool…]: trusted.overlay.opaque=y on each
 *   berth-storage extract <root> [--input <tar>] [--overlay [--lower <dir>]...]
 *                                                      an uncompressed layer tar (stdin, or the file)
 *                                                      applied to root (see extract.c)
 *   berth-storage extract --probe                      exit 0 when the kernel can resolve inside a root
 *   berth-storage page-out <pid>                       {"bytes":N,"ranges":N}: the process's clean pages of
 *                                                      read-only file mappings handed back (see pageout.c)
 *
 * Exit 0 on success; otherwise one line "berth-storage: <verb>: <message> (errno N)" on stderr and the
 * exit status is the errno (1 when there is none), so callers map ENOSPC, EEXIST… without parsing text.
 * What a layer got wrong is EINVAL (a path, a link, a whiteout) or EBADMSG (not a valid tar); their
 * messages say it all, so no strerror is appended to them.
 */
#include <fcntl.h>

#include "storage.h"

typedef int (*verb_fn)(int argc, char **argv, berth_err_t *err);

static int cmd_btrfs_create(int argc, char **argv, berth_err_t *err) {
  if (argc != 1) return berth_make_error(err, EINVAL, "usage: btrfs-create <path>");
  return bs_btrfs_create(argv[0], err);
}

static int cmd_btrfs_snapshot(int argc, char **argv, berth_err_t *err) {
  int ro = argc == 3 && strcmp(argv[2], "--readonly") == 0;
  if (argc != 2 && !ro) return berth_make_error(err, EINVAL, "usage: btrfs-snapshot <src> <dst> [--readonly]");
  return bs_btrfs_snapshot(argv[0], argv[1], ro, err);
}

static int cmd_btrfs_delete(int argc, char **argv, berth_err_t *err) {
  if (argc != 1) return berth_make_error(err, EINVAL, "usage: btrfs-delete <path>");
  return bs_btrfs_delete(argv[0], err);
}

static int cmd_btrfs_set_readonly(int argc, char **argv, berth_err_t *err) {
  if (argc != 2 || (strcmp(argv[1], "on") != 0 && strcmp(argv[1], "off") != 0))
    return berth_make_error(err, EINVAL, "usage: btrfs-set-readonly <path> on|off");
  return bs_btrfs_set_readonly(argv[0], strcmp(argv[1], "on") == 0, err);
}

static int cmd_btrfs_info(int argc, char **argv, berth_err_t *err) {
  if (argc != 1) return berth_make_error(err, EINVAL, "usage: btrfs-info <path>");
  return bs_btrfs_info(argv[0], stdout, err);
}

static int cmd_btrfs_usage(int argc, char **argv, berth_err_t *err) {
  if (argc != 1) return berth_make_error(err, EINVAL, "usage: btrfs-usage <path>");
  return bs_btrfs_usage(argv[0], stdout, err);
}

static int cmd_apply_specials(int argc, char **argv, berth_err_t *err) {
  if (argc != 1) return berth_make_error(err, EINVAL, "usage: apply-specials <root>  (records on stdin)");
  return bs_apply_specials(argv[0], stdin, err);
}

static int cmd_usage(int argc, char **argv, berth_err_t *err) {
  if (argc != 1) return berth_make_error(err, EINVAL, "usage: usage <dir>");
  return bs_usage(argv[0], stdout, err);
}

static int cmd_overlay_opaque(int argc, char **argv, berth_err_t *err) {
  return bs_overlay_opaque(argc, argv, stdout, err);
}

static int cmd_extract(int argc, char **argv, berth_err_t *err) {
  if (argc == 1 && strcmp(argv[0], "--probe") == 0) return bs_extract_probe(err);
  const char *usage = "usage: extract <root> [--input <tar>] [--overlay [--lower <dir>]...]  (else the tar on stdin)";
  if (argc < 1 || argv[0][0] == '-') return berth_make_error(err, EINVAL, "%s", usage);
  bool overlay = false;
  cleanup_free char **lowers = calloc((size_t)argc, sizeof *lowers);
  if (!lowers) return berth_make_error(err, ENOMEM, "out of memory");
  size_t nlowers = 0;
  const char *input = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--overlay") == 0) overlay = true;
    else if (strcmp(argv[i], "--input") == 0 && i + 1 < argc) input = argv[++i];
    else if (strcmp(argv[i], "--lower") == 0 && i + 1 < argc) lowers[nlowers++] = argv[++i];
    else return berth_make_error(err, EINVAL, "%s", usage);
  }
  if (nlowers > 0 && !overlay) return berth_make_error(err, EINVAL, "--lower needs --overlay");
  cleanup_close int in = input ? open(input, O_RDONLY | O_CLOEXEC) : -1;
  if (input && in < 0) return berth_make_error(err, errno, "open %s", input);
  return bs_extract(argv[0], overlay, lowers, nlowers, input ? in : STDIN_FILENO, stdout, err);
}

static int cmd_page_out(int argc, char **argv, berth_err_t *err) {
  if (argc != 1) return berth_make_error(err, EINVAL, "usage: page-out <pid>");
  return bs_page_out(argv[0], stdout, err);
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
    {"usage", cmd_usage},
    {"overlay-opaque", cmd_overlay_opaque},
    {"extract", cmd_extract},
    {"page-out", cmd_page_out},
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
    berth_err_t err = NULL;
    if (verbs[i].fn(argc - 2, argv + 2, &err) < 0) {
      int status = err ? err->status : 0;
      cleanup_free char *msg = status == EINVAL || status == EBADMSG ? strdup(err->msg) : berth_error_string(err);
      fprintf(stderr, "berth-storage: %s: %s (errno %d)\n", argv[1], msg ? msg : "out of memory", status);
      berth_error_release(&err);
      return status > 0 && status < 256 ? status : 1;
    }
    if (fflush(stdout) != 0) return errno ? errno : 1;
    return 0;
  }
  fprintf(stderr, "berth-storage: unknown verb %s\n", argv[1]);
  return 1;
}
