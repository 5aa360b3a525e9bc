/* The five capability sets: bounding (dropped with PR_CAPBSET_DROP), effective/permitted/inheritable
 * (capset), ambient (PR_CAP_AMBIENT_RAISE). Unknown names are ignored, as runc does, so profiles that name
 * newer capabilities still work on older kernels. */
#include "cleanup.h"
#include "container.h"
#include "util.h"
#include <errno.h>
#include <linux/capability.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *const cap_names[] = {
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN",
    "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
};
#define N_CAPS ((int) (sizeof cap_names / sizeof cap_names[0]))

static int cap_number(const char *name) {
  for (int i = 0; i < N_CAPS; i++)
    if (strcasecmp(name, cap_names[i]) == 0) return i;
  return -1;
}

/* Set bits (up to 64 caps) for one set; ignores unknown names and caps above last_cap. */
static uint64_t cap_set(json_value *caps, const char *set, int last_cap) {
  json_value *arr = json_get_array(caps, set);
  uint64_t bits = 0;
  for (size_t i = 0; arr && i < arr->len; i++) {
    if (arr->items[i]->type != JSON_STRING) continue;
    int c = cap_number(arr->items[i]->str);
    if (c >= 0 && c <= last_cap) bits |= 1ULL << c;
  }
  return bits;
}

int caps_parse(json_value *caps, berth_err_t *err) {
  static const char *const sets[] = {"bounding", "effective", "permitted", "inheritable", "ambient"};
  if (!caps) return 0;
  for (size_t s = 0; s < 5; s++) {
    json_value *v = json_get(caps, sets[s]);
    if (!v) continue;
    if (v->type != JSON_ARRAY) return berth_make_error(err, 0, "`process.capabilities.%s` must be an array", sets[s]);
    for (size_t i = 0; i < v->len; i++)
      if (v->items[i]->type != JSON_STRING) return berth_make_error(err, 0, "`process.capabilities.%s[%zu]` must be a string", sets[s], i);
  }
  return 0;
}

int caps_drop_bounding(json_value *caps, int last_cap, berth_err_t *err) {
  uint64_t keep = cap_set(caps, "bounding", last_cap);
  for (int c = 0; c <= last_cap && c < 64; c++) {
    if (keep & (1ULL << c)) continue;
    if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL) return berth_make_error(err, errno, "drop capability %d from the bounding set", c);
  }
  return 0;
}

int caps_apply(json_value *caps, int last_cap, berth_err_t *err) {
  uint64_t eff = cap_set(caps, "effective", last_cap), perm = cap_set(caps, "permitted", last_cap),
           inh = cap_set(caps, "inheritable", last_cap), amb = cap_set(caps, "ambient", last_cap);
  struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  struct __user_cap_data_struct data[2] = {
      {.effective = (uint32_t) eff, .permitted = (uint32_t) perm, .inheritable = (uint32_t) inh},
      {.effective = (uint32_t) (eff >> 32), .permitted = (uint32_t) (perm >> 32), .inheritable = (uint32_t) (inh >> 32)},
  };
  if (syscall(SYS_capset, &hdr, data) < 0) return berth_make_error(err, errno, "capset");
  /* a cap can only be ambient when it is permitted and inheritable; runc skips the others too */
  amb &= perm & inh;
  for (int c = 0; c <= last_cap && c < 64; c++)
    if ((amb & (1ULL << c)) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) < 0)
      return berth_make_error(err, errno, "raise ambient capability %s", cap_names[c]);
  return 0;
}
