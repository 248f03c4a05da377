// The toy Stable Diffusion, trained from scratch by sdtune itself on the toy world (world.ts):
// the real architecture in miniature, sized for a 2-core CPU.
//   1. the VAE: 32×32 RGB → 8×8×4 latents (three levels, factor 4), trained on reconstruction
//      MSE + a small KL term; the scaling factor is then 1/std of its latents (SD's convention);
//   2. the text encoder (CLIP-style, the real 49408-token vocabulary, so textual inversion and
//      every prompt feature work) and the cross-attention UNet, trained together with the shared
//      loop: DreamBooth's technique with the text encoder on, on captioned world scenes, with 10 %
//      empty captions so classifier-free guidance has an unconditional model.
// The product is an LDM single-file checkpoint (fp16) whose configs travel in its metadata, so it
// loads like any SD checkpoint.
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import * as T from '../torch/index.ts';
import { SafetensorsFile, saveSafetensors } from '../formats/safetensors.ts';
import type { RgbImage } from '../formats/png.ts';
import { AutoencoderKL } from '../models/vae.ts';
import { UNet2DConditionModel } from '../models/unet.ts';
import { CLIPTextModel } from '../models/clip.ts';
import { SD15_TEXT, SD15_UNET, type ClipTextConfig, type UNetConfig, type VAEConfig } from '../models/config.ts';
import { SD_SCHEDULER_CONFIG, type StableDiffusion } from '../models/load.ts';
import { ClipTokenizer } from '../text/tokenizer.ts';
import { Trainer, type StepRecord, type TrainBatch, type TrainData } from '../training/loop.ts';
import { DreamBoothTechnique } from '../training/techniques/dreambooth.ts';
import { imagesToTensor } from '../sampling/pipeline.ts';
import { caption, codecImage, renderScene, sampleScene } from './world.ts';
import { Rng } from '../rng.ts';

