// The nightly job: back up every enabled source of a config file, apply retention, prune,
// then run the post-backup command with the outcome in its environment. A source that
// fails does not stop the others; every step's outcome lands in one summary.

import { promises as fs } from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { backup } from '../backup/backup.js';
import { SnapshotStats } from '../format/snapshot.js';
import { Repository } from '../store/repository.js';
import { validateSourceName } from '../snapshot/catalog.js';
import { RetentionPolicy, forget, validatePolicy } from './forget.js';
import { PruneProgress, PruneResult, prune } from './prune.js';
import { SnapfsError, isSnapfsError } from '../errors.js';

export interface RunSourceConfig {
  name: string;
  path: string;
  excludes: string[];
  enabled: boolean;
  oneFileSystem: boolean;
}

export interface RunConfig {
  repository: string;
  sources: RunSourceConfig[];
  retention?: RetentionPolicy;
  prune: boolean;
  repackThreshold?: number;
  maxUnused?: number;
  postBackupCommand?: string;
}

/** ok: everything worked; partial: some snapshot was saved but not all went well; failed: no snapshot saved. */
export type RunStatus = 'ok' | 'partial' | 'failed';

export interface SourceOutcome {
  source: string;
  path: string;
  status: 'ok' | 'partial' | 'failed' | 'disabled';
  snapshot?: { id: string; name: string; time: string };
  stats?: SnapshotStats;
  warnings: number;
  error?: { code: string; message: string };
}

export interface StepOutcome {
  status: 'ok' | 'failed' | 'skipped';
  error?: { code: string; message: string };
}

export interface RunSummary {
  repository: string;
  status: RunStatus;
  startedAt: string;
  durationMs: number;
  sources: SourceOutcome[];
  retention: StepOutcome & { kept?: number; removed?: number; removedSnapshots?: string[] };
  prune: StepOutcome & { result?: PruneResult };
  postBackupCommand: StepOutcome & { command?: string; exitCode?: number | null; signal?: string | null };
  /** One line per thing that went wrong; empty when all is well. */
  failures: string[];
}

export interface RunHooks {
  onStep?: (message: string) => void;
  onBackupProgress?: (source: string, stats: Readonly<SnapshotStats>, current: string) => void;
  onPruneProgress?: (p: PruneProgress) => void;
}

const TOP_KEYS = new Set(['repository', 'sources', 'retention', 'prune', 'repackThreshold', 'maxUnused', 'postBackupCommand']);
const SOURCE_KEYS = new Set(['name', 'path', 'excludes', 'enabled', 'oneFileSystem']);
const RETENTION_KEYS = new Set(['keepLast', 'keepDaily', 'keepWeekly', 'keepMonthly']);

