/* OCI hooks: each runs with the container state JSON on stdin, its own args/env, and an optional timeout.
 * prestart/createRuntime/createContainer/startContainer: the first failure stops the operation.
 * poststart/poststop: a failure is a warning and the remaining hooks still run (runtime-spec). */
#include "cleanup.h"
#include "container.h"
#include "util.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

char *state_json_build(const char *id, const char *status, pid_t pid, const char *bundle, const json_value *annotations, int oom_killed) {
  berth_buf b = {0};
  berth_buf_puts(&b, "{\"ociVersion\":\"1.0.2\",\"id\":");
  berth_buf_json_string(&b, id);
  berth_buf_puts(&b, ",\"status\":");
  berth_buf_json_string(&b, status);
  if (pid > 0 && strcmp(status, "stopped") != 0) berth_buf_printf(&b, ",\"pid\":%d", pid);
  else berth_buf_puts(&b, ",\"pid\":0");
  berth_buf_puts(&b, ",\"bundle\":");
  berth_buf_json_string(&b, bundle);
  if (annotations && annotations->len) {
    berth_buf_puts(&b, ",\"annotations\":");
    json_serialize(annotations, &b);
  }
  if (oom_killed >= 0) berth_buf_printf(&b, ",\"oomKilled\":%s", oom_killed ? "true" : "false");
  berth_buf_puts(&b, "}");
  return b.buf;
}

static int run_one(struct spec_hook *h, const char *state, berth_err_t *err) {
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) < 0) return berth_make_error(err, errno, "pipe");
  pid_t pid = fork();
  if (pid < 0) return berth_make_error(err, errno, "fork");
  if (pid == 0) {
    dup2(pipefd[0], 0);
    char *argv_default[] = {h->path, NULL};
    char *envp_default[] = {NULL};
    execve(h->path, h->args && h->args[0] ? h->args : argv_default, h->env ? h->env : envp_default);
    fprintf(stderr, "berth-runtime: exec hook `%s`: %s\n", h->path, strerror(errno));
    _exit(127);
  }
  close(pipefd[0]);
  /* the hook may not read stdin: ignore EPIPE */
  struct sigaction sa = {.sa_handler = SIG_IGN}, old;
  sigaction(SIGPIPE, &sa, &old);
  berth_write_all(pipefd[1], state, strlen(state));
  close(pipefd[1]);
  sigaction(SIGPIPE, &old, NULL);
  int status = 0;
  struct timespec start, now;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (long sleep_ns = 100000;;) {
    pid_t r = waitpid(pid, &status, h->timeout ? WNOHANG : 0);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) return berth_make_error(err, errno, "wait for hook `%s`", h->path);
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec - start.tv_sec >= h->timeout) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return berth_make_error(err, ETIMEDOUT, "hook `%s` timed out after %d s", h->path, h->timeout);
    }
    struct timespec ts = {0, sleep_ns};
    nanosleep(&ts, NULL);
    if (sleep_ns < 10000000) sleep_ns *= 2;
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
  if (WIFEXITED(status)) return berth_make_error(err, 0, "hook `%s` exited with status %d", h->path, WEXITSTATUS(status));
  return berth_make_error(err, 0, "hook `%s` killed by signal %d", h->path, WTERMSIG(status));
}

int hooks_run(struct spec_hook *hooks, size_t n, const char *kind, const char *state_json, berth_err_t *err) {
  for (size_t i = 0; i < n; i++)
    if (run_one(&hooks[i], state_json, err) < 0) return berth_error_prepend(err, "%s hook", kind);
  return 0;
}

void hooks_run_warn(struct spec_hook *hooks, size_t n, const char *kind, const char *state_json) {
  for (size_t i = 0; i < n; i++) {
    berth_err_t err = NULL;
    if (run_one(&hooks[i], state_json, &err) < 0) {
      berth_error_prepend(&err, "%s hook %zu of %zu (going on)", kind, i + 1, n);
      runtime_warn_error(&err);
    }
  }
}
