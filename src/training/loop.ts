// The one training loop (STYLE rules 5, 6), shared by DreamBooth, LoRA, textual inversion and
// hypernetworks through the Technique interface. Per optimizer step (§8.2):
//   1. latents x₀ = VAE posterior sample × scale (posteriors cached per image when crops are fixed);
//   2. ε ~ N(0, I) (+ noise offset per sample and channel), t ~ U{0, …, T−1};
//   3. x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε; target ε, or v = √ᾱ_t·ε − √(1−ᾱ_t)·x₀ for v-models;
//   4. loss = mean_b( w_b · mean_chw(m ⊙ (ε̂ − target)²) ), w_b = min-SNR-γ weight × sample weight
//      (prior_loss_weight for class images: DreamBooth's prior preservation), m = the mask;
//   5. backward over gradient-accumulation micro-batches, clip, AdamW, LR from the schedule.
// Every random draw comes from one generator whose state is checkpointed with the weights, the
// optimizer and the step; the data order is a function of (seed, epoch); so a resumed run is
// bit-identical to an uninterrupted one on CPU.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, appendFileSync } from 'node:fs';
import { writeFileAtomic } from '../formats/atomic.ts';
import { dirname, join } from 'node:path';
import * as T from '../torch/index.ts';
import { SafetensorsFile, saveSafetensors } from '../formats/safetensors.ts';
import { writePng } from '../formats/png.ts';
import type { StableDiffusion } from '../models/load.ts';
import { NoiseSchedule, minSnrWeight, parseSchedulerConfig } from '../sampling/schedule.ts';
import { promptChunks, encodeChunks, type PromptEmbeddings } from '../sampling/conditioning.ts';
import { generate } from '../sampling/pipeline.ts';
import { isNamedSchedule, lrSchedule } from './lr.ts';
import { recommendStop } from './meter.ts';
import type { Technique } from './technique.ts';

/** One batch as the data layer hands it over (the loop disposes the tensors). */
export interface TrainBatch {
  /** [B, 3, H, W] in [-1, 1]. */
  pixels: T.Tensor;
  captions: string[];
  /** [B, 1, H, W] in [0, 1] (1 = counts), or null. */
  masks: T.Tensor | null;
  /** Per-sample loss weight: 1 for training images, prior_loss_weight for class images. */
  weights: number[];
  /** Stable per-image keys for the latent cache; null disables caching for the batch. */
  keys: (string | null)[];
}

/** Deterministic data: batch(epoch, i) is the same on every call (resume depends on it). */
export interface TrainData {
  batchesPerEpoch: number;
  batch(epoch: number, index: number): TrainBatch;
  /** Held-out images for the validation loss (fixed noise and timesteps). */
  validation?: () => TrainBatch[];
  /** Called before the first batch of each epoch (decoding images is asynchronous). */
  prepare?: (epoch: number) => Promise<void>;
}

export interface TrainOptions {
  /** Optimizer steps. */
  steps: number;
  gradAccumulation?: number;
  lrSchedule?: string;
  warmupSteps?: number;
  maxGradNorm?: number;
  minSnrGamma?: number;
  noiseOffset?: number;
  seed?: number;
  /**
   * Exponential moving average of the trained weights (e.g. 0.999); the product uses it. The decay
   * warms up, min(emaDecay, (1 + t) / (10 + t)) at optimizer step t (emaDecayAt), so that a short
   * run's average is not mostly the starting weights.
   */
  emaDecay?: number;
  /** 'fp16' | 'bf16' autocast on CUDA; CPU always trains in fp32. */
  mixedPrecision?: 'no' | 'fp16' | 'bf16';
  /** Recompute the UNet's activations in the backward pass (src/torch/checkpoint.ts): less memory, more time. */
  gradientCheckpointing?: boolean;
  /** Folder for checkpoints, samples and log.jsonl. */
  workDir: string;
  /** The product file (LoRA, embedding, …). */
  out: string;
  checkpointEvery?: number;
  /** Keep this many training checkpoints (the newest). */
  keepCheckpoints?: number;
  /** Save a product snapshot (out-stepN.ext) with each checkpoint, for picking the best. */
  snapshots?: boolean;
  sampleEvery?: number;
  samplePrompts?: string[];
  sampleSteps?: number;
  validateEvery?: number;
  /** Class prompts for the prior-drift meter (how far the model moved on ordinary prompts). */
  priorPrompts?: string[];
  /** The concept's word (DreamBooth's token, the embedding's name): validation also logs the concept gap. */
  conceptWord?: string;
  /** The sample check (sample-check.ts): at each validation, the detector's mean score on pictures the model draws now. */
  checkSamples?: (model: StableDiffusion, embeddings: PromptEmbeddings | undefined) => number;
  /** Early stop: end the run once the meter's recommended step (meter.ts) has stood for this many validations. */
  earlyStop?: number;
  /** Resume from the newest checkpoint in workDir, if there is one. */
  resume?: boolean;
  /** Checked between steps: true saves a checkpoint and stops (Ctrl-C). */
  shouldStop?: () => boolean;
  onStep?: (r: StepRecord) => void;
  /** Settings recorded in the product's metadata. */
  settings?: Record<string, string | number | boolean>;
}

