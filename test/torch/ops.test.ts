// Op results and gradients against recorded PyTorch values (test/data/torch/make.py), plus
// finite-difference checks in float64 that do not depend on any recording.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as T from '../../src/torch/index.ts';
import { REF } from './reference.ts';
import { DEVICE, assertClose } from '../helpers.ts';

type Fn = (ins: Record<string, T.Tensor>) => T.Tensor;

const IMPL: Record<string, Fn> = {
  linear: ({ x, W, b }) => T.linear(x, W, b),
  conv2d: ({ x, W, b }) => T.conv2d(x, W, b, { stride: 2, padding: 1 }),
  group_norm: ({ x, W, b }) => T.groupNorm(x, 4, W, b, 1e-5),
  layer_norm: ({ x, W, b }) => T.layerNorm(x, [8], W, b, 1e-5),
  softmax: ({ x }) => x.softmax(-1),
  gelu: ({ x }) => x.gelu(),
  silu: ({ x }) => x.silu(),
  quick_gelu: ({ x }) => T.nn.activate(x, 'quick_gelu'),
  attention: ({ q, k, v }) => T.scaledDotProductAttention(q, k, v, { impl: 'math' }),
  interpolate_nearest: ({ x }) => T.interpolate(x, { scaleFactor: 2, mode: 'nearest' }),
  mse: ({ a, b }) => T.mseLoss(a, b).reshape(1),
  matmul_bcast: ({ a, b }) => a.matmul(b),
  cat_chunk: ({ a, b }) => T.cat([a, b], 1).chunk(3, 1)[1].mul(2),
  mean_var: ({ x }) => T.stack([x.mean(1), x.var(1)]),
};

// CPU: the same kernels as PyTorch, so differences are summation-order noise (1e-5 absolute on
// values ≤ ~10). CUDA (TF32 off): other kernels (cuDNN/cuBLAS) against CPU references, 1e-4.
const ATOL = DEVICE === 'cpu' ? 1e-5 : 1e-4;
T.setAllowTF32(false, false);

for (const [name, c] of Object.entries(REF.cases)) {
  test(`${name} on ${DEVICE}: output and gradients equal PyTorch's`, () => {
    const fn = IMPL[name];
    assert.ok(fn, `no implementation for case ${name}`);
    T.tidy(() => {
      const ins: Record<string, T.Tensor> = {};
      for (const [k, v] of Object.entries(c.inputs)) ins[k] = T.tensor(v.values, { shape: v.shape, device: DEVICE, requiresGrad: true });
      const y = fn(ins);
      assert.deepEqual(y.shape, c.out_shape);
      assertClose(y.toArray(), c.out, ATOL, `${name} output`);
      const w = T.tensor(c.w, { shape: c.out_shape, device: DEVICE });
      y.mul(w).sum().backward();
      for (const [k, g] of Object.entries(c.grads)) {
        const grad = ins[k].grad;
        assert.ok(grad, `${name}: no gradient for ${k}`);
        assertClose(grad.toArray(), g, ATOL, `${name} d/d${k}`);
      }
    });
  });
}

test('fused and math attention agree, with masks and causal', () => {
  T.tidy(() => {
    T.manualSeed(1);
    const q = T.randn([2, 3, 5, 8]);
    const k = T.randn([2, 3, 7, 8]);
    const v = T.randn([2, 3, 7, 8]);
    const mask = T.rand([5, 7]).gt(0.3);
    const a = T.scaledDotProductAttention(q, k, v, { impl: 'math', mask });
    // The closed form, written out.
    const s = q.matmul(k.transpose(-2, -1)).div(Math.sqrt(8)).maskedFill(mask.eq(false), -Infinity).softmax(-1).matmul(v);
    assertClose(a.toArray(), s.toArray(), 1e-6, 'math attention vs closed form');
    const qs = T.randn([1, 2, 6, 4]);
    const c = T.scaledDotProductAttention(qs, qs, qs, { impl: 'math', causal: true });
    // First query position attends only to itself: output equals v[0].
    assertClose(c.select(2, 0).toArray(), qs.select(2, 0).toArray(), 1e-6, 'causal first row');
    if (T.hasFusedAttention()) {
      const f = T.scaledDotProductAttention(q, k, v, { impl: 'sdpa', mask });
      assertClose(f.toArray(), a.toArray(), 1e-5, 'fused vs math');
    } else {
      assert.throws(() => T.scaledDotProductAttention(q, k, v, { impl: 'sdpa' }), /scaled_dot_product_attention is not available in libtorch 1\./);
      // 'auto' falls back to the exact math path on 1.13.
      const auto = T.scaledDotProductAttention(q, k, v, { mask });
      assertClose(auto.toArray(), a.toArray(), 0, 'auto fallback');
    }
  });
});

