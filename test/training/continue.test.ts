// Continuing a LoRA, an embedding or a hypernetwork from its file (initFrom): the run starts
// where the file left off (same weights, same held-out loss), keeps the file's shape over the
// config's, counts A1111 steps on from the file's, and refuses files that do not fit by name.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import * as T from '../../src/torch/index.ts';
import { loadStableDiffusion, type StableDiffusion } from '../../src/models/load.ts';
import { loadEmbeddingFile } from '../../src/formats/embedding-file.ts';
import { disposeEmbedding } from '../../src/formats/layouts/index.ts';
import { SafetensorsFile, saveSafetensors } from '../../src/formats/safetensors.ts';
import { Trainer, type TrainBatch, type TrainData } from '../../src/training/loop.ts';
import { EmbeddingTechnique } from '../../src/training/techniques/embedding.ts';
import { HypernetworkTechnique } from '../../src/training/techniques/hypernetwork.ts';
import { LoraTechnique } from '../../src/training/techniques/lora.ts';
import { Hypernetwork } from '../../src/adapters/hypernetwork.ts';
import { resolveTrainConfig } from '../../src/training/config.ts';
import { describeTraining } from '../../src/training/run.ts';
import { shiftSchedule } from '../../src/server/a1111.ts';
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

const fresh = (): StableDiffusion => loadStableDiffusion(ckpt, { hash: false });

/** Two flat 64×64 pictures, captioned in turn. */
function pictures(captions: string[]): TrainData {
  const batch = (e: number, i: number): TrainBatch => {
    const k = (e + i) % captions.length;
    return { pixels: T.full([1, 3, 64, 64], k ? 0.7 : -0.7), captions: [captions[k]], masks: null, weights: [1], keys: [`img${k}`] };
  };
  return { batchesPerEpoch: captions.length, batch, validation: () => captions.map((_, k) => batch(0, k)) };
}

/** Trains `steps` and returns the held-out loss after them. */
async function train(tech: LoraTechnique | EmbeddingTechnique | HypernetworkTechnique, captions: string[], out: string, steps: number): Promise<{ before: number; after: number }> {
  const trainer = new Trainer(tech, pictures(captions), { steps, seed: 5, workDir: `${out}.work`, out, validateEvery: steps, snapshots: false });
  try {
    const b = trainer.validationLoss()!;
    const r = await trainer.run();
    assert.equal(r.status, 'done');
    return { before: b, after: trainer.validationLoss()! };
  } finally {
    trainer.dispose();
  }
}

test('LoRA: a continued run starts from the file (its held-out loss), keeps its rank and alpha, and trains its text-encoder pairs', async () => {
  const captions = ['a square in the style', 'a plain square in the style'];
  const first = join(tmp.dir, 'style.safetensors');
  let m = fresh();
  let tech = new LoraTechnique(m, { rank: 4, alpha: 2, lr: 1e-2, saveDtype: 'fp32' });
  const one = await train(tech, captions, first, 6);
  tech.dispose();
  m.dispose();

  m = fresh();
  // The config's rank and "no text encoder" are not the file's: the file wins, and says so.
  tech = new LoraTechnique(m, { rank: 16, alpha: 16, lr: 1e-2, saveDtype: 'fp32', trainTextEncoder: false, initFrom: first });
  assert.equal(tech.continued, 'continuing the LoRA style.safetensors: 90 modules at rank 4, alpha 2; its 18 text-encoder pairs are trained too (they are part of the file); the rank and alpha settings are the file\'s');
  assert.equal(tech.needsTextGrad, true);
  const f = SafetensorsFile.open(first);
  const key = 'lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight';
  assert.deepEqual(tech.handle.namedParameters().get(key)!.toArray(), f.get(key).toArray(), 'the weights are the file\'s');
  f.close();
  const second = join(tmp.dir, 'style-more.safetensors');
  const two = await train(tech, captions, second, 6);
  tech.dispose();
  m.dispose();
  assert.ok(Math.abs(two.before - one.after) < 1e-6, `the continued run starts where the first ended: ${one.after} vs ${two.before}`);
  assert.ok(two.after < two.before, `and goes on learning: ${two.before} → ${two.after}`);
  const g = SafetensorsFile.open(second);
  assert.equal(g.metadata.ss_network_dim, '4');
  assert.equal(g.metadata.ss_network_alpha, '2.0');
  assert.equal(g.keys().filter((k) => k.startsWith('lora_te_')).length, 18 * 3);
  g.close();
});

