/* See fuse_push.h. */
#include "fuse_push.h"

#include "node_set.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

/* The kernel's stable ABI (linux/fuse.h, protocol 7.15; INVAL_ENTRY 7.12). */
#define KERNEL_NOTIFY_INVAL_ENTRY 3
#define KERNEL_NOTIFY_STORE 4
struct kernel_out_header {
  uint32_t len;
  int32_t error; /* a notification: its code */
  uint64_t unique; /* a notification: 0 */
};
struct kernel_notify_store_out {
  uint64_t nodeid, offset;
  uint32_t size, padding;
};
struct kernel_notify_inval_entry_out {
  uint64_t parent;
  uint32_t namelen, flags;
};

/* Entry invalidations queued at most: each is a few bytes, and one that does
 * not fit is only memory the kernel keeps a while longer. */
#define INVAL_QUEUE_MAX 4096

/* A push (content) or an entry invalidation (name: parent `id`). */
typedef struct fp_job {
  struct fp_job *next;
  uint64_t id;
  fcc_blob *content;
  char *name;
  uint32_t name_len;
} fp_job;

/* The pushes the kernel took are kept in a set of at most 2^17 slots (1 MiB). */
#define PUSHED_MAX_BITS 17
/* READs of pushed files taken for pages gone here and there, before the pusher
 * concludes that the kernel let pages go wholesale (with a 64th of the pushes). */
#define PUSHED_LOST_FEW 16

struct fp_pusher {
  pthread_mutex_t lock;
  pthread_cond_t wake;
  fp_job *head, *tail;
  size_t queued, budget; /* content bytes */
  size_t invals_queued;
  bool stopping;
  int refs; /* the thread's and the owner's */
  int fd;
  uint64_t pushed, refused, invalidated;
  ns_set pushed_ids;    /* the nodes whose whole content the kernel took (fp_pushed) */
  unsigned pushed_lost; /* READs of pushed nodes since the set was last emptied */
};

static void job_free(fp_job *j) {
  if (j->content) fcc_blob_unref(j->content);
  free(j->name);
  free(j);
}

/* Appends j; caller holds the lock. */
static void enqueue(fp_pusher *p, fp_job *j) {
  if (p->tail)
    p->tail->next = j;
  else
    p->head = j;
  p->tail = j;
  pthread_cond_signal(&p->wake);
}

static void drop_queue(fp_pusher *p) {
  while (p->head) {
    fp_job *j = p->head;
    p->head = j->next;
    job_free(j);
  }
  p->tail = NULL;
  p->queued = 0;
  p->invals_queued = 0;
}

static void unref(fp_pusher *p) {
  pthread_mutex_lock(&p->lock);
  bool last = --p->refs == 0;
  pthread_mutex_unlock(&p->lock);
  if (!last) return;
  drop_queue(p);
  ns_free(&p->pushed_ids);
  close(p->fd);
  pthread_cond_destroy(&p->wake);
  pthread_mutex_destroy(&p->lock);
  free(p);
}

/* Writes one notification: the header, then `arg` (its fixed part), then
 * `tail`. 0, or the errno of the write (ENOENT: the kernel does not know the
 * node). */
static int notify(int fd, int32_t code, const void *arg, size_t arg_len, const void *tail, size_t tail_len) {
  struct kernel_out_header h = {.len = (uint32_t)(sizeof h + arg_len + tail_len), .error = code};
  struct iovec iov[3] = {{&h, sizeof h}, {(void *)arg, arg_len}, {(void *)tail, tail_len}};
  ssize_t r;
  do r = writev(fd, iov, 3);
  while (r < 0 && errno == EINTR);
  return r < 0 ? errno : 0;
}

static int push(int fd, const fp_job *j) {
  if (!j->content) {
    struct kernel_notify_inval_entry_out inval = {.parent = j->id, .namelen = j->name_len};
    return notify(fd, KERNEL_NOTIFY_INVAL_ENTRY, &inval, sizeof inval, j->name, j->name_len + 1);
  }
  struct kernel_notify_store_out store = {.nodeid = j->id, .offset = 0, .size = (uint32_t)j->content->len};
  return notify(fd, KERNEL_NOTIFY_STORE, &store, sizeof store, j->content->data, j->content->len);
}

