// The judge: an attribute classifier of toy-world pictures, trained with sdtune's engine on
// rendered scenes whose attributes are known. It reads a 32×32 picture and says its shape, colour,
// size, position, background, stripes, whether it shows the subject (the polka-dot "sks heart")
// and whether it is drawn in the outline style. The fine-tuning metrics (metrics.ts) are its
// verdicts on generated pictures. It learns from clean renders and from the same renders passed
// through the toy model's VAE (what generated pictures look like: decoded, a little soft), and its
// accuracy is measured on scenes it never saw, both ways.
import * as T from '../torch/index.ts';
import { SafetensorsFile, saveSafetensors } from '../formats/safetensors.ts';
import type { RgbImage } from '../formats/png.ts';
import type { AutoencoderKL } from '../models/vae.ts';
import { imagesToTensor as batchToTensor, tensorToImages } from '../sampling/pipeline.ts';
import { BACKGROUNDS, COLOURS, PATTERNS, POSITIONS, SHAPES, SIZES, SUBJECT_SIZE, renderScene, sampleSceneFrom, type SceneAttrs } from './world.ts';
import { Rng } from '../rng.ts';

const { nn } = T;

/** What the judge reads off a picture, head by head, in this order (the logits' layout). */
export const JUDGE_HEADS = {
  shape: SHAPES,
  colour: COLOURS,
  size: SIZES,
  position: POSITIONS,
  background: BACKGROUNDS,
  pattern: PATTERNS,
  subject: ['no', 'yes'],
  style: ['none', 'outline'],
} as const;

export type JudgeHead = keyof typeof JUDGE_HEADS;
export const HEAD_NAMES = Object.keys(JUDGE_HEADS) as JudgeHead[];
const HEAD_OFFSETS: Record<JudgeHead, number> = (() => {
  let at = 0;
  const o = {} as Record<JudgeHead, number>;
  for (const h of HEAD_NAMES) {
    o[h] = at;
    at += JUDGE_HEADS[h].length;
  }
  return o;
})();
const LOGITS = HEAD_NAMES.reduce((n, h) => n + JUDGE_HEADS[h].length, 0);

/** A picture's attributes as the judge sees them, with its confidence in the two concepts. */
export interface Verdict extends SceneAttrs {
  subject: boolean;
  style: boolean;
  /** Probabilities of the subject and of the outline style. */
  pSubject: number;
  pStyle: number;
}

/** The truth of one training or test picture, as label indices per head. */
export type Labels = Record<JudgeHead, number>;

export class JudgeError extends Error {
  override name = 'JudgeError';
}

/** Five 3×3 convolutions (32 → 16 → 8 → 4 pixels) with group norms, then one hidden layer. */
export class ToyJudge extends nn.Module {
  private readonly convs: T.nn.Conv2d[] = [];
  private readonly norms: T.nn.GroupNorm[] = [];
  private readonly hidden: T.nn.Linear;
  private readonly out: T.nn.Linear;
  static readonly LAYERS: readonly [number, number, number][] = [[3, 32, 1], [32, 64, 2], [64, 64, 1], [64, 128, 2], [128, 128, 2]];

  constructor(vb: T.nn.VarBuilder) {
    super();
    ToyJudge.LAYERS.forEach(([i, o, stride], k) => {
      this.convs.push(this.child(vb, `conv${k}`, (v) => new nn.Conv2d(v, i, o, 3, { stride, padding: 1 })));
      this.norms.push(this.child(vb, `norm${k}`, (v) => new nn.GroupNorm(v, 8, o)));
    });
    this.hidden = this.child(vb, 'hidden', (v) => new nn.Linear(v, 128 * 4 * 4, 128));
    this.out = this.child(vb, 'out', (v) => new nn.Linear(v, 128, LOGITS));
  }

