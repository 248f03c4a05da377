// Gradient checkpointing (src/torch/checkpoint.ts): the tape's gradients are the plain backward's —
// through segments that share inputs, a skip read by two later segments, code between segments,
// dropout inside a segment and inputs from outside the tape — the UNet's gradients on the tiny model
// match, the text encoder's layers are segments when they train or carry textual inversion's
// vectors (and not when frozen on plain tokens), and a DreamBooth, LoRA (with the text encoder),
// embedding and hypernetwork (with dropout) run train the same with it on as off; nothing is left
// behind.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import * as T from '../../src/torch/index.ts';
import { loadStableDiffusion, type StableDiffusion } from '../../src/models/load.ts';
import { Trainer, type TrainBatch, type TrainData } from '../../src/training/loop.ts';
import type { Technique } from '../../src/training/technique.ts';
import { DreamBoothTechnique } from '../../src/training/techniques/dreambooth.ts';
import { EmbeddingTechnique } from '../../src/training/techniques/embedding.ts';
import { HypernetworkTechnique } from '../../src/training/techniques/hypernetwork.ts';
import { LoraTechnique } from '../../src/training/techniques/lora.ts';
import { tempDir } from '../helpers.ts';
import { writeTinyCheckpoint } from '../sampling/tiny-sd.ts';

let tmp: ReturnType<typeof tempDir>;
let ckpt: string;
before(() => {
  tmp = tempDir();
  ckpt = writeTinyCheckpoint(tmp.dir);
});
after(() => tmp.cleanup());

const maxDiff = (a: T.Tensor, b: T.Tensor) => T.tidy(() => a.sub(b).abs().max().item());
const maxAbs = (a: T.Tensor) => T.tidy(() => a.abs().max().item());

test('the tape gives the plain backward\'s gradients: shared inputs, a skip read twice, dropout, inputs from outside', () => {
  const live = T.memoryStats().live;
  T.manualSeed(7);
  const w1 = T.keep(T.randn([8, 8]).requiresGrad_(true));
  const w2 = T.keep(T.randn([8, 8]).requiresGrad_(true));
  const w3 = T.keep(T.randn([8, 8]).requiresGrad_(true));
  const src = T.keep(T.randn([4, 8]).requiresGrad_(true));
  const x = T.keep(T.randn([4, 8]));
  const run = (tape: T.CheckpointTape | null) => {
    T.manualSeed(99);
    const body = () => T.tidy(() => {
      const ctx = src.mul(2).tanh(); // from outside the tape, with a graph of its own
      const [a, skip] = T.checkpoint((h, c) => { const y = h.matmul(w1).add(c).tanh(); return [y, y.mul(0.5)]; }, [x, ctx]);
      const [b] = T.checkpoint((h, c) => [T.dropout(h.matmul(w2), 0.3, true).add(c).sin()], [a, ctx]);
      const between = b.mul(b); // code between segments: an ordinary graph on the leaf b
      const [c] = T.checkpoint((h, s, s2) => [h.matmul(w3).add(s).add(s2.mul(3))], [between, skip, skip]);
      return c.add(skip).pow(2).mean();
    });
    const loss = tape ? tape.run(body) : body();
    loss.backward();
    tape?.backward();
    const after = T.tidy(() => T.randn([1]).item()); // the random stream goes on as without the tape
    loss.dispose();
    const grads = [w1, w2, w3, src].map((p, i) => { const g = p.grad; if (!g) throw new Error(`no gradient for ${i} (tape: ${tape !== null})`); p.grad = null; return T.keep(g); });
    return { grads, after };
  };
  const plain = run(null);
  const tape = new T.CheckpointTape();
  const taped = run(tape);
  assert.equal(tape.size, 0, 'backward empties the tape');
  for (let i = 0; i < 4; i++) {
    assert.ok(maxAbs(plain.grads[i]) > 1e-3, `gradient ${i} is not trivially zero`);
    assert.ok(maxDiff(plain.grads[i], taped.grads[i]) < 1e-6, `gradient ${i}: ${maxDiff(plain.grads[i], taped.grads[i])}`);
  }
  assert.equal(taped.after, plain.after, 'the replayed dropout put the random state back');
  for (const t of [w1, w2, w3, src, x, ...plain.grads, ...taped.grads]) t.dispose();
  assert.equal(T.memoryStats().live, live, 'no tensor left behind');
  assert.throws(() => tape.backward(), /this checkpoint tape was disposed/);
});

