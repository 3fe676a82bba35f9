/*
 * snapfs_fuse: N-API binding to libfuse 2.9's low-level (inode-based) API.
 *
 * libfuse is not linked: it is dlopen()ed at run time (load()), and only the
 * functions listed in FL_SYMBOLS are looked up, so the addon loads on machines
 * without libfuse and can use the copy shipped in fuse-shared-library-linux.
 *
 * Threads and ownership
 * ---------------------
 * Each mount has one loop thread that reads requests from /dev/fuse and lets
 * libfuse decode them. The low-level callbacks never block and never reply
 * (except for operations answered in C: forget, the EROFS write operations,
 * setattr other than atime-only, and what the session's cache knows, see
 * "Answers without JS" below): they copy their arguments into a heap
 * fl_item, link it into the session's pending list and queue it to JS with a
 * thread-safe function. On the JS thread the item is wrapped in a type-tagged
 * napi_external (the request handle) and passed to the JS dispatcher. JS
 * answers whenever it likes by calling a reply function with the handle; the
 * reply goes straight to libfuse (fuse_reply_* may be called from any thread).
 *
 * A request handle is answered at most once: its item records PENDING / DONE /
 * DEAD. A second reply throws; a reply after the session ended (when C has
 * already answered every pending request with EIO) is dropped and returns
 * false. A handle garbage-collected while still pending is answered with EIO.
 *
 * The loop polls /dev/fuse together with a wake-up pipe, so stop() ends it
 * promptly even while the kernel mount is busy. When it ends (unmounted:
 * ENODEV; or stopped), it queues a CLOSED item behind every request it queued.
 * On the JS thread that item tears the session down: join the thread, answer
 * still-pending requests with EIO, destroy the libfuse session (closing
 * /dev/fuse, which makes the kernel abort anything not yet answered), and tell
 * JS. The session struct is freed when both the thread-safe function and the
 * JS session handle are finalized.
 *
 * Answers without JS
 * ------------------
 * Waking JS costs a thread hop, an N-API call and a reply per request, and
 * `ls -l` or a path walk through a symlink repeat the same questions. So the
 * loop thread answers from fuse_cache.c what JS already told it: getattr of
 * nodes JS called immutable, readlink within the validity JS gave, getxattr
 * and listxattr of nodes JS said have no xattrs (ENODATA), and getxattr of
 * names outside the namespaces given at mount (e.g. security.selinux when only
 * user.* exists): EOPNOTSUPP, which ls caches per device, as it cannot cache
 * ENODATA (two round trips a file for `ls -l`'s ACL and label marks).
 *
 * Lookups too, of names a readdir reply listed with their node (immutable
 * content; `ls -l` and `find -ls` look up every name they just read). The
 * kernel then holds a reference JS never saw: the loop thread records
 * (node, parent, name) and hands the records to JS in batches (FL_REF),
 * always before anything else it queues, so JS knows a node before any
 * request about it and before its forget.
 */
#include "common.h"
#include "fuse_cache.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include <fuse_lowlevel.h>

#include "fuse_content.h"
#include "fuse_fetch.h"
#include "fuse_stream.h"
#include "fuse_push.h"

/* ------------------------------------------------------------------ */
/* libfuse, loaded at run time                                         */

#define FL_SYMBOLS(X)            \
  X(fuse_mount)                  \
  X(fuse_unmount)                \
  X(fuse_opt_free_args)          \
  X(fuse_lowlevel_new)           \
  X(fuse_session_add_chan)       \
  X(fuse_session_destroy)        \
  X(fuse_session_exit)           \
  X(fuse_session_exited)         \
  X(fuse_session_receive_buf)    \
  X(fuse_session_process_buf)    \
  X(fuse_chan_new)               \
  X(fuse_chan_destroy)           \
  X(fuse_chan_session)           \
  X(fuse_chan_data)              \
  X(fuse_chan_fd)                \
  X(fuse_chan_bufsize)           \
  X(fuse_req_userdata)           \
  X(fuse_reply_err)              \
  X(fuse_reply_none)             \
  X(fuse_reply_entry)            \
  X(fuse_reply_attr)             \
  X(fuse_reply_readlink)         \
  X(fuse_reply_open)             \
  X(fuse_reply_buf)              \
  X(fuse_reply_iov)              \
  X(fuse_reply_statfs)           \
  X(fuse_reply_xattr)            \
  X(fuse_add_direntry)

static struct {
#define X(name) __typeof__(name) *name;
  FL_SYMBOLS(X)
#undef X
} lf;

static void *lf_handle;
static char *lf_path;

/* ------------------------------------------------------------------ */
/* Sessions and request items                                          */

/* Operation codes shared with lib/platform/libfuse.ts. */
enum {
  FL_LOOKUP = 0,
  FL_FORGET = 1,
  FL_GETATTR = 2,
  FL_READLINK = 3,
  FL_OPEN = 4,
  FL_READ = 5,
  FL_RELEASE = 6,
  FL_OPENDIR = 7,
  FL_READDIR = 8,
  FL_RELEASEDIR = 9,
  FL_STATFS = 10,
  FL_GETXATTR = 11,
  FL_LISTXATTR = 12,
  FL_ACCESS = 13,
  FL_REF = 14,
  FL_READDIRPLUS = 15,
  FL_STREAM_ENDING = 16, /* not a request: a stream's stretch is running out (fuse_stream.h) */
  FL_CLOSED = 31
};

enum { RQ_PENDING = 0, RQ_DONE = 1, RQ_DEAD = 2 };

typedef struct fl_session fl_session;

#define KERNEL_OPCODES 64 /* opcodes counted: all the kernel sends us */

/* Files read ahead kept for the reads that still come: at most this much, in
 * this many files. */
#define CONTENT_BUDGET_BYTES (4u << 20)
/* Bytes of files queued for pushing into the page cache (see fuse_push.h). */
#define PUSH_BUDGET_BYTES (16u << 20)
#define CONTENT_SLOTS 1024u
/* Files read ahead being assembled from their stored chunks (fuse_fetch.h):
 * at most this many bytes, on this many threads. */
#define FETCH_BUDGET_BYTES (16u << 20)
#define FETCH_THREADS 2u
#define STREAM_THREADS 2u
/* offerStoredContent's chunk records (little-endian): fd i32, flags u32
 * (bit 0: zstd), pack offset u64, stored length u32, raw length u32, file
 * offset u64, id 16 bytes. */
#define STORED_CHUNK_BYTES 48

typedef struct fl_item {
  struct fl_item *prev, *next; /* session's pending list (requests only) */
  fl_session *s;
  fuse_req_t req; /* NULL for forget and closed items */
  int op;
  int state; /* written on the JS thread once delivered */
  uint64_t ino;
  uint64_t a, b, c; /* per-operation arguments, see fl_call_js */
  size_t len;       /* bytes used in data */
  char data[];      /* NUL-terminated name, or forget pairs */
} fl_item;

struct fl_session {
  napi_env env;
  napi_threadsafe_function tsfn;
  struct fuse_session *se;
  struct fuse_chan *ch;
  char *mountpoint;
  int wake[2];
  pthread_t thread;
  bool thread_started;
  bool torn_down;
  bool hook_added;
  bool export_support;
  bool push_content; /* offered files also go to s->pusher's page cache pushes */
  bool kernel_opens; /* the kernel offered FUSE_NO_OPEN_SUPPORT (see ll_open) */
  /* INIT as the kernel sent it, until its reply is on its way (see ch_send). */
  uint64_t init_unique;
  uint32_t kernel_minor, kernel_flags;
  bool readdirplus; /* negotiated: listings may hand the kernel looked-up nodes */
  bool plus_next;   /* loop thread: the READDIR libfuse decodes next was a READDIRPLUS */
  _Atomic uint64_t requests[KERNEL_OPCODES]; /* received, by opcode */
  _Atomic uint64_t content_reads;            /* READs answered from s->content */
  _Atomic uint64_t parked_reads;             /* READs that waited for the fetcher */
  _Atomic uint64_t dir_ends;                 /* READDIRs at a directory's end answered here */
  _Atomic bool reads_closed; /* the loop ended: reads the fetcher held get EIO, not JS */
  fc_cache *cache;
  fcc_store *content; /* files read ahead (fuse_content.h) */
  fp_pusher *pusher;  /* notifications to the kernel (fuse_push.h); NULL: none */
  ff_fetcher *fetcher; /* NULL until JS gives the hash secret (fuse_fetch.h) */
  uint64_t fetched, fetch_failed; /* the fetcher's counts when it stopped */
  fs_streams *streams; /* large files read through, started with the fetcher (fuse_stream.h) */
  uint64_t streamed, stream_parked, stream_failed; /* the streams' counts when they stopped */
  uint64_t pushed, push_refused, invalidated; /* the pusher's counts when it stopped */
  bool names; /* JS takes FL_REF: lookups may be answered from listed names */
  bool stretches; /* JS takes FL_STREAM_ENDING: it adds stretches to streams */
  /* Lookups answered here, not yet told to JS: records of node u64, parent
   * u64, name length u32, name bytes. Loop thread only. */
  char *ref_buf;
  size_t ref_len, ref_cap;
  uint64_t ref_count;
  char *xattr_ns;      /* NUL-separated prefixes, or NULL: every name goes to JS */
  size_t xattr_ns_len; /* bytes in xattr_ns */
  fl_item *close_item; /* handed to the loop thread, which queues it */
  pthread_mutex_t lock; /* guards the pending list */
  fl_item pending;      /* list head (sentinel) */
  unsigned refs;        /* tsfn + JS handle; JS thread only */
  fl_session *live_next; /* all mounted sessions, for atexit */
  struct fuse_lowlevel_ops ops;
};

static const napi_type_tag REQ_TAG = {0x736e617066737271ULL, 0x9e3779b97f4a7c15ULL};
static const napi_type_tag SESSION_TAG = {0x736e617066737373ULL, 0xc2b2ae3d27d4eb4fULL};

/* Mounted sessions, lazily detached if the process exits with them. */
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static fl_session *live_head;
static bool atexit_registered;

static void fl_atexit(void) {
  pthread_mutex_lock(&live_lock);
  for (fl_session *s = live_head; s; s = s->live_next)
    umount2(s->mountpoint, MNT_DETACH);
  pthread_mutex_unlock(&live_lock);
}

static void live_add(fl_session *s) {
  pthread_mutex_lock(&live_lock);
  s->live_next = live_head;
  live_head = s;
  pthread_mutex_unlock(&live_lock);
}

static void live_remove(fl_session *s) {
  pthread_mutex_lock(&live_lock);
  for (fl_session **p = &live_head; *p; p = &(*p)->live_next) {
    if (*p == s) {
      *p = s->live_next;
      break;
    }
  }
  pthread_mutex_unlock(&live_lock);
}

static void list_unlink(fl_session *s, fl_item *it) {
  pthread_mutex_lock(&s->lock);
  it->prev->next = it->next;
  it->next->prev = it->prev;
  it->prev = it->next = NULL;
  pthread_mutex_unlock(&s->lock);
}

/* Takes a pending request out of the session: the caller must answer the
 * returned fuse_req_t. JS thread only. */
static fuse_req_t fl_claim(fl_item *it) {
  fuse_req_t req = it->req;
  list_unlink(it->s, it);
  it->state = RQ_DONE;
  it->req = NULL;
  return req;
}

/* ---- callbacks on the loop thread ---- */

static fl_item *item_new(fuse_req_t req, int op, uint64_t ino, size_t extra) {
  fl_item *it = calloc(1, sizeof *it + extra);
  if (!it) return NULL;
  it->req = req;
  it->op = op;
  it->ino = ino;
  it->state = RQ_PENDING;
  return it;
}

#define REF_FLUSH_BYTES 16384

/* Hands JS the lookups answered here since the last time. Loop thread only;
 * called before anything else is queued, so JS sees them first. */
static void flush_refs(fl_session *s) {
  if (!s->ref_count) return;
  fl_item *it = item_new(NULL, FL_REF, 0, s->ref_len);
  if (it) {
    it->a = s->ref_count;
    it->len = s->ref_len;
    memcpy(it->data, s->ref_buf, s->ref_len);
    if (napi_call_threadsafe_function(s->tsfn, it, napi_tsfn_nonblocking) != napi_ok)
      free(it); /* the session is ending */
  }
  s->ref_len = 0;
  s->ref_count = 0;
}

/* Room for one more record with a name of n bytes; false when out of memory. */
static bool reserve_ref(fl_session *s, size_t n) {
  size_t need = s->ref_len + 20 + n;
  if (need <= s->ref_cap) return true;
  size_t cap = s->ref_cap ? s->ref_cap : REF_FLUSH_BYTES * 2;
  while (cap < need) cap *= 2;
  char *p = realloc(s->ref_buf, cap);
  if (!p) return false;
  s->ref_buf = p;
  s->ref_cap = cap;
  return true;
}

/* Records that the kernel now holds one more reference to id (room reserved). */
static void add_ref(fl_session *s, uint64_t id, uint64_t parent, const char *name, size_t n) {
  uint32_t len = (uint32_t)n;
  char *p = s->ref_buf + s->ref_len;
  memcpy(p, &id, 8);
  memcpy(p + 8, &parent, 8);
  memcpy(p + 16, &len, 4);
  memcpy(p + 20, name, n);
  s->ref_len += 20 + n;
  s->ref_count++;
  if (s->ref_len >= REF_FLUSH_BYTES) flush_refs(s);
}

