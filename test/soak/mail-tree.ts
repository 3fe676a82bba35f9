// The soak's source tree: a small mail server's spool that keeps changing the way one does.
//   users/uNN/{new,cur}/<id>   messages (0600), delivered, read (renamed), moved, deleted,
//                              and now and then rewritten in place
//   archive/all.mbox           a bigger file, partially rewritten at random offsets
//   index/search.idx           a sparse file: small blocks written into a large hole
// Contents are pseudo-random but seeded, so a run can be repeated.

import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { XorShift32 } from '../helpers/tree-gen.js';

const MiB = 1024 * 1024;
export const USERS = 16;
export const INITIAL_MESSAGES = 1200;
export const MBOX_BYTES = 16 * MiB;
export const SPARSE_BYTES = 64 * MiB;
const SPARSE_BLOCK = 4096;

export type MutationKind = 'deliver' | 'read' | 'move' | 'delete' | 'rewrite' | 'mbox' | 'sparse';

/** How often each mutation is picked, out of the sum. */
const WEIGHTS: Array<[MutationKind, number]> = [
  ['deliver', 30], ['read', 20], ['move', 5], ['delete', 25], ['rewrite', 10], ['mbox', 5], ['sparse', 5],
];

const WORDS = ['meeting', 'invoice', 'backup', 'tomorrow', 'report', 'the', 'a', 'of', 'please',
  'attached', 'regards', 'server', 'quarter', 'review', 'thanks', 'schedule', 'draft', 'urgent'];

/** A message: headers, prose, and sometimes a base64 "attachment" (incompressible-ish). */
export function messageBytes(rng: XorShift32, id: string): Buffer {
  const words: string[] = [];
  const bodyWords = 40 + (rng.next() % 1500);
  for (let i = 0; i < bodyWords; i++) words.push(WORDS[rng.next() % WORDS.length]! + (i % 14 === 13 ? '.\n' : ' '));
  const head = `From: user${rng.next() % 500}@example.org\nTo: user${rng.next() % 500}@example.org\n` +
    `Subject: ${WORDS[rng.next() % WORDS.length]} ${rng.next() % 10_000}\nMessage-ID: <${id}@soak>\n\n`;
  const attachment = rng.next() % 4 === 0 ? '\n--part\n' + rng.bytes(1000 + (rng.next() % 24_000)).toString('base64') + '\n' : '';
  return Buffer.from(head + words.join('') + attachment);
}

/** The spool, as the mutator sees it: what exists, and what to change next. */
export class MailTree {
  private readonly rng: XorShift32;
  /** Messages by path relative to the root, split by folder kind. */
  private readonly fresh: string[] = [];
  private readonly seen: string[] = [];
  private nextId = 0;
  readonly counts: Record<MutationKind, number> = { deliver: 0, read: 0, move: 0, delete: 0, rewrite: 0, mbox: 0, sparse: 0 };

  constructor(readonly root: string, seed: number) {
    this.rng = new XorShift32(seed);
  }

  /** Writes the initial spool into an empty or missing `root`. */
  async create(): Promise<void> {
    for (let u = 0; u < USERS; u++) {
      await fsp.mkdir(join(this.root, this.userDir(u), 'new'), { recursive: true });
      await fsp.mkdir(join(this.root, this.userDir(u), 'cur'), { recursive: true });
    }
    for (let i = 0; i < INITIAL_MESSAGES; i++) {
      const rel = await this.writeMessage(i % 3 === 0 ? 'new' : 'cur');
      (i % 3 === 0 ? this.fresh : this.seen).push(rel);
    }
    await fsp.mkdir(join(this.root, 'archive'));
    await fsp.writeFile(join(this.root, 'archive', 'all.mbox'), this.rng.bytes(MBOX_BYTES));
    await fsp.mkdir(join(this.root, 'index'));
    const fh = await fsp.open(join(this.root, 'index', 'search.idx'), 'w');
    await fh.truncate(SPARSE_BYTES);
    await fh.close();
  }

