// The over/underfitting meter's advice (src/training/meter.ts) on logs whose shape is known.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { recommendStop } from '../../src/training/meter.ts';
import type { StepRecord } from '../../src/training/loop.ts';

/** A log with validation every 10 steps: val(step) and drift(step) as given. */
function log(steps: number, val: (s: number) => number, drift?: (s: number) => number): StepRecord[] {
  const out: StepRecord[] = [];
  for (let s = 1; s <= steps; s++) {
    const r: StepRecord = { step: s, epoch: 0, loss: 0.1, lr: 1e-4, step_ms: 10 };
    if (s % 10 === 0) {
      r.val_loss = val(s);
      if (drift) r.prior_drift = drift(s);
    }
    out.push(r);
  }
  return out;
}

test('a held-out loss that falls and rises again: stop near its minimum, verdict overfit', () => {
  const r = recommendStop(log(400, (s) => 0.1 + ((s - 120) / 400) ** 2), { driftWeight: 0 })!;
  assert.ok(Math.abs(r.step - 120) <= 40, `recommended ${r.step}, the minimum is at 120`);
  assert.equal(r.verdict, 'overfit');
  assert.match(r.message, /stop at step \d+/);
  assert.equal(r.points.length, 40);
});

test('a loss still falling at the end: underfit, train longer', () => {
  const r = recommendStop(log(200, (s) => 0.2 - s * 1e-4), { driftWeight: 0 })!;
  assert.equal(r.verdict, 'underfit');
  assert.equal(r.bestValStep, 200);
  assert.match(r.message, /train longer/);
});

test('prior drift that keeps growing moves the stop earlier than the held-out loss alone', () => {
  const val = (s: number) => 0.1 + 0.05 * Math.exp(-s / 60);
  const alone = recommendStop(log(400, val), { driftWeight: 0 })!;
  const withDrift = recommendStop(log(400, val, (s) => 1e-4 * s), { driftWeight: 1 })!;
  assert.ok(withDrift.step < alone.step, `with drift ${withDrift.step}, without ${alone.step}`);
});

test('a log without validation points has no recommendation', () => {
  assert.equal(recommendStop(log(50, () => NaN)), null);
  assert.equal(recommendStop([]), null);
});
