// A source tree that keeps changing under a running backup, and the rules that say what a
// backup of it may contain. Run as a process (so it truly runs beside the backup):
//   node dist/test/helpers/churn.js DIR SECONDS
// It prepares DIR, then until SECONDS are up mutates it and finally writes DIR.json (the
// versions each file went through). Kinds of file, by name prefix:
//   rep-N   replaced atomically (write a temp file, rename over): any read sees one version
//   log-N   appended to: every state is a prefix of the final content
//   shr-N   cut shorter and shorter: every state is a prefix of version 0
//   new-N   deleted and created again, written in several steps: every state is a prefix
//           of some version (or the file is absent)
//   swap-N  a directory replaced by a file and back, again and again
// Contents are a pure function of (name, version), so the checker can rebuild them.

import { promises as fsp } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';

export const COUNTS = { rep: 12, log: 6, shr: 6, new: 12, swap: 20 };

/** Content of version `v` of file `name`: 1 byte to ~300 KiB, deterministic. */
export function versionBytes(name: string, v: number): Buffer {
  const seed = createHash('sha256').update(`${name}#${v}`).digest();
  const size = 1 + (seed.readUInt32LE(0) % (300 * 1024));
  const out = Buffer.alloc(size);
  let block = seed;
  for (let at = 0; at < size; at += 32) {
    block = createHash('sha256').update(block).digest();
    block.copy(out, at, 0, Math.min(32, size - at));
  }
  return out;
}

export interface ChurnLog {
  /** Highest version written per rep-/new- file. */
  versions: Record<string, number>;
  /** Final content length per log- file (the content is logBytes(name, length)). */
  logs: Record<string, number>;
  operations: number;
}

/** The first `length` bytes of log file `name`. */
export function logBytes(name: string, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let at = 0, k = 0; at < length; k++) {
    const line = Buffer.from(`${name} line ${k} ${'x'.repeat(k % 97)}\n`);
    line.copy(out, at, 0, Math.min(line.length, length - at));
    at += line.length;
  }
  return out;
}

export async function prepare(dir: string): Promise<void> {
  await fsp.mkdir(dir, { recursive: true });
  for (let i = 0; i < COUNTS.rep; i++) await fsp.writeFile(join(dir, `rep-${i}`), versionBytes(`rep-${i}`, 0));
  for (let i = 0; i < COUNTS.log; i++) await fsp.writeFile(join(dir, `log-${i}`), logBytes(`log-${i}`, 100_000));
  for (let i = 0; i < COUNTS.shr; i++) await fsp.writeFile(join(dir, `shr-${i}`), versionBytes(`shr-${i}`, 0));
  for (let i = 0; i < COUNTS.new; i++) await fsp.writeFile(join(dir, `new-${i}`), versionBytes(`new-${i}`, 0));
  for (let i = 0; i < COUNTS.swap; i++) {
    await fsp.mkdir(join(dir, `swap-${i}`));
    for (let k = 0; k < 5; k++) await fsp.writeFile(join(dir, `swap-${i}`, `f${k}`), versionBytes(`swap-${i}/f${k}`, 0));
  }
}

