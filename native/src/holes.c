/* Data/hole map of a file via lseek(SEEK_DATA/SEEK_HOLE). */
#include "common.h"

#include <errno.h>
#include <limits.h>
#include <unistd.h>

static bool push(napi_env env, napi_value arr, uint32_t *idx, int64_t v) {
  napi_value n;
  if (napi_create_int64(env, v, &n) != napi_ok ||
      napi_set_element(env, arr, (*idx)++, n) != napi_ok) {
    sn_throw_last(env);
    return false;
  }
  return true;
}

napi_value sn_data_regions(napi_env env, napi_callback_info info) {
  napi_value argv[2], arr;
  int64_t fd, size;
  if (!sn_get_args(env, info, 2, argv, "dataRegions") ||
      !sn_get_int64(env, argv[0], "dataRegions: fd", 0, INT_MAX, &fd) ||
      !sn_get_int64(env, argv[1], "dataRegions: size", 0,
                    (int64_t)1 << 53, &size))
    return NULL;
  SN_CALL(env, napi_create_array(env, &arr));

  /* The seeks move the shared file offset; put it back for callers that
   * read sequentially from the same fd. */
  off_t saved = lseek((int)fd, 0, SEEK_CUR);
  if (saved < 0) {
    sn_throw_errno(env, errno, "lseek", NULL);
    return NULL;
  }

  uint32_t idx = 0;
  off_t off = 0;
  int err = 0;
  while (off < size) {
    off_t d = lseek((int)fd, off, SEEK_DATA);
    if (d < 0) {
      if (errno == ENXIO) break; /* no data past off */
      if ((errno == EINVAL || errno == EOPNOTSUPP) && idx == 0) {
        /* No hole support: treat the whole file as data. */
        if (!push(env, arr, &idx, 0) || !push(env, arr, &idx, size)) goto out;
        break;
      }
      err = errno;
      break;
    }
    if (d >= size) break;
    off_t h = lseek((int)fd, d, SEEK_HOLE);
    if (h < 0) {
      if (errno == ENXIO) break; /* truncated under us */
      err = errno;
      break;
    }
    if (h > size) h = size;
    if (h <= d) break; /* defensive: never loop forever */
    if (!push(env, arr, &idx, d) || !push(env, arr, &idx, h)) goto out;
    off = h;
  }
out:
  lseek((int)fd, saved, SEEK_SET);
  if (err) {
    sn_throw_errno(env, err, "lseek", NULL);
    return NULL;
  }
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  return pending ? NULL : arr;
}
