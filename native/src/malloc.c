/* Allocator tuning for long runs that churn through large buffers (the writer, the mount). glibc
 * raises its mmap threshold each time a large mmapped block is freed (up to 32 MiB), so
 * after the first few read blocks every buffer of a few MiB comes from the heap, which
 * fragments and never shrinks: peak RSS then grew with the size of the backup (430-540
 * MiB at 2.5 GiB against ~330 at 1 GiB). A fixed threshold returns every large buffer to
 * the kernel when it is freed. Not glibc: nothing to do. */
#include "common.h"

#include <limits.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

/* One glibc mallopt setting from JS: a byte count in [4096, max]; false where the C
 * library is not glibc (or it refused). */
static napi_value set_malloc_option(napi_env env, napi_callback_info info, const char *fn, const char *what,
                                    int option, int64_t max) {
  napi_value argv[1], result;
  int64_t bytes;
  if (!sn_get_args(env, info, 1, argv, fn) || !sn_get_int64(env, argv[0], what, 4096, max, &bytes))
    return NULL;
  bool done = false;
#ifdef __GLIBC__
  done = mallopt(option, (int)bytes) == 1;
#else
  (void)option;
#endif
  SN_CALL(env, napi_get_boolean(env, done, &result));
  return result;
}

#ifndef __GLIBC__
#define M_MMAP_THRESHOLD 0
#define M_TRIM_THRESHOLD 0
#endif

napi_value sn_set_mmap_threshold(napi_env env, napi_callback_info info) {
  return set_malloc_option(env, info, "setMmapThreshold", "setMmapThreshold: bytes", M_MMAP_THRESHOLD,
                           32 * 1024 * 1024);
}

/* setTrimThreshold(bytes): free memory at a heap's top that glibc keeps for reuse before
 * giving it back to the kernel (M_TRIM_THRESHOLD); what it gives back faults anew when
 * taken again. */
napi_value sn_set_trim_threshold(napi_env env, napi_callback_info info) {
  return set_malloc_option(env, info, "setTrimThreshold", "setTrimThreshold: bytes", M_TRIM_THRESHOLD, INT_MAX);
}

/* Hands the heap's free pages back to the kernel (glibc's malloc_trim): a long-running mount
 * frees chunk-sized buffers on several threads, and each thread's arena otherwise keeps
 * the pages of what it freed. True when memory was released. */
napi_value sn_trim_malloc(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
  bool released = false;
#ifdef __GLIBC__
  released = malloc_trim(0) == 1;
#endif
  SN_CALL(env, napi_get_boolean(env, released, &result));
  return result;
}
