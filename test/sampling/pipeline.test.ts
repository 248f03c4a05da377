// The generation pipeline end to end on a tiny model (tiny-sd.ts):
//   - the loop (seeding, init_noise_sigma, scale_model_input, step order) reproduces diffusers'
//     recorded 20-step trajectories when the UNet is the fixtures' fake denoiser;
//   - classifier-free guidance and the conditioning equal a hand-written diffusers-style loop;
//   - the LDM single file and the diffusers folder converted from it give the same image;
//   - img2img, A1111 prompt features (editing, AND, emphasis), PNG parameters, bad input.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import * as T from '../../src/torch/index.ts';
import { loadStableDiffusion, type StableDiffusion } from '../../src/models/load.ts';
import { generate, generateWithLatents, parametersText, tensorToImages, validateOptions } from '../../src/sampling/pipeline.ts';
import { NoiseSchedule, parseSchedulerConfig } from '../../src/sampling/schedule.ts';
import { Conditioning, encodeText } from '../../src/sampling/conditioning.ts';
import { makeScheduler, sampleLoop, type SchedulerName } from '../../src/sampling/schedulers.ts';
import { convert } from '../../src/models/convert.ts';
import { decodePng, encodePng } from '../../src/formats/png.ts';
import { PromptError } from '../../src/text/prompt.ts';
import { frame } from '../../src/text/tokenizer.ts';
import { tempDir } from '../helpers.ts';
import { assertRel, fakeModel, ref, schedulersJson } from './fixtures.ts';
import { writeTinyCheckpoint, writeTinySd2Folder } from './tiny-sd.ts';

const RTOL_LOOP = 1e-4; // fixtures README: 20 compounded steps
let tmp: ReturnType<typeof tempDir>;
let ckpt: string;
let model: StableDiffusion;

before(() => {
  tmp = tempDir();
  ckpt = writeTinyCheckpoint(tmp.dir);
  model = loadStableDiffusion(ckpt);
});
after(() => {
  model.dispose();
  tmp.cleanup();
});

/** The model with its UNet replaced by a function of (input, t, context). */
function withUnet(m: StableDiffusion, forward: (x: T.Tensor, t: number, ctx: T.Tensor) => T.Tensor): StableDiffusion {
  const unet = Object.create(m.unet) as StableDiffusion['unet'];
  Object.defineProperty(unet, 'forward', { value: (x: T.Tensor, t: number | T.Tensor, ctx: T.Tensor) => forward(x, Number(t), ctx) });
  return { ...m, unet };
}

function psnr(a: Uint8Array, b: Uint8Array): number {
  let se = 0;
  for (let i = 0; i < a.length; i++) se += (a[i] - b[i]) ** 2;
  return se === 0 ? Infinity : 10 * Math.log10((255 * 255) / (se / a.length));
}

test('the generation loop reproduces diffusers\' recorded trajectories (fake denoiser, seed 42, 20 steps)', () => {
  const traj = schedulersJson('trajectories.json');
  const pattern = ref('trajectory.pattern');
  const fake = fakeModel(pattern);
  const m = withUnet(model, (x, t) => fake(x, t));
  const cases: [string, SchedulerName, boolean][] = [['ddim', 'ddim', false], ['euler', 'euler', false], ['euler_karras', 'euler', true], ['dpmpp_2m', 'dpmpp_2m', false], ['dpmpp_2m_karras', 'dpmpp_2m', true]];
  for (const [fx, sampler, karras] of cases) {
    assert.ok(traj.runs[fx], fx);
    // 64×64 pixels = 8×8 latents, the trajectories' size; CFG 1 runs the model once per step.
    const r = generateWithLatents(m, { prompt: 'a cat', seed: 42, steps: 20, sampler, karras, cfg: 1, width: 64, height: 64 });
    const want = ref(`trajectory.${fx}.final`);
    const e = assertRel(r.latents!, want, RTOL_LOOP, `${fx} final latents`);
    console.log(`# pipeline ${fx}: relative error of the final latents ${e.toExponential(2)}`);
    want.dispose();
    r.latents!.dispose();
  }
  pattern.dispose();
});

