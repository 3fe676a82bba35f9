/* See fuse_push.h. */
#include "fuse_push.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

/* The kernel's stable ABI (linux/fuse.h, protocol 7.15). */
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

typedef struct fp_job {
  struct fp_job *next;
  uint64_t id;
  fcc_blob *content;
} fp_job;

struct fp_pusher {
  pthread_mutex_t lock;
  pthread_cond_t wake;
  fp_job *head, *tail;
  size_t queued, budget;
  bool stopping;
  int refs; /* the thread's and the owner's */
  int fd;
  uint64_t pushed, refused;
};

static void drop_queue(fp_pusher *p) {
  while (p->head) {
    fp_job *j = p->head;
    p->head = j->next;
    fcc_blob_unref(j->content);
    free(j);
  }
  p->tail = NULL;
  p->queued = 0;
}

static void unref(fp_pusher *p) {
  pthread_mutex_lock(&p->lock);
  bool last = --p->refs == 0;
  pthread_mutex_unlock(&p->lock);
  if (!last) return;
  drop_queue(p);
  close(p->fd);
  pthread_cond_destroy(&p->wake);
  pthread_mutex_destroy(&p->lock);
  free(p);
}

/* 0, or the errno of the write (ENOENT: the kernel does not know the node). */
static int push(int fd, const fp_job *j) {
  size_t len = j->content->len;
  struct kernel_notify_store_out store = {.nodeid = j->id, .offset = 0, .size = (uint32_t)len};
  struct kernel_out_header h = {.len = (uint32_t)(sizeof h + sizeof store + len),
                                .error = KERNEL_NOTIFY_STORE};
  struct iovec iov[3] = {{&h, sizeof h}, {&store, sizeof store}, {j->content->data, len}};
  ssize_t r;
  do r = writev(fd, iov, 3);
  while (r < 0 && errno == EINTR);
  return r < 0 ? errno : 0;
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
    p->queued -= j->content->len;
    pthread_mutex_unlock(&p->lock);
    int err = push(p->fd, j); /* may wait for a page a READ in flight holds */
    fcc_blob_unref(j->content);
    free(j);
    pthread_mutex_lock(&p->lock);
    if (err == 0)
      p->pushed++;
    else
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
  fp_job *j = malloc(sizeof *j);
  if (!j) return false;
  j->next = NULL;
  j->id = id;
  j->content = fcc_blob_ref(content);
  pthread_mutex_lock(&p->lock);
  bool taken = !p->stopping && p->queued + len <= p->budget;
  if (taken) {
    if (p->tail)
      p->tail->next = j;
    else
      p->head = j;
    p->tail = j;
    p->queued += len;
    pthread_cond_signal(&p->wake);
  }
  pthread_mutex_unlock(&p->lock);
  if (!taken) {
    fcc_blob_unref(j->content);
    free(j);
  }
  return taken;
}

void fp_clear(fp_pusher *p) {
  pthread_mutex_lock(&p->lock);
  drop_queue(p);
  pthread_mutex_unlock(&p->lock);
}

void fp_counts(fp_pusher *p, uint64_t *pushed, uint64_t *refused) {
  pthread_mutex_lock(&p->lock);
  *pushed = p->pushed;
  *refused = p->refused;
  pthread_mutex_unlock(&p->lock);
}

void fp_release(fp_pusher *p) {
  pthread_mutex_lock(&p->lock);
  p->stopping = true;
  pthread_cond_signal(&p->wake);
  pthread_mutex_unlock(&p->lock);
  unref(p);
}
