/* Small synchronous fs wrappers Node's fs module lacks. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <unistd.h>

napi_value sn_flock(napi_env env, napi_callback_info info) {
  napi_value argv[3], res;
  int64_t fd;
  bool excl, nb;
  if (!sn_get_args(env, info, 3, argv, "flock") ||
      !sn_get_int64(env, argv[0], "flock: fd", 0, INT_MAX, &fd) ||
      !sn_get_bool(env, argv[1], "flock: exclusive", &excl) ||
      !sn_get_bool(env, argv[2], "flock: nonBlocking", &nb))
    return NULL;
  int op = (excl ? LOCK_EX : LOCK_SH) | (nb ? LOCK_NB : 0);
  int r;
  do r = flock((int)fd, op);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (nb && errno == EWOULDBLOCK) {
      SN_CALL(env, napi_get_boolean(env, false, &res));
      return res;
    }
    sn_throw_errno(env, errno, "flock", NULL);
    return NULL;
  }
  SN_CALL(env, napi_get_boolean(env, true, &res));
  return res;
}

napi_value sn_funlock(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int64_t fd;
  if (!sn_get_args(env, info, 1, argv, "funlock") ||
      !sn_get_int64(env, argv[0], "funlock: fd", 0, INT_MAX, &fd))
    return NULL;
  int r;
  do r = flock((int)fd, LOCK_UN);
  while (r < 0 && errno == EINTR);
  if (r < 0) sn_throw_errno(env, errno, "flock", NULL);
  return NULL;
}

/* Reads one attribute value; returns length, -1 with errno on failure.
 * Retries when the value grows between the size probe and the read. */
static ssize_t read_xattr(const char *path, const char *name, char **out) {
  for (;;) {
    ssize_t n = lgetxattr(path, name, NULL, 0);
    if (n < 0) return -1;
    char *buf = malloc(n > 0 ? (size_t)n : 1);
    if (!buf) {
      errno = ENOMEM;
      return -1;
    }
    ssize_t m = lgetxattr(path, name, buf, (size_t)n);
    if (m >= 0) {
      *out = buf;
      return m;
    }
    free(buf);
    if (errno != ERANGE) return -1;
  }
}

napi_value sn_list_xattrs(napi_env env, napi_callback_info info) {
  napi_value argv[1], arr;
  char *path = NULL, *list = NULL;
  ssize_t n;
  if (!sn_get_args(env, info, 1, argv, "listXattrs") ||
      !sn_get_cstr(env, argv[0], "listXattrs: path", &path))
    return NULL;
  if (napi_create_array(env, &arr) != napi_ok) {
    sn_throw_last(env);
    goto fail;
  }

  for (;;) {
    n = llistxattr(path, NULL, 0);
    if (n <= 0) break;
    list = malloc((size_t)n);
    if (!list) {
      errno = ENOMEM;
      n = -1;
      break;
    }
    ssize_t m = llistxattr(path, list, (size_t)n);
    if (m >= 0 || errno != ERANGE) {
      n = m;
      break;
    }
    free(list);
    list = NULL;
  }
  if (n < 0) {
    if (errno == ENOTSUP) goto done;
    sn_throw_errno(env, errno, "llistxattr", path);
    goto fail;
  }

  uint32_t idx = 0;
  for (ssize_t off = 0; off < n;) {
    const char *name = list + off;
    size_t nlen = strnlen(name, (size_t)(n - off));
    off += (ssize_t)nlen + 1;
    if (nlen == 0) continue;
    char *val = NULL;
    ssize_t vlen = read_xattr(path, name, &val);
    if (vlen < 0) {
      /* Removed since listing, or not readable in this namespace. */
      if (errno == ENODATA || errno == ENOTSUP) continue;
      sn_throw_errno(env, errno, "lgetxattr", path);
      goto fail;
    }
    napi_value pair, jn, jv;
    void *ignored;
    napi_status st = napi_create_buffer_copy(env, nlen, name, &ignored, &jn);
    if (st == napi_ok)
      st = napi_create_buffer_copy(env, (size_t)vlen, val, &ignored, &jv);
    free(val);
    if (st != napi_ok || napi_create_array_with_length(env, 2, &pair) != napi_ok ||
        napi_set_element(env, pair, 0, jn) != napi_ok ||
        napi_set_element(env, pair, 1, jv) != napi_ok ||
        napi_set_element(env, arr, idx++, pair) != napi_ok) {
      sn_throw_last(env);
      goto fail;
    }
  }
done:
  free(list);
  free(path);
  return arr;
fail:
  free(list);
  free(path);
  return NULL;
}

