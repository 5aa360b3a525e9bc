#include "json.h"
#include "util.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  const char *s;
  size_t pos, len;
  int depth;
} parser;

static void skip_ws(parser *p) {
  while (p->pos < p->len &&
         (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
    p->pos++;
}

static int fail(parser *p, berth_err_t *err, const char *what) {
  return berth_make_error(err, 0, "invalid JSON at offset %zu: %s", p->pos, what);
}

static int parse_value(parser *p, json_value **out, berth_err_t *err);

static void put_utf8(berth_buf *b, uint32_t cp) {
  char c[4];
  if (cp < 0x80) {
    c[0] = (char) cp;
    berth_buf_append(b, c, 1);
  } else if (cp < 0x800) {
    c[0] = (char) (0xC0 | (cp >> 6));
    c[1] = (char) (0x80 | (cp & 0x3F));
    berth_buf_append(b, c, 2);
  } else if (cp < 0x10000) {
    c[0] = (char) (0xE0 | (cp >> 12));
    c[1] = (char) (0x80 | ((cp >> 6) & 0x3F));
    c[2] = (char) (0x80 | (cp & 0x3F));
    berth_buf_append(b, c, 3);
  } else {
    c[0] = (char) (0xF0 | (cp >> 18));
    c[1] = (char) (0x80 | ((cp >> 12) & 0x3F));
    c[2] = (char) (0x80 | ((cp >> 6) & 0x3F));
    c[3] = (char) (0x80 | (cp & 0x3F));
    berth_buf_append(b, c, 4);
  }
}

static int hex4(parser *p, uint32_t *out) {
  if (p->pos + 4 > p->len) return -1;
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p->s[p->pos++];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (uint32_t) (c - '0');
    else if (c >= 'a' && c <= 'f') v |= (uint32_t) (c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (uint32_t) (c - 'A' + 10);
    else return -1;
  }
  *out = v;
  return 0;
}

static int parse_string(parser *p, char **out, size_t *len_out, berth_err_t *err) {
  p->pos++; /* opening quote */
  berth_buf b = {0};
  berth_buf_append(&b, "", 0);
  while (p->pos < p->len) {
    unsigned char c = (unsigned char) p->s[p->pos];
    if (c == '"') {
      p->pos++;
      *out = b.buf;
      if (len_out) *len_out = b.len;
      return 0;
    }
    if (c < 0x20) break;
    if (c != '\\') {
      berth_buf_append(&b, (const char *) &p->s[p->pos], 1);
      p->pos++;
      continue;
    }
    p->pos++;
    if (p->pos >= p->len) break;
    char e = p->s[p->pos++];
    switch (e) {
    case '"': berth_buf_append(&b, "\"", 1); break;
    case '\\': berth_buf_append(&b, "\\", 1); break;
    case '/': berth_buf_append(&b, "/", 1); break;
    case 'b': berth_buf_append(&b, "\b", 1); break;
    case 'f': berth_buf_append(&b, "\f", 1); break;
    case 'n': berth_buf_append(&b, "\n", 1); break;
    case 'r': berth_buf_append(&b, "\r", 1); break;
    case 't': berth_buf_append(&b, "\t", 1); break;
    case 'u': {
      uint32_t cp;
      if (hex4(p, &cp) < 0) goto bad;
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        uint32_t lo;
        if (p->pos + 6 > p->len || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') goto bad;
        p->pos += 2;
        if (hex4(p, &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF) goto bad;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      }
      if (cp == 0) goto bad; /* NUL would truncate C strings */
      put_utf8(&b, cp);
      break;
    }
    default: goto bad;
    }
  }
bad:
  free(b.buf);
  return fail(p, err, "bad string");
}

static int parse_number(parser *p, json_value *v, berth_err_t *err) {
  size_t start = p->pos;
  bool is_int = true;
  if (p->s[p->pos] == '-') p->pos++;
  if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9') return fail(p, err, "bad number");
  while (p->pos < p->len) {
    char c = p->s[p->pos];
    if (c >= '0' && c <= '9') p->pos++;
    else if (c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') {
      is_int = false;
      p->pos++;
    } else break;
  }
  char tmp[64];
  size_t n = p->pos - start;
  if (n >= sizeof tmp) return fail(p, err, "number too long");
  memcpy(tmp, p->s + start, n);
  tmp[n] = 0;
  char *end;
  v->type = JSON_NUMBER;
  v->d = strtod(tmp, &end);
  if (*end) return fail(p, err, "bad number");
  v->negative = tmp[0] == '-';
  if (is_int) {
    errno = 0;
    unsigned long long u = strtoull(tmp + (v->negative ? 1 : 0), &end, 10);
    if (errno == 0 && !*end) {
      v->is_int = true;
      v->u = u;
    }
  } else {
    double a = v->d < 0 ? -v->d : v->d;
    if (a < 9e15 && (double) (uint64_t) a == a) {
      v->is_int = true;
      v->u = (uint64_t) a;
    }
  }
  return 0;
}

static int parse_value(parser *p, json_value **out, berth_err_t *err) {
  skip_ws(p);
  if (p->pos >= p->len) return fail(p, err, "unexpected end");
  if (++p->depth > 200) return fail(p, err, "nesting too deep");
  json_value *v = xmalloc0(sizeof *v);
  char c = p->s[p->pos];
  int ret = 0;
  if (c == '{' || c == '[') {
    bool obj = c == '{';
    v->type = obj ? JSON_OBJECT : JSON_ARRAY;
    p->pos++;
    size_t cap = 0;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == (obj ? '}' : ']')) {
      p->pos++;
      goto done;
    }
    for (;;) {
      char *key = NULL;
      skip_ws(p);
      if (obj) {
        if (p->pos >= p->len || p->s[p->pos] != '"') {
          ret = fail(p, err, "expected object key");
          goto done;
        }
        if ((ret = parse_string(p, &key, NULL, err)) < 0) goto done;
        skip_ws(p);
        if (p->pos >= p->len || p->s[p->pos] != ':') {
          free(key);
          ret = fail(p, err, "expected ':'");
          goto done;
        }
        p->pos++;
      }
      json_value *item = NULL;
      if ((ret = parse_value(p, &item, err)) < 0) {
        free(key);
        goto done;
      }
      if (v->len == cap) {
        cap = cap ? cap * 2 : 8;
        v->items = xrealloc(v->items, cap * sizeof *v->items);
        if (obj) v->keys = xrealloc(v->keys, cap * sizeof *v->keys);
      }
      v->items[v->len] = item;
      if (obj) v->keys[v->len] = key;
      v->len++;
      skip_ws(p);
      if (p->pos < p->len && p->s[p->pos] == ',') {
        p->pos++;
        continue;
      }
      if (p->pos < p->len && p->s[p->pos] == (obj ? '}' : ']')) {
        p->pos++;
        break;
      }
      ret = fail(p, err, obj ? "expected ',' or '}'" : "expected ',' or ']'");
      goto done;
    }
  } else if (c == '"') {
    v->type = JSON_STRING;
    ret = parse_string(p, &v->str, &v->len, err);
    v->len = 0;
  } else if (c == '-' || (c >= '0' && c <= '9')) {
    ret = parse_number(p, v, err);
  } else if (p->len - p->pos >= 4 && strncmp(p->s + p->pos, "true", 4) == 0) {
    v->type = JSON_BOOL;
    v->boolean = true;
    p->pos += 4;
  } else if (p->len - p->pos >= 5 && strncmp(p->s + p->pos, "false", 5) == 0) {
    v->type = JSON_BOOL;
    p->pos += 5;
  } else if (p->len - p->pos >= 4 && strncmp(p->s + p->pos, "null", 4) == 0) {
    v->type = JSON_NULL;
    p->pos += 4;
  } else {
    ret = fail(p, err, "unexpected character");
  }
done:
  p->depth--;
  if (ret < 0) {
    json_free(v);
    return ret;
  }
  *out = v;
  return 0;
}

int json_parse(const char *text, size_t len, json_value **out, berth_err_t *err) {
  parser p = {.s = text, .pos = 0, .len = len, .depth = 0};
  json_value *v = NULL;
  if (parse_value(&p, &v, err) < 0) return -1;
  skip_ws(&p);
  if (p.pos != p.len) {
    json_free(v);
    return fail(&p, err, "trailing data");
  }
  *out = v;
  return 0;
}

void json_free(json_value *v) {
  if (!v) return;
  for (size_t i = 0; i < v->len && (v->type == JSON_ARRAY || v->type == JSON_OBJECT); i++) {
    json_free(v->items[i]);
    if (v->keys) free(v->keys[i]);
  }
  free(v->items);
  free(v->keys);
  free(v->str);
  free(v);
}

json_value *json_get(const json_value *obj, const char *key) {
  if (!obj || obj->type != JSON_OBJECT) return NULL;
  for (size_t i = obj->len; i > 0; i--) /* last duplicate wins, like most parsers */
    if (strcmp(obj->keys[i - 1], key) == 0) return obj->items[i - 1];
  return NULL;
}
const char *json_get_string(const json_value *obj, const char *key) {
  json_value *v = json_get(obj, key);
  return v && v->type == JSON_STRING ? v->str : NULL;
}
json_value *json_get_array(const json_value *obj, const char *key) {
  json_value *v = json_get(obj, key);
  return v && v->type == JSON_ARRAY ? v : NULL;
}
json_value *json_get_object(const json_value *obj, const char *key) {
  json_value *v = json_get(obj, key);
  return v && v->type == JSON_OBJECT ? v : NULL;
}
json_value *json_path(const json_value *obj, const char *path) {
  char buf[256];
  const json_value *cur = obj;
  const char *p = path;
  while (cur && *p) {
    const char *dot = strchr(p, '.');
    size_t n = dot ? (size_t) (dot - p) : strlen(p);
    if (n >= sizeof buf) return NULL;
    memcpy(buf, p, n);
    buf[n] = 0;
    cur = json_get(cur, buf);
    p += n + (dot ? 1 : 0);
  }
  return (json_value *) cur;
}

int json_as_int64(const json_value *v, int64_t *out) {
  if (!v || v->type != JSON_NUMBER || !v->is_int) return -1;
  if (v->negative) {
    if (v->u > (uint64_t) INT64_MAX + 1) return -1;
    *out = (int64_t) (0 - v->u);
  } else {
    if (v->u > (uint64_t) INT64_MAX) return -1;
    *out = (int64_t) v->u;
  }
  return 0;
}
int json_as_uint64(const json_value *v, uint64_t *out) {
  if (!v || v->type != JSON_NUMBER || !v->is_int) return -1;
  if (v->negative) {
    if (v->u == 0) {
      *out = 0;
      return 0;
    }
    return -1;
  }
  *out = v->u;
  return 0;
}

void json_serialize(const json_value *v, berth_buf *out) {
  if (!v) {
    berth_buf_puts(out, "null");
    return;
  }
  switch (v->type) {
  case JSON_NULL: berth_buf_puts(out, "null"); break;
  case JSON_BOOL: berth_buf_puts(out, v->boolean ? "true" : "false"); break;
  case JSON_NUMBER:
    if (v->is_int) berth_buf_printf(out, "%s%llu", v->negative && v->u ? "-" : "", (unsigned long long) v->u);
    else berth_buf_printf(out, "%.17g", v->d);
    break;
  case JSON_STRING: berth_buf_json_string(out, v->str); break;
  case JSON_ARRAY:
  case JSON_OBJECT:
    berth_buf_puts(out, v->type == JSON_ARRAY ? "[" : "{");
    for (size_t i = 0; i < v->len; i++) {
      if (i) berth_buf_puts(out, ",");
      if (v->type == JSON_OBJECT) {
        berth_buf_json_string(out, v->keys[i]);
        berth_buf_puts(out, ":");
      }
      json_serialize(v->items[i], out);
    }
    berth_buf_puts(out, v->type == JSON_ARRAY ? "]" : "}");
    break;
  }
}
