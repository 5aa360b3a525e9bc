/* The processes that become the container.
 *
 *   create (parent) ──fork──▶ stage 1: joins namespaces by path, creates the user namespace (the parent
 *                              writes its id maps), unshares the rest, forks ──▶ init (pid 1 of a new pid
 *                              namespace) and exits.
 *   init: runs createContainer hooks, builds the rootfs, pivots, sets hostname/sysctl/limits, tells the
 *         parent it is created, then blocks on exec.fifo until `start`; then drops to the process user,
 *         capabilities and seccomp and execs process.args.
 * The parent is a child subreaper, so init is reparented to it when stage 1 exits. */
#include "cleanup.h"
#include "container.h"
#include "util.h"
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

extern char **environ;

int sync_send(int fd, int type, int value, const char *text) {
  struct sync_msg m = {.type = type, .value = value};
  size_t n = offsetof(struct sync_msg, text);
  if (text) {
    snprintf(m.text, sizeof m.text, "%s", text);
    n += strlen(m.text) + 1;
  }
  return send(fd, &m, n, MSG_NOSIGNAL) < 0 ? -1 : 0;
}

int sync_recv(int fd, struct sync_msg *m, berth_err_t *err) {
  memset(m, 0, sizeof *m);
  ssize_t r;
  do r = recv(fd, m, sizeof *m - 1, 0);
  while (r < 0 && errno == EINTR);
  if (r < 0) return berth_make_error(err, errno, "sync socket");
  if (r == 0) return berth_make_error(err, 0, "the container process exited during setup");
  return 0;
}

static void fail_and_exit(struct init_ctx *ctx, berth_err_t *err) __attribute__((noreturn));
static void fail_and_exit(struct init_ctx *ctx, berth_err_t *err) {
  cleanup_free char *msg = berth_error_string(*err);
  if (sync_send(ctx->sync_fd, SYNC_ERROR, 0, msg) < 0) fprintf(stderr, "berth-runtime: %s\n", msg);
  _exit(1);
}

static void init_process(struct init_ctx *ctx) __attribute__((noreturn));

static int join_namespaces(struct init_ctx *ctx, bool user, berth_err_t *err) {
  struct container_spec *s = ctx->spec;
  for (size_t i = 0; i < s->n_namespaces; i++) {
    struct spec_namespace *ns = &s->namespaces[i];
    if (!ns->path || (ns->flag == CLONE_NEWUSER) != user) continue;
    cleanup_close int fd = open(ns->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return berth_make_error(err, errno, "open namespace `%s`", ns->path);
    if (setns(fd, ns->flag) < 0) return berth_make_error(err, errno, "setns `%s`", ns->path);
  }
  return 0;
}

void linux_stage1(struct init_ctx *ctx) {
  berth_err_t err = NULL;
  struct container_spec *s = ctx->spec;
  struct sync_msg m;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (sync_recv(ctx->sync_fd, &m, &err) < 0 || m.type != SYNC_GO) _exit(1);
  /* user namespace first (joined or new), then the other joins, then the new ones */
  if (join_namespaces(ctx, true, &err) < 0) fail_and_exit(ctx, &err);
  const struct spec_namespace *userns = spec_namespace(s, CLONE_NEWUSER);
  /* other paths are joined before a new user namespace: joining needs the host's capabilities */
  if (join_namespaces(ctx, false, &err) < 0) fail_and_exit(ctx, &err);
  if (userns && !userns->path) {
    if (unshare(CLONE_NEWUSER) < 0) {
      berth_make_error(&err, errno, "unshare user namespace");
      fail_and_exit(ctx, &err);
    }
    if (sync_send(ctx->sync_fd, SYNC_USERMAP, 0, NULL) < 0 || sync_recv(ctx->sync_fd, &m, &err) < 0 || m.type != SYNC_USERMAP_ACK) _exit(1);
  }
  if (userns) {
    if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0) {
      berth_make_error(&err, errno, "become root in the user namespace");
      fail_and_exit(ctx, &err);
    }
  }
  int flags = 0;
  for (size_t i = 0; i < s->n_namespaces; i++)
    if (!s->namespaces[i].path && s->namespaces[i].flag != CLONE_NEWUSER) flags |= s->namespaces[i].flag;
  if (flags && unshare(flags) < 0) {
    berth_make_error(&err, errno, "unshare namespaces (flags %#x)", flags);
    fail_and_exit(ctx, &err);
  }
  pid_t pid = fork();
  if (pid < 0) {
    berth_make_error(&err, errno, "fork init");
    fail_and_exit(ctx, &err);
  }
  if (pid == 0) init_process(ctx);
  sync_send(ctx->sync_fd, SYNC_PID, pid, NULL);
  _exit(0);
}

