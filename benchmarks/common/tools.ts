// The three backup programs the benchmarks compare, behind one interface: snapfs (the
// compiled CLI of this checkout), restic and borg (Debian packages, when installed).

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Measured, RunOptions, measure, run, which } from './exec.js';
import { apparentSize, mkdirp, rmrf } from './fs-walk.js';

export type ToolName = 'snapfs' | 'restic' | 'borg';

export interface BackupStats {
  /** Files the tool says it read (opened), when it says. */
  filesOpened?: number;
  /** Bytes of file content the tool says it read, when it says. */
  bytesRead?: number;
  /** Bytes the tool says it added to the repository, when it says. */
  added?: number;
}

export interface BackupRun extends Measured {
  stats: BackupStats;
}

export interface MountSpec {
  cmd: string;
  args: string[];
  env?: Record<string, string>;
  /** The directory inside the mount that holds the newest snapshot of the corpus. */
  lastDir: string;
}

export abstract class Tool {
  abstract readonly name: ToolName;
  abstract readonly version: string;
  /** Settings worth stating beside the figures (compression, encryption...). */
  abstract readonly settings: string;

  constructor(
    /** Repository directory. */
    readonly repo: string,
    /** Work directory for caches and configuration of this tool. */
    readonly home: string,
  ) {}

  get label(): string {
    return `${this.name} ${this.version}`;
  }

  /** Environment of the tool's commands, over the benchmark's own (undefined: removed). */
  env(): Record<string, string | undefined> {
    return {};
  }

  protected exec(cmd: string, args: string[], opts: RunOptions = {}): Promise<Measured> {
    return measure(cmd, args, { ...opts, env: { ...this.env(), ...opts.env } });
  }

  /** Deletes and recreates the repository (and the tool's cache). */
  async reset(): Promise<void> {
    rmrf(this.repo);
    rmrf(this.home);
    mkdirp(this.home);
    mkdirp(path.dirname(this.repo));
    await this.init();
  }

  protected abstract init(): Promise<void>;
  /** One timed backup of `src` (an absolute path). `tag` names the snapshot/archive. */
  abstract backup(src: string, tag: string): Promise<BackupRun>;

  repoSize(): number {
    return apparentSize(this.repo);
  }

  abstract mountSpec(mnt: string, src: string): MountSpec;
  /** Timed forget/prune keeping the newest `keep` snapshots; undefined when unsupported. */
  abstract prune(keep: number): Promise<Measured[] | undefined>;
  /** Timed full data verification; undefined when unsupported. */
  abstract checkData(): Promise<Measured | undefined>;
  /** Files holding the stored data (for the `cat` floor of check --read-data). */
  abstract dataFiles(): string[];
}

// ---------------------------------------------------------------------------------------

export function projectRoot(): string {
  // dist/benchmarks/common/tools.js -> project root
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
}

/** Where the snapfs under test lives (a frozen build of HEAD, or the live checkout). */
let snapfsRoot: string | undefined;
let snapfsDescription = '';

export function snapfsCli(): string {
  return path.join(snapfsRoot ?? projectRoot(), 'dist', 'cli', 'main.js');
}

/**
 * Chooses the snapfs to measure. The checkout is shared with people who recompile dist/
 * all the time, so by default ('head') the committed sources (git archive HEAD lib cli)
 * are compiled once into WORK/snapfs-build-<commit>, with node_modules and the native
 * addon linked from the checkout: the figures then belong to one commit, and a recompile
 * in the middle of a run cannot change or break the program under test. 'worktree'
 * measures dist/ of the checkout as it is (for work in progress).
 */
