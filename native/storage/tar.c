/* Streaming tar reader (see tar.h for the formats and bounds). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "tar.h"
#include "util.h"

#define BLOCK 512
#define BUF_SIZE (256u * 1024)

/* PAX values of one extended header. */
struct pax_values {
  char *path, *linkpath;
  bool has_size, has_uid, has_gid, has_mtime;
  uint64_t size, uid, gid;
  struct timespec mtime;
  struct tar_xattr *xattrs;
  size_t nxattrs;
  /* GNU sparse */
  char *sparse_name;
  bool has_realsize, has_major, has_minor, has_map, has_offsets;
  uint64_t realsize, major, minor;
  struct tar_sparse *sparse;
  size_t nsparse;
  bool pending_offset; /* 0.0: an offset waiting for its numbytes */
};

struct tar_reader {
  int fd;
  unsigned char *buf;
  size_t pos, len;
  bool eof;
  bool is_pipe;
  bool is_file;      /* a regular file: data can be copied in the kernel (copy_file_range) */
  uint64_t file_off; /* bytes read from fd so far */
  uint64_t consumed; /* bytes handed to the parser */
  uint64_t left;     /* data bytes left in the current entry */
  uint64_t pad;      /* padding after them */
};

static int corrupt(berth_err_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int corrupt(berth_err_t *err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  cleanup_free char *m = NULL;
  if (vasprintf(&m, fmt, ap) < 0) m = NULL;
  va_end(ap);
  return berth_make_error(err, EBADMSG, "layer is not a valid tar: %s", m ? m : "?");
}

tar_reader *tar_reader_new(int fd) {
  tar_reader *r = xmalloc0(sizeof *r);
  r->fd = fd;
  r->buf = xmalloc(BUF_SIZE);
  struct stat st;
  if (fstat(fd, &st) == 0) {
    r->is_pipe = S_ISFIFO(st.st_mode);
    r->is_file = S_ISREG(st.st_mode);
  }
  /* a bigger pipe: fewer wake-ups of the writer and of us (the default is 64 KiB; 1 MiB is the
     unprivileged maximum) */
  if (r->is_pipe) (void)fcntl(fd, F_SETPIPE_SZ, 1 << 20);
  return r;
}

static void xattrs_free(struct tar_xattr *x, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(x[i].name);
    free(x[i].value);
  }
  free(x);
}

static void pax_clear(struct pax_values *p) {
  free(p->path);
  free(p->linkpath);
  free(p->sparse_name);
  xattrs_free(p->xattrs, p->nxattrs);
  free(p->sparse);
  memset(p, 0, sizeof *p);
}

void tar_reader_free(tar_reader *r) {
  if (!r) return;
  free(r->buf);
  free(r);
}

uint64_t tar_reader_offset(const tar_reader *r) { return r->consumed; }
uint64_t tar_data_left(const tar_reader *r) { return r->left; }

void tar_entry_clear(struct tar_entry *e) {
  free(e->name);
  free(e->linkname);
  xattrs_free(e->xattrs, e->nxattrs);
  free(e->sparse);
  memset(e, 0, sizeof *e);
}

