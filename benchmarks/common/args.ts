// Tiny argument parsing and number formatting for the benchmark scripts (no dependencies).

export type ArgValue = string | boolean;

/**
 * Parses `--name value`, `--name=value` and boolean `--flag` / `--no-flag` against a table
 * of defaults (the default's type says whether an option takes a value). Unknown options
 * are an error, so a typo does not silently run a 10-minute benchmark with the wrong size.
 */
export function parseArgs<T extends Record<string, ArgValue>>(argv: string[], defaults: T): T {
  const out: Record<string, ArgValue> = { ...defaults };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--help' || a === '-h') {
      console.log(`options (defaults):\n${Object.entries(defaults).map(([k, v]) => `  --${k}${typeof v === 'boolean' ? '' : ` ${JSON.stringify(v)}`}`).join('\n')}`);
      process.exit(0);
    }
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${JSON.stringify(a)}`);
    let [name, value] = a.slice(2).split(/=(.*)/s, 2) as [string, string | undefined];
    let negate = false;
    if (!(name in defaults) && name.startsWith('no-') && name.slice(3) in defaults) {
      name = name.slice(3);
      negate = true;
    }
    if (!(name in defaults)) throw new Error(`unknown option --${name} (see --help)`);
    if (typeof defaults[name] === 'boolean') {
      out[name] = value === undefined ? !negate : value !== 'false' && value !== '0';
    } else {
      if (value === undefined) {
        value = argv[++i];
        if (value === undefined) throw new Error(`--${name} needs a value`);
      }
      out[name] = value;
    }
  }
  return out as T;
}

/** "1G", "2.5GiB", "512M", "100k", "123456" -> bytes (binary units). */
export function parseSize(s: string): number {
  const m = /^\s*([\d.]+)\s*([kmgt]?)(i?b)?\s*$/i.exec(s);
  if (!m) throw new Error(`not a size: ${JSON.stringify(s)}`);
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Math.round(Number(m[1]) * mult);
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let u = 0;
  let v = n;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(u === 0 ? 0 : v < 10 ? 2 : 1)} ${units[u]}`;
}

/** Decimal megabytes, as throughput figures are usually quoted (MB/s). */
export function mb(n: number): string {
  return (n / 1e6).toFixed(n < 1e7 ? 2 : 0);
}

/** A throughput already in MB/s. */
export function rate(mbPerS: number): string {
  return Number.isFinite(mbPerS) ? mbPerS.toFixed(mbPerS < 10 ? 1 : 0) : 'n/a';
}

export function secs(s: number): string {
  return s < 10 ? s.toFixed(2) : s.toFixed(1);
}

export function ratio(a: number | undefined, b: number | undefined, digits = 2): string {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return 'n/a';
  return `${(a / b).toFixed(digits)}x`;
}
