// Lifetimes: scopes, keep, using, disposal errors, live-tensor counts, zero-copy buffers and mmap.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import * as T from '../../src/torch/index.ts';
import { tempDir } from '../helpers.ts';

const live = () => T.memoryStats().live;

test('tidy disposes temporaries and keeps returned tensors (arrays, objects, Maps)', () => {
  const before = live();
  const r = T.tidy(() => {
    const a = T.ones([4]);
    const b = a.add(1);
    b.mul(2); // temporary
    return { b, list: [a.sub(1)], m: new Map([['x', a.neg()]]) };
  });
  assert.equal(live() - before, 3, 'only the three returned tensors survive');
  assert.deepEqual(r.b.toArray(), [2, 2, 2, 2]);
  for (const t of [r.b, r.list[0], r.m.get('x')!]) t.dispose();
  assert.equal(live(), before);
});

test('nested scopes move results to the parent; keep() escapes all scopes', () => {
  const before = live();
  let kept: T.Tensor | null = null;
  const outer = T.tidy(() => {
    const inner = T.tidy(() => {
      kept = T.keep(T.zeros([2]));
      T.zeros([3]);
      return T.ones([1]);
    });
    assert.equal(inner.disposed, false);
    return inner.add(1);
  });
  assert.equal(live() - before, 2);
  assert.equal(kept!.disposed, false);
  outer.dispose();
  kept!.dispose();
  assert.equal(live(), before);
});

test('an error thrown inside a scope disposes its tensors and propagates unchanged', () => {
  const before = live();
  const err = new Error('boom');
  assert.throws(() => T.tidy(() => {
    T.ones([10]);
    T.tidy(() => { T.ones([5]); throw err; });
  }), (e) => e === err);
  assert.equal(live(), before);
  assert.equal(T.scopeDepth(), 0);
});

test('tidy refuses async functions', () => {
  assert.throws(() => T.tidy(() => Promise.resolve(1) as unknown as number), /synchronous function/);
});

test('using disposes at the end of the block', () => {
  const before = live();
  {
    using t = T.ones([3]);
    assert.equal(t.sum().item(), 3);
  }
  // t.sum() made an untracked temporary outside any scope: one left; the using'd tensor is gone.
  assert.equal(live() - before, 1);
});

test('a disposed tensor gives a clear error, not a crash; double dispose is harmless', () => {
  const t = T.ones([2]);
  t.dispose();
  t.dispose();
  assert.equal(t.disposed, true);
  assert.throws(() => t.add(1), /tensor used after dispose\(\)/);
  assert.throws(() => t.shape, /tensor used after dispose\(\)/);
  assert.equal(String(t), 'Tensor(disposed)');
});