/**
 * The gradients of `leaves` from a backward through body()'s loss, run under `tape` when given
 * (then also how many segments it held); the leaves' .grad are taken and reset.
 */
function gradientsOf(body: () => T.Tensor, leaves: readonly T.Tensor[], tape: T.CheckpointTape | null): { out: T.Tensor[]; segments: number } {
  const loss = tape ? tape.run(body) : body();
  const segments = tape?.size ?? 0;
  if (loss.requiresGrad) loss.backward();
  tape?.backward();
  loss.dispose();
  return { out: leaves.map((p) => { const g = p.grad ?? T.zerosLike(p); p.grad = null; return T.keep(g); }), segments };
}

test('the tiny UNet under a tape: one segment per resnet, transformer and resampler, the same gradients', () => {
  const model = loadStableDiffusion(ckpt, { hash: false });
  const unet = model.unet;
  const params = unet.parameters();
  for (const p of params) p.requiresGrad_(true);
  T.manualSeed(3);
  const x = T.keep(T.randn([2, 4, 8, 8]));
  const ctxLeaf = T.keep(T.randn([2, 77, model.textEncoder.cfg.hiddenSize]).requiresGrad_(true));
  /** The gradients of every parameter and of the context; with a tape, also how many segments it held. */
  const grads = (tape: T.CheckpointTape | null) => gradientsOf(() => T.tidy(() => unet.forward(x, T.tensor([10, 700], { dtype: 'int64' }), ctxLeaf.mul(1.5)).pow(2).mean()), [...params, ctxLeaf], tape);
  const plain = grads(null).out;
  const live = T.memoryStats().live;
  const { out: taped, segments } = grads(new T.CheckpointTape());
  assert.equal(T.memoryStats().live - live, taped.length, 'only the gradients taken remain');
  const cfg = unet.cfg;
  const levels = cfg.blockOutChannels.length;
  const cross = (kinds: readonly string[]) => kinds.filter((k) => k.startsWith('CrossAttn')).length;
  const expected = levels * cfg.layersPerBlock + cross(cfg.downBlocks) * cfg.layersPerBlock + (levels - 1) // down: resnets, transformers, downsamplers
    + 3 // mid: resnet, transformer, resnet
    + levels * (cfg.layersPerBlock + 1) + cross(cfg.upBlocks) * (cfg.layersPerBlock + 1) + (levels - 1); // up
  assert.equal(segments, expected);
  let worst = 0;
  for (let i = 0; i < plain.length; i++) {
    const scale = Math.max(maxAbs(plain[i]), 1e-8);
    worst = Math.max(worst, maxDiff(plain[i], taped[i]) / scale);
  }
  assert.ok(maxAbs(plain.at(-1)!) > 0, 'the context gets a gradient');
  assert.ok(worst < 1e-4, `largest relative gradient difference ${worst}`);
  for (const t of [x, ctxLeaf, ...plain, ...taped]) t.dispose();
  for (const p of params) p.requiresGrad_(false);
  model.dispose();
});

test('the text encoder under a tape: a segment per layer when it trains or carries trained vectors, none when frozen', () => {
  const model = loadStableDiffusion(ckpt, { hash: false });
  const te = model.textEncoder;
  te.requiresGrad_(false); // as every technique leaves it unless it trains it
  const v = te.cfg.vocabSize;
  const ids = T.keep(T.tensor([[v - 2, 5, 9, v - 1, v - 1, v - 1]], { dtype: 'int64' }));
  const vectors = T.keep(T.tidy(() => te.embeddings.tokens(ids).detach()).requiresGrad_(true));
  /** Gradients of the given leaves through the encoder (a loss on every output), and the tape's segment count. */
  const grads = (leaves: T.Tensor[], tape: T.CheckpointTape | null, withVectors: boolean) => gradientsOf(() => T.tidy(() => {
    const o = te.forward(ids, withVectors ? { tokenVectors: vectors.mul(1) } : {});
    return o.lastHidden.pow(2).mean().add(o.pooled.sum());
  }), leaves, tape);
  const layers = te.cfg.layers;
  assert.equal(grads([], new T.CheckpointTape(), false).segments, 0, 'a frozen encoder on plain tokens is not taped');
  const compare = (leaves: T.Tensor[], withVectors: boolean, what: string) => {
    const plain = grads(leaves, null, withVectors).out;
    const { out: taped, segments } = grads(leaves, new T.CheckpointTape(), withVectors);
    assert.equal(segments, layers, `${what}: one segment per layer`);
    plain.forEach((g, i) => assert.ok(maxDiff(g, taped[i]) <= 1e-5 * Math.max(maxAbs(g), 1e-8), `${what}: gradient ${i} differs by ${maxDiff(g, taped[i])}`));
    assert.ok(maxAbs(plain[0]) > 0, `${what}: a gradient flows`);
    for (const t of [...plain, ...taped]) t.dispose();
  };
  compare([vectors], true, 'textual inversion');
  const params = te.parameters();
  for (const p of params) p.requiresGrad_(true);
  compare(params, false, 'a trained encoder');
  for (const p of params) p.requiresGrad_(false);
  for (const t of [ids, vectors]) t.dispose();
  model.dispose();
});

