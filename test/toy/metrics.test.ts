// The fine-tuning metrics (src/toy/metrics.ts) on verdicts whose truth is set by hand: a fake judge
// reads the picture's first byte as an index into a table of verdicts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { attributeScore, classProbes, conceptRate, runProbes, styleProbes, styleScores, subjectProbes, subjectScores, type ProbeResult } from '../../src/toy/metrics.ts';
import type { ToyJudge, Verdict } from '../../src/toy/judge.ts';
import type { RgbImage } from '../../src/formats/png.ts';

const V = (o: Partial<Verdict>): Verdict => ({ shape: 'heart', colour: 'red', size: 'large', position: 'center', background: 'gray', pattern: 'plain', subject: false, style: false, pSubject: 0, pStyle: 0, ...o });

function fakeJudge(table: Verdict[]): ToyJudge {
  return { judge: (ims: readonly RgbImage[]) => ims.map((im) => table[im.data[0]]) } as unknown as ToyJudge;
}
const pic = (i: number): RgbImage => ({ width: 1, height: 1, channels: 3, data: Uint8Array.of(i, 0, 0) });

test('probes read their expectations from the prompt', () => {
  const s = subjectProbes();
  assert.equal(s.length, 5);
  assert.deepEqual(s[2].expect, { shape: 'heart', size: 'large', position: 'left', background: 'cyan', pattern: 'plain', subject: true });
  assert.ok(s.every((p) => p.expect.size === 'large' && p.expect.colour === undefined && p.expect.background !== undefined), 'whole captions, the colour left to the word');
  const c = classProbes(3);
  assert.equal(c.length, 5);
  assert.ok(c.every((p) => p.count === 3 && p.expect.colour !== undefined && p.expect.position !== undefined), 'every class probe is a whole caption');
  assert.deepEqual(new Set(c.map((p) => p.expect.colour)).size, 5);
  assert.deepEqual(c[1].expect, { shape: 'heart', colour: 'blue', size: 'large', position: 'center', background: 'black', pattern: 'plain', subject: false, style: false });
  const st = styleProbes(4, 2);
  assert.equal(st.length, 4);
  assert.ok(st.every((p) => p.expect.style === true && p.expect.shape !== undefined && p.count === 2));
  assert.deepEqual(st.map((p) => p.expect.size), ['small', 'large', 'small', 'large'], 'small and large shapes in turn');
  assert.deepEqual(styleProbes(6, 1).map((p) => p.expect.shape), ['circle', 'square', 'triangle', 'star', 'heart', 'circle'], 'every shape in turn');
  assert.deepEqual(styleProbes(4, 2), st, 'the style probes are the same on every call');
});

test('runProbes renders each probe with its own seed; the scores count what the verdicts say', () => {
  const table = [V({ subject: true, background: 'cyan', position: 'left' }), V({ subject: false, background: 'cyan', position: 'left' }), V({ subject: true, background: 'black', position: 'left' })];
  const seeds: number[] = [];
  const probes = [subjectProbes()[2]];
  const res = runProbes((_p, n, seed) => {
    seeds.push(seed);
    return [0, 1, 2].slice(0, n).map(pic);
  }, fakeJudge(table), [{ ...probes[0], count: 3 }], 5);
  assert.deepEqual(seeds, [5]);
  assert.equal(conceptRate(res, 'subject'), 2 / 3);
  // expectations: shape, size, position, background, pattern → 5 checks; the third misses background
  assert.ok(Math.abs(attributeScore(res) - (1 + 1 + 4 / 5) / 3) < 1e-12);
});

test('prior preservation is the class score over the base model, capped at 1', () => {
  const klassProbe = classProbes(1)[0]; // "a large red heart on the left, on a gray background"
  const mk = (verdicts: Verdict[]): ProbeResult[] => [{ probe: klassProbe, images: verdicts.map((_, i) => pic(i)), verdicts }];
  const ok = V({ position: 'left' });
  const base = mk([ok, ok, ok, V({ position: 'left', size: 'small' })]);
  const dotted = mk([V({ position: 'left', subject: true }), ok, V({ position: 'left', colour: 'blue' }), ok]);
  // checks per picture: shape, colour, size, position, background, pattern, subject, style (8)
  const s = subjectScores([], dotted, base);
  assert.ok(Math.abs(s.class_score - (7 / 8 + 1 + 7 / 8 + 1) / 4) < 1e-12);
  assert.ok(Math.abs(s.prior_preservation - s.class_score / ((3 + 7 / 8) / 4)) < 1e-12);
  assert.equal(subjectScores([], base, dotted).prior_preservation, 1, 'better than the base counts as 1');
});

test('style scores: the style rate, and the attributes kept relative to the base', () => {
  const p = styleProbes(1, 2)[0];
  const e = p.expect;
  const right = V({ ...e, style: true } as Partial<Verdict>);
  const wrongShape = V({ ...e, shape: e.shape === 'star' ? 'circle' : 'star', style: true } as Partial<Verdict>);
  const base: ProbeResult[] = [{ probe: p, images: [pic(0), pic(1)], verdicts: [V({ ...e, style: false } as Partial<Verdict>), V({ ...e, style: false } as Partial<Verdict>)] }];
  const styled: ProbeResult[] = [{ probe: p, images: [pic(0), pic(1)], verdicts: [right, wrongShape] }];
  const s = styleScores(styled, base);
  assert.equal(s.concept_fidelity, 1);
  assert.ok(Math.abs(s.prompt_fidelity - (1 + 5 / 6) / 2) < 1e-12);
  assert.ok(Math.abs(s.prior_preservation - s.prompt_fidelity) < 1e-12);
});