test('embedding: the vectors and A1111 step come from the file (.pt and .safetensors); saved steps count on', async () => {
  const captions = ['a photo of sksheart', 'sksheart on a plain ground'];
  const pt = join(tmp.dir, 'sksheart.pt');
  let m = fresh();
  let tech = new EmbeddingTechnique(m, { name: 'sksheart', vectors: 2, initText: 'heart', lr: 0.05 });
  const one = await train(tech, captions, pt, 5);
  tech.dispose();
  m.dispose();

  m = fresh();
  tech = new EmbeddingTechnique(m, { name: 'sksheart', vectors: 1, initText: 'star', lr: 0.05, initFrom: pt });
  assert.equal(tech.continued, 'continuing the embedding sksheart.pt: 2 vectors of 32, trained 5 steps before; the vectors and initText settings are the file\'s');
  const e = loadEmbeddingFile(pt);
  assert.deepEqual(tech.vec.toArray(), e.vectors.te!.toArray());
  disposeEmbedding(e);
  const st = join(tmp.dir, 'sksheart.safetensors');
  const two = await train(tech, captions, st, 4);
  tech.dispose();
  m.dispose();
  assert.ok(Math.abs(two.before - one.after) < 1e-6, `continued from the end: ${one.after} vs ${two.before}`);
  const f = SafetensorsFile.open(st);
  assert.equal(f.metadata['sdtune.step'], '9', '5 steps in the file + 4 now');
  f.close();
  // sdtune's .safetensors keeps the step in its header: continuing from it counts on again.
  m = fresh();
  tech = new EmbeddingTechnique(m, { name: 'sksheart', initFrom: st });
  assert.equal(tech.initialStep, 9);
  const back = join(tmp.dir, 'sksheart-2.pt');
  tech.save(back, { step: 1, baseName: 'tiny-sd', baseHash: '', settings: {} });
  tech.dispose();
  m.dispose();
  const p = loadEmbeddingFile(back);
  assert.equal(p.step, 10);
  disposeEmbedding(p);
});

test('hypernetwork: the structure, weights and step come from the file', async () => {
  const captions = ['a photo of a square', 'a square'];
  const first = join(tmp.dir, 'outline.pt');
  let m = fresh();
  let tech = new HypernetworkTechnique(m, { name: 'outline', layerStructure: [1, 3, 1], activation: 'relu', lr: 1e-3 });
  const one = await train(tech, captions, first, 4);
  tech.dispose();
  m.dispose();

  m = fresh();
  tech = new HypernetworkTechnique(m, { name: 'outline2', layerStructure: [1, 2, 1], lr: 1e-3, initFrom: first });
  assert.equal(tech.continued, 'continuing the hypernetwork outline.pt: layer structure [1, 3, 1], relu, trained 4 steps before; the structure settings are the file\'s');
  const out = join(tmp.dir, 'outline2.pt');
  const two = await train(tech, captions, out, 3);
  tech.dispose();
  m.dispose();
  assert.ok(Math.abs(two.before - one.after) < 1e-6, `continued from the end: ${one.after} vs ${two.before}`);
  const back = Hypernetwork.fromFile(out);
  assert.equal(back.step, 7);
  assert.equal(back.name, 'outline2');
  assert.deepEqual(back.settings.layerStructure, [1, 3, 1]);
  back.dispose();
});

