// A small conv + attention network trained to a loss threshold, with flat tensor counts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as T from '../../src/torch/index.ts';
import { TinyNet, makeBatch } from '../../src/torch/examples.ts';

test('a conv + attention network learns a target (loss falls below threshold)', () => {
  T.manualSeed(0);
  const net = new TinyNet(T.nn.VarBuilder.init(), { channels: 16, heads: 2 });
  const opt = new T.optim.AdamW(net.namedParameters(), { lr: 3e-3, weightDecay: 0 });
  const { x, y } = makeBatch(8, 8);
  const first = T.tidy(() => T.mseLoss(net.forward(x), y).item());
  let last = first;
  let liveAfterFirst = -1;
  for (let i = 0; i < 150; i++) {
    last = T.tidy(() => {
      const loss = T.mseLoss(net.forward(x), y);
      loss.backward();
      opt.step();
      opt.zeroGrad();
      return loss.item(); // .item(): waits for the device
    });
    if (i === 0) liveAfterFirst = T.memoryStats().live;
  }
  assert.equal(T.memoryStats().live, liveAfterFirst, 'no tensor leaked across steps');
  assert.ok(last < first * 0.1, `loss fell from ${first} to ${last}`);
  assert.ok(last < 0.05, `final loss ${last}`);
  for (const t of [x, y]) t.dispose();
  opt.dispose();
  net.dispose();
});
