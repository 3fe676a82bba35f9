#include "common.h"

#include <sys/stat.h>

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

void sn_throw_last(napi_env env) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) return;
  const napi_extended_error_info *info = NULL;
  napi_get_last_error_info(env, &info);
  const char *msg = (info && info->error_message) ? info->error_message
                                                  : "unknown N-API failure";
  napi_throw_error(env, NULL, msg);
}

napi_value sn_errno_error(napi_env env, int err, const char *syscall,
                          const char *path) {
  /* libuv gives the same code names and lowercase descriptions Node uses. */
  char code[64], desc[128];
  uv_err_name_r(uv_translate_sys_error(err), code, sizeof code);
  uv_strerror_r(uv_translate_sys_error(err), desc, sizeof desc);
  if (strncmp(code, "Unknown", 7) == 0) snprintf(code, sizeof code, "UNKNOWN");

  size_t cap = strlen(syscall) + strlen(code) + strlen(desc) +
               (path ? strlen(path) : 0) + 16;
  char *msg = malloc(cap);
  if (!msg) return NULL;
  if (path)
    snprintf(msg, cap, "%s '%s': %s: %s", syscall, path, code, desc);
  else
    snprintf(msg, cap, "%s: %s: %s", syscall, code, desc);

  napi_value jcode, jmsg, jerr, v;
  bool ok = napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &jcode) == napi_ok &&
            napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &jmsg) == napi_ok &&
            napi_create_error(env, jcode, jmsg, &jerr) == napi_ok;
  free(msg);
  if (!ok) return NULL;
  /* Node's fs errors carry errno negated (libuv convention). */
  if (napi_create_int32(env, -err, &v) != napi_ok ||
      napi_set_named_property(env, jerr, "errno", v) != napi_ok ||
      napi_set_named_property(env, jerr, "code", jcode) != napi_ok ||
      napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &v) != napi_ok ||
      napi_set_named_property(env, jerr, "syscall", v) != napi_ok)
    return NULL;
  if (path) {
    /* Non-UTF-8 bytes become U+FFFD; the message is for humans anyway. */
    if (napi_create_string_utf8(env, path, NAPI_AUTO_LENGTH, &v) != napi_ok ||
        napi_set_named_property(env, jerr, "path", v) != napi_ok)
      return NULL;
  }
  return jerr;
}

void sn_throw_errno(napi_env env, int err, const char *syscall,
                    const char *path) {
  napi_value e = sn_errno_error(env, err, syscall, path);
  if (e)
    napi_throw(env, e);
  else
    sn_throw_last(env);
}

static void throw_type(napi_env env, const char *code, const char *fmt,
                       const char *what, const char *extra) {
  char buf[512];
  snprintf(buf, sizeof buf, fmt, what, extra);
  napi_throw_type_error(env, code, buf);
}

bool sn_get_args(napi_env env, napi_callback_info info, size_t n,
                 napi_value *argv, const char *fn) {
  size_t argc = n;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
    sn_throw_last(env);
    return false;
  }
  if (argc < n) {
    char num[32];
    snprintf(num, sizeof num, "%zu", n);
    throw_type(env, "ERR_MISSING_ARGS", "%s: expected %s arguments", fn, num);
    return false;
  }
  return true;
}

bool sn_get_int64(napi_env env, napi_value v, const char *what, int64_t min,
                  int64_t max, int64_t *out) {
  napi_valuetype t;
  double d;
  char range[96];
  snprintf(range, sizeof range, "[%" PRId64 ", %" PRId64 "]", min, max);
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number ||
      napi_get_value_double(env, v, &d) != napi_ok) {
    throw_type(env, "ERR_INVALID_ARG_TYPE", "%s must be an integer in %s", what,
               range);
    return false;
  }
  /* Bounds are within +-2^53 (exact in a double), so the cast is safe. */
  if (!isfinite(d) || d != trunc(d) || d < (double)min || d > (double)max) {
    throw_type(env, "ERR_OUT_OF_RANGE", "%s must be an integer in %s", what,
               range);
    return false;
  }
  *out = (int64_t)d;
  return true;
}

