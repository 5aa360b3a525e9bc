/* The container lifecycle over the subsystems: create (validate everything, then state dir → cgroup →
 * processes → state.json; undone on failure), start, state, kill, delete, run. */
#include "cleanup.h"
#include "container.h"
#include "status.h"
#include "util.h"
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const struct {
  const char *name;
  int sig;
} signals[] = {
    {"HUP", SIGHUP},   {"INT", SIGINT},     {"QUIT", SIGQUIT}, {"ILL", SIGILL},     {"TRAP", SIGTRAP},   {"ABRT", SIGABRT},
    {"IOT", SIGIOT},   {"BUS", SIGBUS},     {"FPE", SIGFPE},   {"KILL", SIGKILL},   {"USR1", SIGUSR1},   {"SEGV", SIGSEGV},
    {"USR2", SIGUSR2}, {"PIPE", SIGPIPE},   {"ALRM", SIGALRM}, {"TERM", SIGTERM},   {"STKFLT", SIGSTKFLT}, {"CHLD", SIGCHLD},
    {"CONT", SIGCONT}, {"STOP", SIGSTOP},   {"TSTP", SIGTSTP}, {"TTIN", SIGTTIN},   {"TTOU", SIGTTOU},   {"URG", SIGURG},
    {"XCPU", SIGXCPU}, {"XFSZ", SIGXFSZ},   {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF}, {"WINCH", SIGWINCH}, {"IO", SIGIO},
    {"PWR", SIGPWR},   {"SYS", SIGSYS},
};

int parse_signal(const char *s) {
  if (!s || !*s) return -1;
  char *end;
  long n = strtol(s, &end, 10);
  if (!*end) return n > 0 && n < 65 ? (int) n : -1;
  if (strncasecmp(s, "SIG", 3) == 0) s += 3;
  for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
    if (strcasecmp(s, signals[i].name) == 0) return signals[i].sig;
  if (strncasecmp(s, "RTMIN+", 6) == 0) return SIGRTMIN + atoi(s + 6);
  return -1;
}

static char *now_rfc3339(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char buf[64];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return xasprintf("%s.%09ldZ", buf, ts.tv_nsec);
}

int read_cap_last_cap(void) {
  cleanup_free char *text = NULL;
  berth_err_t e = NULL;
  if (berth_read_file("/proc/sys/kernel/cap_last_cap", &text, NULL, &e) < 0) {
    berth_error_release(&e);
    return 40;
  }
  return atoi(text);
}

static int write_id_map(pid_t pid, const char *file, const struct spec_idmap *maps, size_t n, berth_err_t *err) {
  berth_buf b = {0};
  berth_buf_puts(&b, "");
  for (size_t i = 0; i < n; i++) berth_buf_printf(&b, "%u %u %u\n", maps[i].container, maps[i].host, maps[i].size);
  cleanup_free char *path = xasprintf("/proc/%d/%s", pid, file);
  int r = berth_write_file(path, b.buf, b.len, err);
  free(b.buf);
  return r;
}

int connect_console(const char *path, berth_err_t *err) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof addr.sun_path) return berth_make_error(err, ENAMETOOLONG, "console socket `%s`", path);
  strcpy(addr.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return berth_make_error(err, errno, "socket");
  if (connect(fd, (struct sockaddr *) &addr, sizeof addr) < 0) {
    int e = errno;
    close(fd);
    return berth_make_error(err, e, "connect console socket `%s`", path);
  }
  return fd;
}

static pid_t forward_to;
static void forward_signal(int sig) {
  if (forward_to > 0) kill(forward_to, sig);
}

