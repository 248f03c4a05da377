// The shared training loop on the tiny model (test/sampling/tiny-sd.ts) with textual inversion
// and DreamBooth: the loss on held-out noise goes down, products re-load with their keys and
// values, an interrupted-and-resumed run ends bit-identical, NaN stops the run, nothing leaks; an
// embedding whose word is in no caption is refused before training, in the dry run too.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as T from '../../src/torch/index.ts';
import { loadStableDiffusion, type StableDiffusion } from '../../src/models/load.ts';
import { loadEmbeddingFile } from '../../src/formats/embedding-file.ts';
import { disposeEmbedding } from '../../src/formats/layouts/index.ts';
import { SafetensorsFile } from '../../src/formats/safetensors.ts';
import { Trainer, emaDecayAt, withoutWord, type TrainBatch, type TrainData } from '../../src/training/loop.ts';
import { EmbeddingTechnique } from '../../src/training/techniques/embedding.ts';
import { DreamBoothTechnique } from '../../src/training/techniques/dreambooth.ts';
import { HypernetworkTechnique } from '../../src/training/techniques/hypernetwork.ts';
import { Hypernetwork } from '../../src/adapters/hypernetwork.ts';
import { LoraTechnique } from '../../src/training/techniques/lora.ts';
import { applyLoraFiles, disposeLoraFile } from '../../src/adapters/lora.ts';
import { loadLoraFile } from '../../src/adapters/lora-file.ts';
import { encodePng } from '../../src/formats/png.ts';
import { resolveTrainConfig } from '../../src/training/config.ts';
import { describeTraining, runTraining } from '../../src/training/run.ts';
import { generate } from '../../src/sampling/pipeline.ts';
import { tempDir, writeCaptionedFolder } from '../helpers.ts';
import { writeTinyCheckpoint } from '../sampling/tiny-sd.ts';

let tmp: ReturnType<typeof tempDir>;
let ckpt: string;
before(() => {
  tmp = tempDir();
  ckpt = writeTinyCheckpoint(tmp.dir);
});
after(() => tmp.cleanup());

/** Two 64×64 pictures (a bright square on a dark ground, and its inverse), batch 1, fixed order. */
function pictures(captions: string[], opts: { nan?: boolean; weights?: number[] } = {}): TrainData {
  const make = (i: number): T.Tensor => T.tidy(() => {
    const x = T.full([1, 3, 64, 64], i % 2 ? 0.8 : -0.8);
    const sq = T.full([1, 3, 32, 32], i % 2 ? -0.6 : 0.9);
    return T.cat([T.cat([x.slice(2, 0, 16), T.cat([x.slice(2, 16, 48).slice(3, 0, 16), sq, x.slice(2, 16, 48).slice(3, 48, 64)], 3), x.slice(2, 48, 64)], 2)], 0).mul(opts.nan && i === 1 ? NaN : 1);
  });
  const batch = (e: number, i: number): TrainBatch => {
    const k = (e + i) % captions.length;
    return { pixels: make(k), captions: [captions[k]], masks: null, weights: [opts.weights?.[k] ?? 1], keys: [`img${k}`] };
  };
  return { batchesPerEpoch: captions.length, batch, validation: () => captions.map((_, k) => batch(0, k)) };
}

function fresh(): StableDiffusion {
  return loadStableDiffusion(ckpt, { hash: false });
}