/* Make at least want (≤ BUF_SIZE) bytes available; returns how many are (fewer only at EOF). */
static ssize_t fill(tar_reader *r, size_t want) {
  if (r->len - r->pos >= want) return (ssize_t)(r->len - r->pos);
  if (r->pos > 0) {
    memmove(r->buf, r->buf + r->pos, r->len - r->pos);
    r->len -= r->pos;
    r->pos = 0;
  }
  while (r->len < want && !r->eof) {
    ssize_t n = read(r->fd, r->buf + r->len, BUF_SIZE - r->len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (n == 0) r->eof = true;
    r->len += (size_t)n;
    r->file_off += (uint64_t)n;
  }
  return (ssize_t)(r->len - r->pos);
}

/* Exactly n bytes (≤ BUF_SIZE) into view *out: 1 ok, 0 clean EOF before any byte, <0 error. */
static int take(tar_reader *r, size_t n, const unsigned char **out, berth_err_t *err) {
  ssize_t have = fill(r, n);
  if (have < 0) return berth_make_error(err, errno, "read layer");
  if (have == 0 && n > 0) return 0;
  if ((size_t)have < n) return corrupt(err, "unexpected end of data");
  *out = r->buf + r->pos;
  r->pos += n;
  r->consumed += n;
  return 1;
}

/* Discard n bytes of input. */
static int skip(tar_reader *r, uint64_t n, berth_err_t *err) {
  while (n > 0) {
    size_t chunk = n > BUF_SIZE ? BUF_SIZE : (size_t)n;
    ssize_t have = fill(r, 1);
    if (have < 0) return berth_make_error(err, errno, "read layer");
    if (have == 0) return corrupt(err, "unexpected end of data");
    if ((size_t)have < chunk) chunk = (size_t)have;
    r->pos += chunk;
    r->consumed += chunk;
    n -= chunk;
  }
  return 0;
}

/* Read a whole record of n bytes (PAX, GNU long name) into a fresh NUL-terminated buffer. */
static int read_record(tar_reader *r, uint64_t n, char **out, berth_err_t *err) {
  if (n > TAR_MAX_RECORD) return corrupt(err, "a %llu-byte header record exceeds the limit", (unsigned long long)n);
  char *b = xmalloc((size_t)n + 1);
  size_t got = 0;
  while (got < n) {
    ssize_t have = fill(r, 1);
    if (have < 0) {
      free(b);
      return berth_make_error(err, errno, "read layer");
    }
    if (have == 0) {
      free(b);
      return corrupt(err, "unexpected end of data");
    }
    size_t c = (size_t)have < n - got ? (size_t)have : (size_t)(n - got);
    memcpy(b + got, r->buf + r->pos, c);
    r->pos += c;
    r->consumed += c;
    got += c;
  }
  b[n] = '\0';
  uint64_t pad = (BLOCK - n % BLOCK) % BLOCK;
  if (skip(r, pad, err) < 0) {
    free(b);
    return -1;
  }
  *out = b;
  return 0;
}

int tar_skip_data(tar_reader *r, uint64_t n, berth_err_t *err) {
  if (n > r->left) n = r->left;
  if (skip(r, n, err) < 0) return -1;
  r->left -= n;
  return 0;
}

int tar_copy_data(tar_reader *r, int fd, uint64_t n, berth_err_t *err) {
  if (n > r->left) return corrupt(err, "entry data shorter than its sparse map");
  r->left -= n;
  /* what is buffered first */
  while (n > 0 && r->pos < r->len) {
    size_t c = r->len - r->pos < n ? r->len - r->pos : (size_t)n;
    if (berth_write_all(fd, r->buf + r->pos, c) < 0) return berth_make_error(err, errno, "write");
    r->pos += c;
    r->consumed += c;
    n -= c;
  }
  /* then straight from a file or a pipe into the file, without a trip through user space */
  while (n >= 65536 && r->is_file) {
    loff_t off = (loff_t)r->file_off;
    ssize_t c = copy_file_range(r->fd, &off, fd, NULL, n > (1u << 30) ? (1u << 30) : (size_t)n, 0);
    if (c < 0) {
      if (errno == EINTR) continue;
      if (errno == EXDEV || errno == EINVAL || errno == EOPNOTSUPP || errno == ENOSYS) {
        r->is_file = false; /* not between these filesystems: copy instead */
        break;
      }
      return berth_make_error(err, errno, "write");
    }
    if (c == 0) return corrupt(err, "unexpected end of data");
    r->file_off += (uint64_t)c;
    if (lseek(r->fd, (off_t)r->file_off, SEEK_SET) < 0) return berth_make_error(err, errno, "seek layer");
    r->consumed += (uint64_t)c;
    n -= (uint64_t)c;
  }
  while (n >= 65536 && r->is_pipe && !r->eof) {
    ssize_t s = splice(r->fd, NULL, fd, NULL, n > (1u << 30) ? (1u << 30) : (size_t)n, SPLICE_F_MOVE);
    if (s < 0) {
      if (errno == EINTR) continue;
      if (errno == EINVAL) { /* this filesystem cannot splice: copy instead */
        r->is_pipe = false;
        break;
      }
      return berth_make_error(err, errno, "write");
    }
    if (s == 0) return corrupt(err, "unexpected end of data");
    r->consumed += (uint64_t)s;
    r->file_off += (uint64_t)s;
    n -= (uint64_t)s;
  }
  while (n > 0) {
    r->pos = r->len = 0;
    ssize_t have = fill(r, 1);
    if (have < 0) return berth_make_error(err, errno, "read layer");
    if (have == 0) return corrupt(err, "unexpected end of data");
    size_t c = (size_t)have < n ? (size_t)have : (size_t)n;
    if (berth_write_all(fd, r->buf + r->pos, c) < 0) return berth_make_error(err, errno, "write");
    r->pos += c;
    r->consumed += c;
    n -= c;
  }
  return 0;
}

int tar_drain(tar_reader *r, berth_err_t *err) {
  for (;;) {
    r->consumed += r->len - r->pos;
    r->pos = r->len = 0;
    if (r->eof) return 0;
    ssize_t have = fill(r, 1);
    if (have < 0) return berth_make_error(err, errno, "read layer");
  }
}

/* ---- numbers ---- */

/* An octal field (spaces/NULs around it) or GNU base-256 (high bit of the first byte). */
static int parse_numeric(const unsigned char *f, size_t n, uint64_t *out, const char *what, berth_err_t *err) {
  if (n > 0 && (f[0] & 0x80)) {
    if (f[0] & 0x40) return corrupt(err, "negative %s", what);
    uint64_t v = f[0] & 0x3f;
    for (size_t i = 1; i < n; i++) {
      if (v >> 56) return corrupt(err, "%s out of range", what);
      v = v << 8 | f[i];
    }
    *out = v;
    return 0;
  }
  size_t i = 0;
  while (i < n && (f[i] == ' ' || f[i] == '\0')) i++;
  uint64_t v = 0;
  bool any = false;
  for (; i < n && f[i] >= '0' && f[i] <= '7'; i++) {
    if (v >> 61) return corrupt(err, "%s out of range", what);
    v = v << 3 | (uint64_t)(f[i] - '0');
    any = true;
  }
  for (; i < n; i++)
    if (f[i] != ' ' && f[i] != '\0') return corrupt(err, "bad %s field", what);
  *out = any ? v : 0;
  return 0;
}

static int parse_decimal(const char *s, size_t n, uint64_t *out, const char *what, berth_err_t *err) {
  if (n == 0) return corrupt(err, "empty %s", what);
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return corrupt(err, "bad %s %.*s", what, (int)(n > 40 ? 40 : n), s);
    if (v > (UINT64_MAX - 9) / 10) return corrupt(err, "%s out of range", what);
    v = v * 10 + (uint64_t)(s[i] - '0');
  }
  *out = v;
  return 0;
}

