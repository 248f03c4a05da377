// randn/rand/randint must equal PyTorch's for the same seed and shape on the CPU: users reproduce
// images across tools by seed. Exact equality (bit patterns summed), no tolerance.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as T from '../../src/torch/index.ts';
import { REF } from './reference.ts';

test('randn is bit-identical to torch.randn for several seeds and shapes', () => {
  for (const r of REF.rng) {
    T.tidy(() => {
      T.manualSeed(BigInt(r.seed));
      const a = T.randn(r.shape);
      assert.deepEqual(a.shape, r.shape);
      const head = a.flatten().slice(0, 0, 16).toArray();
      assert.deepEqual(head, r.randn_head.slice(0, head.length), `seed ${r.seed}: first values`);
      // Sum of the raw float32 bit patterns: equal only if every value is bit-identical.
      const bits = new Int32Array(a.toBuffer().buffer.slice(0));
      let s = 0n;
      for (const b of bits) s += BigInt(b);
      assert.equal(s, BigInt(r.randn_bits_sum), `seed ${r.seed}: bit patterns`);
    });
  }
});

test('explicit generators reproduce the default generator and torch.rand/randint', () => {
  for (const r of REF.rng) {
    T.tidy(() => {
      const g = new T.Generator(BigInt(r.seed));
      const b = T.randn(r.shape, { generator: g });
      T.manualSeed(BigInt(r.seed));
      const a = T.randn(r.shape);
      assert.equal(a.eq(b).all().item(), 1, 'generator and default generator agree');
      assert.equal(r.gen_equal, true);
      const c = T.rand(r.shape, { generator: g });
      assert.deepEqual(c.flatten().slice(0, 0, 8).toArray(), r.rand_head.slice(0, Math.min(8, c.numel)));
      assert.ok(Math.abs(c.to('float64').sum().item() - r.rand_sum) < 1e-9 * Math.max(1, Math.abs(r.rand_sum)));
      const d = T.randint(0, 1000, r.shape, { generator: g });
      assert.equal(d.dtype, 'int64');
      assert.deepEqual(d.flatten().slice(0, 0, 8).toArray(), r.randint_head.slice(0, Math.min(8, d.numel)));
      assert.equal(d.sum().item(), r.randint_sum);
    });
  }
});

test('generator state saves and restores exactly (resume)', () => {
  T.tidy(() => {
    const g = new T.Generator(5);
    T.randn([10], { generator: g });
    const state = g.getState();
    const a = T.randn([100], { generator: g });
    g.setState(state);
    const b = T.randn([100], { generator: g });
    assert.equal(a.eq(b).all().item(), 1);
    // the default generator too
    T.manualSeed(3);
    const s = T.getRngState();
    const c = T.rand([50]);
    T.setRngState(s);
    const d = T.rand([50]);
    assert.equal(c.eq(d).all().item(), 1);
  });
});
