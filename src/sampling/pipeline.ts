// txt2img and img2img: the one generation path used by the CLI, the job worker and the studio.
// Follows diffusers 0.25 StableDiffusionPipeline / StableDiffusionImg2ImgPipeline step by step
// (same random draws in the same order, so the same seed gives the same image), with A1111's
// prompt handling (75-token chunks, emphasis, BREAK) for the conditioning (spec §8.4–§8.6).
import * as T from '../torch/index.ts';
import type { StableDiffusion } from '../models/load.ts';
import type { RgbImage } from '../formats/png.ts';
import { makeScheduler, sampleLoop, type SchedulerName } from './schedulers.ts';
import { NoiseSchedule, parseSchedulerConfig } from './schedule.ts';
import { Conditioning, PromptError, type PromptEmbeddings } from './conditioning.ts';
import { parseExtraNetworks, type ExtraNetworks } from '../text/prompt.ts';

export interface GenerateOptions {
  prompt: string;
  negative?: string;
  steps?: number;
  sampler?: SchedulerName;
  karras?: boolean;
  /** Classifier-free guidance scale; ≤ 1 disables the unconditional pass (as diffusers). */
  cfg?: number;
  width?: number;
  height?: number;
  batch?: number;
  /** One generator seeded with this draws the whole batch's noise (diffusers' convention). */
  seed?: number;
  /** A1111's clip skip (1 = last layer). */
  clipSkip?: number;
  /** img2img: the starting image and how much of it to repaint (0..1). */
  init?: RgbImage;
  strength?: number;
  /** Textual-inversion vectors by prompt word (see conditioning.ts). */
  embeddings?: PromptEmbeddings;
  /** Extra "key: value" pairs for the PNG parameters line (LoRAs used, …). */
  extraParameters?: Record<string, string>;
  onStep?: (step: number, total: number) => void;
  /** Live previews: every `every` steps, the picture the model is heading for (see previewImages). */
  preview?: PreviewOptions;
  /**
   * Receives the `<lora:…>` / `<hypernet:…>` tags cut out of the prompt, to apply them before the
   * UNet runs. Without it, a prompt with such tags is refused (nothing to look them up in).
   */
  onExtraNetworks?: (nets: ExtraNetworks) => void;
}

export interface PreviewOptions {
  /** Steps between previews (the last step has none: the result follows). */
  every: number;
  /** The longest side of a preview in pixels (default 256): larger latents are averaged down first, so a preview costs a fraction of the final decode. */
  maxSide?: number;
  onPreview: (images: RgbImage[], step: number, total: number) => void;
}

export interface GeneratedImage {
  image: RgbImage;
  seed: number;
  /** A1111's `parameters` text, for the PNG chunk. */
  parameters: string;
}

export const SAMPLER_LABEL: Record<SchedulerName, string> = { ddim: 'DDIM', euler: 'Euler', euler_a: 'Euler a', dpmpp_2m: 'DPM++ 2M' };

