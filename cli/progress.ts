// A progress line with a bar, amounts and ETA, for Output.progress (terminal only).
import { formatBytes } from './output.js';

export class ProgressLine {
  private readonly started = Date.now();

  /** `unit` 'bytes' shows sizes; anything else shows plain counts. */
  line(label: string, done: number, total: number, unit: string, detail = ''): string {
    const amount = (n: number): string => (unit === 'bytes' ? formatBytes(n) : `${n}`);
    if (!(total > 0)) return `${label}: ${amount(done)}${unit === 'bytes' ? '' : ` ${unit}`}${detail ? `  ${detail}` : ''}`;
    const frac = Math.min(1, done / total);
    const width = 24;
    const filled = Math.round(frac * width);
    const bar = `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}]`;
    const elapsed = Date.now() - this.started;
    const eta = frac > 0.01 && elapsed > 1000 ? ` ETA ${formatEta((elapsed / frac - elapsed) / 1000)}` : '';
    const amounts = `${amount(done)}/${amount(total)}${unit === 'bytes' ? '' : ` ${unit}`}`;
    return `${label} ${bar} ${(frac * 100).toFixed(0).padStart(3)}% ${amounts}${eta}${detail ? `  ${detail}` : ''}`;
  }
}

function formatEta(s: number): string {
  if (s < 60) return `${Math.ceil(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}
