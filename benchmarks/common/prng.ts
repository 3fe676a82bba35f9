// Deterministic pseudo-random numbers for the benchmark corpus. Nothing here is
// cryptographic: it only has to be fast and give the same bytes on every machine.

import { createCipheriv, createHash } from 'node:crypto';

/** 32-bit hash of a list of strings and numbers (FNV-1a, then a murmur3 finaliser). */
export function hash32(...parts: Array<string | number>): number {
  let h = 0x811c9dc5;
  for (const p of parts) {
    const s = typeof p === 'number' ? `#${p}` : p;
    for (let i = 0; i < s.length; i++) {
      h ^= s.charCodeAt(i);
      h = Math.imul(h, 0x01000193);
    }
    h ^= 0xff; // separator, so ('ab','c') != ('a','bc')
    h = Math.imul(h, 0x01000193);
  }
  return fmix32(h);
}

export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Uniform [0, 1) from a hash of the parts: a stateless coin for "does X happen on day d". */
export function chance(...parts: Array<string | number>): number {
  return hash32(...parts) / 4294967296;
}

/** sfc32: small, fast, good enough statistically for synthetic data. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(...seed: Array<string | number>) {
    this.a = hash32('a', ...seed);
    this.b = hash32('b', ...seed);
    this.c = hash32('c', ...seed);
    this.d = hash32('d', ...seed) | 1;
    for (let i = 0; i < 12; i++) this.u32();
  }

  u32(): number {
    let { a, b, c, d } = this;
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    this.a = a;
    this.b = b;
    this.c = c;
    this.d = d;
    return t >>> 0;
  }

  /** Uniform [0, 1). */
  float(): number {
    return this.u32() / 4294967296;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.float() * n);
  }

  /** Uniform integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** Log-uniform in [lo, hi): many small values, a few large ones. */
  logUniform(lo: number, hi: number): number {
    return Math.floor(Math.exp(Math.log(lo) + this.float() * (Math.log(hi) - Math.log(lo))));
  }

  /** Index in [0, n) skewed towards 0 (roughly Zipf-like for the exponent used). */
  skewed(n: number, exponent = 2.5): number {
    return Math.min(n - 1, Math.floor(n * Math.pow(this.float(), exponent)));
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }

  hex(chars: number): string {
    let s = '';
    while (s.length < chars) s += this.u32().toString(16).padStart(8, '0');
    return s.slice(0, chars);
  }
}

/**
 * `length` bytes that look random (incompressible, like JPEG or zip content), from a
 * keystream of AES-128-CTR keyed by the seed: deterministic and about 1 GB/s.
 */
export function randomBytes(length: number, ...seed: Array<string | number>): Buffer {
  const digest = createHash('sha256').update(JSON.stringify(seed)).digest();
  const cipher = createCipheriv('aes-128-ctr', digest.subarray(0, 16), digest.subarray(16, 32));
  return cipher.update(Buffer.alloc(length));
}
