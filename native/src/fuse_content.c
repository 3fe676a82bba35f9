/* See fuse_content.h. */
#include "fuse_content.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

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

/* The pool of blobs let go (see fcc_blob_new): most recent last. */
#define POOL_SLOTS 32
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static fcc_blob *pool[POOL_SLOTS];
static unsigned pooled;
static size_t pooled_bytes;

/* Allocation sizes: four per doubling, so that a blob let go fits the next of about its size. */
static size_t rounded(size_t len) {
  size_t step = FCC_REUSED_BYTES / 4;
  while (step * 8 <= len) step *= 2;
  return (len + step - 1) / step * step;
}

fcc_blob *fcc_blob_new(size_t len) {
  if (len >= FCC_REUSED_BYTES) {
    /* The smallest pooled blob that fits, if it is not twice too big. */
    fcc_blob *b = NULL;
    pthread_mutex_lock(&pool_lock);
    unsigned best = pooled;
    for (unsigned i = 0; i < pooled; i++)
      if (pool[i]->cap >= len && pool[i]->cap / 2 < len && (best == pooled || pool[i]->cap < pool[best]->cap)) best = i;
    if (best < pooled) {
      b = pool[best];
      pool[best] = pool[--pooled];
      pooled_bytes -= b->cap;
    }
    pthread_mutex_unlock(&pool_lock);
    if (b) {
      atomic_store(&b->refs, 1);
      b->len = len;
      b->owner = 0;
      return b;
    }
  }
  size_t cap = len >= FCC_REUSED_BYTES ? rounded(len) : len;
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
  if (!b || atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1) return;
  if (b->cap >= FCC_REUSED_BYTES) {
    pthread_mutex_lock(&pool_lock);
    /* Full: the oldest goes, so that the pool holds the sizes in use now. */
    while (pooled && (pooled == POOL_SLOTS || pooled_bytes + b->cap > FCC_POOL_BYTES)) {
      fcc_blob *old = pool[0];
      pooled_bytes -= old->cap;
      memmove(pool, pool + 1, --pooled * sizeof *pool);
      free(old);
    }
    if (b->cap <= FCC_POOL_BYTES) {
      pool[pooled++] = b;
      pooled_bytes += b->cap;
      b = NULL;
    }
    pthread_mutex_unlock(&pool_lock);
  }
  free(b);
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
