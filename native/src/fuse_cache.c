/* See fuse_cache.h. */
#include "fuse_cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WAYS 4

enum { F_ATTR = 1, F_NO_XATTRS = 2, F_LINK = 4 };

/* struct stat without the fields FUSE ignores: 120 bytes instead of ~180. */
typedef struct {
  uint64_t id; /* 0: free (node ids are never 0) */
  uint64_t ino, size, blocks, rdev;
  int64_t atime, mtime, ctime;
  uint32_t atime_ns, mtime_ns, ctime_ns;
  uint32_t mode, nlink, uid, gid, blksize;
  uint32_t flags;
  double timeout;
  char *link;
  uint64_t link_until; /* CLOCK_MONOTONIC ns */
} fc_entry;

typedef struct {
  fc_entry way[WAYS];
  unsigned victim; /* round-robin eviction */
} fc_set;

struct fc_cache {
  pthread_mutex_t lock;
  size_t mask; /* sets - 1 */
  fc_set *sets;
};

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

fc_cache *fc_new(size_t capacity) {
  size_t sets = 1;
  while (sets * WAYS < capacity) sets <<= 1;
  fc_cache *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  /* calloc: pages of sets never used are never touched, so cost no memory */
  c->sets = calloc(sets, sizeof *c->sets);
  if (!c->sets) {
    free(c);
    return NULL;
  }
  c->mask = sets - 1;
  pthread_mutex_init(&c->lock, NULL);
  return c;
}

static void entry_reset(fc_entry *e) {
  free(e->link);
  memset(e, 0, sizeof *e);
}

void fc_clear(fc_cache *c) {
  pthread_mutex_lock(&c->lock);
  for (size_t s = 0; s <= c->mask; s++)
    for (int w = 0; w < WAYS; w++)
      if (c->sets[s].way[w].id) entry_reset(&c->sets[s].way[w]);
  pthread_mutex_unlock(&c->lock);
}

void fc_free(fc_cache *c) {
  if (!c) return;
  fc_clear(c);
  pthread_mutex_destroy(&c->lock);
  free(c->sets);
  free(c);
}

static fc_set *set_of(fc_cache *c, uint64_t id) {
  /* ids are hashes already, but mix anyway: small ids (the root) exist too */
  uint64_t h = id * 0x9e3779b97f4a7c15ULL;
  return &c->sets[(h >> 32) & c->mask];
}

/* Caller holds the lock. */
static fc_entry *find(fc_cache *c, uint64_t id) {
  fc_set *s = set_of(c, id);
  for (int w = 0; w < WAYS; w++)
    if (s->way[w].id == id) return &s->way[w];
  return NULL;
}

/* The entry for id, taking a free or the round-robin victim slot. Caller
 * holds the lock. */
static fc_entry *slot(fc_cache *c, uint64_t id) {
  fc_set *s = set_of(c, id);
  fc_entry *free_slot = NULL;
  for (int w = 0; w < WAYS; w++) {
    if (s->way[w].id == id) return &s->way[w];
    if (!s->way[w].id && !free_slot) free_slot = &s->way[w];
  }
  fc_entry *e = free_slot;
  if (!e) {
    e = &s->way[s->victim];
    s->victim = (s->victim + 1) % WAYS;
    entry_reset(e);
  }
  e->id = id;
  return e;
}

void fc_put_node(fc_cache *c, uint64_t id, const struct stat *st, double timeout,
                 bool immutable, bool no_xattrs) {
  if (!id || (!immutable && !no_xattrs)) return;
  pthread_mutex_lock(&c->lock);
  fc_entry *e = slot(c, id);
  if (immutable) {
    e->ino = (uint64_t)st->st_ino;
    e->size = (uint64_t)st->st_size;
    e->blocks = (uint64_t)st->st_blocks;
    e->rdev = (uint64_t)st->st_rdev;
    e->atime = st->st_atim.tv_sec;
    e->mtime = st->st_mtim.tv_sec;
    e->ctime = st->st_ctim.tv_sec;
    e->atime_ns = (uint32_t)st->st_atim.tv_nsec;
    e->mtime_ns = (uint32_t)st->st_mtim.tv_nsec;
    e->ctime_ns = (uint32_t)st->st_ctim.tv_nsec;
    e->mode = st->st_mode;
    e->nlink = (uint32_t)st->st_nlink;
    e->uid = st->st_uid;
    e->gid = st->st_gid;
    e->blksize = (uint32_t)st->st_blksize;
    e->timeout = timeout;
    e->flags |= F_ATTR;
  }
  if (no_xattrs) e->flags |= F_NO_XATTRS;
  pthread_mutex_unlock(&c->lock);
}

void fc_put_link(fc_cache *c, uint64_t id, const char *target, double valid_s) {
  if (!id || !(valid_s > 0)) return;
  char *copy = strdup(target);
  if (!copy) return; /* a cache: missing out is fine */
  pthread_mutex_lock(&c->lock);
  fc_entry *e = slot(c, id);
  free(e->link);
  e->link = copy;
  e->link_until = now_ns() + (uint64_t)(valid_s * 1e9);
  e->flags |= F_LINK;
  pthread_mutex_unlock(&c->lock);
}

bool fc_get_attr(fc_cache *c, uint64_t id, struct stat *st, double *timeout) {
  bool hit = false;
  pthread_mutex_lock(&c->lock);
  fc_entry *e = find(c, id);
  if (e && (e->flags & F_ATTR)) {
    memset(st, 0, sizeof *st);
    st->st_ino = (ino_t)e->ino;
    st->st_size = (off_t)e->size;
    st->st_blocks = (blkcnt_t)e->blocks;
    st->st_rdev = (dev_t)e->rdev;
    st->st_atim.tv_sec = (time_t)e->atime;
    st->st_mtim.tv_sec = (time_t)e->mtime;
    st->st_ctim.tv_sec = (time_t)e->ctime;
    st->st_atim.tv_nsec = e->atime_ns;
    st->st_mtim.tv_nsec = e->mtime_ns;
    st->st_ctim.tv_nsec = e->ctime_ns;
    st->st_mode = e->mode;
    st->st_nlink = e->nlink;
    st->st_uid = e->uid;
    st->st_gid = e->gid;
    st->st_blksize = (blksize_t)e->blksize;
    *timeout = e->timeout;
    hit = true;
  }
  pthread_mutex_unlock(&c->lock);
  return hit;
}

bool fc_no_xattrs(fc_cache *c, uint64_t id) {
  pthread_mutex_lock(&c->lock);
  fc_entry *e = find(c, id);
  bool none = e && (e->flags & F_NO_XATTRS);
  pthread_mutex_unlock(&c->lock);
  return none;
}

bool fc_get_link(fc_cache *c, uint64_t id, char *buf, size_t cap) {
  bool hit = false;
  pthread_mutex_lock(&c->lock);
  fc_entry *e = find(c, id);
  if (e && (e->flags & F_LINK) && now_ns() < e->link_until) {
    size_t n = strlen(e->link);
    if (n < cap) {
      memcpy(buf, e->link, n + 1);
      hit = true;
    }
  }
  pthread_mutex_unlock(&c->lock);
  return hit;
}
