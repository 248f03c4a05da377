// The sample check (src/training/sample-check.ts): the detector tells a look it was fitted on from
// plain pictures it never saw, leaves the global RNG where it was, refuses too little data by name;
// a run with the check logs a score at every validation, reads it in the meter, and trains exactly
// as the same run without it; held-out pictures test the detector first, and one that cannot tell
// them from the base model's turns the check off (by name); the check fitted again for a finished run scores its product as the run did.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as T from '../../src/torch/index.ts';
import { detectorInput, drawSamples, fitDetector, prepareSampleCheck, rocAuc, sampleScore, untrustedCheck } from '../../src/training/sample-check.ts';
import { applyLoraFiles, disposeLoraFile } from '../../src/adapters/lora.ts';
import { loadLoraFile } from '../../src/adapters/lora-file.ts';
import { loadStableDiffusion } from '../../src/models/load.ts';
import { resolveTrainConfig } from '../../src/training/config.ts';
import { describeTraining, runSampleCheck, runTraining } from '../../src/training/run.ts';
import { SAMPLE_RANGE, recommendStop } from '../../src/training/meter.ts';
import { encodePng } from '../../src/formats/png.ts';
import { tempDir, writeCaptionedFolder } from '../helpers.ts';
import { writeTinyCheckpoint } from '../sampling/tiny-sd.ts';

let tmp: ReturnType<typeof tempDir>;
let ckpt: string;
before(() => {
  tmp = tempDir();
  ckpt = writeTinyCheckpoint(tmp.dir);
});
after(() => tmp.cleanup());

/** A 64×64 PNG: a square of level w on a ground of level v. */
function square(v: number, w: number): Buffer {
  const px = new Uint8Array(64 * 64 * 3).fill(v);
  for (let y = 16; y < 48; y++) for (let x = 16; x < 48; x++) px.fill(w, (y * 64 + x) * 3, (y * 64 + x) * 3 + 3);
  return encodePng({ width: 64, height: 64, channels: 3, data: px });
}

/** n pictures [n, 3, 32, 32] in [-1, 1]: vertical stripes of period 4 (phase and levels varied), or flat colours. */
function pictures(kind: 'stripes' | 'flat', n: number, seed: number): T.Tensor {
  let r = seed * 7919 + 1;
  const rand = () => ((r = (r * 1103515245 + 12345) % 2147483648) / 2147483648);
  const px = new Float32Array(n * 3 * 32 * 32);
  for (let i = 0; i < n; i++) {
    const phase = Math.floor(rand() * 4);
    for (let c = 0; c < 3; c++) {
      const level = rand() * 1.2 - 0.6;
      for (let y = 0; y < 32; y++) for (let x = 0; x < 32; x++) {
        const wave = kind === 'stripes' ? ((x + phase) % 4 < 2 ? 0.4 : -0.4) : 0;
        px[((i * 3 + c) * 32 + y) * 32 + x] = Math.max(-1, Math.min(1, level + wave));
      }
    }
  }
  return T.fromBuffer(px, 'float32', [n, 3, 32, 32]);
}

test('the detector input: area-downsampled to 64 at most, small pictures left as they are', () => {
  T.tidy(() => {
    assert.deepEqual(detectorInput(T.zeros([2, 3, 128, 128])).shape, [2, 3, 64, 64]);
    assert.deepEqual(detectorInput(T.zeros([1, 3, 64, 96])).shape, [1, 3, 64, 64]);
    assert.deepEqual(detectorInput(T.zeros([3, 3, 32, 32])).shape, [3, 3, 32, 32]);
    // Area averaging: a 2×2 checkerboard at 128 is grey at 64.
    const board = T.fromBuffer(Float32Array.from({ length: 3 * 128 * 128 }, (_, i) => (((i % 128) + Math.floor(i / 128)) % 2 ? 1 : -1)), 'float32', [1, 3, 128, 128]);
    assert.ok(detectorInput(board).abs().max().item() < 1e-6);
  });
});

test('fitted on stripes against flat colours, the detector tells new stripes from new flats, and the global RNG is left where it was', () => {
  const pos = pictures('stripes', 12, 1);
  const neg = pictures('flat', 24, 2);
  const rng = T.getRngState();
  const det = fitDetector(pos, neg, { seed: 3, steps: 100 });
  assert.deepEqual(T.getRngState(), rng, 'fitting draws from its own generators');
  const newStripes = pictures('stripes', 16, 10);
  const newFlats = pictures('flat', 16, 11);
  const mean = (xs: number[]) => xs.reduce((a, x) => a + x, 0) / xs.length;
  const pS = mean(det.probabilities(newStripes));
  const pF = mean(det.probabilities(newFlats));
  assert.ok(pS > 0.8, `unseen stripes score high (${pS})`);
  assert.ok(pF < 0.2, `unseen flat colours score low (${pF})`);
  // The same seed fits the same detector.
  const again = fitDetector(pos, neg, { seed: 3, steps: 100 });
  assert.deepEqual(again.probabilities(newStripes), det.probabilities(newStripes));
  for (const t of [pos, neg, newStripes, newFlats]) t.dispose();
  det.dispose();
  again.dispose();
});