/* Links a request item into the pending list and hands it to JS. On any
 * failure the request is answered here. */
/* Hands JS a request item; any thread, once the lookups before it were
 * flushed (flush_refs). */
static void submit_item(fl_session *s, fl_item *it) {
  it->s = s;
  pthread_mutex_lock(&s->lock);
  it->prev = &s->pending;
  it->next = s->pending.next;
  s->pending.next->prev = it;
  s->pending.next = it;
  pthread_mutex_unlock(&s->lock);
  if (napi_call_threadsafe_function(s->tsfn, it, napi_tsfn_nonblocking) != napi_ok) {
    fuse_req_t req = it->req;
    list_unlink(s, it);
    free(it);
    lf.fuse_reply_err(req, EIO);
  }
}

static void fl_submit(fl_session *s, fuse_req_t req, fl_item *it) {
  if (!it) {
    lf.fuse_reply_err(req, ENOMEM);
    return;
  }
  flush_refs(s);
  submit_item(s, it);
}

static void fl_queue(fuse_req_t req, int op, uint64_t ino, uint64_t a, uint64_t b,
                     uint64_t c, const char *name) {
  fl_session *s = lf.fuse_req_userdata(req);
  size_t n = name ? strlen(name) : 0;
  fl_item *it = item_new(req, op, ino, name ? n + 1 : 0);
  if (it) {
    it->a = a;
    it->b = b;
    it->c = c;
    if (name) {
      memcpy(it->data, name, n + 1);
      it->len = n;
    }
  }
  fl_submit(s, req, it);
}

static void ll_init(void *userdata, struct fuse_conn_info *conn) {
  fl_session *s = userdata;
  if (s->export_support && (conn->capable & FUSE_CAP_EXPORT_SUPPORT))
    conn->want |= FUSE_CAP_EXPORT_SUPPORT;
}

static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  fl_session *s = lf.fuse_req_userdata(req);
  struct fuse_entry_param e;
  uint64_t id;
  double timeout;
  bool no_xattrs;
  size_t n = strlen(name);
  if (s->names && reserve_ref(s, n) &&
      fc_get_name(s->cache, parent, name, &id, &e.attr, &timeout, &no_xattrs, true)) {
    e.ino = (fuse_ino_t)id;
    e.generation = 0;
    e.attr_timeout = e.entry_timeout = timeout;
    /* Not taken (interrupted): the kernel holds no reference. */
    if (lf.fuse_reply_entry(req, &e) == 0) add_ref(s, id, parent, name, n);
    else fc_reported(s->cache, id);
    return;
  }
  fl_queue(req, FL_LOOKUP, parent, 0, 0, 0, name);
}

static void queue_forgets(fl_session *s, size_t count, const uint64_t *pairs) {
  flush_refs(s); /* a node's forget never reaches JS before its reference */
  fl_item *it = item_new(NULL, FL_FORGET, 0, count * 2 * sizeof(uint64_t));
  if (!it) return; /* forget is advisory; nothing to answer */
  it->a = count;
  memcpy(it->data, pairs, count * 2 * sizeof(uint64_t));
  if (napi_call_threadsafe_function(s->tsfn, it, napi_tsfn_nonblocking) != napi_ok)
    free(it);
}

static void ll_forget(fuse_req_t req, fuse_ino_t ino, unsigned long nlookup) {
  fl_session *s = lf.fuse_req_userdata(req);
  lf.fuse_reply_none(req);
  if (s->pusher) fp_forget(s->pusher, ino);
  uint64_t pair[2] = {ino, nlookup};
  queue_forgets(s, 1, pair);
}

static void ll_forget_multi(fuse_req_t req, size_t count,
                            struct fuse_forget_data *forgets) {
  fl_session *s = lf.fuse_req_userdata(req);
  uint64_t *pairs = malloc(count * 2 * sizeof(uint64_t) + 1);
  if (pairs) {
    for (size_t i = 0; i < count; i++) {
      pairs[2 * i] = forgets[i].ino;
      pairs[2 * i + 1] = forgets[i].nlookup;
    }
  }
  for (size_t i = 0; s->pusher && i < count; i++) fp_forget(s->pusher, forgets[i].ino);
  lf.fuse_reply_none(req);
  if (pairs) {
    queue_forgets(s, count, pairs);
    free(pairs);
  }
}

/* getattr from the cache, else from JS. */
static void answer_getattr(fuse_req_t req, fuse_ino_t ino) {
  fl_session *s = lf.fuse_req_userdata(req);
  struct stat st;
  double timeout;
  if (fc_get_attr(s->cache, ino, &st, &timeout))
    lf.fuse_reply_attr(req, &st, timeout);
  else
    fl_queue(req, FL_GETATTR, ino, 0, 0, 0, NULL);
}

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  (void)fi;
  answer_getattr(req, ino);
}

/* Read-only: only a setattr that changes nothing but the access time is
 * accepted, as a no-op answered with the current attributes (JS getattr). */
static void ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi) {
  (void)attr;
  (void)fi;
  if ((to_set & ~(FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW)) == 0)
    answer_getattr(req, ino);
  else
    lf.fuse_reply_err(req, EROFS);
}

#define LINK_MAX_BYTES 4097 /* a target of up to 4096 bytes and its NUL */

static void ll_readlink(fuse_req_t req, fuse_ino_t ino) {
  fl_session *s = lf.fuse_req_userdata(req);
  char target[LINK_MAX_BYTES];
  if (fc_get_link(s->cache, ino, target, sizeof target))
    lf.fuse_reply_readlink(req, target);
  else
    fl_queue(req, FL_READLINK, ino, 0, 0, 0, NULL);
}

/* File handle of an open answered here: JS keeps no per-open state for it and
 * serves its reads by node id (JS's own handles start at 1). */
#define OPENED_BY_BINDING 0

/* A read-only open of a regular file whose attributes JS called immutable
 * (snapshot content) needs no check and no state in JS: answered here, with
 * keep_cache since the content never changes. A tape job's tar of a spool
 * opens and releases every file once: two round trips to JS saved per file.
 *
 * Better still, no round trip: every regular file of the mount is snapshot
 * content and the mount is read-only (the kernel refuses writes itself), so
 * when the kernel offers it (FUSE_NO_OPEN_SUPPORT), the first such open
 * answers ENOSYS. The kernel then opens every file itself, as this would
 * (fh 0, keep_cache), and sends neither open nor release again. */
static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  fl_session *s = lf.fuse_req_userdata(req);
  struct stat st;
  double timeout;
  if ((fi->flags & O_ACCMODE) == O_RDONLY && !(fi->flags & O_TRUNC) &&
      fc_get_attr(s->cache, ino, &st, &timeout) && S_ISREG(st.st_mode)) {
    if (s->kernel_opens) {
      lf.fuse_reply_err(req, ENOSYS);
      return;
    }
    fi->fh = OPENED_BY_BINDING;
    fi->keep_cache = 1;
    lf.fuse_reply_open(req, fi); /* frees req even when it fails (interrupted) */
    return;
  }
  fl_queue(req, FL_OPEN, ino, (uint32_t)fi->flags, 0, 0, NULL);
}

/* Answers a read from the content store; false when the store lacks it. */
static bool read_stored(fl_session *s, fuse_req_t req, uint64_t ino, size_t size, off_t off) {
  const char *bytes;
  size_t n;
  fcc_blob *content;
  if (off < 0 || !fcc_take(s->content, ino, (uint64_t)off, size, &bytes, &n, &content)) return false;
  if (!fc_node_is(s->cache, ino, content->owner)) {
    fcc_blob_unref(content); /* read ahead for an entry this node id no longer names */
    return false;
  }
  /* Not under the store's lock: the reply wakes the reader, which takes a
   * while here, and JS fills the store meanwhile. */
  lf.fuse_reply_buf(req, bytes, n);
  fcc_blob_unref(content);
  atomic_fetch_add_explicit(&s->content_reads, 1, memory_order_relaxed);
  return true;
}

/* Sends a stream's view as the reply to read `it` (and frees it), if the
 * bytes are still those of the entry the node id names. */
static bool reply_view(fl_session *s, fl_item *it, uint64_t ino, fs_view *view) {
  bool ours = fc_node_is(s->cache, ino, view->owner);
  if (ours) {
    lf.fuse_reply_iov(it->req, view->iov, view->parts);
    free(it);
  }
  fs_view_release(view);
  return ours;
}

/* Answers a read of a large file the streams hold (offerStream), at once or
 * once its chunks are loaded (answer_streamed); false when they do not. */
static bool read_streamed(fl_session *s, fl_item *it, uint64_t ino, size_t size, off_t off) {
  fs_view view;
  switch (fs_read(s->streams, ino, (uint64_t)off, size, &view, it)) {
  case FS_HIT:
    return reply_view(s, it, ino, &view);
  case FS_PARKED:
    return true;
  default:
    return false;
  }
}

/* A read fs_read held, on a stream's thread: answered with its bytes, else
 * handed to JS (which reports a damaged chunk). */
static void answer_streamed(void *ctx, uint64_t node, void *item, fs_view *view) {
  fl_session *s = ctx;
  fl_item *it = item;
  if (view && reply_view(s, it, node, view)) return;
  if (atomic_load(&s->reads_closed)) {
    lf.fuse_reply_err(it->req, EIO); /* the kernel gave up on it already */
    free(it);
  } else {
    submit_item(s, it);
  }
}

/* A stream's last stretch is being loaded (on a stream's thread): JS hears of
 * it, to add the next one (offerStream with extend) before the reader gets there. */
static void stream_ending(void *ctx, uint64_t node, uint64_t end) {
  fl_session *s = ctx;
  if (!s->stretches || atomic_load(&s->reads_closed)) return;
  fl_item *it = item_new(NULL, FL_STREAM_ENDING, node, 0);
  if (!it) return;
  it->a = end;
  if (napi_call_threadsafe_function(s->tsfn, it, napi_tsfn_nonblocking) != napi_ok) free(it);
}

/* Reads of a file read ahead (offerStoredContent) are answered here; only those
 * opened without JS, whose reads go by node id anyway. A read of a file the
 * fetcher has yet to finish waits for it (ff_park, unpark_read) rather than
 * going to JS, which would read the file a second time. */
static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi) {
  fl_session *s = lf.fuse_req_userdata(req);
  if (s->pusher) fp_note_read(s->pusher, ino); /* a file pushed whole has no READs, unless its pages went */
  if (fi->fh == OPENED_BY_BINDING && read_stored(s, req, ino, size, off)) return;
  fl_item *it = item_new(req, FL_READ, ino, 0);
  if (it) {
    it->a = size;
    it->b = (uint64_t)off;
    it->c = fi->fh;
    if (fi->fh == OPENED_BY_BINDING && off >= 0 && s->fetcher) {
      flush_refs(s); /* JS hears of the node before the read, whenever it gets it */
      if (s->streams && read_streamed(s, it, ino, size, off)) return;
      if (ff_park(s->fetcher, ino, it)) {
        atomic_fetch_add_explicit(&s->parked_reads, 1, memory_order_relaxed);
        return;
      }
    }
  }
  fl_submit(s, req, it);
}

/* A read ff_park held, on a fetcher thread: answered from the store once the
 * file is there, else handed to JS (which reports a damaged file). */
static void unpark_read(void *ctx, uint64_t node, bool delivered, void *item) {
  fl_session *s = ctx;
  fl_item *it = item;
  if (delivered && read_stored(s, it->req, node, (size_t)it->a, (off_t)it->b)) {
    free(it);
  } else if (atomic_load(&s->reads_closed)) {
    lf.fuse_reply_err(it->req, EIO); /* the kernel gave up on it already */
    free(it);
  } else {
    submit_item(s, it);
  }
}

static void ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  if (fi->fh == OPENED_BY_BINDING)
    lf.fuse_reply_err(req, 0);
  else
    fl_queue(req, FL_RELEASE, ino, fi->fh, 0, 0, NULL);
}

static void ll_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  fl_queue(req, FL_OPENDIR, ino, (uint32_t)fi->flags, 0, 0, NULL);
}

static void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi) {
  fl_session *s = lf.fuse_req_userdata(req);
  /* The kernel reads a directory until a reply comes back empty: after JS's
   * last entries, one more round trip per directory listed. */
  if (off > 0 && fc_is_dir_end(s->cache, ino, (uint64_t)off)) {
    if (lf.fuse_reply_buf(req, NULL, 0) == 0) atomic_fetch_add_explicit(&s->dir_ends, 1, memory_order_relaxed);
    return;
  }
  fl_queue(req, s->plus_next ? FL_READDIRPLUS : FL_READDIR, ino, size, (uint64_t)off, fi->fh, NULL);
}

static void ll_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  fl_queue(req, FL_RELEASEDIR, ino, fi->fh, 0, 0, NULL);
}

static void ll_statfs(fuse_req_t req, fuse_ino_t ino) {
  fl_queue(req, FL_STATFS, ino, 0, 0, 0, NULL);
}

