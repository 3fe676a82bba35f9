// Deterministic mail-server-like corpus for the benchmarks, plus its "next day" mutation.
//
//   node dist/benchmarks/corpus.js --size 1G --out /var/tmp/snapfs-bench/corpus [--seed S]
//   node dist/benchmarks/corpus.js --mutate --out /var/tmp/snapfs-bench/corpus   (one more day)
//
// Layout (shares of --size):
//   spool/users/<user>/<folder>/<uid>.   ~45%  Cyrus-style spool: one file per message,
//        + cyrus.header/index/cache             2-50 KiB text messages with headers, some
//                                               delivered identically to several users
//                                               (mailing lists), some carrying base64
//                                               attachments shared between messages.
//   db/pgsql/bm.sql                       ~25%  pg_dump-style COPY text, compressible.
//   index/<shard>/_<gen>.seg, segments_N  ~15%  binary search-index segments (postings as
//                                               varints + stored fields): less compressible.
//   home/<user>/...                       ~15%  user files: photos/archives (random, i.e.
//                                               already compressed), documents, notes, CSV.
//
// Everything is a function of (seed, size, day) and of the previous day's tree, so two
// machines generate identical bytes. The manifest lives beside the tree (<out>.json), never
// inside it, so it is not part of what is backed up.

import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Rng, chance, fmix32, hash32, randomBytes } from './common/prng.js';
import { ByteSink, DOMAINS, FIRST_NAMES, LAST_NAMES, TextGen } from './common/text.js';
import { countTree, listFiles, mkdirp, rmrf, writeReplace } from './common/fs-walk.js';
import { formatBytes, parseArgs, parseSize } from './common/args.js';

export const CORPUS_FORMAT = 4;
export const DEFAULT_SEED = 'snapfs-bench-1';
const KiB = 1024;
const MiB = 1024 * 1024;
/** Nominal "today" of day 0 (the generator never reads the clock). */
const EPOCH = Date.UTC(2026, 10, 1, 23, 0, 0);
const DAY_MS = 86_400_000;

export interface CorpusManifest {
  format: number;
  seed: string;
  size: number;
  day: number;
  users: string[];
  /** Number of distinct attachments created on day 0 (the pool later days draw from). */
  attachments: number;
  files: number;
  dirs: number;
  bytes: number;
  /** Bytes per top-level part. */
  parts: Record<string, number>;
}

export function manifestPath(dir: string): string {
  return `${path.resolve(dir)}.json`;
}

export function readManifest(dir: string): CorpusManifest | undefined {
  try {
    const m = JSON.parse(fs.readFileSync(manifestPath(dir), 'utf8')) as CorpusManifest;
    return m.format === CORPUS_FORMAT && fs.existsSync(dir) ? m : undefined;
  } catch {
    return undefined;
  }
}

function writeManifest(dir: string, m: CorpusManifest): void {
  const c = countTree(dir);
  m.files = c.files;
  m.dirs = c.dirs;
  m.bytes = c.bytes;
  m.parts = {};
  for (const part of ['spool', 'db', 'index', 'home']) {
    const p = path.join(dir, part);
    m.parts[part] = fs.existsSync(p) ? countTree(p).bytes : 0;
  }
  fs.writeFileSync(manifestPath(dir), JSON.stringify(m, null, 2) + '\n');
}

/**
 * Makes sure `dir` holds the corpus of (seed, size) at `day` (default 0). Reuses it when the
 * manifest says so; a corpus at an earlier day is mutated forward; anything else is deleted
 * and regenerated.
 */
export function ensureCorpus(
  dir: string,
  size: number,
  opts: { seed?: string; day?: number; log?: (s: string) => void } = {},
): { manifest: CorpusManifest; reused: boolean } {
  const seed = opts.seed ?? DEFAULT_SEED;
  const day = opts.day ?? 0;
  const log = opts.log ?? (() => {});
  let m = readManifest(dir);
  if (m && m.seed === seed && m.size === size && m.day <= day) {
    const reused = m.day === day;
    while (m.day < day) m = mutateCorpus(dir, log);
    return { manifest: m, reused };
  }
  return { manifest: generateCorpus(dir, size, seed, log), reused: false };
}

// ---------------------------------------------------------------------------------------
// Mail spool

interface Folder {
  user: string;
  name: string; // e.g. INBOX, Lists/debian-user
  dir: string; // absolute
  nextUid: number;
  weight: number;
}

const CUSTOM_FOLDERS = [
  'Projects/Website', 'Projects/Migration', 'Lists/debian-user', 'Lists/postgresql-general', 'Receipts', 'Family',
  'Clients/ACME', 'Clients/Globex', 'Archive/2024', 'Archive/2025', 'Newsletters', 'Travel', 'HR', 'Invoices',
];

