/* Creates one restored file whole, in one threadpool job: an unnamed file in
 * the directory (O_TMPFILE), its data written at their offsets (gaps stay
 * holes), size, owner, mode and times set through the descriptor, and only
 * then a name (linkat, which fails if the name exists, like O_EXCL). A
 * restore that dies leaves no partly written file behind, so several files can
 * be written at once; and one job replaces the seven thread-pool round trips a
 * small file cost through Node's fs (open, write, truncate, chown, chmod, close,
 * times).
 *
 * newFile(dir, name, parts, offsets, size, uid, gid, mode, mtimeSec,
 *         mtimeNsec, chown) -> Promise<void>
 * dir is a directory path (restore passes /proc/self/fd/N: the directory it
 * holds open). Rejects with EOPNOTSUPP where the file system has no O_TMPFILE
 * (the caller then creates files the plain way). */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char *dir, *name;
  uint8_t *data; /* all parts, back to back */
  size_t *part_len;
  int64_t *part_off;
  uint32_t parts;
  int64_t size, uid, gid, mode, mtime_sec, mtime_nsec;
  bool chown;
  int err;
  const char *syscall;
} new_file_job;

static void free_job(new_file_job *j) {
  free(j->dir);
  free(j->name);
  free(j->data);
  free(j->part_len);
  free(j->part_off);
  free(j);
}