/* Wait for the container's init (our child once stage 1 exits: we are a subreaper). */
static int wait_init(pid_t pid) {
  int status = 0;
  for (;;) {
    pid_t r = waitpid(-1, &status, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return 255;
    }
    if (r == pid) break;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 255;
}

int container_create(const struct runtime_opts *ro, const char *id, const struct create_opts *co, bool run, int *exit_code, berth_err_t *err) {
  if (!berth_valid_id(id)) return berth_make_error(err, EINVAL, "invalid container id `%s`: use [A-Za-z0-9][A-Za-z0-9_.-]*, at most 128 characters", id);
  /* everything that can be checked is checked before the first side effect */
  struct container_spec *spec = NULL;
  if (spec_load(co->bundle ? co->bundle : ".", &spec, err) < 0) return -1;
  struct cgroup_resources res;
  struct cgroup_manager *cg = NULL;
  struct init_ctx ctx = {.id = id, .spec = spec, .sync_fd = -1, .fifo_fd = -1, .console_fd = -1};
  int ret = -1;
  cleanup_free char *dir = NULL;
  bool dir_made = false, cg_made = false, host_mounts = false;
  unsigned long long rootfs_mnt_before = 0;
  pid_t init_pid = 0;
  int sv[2] = {-1, -1};
  memset(&res, 0, sizeof res);
  if (cgroup_resources_parse(spec->resources, &res, err) < 0 || caps_parse(spec->capabilities, err) < 0) goto out;
  if (spec->seccomp && seccomp_compile(spec->seccomp, &ctx.seccomp, err) < 0) goto out;
  if (cgroup_manager_new(spec->cgroups_path, id, getenv("BERTH_RUNTIME_CGROUP_MODE"), getenv("BERTH_RUNTIME_CGROUP_V2_ROOT"), &cg, err) < 0) goto out;
  /* no mount namespace listed: the container inherits ours (runtime-spec). Init then makes its mounts
   * in our namespace, under a private bind of the rootfs onto itself that delete (or a failed create)
   * detaches, and chroots instead of pivot_root (which would move the root of the whole namespace). */
  host_mounts = !spec_has_namespace(spec, CLONE_NEWNS);
  if (host_mounts) rootfs_mnt_before = mount_id_at(spec->root);
  if (spec->terminal && !co->console_socket) {
    berth_make_error(err, 0, "process.terminal is set: --console-socket is required");
    goto out;
  }
  ctx.cgroup = cg;
  ctx.cap_last_cap = read_cap_last_cap();
  for (int k = HOOK_PRESTART; k <= HOOK_START_CONTAINER; k++)
    if (spec->n_hooks[k]) ctx.hooks_sync = true;
  /* side effects from here: state dir, fifo, cgroup, processes */
  if (berth_mkdir_p(ro->root, 0700, err) < 0) goto out;
  dir = status_dir(ro->root, id);
  if (mkdir(dir, 0700) < 0) {
    if (errno == EEXIST) berth_make_error(err, EEXIST, "container `%s` already exists", id);
    else berth_make_error(err, errno, "mkdir `%s`", dir);
    goto out;
  }
  dir_made = true;
  {
    cleanup_free char *fifo = xasprintf("%s/exec.fifo", dir);
    if (mkfifo(fifo, 0622) < 0) {
      berth_make_error(err, errno, "mkfifo `%s`", fifo);
      goto out;
    }
    ctx.fifo_fd = open(fifo, O_RDWR | O_CLOEXEC);
    if (ctx.fifo_fd < 0) {
      berth_make_error(err, errno, "open `%s`", fifo);
      goto out;
    }
  }
  if (co->console_socket && (ctx.console_fd = connect_console(co->console_socket, err)) < 0) goto out;
  if (cg->ops->create(cg, err) < 0) goto out;
  cg_made = true;
  if (cg->ops->apply(cg, &res, err) < 0) {
    berth_error_prepend(err, "cgroup %s `%s`", cg->ops->name, cg->path);
    goto out;
  }
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
    berth_make_error(err, errno, "socketpair");
    goto out;
  }
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  fflush(NULL);
  pid_t stage1 = fork();
  if (stage1 < 0) {
    berth_make_error(err, errno, "fork");
    goto out;
  }
  if (stage1 == 0) {
    close(sv[0]);
    ctx.sync_fd = sv[1];
    linux_stage1(&ctx);
  }
  close(sv[1]);
  sv[1] = -1;
  if (cg->ops->enter(cg, stage1, err) < 0 || sync_send(sv[0], SYNC_GO, 0, NULL) < 0) {
    kill(stage1, SIGKILL);
    waitpid(stage1, NULL, 0);
    if (!*err) berth_make_error(err, errno, "sync with the container process");
    goto out;
  }
  /* Stage 1 and init share the socket: init's SYNC_HOOKS and even its SYNC_READY can overtake stage 1's
   * SYNC_PID (stage 1 may be preempted between fork and send while init sets the container up), so hooks
   * wait for the pid and the container is created only once both READY and the pid have arrived. */
  for (bool ready = false, hooks_pending = false; !ready || init_pid <= 0;) {
    struct sync_msg m;
    if (sync_recv(sv[0], &m, err) < 0) goto fail_procs;
    switch (m.type) {
    case SYNC_USERMAP:
      if (write_id_map(stage1, "uid_map", spec->uid_mappings, spec->n_uid_mappings, err) < 0 ||
          write_id_map(stage1, "gid_map", spec->gid_mappings, spec->n_gid_mappings, err) < 0)
        goto fail_procs;
      sync_send(sv[0], SYNC_USERMAP_ACK, 0, NULL);
      break;
    case SYNC_PID:
    case SYNC_HOOKS:
      if (m.type == SYNC_PID) {
        if (m.value <= 0) {
          berth_make_error(err, 0, "bad pid %d from the container process", m.value);
          goto fail_procs;
        }
        init_pid = m.value;
        waitpid(stage1, NULL, 0);
        stage1 = 0;
      } else {
        hooks_pending = true;
      }
      if (hooks_pending && init_pid > 0) {
        hooks_pending = false;
        char *state = state_json_build(id, "creating", init_pid, spec->bundle, spec->annotations, -1);
        int hr = hooks_run(spec->hooks[HOOK_PRESTART], spec->n_hooks[HOOK_PRESTART], "prestart", state, err);
        if (hr == 0) hr = hooks_run(spec->hooks[HOOK_CREATE_RUNTIME], spec->n_hooks[HOOK_CREATE_RUNTIME], "createRuntime", state, err);
        free(state);
        if (hr < 0) goto fail_procs;
        sync_send(sv[0], SYNC_HOOKS_ACK, init_pid, NULL);
      }
      break;
    case SYNC_READY: ready = true; break;
    case SYNC_ERROR: berth_make_error(err, 0, "%s", m.text); goto fail_procs;
    default: berth_make_error(err, 0, "unexpected message %d from the container process", m.type); goto fail_procs;
    }
  }
  {
    cleanup_free char *created = now_rfc3339();
    struct container_status st = {
        .id = (char *) id, .bundle = spec->bundle, .rootfs = spec->root, .created = created, .pid = init_pid,
        .start_time = process_start_time(init_pid, NULL), .cgroup_path = cg->path, .cgroup_mode = (char *) cg->ops->name,
        .cgroup_root = cg->root, .annotations = spec->annotations,
        .rootfs_mount_id = host_mounts ? mount_id_at(spec->root) : 0,
    };
    if (st.rootfs_mount_id == rootfs_mnt_before) st.rootfs_mount_id = 0;
    if (status_write(dir, &st, err) < 0) goto fail_procs;
    if (co->pid_file) {
      char buf[32];
      snprintf(buf, sizeof buf, "%d", init_pid);
      char abs[4096];
      const char *pf = co->pid_file;
      if (pf[0] != '/' && getcwd(abs, sizeof abs - strlen(pf) - 2)) {
        strcat(abs, "/");
        strcat(abs, pf);
        pf = abs;
      }
      if (berth_write_file_atomic(pf, buf, strlen(buf), err) < 0) goto fail_procs;
    }
  }
  ret = 0;
  if (run) {
    /* start it ourselves, then wait, forward signals, and delete */
    forward_to = init_pid;
    struct sigaction sa = {.sa_handler = forward_signal};
    int fwd[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};
    for (size_t i = 0; i < sizeof fwd / sizeof fwd[0]; i++) sigaction(fwd[i], &sa, NULL);
    char *fifo = xasprintf("%s/exec.fifo", dir);
    unlink(fifo);
    free(fifo);
    if (berth_write_all(ctx.fifo_fd, "0", 1) < 0) {
      ret = berth_make_error(err, errno, "start container");
      goto fail_procs;
    }
    char *state = state_json_build(id, "running", init_pid, spec->bundle, spec->annotations, -1);
    hooks_run_warn(spec->hooks[HOOK_POSTSTART], spec->n_hooks[HOOK_POSTSTART], "poststart", state);
    free(state);
    close(ctx.fifo_fd);
    ctx.fifo_fd = -1;
    if (co->detach) {
      *exit_code = 0;
      goto out;
    }
    *exit_code = wait_init(init_pid);
    forward_to = 0;
    berth_err_t e2 = NULL;
    if (container_delete(ro, id, true, &e2) < 0) runtime_warn_error(&e2);
    dir_made = cg_made = false;
  }
  goto out;
fail_procs:
  if (stage1 > 0) {
    kill(stage1, SIGKILL);
    waitpid(stage1, NULL, 0);
  }
  if (init_pid > 0) {
    kill(init_pid, SIGKILL);
    waitpid(init_pid, NULL, 0);
  }
out:
  if (ret < 0) {
    berth_err_t e2 = NULL;
    if (cg_made && cg->ops->destroy(cg, &e2) < 0) berth_error_release(&e2);
    if (dir_made && berth_rm_rf(dir, &e2) < 0) berth_error_release(&e2);
    /* init may have mounted under the rootfs in our namespace before it failed */
    if (cg_made && host_mounts && mount_id_at(spec->root) != rootfs_mnt_before &&
        rootfs_detach(spec->root, &e2) < 0)
      berth_error_release(&e2);
  }
  if (sv[0] >= 0) close(sv[0]);
  if (sv[1] >= 0) close(sv[1]);
  if (ctx.fifo_fd >= 0) close(ctx.fifo_fd);
  if (ctx.console_fd >= 0) close(ctx.console_fd);
  free(ctx.seccomp.filter);
  cgroup_resources_free(&res);
  cgroup_manager_free(cg);
  spec_free(spec);
  return ret;
}