/* Whether name lies in a namespace the filesystem has (all do without a list). */
static bool xattr_served(const fl_session *s, const char *name) {
  if (!s->xattr_ns) return true;
  for (const char *p = s->xattr_ns; p < s->xattr_ns + s->xattr_ns_len; p += strlen(p) + 1)
    if (strncmp(name, p, strlen(p)) == 0) return true;
  return false;
}

static void ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) {
  fl_session *s = lf.fuse_req_userdata(req);
  if (!xattr_served(s, name))
    lf.fuse_reply_err(req, EOPNOTSUPP);
  else if (fc_no_xattrs(s->cache, ino))
    lf.fuse_reply_err(req, ENODATA);
  else
    fl_queue(req, FL_GETXATTR, ino, size, 0, 0, name);
}

static void ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  fl_session *s = lf.fuse_req_userdata(req);
  if (!fc_no_xattrs(s->cache, ino))
    fl_queue(req, FL_LISTXATTR, ino, size, 0, 0, NULL);
  else if (size == 0)
    lf.fuse_reply_xattr(req, 0);
  else
    lf.fuse_reply_buf(req, NULL, 0);
}

static void ll_access(fuse_req_t req, fuse_ino_t ino, int mask) {
  fl_queue(req, FL_ACCESS, ino, (uint32_t)mask, 0, 0, NULL);
}

/* Everything that would modify the filesystem: EROFS, answered at once. */
static void ll_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                     dev_t rdev) {
  (void)parent, (void)name, (void)mode, (void)rdev;
  lf.fuse_reply_err(req, EROFS);
}
static void ll_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode) {
  (void)parent, (void)name, (void)mode;
  lf.fuse_reply_err(req, EROFS);
}
static void ll_unlink(fuse_req_t req, fuse_ino_t parent, const char *name) {
  (void)parent, (void)name;
  lf.fuse_reply_err(req, EROFS);
}
static void ll_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
                       const char *name) {
  (void)link, (void)parent, (void)name;
  lf.fuse_reply_err(req, EROFS);
}
static void ll_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
                      fuse_ino_t newparent, const char *newname) {
  (void)parent, (void)name, (void)newparent, (void)newname;
  lf.fuse_reply_err(req, EROFS);
}
static void ll_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
                    const char *newname) {
  (void)ino, (void)newparent, (void)newname;
  lf.fuse_reply_err(req, EROFS);
}
static void ll_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
                     off_t off, struct fuse_file_info *fi) {
  (void)ino, (void)buf, (void)size, (void)off, (void)fi;
  lf.fuse_reply_err(req, EROFS);
}
static void ll_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi) {
  (void)parent, (void)name, (void)mode, (void)fi;
  lf.fuse_reply_err(req, EROFS);
}
static void ll_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
                        const char *value, size_t size, int flags) {
  (void)ino, (void)name, (void)value, (void)size, (void)flags;
  lf.fuse_reply_err(req, EROFS);
}
static void ll_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name) {
  (void)ino, (void)name;
  lf.fuse_reply_err(req, EROFS);
}
static void ll_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset,
                         off_t length, struct fuse_file_info *fi) {
  (void)ino, (void)mode, (void)offset, (void)length, (void)fi;
  lf.fuse_reply_err(req, EROFS);
}

/* ---- the loop thread ---- */

/* The kernel's side of INIT, which libfuse 2.9 does not pass on for flags it
 * predates. Layouts from the kernel's stable ABI (linux/fuse.h). */
#define KERNEL_OP_INIT 26
#define KERNEL_OP_READDIR 28
#define KERNEL_OP_READDIRPLUS 44
#define KERNEL_DO_READDIRPLUS (1u << 13)
#define READDIRPLUS_MINOR 21
#define KERNEL_NO_OPEN_SUPPORT (1u << 17)
struct kernel_in_header {
  uint32_t len, opcode;
  uint64_t unique, nodeid;
  uint32_t uid, gid, pid, padding;
};
struct kernel_init_in {
  uint32_t major, minor, max_readahead, flags;
};

/* Counts each request by opcode (for diagnosis: requestCounts()) and reads
 * what libfuse does not pass on from INIT. */
static void note_request(fl_session *s, void *buf, size_t len) {
  struct kernel_in_header *h = buf;
  if (len < sizeof *h) return;
  if (h->opcode < KERNEL_OPCODES)
    atomic_fetch_add_explicit(&s->requests[h->opcode], 1, memory_order_relaxed);
  if (h->opcode == KERNEL_OP_READDIRPLUS && s->readdirplus) {
    h->opcode = KERNEL_OP_READDIR; /* same body; see "Listings that look up" */
    s->plus_next = true;
  }
  if (h->opcode != KERNEL_OP_INIT || len < sizeof *h + sizeof(struct kernel_init_in)) return;
  const struct kernel_init_in *in = (const void *)(h + 1);
  s->kernel_opens = in->major == 7 && (in->flags & KERNEL_NO_OPEN_SUPPORT);
  if (in->major == 7) {
    s->init_unique = h->unique;
    s->kernel_minor = in->minor;
    s->kernel_flags = in->flags;
  }
}

/* Listings that look up
 * ---------------------
 * READDIRPLUS (protocol 7.21) carries each listed name's node and attributes,
 * as a lookup would answer them, so that a walk that stats every name (tar,
 * ls -l, cp -a, rsync) sends no LOOKUP at all: one round trip a file less.
 * libfuse 2.9 speaks 7.19 and can neither negotiate nor decode it, so the
 * binding's own channel raises the minor version and sets
 * FUSE_DO_READDIRPLUS in libfuse's INIT reply (only when JS takes FL_REF:
 * every node listed this way is a reference JS must count), and the loop hands
 * each READDIRPLUS to libfuse as the READDIR it resembles (same request body),
 * remembering which it was; fl_reply_dirents formats the reply. 7.20 and
 * 7.21 add nothing else a server must handle. */
struct kernel_out_header {
  uint32_t len;
  int32_t error;
  uint64_t unique;
};
struct kernel_init_out { /* the 7.19 part, all libfuse 2.9 sends */
  uint32_t major, minor, max_readahead, flags;
  uint16_t max_background, congestion_threshold;
  uint32_t max_write;
};

static int ch_send(struct fuse_chan *ch, const struct iovec iov[], size_t count) {
  fl_session *s = lf.fuse_chan_data(ch);
  struct iovec edited[2];
  struct kernel_init_out init;
  if (s->init_unique && count == 2 && iov[0].iov_len == sizeof(struct kernel_out_header) &&
      ((const struct kernel_out_header *)iov[0].iov_base)->unique == s->init_unique) {
    s->init_unique = 0;
    if (((const struct kernel_out_header *)iov[0].iov_base)->error == 0 &&
        iov[1].iov_len == sizeof init && s->names && s->kernel_minor >= READDIRPLUS_MINOR &&
        (s->kernel_flags & KERNEL_DO_READDIRPLUS)) {
      memcpy(&init, iov[1].iov_base, sizeof init);
      if (init.major == 7 && init.minor < READDIRPLUS_MINOR) {
        init.minor = READDIRPLUS_MINOR;
        init.flags |= KERNEL_DO_READDIRPLUS;
        s->readdirplus = true;
        edited[0] = iov[0];
        edited[1] = (struct iovec){.iov_base = &init, .iov_len = sizeof init};
        iov = edited;
      }
    }
  }
  ssize_t res = writev(lf.fuse_chan_fd(ch), iov, (int)count);
  return res < 0 ? -errno : 0; /* -ENOENT: the request was interrupted */
}

/* As libfuse's own channel receives. */
static int ch_receive(struct fuse_chan **chp, char *buf, size_t size) {
  struct fuse_chan *ch = *chp;
  struct fuse_session *se = lf.fuse_chan_session(ch);
  for (;;) {
    ssize_t res = read(lf.fuse_chan_fd(ch), buf, size);
    int err = errno;
    if (lf.fuse_session_exited(se)) return 0;
    if (res >= 0) return res < (ssize_t)sizeof(struct kernel_in_header) ? -EIO : (int)res;
    if (err == ENOENT) continue; /* interrupted before we read it */
    if (err == ENODEV) {         /* unmounted */
      lf.fuse_session_exit(se);
      return 0;
    }
    return -err;
  }
}

static void ch_destroy(struct fuse_chan *ch) {
  int fd = lf.fuse_chan_fd(ch);
  if (fd >= 0) close(fd);
}

static struct fuse_chan_ops ch_ops = {.receive = ch_receive, .send = ch_send, .destroy = ch_destroy};

/* Replaces the channel fuse_mount made with one of ch_ops on the same
 * /dev/fuse; keeps the original when that fails (no READDIRPLUS then). */