/** 32×32 → 8×8×4. */
export const TOY_VAE: VAEConfig = { inChannels: 3, outChannels: 3, latentChannels: 4, blockOutChannels: [32, 64, 64], layersPerBlock: 1, normGroups: 16, scalingFactor: 1, sampleSize: 32 };
/** Cross-attention at 8×8 and 4×4, 64-wide context. */
export const TOY_UNET: UNetConfig = {
  ...SD15_UNET,
  blockOutChannels: [64, 128],
  layersPerBlock: 1,
  downBlocks: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'],
  upBlocks: ['CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
  crossAttentionDim: 64,
  heads: [4, 4],
  normGroups: 16,
  sampleSize: 8,
};
export const TOY_TEXT: ClipTextConfig = { ...SD15_TEXT, hiddenSize: 64, intermediateSize: 128, layers: 2, heads: 4 };

export interface PretrainOptions {
  /** Distinct scenes to train on (rendered once and kept). */
  scenes?: number;
  vaeSteps?: number;
  steps?: number;
  batch?: number;
  seed?: number;
  lr?: number;
  workDir: string;
  out: string;
  onVaeStep?: (step: number, total: number, loss: number) => void;
  onStep?: (r: StepRecord, total: number) => void;
  shouldStop?: () => boolean;
  /** Stop (checkpoint and product saved) after this step, on the schedule of `steps`. */
  stopAt?: number;
}

/** The world as training data: scene i is rendered once; 10 % of captions are empty (for CFG). */
export class WorldTrainData implements TrainData {
  private readonly images: RgbImage[] = [];
  private readonly captions: string[] = [];
  constructor(
    readonly scenes: number,
    readonly batchSize: number,
    readonly seed: number,
    readonly emptyCaptions = 0.1,
  ) {
    for (let i = 0; i < scenes; i++) {
      const a = sampleScene(seed, i);
      this.images.push(renderScene(a, { size: 32, seed: seed * 1_000_003 + i }));
      this.captions.push(caption(a));
    }
  }
  get batchesPerEpoch(): number {
    return Math.floor(this.scenes / this.batchSize);
  }
  private order(epoch: number): number[] {
    return Rng.derive(this.seed, 'order', epoch).shuffle(Array.from({ length: this.scenes }, (_, i) => i));
  }
  private cachedEpoch = -1;
  private cachedOrder: number[] = [];
  batch(epoch: number, index: number): TrainBatch {
    if (epoch !== this.cachedEpoch) {
      this.cachedOrder = this.order(epoch);
      this.cachedEpoch = epoch;
    }
    const ids = this.cachedOrder.slice(index * this.batchSize, (index + 1) * this.batchSize);
    const rng = Rng.derive(this.seed, 'captions', epoch, index);
    return {
      pixels: imagesToTensor(ids.map((i) => this.images[i])),
      captions: ids.map((i) => (rng.next() < this.emptyCaptions ? '' : this.captions[i])),
      masks: null,
      weights: ids.map(() => 1),
      keys: ids.map((i) => `scene-${i}`),
    };
  }
  validation(): TrainBatch[] {
    const ids = Array.from({ length: Math.min(32, this.scenes) }, (_, i) => i);
    return [{ pixels: imagesToTensor(ids.map((i) => this.images[i])), captions: ids.map((i) => this.captions[i]), masks: null, weights: ids.map(() => 1), keys: ids.map((i) => `scene-${i}`) }];
  }
}

/** The VAE's training images: the codec set (world.ts codecImage), rendered once. */
export class CodecData {
  private readonly images: RgbImage[] = [];
  constructor(
    readonly count: number,
    readonly batchSize: number,
    readonly seed: number,
  ) {
    for (let i = 0; i < count; i++) this.images.push(codecImage(seed, i, { size: 32 }));
  }
  /** Batch `step` of pixels, [B, 3, 32, 32] in [-1, 1]. */
  pixels(step: number): T.Tensor {
    const rng = Rng.derive(this.seed, 'vae', step);
    return imagesToTensor(Array.from({ length: this.batchSize }, () => this.images[rng.int(this.count)]));
  }
}

/**
 * Stage 1: the VAE on reconstruction MSE + 1e-6·KL over the codec set, then its latent scaling
 * factor, measured on base-world scenes (the latents the UNet learns).
 */
export function trainToyVae(data: WorldTrainData, o: { steps: number; lr?: number; seed?: number; codec?: CodecData; onStep?: PretrainOptions['onVaeStep'] }): AutoencoderKL {
  const codec = o.codec ?? new CodecData(data.scenes, data.batchSize, o.seed ?? 0);
  T.manualSeed(o.seed ?? 0);
  const vae = new AutoencoderKL(T.nn.VarBuilder.init(), TOY_VAE);
  const opt = new T.optim.AdamW([...vae.namedParameters()], { lr: o.lr ?? 1e-3, weightDecay: 0 });
  const gen = new T.Generator((o.seed ?? 0) + 1);
  vae.requiresGrad_(true);
  try {
    for (let s = 0; s < o.steps; s++) {
      const loss = T.tidy(() => {
        const x = codec.pixels(s);
        const p = vae.encode(x);
        const rec = vae.decode(vae.sample(p, gen));
        const kl = p.mean.pow(2).add(p.std.pow(2)).sub(1).sub(p.logvar).mean().mul(0.5);
        const l = T.mseLoss(rec, x).add(kl.mul(1e-6));
        l.backward();
        return l.item(); // .item(): host sync, for the log
      });
      opt.step();
      opt.zeroGrad();
      o.onStep?.(s + 1, o.steps, loss);
    }
  } finally {
    opt.dispose();
  }
  vae.requiresGrad_(false);
  // SD's convention: scale latents to unit variance.
  const std = T.noGrad(() => T.tidy(() => {
    const b = data.validation()[0];
    const s = vae.encode(b.pixels).mean.flatten().std(0).item(); // .item(): host sync
    b.pixels.dispose();
    return s;
  }));
  const weights = new Map([...vae.stateDict()].map(([k, t]) => [k, T.noGrad(() => t.detach().clone())] as const));
  vae.dispose();
  const scaled = new AutoencoderKL(T.nn.VarBuilder.from(weights), { ...TOY_VAE, scalingFactor: 1 / std });
  return scaled;
}

/** Stages 1 and 2; writes `out` (LDM single file) and returns the run's summary. */
export async function pretrainToy(o: PretrainOptions): Promise<{ vaeLoss: number; loss: number; seconds: number; status: string }> {
  const t0 = Date.now();
  const seed = o.seed ?? 0;
  const data = new WorldTrainData(o.scenes ?? 8192, o.batch ?? 32, seed);
  let vaeLoss = NaN;
  // Stage 1 is kept in the work folder, so a resumed run goes straight on with stage 2.
  mkdirSync(o.workDir, { recursive: true });
  const vaeFile = join(o.workDir, 'vae.safetensors');
  let vae: AutoencoderKL;
  if (existsSync(vaeFile)) {
    const f = SafetensorsFile.open(vaeFile);
    const scale = Number(f.metadata['sdtune.scaling_factor']);
    vae = new AutoencoderKL(T.nn.VarBuilder.from(f), { ...TOY_VAE, scalingFactor: scale });
    f.close();
  } else {
    vae = trainToyVae(data, { steps: o.vaeSteps ?? 2000, seed, onStep: (s, n, l) => { vaeLoss = l; o.onVaeStep?.(s, n, l); } });
    saveSafetensors(vaeFile, vae.stateDict(), { 'sdtune.scaling_factor': String(vae.cfg.scalingFactor), 'sdtune.vae_loss': String(vaeLoss) });
  }
  T.manualSeed(seed + 2);
  const unet = new UNet2DConditionModel(T.nn.VarBuilder.init(), TOY_UNET);
  const textEncoder = new CLIPTextModel(T.nn.VarBuilder.init(), TOY_TEXT);
  const model: StableDiffusion = {
    name: 'toy-sd', path: '', family: 'sd1', prediction: 'epsilon', tokenizer: ClipTokenizer.default(), padding: 'sd1',
    textEncoder, unet, vae, schedulerConfig: SD_SCHEDULER_CONFIG, hash: '', device: 'cpu',
    dispose() { unet.dispose(); vae.dispose(); textEncoder.dispose(); },
  };
  const tech = new DreamBoothTechnique(model, { token: '', lr: o.lr ?? 3e-4, trainTextEncoder: true, textEncoderLr: o.lr ?? 3e-4, saveDtype: 'fp16' });
  const steps = o.steps ?? 20000;
  const trainer: Trainer = new Trainer(tech, data, {
    steps, seed, workDir: o.workDir, out: o.out, lrSchedule: 'cosine', warmupSteps: Math.min(500, Math.floor(steps / 10)), maxGradNorm: 1,
    checkpointEvery: 1000, validateEvery: 500, resume: true, onStep: (r) => o.onStep?.(r, steps),
    shouldStop: () => (o.stopAt !== undefined && trainer.step >= o.stopAt) || (o.shouldStop?.() ?? false),
  });
  try {
    const r = await trainer.run();
    return { vaeLoss, loss: r.finalLoss, seconds: (Date.now() - t0) / 1000, status: r.status };
  } finally {
    trainer.dispose();
    tech.dispose();
    model.dispose();
  }
}