export function prepareSnapfs(work: string, mode: string, log: (s: string) => void = () => {}): string {
  const root = projectRoot();
  const commit = run('git', ['-C', root, 'rev-parse', '--short=10', 'HEAD']).trim();
  if (mode === 'worktree') {
    const dirty = run('git', ['-C', root, 'status', '--porcelain', '--', 'lib', 'cli', 'native/src']).split('\n').filter(Boolean).length;
    snapfsRoot = root;
    snapfsDescription = `working tree at ${commit}${dirty ? ` + ${dirty} uncommitted changes in lib/ cli/ native/src` : ''} (dist/ as last compiled)`;
  } else if (mode === 'head') {
    const dir = path.join(work, `snapfs-build-${commit}`);
    if (!fs.existsSync(path.join(dir, 'dist', 'cli', 'main.js'))) {
      log(`compiling snapfs at ${commit} into ${dir}`);
      rmrf(dir);
      mkdirp(dir);
      run('bash', ['-o', 'pipefail', '-c', `git -C '${root}' archive ${commit} lib cli package.json tsconfig.json | tar -x -C '${dir}'`]);
      fs.symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'));
      mkdirp(path.join(dir, 'native'));
      fs.symlinkSync(path.join(root, 'native', 'build'), path.join(dir, 'native', 'build'));
      const tsconfig = JSON.parse(fs.readFileSync(path.join(dir, 'tsconfig.json'), 'utf8')) as { include: string[] };
      tsconfig.include = ['lib/**/*.ts', 'cli/**/*.ts'];
      fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify(tsconfig, null, 2));
      try {
        run(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', dir]);
      } catch (err) {
        rmrf(dir);
        throw new Error(`cannot compile snapfs at ${commit} (use --snapfs worktree): ${(err as Error).message.slice(0, 2000)}`);
      }
    }
    snapfsRoot = dir;
    snapfsDescription = `commit ${commit}, compiled into ${dir}`;
  } else {
    throw new Error(`--snapfs must be head or worktree, not ${JSON.stringify(mode)}`);
  }
  snapfsCommands = undefined;
  return snapfsDescription;
}

let snapfsCommands: Set<string> | undefined;

/** Commands the compiled CLI offers right now (others are being written concurrently). */
export function snapfsHas(command: string): boolean {
  if (!snapfsCommands) {
    snapfsCommands = new Set();
    const help = run(process.execPath, [snapfsCli(), '--help'], { allowFail: true });
    for (const m of help.matchAll(/^\s+snapfs ([a-z-]+)/gm)) snapfsCommands.add(m[1]!);
  }
  return snapfsCommands.has(command);
}

function filesUnder(dir: string, filter: (p: string) => boolean): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    if (!fs.existsSync(d)) return;
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && filter(p)) out.push(p);
    }
  };
  walk(dir);
  return out.sort();
}

/**
 * snapfs runs without NODE_EXTRA_CA_CERTS: Node 20 reads and parses that bundle at every
 * start (40 ms here, where the machine's environment sets it for all programs), and snapfs
 * opens no TLS connection. The floors table shows Node's start-up with and without it.
 */
export const SNAPFS_ENV: Record<string, string | undefined> = { NODE_EXTRA_CA_CERTS: undefined };

export class SnapfsTool extends Tool {
  readonly name = 'snapfs';
  readonly version: string;
  get settings(): string {
    return `${snapfsDescription || 'live checkout'}; repository defaults (FastCDC 256K/1M/4M, zstd-napi level 1 in a worker pool, no encryption)`;
  }
  readonly source = 'bench';
  /** Extra node flags, e.g. --cpu-prof. */
  nodeFlags: string[] = [];

  constructor(repo: string, home: string) {
    super(repo, home);
    const pkg = JSON.parse(fs.readFileSync(path.join(snapfsRoot ?? projectRoot(), 'package.json'), 'utf8')) as { version: string };
    const commit = /^commit (\w+)/.exec(snapfsDescription)?.[1] ?? (/at (\w+)/.exec(snapfsDescription)?.[1] ? `${/at (\w+)/.exec(snapfsDescription)![1]}+wt` : '');
    this.version = `${pkg.version}${commit ? ` (${commit})` : ''}`;
  }