static struct fuse_chan *own_channel(fl_session *s, struct fuse_chan *kernel_ch) {
  int fd = fcntl(lf.fuse_chan_fd(kernel_ch), F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return kernel_ch;
  struct fuse_chan *ch = lf.fuse_chan_new(&ch_ops, fd, lf.fuse_chan_bufsize(kernel_ch), s);
  if (!ch) {
    close(fd);
    return kernel_ch;
  }
  lf.fuse_chan_destroy(kernel_ch); /* closes its descriptor; ours stays open */
  return ch;
}

static void *fl_loop(void *arg) {
  fl_session *s = arg;
  int err = 0;
  size_t bufsize = lf.fuse_chan_bufsize(s->ch);
  char *buf = malloc(bufsize);
  int fd = lf.fuse_chan_fd(s->ch);
  if (!buf) err = ENOMEM;
  while (buf && !lf.fuse_session_exited(s->se)) {
    struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = s->wake[0], .events = POLLIN}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    if (p[1].revents) break; /* stop() */
    if (!p[0].revents) continue;
    struct fuse_chan *ch = s->ch;
    struct fuse_buf fb = {.mem = buf, .size = bufsize};
    int res = lf.fuse_session_receive_buf(s->se, &fb, &ch);
    if (res == -EINTR || res == -EAGAIN) {
      /* nothing to read although poll said so: only a dead device does that
       * repeatedly */
      if (p[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
        err = EIO;
        break;
      }
      continue;
    }
    if (res == 0) break; /* ENODEV: unmounted */
    if (res < 0) {
      err = -res;
      break;
    }
    if (!(fb.flags & FUSE_BUF_IS_FD)) note_request(s, fb.mem, (size_t)res);
    lf.fuse_session_process_buf(s->se, &fb, ch);
    s->plus_next = false; /* ll_readdir took it, or libfuse answered itself */
  }
  free(buf);
  lf.fuse_session_exit(s->se);
  /* No read is held for the fetcher past this point: JS's channel closes below. */
  atomic_store(&s->reads_closed, true);
  if (s->fetcher) ff_clear(s->fetcher);
  if (s->streams) fs_clear(s->streams);
  flush_refs(s);
  /* Queued after every request this thread queued: JS sees them first. */
  fl_item *close_item = s->close_item;
  close_item->a = (uint64_t)err;
  if (napi_call_threadsafe_function(s->tsfn, close_item, napi_tsfn_nonblocking) != napi_ok)
    free(close_item);
  napi_release_threadsafe_function(s->tsfn, napi_tsfn_release);
  return NULL;
}

static void fl_request_stop(fl_session *s) {
  if (s->torn_down || s->wake[1] < 0) return;
  ssize_t r;
  do r = write(s->wake[1], "x", 1);
  while (r < 0 && errno == EINTR);
}

static void fl_env_cleanup(void *arg);

/* Ends the session: the loop thread must have ended or be ending (it was
 * stopped or saw the unmount). Answers every pending request with EIO first:
 * a fuse_req_t must not outlive its session. JS thread only. */
static void fl_teardown(fl_session *s, bool from_hook) {
  if (s->torn_down) return;
  if (s->thread_started) pthread_join(s->thread, NULL);
  s->torn_down = true;
  pthread_mutex_lock(&s->lock);
  while (s->pending.next != &s->pending) {
    fl_item *it = s->pending.next;
    it->prev->next = it->next;
    it->next->prev = it->prev;
    it->prev = it->next = NULL;
    lf.fuse_reply_err(it->req, EIO);
    it->req = NULL;
    it->state = RQ_DEAD;
  }
  pthread_mutex_unlock(&s->lock);
  if (s->fetcher) { /* first: it delivers to the store and the pusher */
    ff_counts(s->fetcher, &s->fetched, &s->fetch_failed);
    ff_stop(s->fetcher);
    s->fetcher = NULL;
  }
  if (s->streams) {
    fs_counts(s->streams, &s->streamed, &s->stream_parked, &s->stream_failed);
    fs_stop(s->streams);
    s->streams = NULL;
  }
  if (s->pusher) {
    fp_counts(s->pusher, &s->pushed, &s->push_refused, &s->invalidated);
    fp_release(s->pusher);
    s->pusher = NULL;
  }
  lf.fuse_session_destroy(s->se); /* also destroys the channel: closes /dev/fuse */
  s->se = NULL;
  s->ch = NULL;
  close(s->wake[0]);
  close(s->wake[1]);
  s->wake[0] = s->wake[1] = -1;
  live_remove(s);
  if (s->hook_added && !from_hook) napi_remove_env_cleanup_hook(s->env, fl_env_cleanup, s);
  s->hook_added = false;
}

static void fl_session_free(fl_session *s) {
  if (s->fetcher) ff_stop(s->fetcher);
  if (s->streams) fs_stop(s->streams);
  if (s->pusher) fp_release(s->pusher);
  pthread_mutex_destroy(&s->lock);
  free(s->ref_buf);
  fc_free(s->cache);
  fcc_free(s->content);
  free(s->xattr_ns);
  free(s->mountpoint);
  free(s);
}

static void fl_unref(fl_session *s) {
  if (--s->refs) return;
  fl_session_free(s);
}

/* The environment is going away (worker exit, process teardown) with the
 * session still running: detach the mount, stop the loop and tear down
 * without calling JS. Runs before the tsfn's own cleanup (hooks are LIFO and
 * ours was added after the tsfn was created), so the thread never calls into
 * a deleted tsfn. */
static void fl_env_cleanup(void *arg) {
  fl_session *s = arg;
  if (s->torn_down) return;
  umount2(s->mountpoint, MNT_DETACH);
  fl_request_stop(s);
  fl_teardown(s, true);
}

/* ---- delivery on the JS thread ---- */

static void fl_req_finalize(napi_env env, void *data, void *hint) {
  (void)env, (void)hint;
  fl_item *it = data;
  if (it->state == RQ_PENDING) lf.fuse_reply_err(fl_claim(it), EIO); /* dropped by JS */
  free(it);
}

static void fl_tsfn_finalize(napi_env env, void *data, void *hint) {
  (void)env, (void)hint;
  fl_session *s = data;
  if (!s->torn_down) fl_teardown(s, false);
  fl_unref(s);
}

static void fl_session_finalize(napi_env env, void *data, void *hint) {
  (void)env, (void)hint;
  fl_unref(data);
}

static bool mk_u64(napi_env env, uint64_t v, napi_value *out) {
  return napi_create_bigint_uint64(env, v, out) == napi_ok;
}

static bool mk_num(napi_env env, uint64_t v, napi_value *out) {
  return napi_create_double(env, (double)v, out) == napi_ok;
}

static bool mk_bytes(napi_env env, const char *p, size_t n, napi_value *out) {
  void *unused;
  return napi_create_buffer_copy(env, n, p, &unused, out) == napi_ok;
}

static void deliver_request(napi_env env, napi_value js_cb, fl_item *it) {
  napi_value argv[6], ext, undef;
  size_t argc = 3;
  if (napi_get_undefined(env, &undef) != napi_ok ||
      napi_create_external(env, it, fl_req_finalize, NULL, &ext) != napi_ok) {
    lf.fuse_reply_err(fl_claim(it), EIO);
    free(it);
    return;
  }
  /* From here the external owns the item: its finalizer frees it. */
  if (napi_type_tag_object(env, ext, &REQ_TAG) != napi_ok) {
    lf.fuse_reply_err(fl_claim(it), EIO);
    return;
  }
  bool ok;
  ok = napi_create_int32(env, it->op, &argv[0]) == napi_ok && mk_u64(env, it->ino, &argv[2]);
  argv[1] = ext;
  switch (it->op) {
    case FL_LOOKUP:
      ok = ok && mk_bytes(env, it->data, it->len, &argv[3]);
      argc = 4;
      break;
    case FL_OPEN:
    case FL_OPENDIR:
    case FL_RELEASE:
    case FL_RELEASEDIR:
    case FL_LISTXATTR:
    case FL_ACCESS:
      ok = ok && mk_num(env, it->a, &argv[3]);
      argc = 4;
      break;
    case FL_READ:
    case FL_READDIR:
    case FL_READDIRPLUS:
      ok = ok && mk_num(env, it->a, &argv[3]) && mk_num(env, it->b, &argv[4]) &&
           mk_num(env, it->c, &argv[5]);
      argc = 6;
      break;
    case FL_GETXATTR:
      ok = ok && mk_bytes(env, it->data, it->len, &argv[3]) && mk_num(env, it->a, &argv[4]);
      argc = 5;
      break;
    default:
      break;
  }
  napi_status st = ok ? napi_call_function(env, undef, js_cb, argc, argv, NULL) : napi_generic_failure;
  /* The dispatcher catches handler errors itself; if it still failed, the
   * request must not hang. A pending exception is left to surface. */
  if (st != napi_ok && it->state == RQ_PENDING) lf.fuse_reply_err(fl_claim(it), EIO);
}

static void fl_call_js(napi_env env, napi_value js_cb, void *context, void *data) {
  fl_session *s = context;
  fl_item *it = data;
  if (!env) {
    /* The environment is being torn down and the session with it (a pending
     * request cannot occur here: fl_env_cleanup answered them all). */
    if (it->op == FL_CLOSED || it->req == NULL || it->state != RQ_PENDING) free(it);
    return;
  }
  if (it->op == FL_CLOSED) {
    int err = (int)it->a;
    free(it);
    fl_teardown(s, false);
    napi_value argv[4];
    if (napi_create_int32(env, FL_CLOSED, &argv[0]) == napi_ok &&
        napi_get_undefined(env, &argv[1]) == napi_ok &&
        napi_get_undefined(env, &argv[2]) == napi_ok &&
        napi_create_int32(env, err, &argv[3]) == napi_ok)
      napi_call_function(env, argv[1], js_cb, 4, argv, NULL);
    return;
  }
  if (it->op == FL_REF) {
    /* dispatch(FL_REF, undefined, count, records) */
    napi_handle_scope scope;
    if (napi_open_handle_scope(env, &scope) == napi_ok) {
      napi_value argv[4];
      if (napi_create_int32(env, FL_REF, &argv[0]) == napi_ok &&
          napi_get_undefined(env, &argv[1]) == napi_ok && mk_u64(env, it->a, &argv[2]) &&
          mk_bytes(env, it->data, it->len, &argv[3]))
        napi_call_function(env, argv[1], js_cb, 4, argv, NULL);
      napi_close_handle_scope(env, scope);
    }
    /* JS knows of these references now (or never will): their ids are its to give. */
    for (size_t off = 0; off + 20 <= it->len;) {
      uint64_t id;
      uint32_t len;
      memcpy(&id, it->data + off, 8);
      memcpy(&len, it->data + off + 16, 4);
      fc_reported(s->cache, id);
      off += 20 + len;
    }
    free(it);
    return;
  }
  if (it->op == FL_STREAM_ENDING) {
    /* dispatch(FL_STREAM_ENDING, undefined, node, end) */
    napi_handle_scope scope;
    if (napi_open_handle_scope(env, &scope) == napi_ok) {
      napi_value argv[4];
      if (napi_create_int32(env, FL_STREAM_ENDING, &argv[0]) == napi_ok &&
          napi_get_undefined(env, &argv[1]) == napi_ok && mk_u64(env, it->ino, &argv[2]) &&
          mk_num(env, it->a, &argv[3]))
        napi_call_function(env, argv[1], js_cb, 4, argv, NULL);
      napi_close_handle_scope(env, scope);
    }
    free(it);
    return;
  }
  if (it->op == FL_FORGET) {
    const uint64_t *pairs = (const uint64_t *)(void *)it->data;
    for (uint64_t i = 0; i < it->a; i++) {
      napi_handle_scope scope;
      if (napi_open_handle_scope(env, &scope) != napi_ok) break;
      napi_value argv[4];
      bool ok = napi_create_int32(env, FL_FORGET, &argv[0]) == napi_ok &&
                napi_get_undefined(env, &argv[1]) == napi_ok &&
                mk_u64(env, pairs[2 * i], &argv[2]) && mk_num(env, pairs[2 * i + 1], &argv[3]);
      napi_status st = ok ? napi_call_function(env, argv[1], js_cb, 4, argv, NULL) : napi_generic_failure;
      napi_close_handle_scope(env, scope);
      if (st != napi_ok) break;
    }
    free(it);
    return;
  }
  if (it->state != RQ_PENDING) { /* answered at teardown before delivery */
    free(it);
    return;
  }
  deliver_request(env, js_cb, it);
}

/* ------------------------------------------------------------------ */
/* Argument helpers                                                    */

static napi_value js_bool(napi_env env, bool v) {
  napi_value r;
  if (napi_get_boolean(env, v, &r) != napi_ok) return NULL;
  return r;
}

static napi_value js_num0(napi_env env) {
  napi_value r;
  if (napi_create_uint32(env, 0, &r) != napi_ok) return NULL;
  return r;
}

/* The request handle argument. NULL (with a TypeError thrown) if it is not
 * one of ours. */
static fl_item *req_arg(napi_env env, napi_value v) {
  napi_valuetype t;
  bool tagged = false;
  void *p = NULL;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external ||
      napi_check_object_type_tag(env, v, &REQ_TAG, &tagged) != napi_ok || !tagged ||
      napi_get_value_external(env, v, &p) != napi_ok || !p) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "req must be a FUSE request handle");
    return NULL;
  }
  return p;
}

/* 1: pending, answer it; 0: the session has ended (C answered it): drop the
 * reply; -1: already answered by JS (thrown). */
static int req_state(napi_env env, fl_item *it) {
  if (it->state == RQ_PENDING) return 1;
  if (it->state == RQ_DEAD) return 0;
  napi_throw_error(env, "ERR_FUSE_ALREADY_REPLIED", "FUSE request was already answered");
  return -1;
}

static void throw_type(napi_env env, const char *what, const char *must) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s must be %s", what, must);
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
}

static bool get_prop(napi_env env, napi_value obj, const char *key, napi_value *out,
                     bool *present) {
  napi_valuetype t;
  if (napi_get_named_property(env, obj, key, out) != napi_ok ||
      napi_typeof(env, *out, &t) != napi_ok) {
    sn_throw_last(env);
    return false;
  }
  *present = t != napi_undefined;
  return true;
}

static bool get_u64_big(napi_env env, napi_value v, const char *what, uint64_t *out) {
  napi_valuetype t;
  bool lossless = false;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_bigint ||
      napi_get_value_bigint_uint64(env, v, out, &lossless) != napi_ok || !lossless) {
    throw_type(env, what, "a bigint in [0, 2^64)");
    return false;
  }
  return true;
}

static bool get_i64_big(napi_env env, napi_value v, const char *what, int64_t *out) {
  napi_valuetype t;
  bool lossless = false;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_bigint ||
      napi_get_value_bigint_int64(env, v, out, &lossless) != napi_ok || !lossless) {
    throw_type(env, what, "a bigint in [-2^63, 2^63)");
    return false;
  }
  return true;
}

#define MAX_SAFE 9007199254740991LL

/* Integer property; absent -> def if optional (def >= 0), else TypeError. */
static bool num_prop(napi_env env, napi_value obj, const char *key, int64_t min, int64_t max,
                     int64_t def, int64_t *out) {
  napi_value v;
  bool present;
  if (!get_prop(env, obj, key, &v, &present)) return false;
  if (!present && def >= 0) {
    *out = def;
    return true;
  }
  return sn_get_int64(env, v, key, min, max, out);
}

static bool timeout_arg(napi_env env, napi_value v, const char *what, double *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number ||
      napi_get_value_double(env, v, out) != napi_ok || !isfinite(*out) || *out < 0) {
    throw_type(env, what, "a finite number of seconds >= 0");
    return false;
  }
  return true;
}

static bool time_prop(napi_env env, napi_value obj, const char *key, struct timespec *ts) {
  napi_value v;
  bool present;
  int64_t ns;
  if (!get_prop(env, obj, key, &v, &present) || !get_i64_big(env, v, key, &ns)) return false;
  int64_t sec = ns / 1000000000, rem = ns % 1000000000;
  if (rem < 0) {
    rem += 1000000000;
    sec -= 1;
  }
  ts->tv_sec = (time_t)sec;
  ts->tv_nsec = (long)rem;
  return true;
}

/* FuseAttr -> struct stat. */
static bool attr_arg(napi_env env, napi_value obj, struct stat *st) {
  napi_valuetype t;
  if (napi_typeof(env, obj, &t) != napi_ok || t != napi_object) {
    throw_type(env, "attr", "an object");
    return false;
  }
  memset(st, 0, sizeof *st);
  napi_value v;
  bool present;
  uint64_t ino;
  int64_t mode, nlink, uid, gid, rdev, size, blksize, blocks;
  if (!get_prop(env, obj, "ino", &v, &present) || !get_u64_big(env, v, "attr.ino", &ino) ||
      !num_prop(env, obj, "mode", 0, 0xffffffffLL, -1, &mode) ||
      !num_prop(env, obj, "nlink", 0, 0xffffffffLL, -1, &nlink) ||
      !num_prop(env, obj, "uid", 0, 0xffffffffLL, -1, &uid) ||
      !num_prop(env, obj, "gid", 0, 0xffffffffLL, -1, &gid) ||
      !num_prop(env, obj, "rdev", 0, MAX_SAFE, 0, &rdev) ||
      !num_prop(env, obj, "size", 0, MAX_SAFE, -1, &size) ||
      !num_prop(env, obj, "blksize", 0, 0x7fffffffLL, 0, &blksize) ||
      !num_prop(env, obj, "blocks", 0, MAX_SAFE, (size + 511) / 512, &blocks) ||
      !time_prop(env, obj, "atimeNs", &st->st_atim) ||
      !time_prop(env, obj, "mtimeNs", &st->st_mtim) ||
      !time_prop(env, obj, "ctimeNs", &st->st_ctim))
    return false;
  st->st_ino = (ino_t)ino;
  st->st_mode = (mode_t)mode;
  st->st_nlink = (nlink_t)nlink;
  st->st_uid = (uid_t)uid;
  st->st_gid = (gid_t)gid;
  st->st_rdev = (dev_t)rdev;
  st->st_size = (off_t)size;
  st->st_blksize = (blksize_t)blksize;
  st->st_blocks = (blkcnt_t)blocks;
  return true;
}

