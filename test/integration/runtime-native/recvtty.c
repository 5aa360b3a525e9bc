/* Test helper: the receiving end of an OCI --console-socket. Listens on argv[1], takes the pty master
 * sent with SCM_RIGHTS, prints the name that came with it, then copies the terminal's output to stdout
 * until the container side closes. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc != 2) return 2;
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  snprintf(addr.sun_path, sizeof addr.sun_path, "%s", argv[1]);
  if (s < 0 || bind(s, (struct sockaddr *) &addr, sizeof addr) < 0 || listen(s, 1) < 0) return perror("listen"), 1;
  printf("listening\n");
  fflush(stdout);
  int c = accept(s, NULL, NULL);
  if (c < 0) return perror("accept"), 1;
  char name[256] = {0}, ctl[CMSG_SPACE(sizeof(int))];
  struct iovec iov = {.iov_base = name, .iov_len = sizeof name - 1};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
  if (recvmsg(c, &msg, 0) < 0) return perror("recvmsg"), 1;
  struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
  if (!cm || cm->cmsg_type != SCM_RIGHTS) return fprintf(stderr, "no fd received\n"), 1;
  int master;
  memcpy(&master, CMSG_DATA(cm), sizeof master);
  printf("received %s\n", name);
  fflush(stdout);
  char buf[4096];
  for (;;) {
    ssize_t n = read(master, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break; /* EIO once the last slave fd closes */
    fwrite(buf, 1, (size_t) n, stdout);
    fflush(stdout);
  }
  return 0;
}
