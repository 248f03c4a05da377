// The toy world's judge (src/toy/judge.ts): the committed one reads unseen pictures as its
// metadata says it does, a short training learns, and bad input is refused by name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { loadJudge, judgeSet, measureJudge, trainJudge, saveJudge, JudgeError } from '../../src/toy/judge.ts';
import { loadStableDiffusion } from '../../src/models/load.ts';
import { TOY_JUDGE_PATH, TOY_MODEL_PATH } from '../../src/toy/model.ts';
import { renderScene, applyStyle } from '../../src/toy/world.ts';
import { saveSafetensors } from '../../src/formats/safetensors.ts';
import * as T from '../../src/torch/index.ts';
import { tempDir } from '../helpers.ts';

test('the committed judge reads 400 unseen pictures, clean and VAE-decoded, as well as its metadata says', () => {
  const { judge, accuracy } = loadJudge(TOY_JUDGE_PATH);
  const model = loadStableDiffusion(TOY_MODEL_PATH, { hash: false });
  try {
    assert.ok(accuracy.mean >= 0.95, `recorded accuracy ${accuracy.mean}`);
    const got = measureJudge(judge, judgeSet(31337, 0, 400, model.vae));
    console.log(`# judge on 400 unseen pictures: mean ${got.mean.toFixed(3)}; decoded ${JSON.stringify(got.decoded)}`);
    // Tolerance: 400 pictures against the recorded 2,000 — a few points of sampling noise.
    assert.ok(got.mean >= accuracy.mean - 0.03, `mean accuracy ${got.mean} vs recorded ${accuracy.mean}`);
    for (const h of ['subject', 'style', 'colour', 'background'] as const) {
      assert.ok(got.decoded[h] >= 0.9, `${h} on decoded pictures: ${got.decoded[h]}`);
    }
    // Two pictures whose truth is plain to see.
    const [a, b] = judge.judge([
      renderScene({ shape: 'heart', colour: 'red', size: 'large', position: 'center', background: 'gray', pattern: 'plain' }, { subject: true }),
      applyStyle({ shape: 'star', colour: 'yellow', size: 'large', position: 'left', background: 'black', pattern: 'striped' }, 'outline'),
    ]);
    assert.deepEqual([a.shape, a.colour, a.background, a.subject, a.style], ['heart', 'red', 'gray', true, false]);
    assert.deepEqual([b.shape, b.colour, b.position, b.pattern, b.subject, b.style], ['star', 'yellow', 'left', 'striped', false, true]);
  } finally {
    judge.dispose();
    model.dispose();
  }
});

test('a short training learns colours and backgrounds; saved and loaded, it judges the same', () => {
  const { dir, cleanup } = tempDir();
  try {
    const r = trainJudge({ steps: 80, pool: 1500, vae: null, seed: 3 });
    assert.ok(r.accuracy.clean.colour > 0.8 && r.accuracy.clean.background > 0.8, JSON.stringify(r.accuracy.clean));
    const file = join(dir, 'judge.safetensors');
    saveJudge(r.judge, file, { accuracy: r.accuracy, steps: 80, seed: 3 });
    const back = loadJudge(file);
    const set = judgeSet(5, 0, 64, null);
    // fp16 weights: the verdicts may differ on a borderline picture or two
    const key = (v: { colour: string; background: string }) => `${v.colour}/${v.background}`;
    const after = back.judge.judge(set.images).map(key);
    const same = r.judge.judge(set.images).map(key).filter((k, i) => k === after[i]).length;
    assert.ok(same >= 62, `${same}/64 verdicts kept through fp16`);
    assert.deepEqual([back.accuracy.clean, back.accuracy.mean, back.accuracy.n], [r.accuracy.clean, r.accuracy.mean, r.accuracy.n]);
    r.judge.dispose();
    back.judge.dispose();
  } finally {
    cleanup();
  }
});

test('bad input: a file that is not a judge, pictures of the wrong size, a zero-step training', () => {
  const { dir, cleanup } = tempDir();
  try {
    const file = join(dir, 'other.safetensors');
    const t = T.zeros([2]);
    saveSafetensors(file, new Map([['x', t]]));
    t.dispose();
    assert.throws(() => loadJudge(file), /other\.safetensors: not a toy-world judge.*sdtune toy judge/);
    writeFileSync(join(dir, 'junk.safetensors'), 'not a file at all');
    assert.throws(() => loadJudge(join(dir, 'junk.safetensors')), /junk\.safetensors/);
    const { judge } = loadJudge(TOY_JUDGE_PATH);
    assert.throws(() => judge.judge([{ width: 64, height: 64, channels: 3, data: new Uint8Array(64 * 64 * 3) }]), (e: Error) => e instanceof JudgeError && /32×32 RGB.*not 64×64×3/.test(e.message));
    judge.dispose();
    assert.throws(() => trainJudge({ steps: 0, vae: null }), /whole number of steps ≥ 1/);
  } finally {
    cleanup();
  }
});