/* Buffer -> NUL-terminated copy in buf (cap bytes incl. NUL); rejects NUL
 * bytes, and '/' and empty names when name is true. */
static bool name_arg(napi_env env, napi_value v, const char *what, bool name, char *buf,
                     size_t cap) {
  const uint8_t *p;
  size_t n;
  if (!sn_get_bytes(env, v, what, &p, &n)) return false;
  if (n >= cap || (name && n == 0) || memchr(p, 0, n) || (name && memchr(p, '/', n))) {
    char must[96];
    snprintf(must, sizeof must, "%s of 1 to %zu bytes without NUL%s", name ? "a name" : "bytes",
             cap - 1, name ? " or '/'" : "");
    throw_type(env, what, must);
    return false;
  }
  memcpy(buf, p, n);
  buf[n] = 0;
  return true;
}

static bool loaded_or_throw(napi_env env) {
  if (lf_handle) return true;
  napi_throw_error(env, "ERR_FUSE_NOT_LOADED", "libfuse is not loaded (call load() first)");
  return false;
}

/* ------------------------------------------------------------------ */
/* Exported functions                                                  */

/* load(paths: string[]): string -- dlopen()s the first path that works and
 * has every symbol; returns it. Idempotent. */
static napi_value fl_load(napi_env env, napi_callback_info info) {
  napi_value argv[1], r;
  if (!sn_get_args(env, info, 1, argv, "load")) return NULL;
  if (lf_handle) {
    SN_CALL(env, napi_create_string_utf8(env, lf_path, NAPI_AUTO_LENGTH, &r));
    return r;
  }
  bool is_array = false;
  uint32_t n = 0;
  if (napi_is_array(env, argv[0], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[0], &n) != napi_ok) {
    throw_type(env, "paths", "an array of strings");
    return NULL;
  }
  char errors[2048] = "";
  size_t used = 0;
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    char path[4096];
    size_t len;
    SN_CALL(env, napi_get_element(env, argv[0], i, &v));
    if (napi_get_value_string_utf8(env, v, path, sizeof path, &len) != napi_ok) {
      throw_type(env, "paths", "an array of strings");
      return NULL;
    }
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    const char *why = NULL;
    if (!h) {
      why = dlerror();
    } else {
#define X(name) \
  if (!why && !(lf.name = (__typeof__(lf.name))dlsym(h, #name))) why = "missing symbol " #name;
      FL_SYMBOLS(X)
#undef X
      if (why) {
        memset(&lf, 0, sizeof lf);
        dlclose(h);
      }
    }
    if (!why) {
      lf_handle = h;
      lf_path = strdup(path);
      SN_CALL(env, napi_create_string_utf8(env, path, NAPI_AUTO_LENGTH, &r));
      return r;
    }
    int w = snprintf(errors + used, sizeof errors - used, "%s%s", used ? "; " : "", why ? why : "?");
    if (w > 0) used = used + (size_t)w < sizeof errors ? used + (size_t)w : sizeof errors - 1;
  }
  char msg[2200];
  snprintf(msg, sizeof msg, "cannot load libfuse 2: %s", n ? errors : "no paths given");
  napi_throw_error(env, "ERR_FUSE_NOT_LOADED", msg);
  return NULL;
}

/* Handler bits (1 << op) that select which operations reach JS. */
#define HAS(mask, op) (((mask) >> (op)) & 1u)

/* xattrNamespaces: null, or the prefixes each followed by a NUL. */
static bool xattr_ns_arg(napi_env env, napi_value v, char **out, size_t *len) {
  napi_valuetype t;
  const uint8_t *p;
  *out = NULL;
  *len = 0;
  if (napi_typeof(env, v, &t) != napi_ok) {
    sn_throw_last(env);
    return false;
  }
  if (t == napi_null) return true;
  if (!sn_get_bytes(env, v, "xattrNamespaces", &p, len)) return false;
  if (*len == 0 || p[*len - 1] != 0 || p[0] == 0 || memmem(p, *len, "\0\0", 2)) {
    throw_type(env, "xattrNamespaces", "non-empty prefixes each followed by a NUL");
    return false;
  }
  if (!(*out = malloc(*len))) {
    sn_throw_errno(env, ENOMEM, "mount", NULL);
    return false;
  }
  memcpy(*out, p, *len);
  return true;
}

/* mount(mountpoint: string, options: string, handlerMask: number,
 *       exportSupport: boolean, xattrNamespaces: Buffer | null,
 *       cacheEntries: number, pushContent: boolean, dispatch: Function):
 *       session handle */
static napi_value fl_mount(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  if (!sn_get_args(env, info, 8, argv, "mount") || !loaded_or_throw(env)) return NULL;
  char *mnt = NULL, *opts = NULL, *xattr_ns = NULL;
  size_t xattr_ns_len = 0;
  int64_t mask, cache_entries;
  bool export_support, push_content;
  napi_valuetype t;
  if (!sn_get_cstr(env, argv[0], "mountpoint", &mnt)) return NULL;
  size_t optlen = 0;
  if (napi_get_value_string_utf8(env, argv[1], NULL, 0, &optlen) != napi_ok ||
      !(opts = malloc(optlen + 1)) ||
      napi_get_value_string_utf8(env, argv[1], opts, optlen + 1, &optlen) != napi_ok) {
    free(mnt);
    free(opts);
    throw_type(env, "options", "a string");
    return NULL;
  }
  if (!sn_get_int64(env, argv[2], "handlerMask", 0, 0xffffffffLL, &mask) ||
      !sn_get_bool(env, argv[3], "exportSupport", &export_support) ||
      !xattr_ns_arg(env, argv[4], &xattr_ns, &xattr_ns_len) ||
      !sn_get_int64(env, argv[5], "cacheEntries", 4, 1 << 24, &cache_entries) ||
      !sn_get_bool(env, argv[6], "pushContent", &push_content) ||
      napi_typeof(env, argv[7], &t) != napi_ok || t != napi_function) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) throw_type(env, "dispatch", "a function");
    free(mnt);
    free(opts);
    free(xattr_ns);
    return NULL;
  }

  fl_session *s = calloc(1, sizeof *s);
  fl_item *close_item = calloc(1, sizeof *close_item);
  fc_cache *cache = fc_new((size_t)cache_entries);
  fcc_store *content = fcc_new(CONTENT_BUDGET_BYTES, CONTENT_SLOTS);
  if (!s || !close_item || !cache || !content || pipe2(s->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
    int err = errno ? errno : ENOMEM;
    free(s);
    free(close_item);
    fc_free(cache);
    fcc_free(content);
    free(mnt);
    free(opts);
    free(xattr_ns);
    sn_throw_errno(env, err, "mount", NULL);
    return NULL;
  }
  close_item->op = FL_CLOSED;
  s->close_item = close_item;
  s->env = env;
  s->mountpoint = mnt;
  s->export_support = export_support;
  s->push_content = push_content;
  s->cache = cache;
  s->content = content;
  s->names = HAS(mask, FL_REF);
  s->stretches = HAS(mask, FL_STREAM_ENDING);
  s->xattr_ns = xattr_ns;
  s->xattr_ns_len = xattr_ns_len;
  s->pending.next = s->pending.prev = &s->pending;
  pthread_mutex_init(&s->lock, NULL);

  struct fuse_lowlevel_ops *o = &s->ops;
  o->init = ll_init;
  o->lookup = ll_lookup;
  o->getattr = ll_getattr;
  o->setattr = ll_setattr;
  if (HAS(mask, FL_FORGET)) {
    o->forget = ll_forget;
    o->forget_multi = ll_forget_multi;
  }
  if (HAS(mask, FL_READLINK)) o->readlink = ll_readlink;
  if (HAS(mask, FL_OPEN)) o->open = ll_open;
  if (HAS(mask, FL_READ)) o->read = ll_read;
  if (HAS(mask, FL_RELEASE)) o->release = ll_release;
  if (HAS(mask, FL_OPENDIR)) o->opendir = ll_opendir;
  if (HAS(mask, FL_READDIR)) o->readdir = ll_readdir;
  if (HAS(mask, FL_RELEASEDIR)) o->releasedir = ll_releasedir;
  if (HAS(mask, FL_STATFS)) o->statfs = ll_statfs;
  if (HAS(mask, FL_GETXATTR)) o->getxattr = ll_getxattr;
  if (HAS(mask, FL_LISTXATTR)) o->listxattr = ll_listxattr;
  if (HAS(mask, FL_ACCESS)) o->access = ll_access;
  o->mknod = ll_mknod;
  o->mkdir = ll_mkdir;
  o->unlink = ll_unlink;
  o->rmdir = ll_unlink;
  o->symlink = ll_symlink;
  o->rename = ll_rename;
  o->link = ll_link;
  o->write = ll_write;
  o->create = ll_create;
  o->setxattr = ll_setxattr;
  o->removexattr = ll_removexattr;
  o->fallocate = ll_fallocate;

  char prog[] = "snapfs", dash_o[] = "-o";
  char *args_v[] = {prog, dash_o, opts, NULL};
  struct fuse_args args = FUSE_ARGS_INIT(opts[0] ? 3 : 1, args_v);
  const char *failed = NULL;
  int err = 0;

  errno = 0;
  s->ch = lf.fuse_mount(mnt, &args);
  if (s->ch) s->ch = own_channel(s, s->ch);
  if (!s->ch) {
    failed = "fuse_mount";
    err = errno ? errno : EIO;
  } else {
    s->se = lf.fuse_lowlevel_new(&args, &s->ops, sizeof s->ops, s);
    if (!s->se) {
      failed = "fuse_lowlevel_new";
      err = EINVAL; /* an option neither mount nor libfuse knows */
      lf.fuse_unmount(mnt, s->ch);
      s->ch = NULL;
    }
  }
  lf.fuse_opt_free_args(&args);
  free(opts);

  if (!failed) {
    lf.fuse_session_add_chan(s->se, s->ch);
    int fd = lf.fuse_chan_fd(s->ch);
    /* Not inherited by child processes (they would keep the connection
     * alive), and never blocking the loop after a spurious wake-up. */
    int fdfl = fcntl(fd, F_GETFD), flfl = fcntl(fd, F_GETFL);
    if (fdfl < 0 || fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0 || flfl < 0 ||
        fcntl(fd, F_SETFL, flfl | O_NONBLOCK) < 0) {
      failed = "fcntl";
      err = errno;
    }
    /* Without it (no thread or descriptor to spare), offered files are only
     * kept for the loop thread to answer their READs, and invalidateEntry
     * does nothing. */
    if (!failed) s->pusher = fp_start(fd, PUSH_BUDGET_BYTES);
  }
  if (!failed) {
    napi_value name;
    if (napi_create_string_utf8(env, "snapfs_fuse", NAPI_AUTO_LENGTH, &name) != napi_ok ||
        napi_create_threadsafe_function(env, argv[7], NULL, name, 0, 1, s, fl_tsfn_finalize,
                                        s, fl_call_js, &s->tsfn) != napi_ok) {
      failed = "napi_create_threadsafe_function";
      err = ENOMEM;
      s->tsfn = NULL;
    }
  }
  if (!failed) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old); /* the loop thread takes no signals */
    err = pthread_create(&s->thread, NULL, fl_loop, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
      failed = "pthread_create";
      napi_release_threadsafe_function(s->tsfn, napi_tsfn_release);
      /* the tsfn finalizer will tear down (destroying the session) */
      s->refs = 1;
      free(close_item);
      s->close_item = NULL;
      /* unmount now so the failure leaves nothing mounted */
      umount2(mnt, MNT_DETACH);
      sn_throw_errno(env, err, failed, mnt);
      return NULL;
    }
    s->thread_started = true;
  }
  if (failed) {
    napi_value e = sn_errno_error(env, err, failed, mnt);
    if (s->se) {
      lf.fuse_session_destroy(s->se); /* closes the channel */
      umount2(mnt, MNT_DETACH);
    }
    close(s->wake[0]);
    close(s->wake[1]);
    free(close_item);
    fl_session_free(s);
    if (e)
      napi_throw(env, e);
    else
      sn_throw_last(env);
    return NULL;
  }

  s->refs = 2; /* tsfn + JS handle */
  live_add(s);
  if (!atexit_registered) atexit_registered = atexit(fl_atexit) == 0;
  /* After the tsfn: cleanup hooks run last-added first. */
  s->hook_added = napi_add_env_cleanup_hook(env, fl_env_cleanup, s) == napi_ok;

  napi_value handle;
  if (napi_create_external(env, s, fl_session_finalize, NULL, &handle) != napi_ok ||
      napi_type_tag_object(env, handle, &SESSION_TAG) != napi_ok) {
    /* Unlikely; the session runs on and ends with its mount. */
    sn_throw_last(env);
    return NULL;
  }
  return handle;
}

