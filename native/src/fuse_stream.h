/*
 * Large files read from start to end (a tape job's PostgreSQL dump, a search
 * index segment, `cp` of a VM image), answered on the loop thread: JS says
 * where the chunks of the next stretch of such a file are stored (fs_offer),
 * threads of the binding's load them a few MiB ahead of the reader (read,
 * decompress, check each against its id: stored_chunk.h) and the loop thread
 * answers each READ from them (fs_read) without waking JS. Before, every
 * 128 KiB READ of such a file crossed into JS and back: ~160 us of the JS
 * thread's CPU each, with the kernel's further READs waiting their turn.
 *
 * A read the stream cannot answer (before its loaded window, past its
 * stretch, across a hole, or of a chunk that failed its check) is left to JS,
 * which answers it the slow way (and EIO for a damaged chunk): nothing
 * unverified is ever sent. Memory: a few streams, each holding the chunks of
 * a window that moves with its reader (FS_AHEAD_BYTES ahead of the furthest
 * read, FS_BEHIND_BYTES behind it).
 */
#ifndef SNAPFS_FUSE_STREAM_H
#define SNAPFS_FUSE_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "fuse_content.h"
#include "stored_chunk.h"

typedef struct fs_streams fs_streams;

/* The pieces of a file that answer one read: iov points into chunks the view
 * holds a reference to (fs_view_release). */
#define FS_VIEW_PARTS 8
typedef struct {
  struct iovec iov[FS_VIEW_PARTS];
  fcc_blob *held[FS_VIEW_PARTS];
  int parts;
  uint64_t owner; /* the st_ino the bytes belong to (fcc_blob.owner) */
} fs_view;

void fs_view_release(fs_view *v);

/* Called on a loading thread (or in fs_clear and fs_stop), never under the
 * streams' lock, with a read fs_read parked: `view` holds its bytes, or is
 * NULL when the stream cannot answer it after all (a chunk failed its check,
 * or the stream went): the callee answers it otherwise. */
typedef void (*fs_answer)(void *ctx, uint64_t node, void *item, fs_view *view);

/* Called on a loading thread, never under the streams' lock, when the last
 * piece of node `node`'s stream (which ends at `end`, before the file's end)
 * starts loading: the reader will soon need the stretch after it, which an
 * fs_offer with `extend` adds. */
typedef void (*fs_ending)(void *ctx, uint64_t node, uint64_t end);

/* NULL when out of memory or no thread could start. `ending` may be NULL. */
fs_streams *fs_start(const uint8_t *secret, size_t secret_len, unsigned threads, fs_answer answer,
                     fs_ending ending, void *ctx);

/* Streams node `node` (the entry whose st_ino is `owner`, `size` bytes) from
 * its chunks given, in file order (a stretch of the file: the chunk holding
 * the reader's position and those after it), replacing any earlier stream of
 * that node; the reader is at `reached` (the end of its latest read). With
 * `extend`, adds the stretch after the node's stream instead (`reached`
 * unused): false when there is none, or the chunks do not come after it.
 * False also when out of memory or descriptors. */
bool fs_offer(fs_streams *st, uint64_t node, uint64_t owner, uint64_t size, uint64_t reached,
              const sc_chunk *chunks, size_t count, bool extend);

typedef enum {
  FS_MISS,   /* not the stream's to answer: the caller goes on as without it */
  FS_HIT,    /* *view filled: reply with it, then fs_view_release */
  FS_PARKED, /* its chunks are loading: `item` is held, answer() gets it */
} fs_result;

/* A read of `size` bytes at `off` of node `node`. */
fs_result fs_read(fs_streams *st, uint64_t node, uint64_t off, size_t size, fs_view *view, void *item);

/* Drops every stream (snapshots were forgotten, or the session ends): the
 * reads waiting get answer() without a view, a chunk being loaded is not
 * kept, and once it returns no callback runs for anything from before it. */
void fs_clear(fs_streams *st);

/* Reads answered (at once or after waiting), reads that waited, chunks that failed. */
void fs_counts(fs_streams *st, uint64_t *answered, uint64_t *parked, uint64_t *failed);

/* Stops the threads and frees everything; no callback runs after it returns. */
void fs_stop(fs_streams *st);

#endif
