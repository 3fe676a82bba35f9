/*
 * Whole files read ahead (the files after the one a reader just opened, in
 * directory order: the order tar, cp -a and rsync read them), so that the
 * loop thread answers their reads without waking JS. Filled by the fetcher's
 * threads (fuse_fetch.h; one mutex), served and dropped by the loop thread: a file's
 * bytes go once a read reached its end (the kernel keeps them in its page
 * cache from then on).
 *
 * Bounded by a byte budget and a slot count; the oldest file goes first. A
 * miss only means the read goes to JS as before.
 */
#ifndef SNAPFS_FUSE_CONTENT_H
#define SNAPFS_FUSE_CONTENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fcc_store fcc_store;

/* A file's bytes, shared by the store, the pusher (fuse_push.h) and the reads
 * being answered: freed with the last reference. */
typedef struct fcc_blob {
  _Atomic unsigned refs;
  size_t len;
  size_t cap; /* bytes allocated for data (>= len): blobs are reused */
  /* The inode number (st_ino) of the entry whose content this is: node ids
   * are hashes and may, rarely, come to name another entry, so whoever
   * serves the bytes for a node checks that it still names this one. */
  uint64_t owner;
  char data[];
} fcc_blob;

/* `len` bytes (not zeroed) with one reference, to be filled in; NULL when
 * memory is short. Blobs of FCC_REUSED_BYTES and more come from, and go back
 * to, a small pool shared by the whole process (FCC_POOL_BYTES): glibc maps
 * the larger ones afresh for every allocation (1 MiB and more with the mount
 * server's MALLOC_MMAP_THRESHOLD_; every one of them when it was 128 KiB), and
 * each page then written faults, which on a virtual machine cost more CPU
 * than decompressing the bytes. */
#define FCC_REUSED_BYTES ((size_t)128 << 10)
#define FCC_POOL_BYTES ((size_t)8 << 20)
fcc_blob *fcc_blob_new(size_t len);
fcc_blob *fcc_blob_ref(fcc_blob *b);
/* Drops a reference; the last one frees the blob or gives it back to the pool. */
void fcc_blob_unref(fcc_blob *b);

/* NULL when out of memory. */
fcc_store *fcc_new(size_t budget_bytes, unsigned slots);
void fcc_free(fcc_store *c);
void fcc_clear(fcc_store *c);

/* Keeps (a reference to) the whole content of node `id` (immutable). False
 * when it cannot fit at all; a node already held is left as is. */
bool fcc_put(fcc_store *c, uint64_t id, fcc_blob *content);

/* Files fcc_put took so far (for diagnosis). */
uint64_t fcc_files_taken(fcc_store *c);

/* When node `id` is held: points *bytes at the part of [off, off + size)
 * inside the file (*n bytes) and returns true; the caller sends it without
 * the store's lock, then unrefs *content. A part that reaches the end of the
 * file drops the node from the store. */
bool fcc_take(fcc_store *c, uint64_t id, uint64_t off, size_t size, const char **bytes,
              size_t *n, fcc_blob **content);

#endif