const ATTACHMENT_KINDS: Array<[string, string]> = [
  ['pdf', 'application/pdf'],
  ['jpg', 'image/jpeg'],
  ['docx', 'application/vnd.openxmlformats-officedocument.wordprocessingml.document'],
  ['xlsx', 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet'],
  ['zip', 'application/zip'],
  ['png', 'image/png'],
];

function userNames(seed: string, n: number): string[] {
  const rng = new Rng(seed, 'users');
  const seen = new Set<string>();
  const out: string[] = [];
  while (out.length < n) {
    let u = `${rng.pick(FIRST_NAMES)}.${rng.pick(LAST_NAMES)}`;
    if (seen.has(u)) u = `${u}${out.length}`;
    seen.add(u);
    out.push(u);
  }
  return out;
}

function rfc2822(ms: number): string {
  return new Date(ms).toUTCString().replace('GMT', '+0000');
}

function address(rng: Rng): string {
  return `${rng.pick(FIRST_NAMES)}.${rng.pick(LAST_NAMES)}@${rng.pick(DOMAINS)}`;
}

function attachmentSize(seed: string, j: number): number {
  return new Rng(seed, 'attachment-size', j).logUniform(16 * KiB, 3 * MiB);
}

class MailWriter {
  private readonly sink = new ByteSink(1 << 20);

  constructor(
    private readonly seed: string,
    private readonly text: TextGen,
  ) {}

  /** Headers as Cyrus stores them after LMTP delivery. */
  private headers(rng: Rng, to: string, dateMs: number, subject: string, mime: string): void {
    const from = address(rng);
    const relayIp = `10.${rng.int(256)}.${rng.int(256)}.${rng.int(256)}`;
    const s = this.sink;
    s.str(`Return-Path: <${from}>\n`);
    s.str(`Received: from mx${rng.range(1, 4)}.example.net (mx.example.net [${relayIp}])\n\tby imap.example.com (Cyrus 3.4.4) with LMTPA;\n\t${rfc2822(dateMs)}\n`);
    s.str(`Received: from [192.168.${rng.int(256)}.${rng.int(256)}] (unknown [${relayIp}])\n\tby smtp.${from.split('@')[1]} (Postfix) with ESMTPSA id ${rng.hex(10).toUpperCase()}\n\tfor <${to}>; ${rfc2822(dateMs - rng.int(60_000))}\n`);
    s.str(`DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=${from.split('@')[1]}; s=mail;\n\tt=${Math.floor(dateMs / 1000)}; bh=${randomB64(rng, 44)};\n\th=From:To:Subject:Date:Message-ID;\n\tb=${randomB64(rng, 88)}\n\t ${randomB64(rng, 88)}\n\t ${randomB64(rng, 168)}\n`);
    s.str(`Message-ID: <${rng.hex(16)}.${rng.hex(8)}@${from.split('@')[1]}>\n`);
    s.str(`Date: ${rfc2822(dateMs - rng.int(120_000))}\nFrom: ${from}\nTo: ${to}\nSubject: ${subject}\n`);
    s.str(`MIME-Version: 1.0\nContent-Type: ${mime}\nX-Spam-Score: ${(rng.float() * 4 - 1).toFixed(1)}\nX-Spam-Status: No\n\n`);
  }

  /** A plain text message of about `size` bytes (quoted reply and signature included). */
  plain(rng: Rng, to: string, dateMs: number, size: number): Buffer {
    const s = this.sink;
    s.reset();
    this.headers(rng, to, dateMs, (rng.float() < 0.4 ? 'Re: ' : '') + this.text.phrase(rng, 2, 8), 'text/plain; charset=utf-8; format=flowed');
    const body = Math.max(200, size - s.length);
    const quoted = rng.float() < 0.4 ? Math.floor(body * rng.float() * 0.7) : 0;
    this.text.prose(s, rng, body - quoted);
    if (quoted) {
      s.str(`On ${rfc2822(dateMs - rng.int(5 * DAY_MS))}, ${address(rng)} wrote:\n`);
      this.text.prose(s, rng, quoted, '> ');
    }
    s.str(`-- \n${rng.pick(FIRST_NAMES)} ${rng.pick(LAST_NAMES)}\n+33 1 ${rng.range(10, 99)} ${rng.range(10, 99)} ${rng.range(10, 99)} ${rng.range(10, 99)}\n`);
    return Buffer.from(s.bytes());
  }

  /** A multipart message carrying attachment `j` (identical bytes wherever it is sent). */
  withAttachment(rng: Rng, to: string, dateMs: number, j: number): Buffer {
    const s = this.sink;
    s.reset();
    const boundary = `=_${rng.hex(24)}`;
    const ar = new Rng(this.seed, 'attachment-name', j);
    const [ext, mime] = ar.pick(ATTACHMENT_KINDS);
    const filename = `${this.text.word(ar)}-${this.text.word(ar)}-${ar.range(1, 999)}.${ext}`;
    this.headers(rng, to, dateMs, `${this.text.phrase(rng, 2, 6)} (${filename})`, `multipart/mixed; boundary="${boundary}"`);
    s.str(`This is a multi-part message in MIME format.\n\n--${boundary}\nContent-Type: text/plain; charset=utf-8\n\n`);
    this.text.prose(s, rng, rng.range(300, 4000));
    s.str(`\n--${boundary}\nContent-Type: ${mime}; name="${filename}"\nContent-Transfer-Encoding: base64\nContent-Disposition: attachment; filename="${filename}"\n\n`);
    s.base64(randomBytes(attachmentSize(this.seed, j), this.seed, 'attachment', j));
    s.str(`\n--${boundary}--\n`);
    return Buffer.from(s.bytes());
  }
}

function randomB64(rng: Rng, chars: number): string {
  const b = Buffer.allocUnsafe(Math.ceil((chars * 3) / 4) + 3);
  for (let i = 0; i < b.length; i++) b[i] = rng.u32() & 0xff;
  return b.toString('base64').slice(0, chars);
}

/** Cyrus keeps per-folder metadata beside the messages; they change whenever the folder does. */
function writeFolderMeta(seed: string, folder: Folder, day: number, textGen: TextGen): void {
  const names = fs.readdirSync(folder.dir).filter((n) => /^\d+\.$/.test(n));
  const uids = names.map((n) => Number(n.slice(0, -1))).sort((a, b) => a - b);
  const key = `${folder.user}/${folder.name}`;
  const header = `Cyrus mailbox header (snapfs benchmark corpus)\nuser.${folder.user.replace(/\./g, '^')}.${folder.name.replace(/\//g, '.')}\t${hash32(seed, key).toString(16)}${fmix32(hash32(key)).toString(16)}\n`;
  const hp = path.join(folder.dir, 'cyrus.header');
  if (!fs.existsSync(hp)) fs.writeFileSync(hp, header);

  const RECORD = 104;
  const index = Buffer.alloc(128 + RECORD * uids.length);
  index.writeUInt32BE(0xa1028b0d, 0);
  index.writeUInt32BE(day + 1, 4); // generation
  index.writeUInt32BE(16, 8); // minor version
  index.writeUInt32BE(128, 12);
  index.writeUInt32BE(RECORD, 16);
  index.writeUInt32BE(uids.length, 20);
  index.writeUInt32BE(Math.floor((EPOCH + day * DAY_MS) / 1000), 24);
  index.writeUInt32BE(uids.length ? uids[uids.length - 1]! : 0, 28);
  index.writeUInt32BE(hash32(seed, key, 'uidvalidity'), 40);
  index.writeBigUInt64BE(BigInt(uids.length * 3 + day * 1000), 56); // highest modseq
  const cache = new ByteSink(uids.length * 700 + 64);
  cache.str(`cyrus.cache v12 ${key}\n`);
  uids.forEach((uid, i) => {
    const o = 128 + i * RECORD;
    const size = fs.statSync(path.join(folder.dir, `${uid}.`)).size;
    const base = hash32(seed, key, uid);
    const flipped = day > 0 && chance(seed, key, uid, day, 'flags') < 0.05 ? 1 : 0;
    index.writeUInt32BE(uid, o);
    index.writeUInt32BE(Math.floor(EPOCH / 1000) - (base % 30_000_000), o + 4);
    index.writeUInt32BE(size, o + 12);
    index.writeUInt32BE(1200 + (base % 2000), o + 16);
    index.writeUInt32BE(cache.length, o + 24);
    index.writeUInt32BE(((base & 0x0f) ^ flipped) >>> 0, o + 32); // system flags
    index.writeUInt32BE(Math.floor(size / 60), o + 52);
    index.writeUInt32BE(fmix32(base ^ 1), o + 60); // guid (20 bytes)
    index.writeUInt32BE(fmix32(base ^ 2), o + 64);
    index.writeUInt32BE(fmix32(base ^ 3), o + 68);
    index.writeUInt32BE(fmix32(base ^ 4), o + 72);
    index.writeUInt32BE(fmix32(base ^ 5), o + 76);
    index.writeBigUInt64BE(BigInt(i + 1 + (flipped ? day * 1000 : 0)), o + 80);
    index.writeUInt32BE(fmix32(base ^ 6), o + 100);
    const cr = new Rng(seed, key, uid, 'cache');
    cache.str(`(${JSON.stringify(rfc2822(EPOCH - (base % 30_000_000) * 1000))} ${JSON.stringify(textGen.phrase(cr, 2, 8))} ((NIL NIL "${cr.pick(FIRST_NAMES)}" "${cr.pick(DOMAINS)}")) NIL NIL "<${cr.hex(20)}@${cr.pick(DOMAINS)}>")\n`);
    cache.str(`("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "8BIT" ${size} ${Math.floor(size / 60)})\n`);
    textGen.prose(cache, cr, cr.range(150, 450));
  });
  fs.writeFileSync(path.join(folder.dir, 'cyrus.index'), index);
  fs.writeFileSync(path.join(folder.dir, 'cyrus.cache'), cache.bytes());
}

function spoolFolders(dir: string, users: string[]): Folder[] {
  // Folders are found on disk (a directory holding cyrus.header), in sorted order.
  const out: Folder[] = [];
  for (const user of users) {
    const root = path.join(dir, 'spool', 'users', user);
    if (!fs.existsSync(root)) continue;
    const walk = (rel: string): void => {
      const abs = path.join(root, rel);
      const entries = fs.readdirSync(abs, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1));
      if (entries.some((e) => e.name === 'cyrus.header')) {
        let max = 0;
        for (const e of entries) if (/^\d+\.$/.test(e.name)) max = Math.max(max, Number(e.name.slice(0, -1)));
        out.push({ user, name: rel, dir: abs, nextUid: max + 1, weight: 1 });
      }
      for (const e of entries) if (e.isDirectory()) walk(rel ? `${rel}/${e.name}` : e.name);
    };
    walk('');
  }
  return out;
}

