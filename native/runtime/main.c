/* berth-runtime: an OCI runtime. main owns argument parsing and logging; each verb is a thin function over
 * container.c. Global options come before the verb (runc/crun CLI):
 *   berth-runtime [--root DIR] [--log FILE] [--log-format text|json] <verb> [options] <id> */
#include "cleanup.h"
#include "container.h"
#include "util.h"
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BERTH_RUNTIME_VERSION "0.1.0"

struct verb {
  const char *name;
  int (*fn)(struct runtime_opts *ro, int argc, char **argv, berth_err_t *err);
  const char *usage;
};

/* Options: "--name value", "--name=value", boolean flags; anything else is positional. */
struct parsed {
  const char *bundle, *pid_file, *console_socket, *format;
  bool force, detach, all;
  const char *pos[4];
  int npos;
};

static int parse_args(int argc, char **argv, struct parsed *p, berth_err_t *err) {
  memset(p, 0, sizeof *p);
  p->bundle = ".";
  for (int i = 0; i < argc; i++) {
    char *a = argv[i];
    if (a[0] != '-' || !a[1]) {
      if (p->npos == 4) return berth_make_error(err, EINVAL, "too many arguments");
      p->pos[p->npos++] = a;
      continue;
    }
    while (*a == '-') a++;
    char *eq = strchr(a, '=');
    char name[64];
    snprintf(name, sizeof name, "%.*s", eq ? (int) (eq - a) : (int) strlen(a), a);
    const char **target = NULL;
    if (!strcmp(name, "bundle") || !strcmp(name, "b")) target = &p->bundle;
    else if (!strcmp(name, "pid-file")) target = &p->pid_file;
    else if (!strcmp(name, "console-socket")) target = &p->console_socket;
    else if (!strcmp(name, "format")) target = &p->format;
    else if (!strcmp(name, "force") || !strcmp(name, "f")) p->force = true;
    else if (!strcmp(name, "detach") || !strcmp(name, "d")) p->detach = true;
    else if (!strcmp(name, "all") || !strcmp(name, "a")) p->all = true;
    else if (!strcmp(name, "no-pivot") || !strcmp(name, "no-new-keyring") || !strcmp(name, "systemd-cgroup")) { /* accepted */
    } else if (!strcmp(name, "preserve-fds") || !strcmp(name, "keep")) {
      if (!eq) i++;
    } else return berth_make_error(err, EINVAL, "unknown option `%s`", argv[i]);
    if (target) {
      if (eq) *target = eq + 1;
      else if (i + 1 < argc) *target = argv[++i];
      else return berth_make_error(err, EINVAL, "option `%s` needs a value", argv[i]);
    }
  }
  return 0;
}

static int need_id(struct parsed *p, berth_err_t *err) {
  if (p->npos < 1) return berth_make_error(err, EINVAL, "a container id is required");
  return 0;
}

static int cmd_create(struct runtime_opts *ro, int argc, char **argv, berth_err_t *err) {
  struct parsed p;
  if (parse_args(argc, argv, &p, err) < 0 || need_id(&p, err) < 0) return -1;
  struct create_opts co = {.bundle = p.bundle, .pid_file = p.pid_file, .console_socket = p.console_socket};
  int code = 0;
  return container_create(ro, p.pos[0], &co, false, &code, err);
}

static int cmd_run(struct runtime_opts *ro, int argc, char **argv, berth_err_t *err) {
  struct parsed p;
  if (parse_args(argc, argv, &p, err) < 0 || need_id(&p, err) < 0) return -1;
  struct create_opts co = {.bundle = p.bundle, .pid_file = p.pid_file, .console_socket = p.console_socket, .detach = p.detach};
  int code = 0;
  if (container_create(ro, p.pos[0], &co, true, &code, err) < 0) return -1;
  return code;
}

static int cmd_start(struct runtime_opts *ro, int argc, char **argv, berth_err_t *err) {
  struct parsed p;
  if (parse_args(argc, argv, &p, err) < 0 || need_id(&p, err) < 0) return -1;
  return container_start(ro, p.pos[0], err);
}

static int cmd_state(struct runtime_opts *ro, int argc, char **argv, berth_err_t *err) {
  struct parsed p;
  if (parse_args(argc, argv, &p, err) < 0 || need_id(&p, err) < 0) return -1;
  cleanup_free char *json = NULL;
  if (container_state(ro, p.pos[0], &json, err) < 0) return -1;
  printf("%s\n", json);
  return 0;
}

