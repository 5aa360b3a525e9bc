/* exec, pause/resume, ps: work on a running container from outside.
 *
 * exec (runc's): the process spec is the container's config.json `process` (or --process FILE), with
 * args/cwd/env/user/tty overridden from the command line. The exec process joins the container's cgroup
 * (written by the parent before it touches any namespace, so everything it forks stays accounted), then
 * every namespace of the container's init that differs from ours (read from /proc/<pid>/ns, user first),
 * forks so its child is in the container's pid namespace, and that child applies the process spec the way
 * the init does (rlimits, cwd, no_new_privs, bounding set, ids, capabilities, seccomp last) and execs.
 * We are a subreaper, so the exec'd process becomes our child when the intermediate one exits: we wait
 * for it and return its exit code, or with --detach return once it has exec'd. */
#include "cleanup.h"
#include "container.h"
#include "status.h"
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

extern char **environ;

/* user first: joining the others needs the capabilities it gives */
static const struct {
  const char *name;
  int flag;
} ns_kinds[] = {
    {"user", CLONE_NEWUSER}, {"ipc", CLONE_NEWIPC}, {"uts", CLONE_NEWUTS}, {"net", CLONE_NEWNET},
    {"pid", CLONE_NEWPID},   {"cgroup", CLONE_NEWCGROUP}, {"mnt", CLONE_NEWNS},
};
#define N_NS (sizeof ns_kinds / sizeof ns_kinds[0])
#define NS_MNT (N_NS - 1) /* "mnt" comes last in ns_kinds */

struct exec_ctx {
  struct container_spec *spec;
  int ns_fd[N_NS]; /* -1: same as ours, not joined */
  int root_fd;     /* the init's root when it shares our mount namespace (a chroot), else -1 */
  int sync_fd;
  int console_fd;
  int cap_last_cap;
  struct sock_fprog seccomp;
};

/* Open the namespaces of pid that are not already ours. */
static int open_namespaces(pid_t pid, int *fds, berth_err_t *err) {
  for (size_t i = 0; i < N_NS; i++) {
    fds[i] = -1;
    char theirs[64], ours[64];
    snprintf(theirs, sizeof theirs, "/proc/%d/ns/%s", pid, ns_kinds[i].name);
    snprintf(ours, sizeof ours, "/proc/self/ns/%s", ns_kinds[i].name);
    struct stat a, b;
    if (stat(theirs, &a) < 0) {
      if (errno == ENOENT) continue; /* kernel without this namespace kind */
      return berth_make_error(err, errno, "stat `%s`", theirs);
    }
    if (stat(ours, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev) continue;
    fds[i] = open(theirs, O_RDONLY | O_CLOEXEC);
    if (fds[i] < 0) return berth_make_error(err, errno, "open `%s`", theirs);
  }
  return 0;
}

static void exec_fail(struct exec_ctx *x, berth_err_t *err) __attribute__((noreturn));
static void exec_fail(struct exec_ctx *x, berth_err_t *err) {
  cleanup_free char *msg = berth_error_string(*err);
  if (sync_send(x->sync_fd, SYNC_ERROR, 0, msg) < 0) fprintf(stderr, "berth-runtime: %s\n", msg);
  _exit(127);
}

/* In the container's namespaces and pid namespace: become the process the spec describes. */
static void exec_process(struct exec_ctx *x) __attribute__((noreturn));
static void exec_process(struct exec_ctx *x) {
  berth_err_t err = NULL;
  struct container_spec *s = x->spec;
  prctl(PR_SET_PDEATHSIG, 0);
  if (s->terminal) {
    if (setsid() < 0) {
      berth_make_error(&err, errno, "setsid");
      exec_fail(x, &err);
    }
    if (terminal_setup(x->console_fd, false, &err) < 0) exec_fail(x, &err);
    close(x->console_fd);
  }
  if (s->has_oom_score_adj) {
    char buf[16];
    snprintf(buf, sizeof buf, "%d", s->oom_score_adj);
    if (berth_write_file("/proc/self/oom_score_adj", buf, strlen(buf), &err) < 0) exec_fail(x, &err);
  }
  if (set_rlimits(s, &err) < 0) exec_fail(x, &err);
  ensure_home(s);
  cleanup_free char *exe = NULL;
  if (lookup_executable(s->args[0], s->env, &exe, &err) < 0) exec_fail(x, &err);
  if (s->has_umask) umask(s->umask);
  else umask(022);
  bool cwd_done = chdir(s->cwd) == 0;
  if (s->no_new_privileges && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
    berth_make_error(&err, errno, "prctl(PR_SET_NO_NEW_PRIVS)");
    exec_fail(x, &err);
  }
  if (!s->no_new_privileges && x->seccomp.len && seccomp_load(&x->seccomp, &err) < 0) exec_fail(x, &err);
  if (s->capabilities && caps_drop_bounding(s->capabilities, x->cap_last_cap, &err) < 0) exec_fail(x, &err);
  if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) {
    berth_make_error(&err, errno, "prctl(PR_SET_KEEPCAPS)");
    exec_fail(x, &err);
  }
  if (setgroups(s->n_additional_gids, s->additional_gids) < 0 && !(errno == EPERM && s->n_additional_gids == 0)) {
    berth_make_error(&err, errno, "setgroups");
    exec_fail(x, &err);
  }
  if (setresgid(s->gid, s->gid, s->gid) < 0) {
    berth_make_error(&err, errno, "setresgid %u", s->gid);
    exec_fail(x, &err);
  }
  if (setresuid(s->uid, s->uid, s->uid) < 0) {
    berth_make_error(&err, errno, "setresuid %u", s->uid);
    exec_fail(x, &err);
  }
  prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
  if (!cwd_done && chdir(s->cwd) < 0) {
    berth_make_error(&err, errno, "chdir `%s`", s->cwd);
    exec_fail(x, &err);
  }
  if (s->capabilities && caps_apply(s->capabilities, x->cap_last_cap, &err) < 0) exec_fail(x, &err);
  if (s->no_new_privileges && x->seccomp.len && seccomp_load(&x->seccomp, &err) < 0) exec_fail(x, &err);
  /* the sync socket stays open (close-on-exec): EOF tells the parent the exec happened */
  syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
  berth_reset_signals();
  environ = s->env;
  execv(exe, s->args);
  berth_make_error(&err, errno, "exec `%s`", s->args[0]);
  exec_fail(x, &err);
}

