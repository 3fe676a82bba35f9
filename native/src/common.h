#ifndef SNAPFS_COMMON_H
#define SNAPFS_COMMON_H

#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Checks a napi call; on failure makes sure a JS exception is pending and
 * returns NULL from the calling function. */
#define SN_CALL(env, call)           \
  do {                               \
    if ((call) != napi_ok) {         \
      sn_throw_last((env));          \
      return NULL;                   \
    }                                \
  } while (0)

/* Throws an Error for the last failed napi call unless one is pending. */
void sn_throw_last(napi_env env);

/* Builds a Node-style fs error: message "syscall 'path': CODE: desc",
 * properties code, errno (negative, as Node does), syscall, path.
 * path may be NULL. Returns NULL if creating the object itself failed. */
napi_value sn_errno_error(napi_env env, int err, const char *syscall,
                          const char *path);
void sn_throw_errno(napi_env env, int err, const char *syscall,
                    const char *path);

/* Argument helpers: on bad input they throw a TypeError (message prefixed
 * with what) and return false. */
bool sn_get_args(napi_env env, napi_callback_info info, size_t n,
                 napi_value *argv, const char *fn);
/* min and max must lie within +-2^53. */
bool sn_get_int64(napi_env env, napi_value v, const char *what, int64_t min,
                  int64_t max, int64_t *out);
bool sn_get_bool(napi_env env, napi_value v, const char *what, bool *out);
/* Uint8Array (incl. Buffer) contents, not copied. */
bool sn_get_bytes(napi_env env, napi_value v, const char *what,
                  const uint8_t **data, size_t *len);
/* Buffer/Uint8Array/string as a malloc'd NUL-terminated C string; rejects
 * empty values and embedded NUL bytes. Caller frees. */
bool sn_get_cstr(napi_env env, napi_value v, const char *what, char **out);

/* Little-endian stores into a byte buffer, independent of host order. */
static inline void sn_put16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}
static inline uint16_t sn_get16(const uint8_t *p) {
  return (uint16_t)(p[0] | p[1] << 8);
}
static inline void sn_put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void sn_put64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* The 92-byte stat layout shared by scanDir and readSmallFiles: mode, uid, gid, nlink
 * (u32), ino, size, blocks, rdev, dev (u64), then atime, mtime, ctime (i64 s, u32 ns). */
#define SN_STAT_BYTES (4 * 4 + 5 * 8 + 3 * 12)
struct stat;
void sn_put_stat(uint8_t *p, const struct stat *st);

napi_value sn_cdc_cuts(napi_env env, napi_callback_info info);
napi_value sn_data_regions(napi_env env, napi_callback_info info);
napi_value sn_flock(napi_env env, napi_callback_info info);
napi_value sn_funlock(napi_env env, napi_callback_info info);
napi_value sn_list_xattrs(napi_env env, napi_callback_info info);
napi_value sn_set_xattr(napi_env env, napi_callback_info info);
napi_value sn_mknod(napi_env env, napi_callback_info info);
napi_value sn_utimens_nofollow(napi_env env, napi_callback_info info);
napi_value sn_scan_dir(napi_env env, napi_callback_info info);
napi_value sn_scan_dirs(napi_env env, napi_callback_info info);
napi_value sn_set_mmap_threshold(napi_env env, napi_callback_info info);
napi_value sn_trim_malloc(napi_env env, napi_callback_info info);
napi_value sn_set_trim_threshold(napi_env env, napi_callback_info info);
napi_value sn_read_small_files(napi_env env, napi_callback_info info);
napi_value sn_pread_cached(napi_env env, napi_callback_info info);
napi_value sn_drop_cached_pages(napi_env env, napi_callback_info info);
napi_value sn_new_file(napi_env env, napi_callback_info info);
napi_value sn_zstd_decompress(napi_env env, napi_callback_info info);

#endif
