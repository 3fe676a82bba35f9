/*
 * One chunk of a file where the repository stores it, and loading it: read
 * from its pack, decompressed, checked against its id (keyed XXH3-128, as the
 * store computes it; lib/format/blob-id.ts). Shared by the binding's threads
 * that read whole small files ahead (fuse_fetch.h) and those that stream large
 * ones (fuse_stream.h): nothing unverified leaves either.
 */
#ifndef SNAPFS_STORED_CHUNK_H
#define SNAPFS_STORED_CHUNK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <zstd.h>

/* Where one chunk of a file is stored. `fd` is a pack descriptor; whoever
 * queues chunks for a thread duplicates it (sc_dup_fds, or one per chunk), so
 * JS may close its own. */
typedef struct {
  int fd;
  bool compressed;
  uint64_t pack_offset; /* of the stored bytes (after the blob header) */
  uint32_t stored_len, raw_len;
  uint64_t file_offset;
  uint8_t id[16]; /* big-endian XXH3-128 of the raw bytes, keyed */
} sc_chunk;

/* The repository's hash secret (snapfs's are 192 bytes). */
typedef struct {
  uint8_t bytes[256];
  size_t len;
} sc_secret;

/* False when the secret's length is one XXH3 cannot take. */
bool sc_secret_set(sc_secret *s, const uint8_t *bytes, size_t len);

/* A loading thread's own state: a decompression context and a buffer for
 * stored bytes, grown as needed. */
typedef struct {
  ZSTD_DCtx *dctx;
  uint8_t *buf;
  size_t cap;
} sc_loader;

bool sc_loader_init(sc_loader *l);
void sc_loader_free(sc_loader *l);

/* Loads chunk `c` into `raw` (c->raw_len bytes): false when it cannot be read,
 * does not decompress to its length or does not hash to its id. */
bool sc_load(sc_loader *l, const sc_secret *secret, const sc_chunk *c, uint8_t *raw);

/* Replaces each descriptor with a duplicate of its own (one per run of chunks
 * in the same pack, shared by the run); false, with none left open, when a
 * duplicate cannot be made. */
bool sc_dup_fds(sc_chunk *chunks, size_t count);

/* Closes what sc_dup_fds opened. */
void sc_close_fds(sc_chunk *chunks, size_t count);

#endif
