// LoRA adapters (src/adapters/lora.ts) against the training fixture (fixtures README §6) and the
// kohya target list (specs/appendix/sd1_lora_modules.tsv). Tolerances sit next to each check.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as T from '../../src/torch/index.ts';
import { SafetensorsFile, saveSafetensors } from '../../src/formats/safetensors.ts';
import { saveTorchFile } from '../../src/formats/torchfile.ts';
import { loraToKohya, loraToPeft, type LoraFile } from '../../src/formats/layouts/lora.ts';
import { UNet2DConditionModel } from '../../src/models/unet.ts';
import { CLIPTextModel } from '../../src/models/clip.ts';
import { SD15_TEXT, SD15_UNET, unetConfigFromDiffusers } from '../../src/models/config.ts';
import { loadStableDiffusion, type StableDiffusion } from '../../src/models/load.ts';
import * as loraCore from '../../src/adapters/lora.ts';
import * as loraFile from '../../src/adapters/lora-file.ts';

const lora = { ...loraCore, ...loraFile };
import { parseLoraArg, runMerge } from '../../src/cli/merge.ts';
import { writeTinyCheckpoint } from '../sampling/tiny-sd.ts';
import { DEVICE, SPECS, assertClose, fixture, maxAbsDiff, tempDir } from '../helpers.ts';

function loadUnet(device = DEVICE): UNet2DConditionModel {
  const cfg = unetConfigFromDiffusers(JSON.parse(readFileSync(fixture('unet', 'sd1', 'config.json'), 'utf8')));
  const file = SafetensorsFile.open(fixture('unet', 'sd1', 'diffusion_pytorch_model.safetensors'));
  const vb = T.nn.VarBuilder.from(file, { device });
  const unet = new UNet2DConditionModel(vb, cfg);
  vb.finish({ what: 'unet/sd1' });
  file.close();
  return unet;
}

/** The fixture step's inputs on `device` (the caller disposes them). */
function stepInputs(device = DEVICE): { noisy: T.Tensor; t: T.Tensor; ehs: T.Tensor; noise: T.Tensor; pred: T.Tensor; loss: number } {
  const io = SafetensorsFile.open(fixture('training', 'lora_step_io.safetensors'));
  const get = (k: string) => T.tidy(() => io.get(k).to(device));
  const lossT = io.get('loss');
  const r = { noisy: get('noisy_latents'), t: get('timesteps'), ehs: get('encoder_hidden_states'), noise: get('noise'), pred: io.get('pred'), loss: lossT.item() };
  lossT.dispose();
  io.close();
  return r;
}

function disposeInputs(x: ReturnType<typeof stepInputs>): void {
  for (const t of [x.noisy, x.t, x.ehs, x.noise, x.pred]) t.dispose();
}

/** UNet output as numbers, without building a graph. */
function run(unet: UNet2DConditionModel, x: ReturnType<typeof stepInputs>): number[] {
  return T.noGrad(() => T.tidy(() => unet.forward(x.noisy, x.t, x.ehs).toArray()));
}

const ATTN_PROJ = /attn[12]\.(to_q|to_k|to_v|to_out\.0)$/;

