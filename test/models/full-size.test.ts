// The full-size SD1.5 and SD2 models, built from the typed presets, against the key listings of
// real diffusers folders and of the single-file checkpoints diffusers' conversion script writes
// (fixtures/full_sd15_keys, README §7): every parameter name and shape, exactly, and the
// parameter counts. The modules are built on the 'meta' device (shapes, no storage), so this
// costs no memory. Then one SD1.5 UNet step with seeded random weights (PyTorch's default init,
// made here, never stored) at a tiny latent size, on the CPU: shape, finite values, and no tensor
// left alive once the model is disposed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as T from '../../src/torch/index.ts';
import { UNet2DConditionModel } from '../../src/models/unet.ts';
import { CLIPTextModel } from '../../src/models/clip.ts';
import { AutoencoderKL } from '../../src/models/vae.ts';
import { SD15_TEXT, SD15_UNET, SD2_TEXT, SD2_UNET, SD_VAE } from '../../src/models/config.ts';
import { diffusersShapesToLdm, ldmShapesToDiffusers, ldmToDiffusers } from '../../src/formats/layouts/index.ts';
import { fixture } from '../helpers.ts';

type Listing = Record<string, { shape: number[]; dtype: string }>;
type Part = 'unet' | 'text_encoder' | 'vae';
interface DiffusersListing {
  n_params: Record<Part, number>;
  keys: Record<Part, Listing>;
}

const FAMILIES = {
  sd15: { unet: SD15_UNET, text: SD15_TEXT, counts: { unet: 859_520_964, text_encoder: 123_060_480, vae: 83_653_863 } },
  sd2: { unet: SD2_UNET, text: SD2_TEXT, counts: { unet: 865_910_724, text_encoder: 340_387_840, vae: 83_653_863 } },
} as const;
type FamilyName = keyof typeof FAMILIES;

const readJson = <J>(name: string): J => JSON.parse(readFileSync(fixture('full_sd15_keys', name), 'utf8')) as J;

function build(family: FamilyName, part: Part, vb: T.nn.VarBuilder): T.nn.Module {
  const f = FAMILIES[family];
  if (part === 'unet') return new UNet2DConditionModel(vb, f.unet);
  if (part === 'text_encoder') return new CLIPTextModel(vb, f.text);
  return new AutoencoderKL(vb, SD_VAE);
}

function shapesOf(m: T.nn.Module): Map<string, number[]> {
  return new Map([...m.stateDict()].map(([k, t]) => [k, t.shape] as const));
}

/** Lists every key the two sides disagree on (so a failure says what to fix, not just "differs"). */
function assertSameShapes(got: ReadonlyMap<string, readonly number[]>, want: ReadonlyMap<string, readonly number[]>, what: string): void {
  const missing = [...want.keys()].filter((k) => !got.has(k));
  const extra = [...got.keys()].filter((k) => !want.has(k));
  const wrong = [...want].filter(([k, s]) => got.has(k) && got.get(k)!.join(',') !== s.join(',')).map(([k, s]) => `${k}: [${got.get(k)!.join(',')}] vs [${s.join(',')}]`);
  assert.deepEqual({ missing, extra, wrong }, { missing: [], extra: [], wrong: [] }, what);
}

const listingShapes = (l: Listing): Map<string, number[]> => new Map(Object.entries(l).map(([k, v]) => [k, v.shape] as const));

