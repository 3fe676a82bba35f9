/* See fuse_cache.h. */
#include "fuse_cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WAYS 4

/* F_GIVEN: a reply gave the kernel the id for `owner`, whose attributes are
 * not cached (they may change: the root, source and snapshot directories,
 * `last`). Like F_ATTR, it keeps the id from other entries (fc_claim,
 * fc_get_name). */
enum { F_ATTR = 1, F_NO_XATTRS = 2, F_LINK = 4, F_GIVEN = 8 };

/* struct stat without the fields FUSE ignores: 88 bytes instead of ~144. */
typedef struct {
  uint64_t ino, size, blocks, rdev;
  int64_t atime, mtime, ctime;
  uint32_t atime_ns, mtime_ns, ctime_ns;
  uint32_t mode, nlink, uid, gid, blksize;
} fc_attr;

typedef struct {
  uint64_t id; /* 0: free (node ids are never 0) */
  uint64_t owner; /* st_ino of the entry the id was last given for (fc_node_is) */
  /* The name (fc_name_key of parent and name) the id was last given for; 0: not
   * known (a getattr, a read-ahead claim). Inode numbers alone do not tell
   * entries apart: an unchanged file keeps its number in every snapshot. */
  uint64_t key;
  /* Lookups answered from a name under this id that JS has not yet been told
   * of (fc_get_name marks, fc_reported counts down): while any is, the id is
   * given to no other entry, whatever JS decides, and the entry stays. */
  uint32_t unreported;
  fc_attr attr;
  uint32_t flags;
  double timeout;
  char *link;
  uint64_t link_until; /* CLOCK_MONOTONIC ns */
  uint64_t dir_end;    /* a directory's end offset (fc_put_dir_end); 0: not known */
} fc_entry;

typedef struct {
  fc_entry way[WAYS];
  unsigned victim; /* round-robin eviction */
} fc_set;

/* A name in a directory and the node a lookup of it finds. */
typedef struct {
  uint64_t parent; /* 0: free */
  uint64_t hash;   /* of parent and name: most misses compare no bytes */
  char *name;
  uint64_t id;
  fc_attr attr;
  double timeout;
  bool no_xattrs;
} fc_name;

typedef struct {
  fc_name way[WAYS];
  unsigned victim;
} fc_name_set;

struct fc_cache {
  pthread_mutex_t lock;
  size_t mask; /* sets - 1 */
  fc_set *sets;
  size_t name_mask;
  fc_name_set *name_sets;
};

static void attr_pack(fc_attr *a, const struct stat *st) {
  a->ino = (uint64_t)st->st_ino;
  a->size = (uint64_t)st->st_size;
  a->blocks = (uint64_t)st->st_blocks;
  a->rdev = (uint64_t)st->st_rdev;
  a->atime = st->st_atim.tv_sec;
  a->mtime = st->st_mtim.tv_sec;
  a->ctime = st->st_ctim.tv_sec;
  a->atime_ns = (uint32_t)st->st_atim.tv_nsec;
  a->mtime_ns = (uint32_t)st->st_mtim.tv_nsec;
  a->ctime_ns = (uint32_t)st->st_ctim.tv_nsec;
  a->mode = st->st_mode;
  a->nlink = (uint32_t)st->st_nlink;
  a->uid = st->st_uid;
  a->gid = st->st_gid;
  a->blksize = (uint32_t)st->st_blksize;
}

static void attr_unpack(const fc_attr *a, struct stat *st) {
  memset(st, 0, sizeof *st);
  st->st_ino = (ino_t)a->ino;
  st->st_size = (off_t)a->size;
  st->st_blocks = (blkcnt_t)a->blocks;
  st->st_rdev = (dev_t)a->rdev;
  st->st_atim.tv_sec = (time_t)a->atime;
  st->st_mtim.tv_sec = (time_t)a->mtime;
  st->st_ctim.tv_sec = (time_t)a->ctime;
  st->st_atim.tv_nsec = a->atime_ns;
  st->st_mtim.tv_nsec = a->mtime_ns;
  st->st_ctim.tv_nsec = a->ctime_ns;
  st->st_mode = a->mode;
  st->st_nlink = a->nlink;
  st->st_uid = a->uid;
  st->st_gid = a->gid;
  st->st_blksize = (blksize_t)a->blksize;
}

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
  size_t name_sets = sets / 4 ? sets / 4 : 1;
  c->name_sets = calloc(name_sets, sizeof *c->name_sets);
  if (!c->name_sets) {
    free(c->sets);
    free(c);
    return NULL;
  }
  c->name_mask = name_sets - 1;
  pthread_mutex_init(&c->lock, NULL);
  return c;
}