/** The checks a user gets before anything runs; sizes must be multiples of 8 (the VAE's factor). */
export function validateOptions(model: StableDiffusion, o: GenerateOptions): Required<Pick<GenerateOptions, 'steps' | 'cfg' | 'width' | 'height' | 'batch' | 'sampler'>> {
  const factor = 2 ** (model.vae.cfg.blockOutChannels.length - 1);
  const size = model.unet.cfg.sampleSize * factor;
  const r = {
    steps: o.steps ?? 20,
    cfg: o.cfg ?? 7.5,
    // img2img keeps the image's size, rounded down to the VAE's factor (diffusers VaeImageProcessor).
    width: o.width ?? (o.init ? Math.max(factor, o.init.width - (o.init.width % factor)) : size),
    height: o.height ?? (o.init ? Math.max(factor, o.init.height - (o.init.height % factor)) : size),
    batch: o.batch ?? 1,
    sampler: o.sampler ?? ('euler_a' as SchedulerName),
  };
  const bad = (what: string) => {
    throw new RangeError(what);
  };
  if (!Number.isInteger(r.steps) || r.steps < 1 || r.steps > 1000) bad(`steps must be a whole number from 1 to 1000 (got ${r.steps})`);
  if (!Number.isInteger(r.batch) || r.batch < 1 || r.batch > 64) bad(`batch must be 1 to 64 (got ${r.batch})`);
  if (!Number.isFinite(r.cfg) || r.cfg < 0 || r.cfg > 50) bad(`CFG scale must be between 0 and 50 (got ${r.cfg})`);
  for (const [name, v] of [['width', r.width], ['height', r.height]] as const) {
    if (!Number.isInteger(v) || v < factor || v > 4096) bad(`${name} must be between ${factor} and 4096 pixels (got ${v})`);
    if (v % factor !== 0) {
      const lo = Math.floor(v / factor) * factor;
      bad(`${name} ${v} is not a multiple of ${factor} (the VAE works in ${factor}×${factor} blocks): use ${lo} or ${lo + factor}`);
    }
  }
  if (o.init && (o.strength ?? 0.75) <= 0) bad('strength must be above 0 for img2img (0 would return the image unchanged)');
  if (o.strength !== undefined && (o.strength < 0 || o.strength > 1)) bad(`strength must be between 0 and 1 (got ${o.strength})`);
  return r;
}

/** An 8-bit RGB image → [1, 3, H, W] in [-1, 1] (diffusers VaeImageProcessor: /255, ·2 − 1). */
export function imageToTensor(img: RgbImage, width: number, height: number): T.Tensor {
  return T.tidy(() => {
    const rgb = new Uint8Array(img.width * img.height * 3);
    for (let i = 0; i < img.width * img.height; i++) for (let c = 0; c < 3; c++) rgb[i * 3 + c] = img.data[i * img.channels + c];
    let x = T.fromBuffer(rgb, 'uint8', [img.height, img.width, 3]).permute(2, 0, 1).unsqueeze(0).to('float32').div(255);
    if (img.width !== width || img.height !== height) x = T.interpolate(x, { size: [height, width], mode: 'bicubic' }).clamp(0, 1);
    return x.mul(2).sub(1);
  });
}

/** Same-size 8-bit RGB images → [B, 3, H, W] in [-1, 1] (x / 127.5 − 1), for training batches. */
export function imagesToTensor(images: readonly RgbImage[]): T.Tensor {
  const { width: w, height: h } = images[0];
  for (const im of images) {
    if (im.width !== w || im.height !== h || im.channels !== 3) throw new Error(`a batch of pictures must be ${w}×${h} RGB; got ${im.width}×${im.height}×${im.channels}`);
  }
  return T.tidy(() => {
    const buf = new Uint8Array(images.length * w * h * 3);
    images.forEach((im, i) => buf.set(im.data, i * w * h * 3));
    return T.fromBuffer(buf, 'uint8', [images.length, h, w, 3]).permute(0, 3, 1, 2).to('float32').div(127.5).sub(1);
  });
}

/** [B, 3, H, W] in about [-1, 1] → 8-bit RGB images (diffusers postprocess: clamp, ·255, round). */
export function tensorToImages(x: T.Tensor): RgbImage[] {
  return T.tidy(() => {
    const [b, , h, w] = x.shape;
    const u8 = x.div(2).add(0.5).clamp(0, 1).mul(255).round().to('uint8').permute(0, 2, 3, 1).contiguous().cpu();
    const out: RgbImage[] = [];
    for (let i = 0; i < b; i++) out.push({ width: w, height: h, channels: 3, data: new Uint8Array(u8.select(0, i).toBuffer()) });
    return out;
  });
}