/* The intermediate process: join the namespaces, fork the exec'd process, report its pid, exit. */
static void exec_join(struct exec_ctx *x) __attribute__((noreturn));
static void exec_join(struct exec_ctx *x) {
  berth_err_t err = NULL;
  struct sync_msg m;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (sync_recv(x->sync_fd, &m, &err) < 0 || m.type != SYNC_GO) _exit(1);
  for (size_t i = 0; i < N_NS; i++) {
    if (x->ns_fd[i] < 0) continue;
    if (setns(x->ns_fd[i], ns_kinds[i].flag) < 0) {
      berth_make_error(&err, errno, "join the container's %s namespace", ns_kinds[i].name);
      exec_fail(x, &err);
    }
    close(x->ns_fd[i]);
  }
  /* a container without its own mount namespace lives in a chroot of ours: enter the same one */
  if (x->root_fd >= 0 && (fchdir(x->root_fd) < 0 || chroot(".") < 0 || chdir("/") < 0)) {
    berth_make_error(&err, errno, "enter the container's root");
    exec_fail(x, &err);
  }
  if (x->ns_fd[0] >= 0 && (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)) {
    berth_make_error(&err, errno, "become root in the container's user namespace");
    exec_fail(x, &err);
  }
  pid_t pid = fork();
  if (pid < 0) {
    berth_make_error(&err, errno, "fork");
    exec_fail(x, &err);
  }
  if (pid == 0) exec_process(x);
  sync_send(x->sync_fd, SYNC_PID, pid, NULL);
  _exit(0);
}

static pid_t forward_to;
static void forward_signal(int sig) {
  if (forward_to > 0) kill(forward_to, sig);
}

