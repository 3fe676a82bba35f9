// Small synchronous filesystem helpers for the benchmarks.

import fs from 'node:fs';
import path from 'node:path';

export interface TreeCount {
  files: number;
  dirs: number;
  bytes: number;
}

/** Counts regular files, directories and file bytes under `dir` (lstat, no symlink following). */
export function countTree(dir: string): TreeCount {
  const out: TreeCount = { files: 0, dirs: 0, bytes: 0 };
  const stack = [dir];
  while (stack.length) {
    const d = stack.pop()!;
    out.dirs++;
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) stack.push(p);
      else if (e.isFile()) {
        out.files++;
        out.bytes += fs.lstatSync(p).size;
      }
    }
  }
  return out;
}

/** All regular files under `dir`, as sorted relative paths. */
export function listFiles(dir: string, rel = ''): string[] {
  const out: string[] = [];
  const walk = (r: string): void => {
    const entries = fs.readdirSync(path.join(dir, r), { withFileTypes: true });
    for (const e of entries) {
      const p = r ? `${r}/${e.name}` : e.name;
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.push(p);
    }
  };
  walk(rel);
  return out.sort();
}

/** Apparent size in bytes of everything under `p` (files only; like `du -sb` minus directories). */
export function apparentSize(p: string): number {
  let total = 0;
  const st = fs.lstatSync(p);
  if (!st.isDirectory()) return st.size;
  const stack = [p];
  while (stack.length) {
    const d = stack.pop()!;
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const q = path.join(d, e.name);
      if (e.isDirectory()) stack.push(q);
      else total += fs.lstatSync(q).size;
    }
  }
  return total;
}

export function mkdirp(p: string): void {
  fs.mkdirSync(p, { recursive: true });
}

export function rmrf(p: string): void {
  fs.rmSync(p, { recursive: true, force: true });
}

/** Writes a file through a temporary name and a rename (as dump tools and editors do). */
export function writeReplace(file: string, data: Uint8Array): void {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, data);
  fs.renameSync(tmp, file);
}
