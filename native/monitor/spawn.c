#include "spawn.h"
#include "util.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

pid_t spawn_process(char *const argv[], int in_fd, int out_fd, int err_fd, berth_err_t *err) {
  pid_t pid = fork();
  if (pid < 0) return berth_make_error(err, errno, "fork for `%s`", argv[0]);
  if (pid == 0) {
    int null = open("/dev/null", O_RDWR | O_CLOEXEC); /* dup2 clears CLOEXEC on 0-2 */
    int fds[3] = {in_fd, out_fd, err_fd};
    for (int i = 0; i < 3; i++)
      if (dup2(fds[i] >= 0 ? fds[i] : null, i) < 0) _exit(127);
    berth_reset_signals();
    execv(argv[0], argv);
    dprintf(2, "berth-monitor: exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  return pid;
}

int wait_for(pid_t pid, int *status, berth_err_t *err) {
  for (;;) {
    pid_t r = waitpid(pid, status, 0);
    if (r == pid) return 0;
    if (r < 0 && errno == EINTR) continue;
    return berth_make_error(err, errno, "waitpid %d", (int) pid);
  }
}