for (const family of ['sd15', 'sd2'] as const) {
  const listing = readJson<DiffusersListing>(`${family}_diffusers.json`);

  test(`${family}: the preset models have exactly the diffusers keys, shapes and parameter counts`, () => {
    const live0 = T.memoryStats().live;
    for (const part of ['unet', 'text_encoder', 'vae'] as const) {
      const m = build(family, part, T.nn.VarBuilder.init({ device: 'meta' }));
      try {
        assertSameShapes(shapesOf(m), listingShapes(listing.keys[part]), `${family} ${part}`);
        for (const [k, t] of m.stateDict()) assert.equal(t.dtype, listing.keys[part][k].dtype, `${family} ${part} ${k} dtype`);
        assert.equal(m.numParameters(), FAMILIES[family].counts[part], `${family} ${part} parameter count`);
        assert.equal(m.numParameters(), listing.n_params[part], `${family} ${part} parameter count (listing)`);
      } finally {
        m.dispose();
      }
    }
    assert.equal(T.memoryStats().live, live0, 'meta models leave no tensor alive');
  });

  test(`${family}: the single-file (LDM) checkpoint converts to the same keys and loads into the models`, () => {
    const ldm = readJson<{ keys: Listing }>(`${family}_ldm.json`).keys;
    const ldmShapes = listingShapes(ldm);
    // 1. Key form: the converter maps every LDM key, to exactly the diffusers listing.
    const conv = ldmShapesToDiffusers(ldmShapes);
    assert.deepEqual(conv.ignored, [], `${family}: LDM keys without a diffusers counterpart`);
    assertSameShapes(conv.unet, listingShapes(listing.keys.unet), `${family} LDM → diffusers UNet`);
    assertSameShapes(conv.vae, listingShapes(listing.keys.vae), `${family} LDM → diffusers VAE`);
    assertSameShapes(conv.textEncoder, listingShapes(listing.keys.text_encoder), `${family} LDM → diffusers text encoder`);

    // 2. Back: the models' own shapes written as a single file give the script's listing (which has
    // no SD1 position_ids and none of SD2's unused 24th OpenCLIP block, README §7).
    const live0 = T.memoryStats().live;
    const parts = { unet: 'unet', text_encoder: 'textEncoder', vae: 'vae' } as const;
    const modelShapes: { unet?: Map<string, number[]>; vae?: Map<string, number[]>; textEncoder?: Map<string, number[]> } = {};
    for (const part of ['unet', 'text_encoder', 'vae'] as const) {
      const m = build(family, part, T.nn.VarBuilder.init({ device: 'meta' }));
      modelShapes[parts[part]] = shapesOf(m);
      m.dispose();
    }
    assertSameShapes(diffusersShapesToLdm(modelShapes, family === 'sd15' ? 'sd1' : 'sd2', { positionIds: false, sd2TextExtras: 'omit' }), ldmShapes, `${family} models → LDM`);

    // 3. Tensor form, as loadSingleFile runs it: meta tensors of the LDM listing through
    // ldmToDiffusers, then each model built from the result; finish() throws on any missing,
    // unused or misshapen key.
    const sd = new Map([...ldmShapes].map(([k, s]) => [k, T.empty(s, { device: 'meta' })] as const));
    const tconv = ldmToDiffusers(sd);
    try {
      for (const part of ['unet', 'text_encoder', 'vae'] as const) {
        const vb = T.nn.VarBuilder.from(tconv[parts[part]], { device: 'meta' });
        const m = build(family, part, vb);
        try {
          vb.finish({ what: `${family} ${part} from the LDM listing` });
          assert.equal(m.numParameters(), FAMILIES[family].counts[part]);
        } finally {
          m.dispose();
        }
      }
    } finally {
      for (const map of [sd, tconv.unet, tconv.vae, tconv.textEncoder, tconv.extras]) for (const t of map.values()) t.dispose();
    }
    assert.equal(T.memoryStats().live, live0, 'conversion leaves no tensor alive');
  });
}

test('sd15: one UNet step with seeded random weights on the CPU at 8×8 latents', () => {
  const live0 = T.memoryStats().live;
  T.manualSeed(1234);
  // 3.4 GB of fp32 weights, PyTorch's default init (kaiming-uniform), built fresh for this test.
  const unet = new UNet2DConditionModel(T.nn.VarBuilder.init({ device: 'cpu' }), SD15_UNET);
  try {
    unet.eval();
    T.noGrad(() => T.tidy(() => {
      const g = new T.Generator(0);
      const sample = T.randn([1, 4, 8, 8], { generator: g });
      const context = T.randn([1, 77, 768], { generator: g });
      const out = unet.forward(sample, 999, context);
      assert.deepEqual(out.shape, [1, 4, 8, 8]);
      // .item(): waits for the computation (a host sync)
      assert.equal(out.isfinite().all().item(), 1, 'UNet output has NaN or Inf');
      const std = out.std([0, 1, 2, 3]).item();
      assert.ok(std > 0, `UNet output is constant (std ${std})`);
    }));
  } finally {
    unet.dispose();
  }
  assert.equal(T.memoryStats().live, live0, 'every tensor of the step and the model is freed');
});
