// Access to ../shared/fixtures/schedulers (fixtures README §5) for the sampling tests.
import { readFileSync } from 'node:fs';
import assert from 'node:assert/strict';
import * as T from '../../src/torch/index.ts';
import { SafetensorsFile } from '../../src/formats/safetensors.ts';
import { parsePythonJson } from '../../src/sampling/schedule.ts';
import { fixture } from '../helpers.ts';

/** The fixtures' JSON (Python's json: bare -Infinity in DPM's lambda_min_clipped). */
export function schedulersJson<J = any>(name: string): J {
  return parsePythonJson(readFileSync(fixture('schedulers', name), 'utf8')) as J;
}

let file: SafetensorsFile | null = null;
/** A tensor from schedulers.safetensors (caller owns it). */
export function ref(key: string): T.Tensor {
  file ??= SafetensorsFile.open(fixture('schedulers', 'schedulers.safetensors'));
  return file.get(key);
}
export function hasRef(key: string): boolean {
  file ??= SafetensorsFile.open(fixture('schedulers', 'schedulers.safetensors'));
  return file.has(key);
}
/** Values of a fixture tensor as numbers. */
export function refArray(key: string): number[] {
  const t = ref(key);
  try {
    return t.toArray();
  } finally {
    t.dispose();
  }
}

/**
 * Relative error as the fixture README states tolerances for trajectories: max |a − b| over the
 * reference's max |b| (an element-wise ratio is meaningless next to zero).
 */
export function relError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  assert.equal(actual.length, expected.length, 'length mismatch');
  let d = 0;
  let m = 0;
  for (let i = 0; i < expected.length; i++) {
    d = Math.max(d, Math.abs(actual[i] - expected[i]));
    m = Math.max(m, Math.abs(expected[i]));
  }
  return m === 0 ? d : d / m;
}

export function assertRel(actual: ArrayLike<number> | T.Tensor, expected: ArrayLike<number> | T.Tensor, rtol: number, what: string): number {
  const a = actual instanceof T.Tensor ? actual.toArray() : actual;
  const b = expected instanceof T.Tensor ? expected.toArray() : expected;
  const e = relError(a, b);
  assert.ok(e <= rtol, `${what}: relative error ${e.toExponential(3)} exceeds ${rtol}`);
  return e;
}

/** Element-wise |a − b| ≤ rtol·|b| (scalars and schedules, which have no zeros to trip on). */
export function assertEachRel(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol: number, what: string): number {
  assert.equal(actual.length, expected.length, `${what}: length ${actual.length}, expected ${expected.length}`);
  let worst = 0;
  for (let i = 0; i < expected.length; i++) {
    const e = Math.abs(actual[i] - expected[i]);
    const r = expected[i] === 0 ? e : e / Math.abs(expected[i]);
    assert.ok(r <= rtol, `${what}[${i}]: ${actual[i]} vs ${expected[i]} (relative error ${r.toExponential(3)} > ${rtol})`);
    worst = Math.max(worst, r);
  }
  return worst;
}

/**
 * The fixtures' fake denoiser (README §5): 0.1·input + (0.2·cos(t/100))·pattern, in float32
 * tensor ops with the scalar coefficient computed in float64.
 */
export function fakeModel(pattern: T.Tensor): (x: T.Tensor, t: number) => T.Tensor {
  return (x, t) => T.tidy(() => x.mul(0.1).add(pattern.mul(0.2 * Math.cos(t / 100))));
}
