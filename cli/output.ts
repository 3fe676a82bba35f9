// Printing: human text (with a one-line progress display on a terminal) or --json.
import { SnapfsError } from '../lib/errors.js';
import { EXIT_BY_CODE, EXIT_FAILURE } from './exit-codes.js';

export interface OutputOptions {
  json?: boolean;
  quiet?: boolean;
}

export class Output {
  private progressShown = false;
  private lastDraw = 0;
  readonly interactive: boolean;

  constructor(readonly opts: OutputOptions) {
    this.interactive = Boolean(process.stderr.isTTY) && !opts.json && !opts.quiet;
  }

  /** Redraws the progress line (terminal only, at most 10 times a second). */
  progress(line: string): void {
    if (!this.interactive) return;
    const now = Date.now();
    if (now - this.lastDraw < 100) return;
    this.lastDraw = now;
    const width = process.stderr.columns || 100;
    process.stderr.write(`\r\x1b[K${line.slice(0, width - 1)}`);
    this.progressShown = true;
  }

  clearProgress(): void {
    if (this.progressShown) process.stderr.write('\r\x1b[K');
    this.progressShown = false;
  }

  info(text: string): void {
    if (this.opts.json || this.opts.quiet) return;
    this.clearProgress();
    process.stdout.write(text.endsWith('\n') ? text : text + '\n');
  }

  warn(text: string): void {
    this.clearProgress();
    process.stderr.write(`snapfs: warning: ${text}\n`);
  }

  json(value: unknown): void {
    if (!this.opts.json) return;
    process.stdout.write(JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 2) + '\n');
  }
}

/**
 * Writes a long listing to stdout in 64 KiB pieces, waiting whenever the reader is behind:
 * a million lines never pile up in memory.
 */
export class StdoutStream {
  private parts: string[] = [];
  private size = 0;

  async write(text: string): Promise<void> {
    this.parts.push(text);
    this.size += text.length;
    if (this.size >= 64 * 1024) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.parts.length === 0) return;
    const chunk = this.parts.join('');
    this.parts = [];
    this.size = 0;
    if (!process.stdout.write(chunk)) await new Promise((resolve) => process.stdout.once('drain', resolve));
  }
}

/** Prints an error once, at the edge, and returns the exit code for it. */
export function reportError(err: unknown, json: boolean): number {
  if (err instanceof SnapfsError) {
    if (json) process.stdout.write(JSON.stringify({ error: { code: err.code, message: err.message } }) + '\n');
    process.stderr.write(`snapfs: ${err.message}\n`);
    return EXIT_BY_CODE[err.code] ?? EXIT_FAILURE;
  }
  const e = err as Error;
  if (json) process.stdout.write(JSON.stringify({ error: { code: 'INTERNAL', message: e?.message ?? String(err) } }) + '\n');
  process.stderr.write(`snapfs: internal error: ${e?.stack ?? String(err)}\n`);
  return EXIT_FAILURE;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

export function formatDuration(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}