export interface StepRecord {
  step: number;
  epoch: number;
  loss: number;
  lr: number;
  step_ms: number;
  val_loss?: number;
  /** The held-out loss at each validation timestep (100, 300, 500, 700, 900). */
  val_by_t?: number[];
  /** Held-out loss captioned without the concept word minus with it (see Trainer.validation). */
  concept_gap?: number;
  gap_by_t?: number[];
  prior_drift?: number;
  /** The prior drift at each validation timestep. */
  drift_by_t?: number[];
  /** The sample check: the share of the validation pictures that show the concept, by the detector (0–1). */
  sample_score?: number;
  samples?: string[];
  checkpoint?: string;
}

export interface TrainResult {
  status: 'done' | 'stopped' | 'diverged';
  steps: number;
  seconds: number;
  finalLoss: number;
  out: string | null;
  message: string;
  trainableParameters: number;
  records: StepRecord[];
}

/** The EMA's decay at optimizer step `t` (0-based): warmed up, min(decay, (1 + t) / (10 + t)) — the default warm-up of diffusers' EMAModel. */
export function emaDecayAt(decay: number, t: number): number {
  return Math.min(decay, (1 + t) / (10 + t));
}

/** Where a run's product snapshot of `step` goes: OUT-stepNNNNNN.ext beside the product. */
export function snapshotPath(out: string, ext: string, step: number): string {
  const base = ext && out.endsWith(ext) ? out.slice(0, -ext.length) : out;
  return `${base}-step${String(step).padStart(6, '0')}${ext}`;
}

const mean = (xs: readonly number[]) => xs.reduce((a, x) => a + x, 0) / xs.length;

/** A caption with every whole-word occurrence of `word` taken out ("a large sks heart" → "a large heart"). */
export function withoutWord(caption: string, word: string): string {
  const esc = word.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return caption.replace(new RegExp(`(^|[\\s,(])${esc}(?=$|[\\s,.:)])`, 'gu'), '$1').replace(/\s{2,}/g, ' ').trim();
}

export class TrainingError extends Error {
  override name = 'TrainingError';
}

const VAL_TIMESTEPS = [100, 300, 500, 700, 900];
const CKPT_RE = /^step-(\d{6,})\.safetensors$/;

/** Cached text encodings and VAE posteriors (fixed crops make them reusable). */
class Caches {
  readonly text = new Map<string, T.Tensor>();
  readonly latents = new Map<string, { mean: T.Tensor; std: T.Tensor }>();
  dispose(): void {
    for (const t of this.text.values()) t.dispose();
    for (const p of this.latents.values()) {
      p.mean.dispose();
      p.std.dispose();
    }
    this.text.clear();
    this.latents.clear();
  }
}

export class Trainer {
  private readonly schedule: NoiseSchedule;
  private readonly gen: T.Generator;
  private readonly opt: T.optim.AdamW;
  private readonly lrOf: (step: number) => number;
  private readonly baseLrs: number[];
  private readonly caches = new Caches();
  private readonly params: [string, T.Tensor][];
  private ema: Map<string, T.Tensor> | null = null;
  private basePriorPreds: T.Tensor[] | null = null;
  private priorInputs: { prompt: string; x: T.Tensor; t: number[]; ctx: T.Tensor }[] = [];
  private scaler: T.optim.GradScaler | null = null;
  /** A1111's piecewise rates are absolute; named schedules scale each group's own rate. */
  private readonly piecewise: boolean;
  step = 0;