test('classifier-free guidance and conditioning equal a diffusers-style loop written out by hand', () => {
  const prompt = 'a red star';
  const negative = 'blurry';
  const seed = 7;
  const r = generateWithLatents(model, { prompt, negative, seed, steps: 4, sampler: 'ddim', cfg: 7.5, width: 64, height: 64, batch: 2 });
  // By hand: tokenizer(padding=max_length) → text encoder; randn on a CPU generator; DDIM loop.
  const expected = T.noGrad(() => T.tidy(() => {
    const enc = (text: string) => model.textEncoder.forward(T.tensor([frame(model.tokenizer.encode(text)).inputIds], { dtype: 'int64' })).lastHidden;
    const context = T.cat([enc(negative), enc(negative), enc(prompt), enc(prompt)], 0);
    const sched = makeScheduler('ddim', model.schedulerConfig);
    sched.setTimesteps(4);
    const xT = T.randn([2, 4, 8, 8], { generator: new T.Generator(seed) });
    return sampleLoop(sched, xT, (x, t) => {
      const [u, c] = model.unet.forward(T.cat([x, x], 0), t, context).chunk(2, 0);
      return u.add(c.sub(u).mul(7.5));
    });
  }));
  const d = r.latents!.sub(expected).abs().max().item(); // .item(): host sync
  assert.ok(d < 1e-5, `latents differ from the hand-written loop by ${d}`);
  // The batch shares one generator: its two images differ.
  assert.ok(psnr(r.images[0].image.data, r.images[1].image.data) < 40, 'batch images should differ');
  expected.dispose();
  r.latents!.dispose();
});

test('a single-file checkpoint and the diffusers folder made from it give the same image; PNG info round-trips', () => {
  const folder = join(tmp.dir, 'tiny-diffusers');
  convert(ckpt, folder);
  const m2 = loadStableDiffusion(folder);
  try {
    for (const sampler of ['euler_a', 'dpmpp_2m'] as const) {
      const o = { prompt: 'a small (blue:1.2) circle', negative: 'text', seed: 1234, steps: 6, sampler, width: 64, height: 64 };
      const a = generate(model, o)[0];
      const b = generate(m2, o)[0];
      assert.equal(psnr(a.image.data, b.image.data), Infinity, `${sampler}: the two loads should give the same image`);
      // Same seed, same image; another seed, another image.
      assert.equal(psnr(generate(model, o)[0].image.data, a.image.data), Infinity, 'same seed → same image');
      assert.ok(psnr(generate(model, { ...o, seed: 99 })[0].image.data, a.image.data) < 40, 'another seed → another image');
    }
    const g = generate(model, { prompt: 'a cat', negative: 'ugly', seed: 5, steps: 3, sampler: 'euler', karras: true, cfg: 6, width: 64, height: 64 })[0];
    const png = decodePng(encodePng(g.image, { parameters: g.parameters }));
    assert.deepEqual([png.width, png.height], [64, 64]);
    const hash = model.hash;
    assert.match(hash, /^[0-9a-f]{10}$/);
    assert.equal(png.text.parameters, `a cat\nNegative prompt: ugly\nSteps: 3, Sampler: Euler Karras, CFG scale: 6, Seed: 5, Size: 64x64, Model hash: ${hash}, Model: tiny-sd, Version: sdtune 0.1.0`);
  } finally {
    m2.dispose();
  }
});

test('img2img: strength sets how many steps run and how far the image moves', () => {
  const init = generate(model, { prompt: 'a square', seed: 3, steps: 4, width: 64, height: 64, sampler: 'ddim' })[0].image;
  let steps = 0;
  const light = generate(model, { prompt: 'a square', init, strength: 0.25, seed: 3, steps: 20, sampler: 'ddim', onStep: (_s, total) => (steps = total) })[0];
  assert.equal(steps, 5, '⌊20 × 0.25⌋ steps run');
  const heavy = generate(model, { prompt: 'a square', init, strength: 1, seed: 3, steps: 20, sampler: 'ddim' })[0];
  const pLight = psnr(light.image.data, init.data);
  const pHeavy = psnr(heavy.image.data, init.data);
  assert.ok(pLight > pHeavy, `a light touch stays closer to the image (${pLight.toFixed(1)} dB vs ${pHeavy.toFixed(1)} dB)`);
  assert.match(light.parameters, /Denoising strength: 0\.25/);
  assert.throws(() => generate(model, { prompt: 'x', init, strength: 0.01, steps: 20 }), /leaves no denoising step/);
  assert.throws(() => generate(model, { prompt: 'x', init, strength: 1.5 }), /strength must be between 0 and 1/);
});

