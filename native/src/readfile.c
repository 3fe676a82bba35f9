/* Reads whole small files, many per threadpool job: open (O_NOATIME where allowed),
 * fstat, read, xattrs, fstat again, close. A mail spool is millions of such files;
 * a threadpool round trip costs more than reading one of them, so they go in batches. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#define STAT_LEN SN_STAT_BYTES

enum { RF_OK = 0, RF_TOO_LARGE = 1, RF_SPARSE = 2, RF_NOT_REGULAR = 3 };

typedef struct {
  char *path;
  uint8_t *buf;
  size_t len, cap;
  int err;
  const char *syscall;
} read_job;

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int64_t max_bytes;
  uint32_t count;
  read_job *files;
} batch_job;

static bool reserve(read_job *j, size_t need) {
  if (j->cap - j->len >= need) return true;
  size_t cap = j->cap ? j->cap : 4096;
  while (cap - j->len < need) cap *= 2;
  uint8_t *nb = realloc(j->buf, cap);
  if (!nb) return false;
  j->buf = nb;
  j->cap = cap;
  return true;
}

static bool same_version(const struct stat *a, const struct stat *b) {
  return a->st_size == b->st_size && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
         a->st_mtim.tv_nsec == b->st_mtim.tv_nsec && a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
         a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* Appends u32 count then (u32 len, name, u32 len, value)* for the fd's xattrs. */
static int append_xattrs(read_job *j, int fd) {
  size_t count_at = j->len;
  if (!reserve(j, 4)) return ENOMEM;
  j->len += 4;
  uint32_t count = 0;
  ssize_t n = flistxattr(fd, NULL, 0);
  if (n < 0) {
    if (errno == ENOTSUP || errno == ENOSYS) n = 0;
    else return errno;
  }
  char *names = NULL;
  if (n > 0) {
    names = malloc((size_t)n);
    if (!names) return ENOMEM;
    n = flistxattr(fd, names, (size_t)n);
    if (n < 0) {
      int e = errno;
      free(names);
      return e == ERANGE ? EAGAIN : e;
    }
  }
  for (ssize_t off = 0; off < n;) {
    const char *name = names + off;
    size_t nlen = strlen(name);
    off += (ssize_t)nlen + 1;
    ssize_t vlen = fgetxattr(fd, name, NULL, 0);
    if (vlen < 0) {
      if (errno == ENODATA) continue; /* removed meanwhile */
      free(names);
      return errno;
    }
    if (!reserve(j, 8 + nlen + (size_t)vlen)) {
      free(names);
      return ENOMEM;
    }
    uint8_t *p = j->buf + j->len;
    sn_put32(p, (uint32_t)nlen);
    memcpy(p + 4, name, nlen);
    ssize_t got = fgetxattr(fd, name, p + 8 + nlen, (size_t)vlen);
    if (got < 0) {
      free(names);
      return errno == ERANGE ? EAGAIN : errno;
    }
    sn_put32(p + 4 + nlen, (uint32_t)got);
    j->len += 8 + nlen + (size_t)got;
    count++;
  }
  free(names);
  sn_put32(j->buf + count_at, count);
  return 0;
}

static void read_one(read_job *j, int64_t max_bytes) {
  int flags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;
  int fd = open(j->path, flags | O_NOATIME);
  if (fd < 0 && errno == EPERM) fd = open(j->path, flags);
  if (fd < 0) {
    j->err = errno;
    j->syscall = "open";
    return;
  }
  struct stat before, after;
  /* Layout: stat | u32 status | u32 changed | u32 data length | data | xattrs */
  if (fstat(fd, &before) < 0 || !reserve(j, STAT_LEN + 12)) {
    j->err = errno ? errno : ENOMEM;
    j->syscall = "fstat";
    close(fd);
    return;
  }
  sn_put_stat(j->buf, &before);
  j->len = STAT_LEN + 12;
  uint32_t status = RF_OK;
  if (!S_ISREG(before.st_mode)) status = RF_NOT_REGULAR;
  else if (before.st_size > max_bytes) status = RF_TOO_LARGE;
  else if (before.st_size > 0 && (int64_t)before.st_blocks * 512 < before.st_size) status = RF_SPARSE;
  uint32_t changed = 0;
  if (status == RF_OK) {
    size_t size = (size_t)before.st_size;
    if (!reserve(j, size + 1)) {
      j->err = ENOMEM;
      close(fd);
      return;
    }
    size_t got = 0;
    /* Read one byte past the size: a file that grew is noticed here as well. */
    while (got < size + 1) {
      ssize_t r = read(fd, j->buf + j->len + got, size + 1 - got);
      if (r < 0) {
        if (errno == EINTR) continue;
        j->err = errno;
        j->syscall = "read";
        close(fd);
        return;
      }
      if (r == 0) break;
      got += (size_t)r;
    }
    if (got != size) changed = 1;
    if (got > size) got = size;
    sn_put32(j->buf + STAT_LEN + 8, (uint32_t)got);
    j->len += got;
    int xe = append_xattrs(j, fd);
    if (xe) {
      j->err = xe;
      j->syscall = "flistxattr";
      close(fd);
      return;
    }
    if (fstat(fd, &after) < 0 || !same_version(&before, &after)) changed = 1;
  }
  sn_put32(j->buf + STAT_LEN, status);
  sn_put32(j->buf + STAT_LEN + 4, changed);
  close(fd);
}

