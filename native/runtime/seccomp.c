/* linux.seccomp compiled to classic BPF without libseccomp (the static cross builds have none).
 *
 * Program shape:
 *   ld arch; jeq NATIVE_ARCH ? next : ret KILL_PROCESS       (other ABIs are refused, as libseccomp does
 *   ld nr;  [x86_64: jge X32_BIT ? ret KILL_PROCESS]           for arches a filter does not list)
 *   per rule:  jeq nr ? next : skip-rule;  arg checks (each a 64-bit compare on two 32-bit halves,
 *              ANDed; a failing check skips the rule);  ret action
 *   ret defaultAction
 * Rules keep the profile's order, so the first matching rule decides, as in runc. Syscall names this arch
 * does not have are skipped (profiles list names for every arch). */
#include "cleanup.h"
#include "container.h"
#include "util.h"
#include <errno.h>
#include <linux/audit.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static const struct {
  const char *name;
  long nr;
} syscall_table[] = {
#include "seccomp_syscalls.h"
};

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#define NATIVE_NAMES {"SCMP_ARCH_X86_64", NULL}
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#define NATIVE_NAMES {"SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM64"}
#elif defined(__arm__)
#define NATIVE_ARCH AUDIT_ARCH_ARM
#define NATIVE_NAMES {"SCMP_ARCH_ARM", NULL}
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define NATIVE_ARCH AUDIT_ARCH_PPC64LE
#define NATIVE_NAMES {"SCMP_ARCH_PPC64LE", NULL}
#else
#error "seccomp: unsupported architecture"
#endif

#ifndef SECCOMP_RET_KILL_PROCESS
#define SECCOMP_RET_KILL_PROCESS 0x80000000U
#endif
#ifndef SECCOMP_RET_LOG
#define SECCOMP_RET_LOG 0x7ffc0000U
#endif

long seccomp_syscall_number(const char *name);
long seccomp_syscall_number(const char *name) {
  for (size_t i = 0; i < sizeof syscall_table / sizeof syscall_table[0]; i++)
    if (strcmp(syscall_table[i].name, name) == 0) return syscall_table[i].nr;
  return -1;
}

static int parse_action(const char *a, json_value *errno_ret, uint32_t *out, berth_err_t *err) {
  uint64_t e = EPERM;
  if (errno_ret && json_as_uint64(errno_ret, &e) < 0) return berth_make_error(err, 0, "seccomp: errnoRet must be an integer");
  if (!a) return berth_make_error(err, 0, "seccomp: an action is required");
  if (!strcmp(a, "SCMP_ACT_ALLOW")) *out = SECCOMP_RET_ALLOW;
  else if (!strcmp(a, "SCMP_ACT_ERRNO")) *out = SECCOMP_RET_ERRNO | (uint32_t) (e & SECCOMP_RET_DATA);
  else if (!strcmp(a, "SCMP_ACT_KILL") || !strcmp(a, "SCMP_ACT_KILL_THREAD")) *out = SECCOMP_RET_KILL_THREAD;
  else if (!strcmp(a, "SCMP_ACT_KILL_PROCESS")) *out = SECCOMP_RET_KILL_PROCESS;
  else if (!strcmp(a, "SCMP_ACT_TRAP")) *out = SECCOMP_RET_TRAP;
  else if (!strcmp(a, "SCMP_ACT_LOG")) *out = SECCOMP_RET_LOG;
  else if (!strcmp(a, "SCMP_ACT_TRACE")) *out = SECCOMP_RET_TRACE | (uint32_t) ((errno_ret ? e : ENOSYS) & SECCOMP_RET_DATA);
  else return berth_make_error(err, ENOTSUP, "seccomp: unsupported action `%s`", a);
  return 0;
}

/* jt/jf markers resolved after a condition / rule is emitted */
#define J_PASS 0x1000 /* to the next condition */
#define J_FAIL 0x2000 /* past the rule */

struct prog {
  struct sock_filter *insns;
  int *jt, *jf; /* unresolved targets (marker or literal) */
  size_t len, cap;
};

static void emit(struct prog *p, uint16_t code, int jt, int jf, uint32_t k) {
  if (p->len == p->cap) {
    p->cap = p->cap ? p->cap * 2 : 256;
    p->insns = xrealloc(p->insns, p->cap * sizeof *p->insns);
    p->jt = xrealloc(p->jt, p->cap * sizeof *p->jt);
    p->jf = xrealloc(p->jf, p->cap * sizeof *p->jf);
  }
  p->insns[p->len] = (struct sock_filter) {code, 0, 0, k};
  p->jt[p->len] = jt;
  p->jf[p->len] = jf;
  p->len++;
}

