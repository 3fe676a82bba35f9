/* Asynchronous readdir + lstat of every entry, packed into one Buffer so a
 * directory costs one threadpool job instead of one per entry. Records come
 * sorted by name (bytewise, shorter first on a tie: Buffer.compare's order), so
 * the writer can walk a directory of a million entries beside its parent tree
 * without decoding and sorting them all in JS. */
#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Per record: u16 nameLen, name, then this many bytes of fixed fields. */
#define FIXED_LEN (SN_STAT_BYTES + 4)

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char *path;
  uint8_t *buf;
  size_t len, cap;
  int err;
} scan_job;

static bool reserve(scan_job *j, size_t need) {
  if (j->cap - j->len >= need) return true;
  size_t cap = j->cap ? j->cap : 64 * 1024;
  while (cap - j->len < need) cap *= 2;
  uint8_t *nb = realloc(j->buf, cap);
  if (!nb) return false;
  j->buf = nb;
  j->cap = cap;
  return true;
}

static void put_record(uint8_t *p, const char *name, size_t nlen,
                       const struct stat *st, int serr) {
  sn_put16(p, (uint16_t)nlen);
  memcpy(p + 2, name, nlen);
  p += 2 + nlen;
  sn_put_stat(p, st);
  /* No atime: nothing the writer stores depends on it, and a listing must read the same
   * after its files were merely read (its fingerprint: lib/backup/listing-cache.ts). */
  memset(p + 56, 0, 12);
  sn_put32(p + 92, (uint32_t)(int32_t)serr);
}

static bool sort_records(scan_job *j);

/* Threadpool side: no napi calls allowed here. */
static void scan_execute(napi_env env, void *data) {
  (void)env;
  scan_job *j = data;
  int fd = open(j->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    j->err = errno;
    return;
  }
  DIR *dir = fdopendir(fd);
  if (!dir) {
    j->err = errno;
    close(fd);
    return;
  }
  for (;;) {
    errno = 0;
    struct dirent *de = readdir(dir);
    if (!de) {
      j->err = errno;
      break;
    }
    const char *name = de->d_name;
    if (name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0)))
      continue;
    size_t nlen = strlen(name);
    struct stat st;
    int serr = 0;
    if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
      serr = errno;
      memset(&st, 0, sizeof st);
    }
    if (nlen > UINT16_MAX || !reserve(j, 2 + nlen + FIXED_LEN)) {
      j->err = ENOMEM;
      break;
    }
    put_record(j->buf + j->len, name, nlen, &st, serr);
    j->len += 2 + nlen + FIXED_LEN;
  }
  closedir(dir);
  if (!j->err && !sort_records(j)) j->err = ENOMEM;
}

static int compare_records(const void *a, const void *b, void *base) {
  const uint8_t *ra = (const uint8_t *)base + *(const size_t *)a;
  const uint8_t *rb = (const uint8_t *)base + *(const size_t *)b;
  size_t la = sn_get16(ra), lb = sn_get16(rb);
  int c = memcmp(ra + 2, rb + 2, la < lb ? la : lb);
  if (c != 0) return c;
  return la < lb ? -1 : la > lb ? 1 : 0;
}

/* Reorders the packed records by name: sorts their offsets, then copies. */
static bool sort_records(scan_job *j) {
  size_t n = 0;
  for (size_t p = 0; p < j->len; p += 2 + sn_get16(j->buf + p) + FIXED_LEN) n++;
  if (n < 2) return true;
  size_t *offsets = malloc(n * sizeof *offsets);
  uint8_t *sorted = malloc(j->len);
  if (!offsets || !sorted) {
    free(offsets);
    free(sorted);
    return false;
  }
  size_t i = 0;
  for (size_t p = 0; p < j->len; p += 2 + sn_get16(j->buf + p) + FIXED_LEN) offsets[i++] = p;
  qsort_r(offsets, n, sizeof *offsets, compare_records, j->buf);
  size_t out = 0;
  for (i = 0; i < n; i++) {
    size_t rec = 2 + sn_get16(j->buf + offsets[i]) + FIXED_LEN;
    memcpy(sorted + out, j->buf + offsets[i], rec);
    out += rec;
  }
  free(offsets);
  free(j->buf);
  j->buf = sorted;
  j->cap = j->len;
  return true;
}

static void free_job(scan_job *j) {
  free(j->path);
  free(j->buf);
  free(j);
}

static void finalize_buf(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

static void scan_complete(napi_env env, napi_status status, void *data) {
  scan_job *j = data;
  napi_value result = NULL;
  bool ok = false;
  if (status != napi_ok) {
    napi_value msg;
    if (napi_create_string_utf8(env, "scandir: job cancelled", NAPI_AUTO_LENGTH,
                                &msg) == napi_ok)
      napi_create_error(env, NULL, msg, &result);
  } else if (j->err) {
    result = sn_errno_error(env, j->err, "scandir", j->path);
  } else if (j->len > 0 &&
             napi_create_external_buffer(env, j->len, j->buf, finalize_buf, NULL,
                                         &result) == napi_ok) {
    j->buf = NULL; /* now owned by the Buffer */
    ok = true;
  } else {
    /* Empty result, or a runtime that forbids external buffers: copy. */
    void *ignored;
    ok = napi_create_buffer_copy(env, j->len, j->buf, &ignored, &result) == napi_ok;
  }
  if (!result) {
    napi_value msg;
    napi_create_string_utf8(env, "scandir: failed to build result",
                            NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &result);
    ok = false;
  }
  if (ok)
    napi_resolve_deferred(env, j->deferred, result);
  else
    napi_reject_deferred(env, j->deferred, result);
  napi_delete_async_work(env, j->work);
  free_job(j);
}

napi_value sn_scan_dir(napi_env env, napi_callback_info info) {
  napi_value argv[1], promise, name;
  scan_job *j = calloc(1, sizeof *j);
  if (!j) {
    napi_throw_error(env, NULL, "scanDir: out of memory");
    return NULL;
  }
  if (!sn_get_args(env, info, 1, argv, "scanDir") ||
      !sn_get_cstr(env, argv[0], "scanDir: path", &j->path)) {
    free_job(j);
    return NULL;
  }
  if (napi_create_string_utf8(env, "snapfs.scanDir", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, scan_execute, scan_complete, j,
                             &j->work) != napi_ok) {
    free_job(j);
    sn_throw_last(env);
    return NULL;
  }
  if (napi_create_promise(env, &j->deferred, &promise) != napi_ok ||
      napi_queue_async_work(env, j->work) != napi_ok) {
    napi_delete_async_work(env, j->work);
    free_job(j);
    sn_throw_last(env);
    return NULL;
  }
  return promise;
}