int container_start(const struct runtime_opts *ro, const char *id, berth_err_t *err) {
  struct container_status st;
  if (status_read(ro->root, id, &st, err) < 0) return -1;
  cleanup_free char *dir = status_dir(ro->root, id);
  const char *status = status_compute(dir, &st);
  int ret = 0;
  cleanup_free char *fifo = xasprintf("%s/exec.fifo", dir);
  if (strcmp(status, "created") != 0) {
    ret = berth_make_error(err, 0, "cannot start container `%s` in state %s", id, status);
    goto out;
  }
  int fd = open(fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    ret = berth_make_error(err, errno == ENXIO ? 0 : errno, "cannot start container `%s`: its init is not waiting", id);
    goto out;
  }
  ssize_t w = write(fd, "0", 1);
  int e = errno;
  close(fd);
  if (w != 1) {
    ret = berth_make_error(err, e, "start container `%s`", id);
    goto out;
  }
  unlink(fifo);
  struct container_spec *spec = NULL;
  berth_err_t e2 = NULL;
  if (spec_load(st.bundle, &spec, &e2) == 0) {
    cleanup_free char *state = state_json_build(id, "running", st.pid, st.bundle, st.annotations, -1);
    hooks_run_warn(spec->hooks[HOOK_POSTSTART], spec->n_hooks[HOOK_POSTSTART], "poststart", state);
    spec_free(spec);
  }
  berth_error_release(&e2);
out:
  status_free(&st);
  return ret;
}

