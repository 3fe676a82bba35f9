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
  size_t cap; /* bytes allocated for data (>= len): a blob may be reused (fuse_stream.c) */
  /* The inode number (st_ino) of the entry whose content this is: node ids
   * are hashes and may, rarely, come to name another entry, so whoever
   * serves the bytes for a node checks that it still names this one. */
  uint64_t owner;
  char data[];
} fcc_blob;

/* `len` zero bytes with one reference, to be filled in; NULL when memory is short. */
fcc_blob *fcc_blob_zeroed(size_t len);
/* Room for `cap` bytes, `len` of them in use (not zeroed), with one reference. */
fcc_blob *fcc_blob_new(size_t len, size_t cap);
fcc_blob *fcc_blob_ref(fcc_blob *b);
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