static int cmd_kill(struct runtime_opts *ro, int argc, char **argv, berth_err_t *err) {
  struct parsed p;
  if (parse_args(argc, argv, &p, err) < 0 || need_id(&p, err) < 0) return -1;
  int sig = p.npos > 1 ? parse_signal(p.pos[1]) : SIGTERM;
  if (sig < 0) return berth_make_error(err, EINVAL, "unknown signal `%s`", p.pos[1]);
  return container_kill(ro, p.pos[0], sig, p.all, err);
}

static int cmd_delete(struct runtime_opts *ro, int argc, char **argv, berth_err_t *err) {
  struct parsed p;
  if (parse_args(argc, argv, &p, err) < 0 || need_id(&p, err) < 0) return -1;
  return container_delete(ro, p.pos[0], p.force, err);
}

/* exec's options stop at the id: what follows is the command, whatever its dashes */
static int cmd_exec(struct runtime_opts *ro, int argc, char **argv, berth_err_t *err) {
  struct exec_opts eo = {0};
  cleanup_free const char **env = xmalloc0((size_t) (argc + 1) * sizeof(char *));
  eo.env = env;
  const char *id = NULL;
  int i = 0;
  for (; i < argc && !id; i++) {
    char *a = argv[i];
    if (a[0] != '-' || !a[1]) {
      id = a;
      break;
    }
    while (*a == '-') a++;
    char *eq = strchr(a, '=');
    char name[64];
    snprintf(name, sizeof name, "%.*s", eq ? (int) (eq - a) : (int) strlen(a), a);
    if (!strcmp(name, "detach") || !strcmp(name, "d")) eo.detach = true;
    else if (!strcmp(name, "tty") || !strcmp(name, "t")) eo.tty = true;
    else if (!strcmp(name, "no-new-privs")) { /* accepted: the spec decides */
    } else {
      const char **target = NULL;
      if (!strcmp(name, "process") || !strcmp(name, "p")) target = &eo.process_file;
      else if (!strcmp(name, "pid-file")) target = &eo.pid_file;
      else if (!strcmp(name, "console-socket")) target = &eo.console_socket;
      else if (!strcmp(name, "cwd")) target = &eo.cwd;
      else if (!strcmp(name, "user") || !strcmp(name, "u")) target = &eo.user;
      else if (!strcmp(name, "env") || !strcmp(name, "e")) target = &env[eo.n_env++];
      else if (!strcmp(name, "preserve-fds") || !strcmp(name, "process-label") || !strcmp(name, "apparmor")) {
        if (!eq) i++;
        continue;
      } else return berth_make_error(err, EINVAL, "unknown exec option `%s`", argv[i]);
      if (eq) *target = eq + 1;
      else if (i + 1 < argc) *target = argv[++i];
      else return berth_make_error(err, EINVAL, "option `%s` needs a value", argv[i]);
    }
  }
  if (!id) return berth_make_error(err, EINVAL, "a container id is required");
  eo.args = argv + i + 1;
  eo.n_args = (size_t) (argc - i - 1);
  int code = 0;
  if (container_exec(ro, id, &eo, &code, err) < 0) return -1;
  return code;
}

static int cmd_pause(struct runtime_opts *ro, int argc, char **argv, berth_err_t *err) {
  struct parsed p;
  if (parse_args(argc, argv, &p, err) < 0 || need_id(&p, err) < 0) return -1;
  return container_pause(ro, p.pos[0], true, err);
}

static int cmd_resume(struct runtime_opts *ro, int argc, char **argv, berth_err_t *err) {
  struct parsed p;
  if (parse_args(argc, argv, &p, err) < 0 || need_id(&p, err) < 0) return -1;
  return container_pause(ro, p.pos[0], false, err);
}

static int cmd_ps(struct runtime_opts *ro, int argc, char **argv, berth_err_t *err) {
  struct parsed p;
  if (parse_args(argc, argv, &p, err) < 0 || need_id(&p, err) < 0) return -1;
  return container_ps(ro, p.pos[0], p.format && strcmp(p.format, "json") == 0, err);
}

static int cmd_list(struct runtime_opts *ro, int argc, char **argv, berth_err_t *err) { return container_list(ro, err); }