  cli(args: string[], opts: RunOptions = {}): Promise<Measured> {
    return this.exec(process.execPath, [...this.nodeFlags, snapfsCli(), ...args], opts);
  }

  override env(): Record<string, string | undefined> {
    return SNAPFS_ENV;
  }

  protected async init(): Promise<void> {
    await this.cli(['init', this.repo]);
  }

  async backup(src: string, _tag: string): Promise<BackupRun> {
    const m = await this.cli(['backup', this.repo, src, '--source', this.source, '--json'], { sync: true });
    const st = (JSON.parse(m.stdout) as { snapshot: { stats: Record<string, number> } }).snapshot.stats;
    return { ...m, stats: { filesOpened: st.filesOpened, bytesRead: st.bytesRead, added: st.bytesAddedStored } };
  }

  mountSpec(mnt: string): MountSpec {
    // The V8 flags and malloc settings `snapfs mount` gives its background server
    // (SERVER_NODE_FLAGS, SERVER_MALLOC_ENV in cli/commands/mount.ts): --foreground runs
    // with the command's own.
    return {
      cmd: process.execPath,
      args: ['--max-semi-space-size=2', snapfsCli(), 'mount', this.repo, mnt, '--foreground'],
      env: { MALLOC_MMAP_THRESHOLD_: '1048576' },
      lastDir: path.join(mnt, this.source, 'last') + '/',
    };
  }

  async prune(keep: number): Promise<Measured[] | undefined> {
    if (!snapfsHas('forget') || !snapfsHas('prune')) return undefined;
    const f = await this.cli(['forget', this.repo, '--keep-last', String(keep)], { sync: true });
    const p = await this.cli(['prune', this.repo], { sync: true });
    return [f, p];
  }

  async checkData(): Promise<Measured | undefined> {
    if (!snapfsHas('check')) return undefined;
    return this.cli(['check', this.repo, '--read-data'], { allowFail: true });
  }

  dataFiles(): string[] {
    return filesUnder(path.join(this.repo, 'packs'), (p) => p.endsWith('.pack'));
  }
}

export class ResticTool extends Tool {
  readonly name = 'restic';
  readonly version: string;
  readonly settings = 'defaults: repository v2, compression auto (zstd), AES-256 encryption, local cache in the work dir';

  constructor(repo: string, home: string) {
    super(repo, home);
    this.version = /restic ([\d.]+)/.exec(run('restic', ['version']))?.[1] ?? '?';
  }

  static available(): boolean {
    return which('restic') !== undefined;
  }

  override env(): Record<string, string> {
    return { RESTIC_PASSWORD: 'snapfs-bench', RESTIC_REPOSITORY: this.repo, RESTIC_CACHE_DIR: path.join(this.home, 'cache') };
  }

  protected async init(): Promise<void> {
    await this.exec('restic', ['init']);
  }

  async backup(src: string, _tag: string): Promise<BackupRun> {
    const m = await this.exec('restic', ['backup', '--json', src], { sync: true });
    let stats: BackupStats = {};
    for (const line of m.stdout.split('\n')) {
      if (!line.includes('"summary"')) continue;
      const s = JSON.parse(line) as Record<string, number>;
      stats = { filesOpened: (s.files_new ?? 0) + (s.files_changed ?? 0), added: s.data_added };
    }
    return { ...m, stdout: '', stats };
  }

  mountSpec(mnt: string, src: string): MountSpec {
    return { cmd: 'restic', args: ['mount', mnt], env: this.env(), lastDir: path.join(mnt, 'snapshots', 'latest', src) + '/' };
  }

  async prune(keep: number): Promise<Measured[]> {
    return [await this.exec('restic', ['forget', '--keep-last', String(keep), '--prune'], { sync: true })];
  }

  async checkData(): Promise<Measured> {
    return this.exec('restic', ['check', '--read-data'], { allowFail: true });
  }

