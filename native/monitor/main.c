/* berth-monitor: one per container, the container's parent for its whole life (conmon's job, small).
 *
 *   berth-monitor --runtime <bin> --id <id> --bundle <dir> --dir <container dir>
 *                 [--runtime-root <dir>] [--runtime-arg <global flag>]… [--cgroup-path /berth/<id>]
 *                 [--log-max-size bytes]
 *                 [--log-max-files n] [--sync-fd n] [--exit-command <argv0> [args…]]   (must come last)
 *
 * Lifecycle:
 *   1. forks once and the parent exits: the monitor is reparented to init and, in its own session
 *      (setsid), no longer depends on whoever started it — berth can be SIGKILLed or upgraded.
 *   2. becomes a child subreaper, makes two pipes, runs `<runtime> create` with them as the container's
 *      stdout/stderr, then `<runtime> start`. The container's init is reparented to the monitor when the
 *      runtime's create process exits, so the monitor reaps it and gets its real exit status.
 *   3. reports {"ok":true,"pid":N} (or the failure) on --sync-fd (berth passes 1, its stdout pipe) and
 *      then points that fd at /dev/null: berth reads until EOF, so it waits exactly until this line.
 *   4. copies stdout/stderr into <dir>/log.json (see log.c), until the container exits and the pipes close.
 *   5. writes <dir>/exit.json atomically: {"exitCode","signal","oomKilled","pid","finishedAt"}, runs
 *      `<runtime> delete <id>` (frees the cgroup even while berth is down), then execs --exit-command if
 *      given (used for `run --rm -d`), else exits.
 * Files in <dir>: monitor.pid, pidfile (container init, written by the runtime), log.json*, exit.json,
 * runtime.log (the runtime's --log), monitor.log (the monitor's own errors).
 */
#include "cleanup.h"
#include "log.h"
#include "spawn.h"
#include "util.h"
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FLUSH_INTERVAL_MS 250
#define MAX_EXIT_ARGS 32
#define MAX_RUNTIME_ARGS 8

typedef struct options {
  const char *runtime;
  const char *runtime_root;
  const char *id;
  const char *bundle;
  const char *dir;
  const char *cgroup_path;
  off_t log_max_size;
  int log_max_files;
  int sync_fd;
  char *exit_command[MAX_EXIT_ARGS + 1];
  char *runtime_args[MAX_RUNTIME_ARGS]; /* extra global flags, e.g. "--log-format" "json" for runc */
  int n_runtime_args;
} options;

static int parse_args(int argc, char **argv, options *o, berth_err_t *err) {
  memset(o, 0, sizeof *o);
  o->log_max_size = 10 * 1024 * 1024;
  o->log_max_files = 3;
  o->sync_fd = -1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--exit-command") == 0) {
      int n = 0;
      for (i++; i < argc && n < MAX_EXIT_ARGS; i++) o->exit_command[n++] = argv[i];
      if (n == 0) return berth_make_error(err, 0, "--exit-command needs a program");
      break;
    }
    if (i + 1 >= argc) return berth_make_error(err, 0, "option %s needs a value", a);
    const char *v = argv[++i];
    if (strcmp(a, "--runtime") == 0) o->runtime = v;
    else if (strcmp(a, "--runtime-root") == 0) o->runtime_root = v;
    else if (strcmp(a, "--id") == 0) o->id = v;
    else if (strcmp(a, "--bundle") == 0) o->bundle = v;
    else if (strcmp(a, "--dir") == 0) o->dir = v;
    else if (strcmp(a, "--runtime-arg") == 0) {
      if (o->n_runtime_args >= MAX_RUNTIME_ARGS) return berth_make_error(err, 0, "too many --runtime-arg");
      o->runtime_args[o->n_runtime_args++] = (char *) v;
    } else if (strcmp(a, "--cgroup-path") == 0) o->cgroup_path = v;
    else if (strcmp(a, "--log-max-size") == 0) o->log_max_size = strtoll(v, NULL, 10);
    else if (strcmp(a, "--log-max-files") == 0) o->log_max_files = atoi(v);
    else if (strcmp(a, "--sync-fd") == 0) o->sync_fd = atoi(v);
    else return berth_make_error(err, 0, "unknown option %s", a);
  }
  if (!o->runtime || !o->id || !o->bundle || !o->dir) return berth_make_error(err, 0, "--runtime, --id, --bundle and --dir are required");
  if (!berth_valid_id(o->id)) return berth_make_error(err, 0, "invalid container id %s", o->id);
  if (o->runtime[0] != '/' || o->bundle[0] != '/' || o->dir[0] != '/') return berth_make_error(err, 0, "--runtime, --bundle and --dir must be absolute paths");
  if (o->log_max_files < 1 || o->log_max_size < 0) return berth_make_error(err, 0, "bad log limits");
  return 0;
}

