// The soak's mutator process: creates the mail spool (mail-tree.ts) and changes it without
// pause, except while the orchestrator backs it up. Started by soak.ts:
//   node dist/test/soak/mutator.js ROOT SEED
// 'pause' is answered with 'paused' once the change in progress is complete, so the tree
// is quiet from then until 'resume'.

import { MailTree, type MutationKind } from './mail-tree.js';
import { parentChannel } from './channel.js';
import { setTimeout as sleep } from 'node:timers/promises';

export type MutatorIn = { type: 'pause' } | { type: 'resume' } | { type: 'stop' };
export type MutatorOut =
  | { type: 'ready' }
  | { type: 'paused'; operations: number }
  | { type: 'stopped'; counts: Record<MutationKind, number> }
  | { type: 'failed'; message: string };

/** Rest between changes: the spool changes a few hundred times between backups, not more. */
const REST_MS = 5;

const [root, seed] = process.argv.slice(2);
const tree = new MailTree(root!, Number(seed));
let paused = true;
let pauseAsked = false;
let stopping = false;
let wake: (() => void) | undefined;
let operations = 0;

const send = parentChannel<MutatorIn, MutatorOut>((m) => {
  if (m.type === 'pause') paused = pauseAsked = true;
  if (m.type === 'resume') paused = false;
  if (m.type === 'stop') stopping = true;
  wake?.();
});

await tree.create();
send({ type: 'ready' });
try {
  while (!stopping) {
    if (paused) {
      // Answered here, between two changes: the tree is quiet.
      if (pauseAsked) send({ type: 'paused', operations });
      pauseAsked = false;
      await new Promise<void>((r) => (wake = r));
      continue;
    }
    await tree.mutateOnce();
    operations++;
    await sleep(REST_MS);
  }
  send({ type: 'stopped', counts: tree.counts });
} catch (err) {
  send({ type: 'failed', message: (err as Error).stack ?? String(err) });
  process.exitCode = 1;
}
process.disconnect();
