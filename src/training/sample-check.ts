// The sample check: the meter's curve read from pictures instead of losses. Losses miss what a
// person sees — measured on the toy world (docs/toy-world.md), a style adapter's look switches on
// and off between neighbouring snapshots while no loss follows. So, at each validation, the model
// as it is draws a fixed set of pictures (same prompts, same seeds each time), and a detector
// scores how many show the concept.
//
// The detector is fitted once, before the first step, from what every run has: the training
// pictures (positives) against the base model's pictures of the same captions without the concept
// word (negatives) — a classifier two-sample test. The positives go through the VAE and back, so
// that the detector cannot tell them apart by the VAE's blur, which every generated picture has.
// It is a small convolutional net with a global average: it reads texture and local shape (a
// pattern, a stroke, a palette), not position. No pretrained network is needed, and none is
// downloaded. It is a guide to a look, not to an identity: a face's likeness needs more than this.
import * as T from '../torch/index.ts';
import { nn } from '../torch/index.ts';
import { generate, imagesToTensor } from '../sampling/pipeline.ts';
import type { StableDiffusion } from '../models/load.ts';
import type { PromptEmbeddings } from '../sampling/conditioning.ts';
import type { RgbImage } from '../formats/png.ts';

/** How the check draws and fits. Fixed: a run's curve must be comparable from one validation to the next. */
export const SAMPLE_CHECK = {
  /** Pictures are scored at this side at most (downsampled by area). */
  maxSide: 64,
  sampler: 'dpmpp_2m' as const,
  steps: 15,
  cfg: 5,
  /** The base model's pictures per training caption (negatives). */
  negativesPerCaption: 2,
  /** Captions used for negatives and prompts, at most. */
  maxCaptions: 24,
  fitSteps: 400,
  fitBatch: 16,
  /**
   * The least held-out AUC (SampleCheck.heldOut) at which a run follows the check. Measured on the
   * toy world (docs/toy-world.md): the subject's detector scores 1.00 and follows its concept; the
   * outline style's 0.78, and the meter with it picked worse steps than with the judge on the same
   * pictures in 3 of 4 style runs.
   */
  minHeldOutAuc: 0.9,
  lr: 3e-3,
};

export class SampleCheckError extends Error {
  override name = 'SampleCheckError';
}

/** Three 3×3 convolutions (the last two at stride 2) with group norms, a global average, one logit. */
export class ConceptDetector extends nn.Module {
  private readonly convs: T.nn.Conv2d[] = [];
  private readonly norms: T.nn.GroupNorm[] = [];
  private readonly out: T.nn.Linear;
  static readonly LAYERS: readonly [number, number, number][] = [[3, 16, 1], [16, 32, 2], [32, 32, 2]];

  constructor(vb: T.nn.VarBuilder) {
    super();
    ConceptDetector.LAYERS.forEach(([i, o, stride], k) => {
      this.convs.push(this.child(vb, `conv${k}`, (v) => new nn.Conv2d(v, i, o, 3, { stride, padding: 1 })));
      this.norms.push(this.child(vb, `norm${k}`, (v) => new nn.GroupNorm(v, 8, o)));
    });
    this.out = this.child(vb, 'out', (v) => new nn.Linear(v, 32, 1));
  }

  /** [B, 3, H, W] in [-1, 1] → logits [B]. */
  forward(x: T.Tensor): T.Tensor {
    return T.tidy(() => {
      let h = x;
      this.convs.forEach((c, k) => {
        h = nn.activate(this.norms[k].forward(c.forward(h)), 'silu');
      });
      return this.out.forward(h.mean([2, 3])).flatten();
    });
  }

  /** The probability that each picture shows the concept. */
  probabilities(x: T.Tensor): number[] {
    return T.noGrad(() => T.tidy(() => this.forward(detectorInput(x)).sigmoid().toArray() as number[])); // host sync
  }
}

/** Pictures [B, 3, H, W] at the detector's side: downsampled by area to at most maxSide. */
export function detectorInput(x: T.Tensor): T.Tensor {
  return T.tidy(() => {
    const [, , h, w] = x.shape;
    const side = Math.min(SAMPLE_CHECK.maxSide, h, w);
    if (h === side && w === side) return x.to('float32');
    // Area averaging by a whole factor where one fits (sizes are multiples of 8), then bilinear.
    const k = Math.floor(Math.min(h, w) / side);
    const pooled = k > 1 ? T.avgPool2d(x.to('float32'), k) : x.to('float32');
    return pooled.shape[2] === side && pooled.shape[3] === side ? pooled : T.interpolate(pooled, { size: [side, side], mode: 'bilinear' });
  });
}