static const struct verb verbs[] = {
    {"create", cmd_create, "create <id> [--bundle dir] [--pid-file f] [--console-socket s]"},
    {"start", cmd_start, "start <id>"},
    {"state", cmd_state, "state <id>"},
    {"kill", cmd_kill, "kill [--all] <id> [signal]"},
    {"delete", cmd_delete, "delete [--force] <id>"},
    {"run", cmd_run, "run <id> [--bundle dir] [--pid-file f] [--console-socket s] [--detach]"},
    {"list", cmd_list, "list"},
    {"exec", cmd_exec, "exec [--process f] [--detach] [--pid-file f] [--cwd d] [--env K=V]... [--user uid[:gid]] [--tty --console-socket s] <id> [cmd args...]"},
    {"pause", cmd_pause, "pause <id>"},
    {"resume", cmd_resume, "resume <id>"},
    {"ps", cmd_ps, "ps [--format table|json] <id>"},
};

static void usage(FILE *f) {
  fprintf(f, "usage: berth-runtime [--root dir] [--log file] [--log-format text|json] <command> ...\ncommands:\n");
  for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) fprintf(f, "  %s\n", verbs[i].usage);
}

/* Where log lines go besides stderr: set once by main from --log / --log-format. */
static const struct runtime_opts *log_opts;

static void log_line(const char *level, const char *msg) {
  if (strcmp(level, "error") == 0) fprintf(stderr, "berth-runtime: %s\n", msg);
  else fprintf(stderr, "berth-runtime: %s: %s\n", level, msg);
  if (!log_opts || !log_opts->log_file) return;
  cleanup_close int fd = open(log_opts->log_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return;
  berth_buf b = {0};
  if (log_opts->log_json) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char t[64];
    strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%SZ", &tm);
    berth_buf_printf(&b, "{\"level\":\"%s\",\"msg\":", level);
    berth_buf_json_string(&b, msg);
    berth_buf_printf(&b, ",\"time\":\"%s\"}\n", t);
  } else {
    berth_buf_printf(&b, "%s: %s\n", level, msg);
  }
  berth_write_all(fd, b.buf, b.len);
  free(b.buf);
}

void runtime_warn(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  cleanup_free char *msg = NULL;
  if (vasprintf(&msg, fmt, ap) < 0) msg = NULL;
  va_end(ap);
  log_line("warning", msg ? msg : fmt);
}

void runtime_warn_error(berth_err_t *err) {
  cleanup_free char *msg = berth_error_string(*err);
  log_line("warning", msg);
  berth_error_release(err);
}

int main(int argc, char **argv) {
  struct runtime_opts ro = {.root = "/run/berth-runtime"};
  log_opts = &ro;
  int i = 1;
  for (; i < argc && argv[i][0] == '-'; i++) {
    const char *a = argv[i];
    const char *val = NULL;
    const char *eq = strchr(a, '=');
    size_t n = eq ? (size_t) (eq - a) : strlen(a);
#define IS(opt) (n == strlen(opt) && strncmp(a, opt, n) == 0)
    if (IS("--version") || IS("-v")) {
      printf("berth-runtime version %s\nspec: 1.0.2\n", BERTH_RUNTIME_VERSION);
      return 0;
    }
    if (IS("--help") || IS("-h")) {
      usage(stdout);
      return 0;
    }
    if (IS("--debug") || IS("--systemd-cgroup")) continue;
    if (IS("--root") || IS("--log") || IS("--log-format") || IS("--criu") || IS("--rootless")) {
      val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
      if (!val) {
        fprintf(stderr, "berth-runtime: option `%s` needs a value\n", a);
        return 2;
      }
      if (IS("--root")) ro.root = val;
      else if (IS("--log")) ro.log_file = val;
      else if (IS("--log-format")) ro.log_json = strcmp(val, "json") == 0;
      continue;
    }
#undef IS
    fprintf(stderr, "berth-runtime: unknown global option `%s`\n", a);
    return 2;
  }
  if (i >= argc) {
    usage(stderr);
    return 2;
  }
  for (size_t v = 0; v < sizeof verbs / sizeof verbs[0]; v++) {
    if (strcmp(argv[i], verbs[v].name) != 0) continue;
    berth_err_t err = NULL;
    int r = verbs[v].fn(&ro, argc - i - 1, argv + i + 1, &err);
    if (r < 0) {
      cleanup_free char *msg = berth_error_string(err);
      log_line("error", msg);
      berth_error_release(&err);
      return 1;
    }
    fflush(stdout);
    return r;
  }
  fprintf(stderr, "berth-runtime: unknown command `%s`\n", argv[i]);
  usage(stderr);
  return 2;
}