  get messages(): number {
    return this.fresh.length + this.seen.length;
  }

  /** Makes one change, chosen at random, and returns its kind. */
  async mutateOnce(): Promise<MutationKind> {
    let kind = this.pick();
    // Keep the spool near its initial size: deliveries and deletions balance out.
    if (kind === 'deliver' && this.messages > INITIAL_MESSAGES * 1.2) kind = 'delete';
    if (kind === 'delete' && this.messages < INITIAL_MESSAGES * 0.8) kind = 'deliver';
    if ((kind === 'read' && !this.fresh.length) || ((kind === 'move' || kind === 'rewrite') && !this.seen.length)) kind = 'deliver';
    await this.apply(kind);
    this.counts[kind]++;
    return kind;
  }

  private async apply(kind: MutationKind): Promise<void> {
    const r = this.rng;
    switch (kind) {
      case 'deliver':
        this.fresh.push(await this.writeMessage('new'));
        return;
      case 'read': {
        // Maildir: a read message moves from new/ to cur/ with flags in its name.
        const from = takeAt(this.fresh, r.next());
        const to = from.replace('/new/', '/cur/') + ':2,S';
        await fsp.rename(join(this.root, from), join(this.root, to));
        this.seen.push(to);
        return;
      }
      case 'move': {
        const from = takeAt(this.seen, r.next());
        const to = `${this.userDir(r.next() % USERS)}/cur/${from.split('/').pop()}`;
        await fsp.rename(join(this.root, from), join(this.root, to));
        this.seen.push(to);
        return;
      }
      case 'delete': {
        const list = this.seen.length && r.next() % 4 ? this.seen : this.fresh;
        await fsp.rm(join(this.root, takeAt(list, r.next())));
        return;
      }
      case 'rewrite': {
        const rel = this.seen[r.next() % this.seen.length]!;
        await fsp.writeFile(join(this.root, rel), messageBytes(r, rel));
        return;
      }
      case 'mbox': {
        const length = 4096 + (r.next() % (512 * 1024));
        await pwrite(join(this.root, 'archive', 'all.mbox'), r.bytes(length), r.next() % (MBOX_BYTES - length));
        return;
      }
      case 'sparse': {
        const blocks = SPARSE_BYTES / SPARSE_BLOCK;
        // Blocks 16 apart: most of the file stays a hole however long the run.
        const at = ((r.next() % (blocks / 16)) * 16) * SPARSE_BLOCK;
        await pwrite(join(this.root, 'index', 'search.idx'), r.bytes(SPARSE_BLOCK), at);
        return;
      }
    }
  }

  private pick(): MutationKind {
    const total = WEIGHTS.reduce((s, [, w]) => s + w, 0);
    let x = this.rng.next() % total;
    for (const [kind, w] of WEIGHTS) if ((x -= w) < 0) return kind;
    return 'deliver';
  }

  private userDir(u: number): string {
    return `users/u${String(u).padStart(2, '0')}`;
  }

  private async writeMessage(folder: 'new' | 'cur'): Promise<string> {
    const id = `${1_700_000_000 + this.nextId}.M${this.nextId++}.soak`;
    const rel = `${this.userDir(this.rng.next() % USERS)}/${folder}/${id}`;
    await fsp.writeFile(join(this.root, rel), messageBytes(this.rng, id), { mode: 0o600 });
    return rel;
  }
}

/** Removes and returns a random element (order does not matter, so swap with the last). */
function takeAt(list: string[], random: number): string {
  const i = random % list.length;
  const item = list[i]!;
  list[i] = list[list.length - 1]!;
  list.pop();
  return item;
}

async function pwrite(path: string, data: Buffer, at: number): Promise<void> {
  const fh = await fsp.open(path, 'r+');
  try {
    await fh.write(data, 0, data.length, at);
  } finally {
    await fh.close();
  }
}
