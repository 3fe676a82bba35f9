/* See fuse_stream.h. */
#include "fuse_stream.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_THREADS 4
#define FS_STREAMS 4
/* Chunks are loaded while they start less than this far past the reader: room
 * for each thread to load one while the reader consumes the ones before (the
 * kernel itself reads 1 MiB ahead; chunks average 1 MiB). 6 MiB was not
 * measurably faster with the benchmark's dump. */
#define FS_AHEAD_BYTES ((uint64_t)4 << 20)
/* And kept until they end this far behind it: the kernel's reads arrive
 * nearly, not exactly, in order (with a 1 MiB read-ahead window, reads up to
 * 2.5 MiB behind the furthest one were seen; 1 MiB sent one read in ten to JS). */
#define FS_BEHIND_BYTES ((uint64_t)3 << 20)

enum { PIECE_IDLE, PIECE_LOADING, PIECE_READY, PIECE_FAILED, PIECE_DROPPED };

/* One chunk of a stream. `where.fd` is the piece's own duplicate until it is
 * loaded (closed by the loading thread, which owns it meanwhile) or dropped. */
typedef struct {
  sc_chunk where;
  fcc_blob *data; /* PIECE_READY */
  uint8_t state;
} fs_piece;

typedef struct fs_parked {
  struct fs_parked *next;
  uint64_t node, off;
  size_t size;
  void *item;
  fs_view view; /* filled when it is answered */
} fs_parked;

typedef struct {
  bool live;
  uint64_t node, owner, size;
  uint64_t serial;  /* which offer: a piece loaded for an older one is not kept */
  uint64_t reached; /* end of the furthest read answered or waiting */
  uint64_t used_at;
  /* Pieces are numbered from the stream's start; pieces[0] is number `base`
   * (those before it were dropped and let go when a stretch was added). */
  size_t base;
  size_t count; /* in pieces[] */
  size_t next;  /* the first piece not yet claimed for loading (index in pieces[]) */
  size_t kept;  /* pieces before this one are dropped (index in pieces[]) */
  fs_piece *pieces;
  fs_parked *parked;
} fs_stream;

struct fs_streams {
  pthread_mutex_t lock;
  pthread_cond_t wake;
  /* Threads between claiming a piece and the callbacks that follow; fs_clear
   * waits for none to be left, so that no callback runs after it returns. */
  unsigned busy;
  pthread_cond_t idle;
  fs_stream stream[FS_STREAMS];
  uint64_t serial, tick;
  bool stopping;
  sc_secret secret;
  fs_answer answer;
  fs_ending ending;
  void *ctx;
  unsigned threads;
  pthread_t thread[MAX_THREADS];
  uint64_t answered, parked_reads, failed;
  unsigned delay_ms; /* SNAPFS_FUSE_FETCH_DELAY_MS: tests hold each chunk this long */
};

void fs_view_release(fs_view *v) {
  for (int i = 0; i < v->parts; i++) fcc_blob_unref(v->held[i]);
  v->parts = 0;
}

static fs_stream *find(fs_streams *st, uint64_t node) {
  for (unsigned i = 0; i < FS_STREAMS; i++)
    if (st->stream[i].live && st->stream[i].node == node) return &st->stream[i];
  return NULL;
}

static uint64_t piece_end(const fs_piece *p) { return p->where.file_offset + p->where.raw_len; }

enum { VIEW_READY, VIEW_WAIT, VIEW_NONE };

/* Whether the stream's pieces answer [off, off + size): all loaded (VIEW_READY,
 * *v filled with references), some still to load (VIEW_WAIT), or not at all:
 * before the pieces kept, past the stretch, across a hole, a chunk that failed
 * or was dropped, or too many pieces (VIEW_NONE). Lock held. */
static int view_of(fs_stream *s, uint64_t off, size_t size, fs_view *v) {
  if (size == 0 || off >= s->size) return VIEW_NONE;
  uint64_t end = size < s->size - off ? off + size : s->size;
  size_t lo = s->kept, hi = s->count; /* the last piece starting at or before off */
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (s->pieces[mid].where.file_offset <= off)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo == s->kept) return VIEW_NONE;
  bool wait = false;
  int parts = 0;
  uint64_t pos = off;
  for (size_t i = lo - 1; pos < end; i++) {
    if (i >= s->count || parts == FS_VIEW_PARTS) return VIEW_NONE;
    fs_piece *p = &s->pieces[i];
    uint64_t start = p->where.file_offset, stop = piece_end(p);
    if (start > pos || stop <= pos) return VIEW_NONE; /* a hole: JS fills it */
    if (p->state == PIECE_FAILED || p->state == PIECE_DROPPED) return VIEW_NONE;
    uint64_t upto = stop < end ? stop : end;
    if (p->state != PIECE_READY) {
      wait = true;
    } else {
      v->iov[parts].iov_base = p->data->data + (pos - start);
      v->iov[parts].iov_len = (size_t)(upto - pos);
      v->held[parts] = p->data;
    }
    parts++;
    pos = upto;
  }
  if (wait) return VIEW_WAIT;
  for (int i = 0; i < parts; i++) fcc_blob_ref(v->held[i]);
  v->parts = parts;
  v->owner = s->owner;
  return VIEW_READY;
}