function generateSpool(dir: string, seed: string, users: string[], budget: number, textGen: TextGen, log: (s: string) => void): number {
  const rng = new Rng(seed, 'spool');
  const mail = new MailWriter(seed, textGen);
  const folders: Folder[] = [];
  const byUser = new Map<string, Folder[]>();
  const userWeights: number[] = [];
  for (const user of users) {
    const names = ['INBOX', 'Sent', 'Drafts', 'Trash', 'Archive'];
    const extra = rng.int(5);
    for (let i = 0; i < extra; i++) {
      const f = rng.pick(CUSTOM_FOLDERS);
      if (!names.includes(f)) names.push(f);
    }
    const list: Folder[] = [];
    for (const name of names) {
      const weight = name === 'INBOX' ? 40 : name === 'Archive' ? 20 : name === 'Sent' ? 15 : name === 'Trash' ? 5 : name === 'Drafts' ? 1 : 6;
      const f: Folder = { user, name, dir: path.join(dir, 'spool', 'users', user, name), nextUid: 1, weight };
      mkdirp(f.dir);
      list.push(f);
      folders.push(f);
    }
    byUser.set(user, list);
    userWeights.push(Math.exp(rng.float() * 4));
  }
  const pickWeighted = <T>(items: T[], weight: (t: T) => number): T => {
    let total = 0;
    for (const i of items) total += weight(i);
    let x = rng.float() * total;
    for (const i of items) {
      x -= weight(i);
      if (x < 0) return i;
    }
    return items[items.length - 1]!;
  };
  const userIdx = users.map((_, i) => i);

  const attachmentBudget = budget * 0.4;
  let plainBytes = 0;
  let attBytes = 0;
  let pool = 0;
  let messages = 0;
  const write = (f: Folder, data: Buffer): void => {
    fs.writeFileSync(path.join(f.dir, `${f.nextUid++}.`), data);
    messages++;
  };
  while (plainBytes + attBytes < budget) {
    const user = users[pickWeighted(userIdx, (i) => userWeights[i]!)]!;
    const folder = pickWeighted(byUser.get(user)!, (f) => f.weight);
    const date = EPOCH - rng.int(700) * DAY_MS - rng.int(DAY_MS);
    if (attBytes < attachmentBudget && rng.float() < 0.04) {
      // An attachment: often one already sent to someone else (forwards, lists, replies).
      const j = pool > 0 && rng.float() < 0.5 ? pool - 1 - rng.skewed(pool, 2) : pool++;
      const m = mail.withAttachment(rng, `${user}@example.com`, date, j);
      write(folder, m);
      attBytes += m.length;
    } else if (rng.float() < 0.1) {
      // A mailing-list post: identical bytes delivered to several users.
      const m = mail.plain(rng, 'list@lists.example.org', date, rng.logUniform(2 * KiB, 50 * KiB));
      const copies = rng.range(2, 6);
      for (let c = 0; c < copies; c++) {
        const u = c === 0 ? user : users[rng.int(users.length)]!;
        write(byUser.get(u)![0]!, m);
        plainBytes += m.length;
      }
    } else {
      const m = mail.plain(rng, `${user}@example.com`, date, rng.logUniform(2 * KiB, 50 * KiB));
      write(folder, m);
      plainBytes += m.length;
    }
    if (messages % 5000 === 0) log(`  spool: ${messages} messages, ${formatBytes(plainBytes + attBytes)}`);
  }
  for (const f of folders) writeFolderMeta(seed, f, 0, textGen);
  log(`  spool: ${messages} messages (${formatBytes(plainBytes)} plain, ${formatBytes(attBytes)} with ${pool} distinct attachments) in ${folders.length} folders`);
  return pool;
}