napi_value sn_set_xattr(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  char *path = NULL, *name = NULL;
  const uint8_t *val;
  size_t vlen;
  if (!sn_get_args(env, info, 3, argv, "setXattr") ||
      !sn_get_cstr(env, argv[0], "setXattr: path", &path))
    return NULL;
  if (sn_get_cstr(env, argv[1], "setXattr: name", &name) &&
      sn_get_bytes(env, argv[2], "setXattr: value", &val, &vlen)) {
    if (lsetxattr(path, name, val, vlen, 0) < 0)
      sn_throw_errno(env, errno, "lsetxattr", path);
  }
  free(name);
  free(path);
  return NULL;
}

napi_value sn_mknod(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  char *path = NULL;
  int64_t mode, rdev;
  if (!sn_get_args(env, info, 3, argv, "mknod") ||
      !sn_get_int64(env, argv[1], "mknod: mode", 0, UINT32_MAX, &mode) ||
      !sn_get_int64(env, argv[2], "mknod: rdev", 0, (int64_t)1 << 53, &rdev) ||
      !sn_get_cstr(env, argv[0], "mknod: path", &path))
    return NULL;
  if (mknod(path, (mode_t)mode, (dev_t)rdev) < 0)
    sn_throw_errno(env, errno, "mknod", path);
  free(path);
  return NULL;
}

napi_value sn_utimens_nofollow(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  char *path = NULL;
  int64_t as, ans, ms, mns;
  const int64_t lim = ((int64_t)1 << 53) - 1;
  if (!sn_get_args(env, info, 5, argv, "utimensNoFollow") ||
      !sn_get_int64(env, argv[1], "utimensNoFollow: atimeSec", -lim, lim, &as) ||
      !sn_get_int64(env, argv[2], "utimensNoFollow: atimeNsec", 0, 999999999, &ans) ||
      !sn_get_int64(env, argv[3], "utimensNoFollow: mtimeSec", -lim, lim, &ms) ||
      !sn_get_int64(env, argv[4], "utimensNoFollow: mtimeNsec", 0, 999999999, &mns) ||
      !sn_get_cstr(env, argv[0], "utimensNoFollow: path", &path))
    return NULL;
  struct timespec ts[2] = {{.tv_sec = (time_t)as, .tv_nsec = (long)ans},
                           {.tv_sec = (time_t)ms, .tv_nsec = (long)mns}};
  if (utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) < 0)
    sn_throw_errno(env, errno, "utimensat", path);
  free(path);
  return NULL;
}

/* preadCached(fd, buf, offset): fills buf from the page cache only
 * (preadv2 RWF_NOWAIT), without blocking on the disk. Returns the bytes read
 * (possibly fewer than asked: the rest is not cached, or EOF), or -1 when
 * nothing could be read without waiting, or the kernel lacks RWF_NOWAIT.
 * For a reader that would otherwise pay a thread-pool round trip per small
 * read of data that is usually cached already. */
napi_value sn_pread_cached(napi_env env, napi_callback_info info) {
  napi_value argv[3], res;
  int64_t fd, offset;
  const uint8_t *data;
  size_t len;
  if (!sn_get_args(env, info, 3, argv, "preadCached") ||
      !sn_get_int64(env, argv[0], "preadCached: fd", 0, INT_MAX, &fd) ||
      !sn_get_bytes(env, argv[1], "preadCached: buffer", &data, &len) ||
      !sn_get_int64(env, argv[2], "preadCached: offset", 0, INT64_MAX, &offset))
    return NULL;
  ssize_t n;
#ifdef RWF_NOWAIT
  struct iovec iov = {(void *)data, len};
  do n = preadv2((int)fd, &iov, 1, (off_t)offset, RWF_NOWAIT);
  while (n < 0 && errno == EINTR);
  if (n < 0 && errno != EAGAIN && errno != EOPNOTSUPP && errno != ENOSYS && errno != EINVAL) {
    sn_throw_errno(env, errno, "preadv2", NULL);
    return NULL;
  }
  if (n < 0) n = -1;
#else
  n = -1;
#endif
  SN_CALL(env, napi_create_int64(env, (int64_t)n, &res));
  return res;
}

/* dropCachedPages(fd): asks the kernel to drop the file's clean pages from the page cache
 * (posix_fadvise DONTNEED): what a backup wrote and synced is not read back soon, and
 * pages freed now are the next pack's, instead of pages taken fresh from free memory.
 * Advice only: false where the kernel did not take it (a pipe, say); a bad descriptor
 * throws. */
napi_value sn_drop_cached_pages(napi_env env, napi_callback_info info) {
  napi_value argv[1], res;
  int64_t fd;
  if (!sn_get_args(env, info, 1, argv, "dropCachedPages") ||
      !sn_get_int64(env, argv[0], "dropCachedPages: fd", 0, INT_MAX, &fd))
    return NULL;
  int err = posix_fadvise((int)fd, 0, 0, POSIX_FADV_DONTNEED);
  if (err == EBADF) {
    sn_throw_errno(env, err, "posix_fadvise", NULL);
    return NULL;
  }
  SN_CALL(env, napi_get_boolean(env, err == 0, &res));
  return res;
}