/** Fits a detector: positives [P, 3, H, W] against negatives [N, 3, H', W'] (both in [-1, 1]), AdamW, horizontal flips and pixel noise. */
export function fitDetector(positives: T.Tensor, negatives: T.Tensor, o: { seed?: number; steps?: number } = {}): ConceptDetector {
  const np = positives.size(0);
  const nn_ = negatives.size(0);
  if (np < 2 || nn_ < 2) throw new SampleCheckError(`the sample check needs at least 2 training pictures and 2 base-model pictures (got ${np} and ${nn_})`);
  const seed = o.seed ?? 0;
  const steps = o.steps ?? SAMPLE_CHECK.fitSteps;
  const half = SAMPLE_CHECK.fitBatch;
  // The global RNG draws the initial weights; it is restored, so a run trains the same with or without the check.
  const rng = T.getRngState();
  T.manualSeed(seed + 60013);
  const det = new ConceptDetector(nn.VarBuilder.init());
  T.setRngState(rng);
  const opt = new T.optim.AdamW([...det.namedParameters()], { lr: SAMPLE_CHECK.lr, weightDecay: 1e-2 });
  const gen = new T.Generator(seed + 60017);
  const P = T.keep(detectorInput(positives));
  const N = T.keep(detectorInput(negatives));
  try {
    for (let s = 0; s < steps; s++) {
      T.tidy(() => {
        const ip = T.randint(0, np, [half], { generator: gen });
        const ineg = T.randint(0, nn_, [half], { generator: gen });
        let x = T.cat([P.indexSelect(0, ip), N.indexSelect(0, ineg)], 0);
        if (s % 2 === 1) x = x.flip(3);
        x = x.add(T.randn(x.shape, { generator: gen }).mul(0.03));
        const y = T.cat([T.ones([half]), T.zeros([half])], 0);
        T.binaryCrossEntropyWithLogits(det.forward(x), y).backward();
      });
      opt.step();
      opt.zeroGrad();
    }
  } finally {
    opt.dispose();
    P.dispose();
    N.dispose();
  }
  det.eval().requiresGrad_(false);
  return det;
}

/** What a run's check draws at each validation, and the detector that scores it. */
export interface SampleCheck {
  prompts: string[];
  perPrompt: number;
  seed: number;
  width: number;
  height: number;
  detector: ConceptDetector;
  /** The detector's mean probability on the training pictures and on the base model's (its separation, for the log). */
  fit: { positives: number; negatives: number };
  /**
   * With held-out pictures: the chance that the detector scores a held-out picture above a base
   * model's picture of a held-out caption (the area under the ROC curve; 0.5 = it cannot tell,
   * 1 = it always can). The training pictures are a poor test: the detector can learn them by heart.
   */
  heldOut?: { auc: number; pictures: number };
}

/** Why a run should not follow its check (its detector cannot tell held-out pictures from the base model's), or null when it may (or there was nothing to test it on). */
export function untrustedCheck(check: Pick<SampleCheck, 'heldOut'>): string | null {
  const h = check.heldOut;
  if (!h || h.auc >= SAMPLE_CHECK.minHeldOutAuc) return null;
  const pct = (x: number) => `${Math.round(x * 100)} %`;
  return `the sample check is off: its detector told the ${h.pictures} held-out pictures from the base model's in ${pct(h.auc)} of pairs, and it needs ${pct(SAMPLE_CHECK.minHeldOutAuc)}; the meter reads the losses instead. More training pictures, or held-out pictures more like them, may make it usable`;
}

/** The chance that a positive's score is above a negative's, ties counting half (Mann–Whitney). */
export function rocAuc(positives: readonly number[], negatives: readonly number[]): number {
  let wins = 0;
  for (const p of positives) for (const n of negatives) wins += p > n ? 1 : p === n ? 0.5 : 0;
  return wins / (positives.length * negatives.length);
}

const unique = (xs: readonly string[]) => [...new Set(xs.map((x) => x.trim()).filter(Boolean))];

/** The check's drawing settings at a size (the negatives and every validation draw alike). */
const drawAt = (width: number, height: number) => ({ steps: SAMPLE_CHECK.steps, sampler: SAMPLE_CHECK.sampler, cfg: SAMPLE_CHECK.cfg, width, height });

/**
 * Fits the check on the base model, before any adapter is applied or weight moves.
 * @param pictures  the training pictures, each [3, H, W] in [-1, 1], with their captions (class images left out);
 * @param width, height  the size pictures are drawn at (the training resolution);
 * @param without   a caption without the concept word (identity for a style);
 * @param prompts   what to draw at each validation (the held-out captions, else the training captions);
 * @param count     pictures per validation.
 */
