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

/* One directory's listing. */
typedef struct {
  char *path;
  uint8_t *buf;
  size_t len, cap;
  int err;
  bool skipped; /* not listed: the job's byte budget was spent */
} scan_result;

/* Listings made by one threadpool job: one directory (scanDir), or several (scanDirs), so
 * that the walker pays one thread wake-up and one completion for a directory's children. */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  size_t n;
  bool many;
  size_t budget; /* scanDirs: no further directory is listed once this many bytes are */
  scan_result r[];
} scan_job;

static bool reserve(scan_result *j, size_t need) {
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

static bool sort_records(scan_result *j);

static void scan_one(scan_result *j) {
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

/* Threadpool side: no napi calls allowed here. */
static void scan_execute(napi_env env, void *data) {
  (void)env;
  scan_job *j = data;
  size_t total = 0;
  for (size_t i = 0; i < j->n; i++) {
    if (j->budget && total >= j->budget) {
      j->r[i].skipped = true;
      continue;
    }
    scan_one(&j->r[i]);
    total += j->r[i].len;
  }
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
static bool sort_records(scan_result *j) {
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
  for (size_t i = 0; i < j->n; i++) {
    free(j->r[i].path);
    free(j->r[i].buf);
  }
  free(j);
}

static void finalize_buf(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

/* The listing as a Buffer (ownership moves to it), or the error that ended it; NULL if
 * neither could be made. */
static napi_value result_value(napi_env env, scan_result *r, bool *ok) {
  napi_value v = NULL;
  *ok = false;
  if (r->skipped) {
    *ok = napi_get_null(env, &v) == napi_ok;
    return *ok ? v : NULL;
  }
  if (r->err) return sn_errno_error(env, r->err, "scandir", r->path);
  if (r->len > 0 && napi_create_external_buffer(env, r->len, r->buf, finalize_buf, NULL, &v) == napi_ok) {
    r->buf = NULL; /* now owned by the Buffer */
    *ok = true;
    return v;
  }
  /* Empty result, or a runtime that forbids external buffers: copy. */
  void *ignored;
  *ok = napi_create_buffer_copy(env, r->len, r->buf, &ignored, &v) == napi_ok;
  return *ok ? v : NULL;
}

static napi_value failure(napi_env env, const char *text) {
  napi_value msg, err = NULL;
  if (napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg) == napi_ok)
    napi_create_error(env, NULL, msg, &err);
  return err;
}

static void scan_complete(napi_env env, napi_status status, void *data) {
  scan_job *j = data;
  napi_value result = NULL;
  bool ok = false;
  if (status != napi_ok) {
    result = failure(env, "scandir: job cancelled");
  } else if (!j->many) {
    result = result_value(env, &j->r[0], &ok);
  } else if (napi_create_array_with_length(env, j->n, &result) == napi_ok) {
    ok = true;
    for (size_t i = 0; i < j->n && ok; i++) {
      bool one;
      napi_value v = result_value(env, &j->r[i], &one);
      ok = v && napi_set_element(env, result, (uint32_t)i, v) == napi_ok;
    }
    if (!ok) result = NULL;
  }
  if (!result) {
    result = failure(env, "scandir: failed to build result");
    ok = false;
  }
  if (ok)
    napi_resolve_deferred(env, j->deferred, result);
  else
    napi_reject_deferred(env, j->deferred, result);
  napi_delete_async_work(env, j->work);
  free_job(j);
}

static napi_value queue_job(napi_env env, scan_job *j) {
  napi_value promise, name;
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

static scan_job *new_job(napi_env env, size_t n, bool many) {
  scan_job *j = calloc(1, sizeof *j + n * sizeof(scan_result));
  if (!j) napi_throw_error(env, NULL, "scanDir: out of memory");
  else {
    j->n = n;
    j->many = many;
  }
  return j;
}

napi_value sn_scan_dir(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!sn_get_args(env, info, 1, argv, "scanDir")) return NULL;
  scan_job *j = new_job(env, 1, false);
  if (!j) return NULL;
  if (!sn_get_cstr(env, argv[0], "scanDir: path", &j->r[0].path)) {
    free_job(j);
    return NULL;
  }
  return queue_job(env, j);
}

/* scanDirs(paths, budgetBytes): the listings in one job, in order, until they take
 * budgetBytes (0: no limit); resolves to an array of Buffer, Error, or null for the
 * directories not listed. */
napi_value sn_scan_dirs(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  uint32_t n;
  bool is_array;
  double budget;
  if (!sn_get_args(env, info, 2, argv, "scanDirs")) return NULL;
  if (napi_get_value_double(env, argv[1], &budget) != napi_ok || !(budget >= 0)) {
    napi_throw_type_error(env, NULL, "scanDirs: budgetBytes must be a number >= 0");
    return NULL;
  }
  if (napi_is_array(env, argv[0], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[0], &n) != napi_ok) {
    napi_throw_type_error(env, NULL, "scanDirs: paths must be an array");
    return NULL;
  }
  scan_job *j = new_job(env, n, true);
  if (!j) return NULL;
  j->budget = budget > (double)SIZE_MAX ? SIZE_MAX : (size_t)budget;
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    if (napi_get_element(env, argv[0], i, &v) != napi_ok) {
      free_job(j);
      sn_throw_last(env);
      return NULL;
    }
    if (!sn_get_cstr(env, v, "scanDirs: path", &j->r[i].path)) {
      free_job(j);
      return NULL;
    }
  }
  return queue_job(env, j);
}