/** Parses and validates a JSON config; relative paths are taken from the config file's directory. */
export function parseRunConfig(text: string, file: string): RunConfig {
  const bad = (msg: string): never => {
    throw new SnapfsError('INVALID_ARGUMENT', `${file}: ${msg}`);
  };
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    return bad(`not valid JSON (${(err as Error).message}); the config is a JSON document, see docs/operations.md`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return bad('expected a JSON object');
  const c = v as Record<string, unknown>;
  for (const k of Object.keys(c)) if (!TOP_KEYS.has(k)) bad(`unknown key '${k}'`);
  const base = path.dirname(path.resolve(file));
  if (typeof c.repository !== 'string' || !c.repository) bad(`'repository' must be a path`);
  if (!Array.isArray(c.sources) || c.sources.length === 0) bad(`'sources' must be a non-empty list`);
  const names = new Set<string>();
  const sources = (c.sources as unknown[]).map((s, i): RunSourceConfig => {
    const where = `sources[${i}]`;
    if (typeof s !== 'object' || s === null) return bad(`${where} must be an object`);
    const o = s as Record<string, unknown>;
    for (const k of Object.keys(o)) if (!SOURCE_KEYS.has(k)) bad(`${where}: unknown key '${k}'`);
    if (typeof o.name !== 'string') bad(`${where}.name must be a string`);
    try {
      validateSourceName(o.name as string);
    } catch (err) {
      bad(`${where}.name: ${(err as Error).message}`);
    }
    if (names.has(o.name as string)) bad(`${where}: source ${JSON.stringify(o.name)} is listed twice`);
    names.add(o.name as string);
    if (typeof o.path !== 'string' || !o.path) bad(`${where}.path must be a path`);
    if (o.excludes !== undefined && (!Array.isArray(o.excludes) || o.excludes.some((x) => typeof x !== 'string'))) bad(`${where}.excludes must be a list of globs`);
    if (o.enabled !== undefined && typeof o.enabled !== 'boolean') bad(`${where}.enabled must be true or false`);
    if (o.oneFileSystem !== undefined && typeof o.oneFileSystem !== 'boolean') bad(`${where}.oneFileSystem must be true or false`);
    return {
      name: o.name as string,
      path: path.resolve(base, o.path as string),
      excludes: (o.excludes as string[] | undefined) ?? [],
      enabled: (o.enabled as boolean | undefined) ?? true,
      oneFileSystem: (o.oneFileSystem as boolean | undefined) ?? false,
    };
  });
  let retention: RetentionPolicy | undefined;
  if (c.retention !== undefined && c.retention !== null) {
    if (typeof c.retention !== 'object') bad(`'retention' must be an object`);
    const r = c.retention as Record<string, unknown>;
    for (const k of Object.keys(r)) if (!RETENTION_KEYS.has(k)) bad(`retention: unknown key '${k}'`);
    retention = r as RetentionPolicy;
    try {
      validatePolicy(retention);
    } catch (err) {
      bad(`retention: ${(err as Error).message}`);
    }
  }
  if (c.prune !== undefined && typeof c.prune !== 'boolean') bad(`'prune' must be true or false`);
  if (c.repackThreshold !== undefined && (typeof c.repackThreshold !== 'number' || !(c.repackThreshold >= 0 && c.repackThreshold <= 1))) {
    bad(`'repackThreshold' must be a number between 0 and 1`);
  }
  if (c.maxUnused !== undefined && (typeof c.maxUnused !== 'number' || !(c.maxUnused >= 0 && c.maxUnused <= 1))) {
    bad(`'maxUnused' must be a number between 0 and 1`);
  }
  if (c.postBackupCommand !== undefined && typeof c.postBackupCommand !== 'string') bad(`'postBackupCommand' must be a string (run with /bin/sh -c)`);
  return {
    repository: path.resolve(base, c.repository as string),
    sources,
    retention,
    prune: (c.prune as boolean | undefined) ?? false,
    repackThreshold: c.repackThreshold as number | undefined,
    maxUnused: c.maxUnused as number | undefined,
    postBackupCommand: (c.postBackupCommand as string | undefined) || undefined,
  };
}

export async function loadRunConfig(file: string): Promise<RunConfig> {
  if (/\.ya?ml$/i.test(file)) throw new SnapfsError('INVALID_ARGUMENT', `${file}: YAML is not supported; write the config as JSON (see docs/operations.md)`);
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    throw new SnapfsError('INVALID_ARGUMENT', `cannot read config ${file}: ${(err as Error).message}`);
  }
  return parseRunConfig(text, file);
}

function errorInfo(err: unknown): { code: string; message: string } {
  if (isSnapfsError(err)) return { code: err.code, message: err.message };
  return { code: 'INTERNAL', message: (err as Error)?.message ?? String(err) };
}