/* Apply the command line's overrides to the decoded process. */
static int exec_overrides(struct container_spec *s, const struct exec_opts *eo, berth_err_t *err) {
  if (eo->n_args) {
    free(s->args);
    s->args = xmalloc0((eo->n_args + 1) * sizeof(char *));
    memcpy(s->args, eo->args, eo->n_args * sizeof(char *));
  } else if (!eo->process_file) {
    return berth_make_error(err, EINVAL, "exec needs a command or --process");
  }
  if (eo->cwd) {
    if (eo->cwd[0] != '/') return berth_make_error(err, EINVAL, "--cwd must be an absolute path, got `%s`", eo->cwd);
    s->cwd = (char *) eo->cwd;
  }
  if (eo->tty) s->terminal = true;
  if (eo->user) {
    char *end;
    unsigned long uid = strtoul(eo->user, &end, 10);
    unsigned long gid = s->gid;
    if (end == eo->user || (*end && *end != ':')) return berth_make_error(err, EINVAL, "--user wants uid[:gid], got `%s`", eo->user);
    if (*end == ':') {
      char *g = end + 1;
      gid = strtoul(g, &end, 10);
      if (end == g || *end) return berth_make_error(err, EINVAL, "--user wants uid[:gid], got `%s`", eo->user);
    }
    s->uid = (uid_t) uid;
    s->gid = (gid_t) gid;
  }
  if (eo->n_env) {
    size_t n = 0;
    while (s->env[n]) n++;
    char **env = xmalloc0((n + eo->n_env + 1) * sizeof(char *));
    memcpy(env, s->env, n * sizeof(char *));
    for (size_t i = 0; i < eo->n_env; i++) {
      const char *kv = eo->env[i];
      const char *eq = strchr(kv, '=');
      if (!eq || eq == kv) return berth_make_error(err, EINVAL, "--env wants KEY=VALUE, got `%s`", kv);
      size_t k = 0;
      while (k < n && !(strncmp(env[k], kv, (size_t) (eq - kv) + 1) == 0)) k++;
      env[k] = (char *) kv;
      if (k == n) n++;
    }
    free(s->env);
    s->env = env;
  }
  return 0;
}

static int write_pid_file(const char *pf, pid_t pid, berth_err_t *err) {
  char buf[32], abs[4096];
  snprintf(buf, sizeof buf, "%d", pid);
  if (pf[0] != '/' && getcwd(abs, sizeof abs - strlen(pf) - 2)) {
    strcat(abs, "/");
    strcat(abs, pf);
    pf = abs;
  }
  return berth_write_file_atomic(pf, buf, strlen(buf), err);
}

int container_exec(const struct runtime_opts *ro, const char *id, const struct exec_opts *eo, int *exit_code, berth_err_t *err) {
  struct container_status st;
  if (status_read(ro->root, id, &st, err) < 0) return -1;
  struct exec_ctx x = {.sync_fd = -1, .console_fd = -1, .root_fd = -1};
  for (size_t i = 0; i < N_NS; i++) x.ns_fd[i] = -1;
  struct cgroup_manager *cg = NULL;
  int ret = -1, sv[2] = {-1, -1};
  pid_t join = 0, pid = 0;
  cleanup_free char *dir = status_dir(ro->root, id);
  const char *status = status_compute(dir, &st);
  if (strcmp(status, "running") != 0 && strcmp(status, "created") != 0) {
    berth_make_error(err, 0, "cannot exec in container `%s` in state %s", id, status);
    goto out;
  }
  /* all checks before side effects: the spec, the overrides, the seccomp program, the console */
  if (spec_load(st.bundle, &x.spec, err) < 0) goto out;
  if (eo->process_file && spec_replace_process(x.spec, eo->process_file, err) < 0) goto out;
  if (exec_overrides(x.spec, eo, err) < 0 || caps_parse(x.spec->capabilities, err) < 0) goto out;
  if (x.spec->seccomp && seccomp_compile(x.spec->seccomp, &x.seccomp, err) < 0) goto out;
  if (x.spec->terminal && !eo->console_socket) {
    berth_make_error(err, EINVAL, "a terminal needs --console-socket");
    goto out;
  }
  x.cap_last_cap = read_cap_last_cap();
  if (status_cgroup(&st, &cg, err) < 0) goto out;
  if (open_namespaces(st.pid, x.ns_fd, err) < 0) goto out;
  if (x.ns_fd[NS_MNT] < 0) {
    char root[64];
    snprintf(root, sizeof root, "/proc/%d/root", st.pid);
    struct stat a, b;
    if (stat(root, &a) == 0 && stat("/", &b) == 0 && (a.st_dev != b.st_dev || a.st_ino != b.st_ino) &&
        (x.root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
      berth_make_error(err, errno, "open `%s`", root);
      goto out;
    }
  }
  /* the pid could have been reused between status_compute and opening its namespaces */
  if (process_start_time(st.pid, NULL) != st.start_time) {
    berth_make_error(err, ESRCH, "container `%s` stopped", id);
    goto out;
  }
  if (x.spec->terminal && (x.console_fd = connect_console(eo->console_socket, err)) < 0) goto out;
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
    berth_make_error(err, errno, "socketpair");
    goto out;
  }
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  fflush(NULL);
  join = fork();
  if (join < 0) {
    berth_make_error(err, errno, "fork");
    goto out;
  }
  if (join == 0) {
    close(sv[0]);
    x.sync_fd = sv[1];
    exec_join(&x);
  }
  close(sv[1]);
  sv[1] = -1;
  if (cg->ops->enter(cg, join, err) < 0) {
    berth_error_prepend(err, "join the cgroup of container `%s`", id);
    goto fail;
  }
  if (sync_send(sv[0], SYNC_GO, 0, NULL) < 0) {
    berth_make_error(err, errno, "sync with the exec process");
    goto fail;
  }
  /* SYNC_PID from the intermediate process, then EOF once the exec'd process has exec'd (its copy of the
   * socket is close-on-exec) or SYNC_ERROR from either */
  for (;;) {
    struct sync_msg m;
    ssize_t r;
    memset(&m, 0, sizeof m);
    do r = recv(sv[0], &m, sizeof m - 1, 0);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
      berth_make_error(err, errno, "sync socket");
      goto fail;
    }
    if (r == 0) break;
    if (m.type == SYNC_PID) pid = m.value;
    else if (m.type == SYNC_ERROR) {
      berth_make_error(err, 0, "%s", m.text);
      goto fail;
    }
  }
  waitpid(join, NULL, 0);
  join = 0;
  if (pid <= 0) {
    berth_make_error(err, 0, "the exec process exited during setup");
    goto fail;
  }
  if (eo->pid_file && write_pid_file(eo->pid_file, pid, err) < 0) goto fail;
  ret = 0;
  if (eo->detach) {
    *exit_code = 0;
    goto out;
  }
  forward_to = pid;
  struct sigaction sa = {.sa_handler = forward_signal};
  int fwd[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};
  for (size_t i = 0; i < sizeof fwd / sizeof fwd[0]; i++) sigaction(fwd[i], &sa, NULL);
  int wst = 0;
  for (;;) {
    pid_t r = waitpid(-1, &wst, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      wst = -1;
      break;
    }
    if (r == pid) break;
  }
  forward_to = 0;
  *exit_code = wst == -1 ? 255 : WIFEXITED(wst) ? WEXITSTATUS(wst) : WIFSIGNALED(wst) ? 128 + WTERMSIG(wst) : 255;
  goto out;
