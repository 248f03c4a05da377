// The over/underfitting meter's advice (src/training/meter.ts) on logs whose shape is known.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { recommendStop } from '../../src/training/meter.ts';
import type { StepRecord } from '../../src/training/loop.ts';

/** A log with validation every 10 steps: val(step), drift(step) and the rest as given. */
function log(steps: number, val: (s: number) => number, drift?: (s: number) => number, more?: (s: number) => Partial<StepRecord>): StepRecord[] {
  const out: StepRecord[] = [];
  for (let s = 1; s <= steps; s++) {
    const r: StepRecord = { step: s, epoch: 0, loss: 0.1, lr: 1e-4, step_ms: 10 };
    if (s % 10 === 0) {
      r.val_loss = val(s);
      if (drift) r.prior_drift = drift(s);
      Object.assign(r, more?.(s));
    }
    out.push(r);
  }
  return out;
}

test('a held-out loss that falls and rises again: stop near its minimum, verdict overfit', () => {
  const r = recommendStop(log(400, (s) => 0.1 + ((s - 120) / 400) ** 2), { driftWeight: 0, tolerance: 0 })!;
  assert.equal(r.step, 120);
  assert.equal(r.signal, 'held-out-loss');
  assert.equal(r.verdict, 'overfit');
  // The default slack takes the earliest step within 5 % of the range of that minimum: 0.1 + 0.05 · 0.49.
  const slack = recommendStop(log(400, (s) => 0.1 + ((s - 120) / 400) ** 2), { driftWeight: 0, smoothing: 0 })!;
  assert.equal(slack.step, 60);
  assert.match(r.message, /^stop at step \d+: after it the held-out pictures gain little \(the run went on to step 400\); without a concept word the held-out loss is a weak guide to a style: compare the snapshots' samples, or train with sampleCheck$/);
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

test('drift is weighed against the held-out loss: a tiny first drift (the adapter not yet moved) does not pull the stop back to it', () => {
  // Measured with EMA on the toy world: the first validation's drift is a third of the later
  // plateau's, which as growth over that first value (+200 %) outweighed the whole concept curve.
  const records = log(400, () => 0.05, (s) => (s <= 10 ? 0.005 : 0.015), (s) => ({ sample_score: 0.5 + 0.4 * (s / 400) }));
  const r = recommendStop(records, { driftWeight: 1, tolerance: 0, smoothing: 0 })!;
  assert.equal(r.signal, 'samples');
  assert.equal(r.step, 400);
  assert.ok(Math.abs(r.points.at(-1)!.drift - 0.2) < 1e-9, `drift as a share of the held-out loss: ${r.points.at(-1)!.drift}`);
  assert.equal(r.points[0].drift, 0);
});

test('with a concept word the gap decides: the pictures\' loss rising (memorised) does not stop a word still being learnt', () => {
  const r = recommendStop(log(400, (s) => 0.05 + s * 1e-4, undefined, (s) => ({ concept_gap: 0.01 * (1 - Math.exp(-s / 150)) })), { driftWeight: 0, tolerance: 0 })!;
  assert.equal(r.signal, 'concept-gap');
  assert.equal(r.step, 400);
  assert.equal(r.verdict, 'underfit');
  assert.match(r.message, /the concept word still improved at step 400: train longer/);
  assert.equal(r.points[r.points.length - 1].progress, 1);
});

test('without a word, a style is read at the low timesteps: their loss falls while the whole held-out loss rises', () => {
  const byT = (s: number) => [0.2 - s * 1e-4, 0.08, 0.05 + s * 2e-4, 0.03 + s * 2e-4, 0.02 + s * 2e-4];
  const records = log(400, (s) => byT(s).reduce((a, x) => a + x) / 5, undefined, (s) => ({ val_by_t: byT(s) }));
  assert.equal(recommendStop(records, { driftWeight: 0, tolerance: 0, detailTimesteps: 1 })!.step, 400);
  assert.equal(recommendStop(records, { driftWeight: 0, tolerance: 0, detailTimesteps: 5 })!.step, 10);
});

test('a log without validation points has no recommendation', () => {
  assert.equal(recommendStop(log(50, () => NaN)), null);
  assert.equal(recommendStop([]), null);
});

test('with the sample check logged, the meter follows it: a score that peaks and falls beats a gap still rising', () => {
  const score = (s: number) => 0.2 + 0.6 * Math.exp(-(((s - 150) / 80) ** 2));
  const r = recommendStop(log(400, () => 0.1, undefined, (s) => ({ sample_score: score(s), concept_gap: s * 1e-5 })), { driftWeight: 0, tolerance: 0, smoothing: 0 })!;
  assert.equal(r.signal, 'samples');
  assert.equal(r.step, 150);
  assert.equal(r.verdict, 'overfit');
  assert.equal(r.message, 'stop at step 150: after it the pictures of the sample check gain little (the run went on to step 400)');
  // A sample check that calls every snapshot the same (a saturated detector) is passed over: the gap decides.
  const gapPeak = (s: number) => 0.05 * Math.exp(-(((s - 250) / 60) ** 2));
  const flat = recommendStop(log(400, () => 0.1, undefined, (s) => ({ sample_score: 0.99 + (s % 20 === 0 ? 0.01 : 0), concept_gap: gapPeak(s) })), { driftWeight: 0, tolerance: 0, smoothing: 0 })!;
  assert.equal(flat.signal, 'concept-gap');
  assert.equal(flat.step, 250);
  // Without it, a style's advice says the loss is a weak guide and names the check.
  const style = recommendStop(log(400, (s) => 0.1 + s * 1e-5))!;
  assert.match(style.message, /compare the snapshots' samples, or train with sampleCheck$/);
});
