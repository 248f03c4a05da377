// A1111 hypernetworks (sd-formats.md §7): module layout and maths against hand computations, the
// .pt file through the restricted reader, and application to the tiny SD1 UNet fixture
// (fixtures/unet/sd1: cross-attention width 32, blocks 16/32), so sizes [32, 16] reach both attn2
// and attn1. Tolerances are written at each comparison.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as T from '../../src/torch/index.ts';
import { SafetensorsFile } from '../../src/formats/safetensors.ts';
import { TorchDict, TorchTuple, loadTorchFile, saveTorchFile } from '../../src/formats/torchfile.ts';
import { ZipReader } from '../../src/formats/zip.ts';
import { hypernetworkModuleKeys } from '../../src/formats/layouts/index.ts';
import { UNet2DConditionModel } from '../../src/models/unet.ts';
import { unetConfigFromDiffusers } from '../../src/models/config.ts';
import type { Attention } from '../../src/models/attention.ts';
import {
  HyperContextLinear, Hypernetwork, HypernetworkModule, applyHypernetworks, type HypernetworkSettings,
} from '../../src/adapters/hypernetwork.ts';
import { REPO, assertClose, fixture, tempDir } from '../helpers.ts';

const S = (o: Partial<HypernetworkSettings> = {}): HypernetworkSettings => ({
  layerStructure: [1, 2, 1], activation: 'linear', addLayerNorm: false, dropoutStructure: [0, 0, 0], activateOutput: false, weightInit: 'Normal', ...o,
});

function keyShapes(m: T.nn.Module): [string, number[]][] {
  return [...m.stateDict()].map(([k, t]) => [k, t.shape]);
}

/** Row-major [rows, cols] matrix × vector, in float64 JS. */
function matVec(w: number[], b: number[], x: number[], rows: number, cols: number): number[] {
  const y: number[] = [];
  for (let r = 0; r < rows; r++) {
    let s = b[r];
    for (let c = 0; c < cols; c++) s += w[r * cols + c] * x[c];
    y.push(s);
  }
  return y;
}