/* Find args[0] the way execvp will, with the container's PATH, to fail at create time like runc. */
int lookup_executable(const char *file, char **env, char **out, berth_err_t *err) {
  if (strchr(file, '/')) {
    if (access(file, X_OK) < 0) return berth_make_error(err, errno, "exec `%s`", file);
    *out = xstrdup(file);
    return 0;
  }
  const char *path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (char **e = env; *e; e++)
    if (strncmp(*e, "PATH=", 5) == 0) path = *e + 5;
  cleanup_free char *copy = xstrdup(path);
  char *save = NULL;
  for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
    cleanup_free char *candidate = xasprintf("%s/%s", *dir ? dir : ".", file);
    struct stat st;
    if (stat(candidate, &st) == 0 && S_ISREG(st.st_mode) && access(candidate, X_OK) == 0) {
      *out = steal_pointer(&candidate);
      return 0;
    }
  }
  return berth_make_error(err, ENOENT, "exec `%s`: executable file not found in $PATH", file);
}

/* Like runc: when process.env has no HOME, take it from the container's /etc/passwd (default "/"). */
void ensure_home(struct container_spec *s) {
  for (char **e = s->env; *e; e++)
    if (strncmp(*e, "HOME=", 5) == 0) return;
  const char *home = "/";
  cleanup_free char *text = NULL;
  berth_err_t e = NULL;
  char *found = NULL;
  if (berth_read_file("/etc/passwd", &text, NULL, &e) == 0) {
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
      char *f[7] = {0};
      int n = 0;
      for (char *p = line; n < 7; n++) {
        f[n] = p;
        p = strchr(p, ':');
        if (!p) break;
        *p++ = 0;
      }
      if (n >= 5 && f[2] && f[5] && (uid_t) strtoul(f[2], NULL, 10) == s->uid) {
        found = f[5];
        break;
      }
    }
  }
  berth_error_release(&e);
  if (found && *found) home = found;
  size_t n = 0;
  while (s->env[n]) n++;
  char **env = xmalloc0((n + 2) * sizeof(char *));
  memcpy(env, s->env, n * sizeof(char *));
  env[n] = xasprintf("HOME=%s", home); /* lives until exec */
  free(s->env);
  s->env = env;
}

int set_rlimits(struct container_spec *s, berth_err_t *err) {
  for (size_t i = 0; i < s->n_rlimits; i++) {
    struct rlimit rl = {.rlim_cur = s->rlimits[i].soft, .rlim_max = s->rlimits[i].hard};
    if (setrlimit(s->rlimits[i].resource, &rl) < 0) return berth_make_error(err, errno, "setrlimit %d", s->rlimits[i].resource);
  }
  return 0;
}

static int write_sysctls(struct container_spec *s, berth_err_t *err) {
  for (size_t i = 0; i < s->n_sysctls; i++) {
    cleanup_free char *path = xasprintf("/proc/sys/%s", s->sysctls[i].key);
    for (char *p = path + 10; *p; p++)
      if (*p == '.') *p = '/';
    if (berth_write_file(path, s->sysctls[i].value, strlen(s->sysctls[i].value), err) < 0) return berth_error_prepend(err, "sysctl `%s`", s->sysctls[i].key);
  }
  return 0;
}

static int run_container_hooks(struct init_ctx *ctx, int kind, const char *status, berth_err_t *err) {
  if (!ctx->spec->n_hooks[kind]) return 0;
  cleanup_free char *state = state_json_build(ctx->id, status, ctx->host_pid, ctx->spec->bundle, ctx->spec->annotations, -1);
  return hooks_run(ctx->spec->hooks[kind], ctx->spec->n_hooks[kind], hook_kind_names[kind], state, err);
}