test('(a) fixture: LoRA on the 48 attention projections gives the reference pred, loss and gradients', () => {
  const unet = loadUnet();
  unet.requiresGrad_(false);
  const file = lora.loadLoraFile(fixture('training', 'lora_init.safetensors'), { unet });
  assert.equal(file.format, 'kohya');
  assert.equal(file.modules.size, 48);
  assert.deepEqual(file.unloaded, []);
  for (const m of file.modules.values()) assert.equal(m.alpha, 4);
  // The fixture's targets are loraTargets() narrowed to to_q/to_k/to_v/to_out.0, and meta.json's list.
  const meta = JSON.parse(readFileSync(fixture('training', 'meta.json'), 'utf8')) as { lora: { module_paths: string[] } };
  const targets = lora.loraTargets(unet, null).filter((p) => ATTN_PROJ.test(p));
  assert.deepEqual([...targets].sort(), [...file.modules.keys()].sort());
  assert.deepEqual([...targets].sort(), meta.lora.module_paths.map((p) => `unet.${p}`).sort());

  const h = lora.injectLora({ unet }, { from: file, targets });
  const grads = SafetensorsFile.open(fixture('training', 'lora_grads.safetensors'));
  assert.deepEqual([...h.namedParameters().keys()].sort(), [...grads.keys()].sort());
  assert.deepEqual([...lora.loraParameters({ unet }).keys()].sort(), [...grads.keys()].sort());

  const x = stepInputs();
  const loss = T.tidy(() => {
    const pred = unet.forward(x.noisy, x.t, x.ehs);
    // atol 1e-4: the fixture README's tolerance for UNet outputs.
    const err = assertClose(pred.toArray(), x.pred.toArray(), 1e-4, 'LoRA pred');
    console.log(`# lora fixture pred: max abs error ${err.toExponential(2)}`);
    const l = T.mseLoss(pred, x.noise);
    l.backward();
    return l.item(); // .item(): waits for the device
  });
  // rtol 1e-5 against the fp32 reference loss.
  assert.ok(Math.abs(loss - 1.3013912439346313) <= 1e-5 * 1.3013912439346313, `loss ${loss}`);
  assert.ok(Math.abs(loss - x.loss) <= 1e-5 * x.loss);
  let worst = 0;
  for (const [k, p] of h.namedParameters()) {
    const g = p.grad;
    assert.ok(g, `${k} has no gradient`);
    const ref = grads.get(k);
    const refArr = ref.toArray();
    const peak = Math.max(...refArr.map(Math.abs));
    // atol 1e-6, or rtol 1e-3 of the tensor's largest gradient.
    const tol = Math.max(1e-6, 1e-3 * peak);
    const d = maxAbsDiff(g.toArray(), refArr);
    assert.ok(d <= tol, `${k}: gradient max abs error ${d} exceeds ${tol}`);
    worst = Math.max(worst, d / Math.max(peak, 1e-12));
    g.dispose();
    ref.dispose();
  }
  console.log(`# lora fixture grads: worst error / tensor max ${worst.toExponential(2)}`);
  // Only the LoRA got gradients: the base stayed frozen.
  for (const [k, p] of unet.namedParameters()) if (!k.includes('lora_')) assert.equal(p.requiresGrad, false, k);
  grads.close();
  disposeInputs(x);
  h.remove();
  lora.disposeLoraFile(file);
  unet.dispose();
});

test('(b) a fresh kohya-initialised LoRA leaves the output exactly equal to the base', () => {
  const unet = loadUnet();
  const x = stepInputs();
  const base = run(unet, x);
  const h = lora.injectLora({ unet }, { rank: 4, alpha: 1 }, 1234);
  // 6 Transformer2D × 12 layers in the tiny UNet.
  assert.equal(h.modules.size, 72);
  for (const [path, b] of h.modules) {
    assert.equal(b.scale, 0.25, path);
    const up = b.up.toArray();
    assert.ok(up.every((v) => v === 0), `${path}: lora_up starts at zero`);
    const down = b.down.toArray();
    const fanIn = b.down.shape.slice(1).reduce((a, c) => a * c, 1);
    const bound = 1 / Math.sqrt(fanIn);
    assert.ok(down.every((v) => Math.abs(v) <= bound), `${path}: lora_down within U(±1/√${fanIn})`);
    assert.ok(Math.max(...down.map(Math.abs)) > bound / 2, `${path}: lora_down is not all small`);
  }
  assert.equal(maxAbsDiff(run(unet, x), base), 0);
  const first = [...h.modules.values()][0].down.toArray();
  h.remove();
  // Same seed, same LoRA.
  const h2 = lora.injectLora({ unet }, { rank: 4, alpha: 1 }, 1234);
  assert.deepEqual([...h2.modules.values()][0].down.toArray(), first);
  h2.remove();
  disposeInputs(x);
  unet.dispose();
});