static fl_session *session_arg(napi_env env, napi_value v) {
  napi_valuetype t;
  bool tagged = false;
  void *p = NULL;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external ||
      napi_check_object_type_tag(env, v, &SESSION_TAG, &tagged) != napi_ok || !tagged ||
      napi_get_value_external(env, v, &p) != napi_ok || !p) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "session must be a FUSE session handle");
    return NULL;
  }
  return p;
}

/* stop(session): ends the loop even though the kernel mount may be busy
 * (detach it first). Pending requests are answered with EIO, then /dev/fuse
 * is closed, which fails whatever the kernel still had queued. */
static napi_value fl_stop(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!sn_get_args(env, info, 1, argv, "stop")) return NULL;
  fl_session *s = session_arg(env, argv[0]);
  if (!s) return NULL;
  fl_request_stop(s);
  return js_bool(env, !s->torn_down);
}

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char *path;
  int flags;
  int err;
} umount_job;

static void umount_execute(napi_env env, void *data) {
  (void)env;
  umount_job *j = data;
  j->err = umount2(j->path, j->flags) == 0 ? 0 : errno;
}

static void umount_complete(napi_env env, napi_status status, void *data) {
  umount_job *j = data;
  napi_value v = NULL;
  if (status == napi_ok && j->err == 0) {
    napi_get_undefined(env, &v);
    napi_resolve_deferred(env, j->deferred, v);
  } else {
    v = sn_errno_error(env, status == napi_ok ? j->err : ECANCELED, "umount2", j->path);
    if (!v) napi_get_undefined(env, &v);
    napi_reject_deferred(env, j->deferred, v);
  }
  napi_delete_async_work(env, j->work);
  free(j->path);
  free(j);
}

/* umount(path: string, lazy: boolean): Promise<void> -- umount2() on the
 * libuv pool, so the JS thread (which serves the mount) never blocks on it. */
static napi_value fl_umount(napi_env env, napi_callback_info info) {
  napi_value argv[2], promise, name;
  bool lazy;
  if (!sn_get_args(env, info, 2, argv, "umount")) return NULL;
  umount_job *j = calloc(1, sizeof *j);
  if (!j) {
    sn_throw_errno(env, ENOMEM, "umount", NULL);
    return NULL;
  }
  if (!sn_get_cstr(env, argv[0], "path", &j->path) || !sn_get_bool(env, argv[1], "lazy", &lazy)) {
    free(j->path);
    free(j);
    return NULL;
  }
  j->flags = lazy ? MNT_DETACH : 0;
  if (napi_create_promise(env, &j->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, "snapfs_umount", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, umount_execute, umount_complete, j, &j->work) !=
          napi_ok ||
      napi_queue_async_work(env, j->work) != napi_ok) {
    free(j->path);
    free(j);
    sn_throw_last(env);
    return NULL;
  }
  return promise;
}

/* dropCached(session): forgets every answer the loop thread would give
 * without JS (JS's facts about some nodes stopped being true). */
static napi_value fl_drop_cached(napi_env env, napi_callback_info info) {
  napi_value argv[1], r;
  if (!sn_get_args(env, info, 1, argv, "dropCached")) return NULL;
  fl_session *s = session_arg(env, argv[0]);
  if (!s) return NULL;
  fc_clear(s->cache);
  if (s->fetcher) ff_clear(s->fetcher); /* first: it delivers to the others */
  if (s->streams) fs_clear(s->streams);
  fcc_clear(s->content);
  if (s->pusher) fp_clear(s->pusher);
  SN_CALL(env, napi_get_undefined(env, &r));
  return r;
}

/* Where the fetcher's verified files go: the store, for the reads the loop
 * thread answers, and, when pushing, the kernel's page cache. */
static void deliver_fetched(void *ctx, uint64_t node, fcc_blob *content) {
  fl_session *s = ctx;
  fcc_put(s->content, node, content);
  /* The offer claimed the id for this file (fc_claim) and reads from the store
   * check it again (read_stored); a push is not checked again here, under the
   * fetcher's lock, for an id JS would have given to another entry in the
   * milliseconds since the offer (docs/mount.md, "Two entries, one node id"). */
  if (s->pusher && s->push_content) fp_offer(s->pusher, node, content);
}

/* fetchWith(session, secret: Uint8Array): starts the threads that assemble
 * files offerStoredContent names, verifying chunks with the repository's hash
 * secret. False when they cannot start (offerStoredContent then takes nothing). */
static napi_value fl_fetch_with(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!sn_get_args(env, info, 2, argv, "fetchWith")) return NULL;
  fl_session *s = session_arg(env, argv[0]);
  if (!s) return NULL;
  const uint8_t *secret;
  size_t len;
  if (!sn_get_bytes(env, argv[1], "secret", &secret, &len)) return NULL;
  if (s->torn_down || s->fetcher) return js_bool(env, !s->torn_down);
  s->fetcher = ff_start(secret, len, FETCH_THREADS, FETCH_BUDGET_BYTES, deliver_fetched, unpark_read, s);
  /* Without the fetcher no read reaches the streams (ll_read): none without it. */
  if (s->fetcher) s->streams = fs_start(secret, len, STREAM_THREADS, answer_streamed, stream_ending, s);
  return js_bool(env, s->fetcher != NULL);
}

/* The chunk records of offerStoredContent and offerStream (STORED_CHUNK_BYTES
 * each, layout in lib/platform/libfuse.ts) into *out, malloc'd (NULL when
 * memory is short); false with a JS exception pending. */
static bool chunks_arg(napi_env env, napi_value value, sc_chunk **out, size_t *count) {
  const uint8_t *p;
  size_t len;
  *out = NULL;
  if (!sn_get_bytes(env, value, "chunks", &p, &len)) return false;
  if (len == 0 || len % STORED_CHUNK_BYTES != 0) {
    throw_type(env, "chunks", "whole 48-byte chunk records");
    return false;
  }
  sc_chunk *chunks = *out = malloc(len / STORED_CHUNK_BYTES * sizeof *chunks);
  if (!chunks) return true;
  *count = len / STORED_CHUNK_BYTES;
  for (size_t i = 0; i < *count; i++, p += STORED_CHUNK_BYTES) {
    int32_t fd;
    uint32_t flags;
    memcpy(&fd, p, 4);
    memcpy(&flags, p + 4, 4);
    chunks[i].fd = fd;
    chunks[i].compressed = (flags & 1) != 0;
    memcpy(&chunks[i].pack_offset, p + 8, 8);
    memcpy(&chunks[i].stored_len, p + 16, 4);
    memcpy(&chunks[i].raw_len, p + 20, 4);
    memcpy(&chunks[i].file_offset, p + 24, 8);
    memcpy(chunks[i].id, p + 32, 16);
  }
  return true;
}

/* The arguments the offers begin with: session, node id, owner (st_ino) and
 * file size (positive, at most max_size); false with a JS exception pending. */
static bool file_args(napi_env env, napi_value *argv, double max_size, fl_session **s, uint64_t *id,
                      uint64_t *owner, double *size) {
  *s = session_arg(env, argv[0]);
  if (!*s) return false;
  bool lossless;
  if (napi_get_value_bigint_uint64(env, argv[1], id, &lossless) != napi_ok || !lossless) {
    throw_type(env, "node", "a bigint node id");
    return false;
  }
  if (napi_get_value_bigint_uint64(env, argv[2], owner, &lossless) != napi_ok || !lossless) {
    throw_type(env, "owner", "a bigint inode number");
    return false;
  }
  if (napi_get_value_double(env, argv[3], size) != napi_ok || !(*size > 0) || *size > max_size) {
    throw_type(env, "size", "a positive file size");
    return false;
  }
  return true;
}

/* offerStoredContent(session, node: bigint, owner: bigint, size: number, chunks: Uint8Array):
 * the whole content of a file of snapshot content (its st_ino: owner), which the fetcher's threads
 * read from the chunks given (records: STORED_CHUNK_BYTES each), decompress
 * and verify, then deliver (deliver_fetched). False when not taken (no
 * fetcher, over budget, memory short, or the id names another entry: fc_claim). */
static napi_value fl_offer_stored_content(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  if (!sn_get_args(env, info, 5, argv, "offerStoredContent")) return NULL;
  fl_session *s;
  uint64_t id, owner;
  double size;
  if (!file_args(env, argv, (double)UINT32_MAX, &s, &id, &owner, &size)) return NULL;
  size_t count;
  sc_chunk *chunks;
  if (!chunks_arg(env, argv[4], &chunks, &count)) return NULL;
  bool taken = chunks && !s->torn_down && s->fetcher && fc_claim(s->cache, id, owner) &&
               ff_offer(s->fetcher, id, owner, (uint64_t)size, chunks, count);
  free(chunks);
  return js_bool(env, taken);
}

/* offerStream(session, node: bigint, owner: bigint, size: number, reached: number, chunks: Uint8Array,
 * extend: boolean): a stretch of a large file of snapshot content being read
 * through (the chunks from the reader's position on, records as
 * offerStoredContent's), whose reads the binding then answers itself
 * (fuse_stream.h); the reader is at `reached`. With `extend`, the stretch after
 * the node's stream (FL_STREAM_ENDING asked for it). False when not taken (no
 * streams, no stream to extend, memory or descriptors short, or the id names
 * another entry: fc_claim). */
static napi_value fl_offer_stream(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  if (!sn_get_args(env, info, 7, argv, "offerStream")) return NULL;
  fl_session *s;
  uint64_t id, owner;
  double size, reached;
  if (!file_args(env, argv, 9007199254740991.0 /* 2^53 - 1 */, &s, &id, &owner, &size)) return NULL;
  if (napi_get_value_double(env, argv[4], &reached) != napi_ok || !(reached >= 0) || reached > size) {
    throw_type(env, "reached", "an offset within the file");
    return NULL;
  }
  bool extend;
  if (napi_get_value_bool(env, argv[6], &extend) != napi_ok) {
    throw_type(env, "extend", "a boolean");
    return NULL;
  }
  size_t count;
  sc_chunk *chunks;
  if (!chunks_arg(env, argv[5], &chunks, &count)) return NULL;
  bool taken = chunks && !s->torn_down && s->streams && fc_claim(s->cache, id, owner) &&
               fs_offer(s->streams, id, owner, (uint64_t)size, (uint64_t)reached, chunks, count, extend);
  free(chunks);
  return js_bool(env, taken);
}

/* invalidateEntry(session, parent: bigint, name: Uint8Array): asks the kernel,
 * from the pusher's thread, to drop its cached entry `name` in directory node
 * `parent` and every unused one below it (fp_invalidate_entry). False when
 * not queued. */
static napi_value fl_invalidate_entry(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!sn_get_args(env, info, 3, argv, "invalidateEntry")) return NULL;
  fl_session *s = session_arg(env, argv[0]);
  if (!s) return NULL;
  uint64_t parent;
  bool lossless;
  if (napi_get_value_bigint_uint64(env, argv[1], &parent, &lossless) != napi_ok || !lossless) {
    throw_type(env, "parent", "a bigint node id");
    return NULL;
  }
  const uint8_t *name;
  size_t len;
  if (!sn_get_bytes(env, argv[2], "name", &name, &len)) return NULL;
  return js_bool(env, !s->torn_down && s->pusher && fp_invalidate_entry(s->pusher, parent, (const char *)name, len));
}

/* contentPushed(session, node: bigint): whether the kernel's page cache holds
 * the whole content of node `node`, pushed there (fp_pushed): reading it ahead
 * again would be wasted work. */
static napi_value fl_content_pushed(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!sn_get_args(env, info, 2, argv, "contentPushed")) return NULL;
  fl_session *s = session_arg(env, argv[0]);
  if (!s) return NULL;
  uint64_t node;
  bool lossless;
  if (napi_get_value_bigint_uint64(env, argv[1], &node, &lossless) != napi_ok || !lossless) {
    throw_type(env, "node", "a bigint node id");
    return NULL;
  }
  return js_bool(env, !s->torn_down && s->pusher && fp_pushed(s->pusher, node));
}

/* requestCounts(session): requests received so far, an array indexed by the
 * kernel's opcode (linux/fuse.h), then the READs answered from files read
 * ahead, the files the store took, the files pushed into the page
 * cache, the pushes the kernel refused, the files the fetcher assembled
 * and dropped (a chunk failed), the READs that waited for the fetcher, the
 * entries the kernel invalidated (invalidateEntry), and of the streams of
 * large files (offerStream) the READs they answered, those that waited for
 * a chunk, and the chunks that failed their check; then the READDIRs at a
 * directory's end answered here. */