static void report(options *o, const char *json) {
  if (o->sync_fd < 0) return;
  (void) berth_write_all(o->sync_fd, json, strlen(json));
  /* Point the descriptor at /dev/null rather than closing it: it may be fd 1 (berth reads our stdout). */
  int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (null >= 0) {
    dup2(null, o->sync_fd);
    close(null);
  } else {
    close(o->sync_fd);
  }
  o->sync_fd = -1;
}

/* argv for `<runtime> [--root r] --log <dir>/runtime.log [runtime args…] <verb> …` (argv has room for 32). */
static int runtime_argv(options *o, char **argv, char *logpath, size_t logcap, const char *verb) {
  int n = 0;
  snprintf(logpath, logcap, "%s/runtime.log", o->dir);
  argv[n++] = (char *) o->runtime;
  if (o->runtime_root) {
    argv[n++] = "--root";
    argv[n++] = (char *) o->runtime_root;
  }
  argv[n++] = "--log";
  argv[n++] = logpath;
  for (int i = 0; i < o->n_runtime_args; i++) argv[n++] = o->runtime_args[i];
  argv[n++] = (char *) verb;
  return n;
}

static int create_container(options *o, int out_w, int err_w, pid_t *pid, berth_err_t *err) {
  char *argv[32], logpath[4200], pidfile[4200];
  int n = runtime_argv(o, argv, logpath, sizeof logpath, "create");
  snprintf(pidfile, sizeof pidfile, "%s/pidfile", o->dir);
  argv[n++] = "--bundle";
  argv[n++] = (char *) o->bundle;
  argv[n++] = "--pid-file";
  argv[n++] = pidfile;
  argv[n++] = (char *) o->id;
  argv[n] = NULL;
  pid_t child = spawn_process(argv, -1, out_w, err_w, err);
  int status;
  if (child < 0 || wait_for(child, &status, err) < 0) return -1;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return berth_make_error(err, 0, "%s create %s failed (status %d); see %s", o->runtime, o->id, status, logpath);
  cleanup_free char *text = NULL;
  if (berth_read_file(pidfile, &text, NULL, err) < 0) return -1;
  *pid = (pid_t) atoi(text);
  if (*pid <= 0) return berth_make_error(err, 0, "bad pid file %s", pidfile);
  return 0;
}

static int start_container(options *o, berth_err_t *err) {
  char *argv[32], logpath[4200];
  int n = runtime_argv(o, argv, logpath, sizeof logpath, "start");
  argv[n++] = (char *) o->id;
  argv[n] = NULL;
  pid_t child = spawn_process(argv, -1, -1, -1, err);
  int status;
  if (child < 0 || wait_for(child, &status, err) < 0) return -1;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return berth_make_error(err, 0, "%s start %s failed (status %d); see %s", o->runtime, o->id, status, logpath);
  return 0;
}

/* OOM kills counted by the container's memory cgroup (v1 memory.oom_control, v2 memory.events). */
static int oom_killed(options *o) {
  if (!o->cgroup_path) return 0;
  for (int i = 0; i < 2; i++) {
    cleanup_free char *path = i == 0 ? xasprintf("/sys/fs/cgroup/memory%s/memory.oom_control", o->cgroup_path)
                                     : xasprintf("/sys/fs/cgroup%s/memory.events", o->cgroup_path);
    cleanup_free char *text = NULL;
    berth_err_t ignored = NULL;
    if (berth_read_file(path, &text, NULL, &ignored) < 0) {
      berth_error_release(&ignored);
      continue;
    }
    const char *p = strstr(text, "oom_kill ");
    if (p && atol(p + 9) > 0) return 1;
  }
  return 0;
}

