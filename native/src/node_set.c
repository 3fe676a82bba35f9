/* See node_set.h. */
#include "node_set.h"

#include <stdlib.h>
#include <string.h>

#define MIN_BITS 12

static size_t home(const ns_set *s, uint64_t id) { return (size_t)((id * 0x9E3779B97F4A7C15ull) >> (64 - s->bits)); }

static size_t mask(const ns_set *s) { return ((size_t)1 << s->bits) - 1; }

/* The slot of `id`, or SIZE_MAX. */
static size_t slot_of(const ns_set *s, uint64_t id) {
  if (!s->ids || !id) return SIZE_MAX;
  for (size_t i = home(s, id);; i = (i + 1) & mask(s)) {
    if (s->ids[i] == id) return i;
    if (!s->ids[i]) return SIZE_MAX;
  }
}

/* `id` is not in the set, which has room. */
static void insert(ns_set *s, uint64_t id) {
  size_t i = home(s, id);
  while (s->ids[i]) i = (i + 1) & mask(s);
  s->ids[i] = id;
  s->count++;
}

/* 2^bits slots holding the ids there were; false, nothing changed, when memory is short. */
static bool resize(ns_set *s, unsigned bits) {
  uint64_t *ids = calloc((size_t)1 << bits, sizeof *ids);
  if (!ids) return false;
  uint64_t *old = s->ids;
  size_t old_slots = old ? mask(s) + 1 : 0;
  s->ids = ids;
  s->bits = bits;
  s->count = 0;
  for (size_t i = 0; i < old_slots; i++)
    if (old[i]) insert(s, old[i]);
  free(old);
  return true;
}

bool ns_has(const ns_set *s, uint64_t id) { return slot_of(s, id) != SIZE_MAX; }

bool ns_add(ns_set *s, uint64_t id, unsigned max_bits) {
  if (!id || (!s->ids && !resize(s, MIN_BITS)) || ns_has(s, id)) return false;
  bool emptied = (s->count + 1) * 4 > (mask(s) + 1) * 3 && (s->bits >= max_bits || !resize(s, s->bits + 1));
  if (emptied) ns_clear(s);
  insert(s, id);
  return emptied;
}

bool ns_remove(ns_set *s, uint64_t id) {
  size_t hole = slot_of(s, id);
  if (hole == SIZE_MAX) return false;
  /* Backward shift: later ids of the probe run move up so that no search stops early. */
  for (size_t i = (hole + 1) & mask(s); s->ids[i]; i = (i + 1) & mask(s)) {
    size_t h = home(s, s->ids[i]);
    bool between = hole <= i ? h > hole && h <= i : h > hole || h <= i; /* its home in (hole, i], cyclically */
    if (!between) {
      s->ids[hole] = s->ids[i];
      hole = i;
    }
  }
  s->ids[hole] = 0;
  s->count--;
  return true;
}

void ns_clear(ns_set *s) {
  if (s->count) memset(s->ids, 0, (mask(s) + 1) * sizeof *s->ids);
  s->count = 0;
}

void ns_free(ns_set *s) {
  free(s->ids);
  *s = (ns_set){0};
}