test('(c) save as kohya / PEFT / .pt and reload with loadLoraFile: same keys, shapes, alpha and values', () => {
  const unet = loadUnet('cpu');
  const h = lora.injectLora({ unet }, { rank: 4, alpha: 2, convRank: 2, convAlpha: 1 }, 7);
  // LoCon: resnet, sampler and shortcut layers join the 72 transformer ones.
  const locon = lora.loraTargets(unet, null, { conv: true });
  assert.equal(h.modules.size, locon.length);
  assert.ok(locon.length > 72);
  T.noGrad(() => {
    for (const b of h.modules.values()) b.up.normal_(0, 0.1);
  });
  const conv1 = h.modules.get('unet.down_blocks.0.resnets.0.conv1')!;
  assert.deepEqual([conv1.down.shape, conv1.up.shape, conv1.alpha], [[2, 16, 3, 3], [16, 2, 1, 1], 1]);
  const temb = h.modules.get('unet.down_blocks.0.resnets.0.time_emb_proj')!;
  assert.deepEqual([temb.down.shape, temb.up.shape, temb.alpha], [[4, 64], [16, 4], 2]);
  const projIn = h.modules.get('unet.down_blocks.0.attentions.0.proj_in')!;
  assert.deepEqual([projIn.down.shape, projIn.up.shape], [[4, 16, 1, 1], [16, 4, 1, 1]]);

  const saved: LoraFile = h.toLoraFile({ ss_output_name: 'test' });
  assert.equal(saved.metadata.ss_network_dim, '4');
  assert.equal(saved.metadata.ss_network_alpha, '2.0');
  assert.deepEqual(JSON.parse(saved.metadata.ss_network_args), { conv_dim: '2', conv_alpha: '1.0' });
  const { dir, cleanup } = tempDir();
  try {
    const kohya = loraToKohya(saved);
    const peft = loraToPeft(saved);
    saveSafetensors(join(dir, 'k.safetensors'), kohya.tensors, kohya.metadata);
    saveSafetensors(join(dir, 'p.safetensors'), peft.tensors, peft.metadata);
    saveTorchFile(join(dir, 'k.pt'), kohya.tensors);
    const kohyaKeys = [...kohya.tensors.keys()].sort();
    const expected = [...h.namedParameters().keys(), ...[...h.modules.keys()].map((p) => `${p.replace(/^unet\./, 'lora_unet_').replace(/\./g, '_')}.alpha`)].sort();
    assert.deepEqual(kohyaKeys, expected);
    for (const t of [...kohya.tensors.values(), ...peft.tensors.values()]) t.dispose();
    for (const [f, format] of [['k.safetensors', 'kohya'], ['p.safetensors', 'peft'], ['k.pt', 'kohya']] as const) {
      const back = lora.loadLoraFile(join(dir, f), { unet });
      assert.equal(back.format, format, f);
      assert.deepEqual([...back.modules.keys()].sort(), [...saved.modules.keys()].sort(), f);
      for (const [p, m] of saved.modules) {
        const b = back.modules.get(p)!;
        assert.deepEqual(b.down.shape, m.down.shape, `${f} ${p} down`);
        assert.deepEqual(b.up.shape, m.up.shape, `${f} ${p} up`);
        assert.equal(b.alpha, m.alpha, `${f} ${p} alpha`);
        assert.equal(maxAbsDiff(b.down.toArray(), m.down.toArray()), 0);
        assert.equal(maxAbsDiff(b.up.toArray(), m.up.toArray()), 0);
      }
      if (format === 'kohya' && f.endsWith('.safetensors')) assert.equal(back.metadata.ss_output_name, 'test');
      lora.disposeLoraFile(back);
    }
  } finally {
    cleanup();
  }
  // The snapshot is a copy: training on does not change it.
  const before = saved.modules.get('unet.down_blocks.0.resnets.0.conv1')!.up.toArray();
  T.noGrad(() => conv1.up.add_(1));
  assert.deepEqual(saved.modules.get('unet.down_blocks.0.resnets.0.conv1')!.up.toArray(), before);
  lora.disposeLoraFile(saved);
  h.remove();
  unet.dispose();
});

/** Sample i of the step inputs (views; the caller disposes them with disposeInputs). */
function sample(x: ReturnType<typeof stepInputs>, i: number): ReturnType<typeof stepInputs> {
  const s = (t: T.Tensor) => t.slice(0, i, i + 1);
  return { noisy: s(x.noisy), t: s(x.t), ehs: s(x.ehs), noise: s(x.noise), pred: s(x.pred), loss: NaN };
}