function mutateSpool(dir: string, m: CorpusManifest, day: number, textGen: TextGen, log: (s: string) => void): void {
  const rng = new Rng(m.seed, 'spool-day', day);
  const mail = new MailWriter(m.seed, textGen);
  const folders = spoolFolders(dir, m.users);
  let total = 0;
  const counts = new Map<Folder, string[]>();
  for (const f of folders) {
    const msgs = fs.readdirSync(f.dir).filter((n) => /^\d+\.$/.test(n)).sort();
    counts.set(f, msgs);
    total += msgs.length;
  }
  const touched = new Set<Folder>();
  const byName = (user: string, name: string): Folder | undefined => folders.find((f) => f.user === user && f.name === name);
  const date = EPOCH + day * DAY_MS;

  // New mail: 1.5% of the spool, mostly into INBOX and Sent.
  const added = Math.max(5, Math.round(total * 0.015));
  let newAttachments = 0;
  for (let i = 0; i < added; i++) {
    const user = rng.pick(m.users);
    const r = rng.float();
    const f = (r < 0.7 ? byName(user, 'INBOX') : r < 0.9 ? byName(user, 'Sent') : undefined) ?? rng.pick(folders.filter((x) => x.user === user));
    const when = date - rng.int(DAY_MS);
    let data: Buffer;
    if (rng.float() < 0.03) {
      // Forwarded old attachment (deduplicates) or a new one.
      const j = rng.float() < 0.5 ? rng.int(m.attachments) : 1_000_000 * day + newAttachments++;
      data = mail.withAttachment(rng, `${user}@example.com`, when, j);
    } else {
      data = mail.plain(rng, `${user}@example.com`, when, rng.logUniform(2 * KiB, 50 * KiB));
    }
    fs.writeFileSync(path.join(f.dir, `${f.nextUid++}.`), data);
    touched.add(f);
  }
  // Expunges: 0.3%, mostly from Trash.
  const deleted = Math.max(2, Math.round(total * 0.003));
  for (let i = 0; i < deleted; i++) {
    const candidates = rng.float() < 0.7 ? folders.filter((f) => f.name === 'Trash') : folders;
    const f = rng.pick(candidates);
    const msgs = counts.get(f)!;
    if (msgs.length === 0) continue;
    const [victim] = msgs.splice(rng.int(msgs.length), 1);
    fs.rmSync(path.join(f.dir, victim!), { force: true });
    touched.add(f);
  }
  // Moves (IMAP MOVE is a rename to the next uid of the target folder): 0.3%.
  const moved = Math.max(2, Math.round(total * 0.003));
  for (let i = 0; i < moved; i++) {
    const user = rng.pick(m.users);
    const from = byName(user, 'INBOX');
    const to = byName(user, rng.float() < 0.7 ? 'Archive' : 'Trash');
    if (!from || !to) continue;
    const msgs = counts.get(from)!;
    if (msgs.length === 0) continue;
    const [msg] = msgs.splice(rng.int(msgs.length), 1);
    fs.renameSync(path.join(from.dir, msg!), path.join(to.dir, `${to.nextUid++}.`));
    touched.add(from);
    touched.add(to);
  }
  // Flag changes (\Seen, \Flagged...) rewrite cyrus.index in the folders people read.
  for (const f of folders) if (touched.has(f) || rng.float() < 0.15) writeFolderMeta(m.seed, f, day, textGen);
  log(`  spool day ${day}: +${added} messages, -${deleted}, ${moved} moved, ${touched.size} folders touched`);
}