/** A1111's generation-parameters text (what A1111, Forge and ComfyUI's readers parse). */
export function parametersText(model: StableDiffusion, o: GenerateOptions, v: ReturnType<typeof validateOptions>, seed: number): string {
  const sampler = SAMPLER_LABEL[v.sampler] + (o.karras ? ' Karras' : '');
  const fields: [string, string | number][] = [
    ['Steps', v.steps],
    ['Sampler', sampler],
    ['CFG scale', v.cfg],
    ['Seed', seed],
    ['Size', `${v.width}x${v.height}`],
  ];
  if (model.hash) fields.push(['Model hash', model.hash]);
  fields.push(['Model', model.name]);
  if (o.init) fields.push(['Denoising strength', o.strength ?? 0.75]);
  if ((o.clipSkip ?? 1) > 1) fields.push(['Clip skip', o.clipSkip!]);
  // A1111's quote(): values holding a comma, colon or newline are written as JSON strings.
  for (const [k, x] of Object.entries(o.extraParameters ?? {})) fields.push([k, /[,:\n]/.test(x) ? JSON.stringify(x) : x]);
  fields.push(['Version', 'sdtune 0.1.0']);
  const neg = o.negative ? `\nNegative prompt: ${o.negative}` : '';
  return `${o.prompt}${neg}\n${fields.map(([k, x]) => `${k}: ${x}`).join(', ')}`;
}

export interface GenerateResult {
  images: GeneratedImage[];
  /** The final latents [B, 4, h, w] (scaled, before decoding), when `keepLatents` was set. */
  latents?: T.Tensor;
}

/**
 * txt2img / img2img. Order of work (diffusers StableDiffusionPipeline.__call__):
 *   1. conditioning for every text a step uses (prompt editing, AND parts, negative);
 *   2. the starting latents from one CPU generator seeded with `seed` (img2img: the VAE posterior
 *      sample is drawn first, then the noise — diffusers' order);
 *   3. the denoising loop with classifier-free guidance;
 *   4. decoding.
 * With AND, A1111's composable form: ε = ε_u + cfg·Σ wᵢ(εᵢ − ε_u).
 */
export function generate(model: StableDiffusion, o: GenerateOptions): GeneratedImage[] {
  const r = generateWithLatents(model, o, false);
  return r.images;
}