test('(d) applying a file: weight 0 is the base exactly, weight 1 the injected output; stacking and merging agree', () => {
  const unet = loadUnet();
  const all = stepInputs();
  // Sample 1 (t = 700) only, to keep the file fast: on CPUs sample 0 with this LoRA runs ~7× slower (data-dependent).
  const x = sample(all, 1);
  disposeInputs(all);
  const base = run(unet, x);
  const file = lora.loadLoraFile(fixture('training', 'lora_init.safetensors'), { unet });
  const inj = lora.injectLora({ unet }, { from: file });
  const injected = run(unet, x);
  inj.remove();
  // atol 1e-4 against the reference pred (as in (a)).
  assertClose(injected, x.pred.toArray(), 1e-4, 'injected');

  const applied = lora.applyLoraFiles({ unet }, [{ lora: file, unet: 0 }]);
  assert.equal(maxAbsDiff(run(unet, x), base), 0, 'weight 0 = base');
  applied.setWeights(0, 1);
  // Same operations as the injected LoRA: equal to float rounding (atol 1e-6).
  assertClose(run(unet, x), injected, 1e-6, 'applied at 1');
  applied.remove();
  assert.equal(maxAbsDiff(run(unet, x), base), 0, 'removed = base');

  // Two copies at 0.5 add the same delta as one at 1 (atol 1e-5).
  const twice = lora.applyLoraFiles({ unet }, [{ lora: file, unet: 0.5 }, { lora: file, unet: 0.5 }]);
  assertClose(run(unet, x), injected, 1e-5, 'stacked halves');
  twice.remove();

  // Merged into the weights ≈ wrapped (atol 1e-5); merging at -1 undoes it (atol 1e-5).
  const n = lora.mergeLoras({ unet }, [{ lora: file, unet: 1 }]);
  assert.equal(n, 48);
  const merged = run(unet, x);
  const err = assertClose(merged, injected, 1e-5, 'merged vs wrapped');
  console.log(`# lora merge vs wrap: max abs error ${err.toExponential(2)}`);
  lora.mergeLoras({ unet }, [{ lora: file, unet: -1 }]);
  assertClose(run(unet, x), base, 1e-5, 'unmerged');
  lora.disposeLoraFile(file);
  disposeInputs(x);
  unet.dispose();
});

test('(d) LoCon: 3×3, strided, 1×1 and CP-decomposed (lora_mid) conv LoRAs merge to what they compute wrapped', () => {
  const unet = loadUnet();
  const all = stepInputs();
  const x = sample(all, 1);
  disposeInputs(all);
  const base = run(unet, x);
  const h = lora.injectLora({ unet }, { rank: 4, alpha: 2, convRank: 3, convAlpha: 1 }, 11);
  const g = new T.Generator(12);
  T.noGrad(() => {
    for (const b of h.modules.values()) b.up.normal_(0, 0.2, g);
  });
  const file = h.toLoraFile();
  h.remove();
  // A CP-decomposed module on the stride-2 downsampler: 1×1 down, 3×3 mid, 1×1 up.
  const rnd = (...s: number[]) => T.randn(s, { generator: g }).mul(0.2);
  const cp = 'unet.down_blocks.0.downsamplers.0.conv';
  lora.disposeLoraFile({ metadata: {}, modules: new Map([[cp, file.modules.get(cp)!]]) });
  file.modules.set(cp, { down: rnd(2, 16, 1, 1), mid: rnd(2, 2, 3, 3), up: rnd(16, 2, 1, 1), alpha: 2 });
  const a = lora.applyLoraFiles({ unet }, [{ lora: file }]);
  const wrapped = run(unet, x);
  a.remove();
  assert.ok(maxAbsDiff(wrapped, base) > 1e-3, 'the LoRA changes the output');
  lora.mergeLoras({ unet }, [{ lora: file }]);
  // atol 1e-5: ΔW·x vs up(mid(down(x))) differ by float rounding only.
  const err = assertClose(run(unet, x), wrapped, 1e-5, 'LoCon merged vs wrapped');
  console.log(`# locon merge vs wrap: max abs error ${err.toExponential(2)}`);
  lora.disposeLoraFile(file);
  disposeInputs(x);
  unet.dispose();
});

