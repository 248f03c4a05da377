// Learning-rate schedules: closed forms at chosen steps (diffusers get_scheduler formulas) and
// A1111's piecewise syntax, with its errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lrSchedule, parsePiecewise } from '../../src/training/lr.ts';

const close = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) < 1e-12, `${what}: ${a} vs ${b}`);

test('named schedules follow diffusers get_scheduler', () => {
  const c = lrSchedule({ schedule: 'constant', lr: 1e-4, totalSteps: 100 });
  assert.equal(c(0), 1e-4);
  assert.equal(c(99), 1e-4);
  const w = lrSchedule({ schedule: 'constant_with_warmup', lr: 1e-4, warmupSteps: 10, totalSteps: 100 });
  close(w(0), 0, 'warm-up start');
  close(w(5), 5e-5, 'half-way through warm-up');
  close(w(10), 1e-4, 'after warm-up');
  const l = lrSchedule({ schedule: 'linear', lr: 1e-3, warmupSteps: 10, totalSteps: 110 });
  close(l(5), 5e-4, 'linear warm-up');
  close(l(10), 1e-3, 'linear peak');
  close(l(60), 5e-4, 'linear half-way down');
  close(l(110), 0, 'linear end');
  const cos = lrSchedule({ schedule: 'cosine', lr: 2e-3, warmupSteps: 0, totalSteps: 100 });
  close(cos(0), 2e-3, 'cosine start');
  close(cos(50), 1e-3, 'cosine middle');
  close(cos(25), 2e-3 * 0.5 * (1 + Math.cos(Math.PI / 4)), 'cosine quarter');
  close(cos(100), 0, 'cosine end');
});

test("A1111's piecewise syntax: each rate holds until its step", () => {
  assert.deepEqual(parsePiecewise('0.005:100, 1e-3:1000, 1e-5', 5000), [
    { rate: 0.005, until: 100 },
    { rate: 0.001, until: 1000 },
    { rate: 1e-5, until: 5000 },
  ]);
  const f = lrSchedule({ schedule: '0.005:100, 1e-3:1000, 1e-5', lr: 0, totalSteps: 5000 });
  assert.deepEqual([f(0), f(99), f(100), f(999), f(1000), f(4999)], [0.005, 0.005, 0.001, 0.001, 1e-5, 1e-5]);
  assert.equal(lrSchedule({ schedule: '0.01', lr: 0, totalSteps: 10 })(9), 0.01);
  assert.throws(() => parsePiecewise('0.005:100, 1e-3, 1e-5', 10), /"1e-3": only the last piece may leave out its step/);
  assert.throws(() => parsePiecewise('0.005:100, 1e-3:50', 1000), /steps must increase \(50 follows 100\)/);
  assert.throws(() => parsePiecewise('fast:100', 1000), /"fast:100": expected "rate" or "rate:step"/);
  assert.throws(() => parsePiecewise('0.1:-3', 1000), /the step must be a positive whole number/);
  assert.throws(() => lrSchedule({ schedule: 'constant', lr: NaN, totalSteps: 10 }), /learning rate must be a number/);
  assert.throws(() => lrSchedule({ schedule: 'constant', lr: 1, totalSteps: 0 }), /total steps must be at least 1/);
});