static void batch_execute(napi_env env, void *data) {
  (void)env;
  batch_job *b = data;
  for (uint32_t i = 0; i < b->count; i++) read_one(&b->files[i], b->max_bytes);
}

static void free_batch(batch_job *b) {
  if (b->files) {
    for (uint32_t i = 0; i < b->count; i++) {
      free(b->files[i].path);
      free(b->files[i].buf);
    }
    free(b->files);
  }
  free(b);
}

static void finalize_buf(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

/* One result: a Buffer, or an Error object for a file that could not be read. */
static napi_value file_result(napi_env env, read_job *j) {
  napi_value v = NULL;
  if (j->err) return sn_errno_error(env, j->err, j->syscall ? j->syscall : "read", j->path);
  if (napi_create_external_buffer(env, j->len, j->buf, finalize_buf, NULL, &v) == napi_ok) {
    j->buf = NULL; /* now owned by the Buffer */
    return v;
  }
  void *ignored;
  if (napi_create_buffer_copy(env, j->len, j->buf, &ignored, &v) == napi_ok) return v;
  return NULL;
}

static void batch_complete(napi_env env, napi_status status, void *data) {
  batch_job *b = data;
  napi_value result = NULL;
  bool ok = status == napi_ok && napi_create_array_with_length(env, b->count, &result) == napi_ok;
  for (uint32_t i = 0; ok && i < b->count; i++) {
    napi_value v = file_result(env, &b->files[i]);
    ok = v && napi_set_element(env, result, i, v) == napi_ok;
  }
  if (!ok) {
    napi_value msg;
    napi_create_string_utf8(env, "readSmallFiles: failed", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &result);
    napi_reject_deferred(env, b->deferred, result);
  } else {
    napi_resolve_deferred(env, b->deferred, result);
  }
  napi_delete_async_work(env, b->work);
  free_batch(b);
}

/* readSmallFiles(paths: Buffer[], maxBytes) -> Promise<Array<Buffer | Error>> */
napi_value sn_read_small_files(napi_env env, napi_callback_info info) {
  napi_value argv[2], promise, name;
  bool is_array = false;
  batch_job *b = calloc(1, sizeof *b);
  if (!b) {
    napi_throw_error(env, NULL, "readSmallFiles: out of memory");
    return NULL;
  }
  if (!sn_get_args(env, info, 2, argv, "readSmallFiles") ||
      !sn_get_int64(env, argv[1], "readSmallFiles: maxBytes", 0, (int64_t)1 << 30, &b->max_bytes)) {
    free_batch(b);
    return NULL;
  }
  if (napi_is_array(env, argv[0], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[0], &b->count) != napi_ok || b->count > 65536) {
    free_batch(b);
    napi_throw_type_error(env, NULL, "readSmallFiles: paths must be an array of at most 65536 paths");
    return NULL;
  }
  b->files = calloc(b->count ? b->count : 1, sizeof *b->files);
  if (!b->files) {
    free_batch(b);
    napi_throw_error(env, NULL, "readSmallFiles: out of memory");
    return NULL;
  }
  for (uint32_t i = 0; i < b->count; i++) {
    napi_value el;
    if (napi_get_element(env, argv[0], i, &el) != napi_ok ||
        !sn_get_cstr(env, el, "readSmallFiles: path", &b->files[i].path)) {
      free_batch(b);
      return NULL;
    }
  }
  if (napi_create_string_utf8(env, "snapfs.readSmallFiles", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, batch_execute, batch_complete, b, &b->work) != napi_ok) {
    free_batch(b);
    sn_throw_last(env);
    return NULL;
  }
  if (napi_create_promise(env, &b->deferred, &promise) != napi_ok ||
      napi_queue_async_work(env, b->work) != napi_ok) {
    napi_delete_async_work(env, b->work);
    free_batch(b);
    sn_throw_last(env);
    return NULL;
  }
  return promise;
}
