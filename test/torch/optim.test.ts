// Optimizers step for step against PyTorch's recorded trajectories, state save/load, clipping.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as T from '../../src/torch/index.ts';
import { REF, type OptRun } from './reference.ts';
import { assertClose } from '../helpers.ts';

function replay(run: OptRun, make: (p: [string, T.Tensor][]) => T.optim.Optimizer<{ lr: number }>, what: string): void {
  const p = T.keep(T.tensor(run.p0, { shape: [6, 4] }).requiresGrad_(true));
  const opt = make([['p', p]]);
  run.grads.forEach((g, i) => {
    T.tidy(() => {
      p.grad = T.tensor(g, { shape: [6, 4] });
      opt.step();
    });
    // Same elementwise formulas in float32: equal up to rounding of the scalar coefficients.
    assertClose(p.toArray(), run.traj[i], 2e-7, `${what} step ${i + 1}`);
  });
  opt.dispose();
  p.dispose();
}

test('AdamW matches torch.optim.AdamW (custom and default hyper-parameters)', () => {
  replay(REF.adamw, (ps) => new T.optim.AdamW(ps, { lr: 0.01, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.05 }), 'adamw');
  replay(REF.adamw_defaults, (ps) => new T.optim.AdamW(ps), 'adamw defaults');
});

test('SGD matches torch.optim.SGD (plain, and momentum + nesterov + weight decay)', () => {
  replay(REF.sgd_plain, (ps) => new T.optim.SGD(ps, { lr: 0.1 }), 'sgd');
  replay(REF.sgd_nesterov, (ps) => new T.optim.SGD(ps, { lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 0.01 }), 'sgd nesterov');
});

test('clipGradNorm matches torch.nn.utils.clip_grad_norm_', () => {
  const c = REF.clip;
  T.tidy(() => {
    const ps = c.shapes.map((s, i) => {
      const p = T.zeros(s).requiresGrad_(true);
      p.grad = T.tensor(c.grads_in[i], { shape: s });
      return p;
    });
    const total = T.optim.clipGradNorm(ps, c.max_norm);
    assert.ok(Math.abs(total.item() - c.total) < 1e-5);
    ps.forEach((p, i) => assertClose(p.grad!.toArray(), c.grads_out[i], 1e-6, `clipped grad ${i}`));
  });
});

test('optimizer state save/load resumes bit-identically; mismatched state is refused', () => {
  const run = REF.adamw;
  const mk = (p: T.Tensor) => new T.optim.AdamW([['p', p]], { lr: 0.01 });
  const a = T.keep(T.tensor(run.p0, { shape: [6, 4] }).requiresGrad_(true));
  const b = T.keep(T.tensor(run.p0, { shape: [6, 4] }).requiresGrad_(true));
  const oa = mk(a);
  const ob = mk(b);
  const step = (p: T.Tensor, o: T.optim.AdamW, i: number) => T.tidy(() => {
    p.grad = T.tensor(run.grads[i], { shape: [6, 4] });
    o.step();
  });
  for (let i = 0; i < 3; i++) step(a, oa, i);
  for (let i = 0; i < 3; i++) step(b, ob, i);
  // "Interrupt" b: copy its state into a brand-new optimizer (as a checkpoint would), then continue.
  const saved = ob.stateDict();
  const copies = new Map([...saved.tensors].map(([k, t]) => [k, T.keep(t.clone())]));
  const ob2 = mk(b);
  ob2.loadStateDict({ meta: JSON.parse(JSON.stringify(saved.meta)), tensors: copies });
  for (let i = 3; i < 5; i++) step(a, oa, i);
  for (let i = 3; i < 5; i++) step(b, ob2, i);
  assert.equal(T.tidy(() => a.eq(b).all().item()), 1, 'bit-identical after resume');
  assert.throws(() => new T.optim.SGD([['p', a]]).loadStateDict(saved as never), /optimizer state is for adamw, this optimizer is sgd/);
  assert.throws(() => new T.optim.AdamW([['q', a]]).loadStateDict(saved), /lists other parameters/);
  for (const t of copies.values()) t.dispose();
  for (const o of [oa, ob, ob2]) o.dispose();
  a.dispose();
  b.dispose();
});

test('parameter groups take their own learning rates (e.g. text encoder vs UNet)', () => {
  T.tidy(() => {
    const p1 = T.ones([2]).requiresGrad_(true);
    const p2 = T.ones([2]).requiresGrad_(true);
    const opt = new T.optim.SGD([['a', p1]], { lr: 1 });
    const adam = new T.optim.AdamW([{ params: [['a', p1]], hyper: { lr: 0.1, weightDecay: 0 } }, { params: [['b', p2]], hyper: { lr: 0.01, weightDecay: 0 } }]);
    p1.grad = T.ones([2]);
    p2.grad = T.ones([2]);
    adam.step();
    // First Adam step moves each parameter by -lr (m/√v = 1).
    assertClose(p1.toArray(), [0.9, 0.9], 1e-6);
    assertClose(p2.toArray(), [0.99, 0.99], 1e-6);
    assert.throws(() => new T.optim.SGD([['a', p1], ['a', p2]]), /listed twice/);
    opt.dispose();
    adam.dispose();
  });
});

test('GradScaler skips non-finite steps and adapts the scale', () => {
  T.tidy(() => {
    const p = T.ones([2]).requiresGrad_(true);
    const opt = new T.optim.SGD([['p', p]], { lr: 1 });
    const s = new T.optim.GradScaler({ initScale: 8, growthInterval: 2 });
    const loss = s.scaleLoss(p.sum());
    loss.backward();
    assert.deepEqual(p.grad!.toArray(), [8, 8]);
    assert.equal(s.unscale(opt), true);
    assert.deepEqual(p.grad!.toArray(), [1, 1]);
    s.update(true);
    p.grad = T.tensor([Infinity, 1]);
    assert.equal(s.unscale(opt), false);
    s.update(false);
    assert.equal(s.scale, 4);
    s.update(true);
    s.update(true);
    assert.equal(s.scale, 8);
  });
});