static int write_fully(int fd, const uint8_t *p, size_t len, int64_t off) {
  while (len > 0) {
    ssize_t n = pwrite(fd, p, len, (off_t)off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return EIO;
    p += n;
    len -= (size_t)n;
    off += n;
  }
  return 0;
}

#define FAIL(call)      \
  do {                  \
    j->err = errno;     \
    j->syscall = call;  \
    goto out;           \
  } while (0)

static void new_file_execute(napi_env env, void *data) {
  (void)env;
  new_file_job *j = data;
  int fd = open(j->dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) {
    /* EISDIR: a kernel that predates O_TMPFILE sees only O_DIRECTORY. */
    j->err = (errno == EISDIR || errno == EINVAL) ? EOPNOTSUPP : errno;
    j->syscall = "open";
    return;
  }
  const uint8_t *p = j->data;
  for (uint32_t i = 0; i < j->parts; i++) {
    int e = write_fully(fd, p, j->part_len[i], j->part_off[i]);
    if (e) {
      errno = e;
      FAIL("write");
    }
    p += j->part_len[i];
  }
  if (ftruncate(fd, (off_t)j->size) < 0) FAIL("ftruncate");
  /* chown clears setuid/setgid, so the mode goes after it. */
  if (j->chown && fchown(fd, (uid_t)j->uid, (gid_t)j->gid) < 0) FAIL("fchown");
  if (fchmod(fd, (mode_t)j->mode) < 0) FAIL("fchmod");
  struct timespec times[2] = {{(time_t)j->mtime_sec, (long)j->mtime_nsec},
                              {(time_t)j->mtime_sec, (long)j->mtime_nsec}};
  if (futimens(fd, times) < 0) FAIL("futimens");
  char self[64], dest[PATH_MAX];
  snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
  if ((size_t)snprintf(dest, sizeof dest, "%s/%s", j->dir, j->name) >= sizeof dest) {
    errno = ENAMETOOLONG;
    FAIL("linkat");
  }
  if (linkat(AT_FDCWD, self, AT_FDCWD, dest, AT_SYMLINK_FOLLOW) < 0) FAIL("linkat");
out:
  close(fd); /* unnamed on failure: the file is gone with its descriptor */
}

static void new_file_complete(napi_env env, napi_status status, void *data) {
  new_file_job *j = data;
  napi_value result = NULL;
  if (status != napi_ok) {
    napi_value msg;
    if (napi_create_string_utf8(env, "newFile: job cancelled", NAPI_AUTO_LENGTH, &msg) == napi_ok)
      napi_create_error(env, NULL, msg, &result);
  } else if (j->err) {
    result = sn_errno_error(env, j->err, j->syscall, j->name);
  } else {
    napi_get_undefined(env, &result);
  }
  if (result && (status != napi_ok || j->err))
    napi_reject_deferred(env, j->deferred, result);
  else if (result)
    napi_resolve_deferred(env, j->deferred, result);
  napi_delete_async_work(env, j->work);
  free_job(j);
}

napi_value sn_new_file(napi_env env, napi_callback_info info) {
  napi_value argv[11], promise, name;
  new_file_job *j = calloc(1, sizeof *j);
  if (!j) {
    napi_throw_error(env, NULL, "newFile: out of memory");
    return NULL;
  }
  uint32_t parts = 0, offsets = 0;
  bool ok = sn_get_args(env, info, 11, argv, "newFile") &&
            sn_get_cstr(env, argv[0], "newFile: dir", &j->dir) &&
            sn_get_cstr(env, argv[1], "newFile: name", &j->name) &&
            napi_get_array_length(env, argv[2], &parts) == napi_ok &&
            napi_get_array_length(env, argv[3], &offsets) == napi_ok;
  if (ok && parts != offsets) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "newFile: parts and offsets differ in length");
    ok = false;
  }
  ok = ok && sn_get_int64(env, argv[4], "newFile: size", 0, INT64_MAX >> 11, &j->size) &&
       sn_get_int64(env, argv[5], "newFile: uid", 0, UINT32_MAX, &j->uid) &&
       sn_get_int64(env, argv[6], "newFile: gid", 0, UINT32_MAX, &j->gid) &&
       sn_get_int64(env, argv[7], "newFile: mode", 0, 07777, &j->mode) &&
       sn_get_int64(env, argv[8], "newFile: mtimeSec", -(1LL << 53), 1LL << 53, &j->mtime_sec) &&
       sn_get_int64(env, argv[9], "newFile: mtimeNsec", 0, 999999999, &j->mtime_nsec) &&
       sn_get_bool(env, argv[10], "newFile: chown", &j->chown);
  if (ok && strchr(j->name, '/')) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "newFile: name must not contain '/'");
    ok = false;
  }
  if (ok) {
    j->parts = parts;
    j->part_len = calloc(parts ? parts : 1, sizeof *j->part_len);
    j->part_off = calloc(parts ? parts : 1, sizeof *j->part_off);
    ok = j->part_len && j->part_off;
    if (!ok) napi_throw_error(env, NULL, "newFile: out of memory");
  }
  /* The bytes are copied now: the caller's buffers may be reused once this returns. */
  size_t total = 0;
  for (uint32_t i = 0; ok && i < parts; i++) {
    napi_value v;
    const uint8_t *d;
    ok = napi_get_element(env, argv[2], i, &v) == napi_ok &&
         sn_get_bytes(env, v, "newFile: part", &d, &j->part_len[i]) &&
         napi_get_element(env, argv[3], i, &v) == napi_ok &&
         sn_get_int64(env, v, "newFile: offset", 0, INT64_MAX >> 11, &j->part_off[i]);
    total += ok ? j->part_len[i] : 0;
  }
  if (ok) {
    j->data = malloc(total ? total : 1);
    ok = j->data != NULL;
    if (!ok) napi_throw_error(env, NULL, "newFile: out of memory");
  }
  size_t at = 0;
  for (uint32_t i = 0; ok && i < parts; i++) {
    napi_value v;
    const uint8_t *d;
    size_t len;
    ok = napi_get_element(env, argv[2], i, &v) == napi_ok && sn_get_bytes(env, v, "newFile: part", &d, &len);
    if (ok) memcpy(j->data + at, d, len);
    at += len;
  }
  if (!ok) {
    free_job(j);
    return NULL;
  }
  if (napi_create_string_utf8(env, "snapfs.newFile", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, new_file_execute, new_file_complete, j, &j->work) != napi_ok) {
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
