/* zstd decompression on the libuv thread pool. zstd-napi decompresses on the
 * calling thread, so a mount server reading a big file used one core for
 * everything; chunks decompressed here overlap with the JS thread's work and
 * with each other (read-ahead).
 *
 * decompress(frame, out) -> Promise<number>: the bytes written into out. The
 * caller has checked the frame's declared size against out's length and must
 * not touch either buffer until the promise settles (both are referenced
 * until then). A damaged frame rejects with a message from zstd. */
#include "common.h"

#include <stdlib.h>
#include <string.h>
#include <zstd.h>

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref frame_ref, out_ref;
  const uint8_t *frame;
  size_t frame_len;
  uint8_t *out;
  size_t out_len;
  size_t result;
} unzstd_job;

/* One context per pool thread, made on first use and kept: creating one costs
 * more than decompressing a small chunk. */
static _Thread_local ZSTD_DCtx *thread_dctx;

static void unzstd_execute(napi_env env, void *data) {
  (void)env;
  unzstd_job *j = data;
  if (!thread_dctx) thread_dctx = ZSTD_createDCtx();
  if (!thread_dctx) {
    j->result = (size_t)-ZSTD_error_memory_allocation;
    return;
  }
  j->result = ZSTD_decompressDCtx(thread_dctx, j->out, j->out_len, j->frame, j->frame_len);
}

static void unzstd_complete(napi_env env, napi_status status, void *data) {
  unzstd_job *j = data;
  napi_value result = NULL, msg;
  bool ok = false;
  if (status != napi_ok) {
    if (napi_create_string_utf8(env, "zstd: job cancelled", NAPI_AUTO_LENGTH, &msg) == napi_ok)
      napi_create_error(env, NULL, msg, &result);
  } else if (ZSTD_isError(j->result)) {
    if (napi_create_string_utf8(env, ZSTD_getErrorName(j->result), NAPI_AUTO_LENGTH, &msg) == napi_ok)
      napi_create_error(env, NULL, msg, &result);
  } else {
    ok = napi_create_double(env, (double)j->result, &result) == napi_ok;
  }
  if (!result) {
    napi_create_string_utf8(env, "zstd: failed to build result", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &result);
    ok = false;
  }
  if (ok)
    napi_resolve_deferred(env, j->deferred, result);
  else
    napi_reject_deferred(env, j->deferred, result);
  napi_delete_reference(env, j->frame_ref);
  napi_delete_reference(env, j->out_ref);
  napi_delete_async_work(env, j->work);
  free(j);
}

napi_value sn_zstd_decompress(napi_env env, napi_callback_info info) {
  napi_value argv[2], promise, name;
  const uint8_t *frame, *out;
  size_t frame_len, out_len;
  if (!sn_get_args(env, info, 2, argv, "decompress") ||
      !sn_get_bytes(env, argv[0], "decompress: frame", &frame, &frame_len) ||
      !sn_get_bytes(env, argv[1], "decompress: out", &out, &out_len))
    return NULL;
  unzstd_job *j = calloc(1, sizeof *j);
  if (!j) {
    napi_throw_error(env, NULL, "decompress: out of memory");
    return NULL;
  }
  j->frame = frame;
  j->frame_len = frame_len;
  j->out = (uint8_t *)out;
  j->out_len = out_len;
  if (napi_create_reference(env, argv[0], 1, &j->frame_ref) != napi_ok ||
      napi_create_reference(env, argv[1], 1, &j->out_ref) != napi_ok ||
      napi_create_string_utf8(env, "snapfs.decompress", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, unzstd_execute, unzstd_complete, j, &j->work) != napi_ok) {
    if (j->frame_ref) napi_delete_reference(env, j->frame_ref);
    if (j->out_ref) napi_delete_reference(env, j->out_ref);
    free(j);
    sn_throw_last(env);
    return NULL;
  }
  if (napi_create_promise(env, &j->deferred, &promise) != napi_ok ||
      napi_queue_async_work(env, j->work) != napi_ok) {
    napi_delete_async_work(env, j->work);
    napi_delete_reference(env, j->frame_ref);
    napi_delete_reference(env, j->out_ref);
    free(j);
    sn_throw_last(env);
    return NULL;
  }
  return promise;
}