test('files that cannot be continued are refused by name, before anything trains', async () => {
  const grey = (v: number) => encodePng({ width: 64, height: 64, channels: 3, data: new Uint8Array(64 * 64 * 3).fill(v) });
  const data = writeCaptionedFolder(join(tmp.dir, 'set'), [{ name: 'a', caption: 'a sks square', png: grey(200) }, { name: 'b', caption: 'a sks star', png: grey(40) }]);
  const flags = { model: ckpt, data, resolution: 64, bucketStep: 8, steps: 2 };
  assert.throws(() => resolveTrainConfig('dreambooth', { flags: { ...flags, out: join(tmp.dir, 'db.safetensors'), token: 'sks', initFrom: 'x.safetensors' } }), {
    name: 'ConfigError',
    message: 'command line: --init-from continues an adapter file; DreamBooth trains the whole model, so to continue a DreamBooth run pass its checkpoint as --model',
  });
  const missing = join(tmp.dir, 'nope.safetensors');
  await assert.rejects(describeTraining(resolveTrainConfig('lora', { flags: { ...flags, out: join(tmp.dir, 'l.safetensors'), initFrom: missing } })), {
    name: 'TrainingError',
    message: `initFrom: ${missing} does not exist; pass the LoRA file to continue from, or leave initFrom out to start a new one`,
  });
  // An embedding for another text encoder (SD 1.x, 768 wide) on the tiny one (32 wide).
  const wide = join(tmp.dir, 'wide.safetensors');
  saveSafetensors(wide, new Map([['emb_params', T.zeros([1, 768])]]));
  await assert.rejects(describeTraining(resolveTrainConfig('embedding', { flags: { ...flags, out: join(tmp.dir, 'e.safetensors'), token: 'sks', initFrom: wide } })), {
    message: `${wide}: its vectors are 768 wide (SD 1.x), this model's text encoder is 32 wide; continue it on the model it was trained for, or start a new embedding`,
  });
  // A hypernetwork for SD's widths has nothing to train on the tiny model.
  const sd = join(tmp.dir, 'sd-widths.pt');
  const hn = Hypernetwork.create('sd-widths', { sizes: [768, 320] });
  hn.save(sd);
  hn.dispose();
  await assert.rejects(describeTraining(resolveTrainConfig('hypernetwork', { flags: { ...flags, out: join(tmp.dir, 'h.pt'), initFrom: sd } })), {
    message: `${sd}: its modules are for context widths 768, 320, and this model's attention layers see 32, 16, so it would train nothing; continue it on the model it was made for, or create a new hypernetwork`,
  });
  // Another kind of file where a LoRA is expected: what it is, and what to do with it.
  await assert.rejects(describeTraining(resolveTrainConfig('lora', { flags: { ...flags, out: join(tmp.dir, 'l.safetensors'), initFrom: wide } })), {
    name: 'TrainingError',
    message: `initFrom: ${wide} is an embedding, not a LoRA: continue it with \`sdtune train embedding\`, or pass a LoRA file`,
  });
  await assert.rejects(describeTraining(resolveTrainConfig('embedding', { flags: { ...flags, out: join(tmp.dir, 'e.safetensors'), token: 'sks', initFrom: sd } })), {
    name: 'TrainingError',
    message: `initFrom: ${sd} is a hypernetwork, not an embedding: continue it with \`sdtune train hypernetwork\`, or pass an embedding file`,
  });
  // The dry run states what is continued.
  const lora = join(tmp.dir, 'style.safetensors');
  const plan = await describeTraining(resolveTrainConfig('lora', { flags: { ...flags, out: join(tmp.dir, 'l.safetensors'), initFrom: lora } }));
  assert.match(plan.text, /^continuing the LoRA style\.safetensors: 90 modules at rank 4, alpha 2; the rank and alpha settings are the file's\.$/m);
});

test("A1111's learning-rate schedule is moved back by the steps the file has done", () => {
  assert.equal(shiftSchedule('0.005', 100), '0.005');
  assert.equal(shiftSchedule('0.005:100, 1e-3:1000, 1e-5', 0), '0.005:100, 1e-3:1000, 1e-5');
  assert.equal(shiftSchedule('0.005:100, 1e-3:1000, 1e-5', 100), '1e-3:900, 1e-5');
  assert.equal(shiftSchedule('0.005:100, 1e-3:1000, 1e-5', 150), '1e-3:850, 1e-5');
  assert.equal(shiftSchedule('0.005:100, 1e-3:1000', 2000), '1e-3', 'past the last piece its rate holds');
});