describe('HypernetworkModule (§7.2)', () => {
  test('the three example rows of the §7.2 table: keys and shapes', () => {
    const rows: [Partial<HypernetworkSettings>, [string, number[]][]][] = [
      [{ activation: 'linear' }, [['linear.0.weight', [1536, 768]], ['linear.0.bias', [1536]], ['linear.1.weight', [768, 1536]], ['linear.1.bias', [768]]]],
      [{ activation: 'relu', activateOutput: false }, [['linear.0.weight', [1536, 768]], ['linear.0.bias', [1536]], ['linear.2.weight', [768, 1536]], ['linear.2.bias', [768]]]],
      [{ activation: 'relu', addLayerNorm: true }, [
        ['linear.0.weight', [1536, 768]], ['linear.0.bias', [1536]], ['linear.2.weight', [1536]], ['linear.2.bias', [1536]],
        ['linear.3.weight', [768, 1536]], ['linear.3.bias', [768]], ['linear.4.weight', [768]], ['linear.4.bias', [768]],
      ]],
    ];
    for (const [o, want] of rows) {
      const m = HypernetworkModule.create(768, S(o));
      assert.deepEqual(keyShapes(m), want, JSON.stringify(o));
      assert.deepEqual(keyShapes(m), [...hypernetworkModuleKeys(768, S(o))], `${JSON.stringify(o)} vs the layouts file`);
      m.dispose();
    }
    // relu + LN: Linear(0), ReLU(1), LN(2), Linear(3), LN(4).
    const m = HypernetworkModule.create(8, S({ activation: 'relu', addLayerNorm: true }));
    assert.deepEqual(m.layers.map((l) => `${l.index}:${l.kind}`), ['0:linear', '1:activation', '2:layernorm', '3:linear', '4:layernorm']);
    m.dispose();
    // Dropout by the structure, parameter-less, still numbered.
    const d = HypernetworkModule.create(8, S({ activation: 'relu', layerStructure: [1, 2, 2, 1], dropoutStructure: [0, 0.3, 0.3, 0] }));
    assert.deepEqual(d.layers.map((l) => `${l.index}:${l.kind}`), ['0:linear', '1:activation', '2:dropout', '3:linear', '4:activation', '5:dropout', '6:linear']);
    assert.deepEqual([...d.stateDict().keys()], ['linear.0.weight', 'linear.0.bias', 'linear.3.weight', 'linear.3.bias', 'linear.6.weight', 'linear.6.bias']);
    d.dispose();
  });

  test('forward = x + (W2·relu(W1·x + b1) + b2)·m, by hand (atol 1e-6)', () => {
    const dim = 4, hid = 8;
    const m = HypernetworkModule.create(dim, S({ activation: 'relu', weightInit: 'XavierNormal' }), { generator: new T.Generator(3) });
    m.eval();
    const sd = m.stateDict();
    const w1 = sd.get('linear.0.weight')!.toArray(), w2 = sd.get('linear.2.weight')!.toArray();
    // Biases are 0 after init; give them values so they are part of the check.
    T.noGrad(() => {
      sd.get('linear.0.bias')!.copy_(T.tensor([0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, -0.8]));
      sd.get('linear.2.bias')!.copy_(T.tensor([0.05, -0.05, 0.15, -0.15]));
    });
    const b1 = sd.get('linear.0.bias')!.toArray(), b2 = sd.get('linear.2.bias')!.toArray();
    const x = T.randn([2, 3, dim], { generator: new T.Generator(4) });
    const mult = 0.7;
    const y = T.noGrad(() => m.forward(x, mult));
    const xs = x.toArray();
    const want: number[] = [];
    for (let r = 0; r < 6; r++) {
      const xr = xs.slice(r * dim, (r + 1) * dim);
      const h = matVec(w1, b1, xr, hid, dim).map((v) => Math.max(v, 0));
      const o = matVec(w2, b2, h, dim, hid);
      want.push(...xr.map((v, i) => v + o[i] * mult));
    }
    assert.deepEqual(y.shape, [2, 3, dim]);
    assertClose(y.toArray(), want, 1e-6, 'module forward');
    // Training forces the multiplier to 1 (A1111), so the strength is ignored.
    m.train();
    const yt = T.noGrad(() => m.forward(x, mult));
    const y1 = T.noGrad(() => m.eval().forward(x, 1));
    assert.ok(yt.toBuffer().equals(y1.toBuffer()), 'training output = multiplier 1');
    // Multiplier 0 in eval: exactly x.
    const y0 = T.noGrad(() => m.forward(x, 0));
    assert.ok(y0.toBuffer().equals(x.toBuffer()));
    for (const t of [x, y, yt, y1, y0]) t.dispose();
    m.dispose();
  });

  test('swish is Hardswish, then LayerNorm, with the output activated (atol 1e-5)', () => {
    const dim = 3, hid = 6;
    const m = HypernetworkModule.create(dim, S({ activation: 'swish', addLayerNorm: true, activateOutput: true, weightInit: 'XavierUniform' }), { generator: new T.Generator(9) });
    m.eval();
    const sd = m.stateDict();
    const g = (k: string) => sd.get(k)!.toArray();
    const hswish = (v: number) => (v * Math.min(Math.max(v + 3, 0), 6)) / 6;
    const ln = (v: number[], w: number[], b: number[]) => {
      const mu = v.reduce((a, c) => a + c, 0) / v.length;
      const vr = v.reduce((a, c) => a + (c - mu) ** 2, 0) / v.length;
      return v.map((c, i) => ((c - mu) / Math.sqrt(vr + 1e-5)) * w[i] + b[i]);
    };
    const x = T.randn([5, dim], { generator: new T.Generator(1) });
    const xs = x.toArray();
    const want: number[] = [];
    for (let r = 0; r < 5; r++) {
      const xr = xs.slice(r * dim, (r + 1) * dim);
      let h = matVec(g('linear.0.weight'), g('linear.0.bias'), xr, hid, dim).map(hswish);
      h = ln(h, g('linear.2.weight'), g('linear.2.bias'));
      let o = matVec(g('linear.3.weight'), g('linear.3.bias'), h, dim, hid).map(hswish);
      o = ln(o, g('linear.5.weight'), g('linear.5.bias'));
      want.push(...xr.map((v, i) => v + o[i]));
    }
    assert.deepEqual(m.layers.map((l) => l.kind), ['linear', 'activation', 'layernorm', 'linear', 'activation', 'layernorm']);
    const y = T.noGrad(() => m.forward(x));
    assertClose(y.toArray(), want, 1e-5, 'hardswish + LN forward');
    x.dispose();
    y.dispose();
    m.dispose();
  });

  test('initialisation: Normal N(0, 0.01), LayerNorm weights N(0, 0.01), biases 0; Xavier/Kaiming; seeded', () => {
    const std = (a: number[]) => Math.sqrt(a.reduce((s, v) => s + v * v, 0) / a.length);
    const n = HypernetworkModule.create(64, S({ activation: 'relu', addLayerNorm: true }), { generator: new T.Generator(1) });
    const sd = n.stateDict();
    // 8192 draws: the sample std is within ~1% of 0.01; 5% allowed.
    assert.ok(Math.abs(std(sd.get('linear.0.weight')!.toArray()) - 0.01) < 5e-4);
    assert.ok(Math.abs(std(sd.get('linear.3.weight')!.toArray()) - 0.01) < 5e-4);
    // LayerNorm weight N(0, 0.01) (128 draws, 25% allowed), not ones: A1111's quirk.
    const lnw = sd.get('linear.2.weight')!.toArray();
    assert.ok(Math.abs(std(lnw) - 0.01) < 2.5e-3 && Math.max(...lnw.map(Math.abs)) < 0.1, `LN weight std ${std(lnw)}`);
    for (const k of ['linear.0.bias', 'linear.2.bias', 'linear.3.bias', 'linear.4.bias']) assert.ok(sd.get(k)!.toArray().every((v) => v === 0), k);
    // The same seed gives the same tensors, another seed others.
    const same = HypernetworkModule.create(64, S({ activation: 'relu', addLayerNorm: true }), { generator: new T.Generator(1) });
    const other = HypernetworkModule.create(64, S({ activation: 'relu', addLayerNorm: true }), { generator: new T.Generator(2) });
    for (const [k, t] of sd) assert.ok(t.toBuffer().equals(same.stateDict().get(k)!.toBuffer()), `seeded ${k}`);
    assert.ok(!sd.get('linear.0.weight')!.toBuffer().equals(other.stateDict().get('linear.0.weight')!.toBuffer()));
    for (const m of [n, same, other]) m.dispose();

    // Xavier uniform: U(±√(6/(in+out))); Kaiming normal: std √(2/in); biases 0; LN still N(0, 0.01).
    const xu = HypernetworkModule.create(64, S({ weightInit: 'XavierUniform', addLayerNorm: true }), { generator: new T.Generator(5) });
    const w = xu.stateDict().get('linear.0.weight')!.toArray();
    const bound = Math.sqrt(6 / (64 + 128));
    assert.ok(Math.max(...w.map(Math.abs)) <= bound && Math.max(...w.map(Math.abs)) > 0.95 * bound);
    assert.ok(Math.abs(std(xu.stateDict().get('linear.1.weight')!.toArray()) - 0.01) < 2.5e-3);
    xu.dispose();
    const kn = HypernetworkModule.create(64, S({ weightInit: 'KaimingNormal', activation: 'leakyrelu' }), { generator: new T.Generator(6) });
    assert.ok(Math.abs(std(kn.stateDict().get('linear.0.weight')!.toArray()) / Math.sqrt(2 / 64) - 1) < 0.05);
    assert.ok(kn.stateDict().get('linear.0.bias')!.toArray().every((v) => v === 0));
    kn.dispose();
  });

  test('settings that cannot work are refused with a sentence', () => {
    assert.throws(() => HypernetworkModule.create(4, S({ activation: 'prelu' })), /prelu.*cannot be used: PReLU has a learnable weight/);
    assert.throws(() => HypernetworkModule.create(4, S({ activation: 'bogus' })), /unknown activation "bogus"; use linear or one of relu, leakyrelu/);
    assert.throws(() => HypernetworkModule.create(4, S({ layerStructure: [2, 1] })), /must start and end with 1/);
    assert.throws(() => Hypernetwork.create('x', { weightInit: 'Uniform' as never }), /unknown weight initialisation "Uniform"/);
    // Every listed torch activation runs.
    for (const a of ['gelu', 'silu', 'mish', 'elu', 'selu', 'celu', 'relu6', 'hardsigmoid', 'hardtanh', 'softplus', 'softsign', 'tanhshrink', 'logsigmoid', 'rrelu', 'hardshrink', 'softshrink', 'tanh', 'sigmoid']) {
      const m = HypernetworkModule.create(4, S({ activation: a }));
      const y = T.noGrad(() => m.eval().forward(T.ones([1, 4])));
      assert.deepEqual(y.shape, [1, 4], a);
      y.dispose();
      m.dispose();
    }
  });
});