static void name_reset(fc_name *n) {
  free(n->name);
  memset(n, 0, sizeof *n);
}

static void entry_reset(fc_entry *e) {
  free(e->link);
  memset(e, 0, sizeof *e);
}

void fc_clear(fc_cache *c) {
  pthread_mutex_lock(&c->lock);
  for (size_t s = 0; s <= c->mask; s++)
    for (int w = 0; w < WAYS; w++) {
      fc_entry *e = &c->sets[s].way[w];
      if (!e->id) continue;
      /* Who the kernel holds the id as stays known until JS hears of it. */
      fc_entry keep = {.id = e->id, .owner = e->owner, .key = e->key, .unreported = e->unreported, .flags = F_GIVEN};
      entry_reset(e);
      if (keep.unreported) *e = keep;
    }
  for (size_t s = 0; s <= c->name_mask; s++)
    for (int w = 0; w < WAYS; w++)
      if (c->name_sets[s].way[w].parent) name_reset(&c->name_sets[s].way[w]);
  pthread_mutex_unlock(&c->lock);
}

void fc_free(fc_cache *c) {
  if (!c) return;
  fc_clear(c);
  pthread_mutex_destroy(&c->lock);
  free(c->sets);
  free(c->name_sets);
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

/* The entry for id, taking a free or the round-robin victim slot (one with
 * unreported lookups only when the whole set has them). Caller holds the lock. */
static fc_entry *slot(fc_cache *c, uint64_t id) {
  fc_set *s = set_of(c, id);
  fc_entry *free_slot = NULL;
  for (int w = 0; w < WAYS; w++) {
    if (s->way[w].id == id) return &s->way[w];
    if (!s->way[w].id && !free_slot) free_slot = &s->way[w];
  }
  fc_entry *e = free_slot;
  if (!e) {
    for (int tries = 0; tries < WAYS; tries++) {
      e = &s->way[s->victim];
      s->victim = (s->victim + 1) % WAYS;
      if (!e->unreported) break;
    }
    entry_reset(e);
  }
  e->id = id;
  return e;
}

/* Whether two attribute records describe the same version of the same entry:
 * the mount's inode numbers and ctimes (the publication time of the version) tell. */
static bool same_version(const fc_attr *a, const fc_attr *b) {
  return a->ino == b->ino && a->mode == b->mode && a->size == b->size && a->ctime == b->ctime &&
         a->ctime_ns == b->ctime_ns;
}

bool fc_node_is(fc_cache *c, uint64_t id, uint64_t ino) {
  pthread_mutex_lock(&c->lock);
  fc_entry *e = find(c, id);
  bool is = e && e->owner == ino;
  pthread_mutex_unlock(&c->lock);
  return is;
}

bool fc_claim(fc_cache *c, uint64_t id, uint64_t ino) {
  if (!id) return false;
  pthread_mutex_lock(&c->lock);
  fc_entry *e = find(c, id);
  /* The kernel may hold the id as that other entry (a lookup answered here
   * that JS has yet to hear of): it keeps it. */
  bool other = e && (e->flags & (F_ATTR | F_GIVEN)) && e->owner != ino;
  if (!other && (!e || e->owner != ino)) {
    e = slot(c, id);
    entry_reset(e);
    e->id = id;
    e->owner = ino;
  }
  pthread_mutex_unlock(&c->lock);
  return !other;
}

void fc_put_dir_end(fc_cache *c, uint64_t id, uint64_t ino, uint64_t end) {
  pthread_mutex_lock(&c->lock);
  fc_entry *e = find(c, id);
  if (e && (e->flags & F_ATTR) && e->owner == ino) e->dir_end = end;
  pthread_mutex_unlock(&c->lock);
}

bool fc_is_dir_end(fc_cache *c, uint64_t id, uint64_t off) {
  pthread_mutex_lock(&c->lock);
  fc_entry *e = find(c, id);
  bool end = e && e->dir_end && e->dir_end == off;
  pthread_mutex_unlock(&c->lock);
  return end;
}

/* fc_put_node's work; caller holds the lock. */
static bool put_node(fc_cache *c, uint64_t id, const struct stat *st, double timeout,
                     bool immutable, bool no_xattrs, uint64_t key) {
  fc_entry *e = slot(c, id);
  fc_attr given;
  attr_pack(&given, st);
  bool same = e->owner == given.ino && (!key || !e->key || e->key == key) &&
              (!(e->flags & F_ATTR) || (immutable && same_version(&e->attr, &given)));
  if (!same && e->owner) {
    /* Another entry under the same id (ids are hashes). The kernel holds the
     * id as that one if a lookup answered here is still unreported: refused.
     * Otherwise nothing known about the one before (attributes, no-xattrs,
     * link target, listing end) holds for this one, and the names listed
     * under the id stop being answered here. */
    if (e->unreported) return false;
    entry_reset(e);
    e->id = id;
  }
  e->owner = given.ino;
  if (key) e->key = key;
  if (immutable) {
    e->attr = given;
    e->timeout = timeout;
    e->flags |= F_ATTR;
  } else {
    e->flags |= F_GIVEN;
  }
  if (no_xattrs) e->flags |= F_NO_XATTRS;
  return true;
}

bool fc_put_node(fc_cache *c, uint64_t id, const struct stat *st, double timeout,
                 bool immutable, bool no_xattrs, uint64_t parent, const char *name) {
  if (!id) return true;
  uint64_t key = name ? fc_name_key(parent, name) : 0;
  pthread_mutex_lock(&c->lock);
  bool given = put_node(c, id, st, timeout, immutable, no_xattrs, key);
  pthread_mutex_unlock(&c->lock);
  return given;
}

void fc_reported(fc_cache *c, uint64_t id) {
  pthread_mutex_lock(&c->lock);
  fc_entry *e = find(c, id);
  if (e && e->unreported) e->unreported--;
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
    attr_unpack(&e->attr, st);
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

/* ---- names ---- */

uint64_t fc_name_key(uint64_t parent, const char *name) {
  uint64_t h = 0xcbf29ce484222325ULL ^ (parent * 0x9e3779b97f4a7c15ULL); /* FNV-1a */
  for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
    h ^= *p;
    h *= 0x100000001b3ULL;
  }
  /* FNV's last byte reaches few high bits: mix all of them in (murmur3's
   * finalizer), or names differing in their last digits share a few sets. */
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  return h ^ (h >> 33);
}

static fc_name_set *name_set_of(fc_cache *c, uint64_t h) {
  return &c->name_sets[(h >> 32) & c->name_mask];
}

bool fc_put_name(fc_cache *c, uint64_t parent, const char *name, uint64_t id,
                 const struct stat *st, double timeout, bool no_xattrs) {
  if (!parent || !id) return false;
  uint64_t h = fc_name_key(parent, name);
  char *copy = strdup(name);
  if (!copy) return false; /* a cache: missing out is fine */
  pthread_mutex_lock(&c->lock);
  if (!put_node(c, id, st, timeout, true, no_xattrs, h)) {
    pthread_mutex_unlock(&c->lock);
    free(copy);
    return false;
  }
  fc_name_set *s = name_set_of(c, h);
  fc_name *n = NULL;
  for (int w = 0; w < WAYS && !n; w++) {
    fc_name *x = &s->way[w];
    if (x->parent == parent && x->hash == h && strcmp(x->name, name) == 0) n = x;
  }
  for (int w = 0; w < WAYS && !n; w++)
    if (!s->way[w].parent) n = &s->way[w];
  if (!n) {
    n = &s->way[s->victim];
    s->victim = (s->victim + 1) % WAYS;
  }
  name_reset(n);
  n->parent = parent;
  n->hash = h;
  n->name = copy;
  n->id = id;
  attr_pack(&n->attr, st);
  n->timeout = timeout;
  n->no_xattrs = no_xattrs;
  pthread_mutex_unlock(&c->lock);
  return true;
}

bool fc_get_name(fc_cache *c, uint64_t parent, const char *name, uint64_t *id,
                 struct stat *st, double *timeout, bool *no_xattrs, bool mark) {
  uint64_t h = fc_name_key(parent, name);
  bool hit = false;
  pthread_mutex_lock(&c->lock);
  fc_name_set *s = name_set_of(c, h);
  for (int w = 0; w < WAYS; w++) {
    fc_name *n = &s->way[w];
    if (n->parent == parent && n->hash == h && strcmp(n->name, name) == 0) {
      /* Only while the id is still given for this entry (ids are hashes: JS
       * may have given it to another since; fc_put_name put both). */
      fc_entry *e = find(c, n->id);
      if (e && (e->flags & F_ATTR) && e->owner == n->attr.ino && e->key == h &&
          same_version(&e->attr, &n->attr)) {
        if (mark) e->unreported++;
        *id = n->id;
        attr_unpack(&n->attr, st);
        *timeout = n->timeout;
        *no_xattrs = n->no_xattrs;
        hit = true;
      }
      break;
    }
  }
  pthread_mutex_unlock(&c->lock);
  return hit;
}
