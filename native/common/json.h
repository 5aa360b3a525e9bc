/* A small JSON DOM parser (RFC 8259): enough for OCI config.json / state.json. Numbers keep both an
 * integer form (exact for 64-bit values, signed or unsigned) and a double. */
#ifndef BERTH_JSON_H
#define BERTH_JSON_H
#include "error.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct json_value json_value;
struct json_value {
  json_type type;
  bool boolean;
  bool is_int;      /* number had no fraction/exponent and fitted in 64 bits */
  bool negative;
  uint64_t u;       /* magnitude for integers */
  double d;
  char *str;        /* JSON_STRING */
  size_t len;       /* elements (array/object) */
  json_value **items;
  char **keys;      /* JSON_OBJECT keys, parallel to items */
};

/* Parse text; on error *err names the offset. */
int json_parse(const char *text, size_t len, json_value **out, berth_err_t *err);
void json_free(json_value *v);

/* Lookups return NULL when absent or of another type; v may be NULL. */
json_value *json_get(const json_value *obj, const char *key);
const char *json_get_string(const json_value *obj, const char *key);
json_value *json_get_array(const json_value *obj, const char *key);
json_value *json_get_object(const json_value *obj, const char *key);
/* Path lookup with '.' separators, e.g. "linux.resources.memory". */
json_value *json_path(const json_value *obj, const char *path);

/* Numbers: return 0 when the value is an integer that fits, else -1. */
int json_as_int64(const json_value *v, int64_t *out);
int json_as_uint64(const json_value *v, uint64_t *out);



/* Serialize a value back to compact JSON. */
#include "util.h"
void json_serialize(const json_value *v, berth_buf *out);
#endif