  /** [B, 3, 32, 32] in [-1, 1] → logits [B, Σ classes] (heads in JUDGE_HEADS order). */
  forward(x: T.Tensor): T.Tensor {
    return T.tidy(() => {
      let h = x;
      this.convs.forEach((c, k) => {
        h = nn.activate(this.norms[k].forward(c.forward(h)), 'silu');
      });
      return this.out.forward(nn.activate(this.hidden.forward(h.flatten(1)), 'silu'));
    });
  }

  /** Cross-entropy summed over the heads. */
  loss(x: T.Tensor, labels: Labels[]): T.Tensor {
    return T.tidy(() => {
      const logits = this.forward(x);
      let total: T.Tensor | null = null;
      for (const h of HEAD_NAMES) {
        const part = logits.narrow(1, HEAD_OFFSETS[h], JUDGE_HEADS[h].length);
        const l = T.crossEntropy(part, T.tensor(labels.map((y) => y[h]), { dtype: 'int64' }));
        total = total === null ? l : total.add(l);
      }
      return total!;
    });
  }

  /** Label indices per head for a batch. */
  predict(x: T.Tensor): { labels: Labels[]; pSubject: number[]; pStyle: number[] } {
    return T.noGrad(() => T.tidy(() => {
      const logits = this.forward(x);
      const heads = {} as Record<JudgeHead, number[]>;
      for (const h of HEAD_NAMES) heads[h] = logits.narrow(1, HEAD_OFFSETS[h], JUDGE_HEADS[h].length).argmax(1).toArray();
      const prob = (h: JudgeHead) => logits.narrow(1, HEAD_OFFSETS[h], 2).softmax(1).select(1, 1).toArray(); // host sync
      const n = x.size(0);
      const labels = Array.from({ length: n }, (_, i) => Object.fromEntries(HEAD_NAMES.map((h) => [h, heads[h][i]])) as Labels);
      return { labels, pSubject: prob('subject'), pStyle: prob('style') };
    }));
  }

  /** The verdicts on pictures (any count; batched by 256). */
  judge(images: readonly RgbImage[]): Verdict[] {
    const out: Verdict[] = [];
    for (let i = 0; i < images.length; i += 256) {
      const chunk = images.slice(i, i + 256);
      const x = imagesToTensor(chunk);
      try {
        const p = this.predict(x);
        p.labels.forEach((y, k) => out.push({ ...labelsToScene(y), subject: y.subject === 1, style: y.style === 1, pSubject: p.pSubject[k], pStyle: p.pStyle[k] }));
      } finally {
        x.dispose();
      }
    }
    return out;
  }
}

/** The scene attributes named by label indices. */
export function labelsToScene(y: Labels): SceneAttrs {
  return { shape: SHAPES[y.shape], colour: COLOURS[y.colour], size: SIZES[y.size], position: POSITIONS[y.position], background: BACKGROUNDS[y.background], pattern: PATTERNS[y.pattern] };
}

function sceneLabels(a: SceneAttrs, subject: boolean, style: boolean): Labels {
  return {
    shape: SHAPES.indexOf(a.shape), colour: COLOURS.indexOf(a.colour), size: SIZES.indexOf(a.size), position: POSITIONS.indexOf(a.position),
    background: BACKGROUNDS.indexOf(a.background), pattern: PATTERNS.indexOf(a.pattern), subject: Number(subject), style: Number(style),
  };
}

/** 32×32 RGB pictures → [B, 3, 32, 32] in [-1, 1]; other sizes are refused. */
export function imagesToTensor(images: readonly RgbImage[]): T.Tensor {
  for (const im of images) {
    if (im.width !== 32 || im.height !== 32 || im.channels !== 3) throw new JudgeError(`the judge reads 32×32 RGB pictures of the toy world, not ${im.width}×${im.height}×${im.channels}`);
  }
  return batchToTensor(images);
}

/** Pictures through the VAE and back (encode to the posterior mean, decode): how generated pictures look. */
export function vaeRoundTrip(vae: AutoencoderKL, images: readonly RgbImage[]): RgbImage[] {
  const out: RgbImage[] = [];
  for (let i = 0; i < images.length; i += 128) {
    const x = imagesToTensor(images.slice(i, i + 128));
    try {
      out.push(...T.noGrad(() => T.tidy(() => tensorToImages(vae.decode(vae.encode(x).mean)))));
    } finally {
      x.dispose();
    }
  }
  return out;
}