test('A1111 prompt features reach the conditioning: emphasis, prompt editing, AND', () => {
  T.noGrad(() => T.tidy(() => {
    // Emphasis of 1 is the plain prompt; another weight changes the vectors.
    const plain = encodeText(model, 'a photo of a cat');
    assert.equal(encodeText(model, '(a photo of a cat:1.0)').sub(plain).abs().max().item(), 0);
    assert.ok(encodeText(model, 'a photo of a (cat:1.4)').sub(plain).abs().max().item() > 1e-3);
    // Over 75 tokens: two chunks of 77.
    assert.deepEqual(encodeText(model, Array(40).fill('red cat').join(' ')).shape, [1, 154, 32]);
    // [cat:dog:0.5] over 10 steps: cat first, dog at the end; the negative pads to the same length.
    const c = Conditioning.build(model, 'a [cat:dog:0.5]', '', 10);
    try {
      assert.ok(c.scheduled);
      assert.equal(c.cond(0, 0).sub(encodeText(model, 'a cat')).abs().max().item(), 0);
      assert.equal(c.cond(0, 9).sub(encodeText(model, 'a dog')).abs().max().item(), 0);
      assert.equal(c.uncond(0).sub(encodeText(model, '')).abs().max().item(), 0);
    } finally {
      c.dispose();
    }
    const and = Conditioning.build(model, 'a cat AND a dog :0.5', 'x', 4);
    try {
      assert.deepEqual(and.parts.map((p) => p.weight), [1, 0.5]);
    } finally {
      and.dispose();
    }
  }));
  // AND runs every part through the UNet: ε = ε_u + cfg·Σ wᵢ(εᵢ − ε_u).
  const batches: number[] = [];
  const m = withUnet(model, (x, _t, ctx) => {
    batches.push(ctx.size(0));
    return model.unet.forward(x, _t, ctx);
  });
  generate(m, { prompt: 'a cat AND a dog:0.5', seed: 1, steps: 2, width: 64, height: 64 });
  assert.deepEqual(batches, [3, 3]);
});

test('bad input: sizes, steps, unknown network tags, and no tensors left behind', () => {
  const before = T.memoryStats().live;
  assert.throws(() => validateOptions(model, { prompt: 'x', width: 65 }), /width 65 is not a multiple of 8 .*use 64 or 72/);
  assert.throws(() => validateOptions(model, { prompt: 'x', steps: 0 }), /steps must be a whole number from 1 to 1000/);
  assert.throws(() => validateOptions(model, { prompt: 'x', cfg: -1 }), /CFG scale must be between 0 and 50/);
  assert.throws(() => generate(model, { prompt: '<lora:mystyle:0.8> a cat', steps: 1 }), (e: Error) => e instanceof PromptError && /<lora:mystyle>/.test(e.message));
  assert.throws(() => generate(model, { prompt: '<lora:x:abc> a cat', steps: 1 }), /not a number/);
  // Hostile prompts parse the way A1111 does: no throw, an image comes out.
  const odd = ['((unbalanced', 'a ] b ) c [', '🦄 emoji \u0007 control \u202e rtl', Array(1000).fill('word').join(' '), '[a:b:c:d]', '\\'];
  for (const prompt of odd) assert.equal(generate(model, { prompt, seed: 1, steps: 1, width: 64, height: 64 }).length, 1, prompt.slice(0, 20));
  assert.equal(T.memoryStats().live, before, 'generation leaves no live tensors');
  // A1111 keeps the prompt as written, tags and all, in the PNG info.
  const v = validateOptions(model, { prompt: 'p' });
  assert.match(parametersText(model, { prompt: '<lora:a:1> p', clipSkip: 2 }, v, 3), /^<lora:a:1> p\nSteps: 20, Sampler: Euler a, .*Clip skip: 2/);
});