export async function runJob(config: RunConfig, hooks: RunHooks = {}): Promise<RunSummary> {
  const started = Date.now();
  const summary: RunSummary = {
    repository: config.repository,
    status: 'ok',
    startedAt: new Date(started).toISOString(),
    durationMs: 0,
    sources: [],
    retention: { status: 'skipped' },
    prune: { status: 'skipped' },
    postBackupCommand: { status: 'skipped' },
    failures: [],
  };
  let repo: Repository | undefined;
  let openError: { code: string; message: string } | undefined;
  try {
    repo = await Repository.open(config.repository);
  } catch (err) {
    openError = errorInfo(err);
    summary.failures.push(`repository ${config.repository}: ${openError.message}`);
  }
  try {
    for (const src of config.sources) {
      const outcome: SourceOutcome = { source: src.name, path: src.path, status: 'disabled', warnings: 0 };
      summary.sources.push(outcome);
      if (!src.enabled) continue;
      if (!repo) {
        outcome.status = 'failed';
        outcome.error = openError;
        continue;
      }
      hooks.onStep?.(`backing up ${src.name} from ${src.path}`);
      try {
        const r = await backup(repo, {
          source: src.name,
          path: src.path,
          excludes: src.excludes,
          oneFileSystem: src.oneFileSystem,
          onProgress: (stats, current) => hooks.onBackupProgress?.(src.name, stats, current),
        });
        const s = r.snapshot;
        outcome.status = s.partial ? 'partial' : 'ok';
        outcome.snapshot = { id: s.id, name: s.name, time: s.time };
        outcome.stats = s.stats;
        outcome.warnings = r.warnings.length;
      } catch (err) {
        outcome.status = 'failed';
        outcome.error = errorInfo(err);
        summary.failures.push(`backup of ${src.name}: ${outcome.error.message}`);
      }
    }

    if (repo && config.retention) {
      hooks.onStep?.('applying retention');
      try {
        let kept = 0;
        const removed: string[] = [];
        for (const src of config.sources.filter((s) => s.enabled)) {
          try {
            const r = await forget(repo, { source: src.name, policy: config.retention });
            kept += r.kept;
            for (const d of r.decisions) if (!d.keep) removed.push(`${d.snapshot.source}@${d.snapshot.name}`);
          } catch (err) {
            if (!isSnapfsError(err, 'SNAPSHOT_NOT_FOUND')) throw err; // a source without snapshots yet
          }
        }
        Object.assign(summary.retention, { status: 'ok', kept, removed: removed.length, removedSnapshots: removed });
      } catch (err) {
        summary.retention = { status: 'failed', error: errorInfo(err) };
        summary.failures.push(`retention: ${summary.retention.error!.message}`);
      }
    }

    if (repo && config.prune) {
      hooks.onStep?.('pruning');
      try {
        const result = await prune(repo, { repackThreshold: config.repackThreshold, maxUnused: config.maxUnused, onProgress: hooks.onPruneProgress });
        summary.prune = { status: 'ok', result };
      } catch (err) {
        summary.prune = { status: 'failed', error: errorInfo(err) };
        summary.failures.push(`prune: ${summary.prune.error!.message}`);
      }
    }
  } finally {
    await repo?.close();
  }

  const saved = summary.sources.filter((s) => s.snapshot);
  const anyPartial = summary.sources.some((s) => s.status === 'partial');
  summary.status = summary.failures.length === 0 && !anyPartial ? 'ok' : saved.length > 0 ? 'partial' : 'failed';

  if (config.postBackupCommand) {
    hooks.onStep?.('running the post-backup command');
    const env = {
      ...process.env,
      SNAPFS_REPOSITORY: config.repository,
      SNAPFS_STATUS: summary.status,
      SNAPFS_SNAPSHOTS: saved.map((s) => `${s.source}@${s.snapshot!.name}`).join(' '),
      SNAPFS_FAILED: summary.sources.filter((s) => s.status === 'failed').map((s) => s.source).join(' '),
    };
    const cmd = config.postBackupCommand;
    try {
      const { code, signal } = await runShell(cmd, env);
      summary.postBackupCommand = { status: code === 0 ? 'ok' : 'failed', command: cmd, exitCode: code, signal };
      if (code !== 0) summary.failures.push(`post-backup command ${signal ? `killed by ${signal}` : `exited with ${code}`}: ${cmd}`);
    } catch (err) {
      summary.postBackupCommand = { status: 'failed', command: cmd, error: errorInfo(err) };
      summary.failures.push(`post-backup command could not start: ${(err as Error).message}`);
    }
  }
  summary.durationMs = Date.now() - started;
  return summary;
}

/** Runs a command with /bin/sh -c; its output goes to our stderr so that --json stdout stays clean. */
function runShell(command: string, env: NodeJS.ProcessEnv): Promise<{ code: number | null; signal: string | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', command], { env, stdio: ['ignore', 2, 2] });
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
}
