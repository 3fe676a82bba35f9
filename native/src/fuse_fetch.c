/* See fuse_fetch.h. */
#include "fuse_fetch.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_THREADS 8

typedef struct ff_parked {
  struct ff_parked *next;
  uint64_t node;
  void *item;
} ff_parked;

typedef struct ff_job {
  struct ff_job *next;
  uint64_t node, owner, size, generation;
  size_t count;
  sc_chunk *chunks;   /* fds are the job's own duplicates (sc_dup_fds) */
  ff_parked *parked;  /* requests waiting for it (ff_park) */
} ff_job;

struct ff_fetcher {
  pthread_mutex_t lock; /* the queue, budget, counts and parked requests */
  /* Held across a delivery, and with `lock` (taken after it) where `generation`
   * or `stopping` change: ff_clear and ff_stop wait for a delivery under way,
   * and ff_offer never waits for one (the store's and the pusher's locks). */
  pthread_mutex_t deliver_lock;
  pthread_cond_t wake;
  ff_job *head, *tail;
  size_t held, budget; /* bytes of files queued or being assembled */
  uint64_t generation;  /* ff_clear: work from before is not delivered */
  bool stopping;
  uint64_t delivered, failed;
  sc_secret secret;
  ff_deliver deliver;
  ff_unpark unpark;
  void *ctx;
  unsigned threads;
  pthread_t thread[MAX_THREADS];
  ff_job *assembling[MAX_THREADS]; /* each thread's job, for ff_park */
  unsigned delay_ms; /* SNAPFS_FUSE_FETCH_DELAY_MS: tests hold each file this long */
};

/* Hands each parked request back (not under the lock). */
static void unpark_all(ff_fetcher *f, bool delivered, ff_parked *p) {
  while (p) {
    ff_parked *next = p->next;
    f->unpark(f->ctx, p->node, delivered, p->item);
    free(p);
    p = next;
  }
}

static void job_free(ff_job *j) {
  sc_close_fds(j->chunks, j->count);
  free(j->chunks);
  free(j);
}

/* The job's whole verified content, or NULL. The chunks come in file order;
 * the gaps between them (holes) read as zeros. */
static fcc_blob *assemble(const ff_fetcher *f, const ff_job *j, sc_loader *loader) {
  fcc_blob *b = fcc_blob_new((size_t)j->size);
  if (!b) return NULL;
  b->owner = j->owner;
  uint8_t *data = (uint8_t *)b->data;
  uint64_t filled = 0;
  for (size_t i = 0; i < j->count; i++) {
    const sc_chunk *c = &j->chunks[i];
    if (c->file_offset < filled || c->file_offset > j->size || c->raw_len > j->size - c->file_offset ||
        !sc_load(loader, &f->secret, c, data + c->file_offset)) {
      fcc_blob_unref(b);
      return NULL;
    }
    memset(data + filled, 0, (size_t)(c->file_offset - filled));
    filled = c->file_offset + c->raw_len;
  }
  memset(data + filled, 0, (size_t)(j->size - filled));
  return b;
}

typedef struct {
  ff_fetcher *f;
  unsigned slot;
} ff_thread_arg;

static void *run(void *arg) {
  ff_fetcher *f = ((ff_thread_arg *)arg)->f;
  unsigned slot = ((ff_thread_arg *)arg)->slot;
  free(arg);
  /* Batch scheduling: a thread woken for a file does not preempt the JS thread
   * that is offering the next ones (on two cores it otherwise did, thousands of
   * times a walk); it runs on a free core, or once the JS thread waits. */
  struct sched_param none = {0};
  pthread_setschedparam(pthread_self(), SCHED_BATCH, &none);
  sc_loader loader;
  bool loading = sc_loader_init(&loader);
  pthread_mutex_lock(&f->lock);
  for (;;) {
    while (!f->head && !f->stopping) pthread_cond_wait(&f->wake, &f->lock);
    if (f->stopping) break;
    ff_job *j = f->head;
    f->head = j->next;
    if (!f->head) f->tail = NULL;
    f->assembling[slot] = j;
    pthread_mutex_unlock(&f->lock);
    if (f->delay_ms) usleep(f->delay_ms * 1000u);
    fcc_blob *content = loading ? assemble(f, j, &loader) : NULL;
    bool delivered = false;
    if (content) {
      pthread_mutex_lock(&f->deliver_lock);
      delivered = j->generation == f->generation && !f->stopping;
      if (delivered) f->deliver(f->ctx, j->node, content);
      pthread_mutex_unlock(&f->deliver_lock);
    }
    pthread_mutex_lock(&f->lock);
    f->assembling[slot] = NULL;
    if (content)
      f->delivered++;
    else
      f->failed++;
    f->held -= (size_t)j->size;
    ff_parked *parked = j->parked;
    j->parked = NULL;
    pthread_mutex_unlock(&f->lock);
    /* No longer reachable from the queue or `assembling`: let go without the lock. */
    unpark_all(f, delivered, parked);
    fcc_blob_unref(content);
    job_free(j);
    pthread_mutex_lock(&f->lock);
  }
  pthread_mutex_unlock(&f->lock);
  sc_loader_free(&loader);
  return NULL;
}

/* Moves job j's waiting requests onto *into. */
static void take_parked(ff_job *j, ff_parked **into) {
  while (j->parked) {
    ff_parked *p = j->parked;
    j->parked = p->next;
    p->next = *into;
    *into = p;
  }
}

/* Empties the queue (under the lock) and returns the requests waiting for what
 * will not be delivered now: queued jobs and those being assembled. The caller
 * hands them back (unpark_all) once the lock is released. */
