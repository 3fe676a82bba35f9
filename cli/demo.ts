// `npm run demo`: a small generated mail-server tree, two nightly increments, mounted.
// Uses only the public CLI, exactly as an admin would.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), 'main.js');
const base = process.env.SNAPFS_DEMO_DIR ?? path.join(os.tmpdir(), 'snapfs-demo');
const src = path.join(base, 'mailserver');
const repo = path.join(base, 'repo');
const mnt = path.join(base, 'mnt');

function run(cmd: string, args: string[], quiet = false): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: quiet ? 'ignore' : 'inherit' });
    child.on('error', reject);
    child.on('exit', (code) => resolve(code ?? 1));
  });
}

async function snapfs(...args: string[]): Promise<void> {
  console.log(`\n$ snapfs ${args.join(' ')}`);
  const code = await run(process.execPath, [cli, ...args]);
  if (code !== 0) throw new Error(`snapfs ${args[0]} failed with exit code ${code}`);
}

let seed = 12345;
function rand(n: number): number {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff;
  return seed % n;
}

function message(user: string, n: number): string {
  const words = ['invoice', 'meeting', 'backup', 'tape', 'quarterly', 'report', 'lunch', 'server', 'restore', 'holiday'];
  const body = Array.from({ length: 20 + rand(200) }, () => words[rand(words.length)]).join(' ');
  return `From: someone${rand(100)}@example.org\r\nTo: ${user}@example.org\r\nSubject: ${words[rand(10)]} #${n}\r\nDate: Fri, 27 Nov 2026 10:${String(n % 60).padStart(2, '0')}:00 +0000\r\n\r\n${body}\r\n`;
}

async function writeDay(day: number): Promise<void> {
  for (const user of ['alice', 'bob', 'carol']) {
    const dir = path.join(src, 'mail', user, 'Maildir', 'cur');
    await fs.mkdir(dir, { recursive: true });
    const count = day === 1 ? 200 : 5;
    for (let i = 0; i < count; i++) {
      const n = day * 1000 + i;
      await fs.writeFile(path.join(dir, `${n}.demo:2,S`), message(user, n));
    }
  }
  await fs.mkdir(path.join(src, 'pgsql'), { recursive: true });
  const rows = Array.from({ length: 40000 }, (_, i) => `INSERT INTO events VALUES (${i}, 'day ${i % 97 === 0 ? day : 1}', ${i * 7});`);
  await fs.writeFile(path.join(src, 'pgsql', 'groupware.sql'), rows.join('\n') + '\n');
  await fs.mkdir(path.join(src, 'files', 'bob'), { recursive: true });
  await fs.writeFile(path.join(src, 'files', 'bob', `notes-day${day}.txt`), `notes of day ${day}\n`);
  if (day === 2) await fs.rm(path.join(src, 'files', 'bob', 'notes-day1.txt'));
}

async function main(): Promise<void> {
  console.log(`snapfs demo in ${base}`);
  await run('umount', [mnt], true).catch(() => 0);
  await fs.rm(base, { recursive: true, force: true });
  await fs.mkdir(mnt, { recursive: true });

  await writeDay(1);
  await snapfs('init', repo);
  const yesterday = new Date(Date.now() - 24 * 3600 * 1000).toISOString();
  await snapfs('backup', repo, src, '--source', 'demo/mailserver', '--time', yesterday);
  await writeDay(2);
  await snapfs('backup', repo, src, '--source', 'demo/mailserver');
  await snapfs('snapshots', repo);

  console.log(`\n$ snapfs mount ${repo} ${mnt}`);
  const mounted = (await run(process.execPath, [cli, 'mount', repo, mnt])) === 0;
  const snapshots = path.join(mnt, 'demo', 'mailserver');
  console.log('\nTry:');
  if (mounted) {
    console.log(`  ls -l ${snapshots}/                 # one directory per day, and 'last'`);
    console.log(`  ls -l ${snapshots}/last/mail/bob/Maildir/cur | head`);
    console.log(`  diff -r ${src} ${snapshots}/last/ && echo identical`);
    console.log(`  diff -r ${snapshots}/$(ls ${snapshots} | head -1)/files ${snapshots}/last/files   # what changed`);
    console.log(`  stat ${snapshots}/*/pgsql/groupware.sql    # same mtime, new ctime: changed`);
    // GNU tar strips a trailing slash and would store the `last` symlink itself: use -C.
    console.log(`  tar --no-check-device -C ${snapshots}/last -cf - . | wc -c   # what a tape job reads`);
    console.log(`\nUnmount with:\n  node ${cli} umount ${mnt}`);
  } else {
    console.log(`  node ${cli} ls ${repo} demo/mailserver@last:mail/bob/Maildir/cur | head`);
    console.log(`  node ${cli} restore ${repo} demo/mailserver@last:mail/bob ${base}/restored && ls -R ${base}/restored | head`);
  }
}

main().catch((err) => {
  console.error(`demo failed: ${(err as Error).message}`);
  process.exit(1);
});