test('wrong shapes, dtypes and devices name the op and the shapes', () => {
  T.tidy(() => {
    assert.throws(() => T.randn([2, 3]).matmul(T.randn([4, 5])), /aten::matmul\(Tensor\[2, 3\] float32 cpu, Tensor\[4, 5\] float32 cpu\): .*2x3 and 4x5/);
    assert.throws(() => T.conv2d(T.randn([1, 3, 8, 8]), T.randn([4, 2, 3, 3])), /aten::conv2d\(Tensor\[1, 3, 8, 8\].*Tensor\[4, 2, 3, 3\]/);
    assert.throws(() => T.ones([2]).add(T.ones([3])), /aten::add\.Tensor.*size of tensor a \(2\) must match/);
    // libtorch 1.13 has no fp16 CPU kernels (storage and casts only); 2.x added them.
    const h = () => T.randn([2, 2], { dtype: 'float16' }).matmul(T.randn([2, 2], { dtype: 'float16' }));
    if (T.torchVersion.startsWith('1.')) assert.throws(h, /aten::matmul\(Tensor\[2, 2\] float16 cpu, .*not implemented for 'Half'/);
    else assert.equal(h().dtype, 'float16');
    assert.throws(() => T.ones([2]).to('cuda:0'), /aten::to\.dtype_layout.*(CUDA|cuda)/);
    assert.throws(() => T.ones([2]).to('nonsense'), /aten::to|device/i);
  });
});

test('live tensor count is unchanged across training steps', () => {
  const vb = T.nn.VarBuilder.init();
  const l = new T.nn.Linear(vb, 8, 8);
  const opt = new T.optim.AdamW(l.namedParameters());
  const x = T.keep(T.randn([4, 8]));
  const step = () => T.tidy(() => {
    const loss = l.forward(x).pow(2).mean();
    loss.backward();
    T.optim.clipGradNorm(l.parameters(), 1);
    opt.step();
    opt.zeroGrad();
  });
  step();
  const after1 = live();
  for (let i = 0; i < 20; i++) step();
  assert.equal(live(), after1);
  x.dispose();
  opt.dispose();
  l.dispose();
});

test('zero-copy tensors over a Buffer share memory; misaligned buffers are refused', () => {
  const buf = Buffer.alloc(16);
  new Float32Array(buf.buffer, buf.byteOffset, 4).set([1, 2, 3, 4]);
  const t = T.fromBuffer(buf, 'float32', [4], { copy: false });
  t.mul_(2);
  assert.deepEqual(Array.from(new Float32Array(buf.buffer, buf.byteOffset, 4)), [2, 4, 6, 8]);
  const c = T.fromBuffer(buf, 'float32', [4]);
  c.mul_(0);
  assert.equal(buf.readFloatLE(0), 2, 'a copy does not share memory');
  t.dispose();
  c.dispose();
  const big = Buffer.alloc(20);
  assert.throws(() => T.fromBuffer(big.subarray(1, 17), 'float32', [4], { copy: false }), /not aligned/);
  assert.throws(() => T.fromBuffer(buf, 'float32', [5]), /16 bytes do not hold 5 float32 values/);
});

test('memory-mapped files give zero-copy tensors and bounds-checked reads', () => {
  const { dir, cleanup } = tempDir();
  try {
    const p = join(dir, 'data.bin');
    const data = Buffer.alloc(64);
    for (let i = 0; i < 16; i++) data.writeFloatLE(i, i * 4);
    writeFileSync(p, data);
    const m = T.mapFile(p);
    assert.equal(m.size, 64);
    const t = m.tensor(16, 'float32', [2, 3]);
    assert.deepEqual(t.toArray(), [4, 5, 6, 7, 8, 9]);
    assert.deepEqual([...m.read(0, 4)], [0, 0, 0, 0]);
    assert.throws(() => m.tensor(48, 'float32', [8]), /runs past the end of the file \(64 bytes\)/);
    assert.throws(() => m.read(60, 8), /past the end of the file/);
    m.close();
    // The tensor keeps the mapping alive after close(); in-place writes are copy-on-write.
    t.add_(1);
    assert.deepEqual(t.toArray(), [5, 6, 7, 8, 9, 10]);
    t.dispose();
    assert.throws(() => T.mapFile(join(dir, 'missing.bin')), /cannot open .*missing\.bin: No such file/);
  } finally {
    cleanup();
  }
});

test('files over 4 GiB map and give tensors past the 4 GiB mark (sparse file)', () => {
  const { dir, cleanup } = tempDir();
  try {
    const p = join(dir, 'big.bin');
    const fd = openSync(p, 'w');
    const at = 4.5 * 2 ** 30; // past Node's 4 GiB Buffer limit
    const payload = Buffer.alloc(16);
    for (let i = 0; i < 4; i++) payload.writeFloatLE(i + 0.5, i * 4);
    writeSync(fd, payload, 0, 16, at);
    closeSync(fd);
    const m = T.mapFile(p);
    assert.equal(m.size, at + 16);
    const t = m.tensor(at, 'float32', [4]);
    assert.deepEqual(t.toArray(), [0.5, 1.5, 2.5, 3.5]);
    t.dispose();
    m.close();
  } finally {
    cleanup();
  }
});

test('a slow BLAS is warned about with the install command; fast ones are not', () => {
  assert.equal(T.blasWarning('/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3'), null);
  assert.match(T.blasWarning('/usr/lib/x86_64-linux-gnu/blas/libblas.so.3') ?? '', /slow BLAS .*apt-get install -y libopenblas0/);
});

test('the thread policy is set at load and the BLAS is reported', () => {
  const r = T.runtime();
  assert.ok(r.numThreads >= 1);
  assert.match(r.torchVersion, /^\d+\.\d+/);
  assert.equal(typeof r.blas, 'string');
});