/* PAX time: [-]seconds[.fraction] */
static int parse_pax_time(const char *s, size_t n, struct timespec *ts, berth_err_t *err) {
  bool neg = n > 0 && s[0] == '-';
  size_t i = neg ? 1 : 0, dot = i;
  while (dot < n && s[dot] != '.') dot++;
  uint64_t sec;
  if (parse_decimal(s + i, dot - i, &sec, "mtime", err) < 0) return -1;
  if (sec > (uint64_t)INT64_MAX / 2) return corrupt(err, "mtime out of range");
  long nsec = 0;
  if (dot < n) {
    int digits = 0;
    for (size_t k = dot + 1; k < n; k++) {
      if (s[k] < '0' || s[k] > '9') return corrupt(err, "bad mtime");
      if (digits < 9) {
        nsec = nsec * 10 + (s[k] - '0');
        digits++;
      }
    }
    while (digits++ < 9) nsec *= 10;
  }
  if (neg) {
    ts->tv_sec = -(time_t)sec;
    if (nsec) {
      ts->tv_sec -= 1;
      nsec = 1000000000L - nsec;
    }
  } else {
    ts->tv_sec = (time_t)sec;
  }
  ts->tv_nsec = nsec;
  return 0;
}

/* ---- PAX ---- */

static bool has_nul(const char *s, size_t n) { return memchr(s, '\0', n) != NULL; }

static int add_sparse(struct tar_sparse **v, size_t *n, uint64_t off, uint64_t len, berth_err_t *err) {
  if (*n >= TAR_MAX_SPARSE) return corrupt(err, "sparse map too long");
  if ((*n & (*n - 1)) == 0) *v = xrealloc(*v, (*n ? *n * 2 : 4) * sizeof **v);
  (*v)[*n].offset = off;
  (*v)[*n].length = len;
  (*n)++;
  return 0;
}

