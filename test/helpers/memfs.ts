// The in-memory FUSE server of test/fixtures/memfs-server.ts, run as a child process
// (a test process must never serve a mount it reads), and the JSON events it prints.

import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { childEnv } from './cli.js';
import { projectRoot } from '../../lib/platform/native.js';

const serverPath = join(projectRoot(), 'dist', 'test', 'fixtures', 'memfs-server.js');

export interface Event { event: string; [k: string]: any }

export class MemfsServer {
  readonly events: Event[] = [];
  private waiters: Array<{ pred: (e: Event) => boolean; resolve: (e: Event) => void }> = [];
  stderr = '';
  readonly exited: Promise<number | null>;

  constructor(readonly child: ChildProcess, readonly name: string) {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      let e: Event;
      try {
        e = JSON.parse(line);
      } catch {
        return;
      }
      const w = this.waiters.findIndex((x) => x.pred(e));
      if (w >= 0) this.waiters.splice(w, 1)[0]!.resolve(e);
      else this.events.push(e);
    });
    child.stderr!.on('data', (b: Buffer) => (this.stderr += b.toString()));
    this.exited = new Promise((r) => child.once('exit', (code) => r(code)));
  }

  static async start(name: string, config: object, env?: Record<string, string>): Promise<MemfsServer> {
    const child = spawn(process.execPath, ['--expose-gc', serverPath, JSON.stringify(config)], {
      env: childEnv(env),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const s = new MemfsServer(child, name);
    return s;
  }

  /** The next event matching pred (already received or future). */
  next(pred: (e: Event) => boolean, timeoutMs = 60_000): Promise<Event> {
    const i = this.events.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.events.splice(i, 1)[0]!);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        reject(new Error(`${this.name}: no matching event in ${timeoutMs} ms; stderr:\n${this.stderr}`));
      }, timeoutMs);
      const done = (e: Event): void => {
        clearTimeout(timer);
        resolve(e);
      };
      this.waiters.push({ pred, resolve: done });
      void this.exited.then((code) => {
        setTimeout(() => {
          if (this.waiters.some((w) => w.resolve === done)) {
            clearTimeout(timer);
            this.waiters = this.waiters.filter((w) => w.resolve !== done);
            reject(new Error(`${this.name} exited (${code}) before the event; stderr:\n${this.stderr}`));
          }
        }, 100);
      });
    });
  }

  send(cmd: object): void {
    this.child.stdin!.write(JSON.stringify(cmd) + '\n');
  }

  async stats(): Promise<any> {
    this.send({ cmd: 'stats' });
    return (await this.next((e) => e.event === 'stats')).stats;
  }

  /** Ends the server: SIGTERM (it unmounts what it serves), SIGKILL after 10 s. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.child.kill('SIGTERM');
    const ended = await Promise.race([this.exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 10_000))]);
    if (!ended) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }
}

export async function mountPoints(): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const line of (await fsp.readFile('/proc/self/mountinfo', 'utf8')).split('\n')) {
    const f = line.split(' ');
    const dash = f.indexOf('-');
    if (f.length > 5 && dash > 0) out.set(f[4]!.replace(/\\040/g, ' '), `${f[dash + 1]} ${f[5]}`);
  }
  return out;
}
