// Synthetic but realistic-ish text for the corpus: a vocabulary of common English words
// and generated pseudo-words with a skewed (Zipf-like) frequency, wrapped at ~72 columns.
// It compresses about like real mail text (zstd -3 roughly 0.3-0.4).

import { Rng } from './prng.js';

const COMMON = (
  'the of and to a in is that for it as was with be by on not he this are or his from at which but have an ' +
  'they you were her she there been one all we their has would when if so no will can more other its about ' +
  'what up out them into some could time only new these two may then do first any my now such like our over ' +
  'me even most made after also did many before must through back years where much your way well down should ' +
  'because each just those people how too little state good very make world still own see men work long get ' +
  'here between both life being under never day same another know while last might us great old year off come ' +
  'since against go came right used take three please thanks regards meeting report invoice attached project ' +
  'server backup mailbox account password schedule tomorrow monday friday update review budget customer order ' +
  'delivery contract team office question issue ticket release version database network support'
).split(' ');

const SYLLABLES = [
  'ka', 'ri', 'to', 'ne', 'mo', 'la', 'shi', 'ver', 'gen', 'tor', 'al', 'is', 'um', 'pre', 'con', 'ex', 'pro', 'ing',
  'tion', 'ment', 'er', 'ly', 'an', 'ed', 'ble', 'dis', 'un', 're', 'com', 'sta', 'ter', 'for', 'mi', 'lo', 'ca', 'de',
];

export const FIRST_NAMES = [
  'alice', 'bob', 'carol', 'david', 'emma', 'frank', 'grace', 'hugo', 'irene', 'jacques', 'karin', 'louis', 'marie',
  'nicolas', 'olga', 'pierre', 'quentin', 'rose', 'sophie', 'thomas', 'ursula', 'victor', 'wanda', 'xavier', 'yann',
  'zoe', 'amelie', 'bruno', 'celine', 'denis', 'elodie', 'fabien', 'gilles', 'helene', 'isabelle', 'julien', 'kevin',
  'laura', 'mathieu', 'nadia', 'olivier', 'pauline', 'romain', 'sarah', 'theo', 'valerie', 'william', 'yasmine',
];

export const LAST_NAMES = [
  'martin', 'bernard', 'dubois', 'thomas', 'robert', 'richard', 'petit', 'durand', 'leroy', 'moreau', 'simon',
  'laurent', 'lefebvre', 'michel', 'garcia', 'david', 'bertrand', 'roux', 'vincent', 'fournier', 'morel', 'girard',
  'andre', 'mercier', 'dupont', 'lambert', 'bonnet', 'francois', 'martinez', 'legrand', 'garnier', 'faure', 'rousseau',
  'blanc', 'guerin', 'muller', 'henry', 'roussel', 'nicolas', 'perrin', 'morin', 'mathieu', 'clement', 'gauthier',
];

export const DOMAINS = [
  'example.com', 'example.org', 'example.net', 'mail.example.fr', 'lists.example.org', 'corp.example.com',
  'partner.example.net', 'shop.example.com', 'univ.example.edu', 'gov.example.fr',
];

export class TextGen {
  private readonly words: Buffer[];
  private readonly capitalized: Buffer[];

  constructor(seed: string | number, vocabulary = 6000) {
    const rng = new Rng('vocabulary', seed);
    const words = [...COMMON];
    const seen = new Set(words);
    while (words.length < vocabulary) {
      let w = '';
      const n = rng.range(1, 4);
      for (let i = 0; i < n; i++) w += rng.pick(SYLLABLES);
      if (rng.float() < 0.01) w += rng.pick(['é', 'ü', 'ø', 'ç']); // a little UTF-8
      if (!seen.has(w)) {
        seen.add(w);
        words.push(w);
      }
    }
    this.words = words.map((w) => Buffer.from(w, 'utf8'));
    this.capitalized = words.map((w) => Buffer.from(w.charAt(0).toUpperCase() + w.slice(1), 'utf8'));
  }

  word(rng: Rng): string {
    return this.words[rng.skewed(this.words.length)]!.toString('utf8');
  }

  phrase(rng: Rng, min: number, max: number): string {
    const n = rng.range(min, max);
    const out: string[] = [];
    for (let i = 0; i < n; i++) out.push(this.word(rng));
    const s = out.join(' ');
    return s.charAt(0).toUpperCase() + s.slice(1);
  }

  /**
   * Appends about `bytes` bytes of wrapped prose to `out`: sentences of 5-20 words,
   * paragraphs of 2-7 sentences, optional quoting prefix ("> ") on every line.
   */
  prose(out: ByteSink, rng: Rng, bytes: number, quote = ''): void {
    const end = out.length + bytes;
    const q = Buffer.from(quote);
    const width = 72 - q.length;
    while (out.length < end) {
      const sentences = rng.range(2, 7);
      out.put(q);
      let col = 0;
      for (let s = 0; s < sentences && out.length < end; s++) {
        const n = rng.range(5, 20);
        for (let i = 0; i < n; i++) {
          const idx = rng.skewed(this.words.length);
          const w = i === 0 ? this.capitalized[idx]! : this.words[idx]!;
          if (col > 0) {
            if (col + 1 + w.length > width) {
              out.byte(10);
              out.put(q);
              col = 0;
            } else {
              out.byte(32);
              col++;
            }
          }
          out.put(w);
          col += w.length;
        }
        out.byte(rng.float() < 0.1 ? 63 : 46); // ? or .
        col++;
      }
      out.byte(10);
      out.put(q);
      out.byte(10);
    }
  }
}

/** A growable byte buffer with cheap appends. */
export class ByteSink {
  private buf: Buffer;
  length = 0;

  constructor(capacity = 1 << 16) {
    this.buf = Buffer.allocUnsafe(capacity);
  }

  private ensure(extra: number): void {
    if (this.length + extra <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.length + extra) cap *= 2;
    const next = Buffer.allocUnsafe(cap);
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }

  byte(b: number): void {
    this.ensure(1);
    this.buf[this.length++] = b;
  }

  put(b: Uint8Array): void {
    this.ensure(b.length);
    if (b.length < 24) {
      for (let i = 0; i < b.length; i++) this.buf[this.length + i] = b[i]!;
    } else {
      this.buf.set(b, this.length);
    }
    this.length += b.length;
  }

  str(s: string): void {
    this.ensure(s.length * 3);
    this.length += this.buf.write(s, this.length, 'utf8');
  }

  /** Base64 with 76-column lines, as MIME attachments are encoded. */
  base64(data: Buffer): void {
    for (let i = 0; i < data.length; i += 57) {
      this.str(data.subarray(i, Math.min(i + 57, data.length)).toString('base64'));
      this.byte(10);
    }
  }

  /** The bytes so far (a view: copy it if the sink is reused). */
  bytes(): Buffer {
    return this.buf.subarray(0, this.length);
  }

  reset(): void {
    this.length = 0;
  }
}