static int resolve(struct prog *p, size_t from, int marker, size_t target, berth_err_t *err) {
  for (size_t i = from; i < p->len; i++) {
    int *js[2] = {&p->jt[i], &p->jf[i]};
    for (int k = 0; k < 2; k++) {
      if (*js[k] != marker) continue;
      size_t off = target - (i + 1);
      if (off > 255) return berth_make_error(err, E2BIG, "seccomp: rule too large for a BPF jump");
      *js[k] = (int) off;
    }
  }
  return 0;
}

#define LD_ABS(off) emit(p, BPF_LD | BPF_W | BPF_ABS, 0, 0, (off))
#define JEQ(k, t, f) emit(p, BPF_JMP | BPF_JEQ | BPF_K, (t), (f), (k))
#define JGT(k, t, f) emit(p, BPF_JMP | BPF_JGT | BPF_K, (t), (f), (k))
#define JGE(k, t, f) emit(p, BPF_JMP | BPF_JGE | BPF_K, (t), (f), (k))
#define AND(k) emit(p, BPF_ALU | BPF_AND | BPF_K, 0, 0, (k))
#define RET(k) emit(p, BPF_RET | BPF_K, 0, 0, (k))

/* little-endian targets: the low word of args[i] comes first */
#define ARG_LO(i) ((uint32_t) (offsetof(struct seccomp_data, args) + 8 * (i)))
#define ARG_HI(i) (ARG_LO(i) + 4)

static int emit_condition(struct prog *p, json_value *c, berth_err_t *err) {
  uint64_t index, value = 0, two = 0;
  const char *op = json_get_string(c, "op");
  if (json_as_uint64(json_get(c, "index"), &index) < 0 || index > 5) return berth_make_error(err, 0, "seccomp: args index must be 0..5");
  if (json_as_uint64(json_get(c, "value"), &value) < 0) return berth_make_error(err, 0, "seccomp: args value must be an integer");
  if (json_get(c, "valueTwo") && json_as_uint64(json_get(c, "valueTwo"), &two) < 0) return berth_make_error(err, 0, "seccomp: args valueTwo must be an integer");
  uint32_t hi = (uint32_t) (value >> 32), lo = (uint32_t) value;
  if (!op) return berth_make_error(err, 0, "seccomp: args op is required");
  if (!strcmp(op, "SCMP_CMP_EQ")) {
    LD_ABS(ARG_HI(index)); JEQ(hi, 0, J_FAIL); LD_ABS(ARG_LO(index)); JEQ(lo, J_PASS, J_FAIL);
  } else if (!strcmp(op, "SCMP_CMP_NE")) {
    LD_ABS(ARG_HI(index)); JEQ(hi, 0, J_PASS); LD_ABS(ARG_LO(index)); JEQ(lo, J_FAIL, J_PASS);
  } else if (!strcmp(op, "SCMP_CMP_MASKED_EQ")) {
    uint32_t dhi = (uint32_t) (two >> 32), dlo = (uint32_t) two;
    LD_ABS(ARG_HI(index)); AND(hi); JEQ(dhi, 0, J_FAIL); LD_ABS(ARG_LO(index)); AND(lo); JEQ(dlo, J_PASS, J_FAIL);
  } else if (!strcmp(op, "SCMP_CMP_GT") || !strcmp(op, "SCMP_CMP_GE")) {
    bool ge = !strcmp(op, "SCMP_CMP_GE");
    LD_ABS(ARG_HI(index)); JGT(hi, J_PASS, 0); JEQ(hi, 0, J_FAIL); LD_ABS(ARG_LO(index));
    if (ge) JGE(lo, J_PASS, J_FAIL);
    else JGT(lo, J_PASS, J_FAIL);
  } else if (!strcmp(op, "SCMP_CMP_LT") || !strcmp(op, "SCMP_CMP_LE")) {
    /* LT = !GE, LE = !GT */
    bool le = !strcmp(op, "SCMP_CMP_LE");
    LD_ABS(ARG_HI(index)); JGT(hi, J_FAIL, 0); JEQ(hi, 0, J_PASS); LD_ABS(ARG_LO(index));
    if (le) JGT(lo, J_FAIL, J_PASS);
    else JGE(lo, J_FAIL, J_PASS);
  } else {
    return berth_make_error(err, ENOTSUP, "seccomp: unsupported op `%s`", op);
  }
  return 0;
}