/** Two 64×64 pictures, batch 1, fixed order (as test/training/loop.test.ts). */
function pictures(captions: string[]): TrainData {
  const make = (i: number): T.Tensor => T.tidy(() => {
    const x = T.full([1, 3, 64, 64], i % 2 ? 0.8 : -0.8);
    return x.add(T.linspace(-0.5, 0.5, 64).reshape(1, 1, 1, 64).mul(i % 2 ? 1 : -1));
  });
  const batch = (e: number, i: number): TrainBatch => {
    const k = (e + i) % captions.length;
    return { pixels: make(k), captions: [captions[k]], masks: null, weights: [1], keys: [`img${k}`] };
  };
  return { batchesPerEpoch: captions.length, batch, validation: () => captions.map((_, k) => batch(0, k)) };
}

async function losses(make: (m: StableDiffusion) => Technique, checkpointing: boolean, name: string): Promise<{ losses: number[]; params: number[] }> {
  const model = loadStableDiffusion(ckpt, { hash: false });
  const tech = make(model);
  const work = join(tmp.dir, `${name}-${checkpointing}`);
  const t = new Trainer(tech, pictures(['a sks square', 'a sks square on a ground']), { steps: 4, seed: 5, workDir: work, out: join(work, `p${tech.extension}`), gradientCheckpointing: checkpointing });
  const r = await t.run();
  assert.equal(r.status, 'done');
  const params = T.tidy(() => tech.groups().flatMap((g) => g.params.slice(0, 3).map(([, p]) => p.flatten().slice(0, 0, 4).toArray() as unknown as number[]).flat()));
  t.dispose();
  tech.dispose();
  model.dispose();
  return { losses: r.records.map((x) => x.loss), params };
}

const techniques: [string, (m: StableDiffusion) => Technique][] = [
  ['DreamBooth', (m) => new DreamBoothTechnique(m, { token: 'sks', lr: 1e-3 })],
  ['LoRA with the text encoder', (m) => new LoraTechnique(m, { rank: 2, alpha: 2, lr: 1e-2, trainTextEncoder: true, saveDtype: 'fp32', seed: 1 })],
  ['an embedding', (m) => new EmbeddingTechnique(m, { name: 'sks', initText: 'square', lr: 5e-2 })],
  ['hypernetwork with dropout', (m) => new HypernetworkTechnique(m, { name: 'hn', layerStructure: [1, 2, 1], dropoutStructure: [0, 0.3, 0], lr: 1e-3, seed: 1 })],
];
for (const [name, make] of techniques) {
  test(`${name} trains the same with gradient checkpointing`, async () => {
    const off = await losses(make, false, name);
    const live = T.memoryStats().live; // after one run: what stays for the process (caches) is there
    const on = await losses(make, true, name);
    assert.equal(on.losses.length, 4);
    on.losses.forEach((l, i) => assert.ok(Math.abs(l - off.losses[i]) < 1e-5 * Math.max(1, Math.abs(off.losses[i])), `step ${i + 1}: ${l} vs ${off.losses[i]}`));
    assert.ok(off.losses.some((l, i) => i > 0 && l !== off.losses[0]), 'the runs do train');
    const worst = Math.max(...on.params.map((p, i) => Math.abs(p - off.params[i])));
    assert.ok(worst < 1e-5, `trained weights differ by ${worst}`);
    assert.equal(T.memoryStats().live, live, 'nothing left behind by the tape');
  });
}