test('too little to fit on, or a count that is no count, is refused by name', () => {
  const one = pictures('stripes', 1, 1);
  const neg = pictures('flat', 4, 2);
  assert.throws(() => fitDetector(one, neg), { name: 'SampleCheckError', message: 'the sample check needs at least 2 training pictures and 2 base-model pictures (got 1 and 4)' });
  const model = loadStableDiffusion(ckpt, { hash: false });
  try {
    const o = { pictures: [one.select(0, 0)], captions: ['a square'], prompts: ['a square'], without: (c: string) => c, width: 64, height: 64 };
    assert.throws(() => prepareSampleCheck(model, { ...o, count: 2.5 }), { name: 'SampleCheckError', message: 'sampleCheck is the number of pictures drawn at each validation, a whole number ≥ 1 (got 2.5)' });
    assert.throws(() => prepareSampleCheck(model, { ...o, captions: [' '], count: 2 }), { name: 'SampleCheckError', message: /needs captioned training pictures: give each picture a caption/ });
  } finally {
    model.dispose();
  }
  one.dispose();
  neg.dispose();
});

test('a LoRA run with the sample check logs a score at each validation, the meter reads it, and the training is the same as without it', async () => {
  const data = writeCaptionedFolder(join(tmp.dir, 'check-data'), [
    { name: 'a', caption: 'a bright square', png: square(30, 220) },
    { name: 'b', caption: 'a dark square', png: square(220, 30) },
    { name: 'c', caption: 'a grey square', png: square(120, 250) },
  ]);
  const run = async (name: string, sampleCheck: number) => {
    const messages: string[] = [];
    const c = resolveTrainConfig('lora', { flags: { model: ckpt, data, out: join(tmp.dir, `${name}.safetensors`), steps: 4, validateEvery: 2, checkpointEvery: 4, resolution: 64, bucketStep: 8, lr: 1e-2, seed: 4, sampleCheck } });
    const { result, workDir } = await runTraining(c, { onMessage: (m) => messages.push(m) });
    return { result, workDir, messages, c };
  };
  const plan = await describeTraining(resolveTrainConfig('lora', { flags: { model: ckpt, data, out: join(tmp.dir, 'plan.safetensors'), steps: 4, validateEvery: 2, resolution: 64, bucketStep: 8, sampleCheck: 3 } }));
  assert.match(plan.text, /sample check: the base model draws up to 48 pictures before the first step, then 3 pictures are drawn at each of 2 validations \(15 sampling steps each\)\./);
  const on = await run('with-check', 3);
  const off = await run('without-check', 0);
  assert.equal(on.result.status, 'done');
  const validated = on.result.records.filter((r) => r.val_loss !== undefined);
  assert.deepEqual(validated.map((r) => r.step), [2, 4]);
  for (const r of validated) assert.ok(r.sample_score! >= 0 && r.sample_score! <= 1, `a share (${r.sample_score})`);
  const logged = readFileSync(join(on.workDir, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(logged.filter((r) => r.sample_score !== undefined).map((r) => r.sample_score), validated.map((r) => r.sample_score));
  assert.match(on.messages.join('\n'), /sample check: a detector fitted on the training pictures against the base model's scores them \d\.\d\d and \d\.\d\d \(no held-out pictures to test it on\); it will score 3 pictures at each validation/);
  // The meter follows the score when it moves over the run (meter.test.ts has both cases on set logs).
  const apart = on.result.records.map((r) => (r.step === 4 && r.sample_score !== undefined ? { ...r, sample_score: r.sample_score + 0.5 } : r));
  assert.equal(recommendStop(apart)!.signal, 'samples', 'the run\'s records, with scores that move, are read by their scores');
  const moved = Math.abs(validated[1].sample_score! - validated[0].sample_score!) >= SAMPLE_RANGE;
  assert.equal(recommendStop(on.result.records)!.signal, moved ? 'samples' : 'held-out-loss', `scores ${validated.map((r) => r.sample_score).join(', ')}`);
  // Same losses, step for step: the check draws from its own generators and leaves the model as it was.
  assert.deepEqual(on.result.records.map((r) => r.loss), off.result.records.map((r) => r.loss));
  assert.equal(off.result.records.some((r) => r.sample_score !== undefined), false);
  assert.equal(recommendStop(off.result.records)!.signal, 'held-out-loss');
  // The check fitted again for the finished run (the benchmark's replay) scores its product as the run did at its last validation.
  const base = loadStableDiffusion(ckpt, { hash: false });
  const check = await runSampleCheck(base, on.c);
  const lora = loadLoraFile(on.c.out!, base);
  const applied = applyLoraFiles(base, [{ lora }]);
  try {
    // Within float rounding: the file's LoRA applied to the loaded model against the trainer's own layers.
    const again = sampleScore(base, check);
    assert.ok(Math.abs(again - validated[1].sample_score!) < 1e-6, `${again} against the logged ${validated[1].sample_score}`);
    assert.deepEqual(drawSamples(base, check).map((g) => g.length), check.prompts.map(() => check.perPrompt));
  } finally {
    applied.remove();
    disposeLoraFile(lora);
    check.detector.dispose();
    base.dispose();
  }
  await assert.rejects(runSampleCheck(base, off.c), { name: 'SampleCheckError', message: 'this run has no sample check (sampleCheck is 0)' });
});

test('rocAuc: the chance a positive scores above a negative, ties counting half', () => {
  assert.equal(rocAuc([0.9, 0.8], [0.1, 0.2]), 1);
  assert.equal(rocAuc([0.1], [0.9]), 0);
  assert.equal(rocAuc([0.5, 0.9], [0.5, 0.1]), (0.5 + 1 + 1 + 1) / 4);
});

test('a detector that cannot tell held-out pictures from the base model\'s turns the check off, saying why and what to do', () => {
  assert.equal(untrustedCheck({}), null, 'nothing to test it on: followed');
  assert.equal(untrustedCheck({ heldOut: { auc: 0.95, pictures: 8 } }), null);
  assert.equal(untrustedCheck({ heldOut: { auc: 0.78125, pictures: 8 } }), "the sample check is off: its detector told the 8 held-out pictures from the base model's in 78 % of pairs, and it needs 90 %; the meter reads the losses instead. More training pictures, or held-out pictures more like them, may make it usable");
});

test('with held-out pictures a run tests its detector on them first, and says how well it told them apart', async () => {
  const data = writeCaptionedFolder(join(tmp.dir, 'gate-data'), [
    { name: 'a', caption: 'a bright square', png: square(30, 220) },
    { name: 'b', caption: 'a dark square', png: square(220, 30) },
    { name: 'c', caption: 'a grey square', png: square(120, 250) },
  ]);
  const held = writeCaptionedFolder(join(tmp.dir, 'gate-held'), [
    { name: 'd', caption: 'a pale square', png: square(40, 200) },
    { name: 'e', caption: 'a deep square', png: square(200, 40) },
  ]);
  const messages: string[] = [];
  const plan = await describeTraining(resolveTrainConfig('lora', { flags: { model: ckpt, data, validationData: held, out: join(tmp.dir, 'gate-plan.safetensors'), steps: 2, validateEvery: 2, resolution: 64, bucketStep: 8, sampleCheck: 2 } }));
  assert.match(plan.text, /\(15 sampling steps each\)\. The detector is first tested on the held-out pictures, against one base-model picture per held-out caption; below an AUC of 0\.9 the check is turned off\./);
  const c = resolveTrainConfig('lora', { flags: { model: ckpt, data, validationData: held, out: join(tmp.dir, 'gate.safetensors'), steps: 2, validateEvery: 2, checkpointEvery: 2, resolution: 64, bucketStep: 8, lr: 1e-2, seed: 4, sampleCheck: 2 } });
  const { result } = await runTraining(c, { onMessage: (m) => messages.push(m) });
  const m = /tells held-out pictures from the base model's in (\d+) % of pairs; it will score 2 pictures at each validation/.exec(messages.join('\n'));
  assert.ok(m && Number(m[1]) >= 90, messages.join('\n'));
  const validated = result.records.filter((r) => r.val_loss !== undefined);
  assert.equal(validated.length, 1);
  assert.ok(validated[0].sample_score! >= 0 && validated[0].sample_score! <= 1);
  // The same test, by the check fitted again: its AUC, over the 2 held-out pictures.
  const base = loadStableDiffusion(ckpt, { hash: false });
  const check = await runSampleCheck(base, c);
  try {
    assert.equal(check.heldOut!.pictures, 2);
    assert.equal(Math.round(check.heldOut!.auc * 100), Number(m![1]));
    assert.equal(untrustedCheck(check), null);
  } finally {
    check.detector.dispose();
    base.dispose();
  }
});