fail:
  if (pid > 0) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
  }
  if (join > 0) {
    kill(join, SIGKILL);
    waitpid(join, NULL, 0);
  }
out:
  if (sv[0] >= 0) close(sv[0]);
  if (sv[1] >= 0) close(sv[1]);
  if (x.console_fd >= 0) close(x.console_fd);
  for (size_t i = 0; i < N_NS; i++)
    if (x.ns_fd[i] >= 0) close(x.ns_fd[i]);
  if (x.root_fd >= 0) close(x.root_fd);
  free(x.seccomp.filter);
  cgroup_manager_free(cg);
  spec_free(x.spec);
  status_free(&st);
  return ret;
}

int container_pause(const struct runtime_opts *ro, const char *id, bool pause, berth_err_t *err) {
  struct container_status st;
  if (status_read(ro->root, id, &st, err) < 0) return -1;
  cleanup_free char *dir = status_dir(ro->root, id);
  const char *status = status_compute(dir, &st);
  struct cgroup_manager *cg = NULL;
  int ret = 0;
  if (strcmp(status, pause ? "running" : "paused") != 0)
    ret = berth_make_error(err, 0, "cannot %s container `%s` in state %s", pause ? "pause" : "resume", id, status);
  else if (status_cgroup(&st, &cg, err) < 0 || cg->ops->freeze(cg, pause, err) < 0)
    ret = -1;
  cgroup_manager_free(cg);
  status_free(&st);
  return ret;
}

int container_ps(const struct runtime_opts *ro, const char *id, bool json, berth_err_t *err) {
  struct container_status st;
  if (status_read(ro->root, id, &st, err) < 0) return -1;
  struct cgroup_manager *cg = NULL;
  cleanup_free pid_t *pids = NULL;
  size_t n = 0;
  int ret = status_cgroup(&st, &cg, err) < 0 || cg->ops->pids(cg, &pids, &n, err) < 0 ? -1 : 0;
  if (ret == 0) {
    if (json) {
      printf("[");
      for (size_t i = 0; i < n; i++) printf("%s%d", i ? "," : "", pids[i]);
      printf("]\n");
    } else {
      printf("PID\n");
      for (size_t i = 0; i < n; i++) printf("%d\n", pids[i]);
    }
  }
  cgroup_manager_free(cg);
  status_free(&st);
  return ret;
}