static napi_value fl_request_counts(napi_env env, napi_callback_info info) {
  napi_value argv[1], arr, v;
  if (!sn_get_args(env, info, 1, argv, "requestCounts")) return NULL;
  fl_session *s = session_arg(env, argv[0]);
  if (!s) return NULL;
  SN_CALL(env, napi_create_array_with_length(env, KERNEL_OPCODES + 12, &arr));
  for (uint32_t i = 0; i <= KERNEL_OPCODES; i++) {
    uint64_t n = atomic_load_explicit(i < KERNEL_OPCODES ? &s->requests[i] : &s->content_reads,
                                      memory_order_relaxed);
    SN_CALL(env, napi_create_double(env, (double)n, &v));
    SN_CALL(env, napi_set_element(env, arr, i, v));
  }
  SN_CALL(env, napi_create_double(env, (double)fcc_files_taken(s->content), &v));
  SN_CALL(env, napi_set_element(env, arr, KERNEL_OPCODES + 1, v));
  uint64_t pushed = s->pushed, refused = s->push_refused, invalidated = s->invalidated;
  if (s->pusher) fp_counts(s->pusher, &pushed, &refused, &invalidated);
  SN_CALL(env, napi_create_double(env, (double)pushed, &v));
  SN_CALL(env, napi_set_element(env, arr, KERNEL_OPCODES + 2, v));
  SN_CALL(env, napi_create_double(env, (double)refused, &v));
  SN_CALL(env, napi_set_element(env, arr, KERNEL_OPCODES + 3, v));
  uint64_t fetched = s->fetched, fetch_failed = s->fetch_failed;
  if (s->fetcher) ff_counts(s->fetcher, &fetched, &fetch_failed);
  SN_CALL(env, napi_create_double(env, (double)fetched, &v));
  SN_CALL(env, napi_set_element(env, arr, KERNEL_OPCODES + 4, v));
  SN_CALL(env, napi_create_double(env, (double)fetch_failed, &v));
  SN_CALL(env, napi_set_element(env, arr, KERNEL_OPCODES + 5, v));
  SN_CALL(env, napi_create_double(env, (double)atomic_load(&s->parked_reads), &v));
  SN_CALL(env, napi_set_element(env, arr, KERNEL_OPCODES + 6, v));
  SN_CALL(env, napi_create_double(env, (double)invalidated, &v));
  SN_CALL(env, napi_set_element(env, arr, KERNEL_OPCODES + 7, v));
  uint64_t streamed = s->streamed, stream_parked = s->stream_parked, stream_failed = s->stream_failed;
  if (s->streams) fs_counts(s->streams, &streamed, &stream_parked, &stream_failed);
  const uint64_t stream_counts[3] = {streamed, stream_parked, stream_failed};
  for (uint32_t i = 0; i < 3; i++) {
    SN_CALL(env, napi_create_double(env, (double)stream_counts[i], &v));
    SN_CALL(env, napi_set_element(env, arr, KERNEL_OPCODES + 8 + i, v));
  }
  SN_CALL(env, napi_create_double(env, (double)atomic_load(&s->dir_ends), &v));
  SN_CALL(env, napi_set_element(env, arr, KERNEL_OPCODES + 11, v));
  return arr;
}

/* ---- replies: each returns true when the kernel took the answer, false when
 * it was dropped (request interrupted, or session ended). ---- */

#define REPLY_PROLOGUE(n, fn)                                   \
  napi_value argv[n];                                           \
  if (!sn_get_args(env, info, n, argv, fn)) return NULL;        \
  fl_item *it = req_arg(env, argv[0]);                          \
  if (!it) return NULL;                                         \
  int state = req_state(env, it);                               \
  if (state < 0) return NULL;

/* replyErr(req, errno): 0 means success for release/releasedir/access. */
static napi_value fl_reply_err(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2, "replyErr")
  int64_t e;
  if (!sn_get_int64(env, argv[1], "errno", 0, 4095, &e)) return NULL;
  if (!state) return js_bool(env, false);
  return js_bool(env, lf.fuse_reply_err(fl_claim(it), (int)e) == 0);
}

/* replyErrIfPending(req, errno): for the dispatcher's error path; never throws
 * for an answered request. Returns whether it answered. */
static napi_value fl_reply_err_if_pending(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int64_t e;
  if (!sn_get_args(env, info, 2, argv, "replyErrIfPending")) return NULL;
  fl_item *it = req_arg(env, argv[0]);
  if (!it || !sn_get_int64(env, argv[1], "errno", 1, 4095, &e)) return NULL;
  if (it->state != RQ_PENDING) return js_bool(env, false);
  lf.fuse_reply_err(fl_claim(it), (int)e);
  return js_bool(env, true);
}

/* Optional boolean property, false when absent. */
static bool bool_prop(napi_env env, napi_value obj, const char *key, bool *out) {
  napi_value v;
  bool present;
  *out = false;
  if (!get_prop(env, obj, key, &v, &present)) return false;
  return !present || sn_get_bool(env, v, key, out);
}

/* Cache flags of replyAttr, as lib/platform/libfuse.ts passes them. */
enum { CACHE_IMMUTABLE = 1, CACHE_NO_XATTRS = 2 };

/* replyEntry(req, entry): entry.ino 0n is a negative entry (cached for
 * entryTimeout); then attr may be omitted. entry.immutable and
 * entry.noXattrs let the loop thread answer later requests itself. */
static napi_value fl_reply_entry(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2, "replyEntry")
  struct fuse_entry_param e;
  memset(&e, 0, sizeof e);
  napi_valuetype t;
  napi_value v;
  bool present;
  uint64_t ino;
  int64_t gen;
  if (napi_typeof(env, argv[1], &t) != napi_ok || t != napi_object) {
    throw_type(env, "entry", "an object");
    return NULL;
  }
  if (!get_prop(env, argv[1], "ino", &v, &present) || !get_u64_big(env, v, "entry.ino", &ino) ||
      !num_prop(env, argv[1], "generation", 0, MAX_SAFE, 0, &gen) ||
      !get_prop(env, argv[1], "entryTimeout", &v, &present) ||
      !timeout_arg(env, v, "entry.entryTimeout", &e.entry_timeout))
    return NULL;
  e.ino = (fuse_ino_t)ino;
  e.generation = (unsigned long)gen;
  napi_value a;
  bool has_attr;
  if (!get_prop(env, argv[1], "attr", &a, &has_attr)) return NULL;
  bool immutable = false, no_xattrs = false;
  if (ino != 0 || has_attr) {
    if (!attr_arg(env, a, &e.attr) || !get_prop(env, argv[1], "attrTimeout", &v, &present) ||
        !timeout_arg(env, v, "entry.attrTimeout", &e.attr_timeout) ||
        !bool_prop(env, argv[1], "immutable", &immutable) ||
        !bool_prop(env, argv[1], "noXattrs", &no_xattrs))
      return NULL;
  }
  if (!state) return js_bool(env, false);
  /* Before the reply: the kernel may ask again as soon as it has it. Refused
   * while the kernel may hold the id as another entry JS has not heard of:
   * two entries would become one inode. */
  if (!fc_put_node(it->s->cache, ino, &e.attr, e.attr_timeout, immutable, no_xattrs, it->ino,
                   it->op == FL_LOOKUP ? it->data : NULL)) {
    lf.fuse_reply_err(fl_claim(it), EIO);
    return js_bool(env, false);
  }
  return js_bool(env, lf.fuse_reply_entry(fl_claim(it), &e) == 0);
}

/* replyAttr(req, attr, timeoutSec, cacheFlags) */
static napi_value fl_reply_attr(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(4, "replyAttr")
  struct stat st;
  double timeout;
  int64_t flags;
  if (!attr_arg(env, argv[1], &st) || !timeout_arg(env, argv[2], "timeout", &timeout) ||
      !sn_get_int64(env, argv[3], "cacheFlags", 0, 3, &flags))
    return NULL;
  if (!state) return js_bool(env, false);
  fc_put_node(it->s->cache, it->ino, &st, timeout, flags & CACHE_IMMUTABLE,
              flags & CACHE_NO_XATTRS, 0, NULL);
  return js_bool(env, lf.fuse_reply_attr(fl_claim(it), &st, timeout) == 0);
}

/* replyReadlink(req, target: Buffer, reuseSec): the loop thread repeats the
 * target for reuseSec seconds (0: never). */
static napi_value fl_reply_readlink(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(3, "replyReadlink")
  double reuse;
  char *target = malloc(LINK_MAX_BYTES);
  if (!target) {
    sn_throw_errno(env, ENOMEM, "replyReadlink", NULL);
    return NULL;
  }
  if (!name_arg(env, argv[1], "target", false, target, LINK_MAX_BYTES) ||
      !timeout_arg(env, argv[2], "reuseSec", &reuse)) {
    free(target);
    return NULL;
  }
  bool ok = false;
  if (state) {
    fc_put_link(it->s->cache, it->ino, target, reuse);
    ok = lf.fuse_reply_readlink(fl_claim(it), target) == 0;
  }
  free(target);
  return js_bool(env, ok);
}

/* replyOpen(req, fh, flags): flags bit 0 keep_cache, 1 direct_io, 2 nonseekable */
static napi_value fl_reply_open(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(3, "replyOpen")
  int64_t fh, flags;
  if (!sn_get_int64(env, argv[1], "fh", 0, MAX_SAFE, &fh) ||
      !sn_get_int64(env, argv[2], "flags", 0, 7, &flags))
    return NULL;
  if (!state) return js_bool(env, false);
  struct fuse_file_info fi;
  memset(&fi, 0, sizeof fi);
  fi.fh = (uint64_t)fh;
  fi.keep_cache = (flags & 1) != 0;
  fi.direct_io = (flags & 2) != 0;
  fi.nonseekable = (flags & 4) != 0;
  return js_bool(env, lf.fuse_reply_open(fl_claim(it), &fi) == 0);
}

/* replyBuf(req, data: Uint8Array): read, getxattr and listxattr data. The
 * bytes go to the kernel straight from the JS buffer. */
static napi_value fl_reply_buf(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2, "replyBuf")
  const uint8_t *p;
  size_t n;
  if (!sn_get_bytes(env, argv[1], "data", &p, &n)) return NULL;
  if (!state) return js_bool(env, false);
  return js_bool(env, lf.fuse_reply_buf(fl_claim(it), (const char *)p, n) == 0);
}

/* replyXattrSize(req, n): the answer to a size-0 getxattr/listxattr probe. */
static napi_value fl_reply_xattr_size(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2, "replyXattrSize")
  int64_t n;
  if (!sn_get_int64(env, argv[1], "size", 0, 0xffffffffLL, &n)) return NULL;
  if (!state) return js_bool(env, false);
  return js_bool(env, lf.fuse_reply_xattr(fl_claim(it), (size_t)n) == 0);
}

/* replyStatfs(req, {bsize, frsize, blocks, bfree, bavail, files, ffree, namemax}) */
static napi_value fl_reply_statfs(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2, "replyStatfs")
  napi_valuetype t;
  if (napi_typeof(env, argv[1], &t) != napi_ok || t != napi_object) {
    throw_type(env, "statfs", "an object");
    return NULL;
  }
  int64_t bsize, frsize, blocks, bfree, bavail, files, ffree, namemax;
  if (!num_prop(env, argv[1], "bsize", 0, 0xffffffffLL, -1, &bsize) ||
      !num_prop(env, argv[1], "frsize", 0, 0xffffffffLL, bsize, &frsize) ||
      !num_prop(env, argv[1], "blocks", 0, MAX_SAFE, -1, &blocks) ||
      !num_prop(env, argv[1], "bfree", 0, MAX_SAFE, 0, &bfree) ||
      !num_prop(env, argv[1], "bavail", 0, MAX_SAFE, 0, &bavail) ||
      !num_prop(env, argv[1], "files", 0, MAX_SAFE, -1, &files) ||
      !num_prop(env, argv[1], "ffree", 0, MAX_SAFE, 0, &ffree) ||
      !num_prop(env, argv[1], "namemax", 0, 0xffffffffLL, 255, &namemax))
    return NULL;
  if (!state) return js_bool(env, false);
  struct statvfs sv;
  memset(&sv, 0, sizeof sv);
  sv.f_bsize = (unsigned long)bsize;
  sv.f_frsize = (unsigned long)frsize;
  sv.f_blocks = (fsblkcnt_t)blocks;
  sv.f_bfree = (fsblkcnt_t)bfree;
  sv.f_bavail = (fsblkcnt_t)bavail;
  sv.f_files = (fsfilcnt_t)files;
  sv.f_ffree = (fsfilcnt_t)ffree;
  sv.f_favail = (fsfilcnt_t)ffree;
  sv.f_namemax = (unsigned long)namemax;
  return js_bool(env, lf.fuse_reply_statfs(fl_claim(it), &sv) == 0);
}

#define DIRENT_NAME_MAX 1024    /* the kernel's FUSE_NAME_MAX */
#define DIRENT_BUF_MAX (1 << 20) /* readdir sizes are a page or a few */

/* One entry's node in replyDirents' `nodes` buffer (little-endian): what a
 * lookup of that name answers. Kept in step with lib/platform/libfuse.ts. */