  constructor(
    readonly technique: Technique,
    readonly data: TrainData,
    readonly o: TrainOptions,
  ) {
    const m = technique.model;
    if (!Number.isInteger(o.steps) || o.steps < 1) throw new TrainingError(`steps must be a whole number ≥ 1 (got ${o.steps})`);
    if (data.batchesPerEpoch < 1) throw new TrainingError('the dataset has no usable images: nothing to train on');
    const ddpm = parseSchedulerConfig(m.schedulerConfig, 'ddpm');
    this.schedule = NoiseSchedule.fromConfig(ddpm);
    this.gen = new T.Generator(o.seed ?? 0);
    const groups = technique.groups();
    this.params = groups.flatMap((g) => g.params);
    if (this.params.length === 0) throw new TrainingError(`${technique.kind}: nothing to train (no trainable parameters)`);
    this.opt = new T.optim.AdamW(groups.map((g) => ({ params: g.params, hyper: { lr: g.lr, weightDecay: g.weightDecay } })));
    this.baseLrs = groups.map((g) => g.lr);
    const sched = o.lrSchedule ?? 'constant';
    // Named schedules scale each group's own rate; A1111's piecewise syntax gives absolute rates.
    this.lrOf = lrSchedule({ schedule: sched, lr: 1, warmupSteps: o.warmupSteps, totalSteps: o.steps });
    this.piecewise = !isNamedSchedule(sched);
    if (o.mixedPrecision === 'fp16' && m.device.startsWith('cuda')) this.scaler = new T.optim.GradScaler();
    if (o.emaDecay !== undefined) {
      if (!(o.emaDecay > 0 && o.emaDecay < 1)) throw new TrainingError(`EMA decay must be between 0 and 1 (got ${o.emaDecay})`);
      this.ema = new Map(this.params.map(([n, p]) => [n, T.keep(T.noGrad(() => p.detach().clone()))]));
    }
  }

  get trainableParameters(): number {
    return this.params.reduce((s, [, p]) => s + p.numel, 0);
  }

  private lrs(step: number): number[] {
    const f = this.lrOf(step);
    return this.piecewise ? this.baseLrs.map(() => f) : this.baseLrs.map((lr) => lr * f);
  }

  /** Text conditioning for captions: [B, 77·k, dim], chunk counts evened with the empty prompt. */
  private encode(captions: string[]): T.Tensor {
    const m = this.technique.model;
    const embeddings = this.technique.embeddings();
    const withGrad = this.technique.needsTextGrad;
    const one = (c: string): T.Tensor => {
      if (!withGrad) {
        const hit = this.caches.text.get(c);
        if (hit) return hit.alias();
      }
      const z = withGrad ? encodeChunks(m, promptChunks(m, c, { embeddings }), { embeddings }) : T.noGrad(() => encodeChunks(m, promptChunks(m, c, { embeddings }), { embeddings }));
      if (!withGrad && this.caches.text.size < 4096) this.caches.text.set(c, T.keep(z.alias()));
      return z;
    };
    return T.tidy(() => {
      const zs = captions.map(one);
      const most = Math.max(...zs.map((z) => z.size(1)));
      const padded = zs.map((z) => {
        if (z.size(1) === most) return z;
        const empty = one('');
        return T.cat([z, ...Array.from({ length: (most - z.size(1)) / 77 }, () => empty)], 1);
      });
      return T.cat(padded, 0);
    });
  }

  /** x₀ for a batch: posterior sample × scaling factor, posteriors cached by key. */
  private latents(b: TrainBatch, useMean = false): T.Tensor {
    const vae = this.technique.model.vae;
    return T.noGrad(() => T.tidy(() => {
      const dev = this.technique.model.device;
      const missing = b.keys.map((k, i) => (k === null || !this.caches.latents.has(k) ? i : -1)).filter((i) => i >= 0);
      let fresh: { mean: T.Tensor; std: T.Tensor } | null = null;
      if (missing.length) {
        const px = b.pixels.to(dev).indexSelect(0, T.tensor(missing, { dtype: 'int64', device: dev }));
        const post = vae.encode(px);
        fresh = { mean: post.mean, std: post.std };
      }
      const means: T.Tensor[] = [];
      const stds: T.Tensor[] = [];
      b.keys.forEach((k, i) => {
        const j = missing.indexOf(i);
        if (j >= 0) {
          const mean = fresh!.mean.select(0, j).unsqueeze(0);
          const std = fresh!.std.select(0, j).unsqueeze(0);
          if (k !== null) this.caches.latents.set(k, { mean: T.keep(mean.clone()), std: T.keep(std.clone()) });
          means.push(mean);
          stds.push(std);
        } else {
          const c = this.caches.latents.get(k!)!;
          means.push(c.mean);
          stds.push(c.std);
        }
      });
      const mean = T.cat(means, 0);
      const std = T.cat(stds, 0);
      if (useMean) return mean.mul(vae.cfg.scalingFactor);
      // as latent_dist.sample(generator): mean + std·N(0, I)
      const eps = T.randn(mean.shape, { generator: this.gen }).to(dev);
      return mean.add(std.mul(eps)).mul(vae.cfg.scalingFactor);
    }));
  }