static int pax_record(struct pax_values *p, const char *k, const char *v, size_t vn, bool global, berth_err_t *err) {
  if (strcmp(k, "path") == 0 || strcmp(k, "linkpath") == 0) {
    if (has_nul(v, vn)) return corrupt(err, "NUL byte in PAX %s", k);
    if (vn >= TAR_MAX_NAME) return corrupt(err, "PAX %s too long", k);
    if (global) return 0; /* a global name would rename every entry: ignored, as Go does */
    char **dst = k[0] == 'p' ? &p->path : &p->linkpath;
    free(*dst);
    *dst = strndup(v, vn);
    if (!*dst) abort();
    return 0;
  }
  if (strcmp(k, "size") == 0) {
    if (global) return 0;
    p->has_size = true;
    return parse_decimal(v, vn, &p->size, "PAX size", err);
  }
  if (strcmp(k, "uid") == 0) {
    p->has_uid = true;
    return parse_decimal(v, vn, &p->uid, "PAX uid", err);
  }
  if (strcmp(k, "gid") == 0) {
    p->has_gid = true;
    return parse_decimal(v, vn, &p->gid, "PAX gid", err);
  }
  if (strcmp(k, "mtime") == 0) {
    p->has_mtime = true;
    return parse_pax_time(v, vn, &p->mtime, err);
  }
  if (strncmp(k, "SCHILY.xattr.", 13) == 0) {
    const char *name = k + 13;
    if (*name == '\0') return 0;
    if (vn > TAR_MAX_XATTR_VALUE) return corrupt(err, "xattr %s value too long", name);
    for (size_t i = 0; i < p->nxattrs; i++) /* a repeated name: the last one wins */
      if (strcmp(p->xattrs[i].name, name) == 0) {
        free(p->xattrs[i].value);
        p->xattrs[i].value = xmalloc(vn ? vn : 1);
        memcpy(p->xattrs[i].value, v, vn);
        p->xattrs[i].value_len = vn;
        return 0;
      }
    if (p->nxattrs >= TAR_MAX_XATTRS) return corrupt(err, "too many xattrs");
    p->xattrs = xrealloc(p->xattrs, (p->nxattrs + 1) * sizeof *p->xattrs);
    struct tar_xattr *x = &p->xattrs[p->nxattrs++];
    x->name = xstrdup(name);
    x->value = xmalloc(vn ? vn : 1);
    memcpy(x->value, v, vn);
    x->value_len = vn;
    return 0;
  }
  if (strncmp(k, "GNU.sparse.", 11) != 0 || global) return 0;
  const char *s = k + 11;
  if (strcmp(s, "name") == 0) {
    if (has_nul(v, vn) || vn >= TAR_MAX_NAME) return corrupt(err, "bad GNU.sparse.name");
    free(p->sparse_name);
    p->sparse_name = strndup(v, vn);
    if (!p->sparse_name) abort();
    return 0;
  }
  if (strcmp(s, "realsize") == 0 || strcmp(s, "size") == 0) {
    p->has_realsize = true;
    return parse_decimal(v, vn, &p->realsize, "GNU.sparse.size", err);
  }
  if (strcmp(s, "major") == 0) {
    p->has_major = true;
    return parse_decimal(v, vn, &p->major, "GNU.sparse.major", err);
  }
  if (strcmp(s, "minor") == 0) {
    p->has_minor = true;
    return parse_decimal(v, vn, &p->minor, "GNU.sparse.minor", err);
  }
  if (strcmp(s, "numblocks") == 0) return 0; /* the map itself says how many */
  if (strcmp(s, "map") == 0) { /* 0.1: "off,len,off,len…" */
    p->has_map = true;
    p->nsparse = 0;
    size_t i = 0;
    if (vn == 0) return 0;
    for (;;) {
      uint64_t nums[2];
      for (int j = 0; j < 2; j++) {
        size_t e = i;
        while (e < vn && v[e] != ',') e++;
        if (parse_decimal(v + i, e - i, &nums[j], "GNU.sparse.map", err) < 0) return -1;
        if (j == 0 && e >= vn) return corrupt(err, "GNU.sparse.map has an odd number of values");
        i = e + 1;
      }
      if (add_sparse(&p->sparse, &p->nsparse, nums[0], nums[1], err) < 0) return -1;
      if (i > vn) break;
    }
    return 0;
  }
  /* 0.0: GNU.sparse.offset / GNU.sparse.numbytes, repeated in order */
  if (strcmp(s, "offset") == 0) {
    if (p->pending_offset) return corrupt(err, "GNU.sparse.offset without numbytes");
    uint64_t off;
    if (parse_decimal(v, vn, &off, "GNU.sparse.offset", err) < 0) return -1;
    if (add_sparse(&p->sparse, &p->nsparse, off, 0, err) < 0) return -1;
    p->pending_offset = true;
    p->has_offsets = true;
    return 0;
  }
  if (strcmp(s, "numbytes") == 0) {
    if (!p->pending_offset) return corrupt(err, "GNU.sparse.numbytes without offset");
    p->pending_offset = false;
    return parse_decimal(v, vn, &p->sparse[p->nsparse - 1].length, "GNU.sparse.numbytes", err);
  }
  return 0;
}