bool sn_get_bool(napi_env env, napi_value v, const char *what, bool *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_boolean ||
      napi_get_value_bool(env, v, out) != napi_ok) {
    throw_type(env, "ERR_INVALID_ARG_TYPE", "%s must be a boolean%s", what, "");
    return false;
  }
  return true;
}

bool sn_get_bytes(napi_env env, napi_value v, const char *what,
                  const uint8_t **data, size_t *len) {
  bool is_ta = false;
  napi_typedarray_type type;
  void *p = NULL;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, v, &type, len, &p, NULL, NULL) != napi_ok ||
      type != napi_uint8_array) {
    throw_type(env, "ERR_INVALID_ARG_TYPE", "%s must be a Buffer or Uint8Array%s",
               what, "");
    return false;
  }
  /* Empty arrays may have no backing store; hand out a valid pointer. */
  static const uint8_t empty[1];
  *data = p ? (const uint8_t *)p : empty;
  return true;
}

bool sn_get_cstr(napi_env env, napi_value v, const char *what, char **out) {
  napi_valuetype t;
  char *s = NULL;
  size_t len = 0;
  if (napi_typeof(env, v, &t) != napi_ok) {
    sn_throw_last(env);
    return false;
  }
  if (t == napi_string) {
    if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) {
      sn_throw_last(env);
      return false;
    }
    s = malloc(len + 1);
    if (!s || napi_get_value_string_utf8(env, v, s, len + 1, &len) != napi_ok) {
      free(s);
      napi_throw_error(env, NULL, "out of memory");
      return false;
    }
  } else {
    const uint8_t *data;
    napi_value ignore;
    if (!sn_get_bytes(env, v, what, &data, &len)) {
      /* Replace the message so it mentions strings too. */
      napi_get_and_clear_last_exception(env, &ignore);
      throw_type(env, "ERR_INVALID_ARG_TYPE",
                 "%s must be a string, Buffer or Uint8Array%s", what, "");
      return false;
    }
    s = malloc(len + 1);
    if (!s) {
      napi_throw_error(env, NULL, "out of memory");
      return false;
    }
    memcpy(s, data, len);
    s[len] = 0;
  }
  if (len == 0 || memchr(s, 0, len) != NULL) {
    free(s);
    throw_type(env, "ERR_INVALID_ARG_VALUE",
               "%s must be non-empty and must not contain NUL bytes%s", what, "");
    return false;
  }
  *out = s;
  return true;
}

void sn_put_stat(uint8_t *p, const struct stat *st) {
  sn_put32(p, (uint32_t)st->st_mode);
  sn_put32(p + 4, (uint32_t)st->st_uid);
  sn_put32(p + 8, (uint32_t)st->st_gid);
  sn_put32(p + 12, (uint32_t)st->st_nlink);
  sn_put64(p + 16, (uint64_t)st->st_ino);
  sn_put64(p + 24, (uint64_t)st->st_size);
  sn_put64(p + 32, (uint64_t)st->st_blocks);
  sn_put64(p + 40, (uint64_t)st->st_rdev);
  sn_put64(p + 48, (uint64_t)st->st_dev);
  sn_put64(p + 56, (uint64_t)(int64_t)st->st_atim.tv_sec);
  sn_put32(p + 64, (uint32_t)st->st_atim.tv_nsec);
  sn_put64(p + 68, (uint64_t)(int64_t)st->st_mtim.tv_sec);
  sn_put32(p + 76, (uint32_t)st->st_mtim.tv_nsec);
  sn_put64(p + 80, (uint64_t)(int64_t)st->st_ctim.tv_sec);
  sn_put32(p + 88, (uint32_t)st->st_ctim.tv_nsec);
}