export function generateWithLatents(model: StableDiffusion, o: GenerateOptions, keepLatents = true): GenerateResult {
  const v = validateOptions(model, o);
  const seed = o.seed ?? Math.floor(Math.random() * 2 ** 32);
  if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 64) throw new RangeError(`seed must be a whole number from 0 to 2^64-1 (got ${seed})`);
  const dev = model.device;
  const scheduler = makeScheduler(v.sampler, { ...model.schedulerConfig, prediction_type: model.prediction }, { karras: o.karras });
  // Prompt editing counts the steps that run (img2img runs fewer than `steps`).
  const start = o.init ? scheduler.timestepsForStrength(v.steps, o.strength ?? 0.75).startIndex : (scheduler.setTimesteps(v.steps), 0);
  const total = scheduler.timesteps.length - start;
  // Networks named in the prompt are applied first: a LoRA's text-encoder part changes the conditioning.
  let nets: ExtraNetworks;
  try {
    nets = parseExtraNetworks(o.prompt);
  } catch (e) {
    scheduler.dispose();
    throw e;
  }
  if (nets.loras.length || nets.hypernets.length) {
    if (!o.onExtraNetworks) {
      scheduler.dispose();
      const tags = [...nets.loras.map((l) => `<lora:${l.name}>`), ...nets.hypernets.map((h) => `<hypernet:${h.name}>`)];
      throw new PromptError(`the prompt names ${tags.join(', ')} but no LoRA or hypernetwork folder was given to look them up in`);
    }
    o.onExtraNetworks(nets);
  }
  let cond: Conditioning;
  try {
    cond = T.noGrad(() => Conditioning.build(model, o.prompt, o.negative ?? '', total, { clipSkip: o.clipSkip, embeddings: o.embeddings }));
  } catch (e) {
    scheduler.dispose();
    throw e;
  }
  try {
    const parts = cond.parts.length;
    const withUncond = v.cfg > 1 || parts > 1;
    const pv = o.preview && o.preview.every >= 1 ? o.preview : undefined;
    const ab = pv ? NoiseSchedule.fromConfig(parseSchedulerConfig(model.schedulerConfig, 'ddpm')).alphasCumprod : undefined;
    const latents = T.noGrad(() => T.tidy(() => {
      // 2. noise: one CPU generator for the whole batch, as diffusers' randn_tensor with a CPU generator
      const gen = new T.Generator(seed);
      const factor = 2 ** (model.vae.cfg.blockOutChannels.length - 1);
      const shape = [v.batch, model.unet.cfg.inChannels, v.height / factor, v.width / factor];
      let init: T.Tensor | undefined;
      if (o.init) {
        const img = imageToTensor(o.init, v.width, v.height).to(dev);
        const post = model.vae.encode(img);
        init = model.vae.sample(post, gen).mul(model.vae.cfg.scalingFactor).repeat(v.batch, 1, 1, 1);
      }
      const xT = T.randn(shape, { generator: gen }).to(dev);
      // 3. the denoising loop; the context batch is [uncond × B, part₁ × B, …] (diffusers' order)
      return sampleLoop(scheduler, xT, (x, t, i) => {
        const step = i - start;
        const ctx: T.Tensor[] = [];
        if (withUncond) ctx.push(cond.uncond(step));
        for (let p = 0; p < parts; p++) ctx.push(cond.cond(p, step));
        const context = T.cat(ctx.map((c) => c.repeat(v.batch, 1, 1)), 0);
        const input = ctx.length > 1 ? T.cat(ctx.map(() => x), 0) : x;
        const out = model.unet.forward(input, t, context);
        let pred = out;
        if (withUncond) {
          const outs = out.chunk(ctx.length, 0);
          const u = outs[0];
          pred = u;
          for (let p = 0; p < parts; p++) pred = pred.add(outs[p + 1].sub(u).mul(v.cfg * cond.parts[p].weight));
        }
        if (pv && (step + 1) % pv.every === 0 && step + 1 < total) preview(model, x, pred, t, ab!, pv, step + 1, total);
        return pred;
      }, {
        init,
        startIndex: start,
        generator: gen,
        onStep: (i) => o.onStep?.(i - start + 1, total),
      });
    }));
    // 4. decode
    const images = T.noGrad(() => T.tidy(() => tensorToImages(model.vae.decode(latents.div(model.vae.cfg.scalingFactor)))));
    const params = parametersText(model, o, v, seed);
    if (!keepLatents) latents.dispose();
    return { images: images.map((image) => ({ image, seed, parameters: params })), latents: keepLatents ? latents : undefined };
  } finally {
    cond.dispose();
    scheduler.dispose();
  }
}

/**
 * One live preview: the clean picture the step's prediction points at (x̂₀ from the UNet's input
 * x_t and its ε or v output, with ᾱ at t, interpolated for the fractional timesteps of Karras
 * sigmas), decoded by the VAE from latents averaged down to at most `maxSide` pixels. It reads the
 * step's tensors and draws no random numbers, so the result is the same with previews or without.
 */
function preview(model: StableDiffusion, x: T.Tensor, out: T.Tensor, t: number, ab: Float32Array, pv: PreviewOptions, step: number, total: number): void {
  const lo = Math.max(0, Math.min(ab.length - 1, Math.floor(t)));
  const hi = Math.min(ab.length - 1, lo + 1);
  const a = ab[lo] + (ab[hi] - ab[lo]) * Math.max(0, Math.min(1, t - lo));
  const images = T.tidy(() => {
    const x0 = model.prediction === 'v_prediction' ? x.mul(Math.sqrt(a)).sub(out.mul(Math.sqrt(1 - a))) : x.sub(out.mul(Math.sqrt(1 - a))).div(Math.sqrt(a));
    const factor = 2 ** (model.vae.cfg.blockOutChannels.length - 1);
    const side = Math.max(x0.shape[2], x0.shape[3]) * factor;
    let k = 1;
    while (side / (k * 2) >= (pv.maxSide ?? 256) && x0.shape[2] % (k * 2) === 0 && x0.shape[3] % (k * 2) === 0) k *= 2;
    const small = k > 1 ? T.avgPool2d(x0, k) : x0;
    return tensorToImages(model.vae.decode(small.div(model.vae.cfg.scalingFactor)));
  });
  pv.onPreview(images, step, total);
}
