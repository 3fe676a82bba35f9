/* See stored_chunk.h. */
#include "stored_chunk.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* XXH3 from the header zstd-napi ships, with zstd's removal of XXH3 taken out
 * (xxh3-header.cjs); everything static, so nothing clashes with zstd's copy. */
#define XXH_INLINE_ALL
#include "xxhash.h"

bool sc_secret_set(sc_secret *s, const uint8_t *bytes, size_t len) {
  if (len < XXH3_SECRET_SIZE_MIN || len > sizeof s->bytes) return false;
  memcpy(s->bytes, bytes, len);
  s->len = len;
  return true;
}

bool sc_loader_init(sc_loader *l) {
  l->dctx = ZSTD_createDCtx();
  l->buf = NULL;
  l->cap = 0;
  return l->dctx != NULL;
}

void sc_loader_free(sc_loader *l) {
  ZSTD_freeDCtx(l->dctx);
  free(l->buf);
  l->dctx = NULL;
  l->buf = NULL;
  l->cap = 0;
}

static bool read_exactly(int fd, uint8_t *buf, size_t len, uint64_t off) {
  while (len > 0) {
    ssize_t r = pread(fd, buf, len, (off_t)off);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    buf += r;
    len -= (size_t)r;
    off += (uint64_t)r;
  }
  return true;
}

static bool id_matches(const sc_secret *secret, const uint8_t *raw, size_t len, const uint8_t id[16]) {
  XXH128_hash_t h = XXH3_128bits_withSecret(raw, len, secret->bytes, secret->len);
  for (int i = 0; i < 8; i++) {
    if (id[i] != (uint8_t)(h.high64 >> (56 - 8 * i))) return false;
    if (id[8 + i] != (uint8_t)(h.low64 >> (56 - 8 * i))) return false;
  }
  return true;
}

bool sc_load(sc_loader *l, const sc_secret *secret, const sc_chunk *c, uint8_t *raw) {
  if (!c->compressed) {
    if (c->stored_len != c->raw_len || !read_exactly(c->fd, raw, c->raw_len, c->pack_offset)) return false;
  } else {
    if (c->stored_len > l->cap) {
      uint8_t *grown = realloc(l->buf, c->stored_len);
      if (!grown) return false;
      l->buf = grown;
      l->cap = c->stored_len;
    }
    if (!read_exactly(c->fd, l->buf, c->stored_len, c->pack_offset)) return false;
    size_t n = ZSTD_decompressDCtx(l->dctx, raw, c->raw_len, l->buf, c->stored_len);
    if (ZSTD_isError(n) || n != c->raw_len) return false;
  }
  return id_matches(secret, raw, c->raw_len, c->id);
}

bool sc_dup_fds(sc_chunk *chunks, size_t count) {
  int prev_in = -1, prev_out = -1;
  for (size_t i = 0; i < count; i++) {
    if (i > 0 && chunks[i].fd == prev_in) {
      chunks[i].fd = prev_out;
      continue;
    }
    prev_in = chunks[i].fd;
    prev_out = chunks[i].fd = fcntl(prev_in, F_DUPFD_CLOEXEC, 0);
    if (prev_out < 0) {
      sc_close_fds(chunks, i); /* those made so far */
      return false;
    }
  }
  return true;
}

void sc_close_fds(sc_chunk *chunks, size_t count) {
  for (size_t i = 0; i < count; i++)
    if (chunks[i].fd >= 0 && (i == 0 || chunks[i].fd != chunks[i - 1].fd)) close(chunks[i].fd);
}
