/* FastCDC content-defined chunking with normalized chunking (level 2). */
#include "common.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
  uint64_t gear[256];
  size_t min, avg, max;
  uint64_t mask_s, mask_l;
} cdc_params;

/* n one-bits in the top of the word: the gear hash shifts left, so only high
 * bits depend on a full 64-byte window; low bits see just the last bytes. */
static uint64_t high_mask(unsigned n) {
  return n == 0 ? 0 : (~(uint64_t)0) << (64 - n);
}

/* End of the chunk starting at p, or 0 when more input is needed. The result
 * only depends on bytes [p, p+max), so it is the same however input is
 * split across calls. */
static size_t cdc_next(const cdc_params *c, const uint8_t *d, size_t p,
                       size_t end, bool eof) {
  size_t rem = end - p;
  if (rem <= c->min) return (eof && rem > 0) ? end : 0;
  size_t limit = rem < c->max ? end : p + c->max;
  size_t normal = rem < c->avg ? end : p + c->avg;
  const uint64_t *gear = c->gear;
  const uint64_t ms = c->mask_s, ml = c->mask_l;
  uint64_t fp = 0;
  size_t i = p + c->min;
  for (; i < normal; i++) {
    fp = (fp << 1) + gear[d[i]];
    if (!(fp & ms)) return i + 1;
  }
  for (; i < limit; i++) {
    fp = (fp << 1) + gear[d[i]];
    if (!(fp & ml)) return i + 1;
  }
  if (rem >= c->max) return p + c->max;
  return eof ? end : 0;
}

napi_value sn_cdc_cuts(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  if (!sn_get_args(env, info, 8, argv, "cdcCuts")) return NULL;

  const uint8_t *data, *gear_bytes;
  size_t len, gear_len;
  int64_t start, end, min, avg, max;
  bool eof;
  if (!sn_get_bytes(env, argv[0], "cdcCuts: data", &data, &len)) return NULL;
  if (len > UINT32_MAX) {
    napi_throw_type_error(env, "ERR_OUT_OF_RANGE",
                          "cdcCuts: data must be smaller than 4 GiB (offsets are u32)");
    return NULL;
  }
  if (!sn_get_int64(env, argv[1], "cdcCuts: start", 0, (int64_t)len, &start) ||
      !sn_get_int64(env, argv[2], "cdcCuts: end", start, (int64_t)len, &end) ||
      !sn_get_bool(env, argv[3], "cdcCuts: eof", &eof) ||
      !sn_get_bytes(env, argv[4], "cdcCuts: gear", &gear_bytes, &gear_len))
    return NULL;
  if (gear_len != 2048) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE",
                          "cdcCuts: gear must be 2048 bytes (256 little-endian u64)");
    return NULL;
  }
  if (!sn_get_int64(env, argv[5], "cdcCuts: minSize", 1, UINT32_MAX, &min) ||
      !sn_get_int64(env, argv[6], "cdcCuts: avgSize", min, UINT32_MAX, &avg) ||
      !sn_get_int64(env, argv[7], "cdcCuts: maxSize", avg, UINT32_MAX, &max))
    return NULL;
  unsigned bits = 0;
  while (((int64_t)1 << bits) < avg) bits++;
  if (((int64_t)1 << bits) != avg || bits < 3 || bits > 30) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE",
                          "cdcCuts: avgSize must be a power of two in [8, 2^30]");
    return NULL;
  }

  cdc_params c;
  for (int i = 0; i < 256; i++) {
    uint64_t v = 0;
    for (int b = 7; b >= 0; b--) v = (v << 8) | gear_bytes[i * 8 + b];
    c.gear[i] = v;
  }
  c.min = (size_t)min;
  c.avg = (size_t)avg;
  c.max = (size_t)max;
  c.mask_s = high_mask(bits + 2);
  c.mask_l = high_mask(bits - 2);

  size_t n = 0, cap = 64;
  uint32_t *cuts = malloc(cap * sizeof *cuts);
  if (!cuts) {
    napi_throw_error(env, NULL, "cdcCuts: out of memory");
    return NULL;
  }
  size_t p = (size_t)start;
  for (;;) {
    size_t cut = cdc_next(&c, data, p, (size_t)end, eof);
    if (cut == 0) break;
    if (n == cap) {
      uint32_t *nc = realloc(cuts, 2 * cap * sizeof *cuts);
      if (!nc) {
        free(cuts);
        napi_throw_error(env, NULL, "cdcCuts: out of memory");
        return NULL;
      }
      cuts = nc;
      cap *= 2;
    }
    cuts[n++] = (uint32_t)cut;
    p = cut;
  }

  napi_value ab, arr;
  void *abdata = NULL;
  napi_status st = napi_create_arraybuffer(env, n * sizeof *cuts, &abdata, &ab);
  if (st == napi_ok) {
    if (n) memcpy(abdata, cuts, n * sizeof *cuts);
    st = napi_create_typedarray(env, napi_uint32_array, n, ab, 0, &arr);
  }
  free(cuts);
  SN_CALL(env, st);
  return arr;
}