// ---- the tiny UNet ------------------------------------------------------------------------------

function loadUnet(): UNet2DConditionModel {
  const cfg = unetConfigFromDiffusers(JSON.parse(readFileSync(fixture('unet', 'sd1', 'config.json'), 'utf8')));
  const file = SafetensorsFile.open(fixture('unet', 'sd1', 'diffusion_pytorch_model.safetensors'));
  const vb = T.nn.VarBuilder.from(file);
  const unet = new UNet2DConditionModel(vb, cfg, { attention: 'math' });
  vb.finish({ what: 'unet/sd1' });
  file.close();
  return unet;
}

interface Inputs { sample: T.Tensor; t: T.Tensor; ctx: T.Tensor; dispose(): void }
function loadInputs(): Inputs {
  const f = SafetensorsFile.open(fixture('unet', 'inputs.safetensors'));
  const r = { sample: T.keep(f.get('sample')), t: T.keep(f.get('timestep_int')), ctx: T.keep(f.get('encoder_hidden_states')) };
  f.close();
  return { ...r, dispose: () => [r.sample, r.t, r.ctx].forEach((x) => x.dispose()) };
}

function run(unet: UNet2DConditionModel, ins: Inputs): Buffer {
  return T.noGrad(() => T.tidy(() => unet.forward(ins.sample, ins.t, ins.ctx).toBuffer()));
}