  /** Runs fn under the run's mixed precision (CUDA autocast), or as it is. */
  private autocast<R>(fn: () => R): R {
    return this.amp() ? T.autocast(this.o.mixedPrecision === 'fp16' ? 'float16' : 'bfloat16', fn) : fn();
  }
  private amp(): boolean {
    const mp = this.o.mixedPrecision;
    return mp !== undefined && mp !== 'no' && this.technique.model.device.startsWith('cuda');
  }

  /** The loss of one batch (with gradients when training), per §8.2. */
  private batchLoss(b: TrainBatch, fixed?: { noise: T.Tensor; t: number[] }): T.Tensor {
    const m = this.technique.model;
    const dev = m.device;
    return T.tidy(() => {
      const x0 = this.latents(b, fixed !== undefined);
      const n = x0.size(0);
      let noise: T.Tensor;
      let ts: number[];
      if (fixed) {
        noise = fixed.noise;
        ts = fixed.t;
      } else {
        noise = T.randn(x0.shape, { generator: this.gen }).to(dev);
        if (this.o.noiseOffset) noise = noise.add(T.randn([n, x0.size(1), 1, 1], { generator: this.gen }).to(dev).mul(this.o.noiseOffset));
        ts = T.randint(0, this.schedule.numTrainTimesteps, [n], { generator: this.gen }).toArray();
      }
      const tt = T.tensor(ts, { dtype: 'int64', device: dev });
      const noisy = this.schedule.addNoise(x0, noise, ts);
      const target = m.prediction === 'v_prediction' ? this.schedule.getVelocity(x0, noise, ts) : noise;
      const ctx = this.encode(b.captions);
      const forward = () => m.unet.forward(noisy, tt, ctx);
      const pred = this.amp() ? this.autocast(forward).to('float32') : forward();
      let se = pred.sub(target).pow(2);
      if (b.masks) se = se.mul(T.interpolate(b.masks.to(dev), { size: [se.size(2), se.size(3)], mode: 'bilinear' }));
      const perSample = se.mean([1, 2, 3]);
      const w = ts.map((t, i) => (this.o.minSnrGamma ? minSnrWeight(this.schedule.snr(t), this.o.minSnrGamma, m.prediction) : 1) * b.weights[i]);
      return perSample.mul(T.tensor(w, { device: dev })).mean();
    });
  }

  private disposeBatch(b: TrainBatch): void {
    b.pixels.dispose();
    b.masks?.dispose();
  }

  /** The product's mean loss (with EMA, the averaged weights') on the held-out images at fixed noise (seeded) and fixed timesteps. */
  validationLoss(): number | undefined {
    return this.withEmaWeights(() => this.validation()?.loss);
  }