/** Text-encoder output and UNet output of the tiny SD for fixed inputs. */
function tinyOutputs(sd: StableDiffusion): { te: number[]; unet: number[] } {
  return T.noGrad(() => T.tidy(() => {
    const ids = T.tensor([[49406, 320, 1125, 539, 320, 2368, 49407, 49407]], { dtype: 'int64' });
    const te = sd.textEncoder.forward(ids).lastHidden;
    const g = new T.Generator(5);
    const lat = T.randn([1, 4, 8, 8], { generator: g });
    const ctx = T.randn([1, 8, 32], { generator: g });
    return { te: te.toArray(), unet: sd.unet.forward(lat, 500, ctx).toArray() };
  }));
}

test('(d) text encoder and UNet weights on a whole model; sdtune merge writes the baked checkpoint', () => {
  const { dir, cleanup } = tempDir();
  try {
    const ckpt = writeTinyCheckpoint(dir);
    const sd = loadStableDiffusion(ckpt, { hash: false });
    const base = tinyOutputs(sd);
    // A LoRA on both parts with non-zero up, saved as a kohya file.
    const h = lora.injectLora(sd, { rank: 2, alpha: 1 }, 3);
    assert.equal([...h.modules.keys()].filter((p) => p.startsWith('text_encoder.')).length, 6 * sd.textEncoder.cfg.layers);
    const g = new T.Generator(9);
    T.noGrad(() => {
      for (const b of h.modules.values()) b.up.normal_(0, 0.5, g);
    });
    const saved = h.toLoraFile();
    h.remove();
    const k = loraToKohya(saved);
    const path = join(dir, 'both.safetensors');
    saveSafetensors(path, k.tensors, k.metadata);
    for (const t of k.tensors.values()) t.dispose();
    lora.disposeLoraFile(saved);

    const file = lora.loadLoraFile(path, sd);
    const a = lora.applyLoraFiles(sd, [{ lora: file, unet: 1, te: 0 }]);
    const unetOnly = tinyOutputs(sd);
    assert.equal(maxAbsDiff(unetOnly.te, base.te), 0, 'te weight 0: text encoder unchanged');
    assert.ok(maxAbsDiff(unetOnly.unet, base.unet) > 1e-4, 'unet weight 1 changes the UNet');
    a.setWeights(0, 0.7, 1.3);
    const wrapped = tinyOutputs(sd);
    assert.ok(maxAbsDiff(wrapped.te, base.te) > 1e-4, 'te weight 1.3 changes the text encoder');
    a.remove();
    assert.equal(maxAbsDiff(tinyOutputs(sd).unet, base.unet), 0);

    // sdtune merge with FILE:UNET_W:TE_W; the reloaded checkpoint matches the wrapped model (atol 1e-5).
    assert.deepEqual(parseLoraArg('C:\\loras\\x.safetensors:0.7:1.3'), { file: 'C:\\loras\\x.safetensors', unet: 0.7, te: 1.3 });
    assert.deepEqual(parseLoraArg('x.safetensors'), { file: 'x.safetensors', unet: 1, te: 1 });
    const out = join(dir, 'merged.safetensors');
    const r = runMerge(['--model', ckpt, '--lora', `${path}:0.7:1.3`, '--out', out]);
    assert.equal(r.loras[0].modules, file.modules.size);
    const m = loadStableDiffusion(out, { hash: false });
    const fromFile = tinyOutputs(m);
    assertClose(fromFile.te, wrapped.te, 1e-5, 'merged checkpoint te');
    assertClose(fromFile.unet, wrapped.unet, 1e-5, 'merged checkpoint unet');
    // The VAE went through unchanged.
    const v0 = sd.vae.stateDict();
    for (const [key, t] of m.vae.stateDict()) assert.equal(maxAbsDiff(t.toArray(), v0.get(key)!.toArray()), 0, key);
    m.dispose();

    const out16 = join(dir, 'merged16.safetensors');
    runMerge(['--model', ckpt, '--lora', path, '--out', out16, '--dtype', 'fp16']);
    const f16 = SafetensorsFile.open(out16);
    assert.equal(f16.dtype('model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight'), 'F16');
    assert.ok(f16.metadata['sdtune.merged_loras'].includes('both.safetensors'));
    f16.close();
    lora.disposeLoraFile(file);
    sd.dispose();
  } finally {
    cleanup();
  }
});