export async function churn(dir: string, ms: number): Promise<ChurnLog> {
  const log: ChurnLog = { versions: {}, logs: {}, operations: 0 };
  for (let i = 0; i < COUNTS.rep; i++) log.versions[`rep-${i}`] = 0;
  for (let i = 0; i < COUNTS.new; i++) log.versions[`new-${i}`] = 0;
  for (let i = 0; i < COUNTS.log; i++) log.logs[`log-${i}`] = 100_000;
  const shrink: number[] = [];
  for (let i = 0; i < COUNTS.shr; i++) shrink.push(versionBytes(`shr-${i}`, 0).length);
  const end = Date.now() + ms;
  let k = 0;
  while (Date.now() < end) {
    k++;
    const i = k % 12;
    // Atomic replacement.
    if (i < COUNTS.rep) {
      const name = `rep-${i}`;
      const v = log.versions[name]! + 1;
      await fsp.writeFile(join(dir, `.tmp-${name}`), versionBytes(name, v));
      await fsp.rename(join(dir, `.tmp-${name}`), join(dir, name));
      log.versions[name] = v;
    }
    // Appends.
    const ln = `log-${k % COUNTS.log}`;
    const from = log.logs[ln]!;
    const to = from + 5000 + (k % 3000);
    await fsp.appendFile(join(dir, ln), logBytes(ln, to).subarray(from));
    log.logs[ln] = to;
    // Shrinking.
    const s = k % COUNTS.shr;
    if (shrink[s]! > 1) {
      shrink[s] = Math.floor(shrink[s]! * 0.9);
      await fsp.truncate(join(dir, `shr-${s}`), shrink[s]);
    }
    // Vanish and come back, written in pieces.
    const nn = `new-${k % COUNTS.new}`;
    await fsp.rm(join(dir, nn), { force: true });
    const nv = log.versions[nn]! + 1;
    const data = versionBytes(nn, nv);
    const fh = await fsp.open(join(dir, nn), 'w');
    for (let at = 0; at < data.length; at += 64 * 1024) await fh.write(data, at, Math.min(64 * 1024, data.length - at), at);
    await fh.close();
    log.versions[nn] = nv;
    // A directory becomes a file, or the file a directory again.
    const sw = join(dir, `swap-${k % COUNTS.swap}`);
    const st = await fsp.lstat(sw).catch(() => undefined);
    if (st?.isDirectory()) {
      await fsp.rm(sw, { recursive: true });
      await fsp.writeFile(sw, `now a file ${k}\n`);
    } else {
      await fsp.rm(sw, { force: true });
      await fsp.mkdir(sw);
      for (let f = 0; f < 5; f++) await fsp.writeFile(join(sw, `f${f}`), versionBytes(`swap-${k % COUNTS.swap}/f${f}`, 0));
    }
    log.operations++;
  }
  return log;
}

/**
 * Problems with a restored copy of the churned tree: a file whose content no state of the
 * source ever had (up to `log`'s versions), or an entry of the wrong kind.
 */
export async function verifyRestored(restored: string, log: ChurnLog, unstable: Set<string>): Promise<string[]> {
  const problems: string[] = [];
  const prefixOf = (got: Buffer, full: Buffer): boolean => got.length <= full.length && full.subarray(0, got.length).equals(got);
  for (const name of await fsp.readdir(restored)) {
    const p = join(restored, name);
    const st = await fsp.lstat(p);
    const kind = name.replace(/-\d+$/, '');
    if (kind === 'swap') {
      if (st.isDirectory()) {
        for (const f of await fsp.readdir(p)) {
          const got = await fsp.readFile(join(p, f));
          if (!got.equals(versionBytes(`${name}/${f}`, 0)) && !unstable.has(`${name}/${f}`)) problems.push(`${name}/${f}: content never written`);
        }
      } else if (!st.isFile() || !/^now a file \d+\n$/.test(await fsp.readFile(p, 'utf8'))) problems.push(`${name}: neither the directory nor the file it became`);
      continue;
    }
    if (!st.isFile()) {
      problems.push(`${name}: not a regular file`);
      continue;
    }
    const got = await fsp.readFile(p);
    if (kind === 'rep') {
      // Atomic replacement: whatever was read is exactly one version.
      let ok = false;
      for (let v = log.versions[name]!; v >= 0 && !ok; v--) ok = got.equals(versionBytes(name, v));
      if (!ok) problems.push(`${name}: ${got.length} bytes that are no version of it`);
    } else if (kind === 'log') {
      if (!prefixOf(got, logBytes(name, log.logs[name]!))) problems.push(`${name}: not a prefix of the log`);
    } else if (kind === 'shr') {
      if (!prefixOf(got, versionBytes(name, 0))) problems.push(`${name}: not a prefix of its content`);
    } else if (kind === 'new') {
      let ok = false;
      for (let v = log.versions[name]!; v >= 0 && !ok; v--) {
        const full = versionBytes(name, v);
        // Read while it was being written: a prefix (a state the file really had).
        ok = prefixOf(got, full);
      }
      if (!ok) problems.push(`${name}: ${got.length} bytes that are no state of it`);
    }
  }
  return problems;
}

// As a process: prepare, churn, write the log next to the directory.
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const [dir, seconds] = process.argv.slice(2);
  await prepare(dir!);
  process.stdout.write('ready\n');
  const log = await churn(dir!, Number(seconds) * 1000);
  await fsp.writeFile(`${dir}.json`, JSON.stringify(log));
  process.stdout.write('done\n');
}