/* "%d key=value\n" records. */
static int parse_pax(struct pax_values *p, const char *b, size_t n, bool global, berth_err_t *err) {
  size_t i = 0;
  while (i < n) {
    size_t sp = i;
    while (sp < n && b[sp] >= '0' && b[sp] <= '9') sp++;
    if (sp == i || sp >= n || b[sp] != ' ') {
      /* GNU tar pads a PAX record block with NULs: everything after is empty */
      for (size_t k = i; k < n; k++)
        if (b[k] != '\0') return corrupt(err, "bad PAX record");
      break;
    }
    uint64_t len;
    if (parse_decimal(b + i, sp - i, &len, "PAX record length", err) < 0) return -1;
    if (len < 5 || len > n - i || b[i + len - 1] != '\n') return corrupt(err, "bad PAX record length");
    const char *k = b + sp + 1;
    const char *end = b + i + len - 1;
    const char *eq = memchr(k, '=', (size_t)(end - k));
    if (!eq || eq == k) return corrupt(err, "bad PAX record");
    cleanup_free char *key = strndup(k, (size_t)(eq - k));
    if (!key) abort();
    if (has_nul(key, strlen(key)) || strlen(key) != (size_t)(eq - k)) return corrupt(err, "NUL in PAX key");
    if (pax_record(p, key, eq + 1, (size_t)(end - eq - 1), global, err) < 0) return -1;
    i += len;
  }
  if (p->pending_offset) return corrupt(err, "GNU.sparse.offset without numbytes");
  return 0;
}

/* ---- headers ---- */

static bool all_zero(const unsigned char *b) {
  for (int i = 0; i < BLOCK; i++)
    if (b[i]) return false;
  return true;
}

static int checksum_ok(const unsigned char *b, berth_err_t *err) {
  uint64_t want;
  if (parse_numeric(b + 148, 8, &want, "checksum", err) < 0) return -1;
  uint64_t u = 0;
  int64_t s = 0;
  for (int i = 0; i < BLOCK; i++) {
    unsigned char c = (i >= 148 && i < 156) ? ' ' : b[i];
    u += c;
    s += (signed char)c;
  }
  if (want != u && (int64_t)want != s) return corrupt(err, "header checksum mismatch");
  return 0;
}

static char *field_str(const unsigned char *f, size_t n) {
  size_t l = 0;
  while (l < n && f[l]) l++;
  char *s = xmalloc(l + 1);
  memcpy(s, f, l);
  s[l] = '\0';
  return s;
}

enum tar_format { FMT_V7, FMT_USTAR, FMT_GNU, FMT_STAR };

/* As Go decides it. Headers whose name prefix other readers would read differently (a "ustar\0" magic
 * with another version, star's shorter prefix) are refused rather than guessed: one layer, one tree. */
static int format_of(const unsigned char *b, enum tar_format *f, berth_err_t *err) {
  *f = FMT_V7;
  if (memcmp(b + 257, "ustar\0", 6) == 0) {
    if (memcmp(b + 263, "00", 2) != 0 && b[345]) return corrupt(err, "ustar header of an unknown version");
    *f = memcmp(b + 508, "tar\0", 4) == 0 ? FMT_STAR : FMT_USTAR;
    if (*f == FMT_STAR && b[345]) return corrupt(err, "star header with a name prefix");
  } else if (memcmp(b + 257, "ustar ", 6) == 0 && memcmp(b + 263, " \0", 2) == 0) {
    *f = FMT_GNU;
  }
  return 0;
}