test('(e) remove() puts the original layer objects back and frees every tensor', () => {
  const unet = loadUnet('cpu');
  unet.requiresGrad_(false);
  const targets = lora.loraTargets(unet, null, { conv: true });
  const layers = targets.map((p) => unet.getModule(p.slice('unet.'.length)));
  const keys = [...unet.stateDict().keys()];
  const all = stepInputs('cpu');
  const x = sample(all, 1);
  disposeInputs(all);
  const live = T.memoryStats().live;
  for (let round = 0; round < 2; round++) {
    const h = lora.injectLora({ unet }, { rank: 2, convRank: 2 }, round);
    const w = unet.getModule(targets[0].slice('unet.'.length));
    assert.ok(w instanceof lora.LoraWrapper && w.base === layers[0]);
    assert.ok(unet.getModule('down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q') instanceof lora.LoRALinear);
    assert.ok(unet.getModule('down_blocks.0.resnets.0.conv1') instanceof lora.LoRAConv2d);
    // While wrapped, the layers keep their checkpoint keys and the LoRA adds kohya-suffixed ones.
    const wrappedKeys = [...unet.stateDict().keys()];
    assert.deepEqual(wrappedKeys.filter((k) => !/\.lora_(down|up)\.weight$/.test(k)), keys);
    assert.ok(wrappedKeys.includes('down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_down.weight'));
    T.tidy(() => {
      const l = T.mseLoss(unet.forward(x.noisy, x.t, x.ehs), x.noise);
      l.backward();
    });
    h.remove();
    h.remove(); // idempotent
    targets.forEach((p, i) => assert.equal(unet.getModule(p.slice('unet.'.length)), layers[i], p));
    assert.deepEqual([...unet.stateDict().keys()], keys);
    assert.ok(unet.parameters().every((p) => !p.requiresGrad), 'base requiresGrad restored');
    assert.equal(T.memoryStats().live, live, `round ${round}: live tensors`);
  }
  // Applied files too.
  const file = lora.loadLoraFile(fixture('training', 'lora_init.safetensors'), { unet });
  const liveWithFile = T.memoryStats().live;
  const a = lora.applyLoraFiles({ unet }, [{ lora: file }, { lora: file, unet: 0.5 }]);
  run(unet, x);
  a.remove();
  targets.forEach((p, i) => assert.equal(unet.getModule(p.slice('unet.'.length)), layers[i], p));
  assert.equal(T.memoryStats().live, liveWithFile);
  lora.disposeLoraFile(file);
  assert.equal(T.memoryStats().live, live);
  disposeInputs(x);
  unet.dispose();
});