enum {
  DN_ID = 0,       /* u64 node id */
  DN_INO = 8,      /* u64 */
  DN_SIZE = 16,    /* f64 */
  DN_BLOCKS = 24,  /* f64 */
  DN_RDEV = 32,    /* f64 */
  DN_ATIME = 40,   /* i64 ns */
  DN_MTIME = 48,   /* i64 ns */
  DN_CTIME = 56,   /* i64 ns */
  DN_TIMEOUT = 64, /* f64 seconds, entry and attributes */
  DN_MODE = 72,    /* u32 */
  DN_NLINK = 76,   /* u32 */
  DN_UID = 80,     /* u32 */
  DN_GID = 84,     /* u32 */
  DN_BLKSIZE = 88, /* u32 */
  DN_FLAGS = 92,   /* u32: 1 present, 2 no xattrs */
  DN_BYTES = 96
};

static uint64_t rd_u64(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}
static uint32_t rd_u32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
static double rd_f64(const uint8_t *p) {
  double v;
  memcpy(&v, p, 8);
  return v;
}
static struct timespec rd_time(const uint8_t *p) {
  int64_t ns = (int64_t)rd_u64(p);
  struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000), .tv_nsec = (long)(ns % 1000000000)};
  if (ts.tv_nsec < 0) {
    ts.tv_nsec += 1000000000;
    ts.tv_sec -= 1;
  }
  return ts;
}

typedef struct {
  uint64_t id;
  struct stat st;
  double timeout;
  bool no_xattrs;
} listed_node;

/* Entry i of a `nodes` buffer: 1 when present, 0 when absent, -1 when
 * present but out of range. */
static int read_listed_node(const uint8_t *nodes, size_t nodes_len, uint32_t i, listed_node *n) {
  if (!nodes || (size_t)(i + 1) * DN_BYTES > nodes_len) return 0;
  const uint8_t *p = nodes + (size_t)i * DN_BYTES;
  uint32_t flags = rd_u32(p + DN_FLAGS);
  if (!(flags & 1)) return 0;
  double timeout = rd_f64(p + DN_TIMEOUT);
  double size = rd_f64(p + DN_SIZE), blocks = rd_f64(p + DN_BLOCKS), rdev = rd_f64(p + DN_RDEV);
  if (!(timeout >= 0 && timeout <= 1e9) || !(size >= 0 && size <= MAX_SAFE) ||
      !(blocks >= 0 && blocks <= MAX_SAFE) || !(rdev >= 0 && rdev <= MAX_SAFE))
    return -1;
  memset(&n->st, 0, sizeof n->st);
  n->id = rd_u64(p + DN_ID);
  n->timeout = timeout;
  n->no_xattrs = (flags & 2) != 0;
  n->st.st_ino = (ino_t)rd_u64(p + DN_INO);
  n->st.st_size = (off_t)size;
  n->st.st_blocks = (blkcnt_t)blocks;
  n->st.st_rdev = (dev_t)rdev;
  n->st.st_atim = rd_time(p + DN_ATIME);
  n->st.st_mtim = rd_time(p + DN_MTIME);
  n->st.st_ctim = rd_time(p + DN_CTIME);
  n->st.st_mode = (mode_t)rd_u32(p + DN_MODE);
  n->st.st_nlink = (nlink_t)rd_u32(p + DN_NLINK);
  n->st.st_uid = (uid_t)rd_u32(p + DN_UID);
  n->st.st_gid = (gid_t)rd_u32(p + DN_GID);
  n->st.st_blksize = (blksize_t)rd_u32(p + DN_BLKSIZE);
  return 1;
}

/* READDIRPLUS's entry layout (linux/fuse.h, protocol 7.21). */
struct kernel_attr {
  uint64_t ino, size, blocks, atime, mtime, ctime;
  uint32_t atimensec, mtimensec, ctimensec, mode, nlink, uid, gid, rdev, blksize, flags;
};
struct kernel_entry_out {
  uint64_t nodeid, generation, entry_valid, attr_valid;
  uint32_t entry_valid_nsec, attr_valid_nsec;
  struct kernel_attr attr;
};
struct kernel_dirent {
  uint64_t ino, off;
  uint32_t namelen, type;
};
_Static_assert(sizeof(struct kernel_entry_out) == 128, "fuse_entry_out is 128 bytes");
#define DIRENTPLUS_NAME_OFFSET (sizeof(struct kernel_entry_out) + sizeof(struct kernel_dirent))
#define DIRENT_ALIGN(x) (((x) + 7) & ~(size_t)7)

static void valid_for(double t, uint64_t *sec, uint32_t *nsec) {
  *sec = (uint64_t)t;
  double frac = (t - (double)*sec) * 1e9;
  *nsec = frac <= 0 ? 0 : frac >= 999999999 ? 999999999 : (uint32_t)frac;
}

/* Packs one READDIRPLUS entry at buf (room bytes left); returns its size,
 * which exceeds room when it does not fit (then nothing is written). A NULL
 * node is a plain entry: the kernel links nothing for it. */
static size_t add_direntplus(char *buf, size_t room, const char *name, uint64_t ino, uint32_t mode,
                             uint64_t off, const listed_node *node) {
  size_t namelen = strlen(name);
  size_t need = DIRENT_ALIGN(DIRENTPLUS_NAME_OFFSET + namelen);
  if (need > room) return need;
  memset(buf, 0, need);
  struct kernel_entry_out *e = (void *)buf;
  if (node) {
    const struct stat *st = &node->st;
    e->nodeid = node->id;
    valid_for(node->timeout, &e->entry_valid, &e->entry_valid_nsec);
    valid_for(node->timeout, &e->attr_valid, &e->attr_valid_nsec);
    e->attr.ino = st->st_ino;
    e->attr.size = (uint64_t)st->st_size;
    e->attr.blocks = (uint64_t)st->st_blocks;
    e->attr.atime = (uint64_t)st->st_atim.tv_sec;
    e->attr.mtime = (uint64_t)st->st_mtim.tv_sec;
    e->attr.ctime = (uint64_t)st->st_ctim.tv_sec;
    e->attr.atimensec = (uint32_t)st->st_atim.tv_nsec;
    e->attr.mtimensec = (uint32_t)st->st_mtim.tv_nsec;
    e->attr.ctimensec = (uint32_t)st->st_ctim.tv_nsec;
    e->attr.mode = st->st_mode;
    e->attr.nlink = (uint32_t)st->st_nlink;
    e->attr.uid = st->st_uid;
    e->attr.gid = st->st_gid;
    e->attr.rdev = (uint32_t)st->st_rdev;
    e->attr.blksize = (uint32_t)st->st_blksize;
  }
  struct kernel_dirent *d = (void *)(buf + sizeof *e);
  d->ino = ino;
  d->off = off;
  d->namelen = (uint32_t)namelen;
  d->type = (mode & S_IFMT) >> 12;
  memcpy(buf + DIRENTPLUS_NAME_OFFSET, name, namelen);
  return need;
}

static bool is_dot_name(const char *name) {
  return name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0));
}

/* replyDirents(req, size, entries: {name, ino, mode, nextOffset}[], nodes:
 * Uint8Array | null, dirIno: bigint | undefined): packs entries until `size`
 * bytes are full and replies; returns how many fit, or 0 when the reply was
 * not delivered. `dirIno`: these are the last entries of a directory of
 * immutable content (st_ino dirIno); when all fit, the READDIR for its end is
 * answered on the loop thread (fc_put_dir_end). `nodes`
 * (DN_BYTES per entry, in entry order) lets the loop thread answer lookups of
 * the names that were sent (only when JS takes FL_REF). Answering a
 * READDIRPLUS, each sent entry with a node but "." and ".." hands the kernel
 * that node as looked up: one reference JS counts. Nothing is sent when an
 * entry is malformed (TypeError). */
static napi_value fl_reply_dirents(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(5, "replyDirents")
  int64_t size;
  uint64_t dir_ino = 0;
  bool ends = false;
  napi_valuetype dt;
  if (napi_typeof(env, argv[4], &dt) != napi_ok) return NULL;
  if (dt != napi_undefined && dt != napi_null) {
    if (!get_u64_big(env, argv[4], "dirIno", &dir_ino)) return NULL;
    ends = true;
  }
  bool is_array = false;
  uint32_t n = 0;
  const uint8_t *nodes = NULL;
  size_t nodes_len = 0;
  napi_valuetype nt;
  if (!sn_get_int64(env, argv[1], "size", 0, DIRENT_BUF_MAX, &size)) return NULL;
  if (napi_typeof(env, argv[3], &nt) != napi_ok) return NULL;
  if (nt != napi_null && nt != napi_undefined && !sn_get_bytes(env, argv[3], "nodes", &nodes, &nodes_len))
    return NULL;
  if (!it->s->names) nodes = NULL;
  if (napi_is_array(env, argv[2], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[2], &n) != napi_ok) {
    throw_type(env, "entries", "an array");
    return NULL;
  }
  if (!state) return js_num0(env);
  bool plus = it->op == FL_READDIRPLUS;
  char *buf = malloc((size_t)size + 1);
  char name[DIRENT_NAME_MAX + 1];
  if (!buf) {
    sn_throw_errno(env, ENOMEM, "replyDirents", NULL);
    return NULL;
  }
  size_t used = 0;
  uint32_t count = 0;
  uint64_t end = 0;
  for (; count < n; count++) {
    napi_value e, v;
    bool present;
    napi_valuetype t;
    uint64_t ino;
    int64_t mode, off;
    struct stat st;
    if (napi_get_element(env, argv[2], count, &e) != napi_ok ||
        napi_typeof(env, e, &t) != napi_ok || t != napi_object) {
      throw_type(env, "entries[i]", "an object");
      goto fail;
    }
    if (!get_prop(env, e, "name", &v, &present) ||
        !name_arg(env, v, "entry.name", true, name, sizeof name) ||
        !get_prop(env, e, "ino", &v, &present) || !get_u64_big(env, v, "entry.ino", &ino) ||
        !num_prop(env, e, "mode", 0, 0xffffffffLL, -1, &mode) ||
        !num_prop(env, e, "nextOffset", 1, MAX_SAFE, -1, &off))
      goto fail;
    listed_node node;
    int has_node = read_listed_node(nodes, nodes_len, count, &node);
    if (has_node < 0 && plus) {
      throw_type(env, "entry.node", "attributes in range");
      goto fail;
    }
    size_t need;
    if (plus) {
      need = add_direntplus(buf + used, (size_t)size - used, name, ino, (uint32_t)mode,
                            (uint64_t)off, NULL);
    } else {
      memset(&st, 0, sizeof st);
      st.st_ino = (ino_t)ino;
      st.st_mode = (mode_t)mode;
      /* fuse_add_direntry only measures when the entry does not fit */
      need = lf.fuse_add_direntry(it->req, buf + used, (size_t)size - used, name, &st, (off_t)off);
    }
    if (need > (size_t)size - used) break;
    /* With its node, unless the id may name another entry for the kernel
     * (fc_put_name): then the name goes alone, and JS sees the node's id
     * zeroed (READDIRPLUS hands the kernel the node itself: no reference). */
    if (has_node > 0 && !is_dot_name(name)) {
      if (fc_put_name(it->s->cache, it->ino, name, node.id, &node.st, node.timeout, node.no_xattrs)) {
        if (plus)
          add_direntplus(buf + used, (size_t)size - used, name, ino, (uint32_t)mode, (uint64_t)off, &node);
      } else {
        memset((uint8_t *)nodes + (size_t)count * DN_BYTES, 0, 8);
      }
    }
    used += need;
    end = (uint64_t)off;
  }
  napi_value r;
  /* Known before replying: once the reply is out the kernel may ask for the
   * end at once, on the loop thread. Kept even if the reply fails: content
   * that never changes ends at `end` whoever asks. */
  if (ends && count == n && n > 0) fc_put_dir_end(it->s->cache, it->ino, dir_ino, end);
  if (lf.fuse_reply_buf(fl_claim(it), buf, used) != 0) count = 0;
  free(buf);
  if (napi_create_uint32(env, count, &r) != napi_ok) {
    sn_throw_last(env);
    return NULL;
  }
  return r;
fail:
  free(buf);
  return NULL;
}

/* ------------------------------------------------------------------ */

#define FN(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_enumerable, NULL}

static napi_value fl_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      FN("load", fl_load),
      FN("mount", fl_mount),
      FN("stop", fl_stop),
      FN("dropCached", fl_drop_cached),
      FN("requestCounts", fl_request_counts),
      FN("fetchWith", fl_fetch_with),
      FN("offerStoredContent", fl_offer_stored_content),
      FN("offerStream", fl_offer_stream),
      FN("invalidateEntry", fl_invalidate_entry),
      FN("contentPushed", fl_content_pushed),
      FN("umount", fl_umount),
      FN("replyErr", fl_reply_err),
      FN("replyErrIfPending", fl_reply_err_if_pending),
      FN("replyEntry", fl_reply_entry),
      FN("replyAttr", fl_reply_attr),
      FN("replyReadlink", fl_reply_readlink),
      FN("replyOpen", fl_reply_open),
      FN("replyBuf", fl_reply_buf),
      FN("replyXattrSize", fl_reply_xattr_size),
      FN("replyStatfs", fl_reply_statfs),
      FN("replyDirents", fl_reply_dirents),
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) {
    sn_throw_last(env);
    return NULL;
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, fl_init)
