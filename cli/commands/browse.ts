// Read-only commands over snapshots: snapshots, ls, cat.
import type { Argv } from 'yargs';
import { withRepository, displayName, jsonName } from '../context.js';
import { Output, StdoutStream, formatBytes } from '../output.js';
import { SnapshotCatalog, parseSnapshotSpec } from '../../lib/snapshot/catalog.js';
import { TreeReader, pathComponents } from '../../lib/tree/tree-reader.js';
import { idFromHex } from '../../lib/format/blob-id.js';
import { EntryKind, TreeEntry } from '../../lib/format/tree.js';
import { SnapfsError } from '../../lib/errors.js';
import { EXIT_BY_CODE } from '../exit-codes.js';

const KIND_CHAR: Record<EntryKind, string> = {
  [EntryKind.File]: '-',
  [EntryKind.Directory]: 'd',
  [EntryKind.Symlink]: 'l',
  [EntryKind.Fifo]: 'p',
  [EntryKind.CharDevice]: 'c',
  [EntryKind.BlockDevice]: 'b',
  [EntryKind.Socket]: 's',
};

function modeString(e: TreeEntry): string {
  const m = e.mode;
  const rwx = (shift: number, special: number, ch: string): string =>
    ((m >> shift) & 4 ? 'r' : '-') +
    ((m >> shift) & 2 ? 'w' : '-') +
    (m & special ? ((m >> shift) & 1 ? ch : ch.toUpperCase()) : (m >> shift) & 1 ? 'x' : '-');
  return KIND_CHAR[e.kind] + rwx(6, 0o4000, 's') + rwx(3, 0o2000, 's') + rwx(0, 0o1000, 't');
}

function entryJson(e: TreeEntry): Record<string, unknown> {
  return {
    ...jsonName(e.name),
    type: EntryKind[e.kind].toLowerCase(),
    mode: e.mode,
    uid: e.uid,
    gid: e.gid,
    size: e.size,
    mtimeNs: e.mtimeNs.toString(),
    nlink: e.nlink,
    inode: e.inode.toString(),
    since: e.since,
    ...(e.target ? { target: e.target.toString('utf8') } : {}),
  };
}

export function register(y: Argv): Argv {
  return y
    .command(
      'snapshots <repo>',
      'list snapshots',
      (a) => a.positional('repo', { type: 'string', demandOption: true }).option('source', { type: 'string' }).option('json', { type: 'boolean', default: false }),
      async (argv) => {
        const out = new Output({ json: argv.json });
        const { records, damaged } = await withRepository(argv.repo, async (repo) => {
          const loaded = await repo.snapshots.load();
          return { records: argv.source ? loaded.records.filter((r) => r.source === argv.source) : loaded.records, damaged: loaded.damaged };
        }, true);
        for (const r of records) {
          out.info(`${r.id.slice(0, 12)}  ${r.source}@${r.name}  ${r.time}  ${r.stats.files} files  ${formatBytes(r.stats.bytesTotal)}${r.partial ? '  (partial)' : ''}`);
        }
        if (records.length === 0) out.info('no snapshots');
        // A record that cannot be read hides a snapshot: say so rather than list less.
        for (const d of damaged) out.warn(`unreadable snapshot record: ${d.error} (run 'snapfs check')`);
        out.json(damaged.length > 0 ? { snapshots: records, damaged } : { snapshots: records });
        if (damaged.length > 0) process.exitCode = EXIT_BY_CODE.CORRUPT_DATA;
      },
    )
    .command(
      'ls <repo> <spec>',
      'list a directory of a snapshot (SOURCE@SNAP[:PATH])',
      (a) =>
        a
          .positional('repo', { type: 'string', demandOption: true })
          .positional('spec', { type: 'string', demandOption: true })
          .option('recursive', { alias: 'R', type: 'boolean', default: false, describe: 'list subdirectories too (names become paths)' })
          .option('json', { type: 'boolean', default: false }),
      async (argv) => {
        const spec = parseSnapshotSpec(argv.spec);
        await withRepository(argv.repo, async (repo) => {
          const snap = await new SnapshotCatalog(repo.snapshots).resolve(spec.source, spec.snapshot);
          const trees = new TreeReader(repo.blobs);
          const { entry, dirId } = await trees.resolve(idFromHex(snap.root), pathComponents(spec.path ?? ''), argv.spec);
          // Streamed: a directory of a million entries is listed without holding it.
          const stream = new StdoutStream();
          let count = 0;
          const emit = async (e: TreeEntry): Promise<void> => {
            if (argv.json) {
              await stream.write(`${count++ ? ',\n' : ''}    ${JSON.stringify(entryJson(e))}`);
              return;
            }
            const when = new Date(Number(e.mtimeNs / 1_000_000n)).toISOString().replace('T', ' ').slice(0, 19);
            const link = e.target ? ` -> ${displayName(e.target)}` : '';
            await stream.write(`${modeString(e)} ${String(e.nlink).padStart(3)} ${String(e.uid).padStart(5)} ${String(e.gid).padStart(5)} ${String(e.size).padStart(12)} ${when} ${displayName(e.name)}${link}\n`);
          };
          const walk = async (id: Buffer, prefix: Buffer): Promise<void> => {
            for await (const e of trees.entries(id)) {
              const named = prefix.length ? { ...e, name: Buffer.concat([prefix, e.name]) } : e;
              await emit(named);
              if (argv.recursive && e.subtree) await walk(e.subtree, Buffer.concat([named.name, Buffer.from('/')]));
            }
          };
          if (argv.json) await stream.write(`{\n  "snapshot": ${JSON.stringify(snap.id)},\n  "entries": [\n`);
          if (dirId) await walk(dirId, Buffer.alloc(0));
          else await emit(entry!);
          if (argv.json) await stream.write(`${count ? '\n' : ''}  ]\n}\n`);
          await stream.flush();
        }, true);
      },
    )
    .command(
      'cat <repo> <spec>',
      'write a file of a snapshot to stdout (SOURCE@SNAP:PATH)',
      (a) => a.positional('repo', { type: 'string', demandOption: true }).positional('spec', { type: 'string', demandOption: true }),
      async (argv) => {
        const spec = parseSnapshotSpec(argv.spec, true);
        await withRepository(argv.repo, async (repo) => {
          const snap = await new SnapshotCatalog(repo.snapshots).resolve(spec.source, spec.snapshot);
          const trees = new TreeReader(repo.blobs);
          const { entry } = await trees.resolve(idFromHex(snap.root), pathComponents(spec.path!), argv.spec);
          if (!entry || entry.kind !== EntryKind.File) throw new SnapfsError('IS_A_DIRECTORY', `${argv.spec}: not a regular file`);
          const { FileReader } = await import('../../lib/read/file-reader.js');
          const files = new FileReader(repo.blobs);
          const file = files.open(entry);
          const step = 4 * 1024 * 1024;
          for (let pos = 0; pos < file.size; pos += step) {
            const data = await files.read(file, pos, step);
            if (!process.stdout.write(data)) await new Promise((r) => process.stdout.once('drain', r));
          }
        }, true);
      },
    );
}