/** The attention of §7.3 written out: q from x, k/v from the hypernetwork-transformed contexts. */
function manualAttention(attn: Attention, base: Map<string, T.Tensor>, x: T.Tensor, ctxK: T.Tensor, ctxV: T.Tensor): T.Tensor {
  return T.tidy(() => {
    const [b, n] = x.shape;
    const m = ctxK.size(1);
    const h = attn.heads, d = attn.headDim;
    const q = T.linear(x, base.get('to_q.weight')!).reshape(b, n, h, d).transpose(1, 2);
    const k = T.linear(ctxK, base.get('to_k.weight')!).reshape(b, m, h, d).transpose(1, 2);
    const v = T.linear(ctxV, base.get('to_v.weight')!).reshape(b, m, h, d).transpose(1, 2);
    const p = q.matmul(k.transpose(-1, -2)).mul(1 / Math.sqrt(d)).softmax(-1);
    const o = p.matmul(v).transpose(1, 2).reshape(b, n, h * d);
    return T.linear(o, base.get('to_out.0.weight')!, base.get('to_out.0.bias')!);
  });
}

/** x + (W2·(W1·x + b1) + b2)·s for a 'linear' [1, 2, 1] module, from its tensors. */
function manualMlp(mod: HypernetworkModule, x: T.Tensor, s: number): T.Tensor {
  const sd = mod.stateDict();
  return T.tidy(() => x.add(T.linear(T.linear(x, sd.get('linear.0.weight')!, sd.get('linear.0.bias')!), sd.get('linear.1.weight')!, sd.get('linear.1.bias')!).mul(s)));
}