static void drop_piece(fs_piece *p) {
  if (p->state == PIECE_READY) fcc_blob_unref(p->data); /* a reply being sent may still hold it */
  if (p->state == PIECE_IDLE) close(p->where.fd);
  p->data = NULL;
  p->state = PIECE_DROPPED;
}

/* Lets go of the pieces the reader is done with (the kernel caches their pages
 * now): those ending FS_BEHIND_BYTES before the furthest read, and before every
 * read still waiting. Lock held. */
static void drop_behind(fs_stream *s) {
  uint64_t limit = s->reached > FS_BEHIND_BYTES ? s->reached - FS_BEHIND_BYTES : 0;
  for (fs_parked *q = s->parked; q; q = q->next)
    if (q->off < limit) limit = q->off;
  while (s->kept < s->count && piece_end(&s->pieces[s->kept]) <= limit &&
         s->pieces[s->kept].state != PIECE_LOADING) {
    drop_piece(&s->pieces[s->kept]);
    s->kept++;
  }
  if (s->next < s->kept) s->next = s->kept;
}

/* Ends stream s: its waiting reads move onto *orphans (answered without a
 * view, outside the lock), its pieces go (a loading one's descriptor is its
 * thread's, which finds the serial changed). Lock held. */
static void retire(fs_stream *s, fs_parked **orphans) {
  if (!s->live) return;
  while (s->parked) {
    fs_parked *q = s->parked;
    s->parked = q->next;
    q->next = *orphans;
    *orphans = q;
  }
  for (size_t i = s->kept; i < s->count; i++)
    if (s->pieces[i].state != PIECE_LOADING) drop_piece(&s->pieces[i]);
  free(s->pieces);
  s->pieces = NULL;
  s->live = false;
}

/* Ends stream s, whose reader read its last byte: the kernel caches its pages,
 * and a read that still comes goes to JS. Lock held; s has no reads waiting. */
static void finish(fs_stream *s) {
  fs_parked *none = NULL;
  retire(s, &none);
}

static void answer_all(fs_streams *st, fs_parked *q, bool with_view) {
  while (q) {
    fs_parked *next = q->next;
    st->answer(st->ctx, q->node, q->item, with_view ? &q->view : NULL);
    if (with_view) fs_view_release(&q->view);
    free(q);
    q = next;
  }
}

/* The piece a thread should load next, nearest its reader first and a stream
 * with reads waiting before any other; false when none is due. Lock held. */
static bool pick(fs_streams *st, fs_stream **out) {
  fs_stream *best = NULL;
  uint64_t best_margin = UINT64_MAX;
  for (unsigned i = 0; i < FS_STREAMS; i++) {
    fs_stream *s = &st->stream[i];
    if (!s->live || s->next >= s->count) continue;
    uint64_t start = s->pieces[s->next].where.file_offset;
    if (start >= s->reached + FS_AHEAD_BYTES) continue;
    uint64_t margin = start > s->reached ? start - s->reached : 0;
    if (s->parked) margin = 0;
    if (!best || margin < best_margin) {
      best = s;
      best_margin = margin;
    }
  }
  *out = best;
  return best != NULL;
}

