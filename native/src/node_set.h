/*
 * A set of node ids (never 0), for the binding's threads to consult under a
 * lock of their own: open addressing with linear probing, deletion by
 * backward shift (no tombstones). It starts at 4,096 slots (32 KiB) at the
 * first id and doubles when three quarters full, up to 2^max_bits slots;
 * full there, it empties before taking the next id. A zeroed ns_set is empty.
 */
#ifndef SNAPFS_NODE_SET_H
#define SNAPFS_NODE_SET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
  uint64_t *ids; /* 2^bits slots, 0: empty; NULL until the first id */
  unsigned bits;
  size_t count;
} ns_set;

bool ns_has(const ns_set *s, uint64_t id);

/* Adds `id` (when memory is short, nothing: the set only ever holds fewer);
 * true when the set was full at 2^max_bits slots and emptied first. */
bool ns_add(ns_set *s, uint64_t id, unsigned max_bits);

/* Whether `id` was there (it is not any more). */
bool ns_remove(ns_set *s, uint64_t id);

void ns_clear(ns_set *s);
void ns_free(ns_set *s);

#endif
