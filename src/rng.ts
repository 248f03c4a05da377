// Deterministic randomness for everything that is not a tensor: sfc32, a small fast PRNG with a
// 128-bit state, seeded from a cyrb128 hash of (seed, keys). A stream is named by its keys, so
// (seed, 'item', epoch, index) gives the same numbers whatever was drawn before it: the dataset's
// order and augmentations (src/training) and the toy world's scenes (src/toy) both rest on that.

export class Rng {
  private readonly s: Uint32Array;
  private constructor(state: ArrayLike<number>) {
    this.s = Uint32Array.from(state);
  }
  /** A stream named by a seed and any keys: the same (seed, keys) give the same numbers. */
  static derive(seed: number | bigint | string, ...keys: (number | string)[]): Rng {
    const text = [String(seed), ...keys.map(String)].join('\u0000');
    let h1 = 1779033703, h2 = 3144134277, h3 = 1013904242, h4 = 2773480762;
    for (let i = 0; i < text.length; i++) {
      const k = text.charCodeAt(i);
      h1 = h2 ^ Math.imul(h1 ^ k, 597399067);
      h2 = h3 ^ Math.imul(h2 ^ k, 2869860233);
      h3 = h4 ^ Math.imul(h3 ^ k, 951274213);
      h4 = h1 ^ Math.imul(h4 ^ k, 2716044179);
    }
    h1 = Math.imul(h3 ^ (h1 >>> 18), 597399067);
    h2 = Math.imul(h4 ^ (h2 >>> 22), 2869860233);
    h3 = Math.imul(h1 ^ (h3 >>> 17), 951274213);
    h4 = Math.imul(h2 ^ (h4 >>> 19), 2716044179);
    const r = new Rng([(h1 ^ h2 ^ h3 ^ h4) >>> 0, (h2 ^ h1) >>> 0, (h3 ^ h1) >>> 0, (h4 ^ h1) >>> 0]);
    for (let i = 0; i < 12; i++) r.next(); // mix the seed in before the first use
    return r;
  }
  static fromState(state: readonly number[]): Rng {
    if (state.length !== 4) throw new Error('Rng.fromState: expected 4 numbers');
    return new Rng(state);
  }
  getState(): number[] {
    return [...this.s];
  }
  /** Uniform in [0, 1). */
  next(): number {
    const s = this.s;
    const t = (((s[0] + s[1]) | 0) + s[3]) | 0;
    s[3] = (s[3] + 1) | 0;
    s[0] = s[1] ^ (s[1] >>> 9);
    s[1] = (s[2] + (s[2] << 3)) | 0;
    s[2] = (s[2] << 21) | (s[2] >>> 11);
    s[2] = (s[2] + t) | 0;
    return (t >>> 0) / 4294967296;
  }
  /** Uniform in [a, b). */
  range(a: number, b: number): number {
    return a + (b - a) * this.next();
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** A 32-bit integer, for seeding a render. */
  uint32(): number {
    return Math.floor(this.next() * 4294967296) >>> 0;
  }
  pick<V>(xs: readonly V[]): V {
    return xs[this.int(xs.length)];
  }
  /** Fisher–Yates, in place. */
  shuffle<V>(xs: V[]): V[] {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [xs[i], xs[j]] = [xs[j], xs[i]];
    }
    return xs;
  }
}