static void *run(void *arg) {
  fs_streams *st = arg;
  /* As the fetcher's (fuse_fetch.c): woken for a chunk, a thread does not
   * preempt the loop or JS thread. */
  struct sched_param none = {0};
  pthread_setschedparam(pthread_self(), SCHED_BATCH, &none);
  sc_loader loader;
  bool can_load = sc_loader_init(&loader);
  pthread_mutex_lock(&st->lock);
  for (;;) {
    fs_stream *s;
    while (!st->stopping && !pick(st, &s)) pthread_cond_wait(&st->wake, &st->lock);
    if (st->stopping) break;
    st->busy++;
    size_t number = s->base + s->next++;
    fs_piece *p = &s->pieces[number - s->base];
    p->state = PIECE_LOADING;
    sc_chunk where = p->where;
    uint64_t serial = s->serial, node = s->node;
    /* The stretch's last piece: JS may add the next stretch before the reader gets there. */
    uint64_t ending = s->next == s->count && piece_end(p) < s->size ? piece_end(p) : 0;
    fcc_blob *data = can_load ? fcc_blob_new(where.raw_len) : NULL;
    if (data) data->owner = s->owner;
    pthread_mutex_unlock(&st->lock);

    if (ending && st->ending) st->ending(st->ctx, node, ending);
    if (st->delay_ms) usleep(st->delay_ms * 1000u);
    if (data && !sc_load(&loader, &st->secret, &where, (uint8_t *)data->data)) {
      fcc_blob_unref(data);
      data = NULL;
    }
    close(where.fd);

    fs_parked *ready = NULL, *orphans = NULL;
    pthread_mutex_lock(&st->lock);
    if (s->live && s->serial == serial) {
      p = &s->pieces[number - s->base]; /* pieces[] may have moved */
      p->data = data;
      p->state = data ? PIECE_READY : PIECE_FAILED;
      if (!data) st->failed++;
      data = NULL;
      /* The reads waiting for this piece: answered now, left to JS, or still waiting. */
      bool at_end = false;
      for (fs_parked **link = &s->parked; *link;) {
        fs_parked *q = *link;
        int v = view_of(s, q->off, q->size, &q->view);
        if (v == VIEW_WAIT) {
          link = &q->next;
          continue;
        }
        *link = q->next;
        if (v == VIEW_READY) {
          q->next = ready;
          ready = q;
          st->answered++;
          at_end = at_end || q->off + q->size >= s->size;
        } else {
          q->next = orphans;
          orphans = q;
        }
      }
      drop_behind(s);
      if (at_end && !s->parked) finish(s);
    }
    fcc_blob_unref(data); /* loaded for a stream that went meanwhile */
    pthread_mutex_unlock(&st->lock);
    answer_all(st, ready, true);
    answer_all(st, orphans, false);
    pthread_mutex_lock(&st->lock);
    if (--st->busy == 0) pthread_cond_broadcast(&st->idle);
  }
  pthread_mutex_unlock(&st->lock);
  sc_loader_free(&loader);
  return NULL;
}

fs_streams *fs_start(const uint8_t *secret, size_t secret_len, unsigned threads, fs_answer answer,
                     fs_ending ending, void *ctx) {
  if (threads == 0) return NULL;
  fs_streams *st = calloc(1, sizeof *st);
  if (!st) return NULL;
  if (!sc_secret_set(&st->secret, secret, secret_len)) {
    free(st);
    return NULL;
  }
  st->answer = answer;
  st->ending = ending;
  st->ctx = ctx;
  const char *delay = getenv("SNAPFS_FUSE_FETCH_DELAY_MS");
  if (delay) st->delay_ms = (unsigned)strtoul(delay, NULL, 10) % 10000u;
  pthread_mutex_init(&st->lock, NULL);
  pthread_cond_init(&st->wake, NULL);
  pthread_cond_init(&st->idle, NULL);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old); /* the threads take no signals */
  for (unsigned i = 0; i < threads && i < MAX_THREADS; i++)
    if (pthread_create(&st->thread[st->threads], NULL, run, st) == 0) st->threads++;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (st->threads == 0) {
    pthread_cond_destroy(&st->idle);
    pthread_cond_destroy(&st->wake);
    pthread_mutex_destroy(&st->lock);
    free(st);
    return NULL;
  }
  return st;
}

/* Adds `count` pieces after stream s's last, letting go of those dropped
 * before; false when memory is short. Lock held. */
static bool append(fs_stream *s, const fs_piece *pieces, size_t count) {
  size_t gone = s->kept, keep = s->count - s->kept;
  fs_piece *grown = malloc((keep + count) * sizeof *grown);
  if (!grown) return false;
  memcpy(grown, s->pieces + gone, keep * sizeof *grown);
  memcpy(grown + keep, pieces, count * sizeof *grown);
  free(s->pieces);
  s->pieces = grown;
  s->base += gone;
  s->count = keep + count;
  s->next -= gone;
  s->kept = 0;
  return true;
}

static void close_pieces(fs_piece *pieces, size_t count) {
  for (size_t k = 0; k < count; k++) close(pieces[k].where.fd);
  free(pieces);
}