static int validate_sparse(struct tar_entry *e, berth_err_t *err) {
  uint64_t end = 0, sum = 0;
  for (size_t i = 0; i < e->nsparse; i++) {
    struct tar_sparse *s = &e->sparse[i];
    if (s->offset > INT64_MAX || s->length > INT64_MAX || s->offset + s->length < s->offset ||
        s->offset < end)
      return corrupt(err, "%s: invalid sparse map", e->name);
    end = s->offset + s->length;
    if (sum + s->length < sum) return corrupt(err, "%s: invalid sparse map", e->name);
    sum += s->length;
  }
  if (end > e->realsize) return corrupt(err, "%s: sparse map beyond the file size", e->name);
  if (sum != e->size) return corrupt(err, "%s: sparse map does not match the stored data", e->name);
  return 0;
}

/* Old GNU sparse: 4 map entries in the header, more in 512-byte extension blocks of 21 each. */
static int read_oldgnu_sparse(tar_reader *r, const unsigned char *hdr, struct tar_entry *e, berth_err_t *err) {
  unsigned char ext = hdr[482];
  for (int i = 0; i < 4; i++) {
    uint64_t off, len;
    const unsigned char *f = hdr + 386 + i * 24;
    if (f[0] == 0) break;
    if (parse_numeric(f, 12, &off, "sparse offset", err) < 0 || parse_numeric(f + 12, 12, &len, "sparse length", err) < 0)
      return -1;
    if (add_sparse(&e->sparse, &e->nsparse, off, len, err) < 0) return -1;
  }
  if (parse_numeric(hdr + 483, 12, &e->realsize, "sparse realsize", err) < 0) return -1;
  while (ext) {
    const unsigned char *b;
    int rc = take(r, BLOCK, &b, err);
    if (rc <= 0) return rc < 0 ? -1 : corrupt(err, "unexpected end of data");
    for (int i = 0; i < 21; i++) {
      uint64_t off, len;
      const unsigned char *f = b + i * 24;
      if (f[0] == 0) break;
      if (parse_numeric(f, 12, &off, "sparse offset", err) < 0 ||
          parse_numeric(f + 12, 12, &len, "sparse length", err) < 0)
        return -1;
      if (add_sparse(&e->sparse, &e->nsparse, off, len, err) < 0) return -1;
    }
    ext = b[504];
  }
  e->sparse_kind = TAR_SPARSE_OLDGNU;
  return 0;
}

/* PAX 1.0: the map is decimal lines at the front of the data, padded to a block. */
static int read_pax1_map(tar_reader *r, struct tar_entry *e, berth_err_t *err) {
  uint64_t used = 0;
  char line[32];
  size_t ll = 0;
  uint64_t count = 0, got = 0, pair[2];
  int state = 0; /* 0: count, 1: offset, 2: length */
  while (state == 0 || got < count) {
    const unsigned char *b;
    if (used >= e->size) return corrupt(err, "%s: sparse map runs past the data", e->name);
    int rc = take(r, 1, &b, err);
    if (rc <= 0) return rc < 0 ? -1 : corrupt(err, "unexpected end of data");
    used++;
    if (*b != '\n') {
      if (ll + 1 >= sizeof line) return corrupt(err, "%s: bad sparse map", e->name);
      line[ll++] = (char)*b;
      continue;
    }
    uint64_t v;
    if (parse_decimal(line, ll, &v, "sparse map", err) < 0) return -1;
    ll = 0;
    if (state == 0) {
      if (v > TAR_MAX_SPARSE) return corrupt(err, "%s: sparse map too long", e->name);
      count = v;
      state = 1;
    } else {
      pair[state - 1] = v;
      if (state == 2) {
        if (add_sparse(&e->sparse, &e->nsparse, pair[0], pair[1], err) < 0) return -1;
        got++;
        state = 1;
      } else {
        state = 2;
      }
    }
  }
  uint64_t pad = (BLOCK - used % BLOCK) % BLOCK;
  if (used + pad > e->size) return corrupt(err, "%s: sparse map runs past the data", e->name);
  if (skip(r, pad, err) < 0) return -1;
  e->size -= used + pad;
  return 0;
}

