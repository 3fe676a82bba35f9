// What backup-bench leaves behind for mount-bench (WORK/state.json), and the floor commands
// both use.

import fs from 'node:fs';
import path from 'node:path';

export interface BenchState {
  corpus: string;
  seed: string;
  size: number;
  /** Corpus day the newest snapshot in every repository holds. */
  day: number;
  tools: Record<string, { repo: string; home: string }>;
}

export function readState(work: string): BenchState | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(work, 'state.json'), 'utf8')) as BenchState;
  } catch {
    return undefined;
  }
}

export function writeState(work: string, state: BenchState): void {
  fs.writeFileSync(path.join(work, 'state.json'), JSON.stringify(state, null, 2) + '\n');
}

export const shq = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** The floors: read every file's bytes; stat every entry (what a no-change backup must do). */
export function floorCommands(dir: string): { cat: string; stat: string } {
  return {
    cat: `find ${shq(dir)} -type f -print0 | xargs -0 cat > /dev/null`,
    stat: `find ${shq(dir)} -printf '%s %T@ %C@ %i %p\\n' > /dev/null`,
  };
}