  /**
   * The held-out pass at fixed noise (seeded) and fixed timesteps: the mean loss, the loss at each
   * of VAL_TIMESTEPS (fine detail is settled at low t, layout and colour at high t) and, with a
   * concept word, the concept gap: the loss of the same pictures, noise and timesteps captioned
   * without the word, minus their loss with it — how much the word has come to mean the concept.
   */
  validation(): { loss: number; byT: number[]; gap?: number; gapByT?: number[] } | undefined {
    const batches = this.data.validation?.();
    if (!batches || batches.length === 0) return undefined;
    const word = this.o.conceptWord;
    const saved = this.gen.getState();
    try {
      return T.noGrad(() => {
        const byT = VAL_TIMESTEPS.map(() => 0);
        const gapByT = VAL_TIMESTEPS.map(() => 0);
        let hasGap = false;
        const g = new T.Generator((this.o.seed ?? 0) + 7919);
        for (const b of batches) {
          const without = word ? b.captions.map((c) => withoutWord(c, word)) : null;
          const gapHere = without !== null && without.some((c, i) => c !== b.captions[i]);
          hasGap ||= gapHere;
          VAL_TIMESTEPS.forEach((t, k) => {
            T.tidy(() => {
              const shape = [b.pixels.size(0), this.technique.model.unet.cfg.inChannels, b.pixels.size(2) / this.vaeFactor, b.pixels.size(3) / this.vaeFactor];
              const noise = T.randn(shape, { generator: g }).to(this.technique.model.device);
              const ws = { ...b, weights: b.weights.map(() => 1) };
              const fixed = { noise, t: Array<number>(shape[0]).fill(t) };
              const l = this.batchLoss(ws, fixed).item(); // .item(): host sync
              byT[k] += l / batches.length;
              if (gapHere) gapByT[k] += (this.batchLoss({ ...ws, captions: without! }, fixed).item() - l) / batches.length;
            });
          });
          this.disposeBatch(b);
        }
        return { loss: mean(byT), byT, ...(hasGap ? { gap: mean(gapByT), gapByT } : {}) };
      });
    } finally {
      // The validation pass must not move the training generator (resume stays exact).
      this.gen.setState(saved);
    }
  }

  private get vaeFactor(): number {
    return 2 ** (this.technique.model.vae.cfg.blockOutChannels.length - 1);
  }

  /** Fixed inputs for the prior-drift meter: class prompts at fixed latents and timesteps. */
  private preparePrior(): void {
    const prompts = this.o.priorPrompts ?? [];
    if (prompts.length === 0) return;
    const m = this.technique.model;
    const g = new T.Generator((this.o.seed ?? 0) + 104729);
    const side = m.unet.cfg.sampleSize;
    T.noGrad(() => T.tidy(() => {
      for (const p of prompts) {
        const ctx = T.keep(encodeChunks(m, promptChunks(m, p)));
        const x = T.keep(T.randn([VAL_TIMESTEPS.length, m.unet.cfg.inChannels, side, side], { generator: g }).to(m.device));
        this.priorInputs.push({ prompt: p, x, t: VAL_TIMESTEPS, ctx });
      }
    }));
  }

  private priorPreds(): T.Tensor[] {
    const m = this.technique.model;
    return T.noGrad(() => this.priorInputs.map((pi) => T.tidy(() => {
      // A trained text encoder moves the class prompt's encoding too: encode it again then.
      const ctx = (this.technique.needsTextGrad ? this.encode([pi.prompt]) : pi.ctx).repeat(pi.t.length, 1, 1);
      return m.unet.forward(pi.x, T.tensor(pi.t, { dtype: 'int64', device: m.device }), ctx);
    })));
  }

  /** The prior drift at each of VAL_TIMESTEPS: the mean squared distance of the current predictions on class prompts from the base model's, averaged over the prompts. */
  priorDriftByT(): number[] | undefined {
    if (!this.basePriorPreds) return undefined;
    const now = this.priorPreds();
    const d = VAL_TIMESTEPS.map((_, k) => T.tidy(() => now.reduce((s, p, i) => s + p.select(0, k).sub(this.basePriorPreds![i].select(0, k)).pow(2).mean().item(), 0) / now.length)); // .item(): host sync
    for (const t of now) t.dispose();
    return d;
  }

  // ---- checkpoints ------------------------------------------------------------------------------

  private get ckptDir(): string {
    return join(this.o.workDir, 'checkpoints');
  }

  /** Weights, optimizer, EMA, generators, step and the prior meter's base predictions, in one file. */
  saveCheckpoint(): string {
    mkdirSync(this.ckptDir, { recursive: true });
    const path = join(this.ckptDir, `step-${String(this.step).padStart(6, '0')}.safetensors`);
    const tensors = new Map<string, T.Tensor>();
    for (const [n, p] of this.params) tensors.set(`param.${n}`, p);
    const os = this.opt.stateDict();
    for (const [k, t] of os.tensors) tensors.set(`optim.${k}`, t);
    if (this.ema) for (const [k, t] of this.ema) tensors.set(`ema.${k}`, t);
    this.basePriorPreds?.forEach((t, i) => tensors.set(`prior.${i}`, t));
    const meta = {
      step: this.step,
      technique: this.technique.kind,
      optimizer: os.meta,
      generator: this.gen.getState().toString('base64'),
      global_rng: T.getRngState().toString('base64'),
      scale: this.scaler?.scale ?? null,
    };
    saveSafetensors(path, tensors, { 'sdtune.checkpoint': JSON.stringify(meta) });
    // Keep the newest few.
    const keep = this.o.keepCheckpoints ?? 2;
    const all = readdirSync(this.ckptDir).filter((f) => CKPT_RE.test(f)).sort();
    for (const f of all.slice(0, Math.max(0, all.length - keep))) rmSync(join(this.ckptDir, f), { force: true });
    return path;
  }