int tar_next(tar_reader *r, struct tar_entry *e, berth_err_t *err) {
  tar_entry_clear(e);
  if (skip(r, r->left + r->pad, err) < 0) return -1;
  r->left = r->pad = 0;
  struct pax_values local = {0};
  bool local_used = false;
  cleanup_free char *longname = NULL;
  cleanup_free char *longlink = NULL;
  int rc;
  for (;;) {
    const unsigned char *b;
    rc = take(r, BLOCK, &b, err);
    if (rc < 0) goto fail;
    bool pending = local_used || longname || longlink;
    if (rc == 0 || all_zero(b)) {
      /* the end: an extended header must not be left without its entry */
      if (pending) {
        rc = corrupt(err, "unexpected end of data after an extended header");
        goto fail;
      }
      if (rc > 0) {
        rc = take(r, BLOCK, &b, err);
        if (rc < 0) goto fail;
        if (rc > 0 && !all_zero(b)) {
          rc = corrupt(err, "data after a zero block (end of archive)");
          goto fail;
        }
      }
      pax_clear(&local);
      return 0;
    }
    if (checksum_ok(b, err) < 0) goto fail;
    enum tar_format fmt;
    if (format_of(b, &fmt, err) < 0) goto fail;
    char type = (char)b[156];
    uint64_t size;
    if (parse_numeric(b + 124, 12, &size, "size", err) < 0) goto fail;
    if (type == 'x' || type == 'g') {
      cleanup_free char *rec = NULL;
      if (read_record(r, size, &rec, err) < 0) goto fail;
      if (type == 'g') { /* checked, not applied (see below) */
        struct pax_values global = {0};
        int g = parse_pax(&global, rec, (size_t)size, true, err);
        pax_clear(&global);
        if (g < 0) goto fail;
        continue;
      }
      if (parse_pax(&local, rec, (size_t)size, false, err) < 0) goto fail;
      local_used = true;
      continue;
    }
    if (type == 'L' || type == 'K') {
      char *rec = NULL;
      if (read_record(r, size, &rec, err) < 0) goto fail;
      if (strlen(rec) >= TAR_MAX_NAME) {
        free(rec);
        rc = corrupt(err, "GNU long name too long");
        goto fail;
      }
      if (type == 'L') {
        free(longname);
        longname = rec;
      } else {
        free(longlink);
        longlink = rec;
      }
      continue;
    }

    /* a real entry */
    e->type = type == '\0' || type == '7' ? '0' : type;
    bool plain_file = type == '\0' || type == '0';
    uint64_t v;
    if (parse_numeric(b + 100, 8, &v, "mode", err) < 0) goto fail;
    e->mode = (mode_t)(v & 07777);
    if (parse_numeric(b + 108, 8, &e->uid, "uid", err) < 0 || parse_numeric(b + 116, 8, &e->gid, "gid", err) < 0)
      goto fail;
    if (parse_numeric(b + 136, 12, &v, "mtime", err) < 0) goto fail;
    e->mtime.tv_sec = (time_t)v;
    e->mtime.tv_nsec = 0;
    if (fmt != FMT_V7) {
      uint64_t ma, mi;
      if (parse_numeric(b + 329, 8, &ma, "devmajor", err) < 0 || parse_numeric(b + 337, 8, &mi, "devminor", err) < 0)
        goto fail;
      if (ma > 0xfff || mi > 0xfffff) {
        rc = corrupt(err, "device number out of range");
        goto fail;
      }
      e->devmajor = (unsigned)ma;
      e->devminor = (unsigned)mi;
    }
    /* name: ustar prefix + name; GNU long name; PAX path (PAX wins, as in Go) */
    cleanup_free char *nm = field_str(b, 100);
    if (fmt == FMT_USTAR || fmt == FMT_STAR) {
      cleanup_free char *prefix = field_str(b + 345, fmt == FMT_STAR ? 131 : 155);
      if (*prefix) {
        char *joined = xasprintf("%s/%s", prefix, nm);
        free(nm);
        nm = joined;
      }
    }
    if (longname) {
      free(nm);
      nm = steal_pointer(&longname);
    }
    if (local.path) {
      free(nm);
      nm = steal_pointer(&local.path);
    }
    e->linkname = longlink ? steal_pointer(&longlink) : field_str(b + 157, 100);
    if (local.linkpath) {
      free(e->linkname);
      e->linkname = steal_pointer(&local.linkpath);
    }
    e->size = local.has_size ? local.size : size;
    /* old tars mark directories with a trailing slash on a regular file */
    size_t nl = strlen(nm);
    if (plain_file && nl > 0 && nm[nl - 1] == '/') e->type = '5';
    /* Each entry's own PAX values. A global header ('g') is read and checked but not applied: Go's
       archive/tar (containerd's reader) ignores it too, and readers that do apply it disagree on how. */
    {
      struct pax_values *p = &local;
      if (p->has_uid) e->uid = p->uid;
      if (p->has_gid) e->gid = p->gid;
      if (p->has_mtime) e->mtime = p->mtime;
      for (size_t i = 0; i < p->nxattrs; i++) {
        size_t j = 0;
        while (j < e->nxattrs && strcmp(e->xattrs[j].name, p->xattrs[i].name) != 0) j++;
        if (j == e->nxattrs) {
          if (e->nxattrs >= TAR_MAX_XATTRS) {
            rc = corrupt(err, "too many xattrs");
            goto fail;
          }
          e->xattrs = xrealloc(e->xattrs, (e->nxattrs + 1) * sizeof *e->xattrs);
          e->xattrs[e->nxattrs++] = (struct tar_xattr){xstrdup(p->xattrs[i].name), NULL, 0};
        }
        free(e->xattrs[j].value);
        e->xattrs[j].value = xmalloc(p->xattrs[i].value_len ? p->xattrs[i].value_len : 1);
        memcpy(e->xattrs[j].value, p->xattrs[i].value, p->xattrs[i].value_len);
        e->xattrs[j].value_len = p->xattrs[i].value_len;
      }
    }
    e->realsize = e->size;
    bool data_type = e->type == '0' || e->type == 'S';
    /* sparse */
    if (e->type == 'S') {
      if (fmt != FMT_GNU) {
        rc = corrupt(err, "sparse header 'S' outside the GNU format");
        goto fail;
      }
      if (read_oldgnu_sparse(r, b, e, err) < 0) goto fail;
      e->type = '0';
    } else if (local.has_major || local.has_minor || local.has_map || local.has_offsets || local.sparse_name ||
               local.has_realsize) {
      if (e->type != '0') {
        rc = corrupt(err, "GNU sparse records on a non-file entry");
        goto fail;
      }
      if (local.has_major && local.major == 1 && local.has_minor && local.minor == 0) {
        e->sparse_kind = TAR_SPARSE_PAX1;
      } else if (local.has_major || local.has_minor) {
        rc = berth_make_error(err, EINVAL, "%s: GNU sparse format %llu.%llu is not supported", nm,
                              (unsigned long long)local.major, (unsigned long long)local.minor);
        goto fail;
      } else {
        e->sparse_kind = TAR_SPARSE_PAX0; /* 0.0 (offset/numbytes) and 0.1 (map) */
        e->sparse = steal_pointer(&local.sparse);
        e->nsparse = local.nsparse;
        local.nsparse = 0;
      }
      if (local.sparse_name) {
        free(nm);
        nm = steal_pointer(&local.sparse_name);
      }
      if (!local.has_realsize) {
        rc = corrupt(err, "%s: GNU sparse file without its size", nm);
        goto fail;
      }
      e->realsize = local.realsize;
    }
    e->name = steal_pointer(&nm);
    if (strlen(e->name) >= TAR_MAX_NAME) {
      rc = corrupt(err, "name too long");
      goto fail;
    }
    /* Only regular files carry data. Readers disagree on a size in a link, directory or device header
       (Go and tar-stream's directories ignore it, tar-stream's links skip it): one layer could then
       mean two trees, so such a header is refused. */
    if (!data_type && e->size > 0) {
      rc = corrupt(err, "tar entry \"%s\": a '%c' entry cannot carry %llu bytes of data", e->name, e->type,
                   (unsigned long long)e->size);
      goto fail;
    }
    r->left = e->size;
    r->pad = (BLOCK - e->size % BLOCK) % BLOCK;
    if (e->sparse_kind == TAR_SPARSE_PAX1) {
      if (read_pax1_map(r, e, err) < 0) goto fail;
      r->left = e->size;
    }
    if (e->sparse_kind != TAR_SPARSE_NONE && validate_sparse(e, err) < 0) goto fail;
    pax_clear(&local);
    return 1;
  }
fail:
  pax_clear(&local);
  tar_entry_clear(e);
  return -1;
}