static void *run(void *arg) {
  fp_pusher *p = arg;
  pthread_mutex_lock(&p->lock);
  for (;;) {
    while (!p->head && !p->stopping) pthread_cond_wait(&p->wake, &p->lock);
    if (p->stopping) break;
    fp_job *j = p->head;
    p->head = j->next;
    if (!p->head) p->tail = NULL;
    bool is_push = j->content != NULL;
    if (is_push)
      p->queued -= j->content->len;
    else
      p->invals_queued--;
    pthread_mutex_unlock(&p->lock);
    /* May wait: a push for a page a READ in flight holds, an invalidation for
     * the directory's lock while a lookup in it is being answered. */
    int err = push(p->fd, j);
    uint64_t id = j->id;
    job_free(j);
    pthread_mutex_lock(&p->lock);
    if (!is_push) {
      if (err == 0) p->invalidated++; /* ENOENT: the kernel had nothing cached */
    } else if (err == 0) {
      p->pushed++;
      if (ns_add(&p->pushed_ids, id, PUSHED_MAX_BITS)) p->pushed_lost = 0;
    } else
      p->refused++;
    if (err == ENODEV) p->stopping = true; /* unmounted */
  }
  pthread_mutex_unlock(&p->lock);
  unref(p);
  return NULL;
}

fp_pusher *fp_start(int fuse_fd, size_t budget_bytes) {
  fp_pusher *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->fd = fcntl(fuse_fd, F_DUPFD_CLOEXEC, 0);
  if (p->fd < 0) {
    free(p);
    return NULL;
  }
  pthread_mutex_init(&p->lock, NULL);
  pthread_cond_init(&p->wake, NULL);
  p->budget = budget_bytes;
  p->refs = 2;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old); /* the thread takes no signals */
  pthread_t t;
  int err = pthread_create(&t, &attr, run, p);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  if (err) {
    p->refs = 1;
    unref(p);
    return NULL;
  }
  return p;
}

bool fp_offer(fp_pusher *p, uint64_t id, fcc_blob *content) {
  size_t len = content->len;
  if (len == 0 || len > UINT32_MAX - 4096) return false;
  fp_job *j = calloc(1, sizeof *j);
  if (!j) return false;
  j->id = id;
  j->content = fcc_blob_ref(content);
  pthread_mutex_lock(&p->lock);
  bool taken = !p->stopping && p->queued + len <= p->budget;
  if (taken) {
    p->queued += len;
    enqueue(p, j);
  }
  pthread_mutex_unlock(&p->lock);
  if (!taken) job_free(j);
  return taken;
}

bool fp_invalidate_entry(fp_pusher *p, uint64_t parent, const char *name, size_t len) {
  if (!parent || len == 0 || len > 1024 || memchr(name, 0, len)) return false;
  fp_job *j = calloc(1, sizeof *j);
  char *copy = malloc(len + 1);
  if (!j || !copy) {
    free(j);
    free(copy);
    return false;
  }
  memcpy(copy, name, len);
  copy[len] = 0;
  j->id = parent;
  j->name = copy;
  j->name_len = (uint32_t)len;
  pthread_mutex_lock(&p->lock);
  bool taken = !p->stopping && p->invals_queued < INVAL_QUEUE_MAX;
  if (taken) {
    p->invals_queued++;
    enqueue(p, j);
  }
  pthread_mutex_unlock(&p->lock);
  if (!taken) job_free(j);
  return taken;
}

void fp_clear(fp_pusher *p) {
  pthread_mutex_lock(&p->lock);
  /* Invalidations stay: they are what frees the forgotten snapshots' nodes. */
  fp_job **at = &p->head;
  p->tail = NULL;
  while (*at) {
    fp_job *j = *at;
    if (j->content) {
      p->queued -= j->content->len;
      *at = j->next;
      job_free(j);
    } else {
      p->tail = j;
      at = &j->next;
    }
  }
  pthread_mutex_unlock(&p->lock);
}

bool fp_pushed(fp_pusher *p, uint64_t id) {
  pthread_mutex_lock(&p->lock);
  bool pushed = ns_has(&p->pushed_ids, id);
  pthread_mutex_unlock(&p->lock);
  return pushed;
}

void fp_forget(fp_pusher *p, uint64_t id) {
  pthread_mutex_lock(&p->lock);
  ns_remove(&p->pushed_ids, id);
  pthread_mutex_unlock(&p->lock);
}

void fp_note_read(fp_pusher *p, uint64_t id) {
  pthread_mutex_lock(&p->lock);
  /* A page here and there goes (seen after heavy concurrent reading): those
   * nodes alone. Many more: the kernel let pages go wholesale. */
  if (ns_remove(&p->pushed_ids, id) && ++p->pushed_lost > PUSHED_LOST_FEW + p->pushed_ids.count / 64) {
    ns_clear(&p->pushed_ids);
    p->pushed_lost = 0;
  }
  pthread_mutex_unlock(&p->lock);
}

void fp_counts(fp_pusher *p, uint64_t *pushed, uint64_t *refused, uint64_t *invalidated) {
  pthread_mutex_lock(&p->lock);
  *pushed = p->pushed;
  *refused = p->refused;
  *invalidated = p->invalidated;
  pthread_mutex_unlock(&p->lock);
}

void fp_release(fp_pusher *p) {
  pthread_mutex_lock(&p->lock);
  p->stopping = true;
  pthread_cond_signal(&p->wake);
  pthread_mutex_unlock(&p->lock);
  unref(p);
}
