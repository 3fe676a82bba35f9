/*
 * Notifications the server sends the kernel unasked, written by a thread of
 * their own:
 * - pushes of whole files JS read ahead into the kernel's page cache
 *   (FUSE_NOTIFY_STORE), so that a reader finds their pages there and sends no
 *   READ at all: a tape job reading a mail spool file after file pays no round
 *   trip for them;
 * - entry invalidations (FUSE_NOTIFY_INVAL_ENTRY): the kernel drops a cached
 *   name and, for a directory, every unused name cached below it, and forgets
 *   their nodes, which the server then need not keep (docs/mount.md, "Nodes
 *   the kernel holds").
 *
 * A thread of its own writes the notifications, on a descriptor of its own
 * (a dup of /dev/fuse): the kernel locks each page it fills, and a page may be
 * locked by a READ in flight, which the loop thread or JS answers; neither
 * ever waits for the pusher (fp_offer and fp_invalidate_entry only queue, and
 * drop what exceeds the budget). An invalidation takes the directory's lock,
 * which a lookup being answered holds. fp_release returns at once: a write in progress ends on the
 * pusher's own descriptor (whose number no other file can take meanwhile),
 * then the thread frees everything.
 *
 * Which files it pushes is up to the caller: the bytes must be the file's
 * whole, immutable content, for a node id the kernel knows (an unknown one
 * fails harmlessly with ENOENT).
 */
#ifndef SNAPFS_FUSE_PUSH_H
#define SNAPFS_FUSE_PUSH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fuse_content.h"

typedef struct fp_pusher fp_pusher;

/* Starts a pusher writing to a dup of `fuse_fd`; NULL when that fails. */
fp_pusher *fp_start(int fuse_fd, size_t budget_bytes);

/* Queues node `id`'s whole content (a reference to it); false when the
 * queue is over budget. Any thread. */
bool fp_offer(fp_pusher *p, uint64_t id, fcc_blob *content);

/* Queues the invalidation of entry `name` (len bytes, no NUL) in directory
 * node `parent`; false when too many are queued. Any thread. */
bool fp_invalidate_entry(fp_pusher *p, uint64_t parent, const char *name, size_t len);

/* Whether the kernel took node `id`'s whole content, as far as the pusher
 * knows: it pushed it, and no READ has shown the kernel letting pushed pages
 * go since (fp_note_read). Such a file need not be read ahead again: the
 * kernel's page cache holds its bytes while it holds the node. */
bool fp_pushed(fp_pusher *p, uint64_t id);

/* The kernel forgot node `id` (FORGET: its inode went, and its pages with it). */
void fp_forget(fp_pusher *p, uint64_t id);

/* A READ of node `id` reached the server: if the kernel had taken its
 * content, it let some of those pages go (or the reader bypasses the page
 * cache): the pusher forgets that push. Once such READs pass a few and a
 * sixty-fourth of the pushes it knows of, the kernel let pages go wholesale
 * (memory pressure, drop_caches): it forgets every push. */
void fp_note_read(fp_pusher *p, uint64_t id);

/* Drops the pushes queued (snapshots were forgotten); invalidations stay. */
void fp_clear(fp_pusher *p);

/* Files the kernel took, files it refused (not known, or gone), and entries
 * it invalidated (not counted: names it had not cached). */
void fp_counts(fp_pusher *p, uint64_t *pushed, uint64_t *refused, uint64_t *invalidated);

/* Stops the pusher; p is invalid afterwards. */
void fp_release(fp_pusher *p);

#endif
