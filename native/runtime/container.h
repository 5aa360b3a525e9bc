/* The container library the verbs in main.c call: create/start/state/kill/delete/run, and what the
 * processes that build a container share. */
#ifndef BERTH_CONTAINER_H
#define BERTH_CONTAINER_H
#include "cgroup.h"
#include "error.h"
#include "log.h"
#include "spec.h"
#include <linux/filter.h>
#include <stdbool.h>
#include <sys/types.h>

struct runtime_opts {
  const char *root;      /* state root, default /run/berth-runtime */
  const char *log_file;  /* --log */
  bool log_json;         /* --log-format json */
};

struct create_opts {
  const char *bundle;
  const char *pid_file;
  const char *console_socket;
  bool detach;           /* run -d */
};

/* Everything the container's init (and its parent stage) needs; built before any side effect. */
struct init_ctx {
  const char *id;
  struct container_spec *spec;
  struct cgroup_manager *cgroup;
  int sync_fd;           /* SOCK_SEQPACKET to the create process */
  int fifo_fd;           /* exec.fifo, O_RDWR: init blocks reading it until `start` writes */
  int console_fd;        /* connected console socket, or -1 */
  int cap_last_cap;
  struct sock_fprog seccomp; /* .len == 0: none */
  pid_t host_pid;        /* init's pid as the host sees it (sent by the parent) */
  bool hooks_sync;       /* init stops for prestart/createRuntime hooks and to learn host_pid */
};

enum sync_type { SYNC_GO = 1, SYNC_USERMAP, SYNC_USERMAP_ACK, SYNC_PID, SYNC_HOOKS, SYNC_HOOKS_ACK, SYNC_READY, SYNC_ERROR };
struct sync_msg {
  int type;
  int value;
  char text[3072];
};
int sync_send(int fd, int type, int value, const char *text);
int sync_recv(int fd, struct sync_msg *m, berth_err_t *err);

int container_create(const struct runtime_opts *ro, const char *id, const struct create_opts *co, bool run, int *exit_code, berth_err_t *err);
int container_start(const struct runtime_opts *ro, const char *id, berth_err_t *err);
int container_state(const struct runtime_opts *ro, const char *id, char **json, berth_err_t *err);
int container_kill(const struct runtime_opts *ro, const char *id, int sig, bool all, berth_err_t *err);
int container_delete(const struct runtime_opts *ro, const char *id, bool force, berth_err_t *err);
int container_list(const struct runtime_opts *ro, berth_err_t *err);
int parse_signal(const char *s);

/* linux.c: stage 1 (namespaces) and the container init; never return */
void linux_stage1(struct init_ctx *ctx) __attribute__((noreturn));
/* mounts.c */
int rootfs_prepare(struct init_ctx *ctx, berth_err_t *err);
int rootfs_pivot(struct init_ctx *ctx, berth_err_t *err);
int rootfs_finalize(struct init_ctx *ctx, berth_err_t *err);
/* id of the topmost mount at path (statx STATX_MNT_ID, else mountinfo); 0 when unknown */
unsigned long long mount_id_at(const char *path);
/* detach the topmost mount at root and everything under it (a container without its own mount namespace) */
int rootfs_detach(const char *root, berth_err_t *err);
/* caps.c */
int caps_parse(json_value *caps, berth_err_t *err);
int caps_drop_bounding(json_value *caps, int last_cap, berth_err_t *err);
int caps_apply(json_value *caps, int last_cap, berth_err_t *err);
/* seccomp.c */
int seccomp_compile(json_value *profile, struct sock_fprog *out, berth_err_t *err);
int seccomp_load(const struct sock_fprog *prog, berth_err_t *err);
/* hooks.c */
int hooks_run(struct spec_hook *hooks, size_t n, const char *kind, const char *state_json, berth_err_t *err);
/* poststart/poststop: run every hook; each failure is a warning */
void hooks_run_warn(struct spec_hook *hooks, size_t n, const char *kind, const char *state_json);
char *state_json_build(const char *id, const char *status, pid_t pid, const char *bundle, const json_value *annotations, int oom_killed);
/* terminal.c */
int terminal_setup(int console_fd, bool bind_console, berth_err_t *err);
/* linux.c helpers exec.c shares */
int lookup_executable(const char *file, char **env, char **out, berth_err_t *err);
void ensure_home(struct container_spec *s);
int set_rlimits(struct container_spec *s, berth_err_t *err);
/* exec.c */
struct exec_opts {
  const char *process_file, *pid_file, *console_socket, *cwd, *user;
  const char **env;      /* --env K=V, appended (later wins) */
  size_t n_env;
  char **args;           /* replaces process.args when non-empty */
  size_t n_args;
  bool detach, tty;
};
int container_exec(const struct runtime_opts *ro, const char *id, const struct exec_opts *eo, int *exit_code, berth_err_t *err);
int container_pause(const struct runtime_opts *ro, const char *id, bool pause, berth_err_t *err);
int container_ps(const struct runtime_opts *ro, const char *id, bool json, berth_err_t *err);
int connect_console(const char *path, berth_err_t *err);
int read_cap_last_cap(void);

#endif