bool fs_offer(fs_streams *st, uint64_t node, uint64_t owner, uint64_t size, uint64_t reached,
              const sc_chunk *chunks, size_t count, bool extend) {
  if (count == 0 || size == 0) return false;
  /* Each piece gets a descriptor of its own: whoever loads or drops it closes it. */
  fs_piece *pieces = calloc(count, sizeof *pieces);
  if (!pieces) return false;
  for (size_t i = 0; i < count; i++) {
    pieces[i].where = chunks[i];
    pieces[i].where.fd = fcntl(chunks[i].fd, F_DUPFD_CLOEXEC, 0);
    bool ordered = i == 0 || chunks[i].file_offset >= chunks[i - 1].file_offset + chunks[i - 1].raw_len;
    if (pieces[i].where.fd < 0 || !ordered || chunks[i].raw_len == 0 ||
        chunks[i].raw_len > size || chunks[i].file_offset > size - chunks[i].raw_len) {
      if (pieces[i].where.fd >= 0) close(pieces[i].where.fd);
      close_pieces(pieces, i);
      return false;
    }
  }
  fs_parked *orphans = NULL;
  pthread_mutex_lock(&st->lock);
  fs_stream *s = find(st, node);
  if (extend) {
    bool taken = s && !st->stopping && s->owner == owner && s->size == size &&
                 pieces[0].where.file_offset >= piece_end(&s->pieces[s->count - 1]) && append(s, pieces, count);
    pthread_mutex_unlock(&st->lock);
    if (taken) {
      free(pieces);
      pthread_cond_broadcast(&st->wake);
    } else {
      close_pieces(pieces, count);
    }
    return taken;
  }
  if (!s) {
    for (unsigned i = 0; i < FS_STREAMS && !s; i++)
      if (!st->stream[i].live) s = &st->stream[i];
  }
  if (!s) { /* else the one read least recently */
    s = &st->stream[0];
    for (unsigned i = 1; i < FS_STREAMS; i++)
      if (st->stream[i].used_at < s->used_at) s = &st->stream[i];
  }
  retire(s, &orphans);
  bool taken = !st->stopping;
  if (taken) {
    *s = (fs_stream){.live = true,
                     .node = node,
                     .owner = owner,
                     .size = size,
                     .serial = ++st->serial,
                     .reached = reached,
                     .used_at = ++st->tick,
                     .count = count,
                     .pieces = pieces};
  }
  pthread_mutex_unlock(&st->lock);
  if (taken)
    pthread_cond_broadcast(&st->wake);
  else
    close_pieces(pieces, count);
  answer_all(st, orphans, false);
  return taken;
}

fs_result fs_read(fs_streams *st, uint64_t node, uint64_t off, size_t size, fs_view *view, void *item) {
  view->parts = 0;
  fs_parked *q = NULL;
  pthread_mutex_lock(&st->lock);
  fs_stream *s = find(st, node);
  fs_result result = FS_MISS;
  /* Far ahead of the window: a reader that jumped, answered by JS. */
  if (s && off < s->reached + FS_AHEAD_BYTES) {
    int v = view_of(s, off, size, view);
    if (v != VIEW_NONE && (v == VIEW_READY || item)) {
      if (v == VIEW_WAIT) {
        q = malloc(sizeof *q);
        if (q) {
          *q = (fs_parked){.next = s->parked, .node = node, .off = off, .size = size, .item = item};
          s->parked = q;
          st->parked_reads++;
        }
      } else {
        st->answered++;
      }
      if (v == VIEW_READY || q) {
        result = v == VIEW_READY ? FS_HIT : FS_PARKED;
        uint64_t end = off + size < s->size ? off + size : s->size;
        if (end > s->reached) s->reached = end;
        s->used_at = ++st->tick;
        drop_behind(s);
        if (end == s->size && !s->parked) finish(s); /* the reader got to the end */
      }
    }
  }
  bool due = s && s->live && s->next < s->count && s->pieces[s->next].state == PIECE_IDLE &&
             s->pieces[s->next].where.file_offset < s->reached + FS_AHEAD_BYTES;
  pthread_mutex_unlock(&st->lock);
  if (due) pthread_cond_signal(&st->wake);
  return result;
}

void fs_clear(fs_streams *st) {
  fs_parked *orphans = NULL;
  pthread_mutex_lock(&st->lock);
  for (unsigned i = 0; i < FS_STREAMS; i++) retire(&st->stream[i], &orphans);
  while (st->busy) pthread_cond_wait(&st->idle, &st->lock);
  pthread_mutex_unlock(&st->lock);
  answer_all(st, orphans, false);
}

void fs_counts(fs_streams *st, uint64_t *answered, uint64_t *parked, uint64_t *failed) {
  pthread_mutex_lock(&st->lock);
  *answered = st->answered;
  *parked = st->parked_reads;
  *failed = st->failed;
  pthread_mutex_unlock(&st->lock);
}

void fs_stop(fs_streams *st) {
  pthread_mutex_lock(&st->lock);
  st->stopping = true;
  pthread_cond_broadcast(&st->wake);
  pthread_mutex_unlock(&st->lock);
  for (unsigned i = 0; i < st->threads; i++) pthread_join(st->thread[i], NULL);
  fs_clear(st);
  pthread_cond_destroy(&st->idle);
  pthread_cond_destroy(&st->wake);
  pthread_mutex_destroy(&st->lock);
  free(st);
}