export function prepareSampleCheck(
  base: StableDiffusion,
  o: {
    pictures: readonly T.Tensor[]; captions: readonly string[]; without: (c: string) => string; prompts: readonly string[]; count: number; width: number; height: number; seed?: number;
    heldOut?: { pictures: readonly T.Tensor[]; captions: readonly string[] };
  },
): SampleCheck {
  const seed = o.seed ?? 0;
  if (!Number.isInteger(o.count) || o.count < 1) throw new SampleCheckError(`sampleCheck is the number of pictures drawn at each validation, a whole number ≥ 1 (got ${o.count})`);
  const { width, height } = o;
  const captions = unique(o.captions).slice(0, SAMPLE_CHECK.maxCaptions);
  const prompts = unique(o.prompts).slice(0, Math.min(SAMPLE_CHECK.maxCaptions, o.count));
  if (captions.length === 0 || prompts.length === 0) throw new SampleCheckError('the sample check needs captioned training pictures: give each picture a caption (a .txt file beside it), or turn sampleCheck off');
  const draw = drawAt(width, height);
  // Positives: the training pictures through the VAE and back (generated pictures carry its blur).
  const positives = throughVae(base, o.pictures);
  // Negatives: the base model on the same captions without the word.
  const negImages = captions.flatMap((c, i) => generate(base, { ...draw, prompt: o.without(c), batch: SAMPLE_CHECK.negativesPerCaption, seed: seed + 70001 + i }).map((g) => g.image));
  const negatives = imagesToTensor(negImages);
  try {
    const detector = fitDetector(positives, negatives, { seed });
    const mean = (xs: number[]) => xs.reduce((a, x) => a + x, 0) / xs.length;
    return {
      prompts, perPrompt: Math.ceil(o.count / prompts.length), seed, width, height, detector,
      fit: { positives: mean(detector.probabilities(positives)), negatives: mean(detector.probabilities(negatives)) },
      ...(o.heldOut && o.heldOut.pictures.length > 0 ? { heldOut: heldOutAuc(base, detector, o.heldOut, o.without, draw, seed) } : {}),
    };
  } finally {
    positives.dispose();
    negatives.dispose();
  }
}

/** The pictures the check draws from the model as it is now: for each prompt, perPrompt pictures at fixed seeds. */
export function drawSamples(model: StableDiffusion, check: SampleCheck, embeddings?: PromptEmbeddings): RgbImage[][] {
  return check.prompts.map((prompt, i) => generate(model, { ...drawAt(check.width, check.height), prompt, batch: check.perPrompt, seed: check.seed + 80021 + i, embeddings }).map((g) => g.image));
}

/** Pictures [3, H, W] through the VAE and back, at the detector's side. One at a time: they may come in several bucket sizes. */
function throughVae(base: StableDiffusion, pictures: readonly T.Tensor[]): T.Tensor {
  return T.noGrad(() => T.tidy(() => T.keep(T.cat(pictures.map((px) => detectorInput(base.vae.decode(base.vae.encode(px.unsqueeze(0).to(base.device)).mean).clamp(-1, 1).cpu())), 0))));
}

/** The detector on held-out pictures (through the VAE, as the positives) against the base model's, one of each held-out caption (without the word). */
function heldOutAuc(
  base: StableDiffusion, detector: ConceptDetector, held: { pictures: readonly T.Tensor[]; captions: readonly string[] }, without: (c: string) => string,
  draw: ReturnType<typeof drawAt>, seed: number,
): { auc: number; pictures: number } {
  const images = unique(held.captions).slice(0, SAMPLE_CHECK.maxCaptions).map((c, i) => generate(base, { ...draw, prompt: without(c), batch: 1, seed: seed + 70501 + i })[0].image);
  const negatives = imagesToTensor(images);
  let x: T.Tensor | null = null;
  try {
    x = throughVae(base, held.pictures);
    return { auc: rocAuc(detector.probabilities(x), detector.probabilities(negatives)), pictures: held.pictures.length };
  } finally {
    x?.dispose();
    negatives.dispose();
  }
}

/** The model as it is now on the check's prompts and seeds: the detector's mean probability (0–1). */
export function sampleScore(model: StableDiffusion, check: SampleCheck, embeddings?: PromptEmbeddings): number {
  return scoreSamples(check, drawSamples(model, check, embeddings));
}

/** The detector's mean probability over pictures drawn as drawSamples draws them (scored a prompt's batch at a time). */
export function scoreSamples(check: SampleCheck, drawn: readonly (readonly RgbImage[])[]): number {
  let sum = 0;
  let n = 0;
  for (const images of drawn) {
    const x = imagesToTensor(images);
    try {
      for (const p of check.detector.probabilities(x)) [sum, n] = [sum + p, n + 1];
    } finally {
      x.dispose();
    }
  }
  return sum / n;
}
