/* process.terminal: a pty from the container's devpts; the master goes to --console-socket with
 * SCM_RIGHTS (as runc sends it), the slave becomes stdio, controlling terminal and /dev/console. */
#include "cleanup.h"
#include "container.h"
#include "util.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

static int send_fd(int sock, int fd, const char *name, berth_err_t *err) {
  char buf[CMSG_SPACE(sizeof(int))];
  memset(buf, 0, sizeof buf);
  struct iovec iov = {.iov_base = (void *) name, .iov_len = strlen(name) + 1};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = buf, .msg_controllen = sizeof buf};
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof(int));
  if (sendmsg(sock, &msg, MSG_NOSIGNAL) < 0) return berth_make_error(err, errno, "send the pty master to the console socket");
  return 0;
}

int terminal_setup(int console_fd, bool bind_console, berth_err_t *err) {
  cleanup_close int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) return berth_make_error(err, errno, "open /dev/ptmx");
  if (unlockpt(master) < 0) return berth_make_error(err, errno, "unlockpt");
  char name[128];
  if (ptsname_r(master, name, sizeof name) != 0) return berth_make_error(err, errno, "ptsname");
  int slave = open(name, O_RDWR | O_NOCTTY);
  if (slave < 0) return berth_make_error(err, errno, "open `%s`", name);
  if (bind_console && mount(name, "/dev/console", NULL, MS_BIND, NULL) < 0) return berth_make_error(err, errno, "bind `%s` on /dev/console", name);
  /* the name sent along is the master's, as runc sends it */
  if (send_fd(console_fd, master, "/dev/ptmx", err) < 0) return -1;
  for (int i = 0; i < 3; i++)
    if (dup2(slave, i) < 0) return berth_make_error(err, errno, "dup2 pty");
  if (slave > 2) close(slave);
  if (ioctl(0, TIOCSCTTY, 0) < 0) return berth_make_error(err, errno, "TIOCSCTTY");
  return 0;
}