/* err's text on stderr (monitor.log once detached) */
static void log_err(berth_err_t *err) {
  cleanup_free char *msg = berth_error_string(*err);
  dprintf(2, "berth-monitor: %s\n", msg);
  berth_error_release(err);
}

static void write_exit_file(options *o, pid_t pid, int status) {
  char json[1024], ts[48];
  format_now(ts, sizeof ts);
  int code = -1, sig = 0;
  if (WIFEXITED(status)) {
    code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    sig = WTERMSIG(status);
    code = 128 + sig;
  }
  int len = snprintf(json, sizeof json, "{\"exitCode\":%d,\"signal\":%d,\"oomKilled\":%s,\"pid\":%d,\"finishedAt\":\"%s\",\"error\":null}\n", code, sig,
                     oom_killed(o) ? "true" : "false", (int) pid, ts);
  cleanup_free char *path = xasprintf("%s/exit.json", o->dir);
  berth_err_t err = NULL;
  if (berth_write_file_atomic(path, json, (size_t) len, &err) < 0) log_err(&err);
}

/* After exit.json: `<runtime> delete <id>`, so the cgroup and runtime state do not linger while berth is
 * away. Best effort: berth's reconcile deletes again (NotFound ignored). */
static void delete_container(options *o) {
  char *argv[32], logpath[4200];
  berth_err_t err = NULL;
  int n = runtime_argv(o, argv, logpath, sizeof logpath, "delete");
  argv[n++] = (char *) o->id;
  argv[n] = NULL;
  pid_t child = spawn_process(argv, -1, -1, -1, &err);
  int status;
  if (child < 0 || wait_for(child, &status, &err) < 0) log_err(&err);
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Copy the pipes into the log until the container has exited and both pipes are at EOF. */
static int monitor_loop(options *o, pid_t cpid, int out_r, int err_r, int *cstatus, berth_err_t *err) {
  static log_writer w;
  static log_stream streams[2] = {{.name = "stdout"}, {.name = "stderr"}};
  if (log_open(&w, o->dir, o->log_max_size, o->log_max_files, err) < 0) return -1;
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  cleanup_close int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) return berth_make_error(err, errno, "signalfd");
  struct pollfd pfd[3] = {{.fd = out_r, .events = POLLIN}, {.fd = err_r, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
  int exited = 0;
  long long last_flush = now_ms(), exit_deadline = 0;
  char buf[8192];
  for (;;) {
    /* Reap first: a container that exited before we got here must not be missed. */
    for (;;) {
      int st;
      pid_t r = waitpid(-1, &st, WNOHANG);
      if (r <= 0) break;
      if (r == cpid) {
        *cstatus = st;
        exited = 1;
        exit_deadline = now_ms() + 2000;
      }
    }
    if (exited && pfd[0].fd < 0 && pfd[1].fd < 0) break;
    if (exited && now_ms() > exit_deadline) break; /* a leaked fd holder outside the pid namespace: stop waiting for EOF */
    int r = poll(pfd, 3, FLUSH_INTERVAL_MS);
    if (r < 0 && errno != EINTR) return berth_make_error(err, errno, "poll");
    if (pfd[2].revents & POLLIN) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) > 0) {
      }
    }
    for (int i = 0; i < 2; i++) {
      if (pfd[i].fd < 0 || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = read(pfd[i].fd, buf, sizeof buf);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      berth_err_t e = NULL;
      if (n <= 0) {
        if (log_finish_stream(&w, &streams[i], &e) < 0) log_err(&e);
        close(pfd[i].fd);
        pfd[i].fd = -1;
        continue;
      }
      if (log_feed(&w, &streams[i], buf, (size_t) n, &e) < 0) log_err(&e);
    }
    if (now_ms() - last_flush >= FLUSH_INTERVAL_MS) {
      berth_err_t e = NULL;
      if (log_flush(&w, &e) < 0) log_err(&e);
      last_flush = now_ms();
    }
  }
  for (int i = 0; i < 2; i++) {
    berth_err_t e = NULL;
    if (log_finish_stream(&w, &streams[i], &e) < 0) log_err(&e);
  }
  berth_err_t e = NULL;
  if (log_sync(&w, &e) < 0) log_err(&e);
  close(w.fd);
  return 0;
}

