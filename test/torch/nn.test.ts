// Modules: names are module paths, building from a checkpoint checks every key and shape.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as T from '../../src/torch/index.ts';

const { nn } = T;

class Block extends nn.Module {
  readonly norm: T.nn.GroupNorm;
  readonly proj: T.nn.Conv2d;
  readonly layers: T.nn.ModuleList<T.nn.Linear>;
  constructor(vb: T.nn.VarBuilder) {
    super();
    this.norm = this.child(vb, 'norm', (v) => new nn.GroupNorm(v, 2, 4));
    this.proj = this.child(vb, 'proj', (v) => new nn.Conv2d(v, 4, 4, 1));
    this.layers = this.child(vb, 'layers', (v) => new nn.ModuleList([0, 1].map((i) => new nn.Linear(v.pp(i), 4, 4, { bias: i === 0 }))));
  }
}

test('parameter names are dotted module paths', () => {
  const b = new Block(nn.VarBuilder.init());
  assert.deepEqual([...b.stateDict().keys()], ['norm.weight', 'norm.bias', 'proj.weight', 'proj.bias', 'layers.0.weight', 'layers.0.bias', 'layers.1.weight']);
  assert.equal(b.numParameters(), 4 + 4 + 16 + 4 + 16 + 4 + 16);
  assert.ok(b.parameters().every((p) => p.requiresGrad));
  b.dispose();
});

test('PyTorch default initialisation: bounds of kaiming_uniform(a=√5), ones/zeros for norms', () => {
  T.manualSeed(0);
  const l = new nn.Linear(nn.VarBuilder.init(), 100, 50);
  const bound = 1 / Math.sqrt(100);
  assert.ok(T.tidy(() => l.weight.abs().max().item()) <= bound);
  assert.ok(T.tidy(() => l.weight.abs().max().item()) > bound * 0.9);
  const g = new nn.GroupNorm(nn.VarBuilder.init(), 2, 4);
  assert.deepEqual(g.weight!.toArray(), [1, 1, 1, 1]);
  assert.deepEqual(g.bias!.toArray(), [0, 0, 0, 0]);
  l.dispose();
  g.dispose();
});

test('building from a checkpoint takes every tensor by key; mismatches list all keys', () => {
  const src = new Block(nn.VarBuilder.init());
  const sd = src.stateDict();
  const vb = nn.VarBuilder.from(sd);
  const b = new Block(vb);
  vb.finish();
  for (const [k, t] of b.stateDict()) assert.equal(T.tidy(() => t.eq(sd.get(k)!).all().item()), 1, k);

  const partial = new Map(sd);
  partial.delete('proj.bias');
  const bad = T.zeros([3, 4]);
  partial.set('layers.1.weight', bad);
  const extra = T.zeros([1]);
  partial.set('layers.7.weight', extra);
  const vb2 = nn.VarBuilder.from(partial);
  const b2 = new Block(vb2);
  assert.throws(() => vb2.finish(), (e: Error) => {
    assert.ok(e instanceof nn.CheckpointMismatchError);
    assert.match(e.message, /missing 1 key\(s\): proj\.bias/);
    assert.match(e.message, /unexpected 1 key\(s\): layers\.7\.weight/);
    assert.match(e.message, /layers\.1\.weight: expected shape \[4, 4\], the checkpoint has \[3, 4\]/);
    return true;
  });
  for (const m of [src, b, b2]) m.dispose();
  bad.dispose();
  extra.dispose();
});

test('loadStateDict copies values in place and checks shapes and keys', () => {
  const a = new Block(nn.VarBuilder.init());
  const b = new Block(nn.VarBuilder.init());
  const w = b.proj.weight;
  b.loadStateDict(a.stateDict());
  assert.equal(b.proj.weight, w, 'identity kept');
  assert.equal(T.tidy(() => b.proj.weight.eq(a.proj.weight).all().item()), 1);
  const wrong = new Map(a.stateDict());
  const z = T.zeros([2]);
  wrong.set('norm.weight', z);
  assert.throws(() => b.loadStateDict(wrong), /norm\.weight: expected shape \[4\], the checkpoint has \[2\]/);
  const missing = new Map(a.stateDict());
  missing.delete('norm.bias');
  assert.throws(() => b.loadStateDict(missing), /missing 1 key\(s\): norm\.bias/);
  assert.deepEqual(b.loadStateDict(missing, { strict: false }).missing, ['norm.bias']);
  z.dispose();
  a.dispose();
  b.dispose();
});

test('replaceModule swaps a child by path (how adapters wrap layers)', () => {
  const b = new Block(nn.VarBuilder.init());
  const repl = new nn.Linear(nn.VarBuilder.init(), 4, 4, { bias: false });
  const old = b.replaceModule('layers.0', repl);
  assert.ok(old instanceof nn.Linear);
  assert.equal(b.layers.at(0), repl);
  assert.equal(b.getModule('layers.0'), repl);
  assert.ok(!b.stateDict().has('layers.0.bias'));
  assert.throws(() => b.replaceModule('nope.0', repl), /no module at nope\.0/);
  old.dispose();
  b.dispose();
});

test('module.to() casts in place; eval() and train() reach every child; dropout obeys it', () => {
  const b = new Block(nn.VarBuilder.init());
  const w = b.proj.weight;
  b.to('float64');
  assert.equal(b.proj.weight.dtype, 'float64');
  assert.equal(b.proj.weight, w);
  b.eval();
  assert.ok([...b.namedModules()].every(([, m]) => !m.training));
  const d = new nn.Dropout(0.5);
  d.eval();
  T.tidy(() => {
    const x = T.ones([100]);
    assert.equal(d.forward(x).sum().item(), 100);
    d.train();
    const y = d.forward(x);
    assert.ok(y.eq(0).sum().item() > 10);
  });
  b.dispose();
});