int container_state(const struct runtime_opts *ro, const char *id, char **json, berth_err_t *err) {
  struct container_status st;
  if (status_read(ro->root, id, &st, err) < 0) return -1;
  cleanup_free char *dir = status_dir(ro->root, id);
  const char *status = status_compute(dir, &st);
  int oom = -1;
  if (strcmp(status, "stopped") == 0) {
    struct cgroup_manager *cg = NULL;
    berth_err_t e2 = NULL;
    if (status_cgroup(&st, &cg, &e2) == 0) oom = cg->ops->oom_killed(cg);
    berth_error_release(&e2);
    cgroup_manager_free(cg);
  }
  char *s = state_json_build(id, status, st.pid, st.bundle, st.annotations, oom < 0 ? -1 : oom);
  /* runc adds rootfs and created; tools read them */
  berth_buf b = {0};
  berth_buf_append(&b, s, strlen(s) - 1);
  berth_buf_puts(&b, ",\"rootfs\":");
  berth_buf_json_string(&b, st.rootfs);
  berth_buf_puts(&b, ",\"created\":");
  berth_buf_json_string(&b, st.created);
  berth_buf_puts(&b, "}");
  free(s);
  *json = b.buf;
  status_free(&st);
  return 0;
}

int container_kill(const struct runtime_opts *ro, const char *id, int sig, bool all, berth_err_t *err) {
  struct container_status st;
  if (status_read(ro->root, id, &st, err) < 0) return -1;
  cleanup_free char *dir = status_dir(ro->root, id);
  int ret = 0;
  if (strcmp(status_compute(dir, &st), "stopped") == 0) {
    ret = berth_make_error(err, ESRCH, "container `%s` is not running", id);
  } else if (all) {
    struct cgroup_manager *cg = NULL;
    cleanup_free pid_t *pids = NULL;
    size_t n = 0;
    if (status_cgroup(&st, &cg, err) < 0 || cg->ops->pids(cg, &pids, &n, err) < 0) ret = -1;
    for (size_t i = 0; ret == 0 && i < n; i++) kill(pids[i], sig);
    cgroup_manager_free(cg);
  } else if (kill(st.pid, sig) < 0) {
    ret = berth_make_error(err, errno, "kill container `%s`", id);
  }
  status_free(&st);
  return ret;
}

