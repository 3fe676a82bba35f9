// The soak's worker processes (mutator, reader) and how the orchestrator talks to them:
// typed messages over node's IPC channel. A worker that dies or stops answering is a
// failure of the run, reported with its stderr, never a hang.

import { fileURLToPath } from 'node:url';
import { spawnNode, type SnapfsChild } from '../helpers/cli.js';

export interface Message {
  type: string;
}

/** The run failed for a reason other than a wrong answer: a worker died or hung. */
export class WorkerError extends Error {
  constructor(readonly worker: string, message: string) {
    super(`${worker}: ${message}`);
    this.name = 'WorkerError';
  }
}

/** The orchestrator's end of a worker process. */
export class Worker<In extends Message, Out extends Message> {
  private readonly child: SnapfsChild;
  private readonly waiting = new Map<string, Array<(m: Out) => void>>();
  private readonly listeners = new Map<string, (m: Out) => void>();
  /** Messages that came before anyone waited or listened for their type ('ready' may beat next()). */
  private readonly unclaimed = new Map<string, Out[]>();
  private exited = false;
  readonly exit: Promise<{ code: number | null; signal: string | null }>;

  /** `module` is a URL next to the caller's compiled file, e.g. new URL('./reader.js', import.meta.url). */
  constructor(readonly name: string, module: URL, args: string[]) {
    this.child = spawnNode(fileURLToPath(module), args, { ipc: true });
    this.exit = new Promise((resolve) => this.child.once('exit', (code, signal) => {
      this.exited = true;
      resolve({ code, signal });
    }));
    this.child.on('message', (m: Out) => {
      const queue = this.waiting.get(m.type);
      const listener = this.listeners.get(m.type);
      if (queue?.length) queue.shift()!(m);
      else if (listener) listener(m);
      else this.unclaimed.set(m.type, [...(this.unclaimed.get(m.type) ?? []), m]);
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  send(m: In): void {
    if (!this.exited && this.child.connected) this.child.send(m);
  }

  /** Every message of `type` that nobody awaits with next(). */
  on<T extends Out['type']>(type: T, fn: (m: Extract<Out, { type: T }>) => void): void {
    this.listeners.set(type, fn as (m: Out) => void);
    for (const m of this.unclaimed.get(type)?.splice(0) ?? []) fn(m as Extract<Out, { type: T }>);
  }

  /** The next message of `type`; throws if the worker exits or `timeoutMs` passes first. */
  next<T extends Out['type']>(type: T, timeoutMs: number): Promise<Extract<Out, { type: T }>> {
    const early = this.unclaimed.get(type)?.shift();
    if (early) return Promise.resolve(early as Extract<Out, { type: T }>);
    return new Promise((resolve, reject) => {
      const queue = this.waiting.get(type) ?? [];
      this.waiting.set(type, queue);
      const deliver = (m: Out): void => {
        clearTimeout(timer);
        resolve(m as Extract<Out, { type: T }>);
      };
      const fail = (why: string): void => {
        clearTimeout(timer);
        if (queue.includes(deliver)) queue.splice(queue.indexOf(deliver), 1);
        reject(new WorkerError(this.name, `${why}\n${this.child.output().stderr.slice(-4000)}`));
      };
      const timer = setTimeout(() => fail(`no '${type}' within ${timeoutMs} ms`), timeoutMs);
      queue.push(deliver);
      void this.exit.then(({ code, signal }) => fail(`exited (${signal ?? `code ${code}`}) while we waited for '${type}'`));
    });
  }

  /** Ends the process for good (idempotent); for teardown after a failure. */
  async kill(): Promise<void> {
    if (!this.exited) this.child.kill('SIGKILL');
    await this.exit;
  }
}

/** The worker's end: typed send and receive on its parent's channel. */
export function parentChannel<In extends Message, Out extends Message>(onMessage: (m: In) => void): (m: Out) => void {
  if (!process.send) throw new Error('this module runs as a soak worker process, started by soak.ts');
  process.on('message', (m) => onMessage(m as In));
  // The orchestrator gone means the run is over: do not linger.
  process.on('disconnect', () => process.exit(1));
  return (m: Out) => void process.send!(m);
}
