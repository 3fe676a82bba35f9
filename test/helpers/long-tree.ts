// Walking and building trees deeper than PATH_MAX from tests: like lib/util/long-path.ts,
// a directory whose path grows long is opened and named by /proc/self/fd/N.

import { promises as fsp, constants as C } from 'node:fs';
import { createHash } from 'node:crypto';

const LONG = 3072;
const SLASH = Buffer.from('/');

async function withBase<T>(dir: Buffer, fn: (base: Buffer) => Promise<T>): Promise<T> {
  if (dir.length <= LONG) return fn(dir);
  const fh = await fsp.open(dir, C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW);
  try {
    return await fn(Buffer.from(`/proc/self/fd/${fh.fd}`));
  } finally {
    await fh.close();
  }
}

/**
 * Every entry under `root` (which is not included): relative path (latin1 key, one char per
 * byte) -> "type mode size content-sha-or-link-target". Any depth, any name bytes.
 */
export async function longManifest(root: string | Buffer): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const visit = async (dir: Buffer, rel: Buffer): Promise<void> => {
    await withBase(dir, async (base) => {
      const names = (await fsp.readdir(base, { encoding: 'buffer' })).sort(Buffer.compare);
      for (const name of names) {
        const p = Buffer.concat([base, SLASH, name]);
        const r = rel.length ? Buffer.concat([rel, SLASH, name]) : name;
        const st = await fsp.lstat(p);
        const mode = (st.mode & 0o7777).toString(8);
        if (st.isDirectory()) {
          out.set(r.toString('latin1'), `dir ${mode}`);
          await visit(p, r);
        } else if (st.isSymbolicLink()) {
          out.set(r.toString('latin1'), `link ${(await fsp.readlink(p, { encoding: 'buffer' })).toString('hex')}`);
        } else if (st.isFile()) {
          out.set(r.toString('latin1'), `file ${mode} ${st.size} ${createHash('sha256').update(await fsp.readFile(p)).digest('hex')}`);
        } else out.set(r.toString('latin1'), `other ${mode}`);
      }
    });
  };
  await visit(Buffer.from(root), Buffer.alloc(0));
  return out;
}

/** Creates directories `names` nested one in another under `root`; returns the deepest (a usable path). */
export async function makeChain(root: string, names: Buffer[], leaf: (dir: Buffer) => Promise<void>): Promise<void> {
  const step = async (dir: Buffer, i: number): Promise<void> => {
    await withBase(dir, async (base) => {
      if (i === names.length) return leaf(base);
      const next = Buffer.concat([base, SLASH, names[i]!]);
      await fsp.mkdir(next);
      await step(next, i + 1);
    });
  };
  await step(Buffer.from(root), 0);
}