  dataFiles(): string[] {
    return filesUnder(path.join(this.repo, 'data'), () => true);
  }
}

export class BorgTool extends Tool {
  readonly name = 'borg';
  readonly version: string;
  readonly settings = '--compression lz4, --encryption none, cache and config in the work dir';
  private archives: string[] = [];

  constructor(repo: string, home: string) {
    super(repo, home);
    this.version = /borg ([\d.]+)/.exec(run('borg', ['--version']))?.[1] ?? '?';
  }

  static available(): boolean {
    return which('borg') !== undefined;
  }

  override env(): Record<string, string> {
    return {
      BORG_CACHE_DIR: path.join(this.home, 'cache'),
      BORG_CONFIG_DIR: path.join(this.home, 'config'),
      BORG_SECURITY_DIR: path.join(this.home, 'security'),
      BORG_KEYS_DIR: path.join(this.home, 'keys'),
      BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: 'yes',
      BORG_RELOCATED_REPO_ACCESS_IS_OK: 'yes',
    };
  }

  protected async init(): Promise<void> {
    this.archives = [];
    await this.exec('borg', ['init', '--encryption', 'none', this.repo]);
  }

  async backup(src: string, tag: string): Promise<BackupRun> {
    const name = `${tag}-${this.archives.length}`;
    // Run from the parent so the archive holds "corpus/..." paths.
    const m = await this.exec('borg', ['create', '--compression', 'lz4', '--json', `${this.repo}::${name}`, path.basename(src)], {
      cwd: path.dirname(src),
      sync: true,
    });
    this.archives.push(name);
    const j = JSON.parse(m.stdout) as { archive: { stats: Record<string, number> } };
    return { ...m, stats: { added: j.archive.stats.deduplicated_size } };
  }

  /** Archive names, oldest first (from the repository, so a reused repository works too). */
  listArchives(): string[] {
    const out = run('borg', ['list', '--short', this.repo], { env: this.env() });
    return out.split('\n').filter(Boolean);
  }

  mountSpec(mnt: string, src: string): MountSpec {
    const last = this.listArchives().pop();
    return { cmd: 'borg', args: ['mount', '-f', `${this.repo}::${last}`, mnt], env: this.env(), lastDir: path.join(mnt, path.basename(src)) + '/' };
  }

  async prune(keep: number): Promise<Measured[]> {
    const p = await this.exec('borg', ['prune', '--keep-last', String(keep), this.repo], { sync: true });
    const c = await this.exec('borg', ['compact', this.repo], { sync: true });
    return [p, c];
  }

  async checkData(): Promise<Measured> {
    return this.exec('borg', ['check', '--verify-data', this.repo], { allowFail: true });
  }

  dataFiles(): string[] {
    return filesUnder(path.join(this.repo, 'data'), () => true);
  }
}

/** The tools to run: snapfs always, restic and borg when installed and not excluded. */
export function makeTools(work: string, wanted: string, prefix = ''): Tool[] {
  const want = new Set(wanted.split(',').map((s) => s.trim()).filter(Boolean));
  const tools: Tool[] = [];
  const dir = (n: string): [string, string] => [path.join(work, `${prefix}${n}-repo`), path.join(work, `${prefix}${n}-home`)];
  if (want.has('snapfs')) tools.push(new SnapfsTool(...dir('snapfs')));
  if (want.has('restic') && ResticTool.available()) tools.push(new ResticTool(...dir('restic')));
  if (want.has('borg') && BorgTool.available()) tools.push(new BorgTool(...dir('borg')));
  return tools;
}

export function missingTools(wanted: string): string[] {
  const out: string[] = [];
  for (const n of wanted.split(',').map((s) => s.trim())) {
    if (n === 'restic' && !ResticTool.available()) out.push('restic');
    if (n === 'borg' && !BorgTool.available()) out.push('borg');
  }
  return out;
}