test('(f) a LoRA for another architecture is refused with the file and the keys named', () => {
  const unet = loadUnet('cpu');
  const { dir, cleanup } = tempDir();
  try {
    const z = (...s: number[]) => T.zeros(s);
    const sd = new Map<string, T.Tensor>([
      // SD1.5 widths on a layer the tiny UNet has (16 wide): shape mismatch.
      ['lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight', z(4, 320)],
      ['lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight', z(320, 4)],
      ['lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha', T.tensor(4)],
      // A module the tiny UNet lacks, and a text encoder that was not given.
      ['lora_unet_down_blocks_2_attentions_1_proj_in.lora_down.weight', z(4, 1280, 1, 1)],
      ['lora_unet_down_blocks_2_attentions_1_proj_in.lora_up.weight', z(1280, 4, 1, 1)],
      ['lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight', z(4, 768)],
      ['lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight', z(768, 4)],
    ]);
    const path = join(dir, 'sd15-style.safetensors');
    saveSafetensors(path, sd, { ss_base_model_version: 'sd_v1' });
    for (const t of sd.values()) t.dispose();
    assert.throws(() => lora.loadLoraFile(path, { unet }), (e: unknown) => {
      assert.ok(e instanceof lora.LoraLoadError);
      const msg = e.message;
      assert.ok(msg.startsWith(path), msg);
      for (const k of ['lora_unet_down_blocks_2_attentions_1_proj_in.lora_down.weight', 'lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight', 'lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q']) {
        assert.ok(msg.includes(k), `message names ${k}: ${msg}`);
      }
      assert.ok(msg.includes('[4, 320]'), msg);
      assert.equal(e.unmatched.length, 4);
      assert.deepEqual(e.mismatched.map((m) => m.path), ['unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q']);
      return true;
    });
    // strict: false loads what fits (nothing here) and reports the rest.
    const loose = lora.loadLoraFile(path, { unet }, { strict: false });
    assert.equal(loose.modules.size, 0);
    assert.equal(loose.unloaded.length, 5);

    // An SDXL-style file: the message says what the file is.
    const xl = new Map<string, T.Tensor>([
      ['lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight', z(4, 1280)],
      ['lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight', z(1280, 4)],
    ]);
    const xlPath = join(dir, 'xl.safetensors');
    saveSafetensors(xlPath, xl, { ss_base_model_version: 'sdxl_base_v1-0' });
    for (const t of xl.values()) t.dispose();
    assert.throws(() => lora.loadLoraFile(xlPath, { unet }), /xl\.safetensors: .*lora_te2_text_model_encoder_layers_0_self_attn_q_proj\.lora_down\.weight.*SDXL LoRA/);

    // A LoraFile built in memory that does not fit: nothing is wrapped.
    const bad: LoraFile = { metadata: {}, modules: new Map([['unet.down_blocks.0.attentions.0.proj_in', { down: z(4, 32, 1, 1), up: z(16, 4, 1, 1), alpha: 4 }]]) };
    assert.throws(() => lora.applyLoraFiles({ unet }, [{ lora: bad }]), /lora_unet_down_blocks_0_attentions_0_proj_in \(lora_down \[4, 32, 1, 1\]/);
    assert.throws(() => lora.mergeLoras({ unet }, [{ lora: bad }]), lora.LoraMismatchError);
    assert.ok(!(unet.getModule('down_blocks.0.attentions.0.proj_in') instanceof lora.LoraWrapper));
    lora.disposeLoraFile(bad);
  } finally {
    cleanup();
  }
  unet.dispose();
});

test('kohya targets on the SD1.5 block structure match the appendix list (192 + 72, LoCon + 86)', () => {
  // SD15_UNET's blocks at a tenth of the width (same shortcut and sampler layout), SD15_TEXT's 12 layers.
  const unet = new UNet2DConditionModel(T.nn.VarBuilder.init(), { ...SD15_UNET, blockOutChannels: [32, 64, 128, 128], crossAttentionDim: 16 });
  const te = new CLIPTextModel(T.nn.VarBuilder.init(), { ...SD15_TEXT, vocabSize: 8, hiddenSize: 16, intermediateSize: 16, heads: 2 });
  const rows = readFileSync(join(SPECS, 'appendix', 'sd1_lora_modules.tsv'), 'utf8').trim().split('\n').slice(1).map((l) => l.split('\t'));
  const by = (pred: (kind: string) => boolean) => rows.filter((r) => pred(r[0])).map((r) => r[3]).sort();
  const plain = lora.loraTargets(unet, te);
  assert.equal(plain.filter((p) => p.startsWith('unet.')).length, 192);
  assert.equal(plain.filter((p) => p.startsWith('text_encoder.')).length, 72);
  assert.deepEqual([...plain].sort(), by((k) => k === 'default' || k === 'default(te)'));
  const withConv = lora.loraTargets(unet, te, { conv: true });
  assert.equal(withConv.length, 264 + 86);
  assert.deepEqual([...withConv].sort(), by((k) => k.startsWith('default') || k.startsWith('locon')));
  // Rank per kind: 3×3 convs get conv_dim, Linear and 1×1 layers network_dim; kohya names and kernels agree.
  const h = lora.injectLora({ unet, textEncoder: te }, { rank: 4, convRank: 2 }, 0);
  for (const r of rows.filter((x) => x[0].startsWith('default') || x[0].startsWith('locon'))) {
    const b = h.modules.get(r[3])!;
    assert.ok(b, r[3]);
    const orig = JSON.parse(r[4]) as number[];
    assert.equal(b.down.ndim, orig.length, r[1]);
    if (orig.length === 4) assert.deepEqual(b.down.shape.slice(2), orig.slice(2), r[1]);
    assert.equal(b.rank, r[0] === 'locon(conv_dim)' ? 2 : 4, r[1]);
    assert.ok(h.namedParameters().has(`${r[1]}.lora_down.weight`), r[1]);
  }
  h.remove();
  unet.dispose();
  te.dispose();
});
