import type { Argv } from 'yargs';
import { Output, formatBytes, formatDuration } from '../output.js';
import { ProgressLine } from '../progress.js';
import { EXIT_FAILURE, EXIT_PARTIAL } from '../exit-codes.js';
import type { RunSummary } from '../../lib/ops/run.js';
import { pruneSummary } from './prune.js';
import { armCompletionGuard, noteStatus } from '../completion.js';

export function register(y: Argv): Argv {
  return y.command(
    'run',
    'the nightly job of a config file: back up every source, apply retention, prune, run the post-backup command',
    (a) =>
      a
        .option('config', { type: 'string', demandOption: true, describe: 'JSON config file (see docs/operations.md)' })
        .option('json', { type: 'boolean', default: false }),
    async (argv) => {
      armCompletionGuard('the nightly run');
      const out = new Output({ json: argv.json });
      const { loadRunConfig, runJob } = await import('../../lib/ops/run.js');
      const config = await loadRunConfig(argv.config);
      let bar = new ProgressLine();
      const summary = await runJob(config, {
        onStep: (m) => {
          noteStatus(m);
          out.clearProgress();
          bar = new ProgressLine();
          if (out.interactive) process.stderr.write(`${m}\n`);
        },
        onBackupProgress: (source, s, current) =>
          out.progress(`${source}: ${s.files} files, ${formatBytes(s.bytesRead)} read, ${formatBytes(s.bytesAddedStored)} added  ${current}`),
        onPruneProgress: (p) => out.progress(bar.line(`prune ${p.phase}`, p.done, p.total, p.unit)),
      });
      out.clearProgress();
      out.info(runSummaryText(summary));
      out.json(summary);
      const anyPartial = summary.sources.some((s) => s.status === 'partial');
      if (summary.failures.length > 0) process.exitCode = EXIT_FAILURE;
      else if (anyPartial) process.exitCode = EXIT_PARTIAL;
    },
  );
}

function runSummaryText(s: RunSummary): string {
  const lines = [`snapfs run on ${s.repository}: ${s.status.toUpperCase()} in ${formatDuration(s.durationMs)}`];
  for (const src of s.sources) {
    if (src.status === 'disabled') lines.push(`  ${src.source}: disabled`);
    else if (src.status === 'failed') lines.push(`  ${src.source}: FAILED: ${src.error?.message}`);
    else {
      const st = src.stats!;
      lines.push(
        `  ${src.source}: ${src.status === 'partial' ? 'PARTIAL ' : ''}snapshot ${src.source}@${src.snapshot!.name}: ${st.filesNew} new, ${st.filesChanged} changed, ${st.filesUnchanged} unchanged files, ${formatBytes(st.bytesAddedStored)} added${src.warnings ? `, ${src.warnings} warnings` : ''}`,
      );
    }
  }
  const r = s.retention;
  lines.push(`  retention: ${r.status === 'ok' ? `${r.kept} kept, ${r.removed} removed` : r.status === 'failed' ? `FAILED: ${r.error?.message}` : 'not configured'}`);
  const p = s.prune;
  lines.push(`  prune: ${p.status === 'ok' ? pruneSummary(p.result!).split('\n').join('\n    ') : p.status === 'failed' ? `FAILED: ${p.error?.message}` : 'not configured'}`);
  const c = s.postBackupCommand;
  lines.push(`  post-backup command: ${c.status === 'ok' ? 'ok' : c.status === 'failed' ? `FAILED (${c.error?.message ?? (c.signal ? `signal ${c.signal}` : `exit code ${c.exitCode}`)})` : 'not configured'}`);
  if (s.failures.length > 0) {
    lines.push(`${s.failures.length} failure(s):`);
    for (const f of s.failures) lines.push(`  - ${f}`);
  }
  return lines.join('\n');
}
