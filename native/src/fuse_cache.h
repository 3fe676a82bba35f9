/*
 * Answers the FUSE loop thread can give without waking JS: per node id, the
 * attributes of an immutable node, whether it has extended attributes, and a
 * symlink target for as long as JS allowed. Filled by JS's replies (any
 * thread may call; one mutex guards the table), read by the loop thread.
 *
 * Fixed capacity, 4-way set associative: a full set evicts round-robin, so
 * memory never grows and a miss only means the request goes to JS as before.
 */
#ifndef SNAPFS_FUSE_CACHE_H
#define SNAPFS_FUSE_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

typedef struct fc_cache fc_cache;

/* capacity: entries, rounded up to a power of two (at least 4). NULL when
 * out of memory. */
fc_cache *fc_new(size_t capacity);
void fc_free(fc_cache *c);

/* Forgets everything, names too (JS's facts about some nodes stopped being true). */
void fc_clear(fc_cache *c);

/* What JS said about node `id` when it answered a lookup of `name` in
 * `parent` (name NULL: a getattr): `st` never changes (answer getattr with
 * it, cached by the kernel for `timeout` seconds) if immutable; it has no
 * xattrs if no_xattrs. The id is then given for that entry (inode number
 * and name). False, and nothing changed, while the kernel may hold the id as
 * another entry through a lookup answered here that JS has not heard of
 * (fc_get_name with mark): the reply must not give it. */
bool fc_put_node(fc_cache *c, uint64_t id, const struct stat *st, double timeout,
                 bool immutable, bool no_xattrs, uint64_t parent, const char *name);

/* JS heard of one lookup of `id` that fc_get_name answered with mark. */
void fc_reported(fc_cache *c, uint64_t id);

/* What names an entry beside its inode number (which an unchanged file keeps
 * in every snapshot): its directory's node id and its name, hashed. */
uint64_t fc_name_key(uint64_t parent, const char *name);

/* A symlink target JS allows repeating for valid_s seconds. */
void fc_put_link(fc_cache *c, uint64_t id, const char *target, double valid_s);

bool fc_get_attr(fc_cache *c, uint64_t id, struct stat *st, double *timeout);
/* Whether JS said node `id` has no extended attributes. */
bool fc_no_xattrs(fc_cache *c, uint64_t id);

/* Copies the target into buf (cap bytes incl. NUL); false on a miss, an
 * expired target or one that does not fit. */
bool fc_get_link(fc_cache *c, uint64_t id, char *buf, size_t cap);

/* Whether node `id` was last given (a reply, a listing the kernel got, or
 * fc_claim) for the entry with inode number `ino`: content read ahead for an
 * entry is served from the store under its node id only then (fcc_blob.owner);
 * pushes are checked once, when the content is offered (fc_claim). */
bool fc_node_is(fc_cache *c, uint64_t id, uint64_t ino);

/* Records that JS reads ahead under node `id` the entry with inode number
 * `ino` (JS found the id free or already that entry's). False, and nothing
 * changed, when attributes of another entry are held under the id: the
 * kernel may know it as that one (a lookup JS has yet to hear of). */
bool fc_claim(fc_cache *c, uint64_t id, uint64_t ino);

/* Where JS's listing of directory `id` (immutable, st_ino `ino`) ended: the
 * READDIR for that offset (the kernel's last, which finds nothing more) is
 * answered here. Kept with the node's attributes, while the id names that
 * directory (a node put under the id for another entry forgets it). */
void fc_put_dir_end(fc_cache *c, uint64_t id, uint64_t ino, uint64_t end);
bool fc_is_dir_end(fc_cache *c, uint64_t id, uint64_t off);

/* Names JS listed in a directory of immutable content (a readdir reply), with
 * the answer a lookup of that name gets: node `id`, attributes `st` cached by
 * the kernel for `timeout` seconds (entry and attributes), and whether it has
 * no xattrs. A lookup answered from here needs no trip to JS. Bounded like
 * the node table: a separate set-associative table of capacity / 4 names.
 * The node goes into the node table too (as fc_put_node; false, and nothing
 * recorded, when that refuses), and fc_get_name finds a name only while its id
 * is still given for that entry (name, inode number, type, size and ctime):
 * node ids are 64-bit hashes of (snapshot, path), and in the rare collision
 * JS may give a listed name's id to another entry. */
bool fc_put_name(fc_cache *c, uint64_t parent, const char *name, uint64_t id,
                 const struct stat *st, double timeout, bool no_xattrs);
/* mark: the answer is about to be given (the kernel takes a reference JS
 * hears of later, fc_reported); until then the id is given to no other entry. */
bool fc_get_name(fc_cache *c, uint64_t parent, const char *name, uint64_t *id,
                 struct stat *st, double *timeout, bool *no_xattrs, bool mark);

#endif