/** One labelled picture of the judge's sets: 30 % are the subject (large, as it always is), 30 % in the outline style. */
export function judgeExample(seed: number, index: number): { image: RgbImage; labels: Labels } {
  const rng = Rng.derive(seed, 'judge', index);
  let attrs = sampleSceneFrom(rng);
  const subject = rng.next() < 0.3;
  const style = rng.next() < 0.3;
  if (subject) attrs = { ...attrs, shape: 'heart', size: SUBJECT_SIZE };
  const image = renderScene(attrs, { size: 32, seed: rng.uint32(), subject, style: style ? 'outline' : undefined });
  return { image, labels: sceneLabels(attrs, subject, style) };
}

/** A labelled set: examples [from, from + n) of `seed`, every other one passed through the VAE. */
export function judgeSet(seed: number, from: number, n: number, vae: AutoencoderKL | null): { images: RgbImage[]; labels: Labels[]; decoded: boolean[] } {
  const ex = Array.from({ length: n }, (_, i) => judgeExample(seed, from + i));
  const images = ex.map((e) => e.image);
  const decoded = ex.map((_, i) => vae !== null && (from + i) % 2 === 1);
  if (vae) {
    const idx = decoded.flatMap((d, i) => (d ? [i] : []));
    const rt = vaeRoundTrip(vae, idx.map((i) => images[i]));
    idx.forEach((i, k) => (images[i] = rt[k]));
  }
  return { images, labels: ex.map((e) => e.labels), decoded };
}

/** Accuracy per head (and the mean over heads), on clean and on decoded pictures. */
export interface JudgeAccuracy {
  clean: Record<JudgeHead, number>;
  decoded: Record<JudgeHead, number>;
  /** Mean over heads and both kinds. */
  mean: number;
  n: number;
}

export function measureJudge(judge: ToyJudge, set: { images: RgbImage[]; labels: Labels[]; decoded: boolean[] }): JudgeAccuracy {
  const right = { clean: {} as Record<JudgeHead, number>, decoded: {} as Record<JudgeHead, number> };
  const count = { clean: 0, decoded: 0 };
  for (const h of HEAD_NAMES) right.clean[h] = right.decoded[h] = 0;
  for (let i = 0; i < set.images.length; i += 256) {
    const x = imagesToTensor(set.images.slice(i, i + 256));
    try {
      const p = judge.predict(x);
      p.labels.forEach((y, k) => {
        const kind = set.decoded[i + k] ? 'decoded' : 'clean';
        count[kind]++;
        for (const h of HEAD_NAMES) right[kind][h] += Number(y[h] === set.labels[i + k][h]);
      });
    } finally {
      x.dispose();
    }
  }
  const frac = (kind: 'clean' | 'decoded') => Object.fromEntries(HEAD_NAMES.map((h) => [h, count[kind] ? right[kind][h] / count[kind] : NaN])) as Record<JudgeHead, number>;
  const clean = frac('clean');
  const decoded = frac('decoded');
  const all = [...Object.values(clean), ...(count.decoded ? Object.values(decoded) : [])];
  return { clean, decoded, mean: all.reduce((s, v) => s + v, 0) / all.length, n: set.images.length };
}

export interface TrainJudgeOptions {
  steps: number;
  batch?: number;
  /** Distinct training pictures (rendered once; half decoded when a VAE is given). */
  pool?: number;
  lr?: number;
  seed?: number;
  vae: AutoencoderKL | null;
  onStep?: (step: number, total: number, loss: number) => void;
}