  /** The newest checkpoint in workDir, or null. */
  latestCheckpoint(): string | null {
    if (!existsSync(this.ckptDir)) return null;
    const all = readdirSync(this.ckptDir).filter((f) => CKPT_RE.test(f)).sort();
    return all.length ? join(this.ckptDir, all[all.length - 1]) : null;
  }

  loadCheckpoint(path: string): void {
    const f = SafetensorsFile.open(path);
    try {
      const raw = f.metadata['sdtune.checkpoint'];
      if (!raw) throw new TrainingError(`${path}: not an sdtune training checkpoint (no sdtune.checkpoint metadata)`);
      const meta = JSON.parse(raw) as { step: number; technique: string; optimizer: T.optim.OptimizerMeta<T.optim.AdamWHyper>; generator: string; global_rng: string; scale: number | null };
      if (meta.technique !== this.technique.kind) throw new TrainingError(`${path}: this checkpoint is from a ${meta.technique} run, not ${this.technique.kind}; use another --work folder`);
      T.noGrad(() => {
        for (const [n, p] of this.params) {
          const k = `param.${n}`;
          if (!f.has(k)) throw new TrainingError(`${path}: the checkpoint lacks ${n}; it was made with other settings (rank, targets, vectors)`);
          const t = f.get(k);
          if (t.shape.join() !== p.shape.join()) throw new TrainingError(`${path}: ${n} is [${t.shape}] in the checkpoint but [${p.shape}] now; resume with the settings it was made with`);
          p.copy_(t);
          t.dispose();
        }
        if (this.ema) for (const [n, e] of this.ema) {
          const t = f.get(`ema.${n}`);
          e.copy_(t);
          t.dispose();
        }
      });
      const ot = new Map<string, T.Tensor>();
      for (const k of f.keys()) if (k.startsWith('optim.')) ot.set(k.slice(6), f.get(k));
      this.opt.loadStateDict({ meta: meta.optimizer, tensors: ot });
      for (const t of ot.values()) t.dispose();
      const prior: T.Tensor[] = [];
      for (let i = 0; f.has(`prior.${i}`); i++) prior.push(T.keep(f.get(`prior.${i}`).to(this.technique.model.device)));
      if (prior.length) {
        for (const t of this.basePriorPreds ?? []) t.dispose();
        this.basePriorPreds = prior;
      }
      this.gen.setState(Buffer.from(meta.generator, 'base64'));
      T.setRngState(Buffer.from(meta.global_rng, 'base64'));
      if (this.scaler && meta.scale) this.scaler.scale = meta.scale;
      this.step = meta.step;
    } finally {
      f.close();
    }
  }

  // ---- the product ------------------------------------------------------------------------------

  /**
   * Runs `fn` with the EMA weights in place of the trained ones (and puts them back after): what
   * the product holds, so the product and the validation that judges it see the same weights. A
   * plain call without EMA.
   */
  private withEmaWeights<R>(fn: () => R): R {
    const ema = this.ema;
    if (!ema) return fn();
    const swap = () =>
      T.noGrad(() => {
        for (const [n, p] of this.params) {
          const e = ema.get(n)!;
          const tmp = p.detach().clone();
          p.copy_(e);
          e.copy_(tmp);
          tmp.dispose();
        }
      });
    swap();
    try {
      return fn();
    } finally {
      swap();
    }
  }

  private saveProduct(path: string): void {
    const m = this.technique.model;
    this.withEmaWeights(() => {
      mkdirSync(dirname(path), { recursive: true });
      this.technique.save(path, { step: this.step, baseName: m.name, baseHash: m.hash, settings: this.o.settings ?? {} });
    });
  }

  private snapshotPath(step: number): string {
    return snapshotPath(this.o.out, this.technique.extension, step);
  }