static ff_parked *drop_queue(ff_fetcher *f) {
  ff_parked *parked = NULL;
  while (f->head) {
    ff_job *j = f->head;
    f->head = j->next;
    f->held -= (size_t)j->size;
    take_parked(j, &parked);
    job_free(j);
  }
  f->tail = NULL;
  for (unsigned i = 0; i < f->threads; i++)
    if (f->assembling[i]) take_parked(f->assembling[i], &parked);
  return parked;
}

bool ff_park(ff_fetcher *f, uint64_t node, void *item) {
  ff_parked *p = malloc(sizeof *p);
  if (!p) return false;
  p->item = item;
  bool parked = false;
  pthread_mutex_lock(&f->lock);
  if (!f->stopping) {
    ff_job *j = NULL;
    /* One being assembled is waited for only if it will be delivered. */
    for (unsigned i = 0; i < f->threads && !j; i++)
      if (f->assembling[i] && f->assembling[i]->node == node && f->assembling[i]->generation == f->generation)
        j = f->assembling[i];
    for (ff_job *q = f->head; q && !j; q = q->next)
      if (q->node == node) j = q;
    if (j) {
      p->node = node;
      p->next = j->parked;
      j->parked = p;
      parked = true;
    }
  }
  pthread_mutex_unlock(&f->lock);
  if (!parked) free(p);
  return parked;
}

ff_fetcher *ff_start(const uint8_t *secret, size_t secret_len, unsigned threads, size_t budget_bytes,
                     ff_deliver deliver, ff_unpark unpark, void *ctx) {
  if (threads == 0) return NULL;
  ff_fetcher *f = calloc(1, sizeof *f);
  if (!f) return NULL;
  if (!sc_secret_set(&f->secret, secret, secret_len)) {
    free(f);
    return NULL;
  }
  f->budget = budget_bytes;
  f->deliver = deliver;
  f->unpark = unpark;
  f->ctx = ctx;
  /* Tests only: reads then reliably come while a file is being assembled. */
  const char *delay = getenv("SNAPFS_FUSE_FETCH_DELAY_MS");
  if (delay) f->delay_ms = (unsigned)strtoul(delay, NULL, 10) % 10000u;
  pthread_mutex_init(&f->lock, NULL);
  pthread_mutex_init(&f->deliver_lock, NULL);
  pthread_cond_init(&f->wake, NULL);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old); /* the threads take no signals */
  for (unsigned i = 0; i < threads && i < MAX_THREADS; i++) {
    ff_thread_arg *arg = malloc(sizeof *arg);
    if (!arg) break;
    arg->f = f;
    arg->slot = f->threads;
    if (pthread_create(&f->thread[f->threads], NULL, run, arg) != 0) {
      free(arg);
      break;
    }
    f->threads++;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (f->threads == 0) {
    pthread_cond_destroy(&f->wake);
    pthread_mutex_destroy(&f->deliver_lock);
    pthread_mutex_destroy(&f->lock);
    free(f);
    return NULL;
  }
  return f;
}

bool ff_offer(ff_fetcher *f, uint64_t node, uint64_t owner, uint64_t size, const sc_chunk *chunks, size_t count) {
  if (size == 0 || size > f->budget || count == 0) return false;
  /* The job is made before the lock is taken, and the lock taken once: the JS
   * thread offers a file at a time while the threads take jobs. */
  ff_job *j = calloc(1, sizeof *j);
  sc_chunk *copy = j ? malloc(count * sizeof *copy) : NULL;
  if (!copy) {
    free(j);
    return false;
  }
  memcpy(copy, chunks, count * sizeof *copy);
  if (!sc_dup_fds(copy, count)) {
    free(copy);
    free(j);
    return false;
  }
  j->chunks = copy;
  j->node = node;
  j->owner = owner;
  j->size = size;
  j->count = count;
  pthread_mutex_lock(&f->lock);
  bool taken = !f->stopping && f->held + size <= f->budget;
  if (taken) {
    j->generation = f->generation;
    if (f->tail)
      f->tail->next = j;
    else
      f->head = j;
    f->tail = j;
    f->held += (size_t)size;
  }
  pthread_mutex_unlock(&f->lock);
  /* After the unlock: a thread woken while the lock is held would only wait for it. */
  if (taken)
    pthread_cond_signal(&f->wake);
  else
    job_free(j);
  return taken;
}

void ff_clear(ff_fetcher *f) {
  pthread_mutex_lock(&f->deliver_lock);
  pthread_mutex_lock(&f->lock);
  ff_parked *dropped = drop_queue(f);
  f->generation++;
  pthread_mutex_unlock(&f->lock);
  pthread_mutex_unlock(&f->deliver_lock);
  unpark_all(f, false, dropped);
}

void ff_counts(ff_fetcher *f, uint64_t *delivered, uint64_t *failed) {
  pthread_mutex_lock(&f->lock);
  *delivered = f->delivered;
  *failed = f->failed;
  pthread_mutex_unlock(&f->lock);
}

void ff_stop(ff_fetcher *f) {
  pthread_mutex_lock(&f->deliver_lock);
  pthread_mutex_lock(&f->lock);
  f->stopping = true;
  ff_parked *dropped = drop_queue(f);
  pthread_cond_broadcast(&f->wake);
  pthread_mutex_unlock(&f->lock);
  pthread_mutex_unlock(&f->deliver_lock);
  unpark_all(f, false, dropped);
  for (unsigned i = 0; i < f->threads; i++) pthread_join(f->thread[i], NULL);
  pthread_cond_destroy(&f->wake);
  pthread_mutex_destroy(&f->deliver_lock);
  pthread_mutex_destroy(&f->lock);
  free(f);
}
