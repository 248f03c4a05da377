// Device paths. On a CPU-only libtorch (CI): CUDA requests fail clearly and autocast is a no-op.
// On a GPU machine (SDTUNE_TEST_DEVICE=cuda): mixed precision, loss scaling and training on CUDA.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as T from '../../src/torch/index.ts';
import { TinyNet, makeBatch } from '../../src/torch/examples.ts';
import { DEVICE } from '../helpers.ts';

test(`runtime reports the devices this libtorch has (testing on ${DEVICE})`, () => {
  const rt = T.runtime();
  assert.equal(rt.cuda, T.cudaAvailable());
  if (DEVICE === 'cuda') assert.ok(rt.cuda && rt.cudaDevices >= 1, 'SDTUNE_TEST_DEVICE=cuda needs a CUDA build of libtorch');
  if (!rt.cuda) assert.equal(rt.cudaDevices, 0);
});

test('autocast: fp16 matmuls on CUDA, a no-op (fp32) on the CPU', () => {
  T.tidy(() => {
    const a = T.randn([8, 8], { device: DEVICE });
    const out = T.autocast('float16', () => a.matmul(a));
    if (T.cudaAvailable() && DEVICE !== 'cpu') {
      assert.equal(out.dtype, 'float16');
      // reductions stay fp32 under autocast
      assert.equal(T.autocast('float16', () => a.softmax(-1)).dtype, 'float32');
      assert.equal(T.autocast('bfloat16', () => a.matmul(a)).dtype, 'bfloat16');
    } else {
      assert.equal(out.dtype, 'float32');
    }
    // the scope is closed again
    assert.equal(a.matmul(a).dtype, 'float32');
  });
});

test(`training on ${DEVICE} (fp16 + loss scaling on CUDA) drives the loss down`, () => {
  T.manualSeed(0);
  const net = new TinyNet(T.nn.VarBuilder.init({ device: DEVICE }), { channels: 16, heads: 2 });
  const opt = new T.optim.AdamW(net.namedParameters(), { lr: 3e-3, weightDecay: 0 });
  const scaler = new T.optim.GradScaler({ enabled: DEVICE !== 'cpu' });
  const batch = makeBatch(8, 8);
  const x = T.keep(batch.x.to(DEVICE));
  const y = T.keep(batch.y.to(DEVICE));
  batch.x.dispose();
  batch.y.dispose();
  const losses: number[] = [];
  for (let i = 0; i < 80; i++) {
    losses.push(T.tidy(() => {
      const loss = DEVICE === 'cpu' ? T.mseLoss(net.forward(x), y) : T.autocast('float16', () => T.mseLoss(net.forward(x).float(), y));
      scaler.scaleLoss(loss).backward();
      const finite = scaler.unscale(opt);
      if (finite) opt.step();
      scaler.update(finite);
      opt.zeroGrad();
      return loss.item(); // .item(): waits for the device
    }));
  }
  assert.ok(losses[79] < losses[0] * 0.3, `loss ${losses[0]} → ${losses[79]}`);
  assert.equal(net.convIn.weight.device.startsWith(DEVICE), true);
  for (const t of [x, y]) t.dispose();
  opt.dispose();
  net.dispose();
});

test('tensors move between devices with values intact, or a clear error without CUDA', () => {
  T.tidy(() => {
    const a = T.tensor([1, 2, 3]);
    if (T.cudaAvailable()) {
      const g = a.to('cuda');
      assert.match(g.device, /^cuda/);
      assert.deepEqual(g.mul(2).toArray(), [2, 4, 6]);
      const gen = new T.Generator(42, 'cuda');
      const r1 = T.randn([4], { device: 'cuda', generator: gen });
      const gen2 = new T.Generator(42, 'cuda');
      const r2 = T.randn([4], { device: 'cuda', generator: gen2 });
      assert.deepEqual(r1.toArray(), r2.toArray(), 'seeded CUDA generators are deterministic');
    } else {
      assert.throws(() => a.to('cuda'), /aten::to\.dtype_layout.*not (compiled|linked) with (support for )?cuda/i);
      assert.throws(() => T.zeros([2], { device: 'cuda' }), /aten::zeros/);
    }
  });
});