describe('applying hypernetworks to the UNet (§7.3)', () => {
  const BLOCK = 'down_blocks.0.attentions.0.transformer_blocks.0';

  test('strength 0 / none → the base output exactly; non-zero → differs, and one attention equals §7.3 by hand', () => {
    const unet = loadUnet().eval();
    const ins = loadInputs();
    const base = run(unet, ins);
    const net = Hypernetwork.create('hn', { sizes: [32, 16], weightInit: 'XavierNormal', seed: 11 });
    const originals = new Map<string, T.nn.Module>();
    for (const [p, m] of unet.namedModules()) if (/attn[12]\.to_[kv]$/.test(p)) originals.set(p, m);
    const live0 = T.memoryStats().live;

    // No hypernetwork, strength 0, bypass: bit-identical to the base.
    const none = applyHypernetworks(unet, []);
    assert.ok(run(unet, ins).equals(base), 'no hypernetwork');
    none.remove();
    const h = applyHypernetworks(unet, [{ net, strength: 0 }]);
    // 6 transformer blocks (down 2, mid 1, up 3) × attn1/attn2 × to_k/to_v.
    assert.equal(h.paths.length, 24);
    assert.deepEqual([...h.widths].sort((a, b) => a - b), [16, 32]);
    assert.ok(unet.getModule(`${BLOCK}.attn2.to_k`) instanceof HyperContextLinear);
    assert.ok(run(unet, ins).equals(base), 'strength 0');

    h.setStrength(0.8);
    const out = run(unet, ins);
    const a = new Float32Array(out.buffer, out.byteOffset, out.length / 4), b = new Float32Array(base.buffer, base.byteOffset, base.length / 4);
    const diff = Math.max(...Array.from(a, (v, i) => Math.abs(v - b[i])));
    console.log(`# hypernetwork at 0.8 changes the UNet output by up to ${diff.toExponential(2)}`);
    assert.ok(diff > 1e-3, `output should change, max diff ${diff}`);
    h.bypass(true);
    assert.ok(run(unet, ins).equals(base), 'bypassed');
    h.bypass(false);

    // The UNet's state dict keys are unchanged while applied (the wrapper shows its base's tensors).
    const sdKeys = [...unet.stateDict().keys()];
    assert.ok(sdKeys.includes(`${BLOCK}.attn2.to_k.weight`) && !sdKeys.some((k) => k.includes('linear.0')));

    // One block by hand: attn2 takes the 32-wide text context, attn1 its own 16-wide input.
    T.noGrad(() => T.tidy(() => {
      const blk = unet.getModule(BLOCK);
      const x = T.randn([2, 10, 16], { generator: new T.Generator(2) });
      for (const [name, ctx] of [['attn2', ins.ctx], ['attn1', x]] as const) {
        const attn = blk.getModule(name) as Attention;
        const w = attn.stateDict();
        const width = ctx.size(-1);
        const want = manualAttention(attn, w, x, manualMlp(net.module(width, 'k')!, ctx, 0.8), manualMlp(net.module(width, 'v')!, ctx, 0.8));
        const got = attn.forward(x, name === 'attn2' ? ctx : null);
        // fp32, different op order: 1e-5.
        const err = assertClose(got.toArray(), want.toArray(), 1e-5, `${name} with the hypernetwork`);
        console.log(`# ${name} (width ${width}) against the hand computation: max abs error ${err.toExponential(2)}`);
        const plain = manualAttention(attn, w, x, ctx, ctx);
        assert.ok(maxDiff(got, plain) > 1e-4, `${name}: the hypernetwork should change it`);
      }
    }));

    // remove(): the original Linear objects are back and no tensor is left over.
    h.remove();
    for (const [p, m] of originals) assert.equal(unet.getModule(p), m, p);
    assert.equal(T.memoryStats().live, live0);
    assert.ok(run(unet, ins).equals(base), 'after remove');
    h.remove(); // a second remove does nothing
    net.dispose();
    ins.dispose();
    unet.dispose();
  });

  test('several hypernetworks chain in order, k and v separately; applying twice is refused', () => {
    const unet = loadUnet().eval();
    const a = Hypernetwork.create('a', { sizes: [32], weightInit: 'XavierNormal', seed: 1 });
    const b = Hypernetwork.create('b', { sizes: [32, 16], weightInit: 'XavierNormal', seed: 2 });
    const h = applyHypernetworks(unet, [{ net: a, strength: 0.5 }, { net: b, strength: 1.5 }]);
    assert.throws(() => applyHypernetworks(unet, [{ net: a }]), /already has hypernetworks applied; remove\(\) them first/);
    T.noGrad(() => T.tidy(() => {
      const ctx = T.randn([1, 7, 32], { generator: new T.Generator(3) });
      const x16 = T.randn([1, 7, 16], { generator: new T.Generator(4) });
      for (const which of ['k', 'v'] as const) {
        const wrapper = unet.getModule(`${BLOCK}.attn2.to_${which}`) as HyperContextLinear;
        const wantCtx = manualMlp(b.module(32, which)!, manualMlp(a.module(32, which)!, ctx, 0.5), 1.5);
        assertClose(wrapper.forward(ctx).toArray(), wrapper.base.forward(wantCtx).toArray(), 1e-6, `chained ${which}`);
        // Width 16 (attn1): only b has a module for it.
        const w1 = unet.getModule(`${BLOCK}.attn1.to_${which}`) as HyperContextLinear;
        assertClose(w1.forward(x16).toArray(), w1.base.forward(manualMlp(b.module(16, which)!, x16, 1.5)).toArray(), 1e-6, `width 16 ${which}`);
      }
      // setStrength for one net only.
      h.setStrength(0, b);
      const wrapper = unet.getModule(`${BLOCK}.attn2.to_k`) as HyperContextLinear;
      assertClose(wrapper.forward(ctx).toArray(), wrapper.base.forward(manualMlp(a.module(32, 'k')!, ctx, 0.5)).toArray(), 1e-6, 'b at 0');
    }));
    h.remove();
    a.dispose();
    b.dispose();
    unet.dispose();
  });

  test('gradients reach the hypernetwork only; the UNet stays frozen', () => {
    const unet = loadUnet();
    unet.requiresGrad_(false);
    const ins = loadInputs();
    const net = Hypernetwork.create('hn', { sizes: [32, 16], activation: 'relu', addLayerNorm: true, seed: 5 });
    assert.ok(net.parameters().every((p) => !p.requiresGrad), 'new hypernetworks start frozen, in eval mode (A1111)');
    net.train();
    assert.equal(net.parameters().length, 2 * 2 * 8);
    const h = applyHypernetworks(unet, [{ net, strength: 0.3 }]);
    T.tidy(() => {
      const out = unet.forward(ins.sample, ins.t, ins.ctx);
      out.mul(out).mean().backward();
    });
    for (const [name, p] of net.namedParameters()) {
      if (!/linear\.[03]\.weight$/.test(name)) continue;
      const g = p.grad;
      assert.ok(g !== null, `${name} has a gradient`);
      const norm = T.tidy(() => g.abs().sum().item());
      assert.ok(norm > 0, `${name}: gradient is zero`);
      g.dispose();
    }
    for (const [name, p] of unet.namedParameters()) assert.equal(p.grad, null, `${name} is frozen`);
    net.eval();
    h.remove();
    net.dispose();
    ins.dispose();
    unet.dispose();
  });
});