int seccomp_compile(json_value *profile, struct sock_fprog *out, berth_err_t *err) {
  memset(out, 0, sizeof *out);
  uint32_t def;
  if (parse_action(json_get_string(profile, "defaultAction"), json_get(profile, "defaultErrnoRet"), &def, err) < 0) return berth_error_prepend(err, "linux.seccomp.defaultAction");
  json_value *arches = json_get(profile, "architectures");
  if (arches && arches->type == JSON_ARRAY && arches->len) {
    const char *native[] = NATIVE_NAMES;
    bool found = false;
    for (size_t i = 0; i < arches->len; i++)
      for (int k = 0; k < 2; k++)
        if (native[k] && arches->items[i]->type == JSON_STRING && !strcmp(arches->items[i]->str, native[k])) found = true;
    if (!found) return berth_make_error(err, ENOTSUP, "linux.seccomp.architectures does not include this machine's (%s)", native[0]);
  }
  json_value *flags = json_get(profile, "flags");
  for (size_t i = 0; flags && flags->type == JSON_ARRAY && i < flags->len; i++) {
    const char *f = flags->items[i]->type == JSON_STRING ? flags->items[i]->str : "";
    if (strcmp(f, "SECCOMP_FILTER_FLAG_LOG") && strcmp(f, "SECCOMP_FILTER_FLAG_SPEC_ALLOW") && strcmp(f, "SECCOMP_FILTER_FLAG_TSYNC"))
      return berth_make_error(err, ENOTSUP, "linux.seccomp.flags: unsupported `%s`", f);
  }
  struct prog prog = {0}, *p = &prog;
  LD_ABS(offsetof(struct seccomp_data, arch));
  JEQ(NATIVE_ARCH, 1, 0);
  RET(SECCOMP_RET_KILL_PROCESS);
  LD_ABS(offsetof(struct seccomp_data, nr));
#if defined(__x86_64__)
  JGE(0x40000000U, 0, 1); /* x32 ABI */
  RET(SECCOMP_RET_KILL_PROCESS);
#endif
  json_value *rules = json_get(profile, "syscalls");
  int ret = 0;
  for (size_t r = 0; rules && rules->type == JSON_ARRAY && r < rules->len && ret == 0; r++) {
    json_value *rule = rules->items[r];
    uint32_t action;
    if (parse_action(json_get_string(rule, "action"), json_get(rule, "errnoRet"), &action, err) < 0) {
      ret = berth_error_prepend(err, "linux.seccomp.syscalls[%zu]", r);
      break;
    }
    json_value *names = json_get_array(rule, "names");
    json_value *args = json_get_array(rule, "args");
    if (!names) {
      ret = berth_make_error(err, 0, "linux.seccomp.syscalls[%zu].names must be an array", r);
      break;
    }
    /* the accumulator holds nr at every rule start: arg checks reload it before the rule ends */
    for (size_t n = 0; n < names->len && ret == 0; n++) {
      if (names->items[n]->type != JSON_STRING) continue;
      long nr = seccomp_syscall_number(names->items[n]->str);
      if (nr < 0) continue;
      size_t start = p->len;
      JEQ((uint32_t) nr, 0, J_FAIL);
      if (args && args->len) {
        for (size_t a = 0; a < args->len && ret == 0; a++) {
          size_t cond = p->len;
          if (emit_condition(p, args->items[a], err) < 0) ret = berth_error_prepend(err, "linux.seccomp.syscalls[%zu].args[%zu]", r, a);
          else ret = resolve(p, cond, J_PASS, p->len, err);
        }
        /* failing arg checks land on the nr reload below */
        RET(action);
        if (ret == 0) ret = resolve(p, start, J_FAIL, p->len, err);
        LD_ABS(offsetof(struct seccomp_data, nr));
      } else {
        RET(action);
        if (ret == 0) ret = resolve(p, start, J_FAIL, p->len, err);
      }
    }
  }
  if (ret == 0) RET(def);
  if (ret == 0 && p->len > BPF_MAXINSNS) ret = berth_make_error(err, E2BIG, "linux.seccomp: the compiled filter has %zu instructions (max %d)", p->len, BPF_MAXINSNS);
  if (ret < 0) {
    free(p->insns);
    free(p->jt);
    free(p->jf);
    return ret;
  }
  for (size_t i = 0; i < p->len; i++) {
    p->insns[i].jt = (uint8_t) p->jt[i];
    p->insns[i].jf = (uint8_t) p->jf[i];
  }
  free(p->jt);
  free(p->jf);
  out->len = (unsigned short) p->len;
  out->filter = p->insns;
  return 0;
}

int seccomp_load(const struct sock_fprog *prog, berth_err_t *err) {
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, prog) == 0) return 0;
  if (errno == ENOSYS && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, prog, 0, 0) == 0) return 0;
  return berth_make_error(err, errno, "load the seccomp filter");
}