int container_delete(const struct runtime_opts *ro, const char *id, bool force, berth_err_t *err) {
  struct container_status st;
  if (status_read(ro->root, id, &st, err) < 0) {
    /* a state dir without state.json is a create that died half way (or one without a pid): force removes it */
    if (force && ((*err)->status == EAGAIN || (*err)->status == EBADMSG)) {
      berth_error_release(err);
      cleanup_free char *dir = status_dir(ro->root, id);
      return berth_rm_rf(dir, err);
    }
    return -1;
  }
  cleanup_free char *dir = status_dir(ro->root, id);
  const char *status = status_compute(dir, &st);
  int ret = 0;
  struct cgroup_manager *cg = NULL;
  /* runtime-spec: only a stopped container may be deleted; --force kills a created/running/paused one */
  if (strcmp(status, "stopped") != 0 && !force) {
    ret = berth_make_error(err, 0, "cannot delete container `%s` in state %s (use --force)", id, status);
    goto out;
  }
  berth_err_t e2 = NULL;
  if (status_cgroup(&st, &cg, &e2) < 0) berth_error_release(&e2);
  if (strcmp(status, "stopped") != 0) {
    kill(st.pid, SIGKILL);
    if (cg) {
      cleanup_free pid_t *pids = NULL;
      size_t n = 0;
      if (cg->ops->pids(cg, &pids, &n, &e2) == 0)
        for (size_t i = 0; i < n; i++) kill(pids[i], SIGKILL);
      berth_error_release(&e2);
      /* frozen tasks only die once thawed */
      if (strcmp(status, "paused") == 0 && cg->ops->freeze(cg, false, &e2) < 0) berth_error_release(&e2);
    }
    for (int i = 0; i < 1000 && strcmp(status_compute(dir, &st), "stopped") != 0; i++) {
      waitpid(st.pid, NULL, WNOHANG);
      struct timespec ts = {0, 2 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
  }
  if (cg && cg->ops->destroy(cg, err) < 0) {
    ret = berth_error_prepend(err, "delete container `%s`", id);
    goto out;
  }
  if (st.rootfs_mount_id && mount_id_at(st.rootfs) == st.rootfs_mount_id && rootfs_detach(st.rootfs, err) < 0) {
    ret = berth_error_prepend(err, "delete container `%s`", id);
    goto out;
  }
  struct container_spec *spec = NULL;
  if (spec_load(st.bundle, &spec, &e2) == 0) {
    cleanup_free char *state = state_json_build(id, "stopped", st.pid, st.bundle, st.annotations, -1);
    hooks_run_warn(spec->hooks[HOOK_POSTSTOP], spec->n_hooks[HOOK_POSTSTOP], "poststop", state);
    spec_free(spec);
  }
  berth_error_release(&e2);
  if (berth_rm_rf(dir, err) < 0) ret = -1;
out:
  cgroup_manager_free(cg);
  status_free(&st);
  return ret;
}

int container_list(const struct runtime_opts *ro, berth_err_t *err) {
  cleanup_dir DIR *d = opendir(ro->root);
  printf("ID\tPID\tSTATUS\tBUNDLE\n");
  if (!d) return errno == ENOENT ? 0 : berth_make_error(err, errno, "opendir `%s`", ro->root);
  struct dirent *de;
  while ((de = readdir(d))) {
    if (!berth_valid_id(de->d_name)) continue;
    struct container_status st;
    berth_err_t e2 = NULL;
    if (status_read(ro->root, de->d_name, &st, &e2) < 0) {
      berth_error_release(&e2);
      continue;
    }
    cleanup_free char *dir = status_dir(ro->root, de->d_name);
    printf("%s\t%d\t%s\t%s\n", st.id, st.pid, status_compute(dir, &st), st.bundle);
    status_free(&st);
  }
  return 0;
}
