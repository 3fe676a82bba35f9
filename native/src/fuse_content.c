/* See fuse_content.h. */
#include "fuse_content.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

typedef struct {
  uint64_t id;
  fcc_blob *data; /* NULL: slot free (served, or never used) */
} fcc_slot;

struct fcc_store {
  pthread_mutex_t lock;
  fcc_slot *ring; /* insertion order, oldest at head */
  unsigned cap, head, used;
  size_t bytes, budget;
  uint64_t taken;
};

fcc_blob *fcc_blob_zeroed(size_t len) {
  fcc_blob *b = calloc(1, sizeof *b + len);
  if (!b) return NULL;
  atomic_init(&b->refs, 1);
  b->len = b->cap = len;
  return b;
}

fcc_blob *fcc_blob_new(size_t len, size_t cap) {
  fcc_blob *b = malloc(sizeof *b + cap);
  if (!b) return NULL;
  atomic_init(&b->refs, 1);
  b->len = len;
  b->cap = cap;
  b->owner = 0;
  return b;
}

fcc_blob *fcc_blob_ref(fcc_blob *b) {
  atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
  return b;
}

void fcc_blob_unref(fcc_blob *b) {
  if (b && atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1) free(b);
}

fcc_store *fcc_new(size_t budget_bytes, unsigned slots) {
  fcc_store *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->ring = calloc(slots, sizeof *c->ring);
  if (!c->ring) {
    free(c);
    return NULL;
  }
  pthread_mutex_init(&c->lock, NULL);
  c->cap = slots;
  c->budget = budget_bytes;
  return c;
}

static void drop(fcc_store *c, fcc_slot *s) {
  if (!s->data) return;
  c->bytes -= s->data->len;
  fcc_blob_unref(s->data);
  s->data = NULL;
}

/* Frees the oldest slot (used or not). Lock held. */
static void evict_oldest(fcc_store *c) {
  drop(c, &c->ring[c->head]);
  c->head = (c->head + 1) % c->cap;
  c->used--;
}

static fcc_slot *find(fcc_store *c, uint64_t id) {
  for (unsigned i = 0; i < c->used; i++) {
    fcc_slot *s = &c->ring[(c->head + i) % c->cap];
    if (s->data && s->id == id) return s;
  }
  return NULL;
}

void fcc_clear(fcc_store *c) {
  pthread_mutex_lock(&c->lock);
  while (c->used) evict_oldest(c);
  c->head = 0;
  pthread_mutex_unlock(&c->lock);
}

void fcc_free(fcc_store *c) {
  if (!c) return;
  fcc_clear(c);
  pthread_mutex_destroy(&c->lock);
  free(c->ring);
  free(c);
}

bool fcc_put(fcc_store *c, uint64_t id, fcc_blob *content) {
  size_t len = content->len;
  if (len == 0 || len > c->budget) return false;
  pthread_mutex_lock(&c->lock);
  if (find(c, id)) {
    pthread_mutex_unlock(&c->lock);
    return true;
  }
  while (c->used && (c->used == c->cap || c->bytes + len > c->budget)) evict_oldest(c);
  fcc_slot *s = &c->ring[(c->head + c->used) % c->cap];
  s->id = id;
  s->data = fcc_blob_ref(content);
  c->used++;
  c->bytes += len;
  c->taken++;
  pthread_mutex_unlock(&c->lock);
  return true;
}

uint64_t fcc_files_taken(fcc_store *c) {
  pthread_mutex_lock(&c->lock);
  uint64_t n = c->taken;
  pthread_mutex_unlock(&c->lock);
  return n;
}

bool fcc_take(fcc_store *c, uint64_t id, uint64_t off, size_t size, const char **bytes,
              size_t *n, fcc_blob **content) {
  pthread_mutex_lock(&c->lock);
  fcc_slot *s = find(c, id);
  if (s) {
    size_t len = s->data->len;
    size_t start = off < len ? (size_t)off : len;
    *n = len - start < size ? len - start : size;
    *bytes = s->data->data + start;
    *content = fcc_blob_ref(s->data);
    /* The reader is done with it: the kernel caches its pages from now on. */
    if (start + *n >= len) drop(c, s);
  }
  pthread_mutex_unlock(&c->lock);
  return s != NULL;
}