test('textual inversion: the held-out loss falls, the .safetensors and .pt products re-load', async () => {
  const live = T.memoryStats().live;
  const model = fresh();
  const tech = new EmbeddingTechnique(model, { name: 'sksheart', vectors: 2, initText: 'heart', lr: 0.05 });
  const initial = tech.vec.toArray();
  const out = join(tmp.dir, 'ti', 'sksheart.safetensors');
  const trainer = new Trainer(tech, pictures(['a photo of sksheart', 'sksheart on a plain ground']), { steps: 40, seed: 3, workDir: join(tmp.dir, 'ti-work'), out, validateEvery: 40, priorPrompts: ['a photo of a heart'] });
  const before = trainer.validationLoss()!;
  const r = await trainer.run();
  const afterLoss = trainer.validationLoss()!;
  console.log(`# TI: validation loss ${before.toFixed(4)} → ${afterLoss.toFixed(4)} in ${r.seconds.toFixed(1)} s`);
  assert.equal(r.status, 'done');
  // A random tiny model gives the words little to steer, so the drop is small but it is there
  // (the gradient itself is checked against transformers in test/sampling/conditioning.test.ts).
  assert.ok(afterLoss < before, `validation loss should fall: ${before} → ${afterLoss}`);
  assert.equal(r.trainableParameters, 2 * 32);
  assert.equal(r.records.at(-1)!.prior_drift, 0, 'prompts without the word are untouched by an embedding');
  // The product: kohya emb_params with modelspec metadata; the vectors are the trained ones.
  const e = loadEmbeddingFile(out);
  assert.equal(e.name, 'sksheart');
  assert.deepEqual(e.vectors.te!.shape, [2, 32]);
  assert.deepEqual(e.vectors.te!.toArray(), tech.vec.toArray());
  assert.notDeepEqual(e.vectors.te!.toArray(), initial);
  disposeEmbedding(e);
  const f = SafetensorsFile.open(out);
  assert.equal(f.metadata['modelspec.architecture'], 'stable-diffusion-v1/textual-inversion');
  f.close();
  // A1111 .pt: string_to_param, step and the base model's name.
  const pt = join(tmp.dir, 'ti', 'sksheart.pt');
  tech.save(pt, { step: r.steps, baseName: model.name, baseHash: 'abcdef0123', settings: {} });
  const p = loadEmbeddingFile(pt);
  assert.equal(p.step, 40);
  assert.deepEqual(p.checkpoint, { hash: 'abcdef0123', name: 'tiny-sd' });
  assert.deepEqual(p.vectors.te!.toArray(), tech.vec.toArray());
  disposeEmbedding(p);
  // The log has one line per step with loss, LR and step time.
  const log = readFileSync(join(tmp.dir, 'ti-work', 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(log.length, 40);
  assert.deepEqual(Object.keys(log[0]).sort(), ['epoch', 'loss', 'lr', 'step', 'step_ms']);
  assert.ok(typeof log[39].val_loss === 'number');
  trainer.dispose();
  tech.dispose();
  model.dispose();
  assert.equal(T.memoryStats().live - live, 0, 'no tensors left behind');
});

test('an interrupted and resumed run ends bit-identical to an uninterrupted one', async () => {
  const run = async (work: string, stopAt?: number) => {
    const model = fresh();
    const tech = new EmbeddingTechnique(model, { name: 'sksheart', lr: 0.02 });
    const o = { steps: 8, seed: 11, workDir: join(tmp.dir, work), out: join(tmp.dir, work, 'e.safetensors'), checkpointEvery: 2, noiseOffset: 0.05, minSnrGamma: 5, gradAccumulation: 2, lrSchedule: 'cosine', warmupSteps: 2 };
    let t: Trainer = new Trainer(tech, pictures(['sksheart one', 'sksheart two', 'three sksheart']), { ...o, shouldStop: stopAt ? (): boolean => t.step === stopAt : undefined });
    let r = await t.run();
    if (stopAt) {
      assert.equal(r.status, 'stopped');
      assert.match(r.message, /stopped at step 5; checkpoint .*step-000005\.safetensors; run again with --resume/);
      t.dispose();
      // A new process: the model and technique are built again, the checkpoint restores the rest.
      tech.dispose();
      model.dispose();
      const model2 = fresh();
      const tech2 = new EmbeddingTechnique(model2, { name: 'sksheart', lr: 0.02 });
      t = new Trainer(tech2, pictures(['sksheart one', 'sksheart two', 'three sksheart']), { ...o, resume: true });
      r = await t.run();
      const v = tech2.vec.toArray();
      t.dispose();
      tech2.dispose();
      model2.dispose();
      return { v, r };
    }
    const v = tech.vec.toArray();
    t.dispose();
    tech.dispose();
    model.dispose();
    return { v, r };
  };
  const a = await run('straight');
  const b = await run('interrupted', 5);
  assert.equal(b.r.status, 'done');
  assert.deepEqual(b.v, a.v, 'the trained vectors are bit-identical');
  assert.deepEqual(b.r.records.map((x) => x.loss), a.r.records.map((x) => x.loss), 'every step loss is identical');
});

test('DreamBooth with prior preservation: the whole model is saved and re-loads; the prior meter moves', async () => {
  const model = fresh();
  const tech = new DreamBoothTechnique(model, { token: 'sks', lr: 1e-3 });
  const out = join(tmp.dir, 'db.safetensors');
  const data = pictures(['a sks square', 'a square'], { weights: [1, 0.5] });
  const trainer = new Trainer(tech, data, { steps: 6, seed: 5, workDir: join(tmp.dir, 'db-work'), out, validateEvery: 3, priorPrompts: ['a square'], emaDecay: 0.9, conceptWord: 'sks' });
  const before = trainer.validationLoss()!;
  const r = await trainer.run();
  const afterLoss = trainer.validationLoss()!;
  console.log(`# DreamBooth: validation loss ${before.toFixed(4)} → ${afterLoss.toFixed(4)}`);
  assert.ok(afterLoss < before, `validation loss should fall: ${before} → ${afterLoss}`);
  assert.equal(r.status, 'done');
  assert.equal(r.trainableParameters, model.unet.numParameters());
  const last = r.records.at(-1)!;
  // EMA: the validation judges the product's (averaged) weights, not the last step's.
  assert.equal(last.val_loss, afterLoss, 'the logged validation is the EMA weights\'');
  assert.notEqual(trainer.validation()!.loss, afterLoss, 'the live weights score differently');
  const drift = last.prior_drift!;
  assert.ok(drift > 0, `prior drift should be above 0 after full fine-tuning (${drift})`);
  // The meter's curves, per validation timestep: their means are the logged values.
  const mean = (xs: number[]) => xs.reduce((a, x) => a + x, 0) / xs.length;
  assert.equal(last.val_by_t!.length, 5);
  assert.ok(Math.abs(mean(last.val_by_t!) - last.val_loss!) < 1e-12);
  assert.ok(Math.abs(mean(last.drift_by_t!) - drift) < 1e-12);
  assert.ok(Number.isFinite(last.concept_gap) && last.concept_gap !== 0, `the concept gap is logged (${last.concept_gap})`);
  assert.ok(Math.abs(mean(last.gap_by_t!) - last.concept_gap!) < 1e-12);
  const back = loadStableDiffusion(out, { hash: false });
  const base = fresh();
  T.tidy(() => {
    const k = 'conv_in.weight';
    const saved = back.unet.stateDict().get(k)!;
    const orig = base.unet.stateDict().get(k)!;
    assert.ok(saved.sub(orig).abs().max().item() > 0, 'the saved UNet differs from the base');
    // EMA: the product holds the averaged weights, not the last ones.
    assert.ok(saved.sub(model.unet.stateDict().get(k)!).abs().max().item() > 0, 'the product uses the EMA weights');
  });
  assert.deepEqual([...back.unet.stateDict().keys()].sort(), [...base.unet.stateDict().keys()].sort());
  // A path without an extension: a diffusers folder holding the model's current weights exactly.
  const folder = join(tmp.dir, 'db-diffusers');
  tech.save(folder, { step: 6, baseName: 'tiny-sd', baseHash: '', settings: {} });
  const fromFolder = loadStableDiffusion(folder);
  T.tidy(() => {
    for (const [k, t] of model.unet.stateDict()) assert.equal(t.sub(fromFolder.unet.stateDict().get(k)!).abs().max().item(), 0, k);
  });
  for (const m of [back, base, fromFolder]) m.dispose();
  trainer.dispose();
  tech.dispose();
  model.dispose();
});

test('the EMA decay warms up: (1 + t) / (10 + t) until it reaches the set decay', () => {
  assert.equal(emaDecayAt(0.999, 0), 0.1);
  assert.equal(emaDecayAt(0.999, 10), 11 / 20);
  assert.equal(emaDecayAt(0.98, 1000), 0.98);
  assert.equal(emaDecayAt(0.98, 439), 440 / 449);
  // 0.98 over a 50-step run without the warm-up would keep 0.98^50 = 36 % of the starting weights.
  let start = 1;
  for (let t = 0; t < 50; t++) start *= emaDecayAt(0.98, t);
  assert.ok(start < 1e-3, `the starting weights' share after 50 steps: ${start}`);
});

test('the concept gap captions the held-out pictures without the word', () => {
  assert.equal(withoutWord('a large sks heart in the center', 'sks'), 'a large heart in the center');
  assert.equal(withoutWord('sks heart, on gray', 'sks'), 'heart, on gray');
  assert.equal(withoutWord('a sksy heart (sks)', 'sks'), 'a sksy heart ()');
  assert.equal(withoutWord('a <owd.v> star', '<owd.v>'), 'a star');
});

test('a NaN loss stops the run and keeps the last good checkpoint', async () => {
  const model = fresh();
  const tech = new EmbeddingTechnique(model, { name: 'sksheart' });
  const work = join(tmp.dir, 'nan-work');
  const trainer = new Trainer(tech, pictures(['sksheart a', 'sksheart b'], { nan: true }), { steps: 10, seed: 1, workDir: work, out: join(work, 'e.safetensors'), checkpointEvery: 1 });
  const r = await trainer.run();
  assert.equal(r.status, 'diverged');
  assert.match(r.message, /the loss became NaN at step 2: training stopped; the last good checkpoint is .*step-000001\.safetensors\. Lower the learning rate/);
  assert.equal(r.out, null);
  assert.equal(existsSync(join(work, 'e.safetensors')), false, 'no product from a diverged run');
  trainer.dispose();
  tech.dispose();
  model.dispose();
});

test('hypernetwork: trained on the frozen UNet, saved as A1111 .pt, re-loaded with its step and values', async () => {
  const model = fresh();
  const unetBefore = T.tidy(() => model.unet.stateDict().get('conv_in.weight')!.clone());
  const tech = new HypernetworkTechnique(model, { name: 'outline', layerStructure: [1, 2, 1], lr: 1e-3 });
  assert.deepEqual(tech.net.sizes, [32, 16], 'every context width of the tiny UNet: text 32, blocks 16 and 32');
  const out = join(tmp.dir, 'outline.pt');
  const trainer = new Trainer(tech, pictures(['a photo of a square', 'a square']), { steps: 8, seed: 2, workDir: join(tmp.dir, 'hn-work'), out, validateEvery: 8, priorPrompts: ['a square'] });
  const before = trainer.validationLoss()!;
  const r = await trainer.run();
  const afterLoss = trainer.validationLoss()!;
  console.log(`# hypernetwork: validation loss ${before.toFixed(4)} → ${afterLoss.toFixed(4)}`);
  assert.ok(afterLoss < before, `validation loss should fall: ${before} → ${afterLoss}`);
  assert.equal(r.status, 'done');
  assert.ok(r.records.at(-1)!.prior_drift! > 0, 'the hypernetwork moved the predictions');
  const back = Hypernetwork.fromFile(out);
  assert.equal(back.step, 8);
  assert.equal(back.name, 'outline');
  for (const [[n, a], [m, b]] of back.namedParameters().map((p, i) => [p, tech.net.namedParameters()[i]] as const)) {
    assert.equal(n, m);
    assert.deepEqual(a.toArray(), b.toArray(), n);
  }
  back.dispose();
  trainer.dispose();
  tech.dispose();
  T.tidy(() => assert.equal(model.unet.stateDict().get('conv_in.weight')!.sub(unetBefore).abs().max().item(), 0, 'the UNet stays frozen'));
  unetBefore.dispose();
  model.dispose();
});

test('LoRA: trained, saved as kohya with ss_*/modelspec metadata, re-loaded and applied at a weight', async () => {
  const model = fresh();
  const tech = new LoraTechnique(model, { rank: 4, alpha: 4, lr: 1e-2, saveDtype: 'fp32' });
  const out = join(tmp.dir, 'style.safetensors');
  const trainer = new Trainer(tech, pictures(['a square in the style', 'a plain square in the style']), { steps: 30, seed: 4, workDir: join(tmp.dir, 'lora-work'), out, validateEvery: 30, priorPrompts: ['a square'] });
  const before = trainer.validationLoss()!;
  const r = await trainer.run();
  const afterLoss = trainer.validationLoss()!;
  console.log(`# LoRA: validation loss ${before.toFixed(4)} → ${afterLoss.toFixed(4)}, ${r.trainableParameters} parameters, ${r.seconds.toFixed(1)} s`);
  assert.ok(afterLoss < before, `validation loss should fall: ${before} → ${afterLoss}`);
  assert.ok(r.records.at(-1)!.prior_drift! > 0);
  trainer.dispose();
  tech.dispose();
  // The file: kohya names with alpha, the metadata A1111 reads.
  const f = SafetensorsFile.open(out);
  assert.equal(f.keys().filter((k) => k.endsWith('.alpha')).length, 6 * 12 + 3 * 6, '12 modules in each of the 6 transformers, 6 in each of the 3 text-encoder layers');
  assert.equal(f.metadata.ss_network_dim, '4');
  assert.equal(f.metadata.ss_base_model_version, 'sd_v1');
  assert.equal(f.metadata['modelspec.architecture'], 'stable-diffusion-v1/lora');
  assert.match(f.metadata.sshs_model_hash, /^[0-9a-f]{64}$/);
  f.close();
  // Applied at generation: weight 0 is the base image exactly; weight 1 changes it.
  const lora = loadLoraFile(out, model);
  const o = { prompt: 'a square in the style', seed: 9, steps: 4, width: 64, height: 64 };
  const base = generate(model, o)[0].image.data;
  const applied = applyLoraFiles(model, [{ lora, unet: 0, te: 0 }]);
  assert.deepEqual(generate(model, o)[0].image.data, base, 'weight 0 gives the base image');
  applied.setWeights(0, 1, 1);
  assert.notDeepEqual(generate(model, o)[0].image.data, base, 'weight 1 changes it');
  applied.remove();
  disposeLoraFile(lora);
  assert.deepEqual(generate(model, o)[0].image.data, base, 'removed: the base again');
  model.dispose();
});

test('early stop: a run whose held-out loss stands still ends once the meter\'s best step has stood for N validations', async () => {
  const model = fresh();
  // lr 0: nothing moves, so the first validation stays the best one.
  const tech = new EmbeddingTechnique(model, { name: 'sksheart', vectors: 1, initText: 'heart', lr: 0 });
  const out = join(tmp.dir, 'early', 'sksheart.safetensors');
  const trainer = new Trainer(tech, pictures(['a photo of sksheart']), { steps: 100, seed: 3, workDir: join(tmp.dir, 'early-work'), out, validateEvery: 2, earlyStop: 3, snapshots: true, checkpointEvery: 2 });
  try {
    const r = await trainer.run();
    assert.equal(r.status, 'done');
    assert.equal(r.steps, 8);
    assert.match(r.message, /early stop at step 8: the meter's best step, 2, has stood for 3 validations; its snapshot is .*sksheart-step000002\.safetensors/);
    assert.ok(existsSync(out), 'the product is written');
    assert.ok(existsSync(join(tmp.dir, 'early', 'sksheart-step000008.safetensors')));
  } finally {
    trainer.dispose();
    tech.dispose();
    model.dispose();
  }
});

test('an embedding whose word is in none of the captions is refused before training, dry run included', async () => {
  const grey = (v: number) => encodePng({ width: 64, height: 64, channels: 3, data: new Uint8Array(64 * 64 * 3).fill(v) });
  const data = writeCaptionedFolder(join(tmp.dir, 'no-word'), [{ name: 'heart', caption: 'a red heart', png: grey(200) }, { name: 'star', caption: 'a blue star', png: grey(40) }]);
  const out = join(tmp.dir, 'no-word.safetensors');
  const config = (template: string, more: Record<string, unknown> = {}) => resolveTrainConfig('embedding', { flags: { model: ckpt, data, out, token: 'sks', template, steps: 4, resolution: 64, bucketStep: 8, ...more } });
  const fix = 'put it in the captions, or use a template that adds it (subject_filewords, or style_filewords for a style)';
  const none = `the embedding's word "sks" appears in none of the 2 captions of ${data} (e.g. "a red heart"): ${fix}`;
  // filewords: the captions as written, and neither has the word.
  await assert.rejects(describeTraining(config('filewords')), { name: 'TrainingError', message: none });
  await assert.rejects(runTraining(config('filewords')), { name: 'TrainingError', message: none });
  assert.equal(existsSync(out), false, 'nothing trained');
  assert.equal(existsSync(join(`${out}.work`, 'log.jsonl')), false, 'not one step logged');
  // One caption with it: in batches of 1 the other one's steps have no gradient, so it is named.
  writeFileSync(join(data, 'star.txt'), 'a sks star');
  await assert.rejects(describeTraining(config('filewords')), {
    name: 'TrainingError',
    message: `the embedding's word "sks" is missing from 1 of the 2 captions of ${data}, and step 1 would train only on such captions (heart.png: "a red heart"), where there is nothing to learn: ${fix}`,
  });
  // In batches of 2 every step has the word somewhere: that trains, as it did.
  assert.equal((await describeTraining(config('filewords', { batchSize: 2 }))).steps, 4);
  // A template with [name] puts it in every caption; dropping every caption takes it out again.
  const plan = await describeTraining(config('subject_filewords'));
  assert.match(plan.text, /embedding: 32 trainable parameters/);
  await assert.rejects(describeTraining(config('subject_filewords', { captionDropout: 1 })), {
    name: 'TrainingError',
    message: `caption or tag dropout leaves step 1 without the embedding's word "sks" (heart.png: ""), where there is nothing to learn: for an embedding, set captionDropout and tagDropout to 0`,
  });
});