  private samples(): string[] {
    const prompts = this.o.samplePrompts ?? [];
    if (!prompts.length) return [];
    const dir = join(this.o.workDir, 'samples');
    mkdirSync(dir, { recursive: true });
    const files: string[] = [];
    const embeddings = this.technique.embeddings();
    prompts.forEach((prompt, i) => {
      const [img] = generate(this.technique.model, { prompt, seed: (this.o.seed ?? 0) + i, steps: this.o.sampleSteps ?? 20, embeddings, sampler: 'euler_a' });
      const file = join(dir, `step-${String(this.step).padStart(6, '0')}-${i}.png`);
      writePng(file, img.image, { parameters: img.parameters });
      files.push(file);
    });
    return files;
  }

  /** The sample check with the UNet in eval mode and the global RNG left where it was (resume stays exact). */
  private checkSamples(check: NonNullable<TrainOptions['checkSamples']>): number {
    const rng = T.getRngState();
    const unet = this.technique.model.unet;
    unet.eval();
    try {
      return check(this.technique.model, this.technique.embeddings());
    } finally {
      unet.train();
      T.setRngState(rng);
    }
  }

  // ---- the loop ---------------------------------------------------------------------------------

  async run(): Promise<TrainResult> {
    const o = this.o;
    const t0 = Date.now();
    mkdirSync(o.workDir, { recursive: true });
    const logPath = join(o.workDir, 'log.jsonl');
    const records: StepRecord[] = [];
    this.preparePrior();
    const resumeFrom = o.resume ? this.latestCheckpoint() : null;
    if (resumeFrom) {
      this.loadCheckpoint(resumeFrom);
      // The log keeps what happened up to the checkpoint (rewritten atomically).
      if (existsSync(logPath)) {
        const kept = readFileSync(logPath, 'utf8').split('\n').filter((l) => l && (JSON.parse(l) as StepRecord).step <= this.step);
        writeFileAtomic(logPath, kept.map((l) => l + '\n').join(''));
        for (const l of kept) records.push(JSON.parse(l) as StepRecord);
      }
    } else {
      // The seed decides the global random stream too (dropout in a hypernetwork, RReLU): two runs
      // with one seed are the same run, in one process or two.
      if (o.seed !== undefined) T.manualSeed(o.seed);
      if (existsSync(logPath)) rmSync(logPath);
      if (this.priorInputs.length) {
        // The base model's predictions: adapters switched off where the technique can (a fresh
        // hypernetwork is near, not at, the identity); full fine-tuning has not moved yet.
        this.technique.bypass?.(true);
        try {
          this.basePriorPreds = this.priorPreds().map((t) => T.keep(t));
        } finally {
          this.technique.bypass?.(false);
        }
      }
    }
    if (this.step >= o.steps) {
      return this.finish('done', t0, records, `already trained to step ${this.step}`);
    }
    const accum = o.gradAccumulation ?? 1;
    const perEpoch = this.data.batchesPerEpoch;
    let lastLoss = NaN;
    let prepared = -1;
    this.technique.model.unet.train();
    while (this.step < o.steps) {
      // Let the event loop run between steps: signals (Ctrl-C), progress events, job messages.
      await new Promise<void>((r) => setImmediate(r));
      if (o.shouldStop?.()) {
        const ck = this.saveCheckpoint();
        return this.finish('stopped', t0, records, `stopped at step ${this.step}; checkpoint ${ck}; run again with --resume to continue`, true);
      }
      const ts = Date.now();
      const lrs = this.lrs(this.step);
      this.opt.setLr(lrs);
      let loss = 0;
      let epoch = 0;
      for (let k = 0; k < accum; k++) {
        const micro = this.step * accum + k;
        epoch = Math.floor(micro / perEpoch);
        if (epoch !== prepared) {
          await this.data.prepare?.(epoch);
          prepared = epoch;
        }
        const b = this.data.batch(epoch, micro % perEpoch);
        // Gradient checkpointing: the UNet's segments are recorded, then recomputed in backward.
        const tape = o.gradientCheckpointing ? new T.CheckpointTape((fn) => this.autocast(fn)) : null;
        try {
          const l = T.tidy(() => {
            const lt = (tape ? tape.run(() => this.batchLoss(b)) : this.batchLoss(b)).div(accum);
            const scaled = this.scaler ? this.scaler.scaleLoss(lt) : lt;
            scaled.backward();
            tape?.backward();
            return lt.item(); // .item(): host sync, once per micro-batch (NaN check and log)
          });
          loss += l;
        } finally {
          tape?.dispose();
          this.disposeBatch(b);
        }
      }
      if (!Number.isFinite(loss)) {
        this.opt.zeroGrad();
        const last = this.latestCheckpoint();
        return this.finish('diverged', t0, records, `the loss became ${loss} at step ${this.step + 1}: training stopped${last ? `; the last good checkpoint is ${last}` : ''}. Lower the learning rate (now ${lrs[0]}) or enable gradient clipping.`);
      }
      let finite = true;
      if (this.scaler) finite = this.scaler.unscale(this.opt);
      if (finite) {
        if (o.maxGradNorm) T.optim.clipGradNorm(this.params.map(([, p]) => p), o.maxGradNorm).dispose();
        this.opt.step();
      }
      this.scaler?.update(finite);
      this.opt.zeroGrad();
      if (this.ema) {
        const d = emaDecayAt(o.emaDecay!, this.step);
        T.noGrad(() => {
          for (const [n, p] of this.params) this.ema!.get(n)!.mul_(d).add_(p, 1 - d);
        });
      }
      this.step++;
      lastLoss = loss;
      const rec: StepRecord = { step: this.step, epoch, loss, lr: lrs[0], step_ms: Date.now() - ts };
      const every = (n: number | undefined) => n !== undefined && n > 0 && (this.step % n === 0 || this.step === o.steps);
      if (every(o.validateEvery)) {
        // With EMA the product holds the averaged weights: they are what is validated.
        this.withEmaWeights(() => {
          const v = this.validation();
          if (v) {
            rec.val_loss = v.loss;
            rec.val_by_t = v.byT;
            if (v.gap !== undefined) [rec.concept_gap, rec.gap_by_t] = [v.gap, v.gapByT];
          }
          const d = this.priorDriftByT();
          if (d) [rec.prior_drift, rec.drift_by_t] = [mean(d), d];
          if (o.checkSamples) rec.sample_score = this.checkSamples(o.checkSamples);
        });
      }
      if (every(o.sampleEvery)) rec.samples = this.withEmaWeights(() => this.samples());
      if (every(o.checkpointEvery)) {
        // The last step gets a checkpoint too, so a finished run can be extended with --resume.
        rec.checkpoint = this.saveCheckpoint();
        if (o.snapshots && this.step < o.steps) this.saveProduct(this.snapshotPath(this.step));
      }
      records.push(rec);
      appendFileSync(logPath, JSON.stringify(rec) + '\n');
      o.onStep?.(rec);
      if (o.earlyStop && rec.val_loss !== undefined && this.step < o.steps) {
        const advice = recommendStop(records);
        const since = advice ? records.filter((r) => r.val_loss !== undefined && r.step > advice.step).length : 0;
        if (advice && since >= o.earlyStop) {
          if (o.snapshots) this.saveProduct(this.snapshotPath(this.step));
          const snap = o.snapshots && existsSync(this.snapshotPath(advice.step)) ? `; its snapshot is ${this.snapshotPath(advice.step)}` : '';
          return this.finish('done', t0, records, `early stop at step ${this.step}: the meter's best step, ${advice.step}, has stood for ${since} validations${snap}`, true);
        }
      }
    }
    if (o.snapshots) this.saveProduct(this.snapshotPath(this.step));
    return this.finish('done', t0, records, `trained ${this.step} steps, final loss ${lastLoss.toFixed(4)}`, true);
  }

  private finish(status: TrainResult['status'], t0: number, records: StepRecord[], message: string, save = status === 'done'): TrainResult {
    this.technique.model.unet.eval();
    if (save) {
      mkdirSync(join(this.o.out, '..'), { recursive: true });
      this.saveProduct(this.o.out);
    }
    const last = records.length ? records[records.length - 1].loss : NaN;
    return { status, steps: this.step, seconds: (Date.now() - t0) / 1000, finalLoss: last, out: save ? this.o.out : null, message, trainableParameters: this.trainableParameters, records };
  }

  dispose(): void {
    this.opt.dispose();
    this.caches.dispose();
    for (const t of this.ema?.values() ?? []) t.dispose();
    for (const t of this.basePriorPreds ?? []) t.dispose();
    for (const p of this.priorInputs) {
      p.x.dispose();
      p.ctx.dispose();
    }
  }
}
