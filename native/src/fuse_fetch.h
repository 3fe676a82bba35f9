/*
 * Files read ahead, assembled off the JS thread: JS says where a file's chunks
 * are stored (pack descriptor, offset, lengths, compression, id) and threads
 * of the binding's read them, decompress them, check each against its keyed
 * XXH3-128 id and hand the whole verified content to a callback (the content
 * store and the pusher, fuse_content.h and fuse_push.h). A tape job's walk
 * of a mail spool then costs the JS thread only the lookup of each file's
 * chunks, not the copying and decompression of its bytes.
 *
 * Nothing unverified is delivered: a chunk that cannot be read, does not
 * decompress to its length or does not hash to its id drops the whole file
 * (counted), and the reader's own READ then reaches JS, which reports the
 * damage. Bounded: ff_offer refuses what would take the bytes queued or being
 * assembled over the budget.
 */
#ifndef SNAPFS_FUSE_FETCH_H
#define SNAPFS_FUSE_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fuse_content.h"
#include "stored_chunk.h"

typedef struct ff_fetcher ff_fetcher;

/* Called on a fetcher thread with a file's verified content (a reference the
 * callee takes if it keeps it). */
typedef void (*ff_deliver)(void *ctx, uint64_t node, fcc_blob *content);

/* Called on a fetcher thread (or in ff_clear and ff_stop), never under the
 * fetcher's lock, with an item ff_park took for node `node`: after the node's
 * content was delivered (`delivered`), or once it will not be (a chunk failed,
 * the queue was cleared or stopped). The callee owns the item from then on. */
typedef void (*ff_unpark)(void *ctx, uint64_t node, bool delivered, void *item);

/* `secret`: the repository's hash secret (copied). NULL when out of memory
 * or no thread could start. */
ff_fetcher *ff_start(const uint8_t *secret, size_t secret_len, unsigned threads, size_t budget_bytes,
                     ff_deliver deliver, ff_unpark unpark, void *ctx);

/* Queues node `node`'s content: `size` bytes, the chunks given in file order
 * (holes between them read as zeros; a chunk out of order drops the file), of
 * the entry whose st_ino is `owner` (fcc_blob.owner). False when over budget
 * or out of descriptors/memory. */
bool ff_offer(ff_fetcher *f, uint64_t node, uint64_t owner, uint64_t size, const sc_chunk *chunks, size_t count);

/* Holds `item` (a request for node `node`'s content) until the node's content
 * is delivered or dropped, if it is queued or being assembled: true then, and
 * `unpark` gets the item. False (item untouched) when the node is not there:
 * a reader that came before the fetcher finished waits for it instead of
 * reading the file a second time. */
bool ff_park(ff_fetcher *f, uint64_t node, void *item);

/* Drops what is queued, and what is being assembled is not delivered. */
void ff_clear(ff_fetcher *f);

/* Files delivered, and files dropped because a chunk failed. */
void ff_counts(ff_fetcher *f, uint64_t *delivered, uint64_t *failed);

/* Stops the threads (a file being assembled is finished, not delivered) and
 * frees everything; no callback runs after it returns. */
void ff_stop(ff_fetcher *f);

#endif