// ---------------------------------------------------------------------------------------
// SQL dump

interface Table {
  name: string;
  columns: string;
  share: number;
  /** Per-row, per-day probabilities (scaled so that each table sees ~N edits a day). */
  edits: { mod: number; ins: number; del: number };
  appendPerDay?: number; // fraction of rows appended per day (append-only tables)
  hot?: boolean; // every row changes every day
  row: (r: Rng, id: number, t: TextGen) => string;
}

function ts(r: Rng): string {
  return new Date(EPOCH - r.int(900) * DAY_MS - r.int(DAY_MS)).toISOString().replace('T', ' ').replace('Z', '+00');
}

function uuid(r: Rng): string {
  const h = r.hex(32);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

const TABLES: Table[] = [
  {
    name: 'mail_items',
    columns: 'id, folder_id, imap_uid, internal_date, size, flags, message_id, sender, subject, preview',
    share: 0.42,
    edits: { mod: 20, ins: 8, del: 4 },
    row: (r, id, t) =>
      `${id}\t${r.int(4000)}\t${r.int(20000)}\t${ts(r)}\t${r.logUniform(2000, 9_000_000)}\t${r.int(64)}\t<${r.hex(16)}@${r.pick(DOMAINS)}>\t${r.pick(FIRST_NAMES)}.${r.pick(LAST_NAMES)}@${r.pick(DOMAINS)}\t${t.phrase(r, 2, 8)}\t${t.phrase(r, 6, 22)}`,
  },
  {
    name: 'contacts',
    columns: 'id, uid, owner_id, display_name, email, phone, organization, notes, updated_at',
    share: 0.14,
    edits: { mod: 10, ins: 4, del: 2 },
    row: (r, id, t) =>
      `${id}\t${uuid(r)}\t${r.int(400)}\t${r.pick(FIRST_NAMES)} ${r.pick(LAST_NAMES)}\t${r.pick(FIRST_NAMES)}@${r.pick(DOMAINS)}\t+33 ${r.range(100000000, 999999999)}\t${t.phrase(r, 1, 3)}\t${r.float() < 0.3 ? t.phrase(r, 4, 30) : '\\N'}\t${ts(r)}`,
  },
  {
    name: 'calendar_events',
    columns: 'id, uid, calendar_id, summary, location, dtstart, dtend, rrule, description',
    share: 0.16,
    edits: { mod: 12, ins: 6, del: 2 },
    row: (r, id, t) =>
      `${id}\t${uuid(r)}\t${r.int(800)}\t${t.phrase(r, 2, 7)}\t${r.float() < 0.5 ? t.phrase(r, 1, 3) : '\\N'}\t${ts(r)}\t${ts(r)}\t${r.float() < 0.2 ? 'FREQ=WEEKLY;BYDAY=MO' : '\\N'}\t${t.phrase(r, 3, 40)}`,
  },
  {
    name: 'audit_log',
    columns: 'id, at, actor, action, object, detail',
    share: 0.23,
    edits: { mod: 0, ins: 0, del: 0 },
    appendPerDay: 0.006,
    row: (r, id, t) =>
      `${id}\t${ts(r)}\t${r.pick(FIRST_NAMES)}.${r.pick(LAST_NAMES)}\t${r.pick(['login', 'logout', 'send', 'delete', 'move', 'share', 'update'])}\t${r.pick(['mailbox', 'event', 'contact', 'domain', 'user'])}:${r.int(100000)}\t{"ip": "10.${r.int(256)}.${r.int(256)}.${r.int(256)}", "agent": "${t.word(r)}/${r.int(10)}.${r.int(10)}"}`,
  },
  {
    name: 'sessions',
    columns: 'id, user_id, token, created, last_seen, client',
    share: 0.05,
    edits: { mod: 0, ins: 0, del: 0 },
    hot: true,
    row: (r, id) => `${id}\t${r.int(400)}\t${r.hex(48)}\t${ts(r)}\t${ts(r)}\t${r.pick(['roundcube', 'thunderbird', 'outlook', 'k9', 'ios-mail'])}`,
  },
];

/** Numeric, allocation-free variant of `chance` for the per-row loops. */
function coin(a: number, b: number, c: number, d: number): number {
  return fmix32(a ^ fmix32(b + Math.imul(c, 0x9e3779b1)) ^ Math.imul(d, 0x85ebca77)) / 4294967296;
}

function writeDump(file: string, seed: string, size: number, day: number, textGen: TextGen): void {
  const budget = size * 0.25;
  const fd = fs.openSync(`${file}.tmp`, 'w');
  const sink = new ByteSink(8 * MiB);
  const flush = (): void => {
    fs.writeSync(fd, sink.bytes());
    sink.reset();
  };
  sink.str(`--\n-- PostgreSQL database dump\n--\n\n-- Dumped from database version 15.5\n-- Dumped by pg_dump version 15.5\n-- Started on ${new Date(EPOCH + day * DAY_MS).toISOString()}\n\nSET statement_timeout = 0;\nSET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\n\n`);
  for (const t of TABLES) {
    sink.str(`CREATE TABLE public.${t.name} (\n    ${t.columns.split(', ').map((c) => `${c} ${c === 'id' ? 'bigint NOT NULL' : 'text'}`).join(',\n    ')}\n);\n\nALTER TABLE public.${t.name} OWNER TO bm;\n\n`);
  }
  for (const [ti, t] of TABLES.entries()) {
    const tseed = hash32(seed, t.name);
    // Row count from the average length of sample rows, so the dump lands near its share.
    let sample = 0;
    for (let i = 0; i < 300; i++) sample += t.row(new Rng(seed, 'sample', t.name, i), 1_000_000 + i, textGen).length + 1;
    const rows = Math.max(50, Math.floor((budget * t.share) / (sample / 300)));
    const p = { mod: t.edits.mod / rows, ins: t.edits.ins / rows, del: t.edits.del / rows };
    sink.str(`--\n-- Data for Name: ${t.name}; Type: TABLE DATA; Schema: public; Owner: bm\n--\n\nCOPY public.${t.name} (${t.columns}) FROM stdin;\n`);
    const emit = (id: number, ...version: number[]): void => {
      sink.str(t.row(new Rng(tseed, ...version), id, textGen));
      sink.byte(10);
      if (sink.length > 6 * MiB) flush();
    };
    for (let k = 0; k < rows; k++) {
      let version = 0;
      let deleted = false;
      for (let d = 1; d <= day; d++) {
        if (t.hot) version = d;
        else if (coin(tseed, k, d, 1) < p.mod) version = d;
        if (coin(tseed, k, d, 2) < p.del) deleted = true;
      }
      if (!deleted) emit(k + 1, k, version);
      // Rows inserted since day 0 land where the table had free space: scattered.
      for (let d = 1; d <= day; d++) if (coin(tseed, k, d, 3) < p.ins) emit(rows * 10 + k * 16 + d, k, d, 7);
    }
    if (t.appendPerDay) {
      const extra = Math.round(rows * t.appendPerDay * day);
      for (let k = rows; k < rows + extra; k++) emit(k + 1, k, 0);
    }
    sink.str('\\.\n\n');
    void ti;
  }
  sink.str(`ALTER TABLE ONLY public.mail_items ADD CONSTRAINT mail_items_pkey PRIMARY KEY (id);\n\n--\n-- PostgreSQL database dump complete\n--\n\n`);
  flush();
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  fs.renameSync(`${file}.tmp`, file);
}

// ---------------------------------------------------------------------------------------
// Search index segments

function segment(size: number, ...seed: Array<string | number>): Buffer {
  const rng = new Rng('segment', ...seed);
  const out = Buffer.allocUnsafe(size);
  const stored = randomBytes(Math.floor(size * 0.3) + 64 * KiB, 'stored', ...seed);
  let storedPos = 0;
  out.write('SEGv7\0\0\0', 0, 'latin1');
  let pos = 8;
  while (pos < size) {
    // A postings block: term, doc frequency, then varint doc-id gaps and term frequencies.
    const blockEnd = Math.min(size, pos + rng.range(16 * KiB, 96 * KiB));
    while (pos < blockEnd - 16) {
      const termLen = rng.range(3, 12);
      out[pos++] = termLen;
      for (let i = 0; i < termLen && pos < blockEnd; i++) out[pos++] = 97 + rng.int(26);
      const docs = rng.logUniform(1, 3000);
      const mean = rng.range(2, 200);
      for (let i = 0; i < docs && pos < blockEnd - 6; i++) {
        let gap = 1 + Math.floor(-Math.log(1 - rng.float()) * mean);
        while (gap >= 0x80) {
          out[pos++] = (gap & 0x7f) | 0x80;
          gap >>>= 7;
        }
        out[pos++] = gap;
        out[pos++] = rng.float() < 0.8 ? 1 : rng.range(2, 9);
      }
    }
    // Stored fields: compressed documents, i.e. random-looking.
    const n = Math.min(size - pos, rng.range(8 * KiB, 40 * KiB), stored.length - storedPos);
    if (n > 0) {
      stored.copy(out, pos, storedPos, storedPos + n);
      pos += n;
      storedPos += n;
    }
    while (pos < blockEnd && pos < size) out[pos++] = 0;
  }
  return out;
}

function writeSegmentsManifest(shardDir: string, generation: number): void {
  for (const n of fs.readdirSync(shardDir)) if (n.startsWith('segments_')) fs.rmSync(path.join(shardDir, n));
  const segs = fs.readdirSync(shardDir).filter((n) => n.endsWith('.seg')).sort();
  const lines = segs.map((n) => `${n}\t${fs.statSync(path.join(shardDir, n)).size}`);
  fs.writeFileSync(path.join(shardDir, `segments_${generation.toString(36)}`), `generation ${generation}\n${lines.join('\n')}\n`);
}

function generateIndex(dir: string, seed: string, budget: number, log: (s: string) => void): void {
  const rng = new Rng(seed, 'index');
  const shards = 4;
  let bytes = 0;
  let gen = 1;
  let count = 0;
  while (bytes < budget) {
    const shard = path.join(dir, 'index', `shard-${count % shards}`);
    mkdirp(shard);
    const size = Math.min(Math.max(256 * KiB, Math.floor(budget - bytes)), rng.logUniform(1 * MiB, 32 * MiB));
    fs.writeFileSync(path.join(shard, `_${(gen++).toString(36).padStart(4, '0')}.seg`), segment(size, seed, gen));
    bytes += size;
    count++;
  }
  for (let s = 0; s < shards; s++) {
    const shard = path.join(dir, 'index', `shard-${s}`);
    if (fs.existsSync(shard)) writeSegmentsManifest(shard, 1);
  }
  log(`  index: ${count} segments, ${formatBytes(bytes)}`);
}

function mutateIndex(dir: string, seed: string, day: number, log: (s: string) => void): void {
  const rng = new Rng(seed, 'index-day', day);
  const root = path.join(dir, 'index');
  const shards = fs.readdirSync(root).sort();
  const shard = path.join(root, rng.pick(shards));
  const segs = fs.readdirSync(shard).filter((n) => n.endsWith('.seg')).sort();
  // A merge: one segment replaced by a new one of about the same size.
  const victim = rng.pick(segs);
  const size = fs.statSync(path.join(shard, victim)).size;
  fs.rmSync(path.join(shard, victim));
  const name = `_d${day}${victim.slice(1)}`;
  fs.writeFileSync(path.join(shard, name), segment(Math.floor(size * (0.9 + rng.float() * 0.2)), seed, 'day', day));
  writeSegmentsManifest(shard, day + 1);
  log(`  index day ${day}: ${path.basename(shard)}/${victim} replaced by ${name} (${formatBytes(size)})`);
}

// ---------------------------------------------------------------------------------------
// User files

const HOME_KINDS: Array<{ kind: string; weight: number; min: number; max: number; dir: string; ext: string }> = [
  { kind: 'photo', weight: 20, min: 200 * KiB, max: 4 * MiB, dir: 'Photos', ext: 'jpg' },
  { kind: 'office', weight: 20, min: 10 * KiB, max: 2 * MiB, dir: 'Documents', ext: 'docx' },
  { kind: 'pdf', weight: 20, min: 10 * KiB, max: 3 * MiB, dir: 'Downloads', ext: 'pdf' },
  { kind: 'note', weight: 30, min: 1 * KiB, max: 100 * KiB, dir: 'Notes', ext: 'md' },
  { kind: 'csv', weight: 8, min: 10 * KiB, max: 4 * MiB, dir: 'Documents', ext: 'csv' },
  { kind: 'archive', weight: 2, min: 2 * MiB, max: 24 * MiB, dir: 'Backups', ext: 'tar.gz' },
];

function homeFile(kind: string, size: number, textGen: TextGen, ...seed: Array<string | number>): Buffer {
  const rng = new Rng('home', kind, ...seed);
  const sink = new ByteSink(Math.min(size + 4 * KiB, 64 * MiB));
  switch (kind) {
    case 'note':
      sink.str(`# ${textGen.phrase(rng, 2, 6)}\n\n`);
      textGen.prose(sink, rng, size);
      return Buffer.from(sink.bytes());
    case 'csv': {
      sink.str('date,account,amount,currency,reference,label\n');
      while (sink.length < size) {
        sink.str(`${ts(rng).slice(0, 10)},${rng.range(100000, 999999)},${(rng.float() * 5000 - 2500).toFixed(2)},EUR,${rng.hex(10)},${textGen.phrase(rng, 1, 5)}\n`);
      }
      return Buffer.from(sink.bytes());
    }
    case 'pdf': {
      // Text objects interleaved with deflated (random-looking) streams.
      sink.str('%PDF-1.7\n%\xe2\xe3\xcf\xd3\n');
      let obj = 1;
      while (sink.length < size) {
        sink.str(`${obj++} 0 obj\n<< /Type /Page /Contents ${obj} 0 R >>\nendobj\n`);
        const n = rng.range(4 * KiB, 64 * KiB);
        sink.str(`${obj++} 0 obj\n<< /Length ${n} /Filter /FlateDecode >>\nstream\n`);
        sink.put(randomBytes(n, 'pdf', ...seed, obj));
        sink.str('\nendstream\nendobj\n');
      }
      return Buffer.from(sink.bytes());
    }
    default:
      // photos, office documents (zip) and archives: already compressed.
      return randomBytes(size, 'home-bytes', kind, ...seed);
  }
}

function generateHome(dir: string, seed: string, users: string[], budget: number, textGen: TextGen, log: (s: string) => void): void {
  const rng = new Rng(seed, 'home');
  const owners = users.filter((_, i) => chance(seed, 'home-owner', i) < 0.6);
  let bytes = 0;
  let files = 0;
  const totalWeight = HOME_KINDS.reduce((n, k) => n + k.weight, 0);
  while (bytes < budget) {
    let x = rng.float() * totalWeight;
    const k = HOME_KINDS.find((h) => (x -= h.weight) < 0) ?? HOME_KINDS[0]!;
    const user = rng.pick(owners.length ? owners : users);
    const size = Math.min(rng.logUniform(k.min, k.max), Math.max(KiB, Math.floor(budget - bytes) + KiB));
    const d = path.join(dir, 'home', user, k.dir);
    mkdirp(d);
    const name = `${k.kind === 'photo' ? 'IMG_' : ''}${k.kind === 'photo' ? rng.range(1000, 9999) : textGen.word(rng) + '-' + rng.range(1, 999)}.${k.ext}`;
    const p = path.join(d, name);
    if (fs.existsSync(p)) continue;
    const data = homeFile(k.kind, size, textGen, seed, files);
    fs.writeFileSync(p, data);
    bytes += data.length;
    files++;
  }
  log(`  home: ${files} files, ${formatBytes(bytes)} for ${owners.length} users`);
}

function mutateHome(dir: string, seed: string, day: number, textGen: TextGen, log: (s: string) => void): void {
  const rng = new Rng(seed, 'home-day', day);
  const root = path.join(dir, 'home');
  const all = listFiles(root);
  const texts = all.filter((f) => /\.(md|csv)$/.test(f));
  // Two documents edited: a paragraph inserted in the middle (content shifts).
  for (let i = 0; i < 2 && texts.length; i++) {
    const f = path.join(root, texts.splice(rng.int(texts.length), 1)[0]!);
    const old = fs.readFileSync(f);
    const at = old.indexOf(10, Math.floor(old.length / 2)) + 1 || old.length;
    const ins = new ByteSink();
    textGen.prose(ins, rng, rng.range(200, 3000));
    writeReplace(f, Buffer.concat([old.subarray(0, at), ins.bytes(), old.subarray(at)]));
  }
  // One CSV appended to in place.
  const csvs = all.filter((f) => f.endsWith('.csv'));
  if (csvs.length) {
    const f = path.join(root, rng.pick(csvs));
    const add = homeFile('csv', rng.range(4 * KiB, 64 * KiB), textGen, seed, 'append', day);
    fs.appendFileSync(f, add.subarray(add.indexOf(10) + 1));
  }
  // New photos, one file deleted.
  const users = fs.readdirSync(root).sort();
  for (let i = 0; i < 3; i++) {
    const d = path.join(root, rng.pick(users), 'Photos');
    mkdirp(d);
    fs.writeFileSync(path.join(d, `IMG_d${day}_${i}.jpg`), homeFile('photo', rng.logUniform(400 * KiB, 6 * MiB), textGen, seed, 'day', day, i));
  }
  const small = all.filter((f) => /\.(md|pdf)$/.test(f) && fs.existsSync(path.join(root, f)));
  if (small.length) fs.rmSync(path.join(root, rng.pick(small)), { force: true });
  log(`  home day ${day}: 2 documents edited, 1 CSV appended, 3 photos added, 1 file deleted`);
}

// ---------------------------------------------------------------------------------------

export function generateCorpus(dir: string, size: number, seed = DEFAULT_SEED, log: (s: string) => void = () => {}): CorpusManifest {
  const started = Date.now();
  rmrf(dir);
  rmrf(manifestPath(dir));
  mkdirp(dir);
  log(`generating a ${formatBytes(size)} corpus in ${dir} (seed ${seed})`);
  const textGen = new TextGen(seed);
  const users = userNames(seed, Math.max(8, Math.round(size / (10 * MiB))));
  const attachments = generateSpool(dir, seed, users, size * 0.45, textGen, log);
  mkdirp(path.join(dir, 'db', 'pgsql'));
  writeDump(path.join(dir, 'db', 'pgsql', 'bm.sql'), seed, size, 0, textGen);
  log(`  db: ${formatBytes(fs.statSync(path.join(dir, 'db', 'pgsql', 'bm.sql')).size)} dump`);
  generateIndex(dir, seed, size * 0.15, log);
  generateHome(dir, seed, users, size * 0.15, textGen, log);
  const m: CorpusManifest = { format: CORPUS_FORMAT, seed, size, day: 0, users, attachments, files: 0, dirs: 0, bytes: 0, parts: {} };
  writeManifest(dir, m);
  log(`corpus ready: ${m.files} files, ${m.dirs} directories, ${formatBytes(m.bytes)} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  return m;
}

/** Applies the next day's changes to the corpus in `dir` and returns the new manifest. */
export function mutateCorpus(dir: string, log: (s: string) => void = () => {}): CorpusManifest {
  const m = readManifest(dir);
  if (!m) throw new Error(`${dir}: no corpus manifest (${manifestPath(dir)}); generate the corpus first`);
  const day = m.day + 1;
  const textGen = new TextGen(m.seed);
  log(`mutating the corpus to day ${day}`);
  mutateSpool(dir, m, day, textGen, log);
  writeDump(path.join(dir, 'db', 'pgsql', 'bm.sql'), m.seed, m.size, day, textGen);
  log(`  db day ${day}: dump rewritten (${formatBytes(fs.statSync(path.join(dir, 'db', 'pgsql', 'bm.sql')).size)})`);
  mutateIndex(dir, m.seed, day, log);
  mutateHome(dir, m.seed, day, textGen, log);
  m.day = day;
  writeManifest(dir, m);
  return m;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2), {
    size: '1G',
    out: '/var/tmp/snapfs-bench/corpus',
    seed: DEFAULT_SEED,
    mutate: false,
    day: '',
  });
  const log = (s: string): void => console.error(s);
  const out = String(args.out);
  if (args.mutate) {
    const m = mutateCorpus(out, log);
    console.log(JSON.stringify(m.day));
    return;
  }
  const size = parseSize(String(args.size));
  const { manifest, reused } = ensureCorpus(out, size, { seed: String(args.seed), day: args.day === '' ? 0 : Number(args.day), log });
  log(`${reused ? 'reused' : 'generated'}: ${manifest.files} files, ${formatBytes(manifest.bytes)}, day ${manifest.day}`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