function maxDiff(a: T.Tensor, b: T.Tensor): number {
  return T.tidy(() => a.sub(b).abs().max().item());
}

// ---- the file (§7.1, §2.4) ----------------------------------------------------------------------

describe('hypernetwork files', () => {
  const PT = join(REPO, 'test', 'data', 'pt');

  test('save → A1111 layout (tuple of OrderedDicts, settings, only data.pkl/data/N/version) → fromFile gives the same', () => {
    const tmp = tempDir();
    const net = Hypernetwork.create('my-hn', { sizes: [32, 16], activation: 'relu', addLayerNorm: true, useDropout: true, lastLayerDropout: true, weightInit: 'XavierUniform', seed: 8 });
    net.step = 1234;
    net.sdCheckpoint = 'e1441589a6';
    net.sdCheckpointName = 'v1-5-pruned-emaonly';
    try {
      const file = join(tmp.dir, 'my-hn.pt');
      net.save(file);

      // A1111's safe.py accepts only these names; data.pkl first, storages, then version.
      const zip = new ZipReader(file);
      const names = zip.entries.map((e) => e.name);
      const n = net.parameters().length;
      assert.deepEqual(names, ['my-hn/data.pkl', ...Array.from({ length: n }, (_, i) => `my-hn/data/${i}`), 'my-hn/version']);
      assert.ok(names.every((x) => /^[^/]+\/(data\/\d+|version|data\.pkl)$/.test(x)));
      assert.equal(zip.read(zip.get('my-hn/version')!).toString(), '3\n');
      zip.close();

      // The raw object tree, as torch.load would see it.
      const tree = loadTorchFile(file);
      assert.ok(tree instanceof TorchDict);
      assert.deepEqual([...tree.keys()], [32, 16, 'step', 'name', 'layer_structure', 'activation_func', 'is_layer_norm', 'weight_initialization',
        'sd_checkpoint', 'sd_checkpoint_name', 'activate_output', 'use_dropout', 'dropout_structure', 'last_layer_dropout', 'optional_info']);
      const pair = tree.get(32);
      assert.ok(pair instanceof TorchTuple && pair.length === 2, 'a (k, v) tuple');
      assert.ok(pair.items.every((sd) => sd instanceof TorchDict && sd.ordered), 'OrderedDict state dicts');
      // Linear 0, ReLU 1, LayerNorm 2, Dropout(0.3) 3, Linear 4, LayerNorm 5.
      assert.deepEqual([...(pair.items[0] as TorchDict).keys()], [...hypernetworkModuleKeys(32, net.settings).keys()]);
      assert.deepEqual([...(pair.items[0] as TorchDict).keys()].map(String).filter((k) => k.endsWith('weight')), ['linear.0.weight', 'linear.2.weight', 'linear.4.weight', 'linear.5.weight']);
      assert.deepEqual(
        ['step', 'name', 'layer_structure', 'activation_func', 'is_layer_norm', 'weight_initialization', 'sd_checkpoint', 'sd_checkpoint_name', 'activate_output', 'use_dropout', 'dropout_structure', 'last_layer_dropout', 'optional_info'].map((k) => tree.get(k)),
        [1234, 'my-hn', [1, 2, 1], 'relu', true, 'XavierUniform', 'e1441589a6', 'v1-5-pruned-emaonly', false, true, [0, 0.3, 0], true, null],
      );

      const live = T.memoryStats().live;
      const again = Hypernetwork.fromFile(file);
      assert.deepEqual([again.name, again.step, again.sdCheckpoint, again.sdCheckpointName, again.sizes], ['my-hn', 1234, 'e1441589a6', 'v1-5-pruned-emaonly', [32, 16]]);
      assert.deepEqual(again.settings, net.settings);
      const want = net.namedParameters(), got = again.namedParameters();
      assert.deepEqual(got.map(([k]) => k), want.map(([k]) => k));
      for (let i = 0; i < want.length; i++) assert.ok(got[i][1].toBuffer().equals(want[i][1].toBuffer()), `${want[i][0]} bit-exact`);
      again.dispose();
      // Loading keeps only the modules' own tensors: nothing from the file is left alive.
      assert.equal(T.memoryStats().live, live);
    } finally {
      net.dispose();
      tmp.cleanup();
    }
  });

  test('very old linear1/linear2 files load with A1111 defaults', () => {
    const tmp = tempDir();
    const w1 = T.randn([32, 16]), b1 = T.randn([32]), w2 = T.randn([16, 32]), b2 = T.randn([16]);
    const sd = () => ({ 'linear1.weight': w1, 'linear1.bias': b1, 'linear2.weight': w2, 'linear2.bias': b2 });
    try {
      const file = join(tmp.dir, 'old.pt');
      saveTorchFile(file, new Map([[16, new TorchTuple([sd(), sd()])]]));
      const net = Hypernetwork.fromFile(file);
      assert.deepEqual([net.name, net.settings.layerStructure, net.settings.activation, net.settings.activateOutput], ['old', [1, 2, 1], null, true]);
      const k = net.module(16, 'k')!.stateDict();
      assert.deepEqual([...k.keys()], ['linear.0.weight', 'linear.0.bias', 'linear.1.weight', 'linear.1.bias']);
      assert.ok(k.get('linear.1.weight')!.toBuffer().equals(w2.toBuffer()));
      net.dispose();
    } finally {
      [w1, b1, w2, b2].forEach((t) => t.dispose());
      tmp.cleanup();
    }
  });

  test('broken files: wrong shapes, a missing key, not a hypernetwork, an unusable activation — errors name the file', () => {
    const tmp = tempDir();
    const good = Hypernetwork.create('g', { sizes: [16], seed: 1 });
    const kv = () => good.module(16, 'k')!.stateDict();
    try {
      const settings = { layer_structure: [1, 2, 1], activation_func: 'linear' };
      const wrong = join(tmp.dir, 'wrong.pt');
      const bad = new Map(kv());
      const odd = T.zeros([3, 3]);
      bad.set('linear.0.weight', odd);
      saveTorchFile(wrong, { 16: new TorchTuple([bad, kv()]), ...settings } as never);
      assert.throws(() => Hypernetwork.fromFile(wrong), (e: Error) =>
        e.message.startsWith(`${wrong}: its tensors do not fit its own settings`) && /module 16 k: linear\.0\.weight is \[3, 3\], expected \[32, 16\]/.test(e.message));

      const missing = join(tmp.dir, 'missing.pt');
      const short = new Map(kv());
      short.delete('linear.1.bias');
      saveTorchFile(missing, new Map<string | number, never>([[16, new TorchTuple([kv(), short]) as never], ['layer_structure', [1, 2, 1] as never]]));
      assert.throws(() => Hypernetwork.fromFile(missing), (e: Error) => e.message.startsWith(missing) && /module 16 v: missing linear\.1\.bias/.test(e.message));

      const act = join(tmp.dir, 'act.pt');
      saveTorchFile(act, new Map<string | number, never>([[16, new TorchTuple([kv(), kv()]) as never], ['activation_func', 'prelu' as never]]));
      assert.throws(() => Hypernetwork.fromFile(act), (e: Error) => e.message.startsWith(`${act}: has settings sdtune cannot use`) && /PReLU/.test(e.message));

      const emb = join(PT, 'embedding.pt');
      assert.throws(() => Hypernetwork.fromFile(emb), (e: Error) => e.message.startsWith(`${emb}: is not an A1111 hypernetwork`));
      // test/data/pt/hypernetwork.pt stores stand-in widths under the real keys: refused, not misapplied.
      const standIn = join(PT, 'hypernetwork.pt');
      assert.throws(() => Hypernetwork.fromFile(standIn), (e: Error) => e.message.startsWith(standIn) && /module 320 k: linear\.0\.weight is \[2, 1\], expected \[640, 320\]/.test(e.message));
      odd.dispose();
    } finally {
      good.dispose();
      tmp.cleanup();
    }
  });
});