static int detach(options *o, berth_err_t *err) {
  pid_t pid = fork();
  if (pid < 0) return berth_make_error(err, errno, "fork");
  if (pid > 0) _exit(0);
  if (setsid() < 0 && errno != EPERM) return berth_make_error(err, errno, "setsid");
  cleanup_free char *path = xasprintf("%s/monitor.log", o->dir);
  cleanup_close int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  cleanup_close int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (fd < 0 || null < 0) return berth_make_error(err, errno, "open %s", path);
  dup2(null, 0);
  if (o->sync_fd != 1) dup2(null, 1);
  dup2(fd, 2);
  return 0;
}

/* The failure on stderr and, as {"ok":false,"error":…}, on the sync fd. */
static int fail(options *o, berth_err_t *err) {
  cleanup_free char *msg = berth_error_string(*err);
  berth_error_release(err);
  dprintf(2, "berth-monitor: %s\n", msg);
  berth_buf b = {0};
  berth_buf_puts(&b, "{\"ok\":false,\"error\":");
  berth_buf_json_string(&b, msg);
  berth_buf_puts(&b, "}\n");
  report(o, b.buf);
  free(b.buf);
  return 1;
}

int main(int argc, char **argv) {
  options o;
  berth_err_t err = NULL;
  if (parse_args(argc, argv, &o, &err) < 0) {
    cleanup_free char *msg = berth_error_string(err);
    fprintf(stderr, "berth-monitor: %s\n", msg);
    berth_error_release(&err);
    return 2;
  }
  if (o.sync_fd >= 0) fcntl(o.sync_fd, F_SETFD, FD_CLOEXEC);
  if (chdir(o.dir) < 0) {
    fprintf(stderr, "berth-monitor: chdir %s: %s\n", o.dir, strerror(errno));
    return 1;
  }
  if (getenv("BERTH_MONITOR_FOREGROUND") == NULL && detach(&o, &err) < 0) {
    cleanup_free char *msg = berth_error_string(err);
    fprintf(stderr, "berth-monitor: %s\n", msg);
    berth_error_release(&err);
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  signal(SIGTERM, SIG_IGN);
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) dprintf(2, "berth-monitor: PR_SET_CHILD_SUBREAPER: %s\n", strerror(errno));

  char pidbuf[32];
  int len = snprintf(pidbuf, sizeof pidbuf, "%d\n", (int) getpid());
  cleanup_free char *pidpath = xasprintf("%s/monitor.pid", o.dir);
  if (berth_write_file_atomic(pidpath, pidbuf, (size_t) len, &err) < 0) return fail(&o, &err);

  int out[2], errp[2];
  if (pipe2(out, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
    berth_make_error(&err, errno, "pipe");
    return fail(&o, &err);
  }
  pid_t cpid = 0;
  int rc = create_container(&o, out[1], errp[1], &cpid, &err);
  close(out[1]);
  close(errp[1]);
  if (rc < 0) return fail(&o, &err);
  if (start_container(&o, &err) < 0) {
    /* Leave nothing running: kill what create made; berth deletes it. */
    kill(cpid, SIGKILL);
    return fail(&o, &err);
  }
  char ok[64];
  snprintf(ok, sizeof ok, "{\"ok\":true,\"pid\":%d}\n", (int) cpid);
  report(&o, ok);

  int cstatus = 0;
  if (monitor_loop(&o, cpid, out[0], errp[0], &cstatus, &err) < 0) {
    log_err(&err);
    /* still record what we know: wait for the container so the exit file is true */
    if (wait_for(cpid, &cstatus, &err) < 0) log_err(&err);
  }
  write_exit_file(&o, cpid, cstatus);
  delete_container(&o);
  if (o.exit_command[0]) {
    execv(o.exit_command[0], o.exit_command);
    dprintf(2, "berth-monitor: exec %s: %s\n", o.exit_command[0], strerror(errno));
    return 1;
  }
  return 0;
}