static void init_process(struct init_ctx *ctx) {
  berth_err_t err = NULL;
  struct container_spec *s = ctx->spec;
  struct sync_msg m;
  prctl(PR_SET_PDEATHSIG, 0);
  if (setsid() < 0 && errno != EPERM) {
    berth_make_error(&err, errno, "setsid");
    fail_and_exit(ctx, &err);
  }
  /* the parent runs prestart/createRuntime hooks now and tells us our host pid (for our own hooks'
   * state); without hooks that round trip is skipped */
  if (ctx->hooks_sync) {
    if (sync_send(ctx->sync_fd, SYNC_HOOKS, 0, NULL) < 0 || sync_recv(ctx->sync_fd, &m, &err) < 0) _exit(1);
    if (m.type != SYNC_HOOKS_ACK) _exit(1);
    ctx->host_pid = m.value;
  }
  if (s->has_oom_score_adj) {
    char buf[16];
    snprintf(buf, sizeof buf, "%d", s->oom_score_adj);
    if (berth_write_file("/proc/self/oom_score_adj", buf, strlen(buf), &err) < 0) fail_and_exit(ctx, &err);
  }
  if (set_rlimits(s, &err) < 0) fail_and_exit(ctx, &err);
  if (rootfs_prepare(ctx, &err) < 0) fail_and_exit(ctx, &err);
  if (run_container_hooks(ctx, HOOK_CREATE_CONTAINER, "created", &err) < 0) fail_and_exit(ctx, &err);
  if (rootfs_pivot(ctx, &err) < 0) fail_and_exit(ctx, &err);
  if (s->terminal) {
    if (ctx->console_fd < 0) {
      berth_make_error(&err, 0, "process.terminal is set: --console-socket is required");
      fail_and_exit(ctx, &err);
    }
    if (terminal_setup(ctx->console_fd, true, &err) < 0) fail_and_exit(ctx, &err);
    close(ctx->console_fd);
  }
  if (s->hostname && *s->hostname && sethostname(s->hostname, strlen(s->hostname)) < 0) {
    berth_make_error(&err, errno, "sethostname `%s`", s->hostname);
    fail_and_exit(ctx, &err);
  }
  if (s->domainname && *s->domainname && setdomainname(s->domainname, strlen(s->domainname)) < 0) {
    berth_make_error(&err, errno, "setdomainname `%s`", s->domainname);
    fail_and_exit(ctx, &err);
  }
  if (write_sysctls(s, &err) < 0) fail_and_exit(ctx, &err);
  if (rootfs_finalize(ctx, &err) < 0) fail_and_exit(ctx, &err);
  ensure_home(s);
  cleanup_free char *exe = NULL;
  if (lookup_executable(s->args[0], s->env, &exe, &err) < 0) fail_and_exit(ctx, &err);
  if (s->has_umask) umask(s->umask);
  else umask(022);
  /* created: tell the parent, then wait for `start` */
  if (sync_send(ctx->sync_fd, SYNC_READY, 0, NULL) < 0) _exit(1);
  close(ctx->sync_fd);
  char byte;
  ssize_t r;
  do r = read(ctx->fifo_fd, &byte, 1);
  while (r < 0 && errno == EINTR);
  if (r != 1) _exit(1);
  close(ctx->fifo_fd);
  if (run_container_hooks(ctx, HOOK_START_CONTAINER, "running", &err) < 0) goto fatal;
  bool cwd_done = chdir(s->cwd) == 0;
  if (s->no_new_privileges && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
    berth_make_error(&err, errno, "prctl(PR_SET_NO_NEW_PRIVS)");
    goto fatal;
  }
  if (!s->no_new_privileges && ctx->seccomp.len && seccomp_load(&ctx->seccomp, &err) < 0) goto fatal;
  if (s->capabilities && caps_drop_bounding(s->capabilities, ctx->cap_last_cap, &err) < 0) goto fatal;
  if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) {
    berth_make_error(&err, errno, "prctl(PR_SET_KEEPCAPS)");
    goto fatal;
  }
  if (setgroups(s->n_additional_gids, s->additional_gids) < 0 && !(errno == EPERM && s->n_additional_gids == 0)) {
    berth_make_error(&err, errno, "setgroups");
    goto fatal;
  }
  if (setresgid(s->gid, s->gid, s->gid) < 0) {
    berth_make_error(&err, errno, "setresgid %u", s->gid);
    goto fatal;
  }
  if (setresuid(s->uid, s->uid, s->uid) < 0) {
    berth_make_error(&err, errno, "setresuid %u", s->uid);
    goto fatal;
  }
  prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
  if (!cwd_done && chdir(s->cwd) < 0) {
    berth_make_error(&err, errno, "chdir `%s`", s->cwd);
    goto fatal;
  }
  if (s->capabilities && caps_apply(s->capabilities, ctx->cap_last_cap, &err) < 0) goto fatal;
  if (s->no_new_privileges && ctx->seccomp.len && seccomp_load(&ctx->seccomp, &err) < 0) goto fatal;
  syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
  berth_reset_signals();
  environ = s->env;
  execv(exe, s->args);
  berth_make_error(&err, errno, "exec `%s`", s->args[0]);
fatal: {
  cleanup_free char *msg = berth_error_string(err);
  fprintf(stderr, "berth-runtime: %s\n", msg);
  _exit(127);
}
}