test('SD2-style v-prediction folder: scheduler_config.json read as diffusers does, OpenCLIP padding, v-pred loop', () => {
  const m2 = loadStableDiffusion(writeTinySd2Folder(tmp.dir));
  try {
    assert.equal(m2.family, 'sd2');
    assert.equal(m2.prediction, 'v_prediction');
    assert.equal(m2.padding, 'sd2');
    // The euler v-prediction trajectory of the fixtures, through the whole pipeline.
    const pattern = ref('trajectory.pattern');
    const fake = fakeModel(pattern);
    const r = generateWithLatents(withUnet(m2, (x, t) => fake(x, t)), { prompt: 'x', seed: 42, steps: 20, sampler: 'euler', cfg: 1, width: 64, height: 64 });
    const want = ref('trajectory.euler_vpred.final');
    assertRel(r.latents!, want, RTOL_LOOP, 'euler v-pred final latents');
    for (const t of [want, pattern, r.latents!]) t.dispose();
    // And the real model runs with every sampler.
    for (const sampler of ['ddim', 'euler', 'euler_a', 'dpmpp_2m'] as const) {
      const img = generate(m2, { prompt: 'a (green:1.1) field', seed: 2, steps: 3, sampler, width: 64, height: 64 })[0];
      assert.equal(img.image.data.length, 64 * 64 * 3);
    }
  } finally {
    m2.dispose();
  }
});

test('live previews: x̂₀ decoded every N steps (exact for a known target), smaller when asked, and the image unchanged', () => {
  const before = T.memoryStats().live;
  const o = { prompt: 'a red square', seed: 11, steps: 12, width: 64, height: 64, sampler: 'euler' as const, karras: true };
  const plain = generate(model, o)[0].image.data;
  const seen: { step: number; total: number; width: number; data: Uint8Array }[] = [];
  const withPreview = generate(model, { ...o, preview: { every: 4, onPreview: (imgs, step, total) => seen.push({ step, total, width: imgs[0].width, data: imgs[0].data }) } })[0].image.data;
  assert.deepEqual(withPreview, plain, 'previews change nothing in the result');
  assert.deepEqual(seen.map((p) => [p.step, p.total, p.width]), [[4, 12, 64], [8, 12, 64]], 'every 4 steps, none at the last');
  assert.ok(psnr(seen[1].data, plain) > psnr(seen[0].data, plain), `later previews are nearer the result: ${psnr(seen[0].data, plain).toFixed(1)} → ${psnr(seen[1].data, plain).toFixed(1)} dB`);
  // A denoiser whose ε points every step at the same clean latent c: each preview is decode(c) exactly.
  const ab = NoiseSchedule.fromConfig(parseSchedulerConfig(model.schedulerConfig, 'ddpm')).alphasCumprod;
  const c = T.keep(T.tidy(() => T.randn([1, model.unet.cfg.inChannels, 8, 8], { generator: new T.Generator(3) }).mul(0.5)));
  const fake = withUnet(model, (x, t) => {
    const lo = Math.floor(t);
    const a = ab[lo] + (ab[Math.min(ab.length - 1, lo + 1)] - ab[lo]) * (t - lo);
    return x.sub(c.mul(Math.sqrt(a))).div(Math.sqrt(1 - a));
  });
  const target = T.noGrad(() => T.tidy(() => tensorToImages(model.vae.decode(c.div(model.vae.cfg.scalingFactor)))))[0];
  const exact: Uint8Array[] = [];
  generate(fake, { ...o, cfg: 1, preview: { every: 3, onPreview: (imgs) => exact.push(imgs[0].data) } });
  assert.equal(exact.length, 3);
  for (const d of exact) assert.ok(psnr(d, target.data) > 40, `x̂₀ is the target: ${psnr(d, target.data).toFixed(1)} dB`);
  c.dispose();
  // maxSide: latents averaged down by 2 until the side fits (64 → 32 pixels).
  const small: number[] = [];
  generate(model, { ...o, steps: 4, preview: { every: 2, maxSide: 32, onPreview: (imgs) => small.push(imgs[0].width, imgs[0].height) } });
  assert.deepEqual(small, [32, 32]);
  assert.equal(T.memoryStats().live, before, 'previews leave no live tensors');
});