/** Pixel noise and, for a quarter of the batch, a 3×3 blur: generated pictures are rougher than renders. */
function augment(x: T.Tensor, gen: T.Generator): T.Tensor {
  return T.tidy(() => {
    const n = x.size(0);
    const kernel = T.full([3, 1, 3, 3], 1 / 9);
    const blurred = T.conv2d(T.pad(x, [1, 1, 1, 1], 0), kernel, null, { groups: 3 });
    const pick = T.rand([n, 1, 1, 1], { generator: gen }).lt(0.25).to('float32');
    const mixed = blurred.mul(pick).add(x.mul(pick.neg().add(1)));
    const sigma = T.rand([n, 1, 1, 1], { generator: gen }).mul(0.08);
    return mixed.add(T.randn(x.shape, { generator: gen }).mul(sigma)).clamp(-1, 1);
  });
}

/** Trains a judge from scratch (AdamW, cosine rate) and measures it on 2,000 unseen pictures. */
export function trainJudge(o: TrainJudgeOptions): { judge: ToyJudge; accuracy: JudgeAccuracy; seconds: number; loss: number } {
  const t0 = Date.now();
  const seed = o.seed ?? 0;
  const batch = o.batch ?? 64;
  const poolSize = o.pool ?? 12_000;
  if (!Number.isInteger(o.steps) || o.steps < 1) throw new JudgeError(`judge training needs a whole number of steps ≥ 1 (got ${o.steps})`);
  const pool = judgeSet(seed, 0, poolSize, o.vae);
  const held = judgeSet(seed + 1, 0, 2000, o.vae);
  T.manualSeed(seed);
  const judge = new ToyJudge(nn.VarBuilder.init());
  const opt = new T.optim.AdamW([...judge.namedParameters()], { lr: o.lr ?? 2e-3, weightDecay: 1e-4 });
  const gen = new T.Generator(seed + 11);
  const lr0 = o.lr ?? 2e-3;
  let loss = NaN;
  try {
    for (let s = 0; s < o.steps; s++) {
      opt.setLr([lr0 * 0.5 * (1 + Math.cos((Math.PI * s) / o.steps))]);
      const rng = Rng.derive(seed, 'judge-batch', s);
      const ids = Array.from({ length: batch }, () => rng.int(poolSize));
      loss = T.tidy(() => {
        const x = augment(imagesToTensor(ids.map((i) => pool.images[i])), gen);
        const l = judge.loss(x, ids.map((i) => pool.labels[i]));
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
  judge.eval().requiresGrad_(false);
  const accuracy = measureJudge(judge, held);
  return { judge, accuracy, seconds: (Date.now() - t0) / 1000, loss };
}

/** Writes the judge (fp16) with its accuracy in the metadata. */
export function saveJudge(judge: ToyJudge, path: string, info: { accuracy: JudgeAccuracy; steps: number; seed: number }): void {
  const tensors = new Map([...judge.stateDict()].map(([k, t]) => [k, T.noGrad(() => t.to('float16'))] as const));
  try {
    saveSafetensors(path, tensors, { 'sdtune.judge': JSON.stringify({ heads: JUDGE_HEADS, ...info }) });
  } finally {
    for (const t of tensors.values()) t.dispose();
  }
}

/** Loads a judge written by saveJudge; its measured accuracy comes with it. */
export function loadJudge(path: string): { judge: ToyJudge; accuracy: JudgeAccuracy } {
  const f = SafetensorsFile.open(path);
  try {
    const raw = f.metadata['sdtune.judge'];
    if (!raw) throw new JudgeError(`${path}: not a toy-world judge (no sdtune.judge metadata); train one with "sdtune toy judge"`);
    const meta = JSON.parse(raw) as { heads: typeof JUDGE_HEADS; accuracy: JudgeAccuracy };
    if (JSON.stringify(meta.heads) !== JSON.stringify(JUDGE_HEADS)) throw new JudgeError(`${path}: this judge reads other attributes than this version of the toy world; train it again with "sdtune toy judge"`);
    const vb = nn.VarBuilder.from(f);
    const judge = new ToyJudge(vb);
    vb.finish({ what: path });
    judge.eval().requiresGrad_(false);
    return { judge, accuracy: meta.accuracy };
  } finally {
    f.close();
  }
}