/** Central differences in float64 against autograd, for ops used by the models. */
function gradCheck(name: string, f: (x: T.Tensor) => T.Tensor, shape: number[]): void {
  T.tidy(() => {
    T.manualSeed(11);
    const x = T.randn(shape, { dtype: 'float64' }).requiresGrad_(true);
    f(x).sum().backward();
    const analytic = x.grad!.toArray();
    const base = x.detach().toArray();
    const eps = 1e-6;
    const numeric: number[] = [];
    T.noGrad(() => {
      for (let i = 0; i < base.length; i++) {
        const plus = base.slice();
        const minus = base.slice();
        plus[i] += eps;
        minus[i] -= eps;
        const fp = f(T.tensor(plus, { shape, dtype: 'float64' })).sum().item();
        const fm = f(T.tensor(minus, { shape, dtype: 'float64' })).sum().item();
        numeric.push((fp - fm) / (2 * eps));
      }
    });
    assertClose(analytic, numeric, 1e-6, `${name} gradient vs finite differences`);
  });
}

test('gradients match finite differences (float64)', () => {
  const w = T.keep(T.tidy(() => { T.manualSeed(3); return T.randn([3, 4, 3, 3], { dtype: 'float64' }); }));
  gradCheck('conv2d', (x) => T.conv2d(x, w, null, { padding: 1 }).pow(2), [1, 4, 5, 5]);
  gradCheck('group_norm', (x) => T.groupNorm(x, 2, null, null).mul(x.sin()), [2, 4, 3, 3]);
  gradCheck('softmax·silu', (x) => x.softmax(-1).mul(x.silu()), [3, 6]);
  gradCheck('attention', (x) => T.scaledDotProductAttention(x, x.mul(0.5), x.tanh(), { impl: 'math' }), [1, 2, 3, 4]);
  gradCheck('layer_norm', (x) => T.layerNorm(x, [5], null, null).exp(), [2, 5]);
  w.dispose();
});

test('closed forms: matmul, reductions, shape ops, comparisons', () => {
  T.tidy(() => {
    const a = T.tensor([[1, 2], [3, 4]]);
    const b = T.tensor([[5, 6], [7, 8]]);
    assert.deepEqual(a.matmul(b).toArray(), [19, 22, 43, 50]);
    assert.deepEqual(a.sum(0).toArray(), [4, 6]);
    assert.deepEqual(a.mean(1, true).shape, [2, 1]);
    assert.equal(a.max().item(), 4);
    assert.deepEqual(a.T.toArray(), [1, 3, 2, 4]);
    assert.deepEqual(a.permute(1, 0).contiguous().toArray(), [1, 3, 2, 4]);
    assert.deepEqual(a.reshape(4).toArray(), [1, 2, 3, 4]);
    assert.deepEqual(a.unsqueeze(0).shape, [1, 2, 2]);
    assert.deepEqual(T.arange(5).toArray(), [0, 1, 2, 3, 4]);
    assert.equal(T.arange(5).dtype, 'int64');
    assert.deepEqual(T.linspace(0, 1, 3).toArray(), [0, 0.5, 1]);
    assert.deepEqual(a.gt(2).toArray(), [0, 0, 1, 1]);
    assert.deepEqual(a.select(0, 1).toArray(), [3, 4]);
    assert.deepEqual(T.arange(10).slice(0, 2, 8, 3).toArray(), [2, 5]);
    assert.deepEqual(a.index([T.tensor([1, 0], { dtype: 'int64' })]).toArray(), [3, 4, 1, 2]);
    assert.deepEqual(a.to('float16').to('float32').toArray(), [1, 2, 3, 4]);
    assert.equal(a.to('bfloat16').dtype, 'bfloat16');
    assert.deepEqual(T.tensor([1.5, -2], { dtype: 'float16' }).toArray(), [1.5, -2]);
    assert.deepEqual(T.zeros([2, 3], { dtype: 'int32' }).shape, [2, 3]);
    assert.equal(T.tensor([true, false], { dtype: 'bool' }).any().item(), 1);
    const [vals, idx] = T.tensor([3, 1, 2]).sort();
    assert.deepEqual(vals.toArray(), [1, 2, 3]);
    assert.deepEqual(idx.toArray(), [1, 2, 0]);
    assert.deepEqual(T.tensor(7).shape, []);
    assert.equal(T.crossEntropy(T.tensor([[0, 0]]), T.tensor([1], { dtype: "int64" })).item(), Math.fround(Math.log(2)));
  });
});

test('in-place ops keep identity and modify values', () => {
  T.tidy(() => {
    const p = T.ones([3]);
    const same = p.add_(1).mul_(3);
    assert.equal(same, p);
    assert.deepEqual(p.toArray(), [6, 6, 6]);
    p.addcmul_(T.tensor([1, 2, 3]), T.tensor([1, 1, 1]), 2).addcdiv_(T.ones([3]), T.full([3], 2));
    assert.deepEqual(p.toArray(), [8.5, 10.5, 12.5]);
    p.zero_();
    assert.deepEqual(p.toArray(), [0, 0, 0]);
    p.fill_(2).clamp_(null, 1);
    assert.deepEqual(p.toArray(), [1, 1, 1]);
  });
});
