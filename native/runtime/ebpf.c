/* cgroup v2 device controller: a BPF_PROG_TYPE_CGROUP_DEVICE program assembled by hand (as runc and crun
 * do) from the device rules, attached to the container's cgroup.
 *
 *   r2 = type (ctx->access_type & 0xffff), r3 = access (ctx->access_type >> 16),
 *   r4 = major, r5 = minor
 *   rules from last to first (the last matching rule decides, as with v1 devices.allow/deny):
 *     type / access subset / major / minor checks jump past the rule on mismatch; else return allow
 *   return 0 (deny) */
#include "cgroup.h"
#include "cleanup.h"
#include "util.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct insns {
  struct bpf_insn *v;
  size_t len, cap;
};

static void put(struct insns *p, uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
  if (p->len == p->cap) {
    p->cap = p->cap ? p->cap * 2 : 64;
    p->v = xrealloc(p->v, p->cap * sizeof *p->v);
  }
  struct bpf_insn *i = &p->v[p->len++];
  memset(i, 0, sizeof *i);
  i->code = code;
  i->dst_reg = dst & 0xf;
  i->src_reg = src & 0xf;
  i->off = off;
  i->imm = imm;
}

#define LDX_W(dst, src, off) put(p, BPF_LDX | BPF_MEM | BPF_W, dst, src, off, 0)
#define AND32(dst, imm) put(p, BPF_ALU | BPF_AND | BPF_K, dst, 0, 0, imm)
#define RSH32(dst, imm) put(p, BPF_ALU | BPF_RSH | BPF_K, dst, 0, 0, imm)
#define MOV32_REG(dst, src) put(p, BPF_ALU | BPF_MOV | BPF_X, dst, src, 0, 0)
#define MOV64_IMM(dst, imm) put(p, BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm)
#define JNE_IMM(dst, imm, off) put(p, BPF_JMP | BPF_JNE | BPF_K, dst, 0, off, imm)
#define EXIT() put(p, BPF_JMP | BPF_EXIT, 0, 0, 0, 0)

static int access_bits(const char *a) {
  int bits = 0;
  if (strchr(a, 'm')) bits |= BPF_DEVCG_ACC_MKNOD;
  if (strchr(a, 'r')) bits |= BPF_DEVCG_ACC_READ;
  if (strchr(a, 'w')) bits |= BPF_DEVCG_ACC_WRITE;
  return bits;
}

/* Build the program; exposed for tests of the assembler through the binary's behaviour. */
static void assemble(const struct cg_dev_rule *rules, size_t n, struct insns *out) {
  struct insns *p = out;
  LDX_W(2, 1, 0);
  AND32(2, 0xffff);
  LDX_W(3, 1, 0);
  RSH32(3, 16);
  LDX_W(4, 1, 4);
  LDX_W(5, 1, 8);
  for (size_t k = n; k > 0; k--) {
    const struct cg_dev_rule *r = &rules[k - 1];
    int bits = access_bits(r->access);
    /* count the checks first: each jumps past the rest of the rule */
    int checks = (r->type != 'a') + (bits != 7 ? 3 : 0) + (r->major >= 0) + (r->minor >= 0);
    int remaining = checks + 2; /* + mov r0 + exit */
    if (r->type != 'a') {
      JNE_IMM(2, r->type == 'b' ? BPF_DEVCG_DEV_BLOCK : BPF_DEVCG_DEV_CHAR, (int16_t) (remaining - 1));
      remaining--;
    }
    if (bits != 7) {
      MOV32_REG(1, 3);
      AND32(1, ~bits);
      JNE_IMM(1, 0, (int16_t) (remaining - 3));
      remaining -= 3;
    }
    if (r->major >= 0) {
      JNE_IMM(4, (int32_t) r->major, (int16_t) (remaining - 1));
      remaining--;
    }
    if (r->minor >= 0) {
      JNE_IMM(5, (int32_t) r->minor, (int16_t) (remaining - 1));
      remaining--;
    }
    MOV64_IMM(0, r->allow ? 1 : 0);
    EXIT();
    if (checks == 0) return; /* matches everything: what follows is unreachable (the verifier refuses it) */
  }
  MOV64_IMM(0, 0);
  EXIT();
}

static long bpf(int cmd, union bpf_attr *attr) { return syscall(SYS_bpf, cmd, attr, sizeof *attr); }

int cg_bpf_devices_attach(const char *cgroup_dir, const struct cg_dev_rule *rules, size_t n, berth_err_t *err) {
  struct insns prog = {0};
  assemble(rules, n, &prog);
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
  attr.insns = (uint64_t) (uintptr_t) prog.v;
  attr.insn_cnt = (uint32_t) prog.len;
  attr.license = (uint64_t) (uintptr_t) "GPL";
  cleanup_close int prog_fd = (int) bpf(BPF_PROG_LOAD, &attr);
  if (prog_fd < 0) {
    int e = errno;
    static char log[8192];
    attr.log_buf = (uint64_t) (uintptr_t) log;
    attr.log_size = sizeof log;
    attr.log_level = 1;
    log[0] = 0;
    int fd2 = (int) bpf(BPF_PROG_LOAD, &attr);
    if (fd2 >= 0) close(fd2);
    free(prog.v);
    return berth_make_error(err, e, "load the cgroup device BPF program (%zu rules)%s%s", n, log[0] ? ": " : "", log);
  }
  free(prog.v);
  cleanup_close int cg_fd = open(cgroup_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cg_fd < 0) return berth_make_error(err, errno, "open `%s`", cgroup_dir);
  memset(&attr, 0, sizeof attr);
  attr.target_fd = (uint32_t) cg_fd;
  attr.attach_bpf_fd = (uint32_t) prog_fd;
  attr.attach_type = BPF_CGROUP_DEVICE;
  attr.attach_flags = BPF_F_ALLOW_MULTI;
  if (bpf(BPF_PROG_ATTACH, &attr) < 0) return berth_make_error(err, errno, "attach the device BPF program to `%s`", cgroup_dir);
  return 0;
}
