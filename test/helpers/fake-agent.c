/*
 * A stand-in for a berth version, for the launcher tests (test/integration/self-update-launcher.test.ts):
 * a real ELF executable the launcher stages, inspects and starts, whose behaviour is fixed at compile time
 * (-DVERSION="0.2.0" -DMODE_<mode>). The real executables are exercised by self-update-package.test.ts.
 *
 *   MODE_GOOD       on trial: reports every milestone on the launcher's socket, then runs until SIGTERM;
 *                   otherwise: exits with $FAKE_EXIT (default 0)
 *   MODE_EXIT       exits 1 at once
 *   MODE_HANG       reports nothing and ignores SIGTERM (the launcher must SIGKILL it)
 *   MODE_NOCONNECT  reports `state` only, runs until SIGTERM
 *   MODE_CRASH      reports `state`, then dies of SIGSEGV
 *
 * Every start appends "<version> <BERTH_LAUNCHED> <trial|run> <pid>" to $FAKE_LOG.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }
static int launcher = -1;

/* BERTH_LAUNCHER_SOCKET is the path of the launcher's UNIX socket. */
static void connect_launcher(void) {
  const char *name = getenv("BERTH_LAUNCHER_SOCKET");
  if (!name) return;
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  if (strlen(name) >= sizeof a.sun_path) _exit(4);
  strcpy(a.sun_path, name);
  launcher = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (launcher < 0 || connect(launcher, (struct sockaddr *)&a, sizeof a) != 0) _exit(4);
}

static void milestone(const char *m) {
  char line[64];
  int n = snprintf(line, sizeof line, "{\"milestone\":\"%s\"}\n", m);
  if (launcher >= 0 && write(launcher, line, (size_t)n) != n) _exit(3);
}

int main(void) {
  connect_launcher();
  const char *trial = getenv("BERTH_TRIAL");
  const char *mode = getenv("BERTH_LAUNCHED");
  const char *log = getenv("FAKE_LOG");
  if (log) {
    FILE *f = fopen(log, "a");
    if (f) {
      fprintf(f, "%s %s %s %d\n", VERSION, mode ? mode : "-", trial ? "trial" : "run", (int)getpid());
      fclose(f);
    }
  }
#if defined(MODE_EXIT)
  return 1;
#elif defined(MODE_HANG)
  signal(SIGTERM, SIG_IGN);
  for (;;) pause();
#else
  signal(SIGTERM, on_term);
  if (trial) {
    milestone("state");
#if defined(MODE_CRASH)
    raise(SIGSEGV);
#elif defined(MODE_GOOD)
    milestone("connected");
    milestone("reconciled");
#endif
    while (!stop) pause();
    return 0;
  }
  const char *code = getenv("FAKE_EXIT");
  return code ? atoi(code) : 0;
#endif
}
