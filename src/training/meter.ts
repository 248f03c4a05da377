// The over/underfitting meter turned into advice: from a run's log, the step to stop at. Two
// curves, both measured at fixed noise and timesteps (src/training/loop.ts):
//   concept:  how far the concept has been learnt. With a concept word (DreamBooth, textual
//             inversion) the concept gap: the held-out pictures' loss captioned without the word
//             minus with it, which grows as the word comes to mean the concept and — being a
//             difference on the same pictures and noise — ignores how well the pictures themselves
//             are reconstructed. Without one (a style), the held-out loss at the low, fine-detail
//             timesteps, falling as the look is learnt.
//   drift:    the prior drift on class (or plain) prompts — what the model forgets — as its rise
//             since the first validation, over the first held-out loss: the drift is a squared
//             error between the model's and the base's predictions, the held-out loss one between
//             the model's and the true noise, so their ratio is a scale-free share. (Growth over the
//             drift's own first value, the earlier rule, exploded when the first validation came
//             before the adapter had moved — with EMA it always does.)
// The rule: smooth both; progress = the concept curve rescaled to [0, 1] over the run; score =
// progress − driftWeight · drift; the recommended step is the earliest validation whose
// score is within `tolerance` of the best. Earliest, because past the knee more steps buy little
// and cost drift. The benchmark's sweep (bench/toy-meter.ts) fits the settings against ground
// truth and checks them on runs left out of the fit.
import type { StepRecord } from './loop.ts';

export interface MeterOptions {
  /** Weight of the prior drift (its rise, over the first held-out loss) against the concept's progress. */
  driftWeight?: number;
  /** Slack, in progress units (0–1): the earliest step scoring within it of the best is recommended. */
  tolerance?: number;
  /** Smoothing of both curves (exponential, per validation point; 0 = none). */
  smoothing?: number;
  /** Without a concept gap: how many of the lowest validation timesteps make the concept curve (5 = the whole held-out loss). */
  detailTimesteps?: number;
}

export interface Recommendation {
  /** Recommended step (a validated step; the product snapshot of that step, when one was saved). */
  step: number;
  /** The step where the concept curve peaks (the most learnt). */
  bestValStep: number;
  /** 'underfit' when the concept was still being learnt at the last validation (train longer), 'ok', or 'overfit' when the run went past the pick by more than a third. */
  verdict: 'underfit' | 'ok' | 'overfit';
  /** Which concept curve was used (a sample check that hardly moved is passed over: SAMPLE_RANGE). */
  signal: 'samples' | 'concept-gap' | 'held-out-loss';
  /** One sentence for the user. */
  message: string;
  /** The validation points used: step, smoothed concept curve (higher = more learnt), its progress (0–1), smoothed drift (its rise over the first held-out loss), score. */
  points: { step: number; concept: number; progress: number; drift: number; score: number }[];
}

export const DEFAULT_METER: Required<MeterOptions> = { driftWeight: 1, tolerance: 0.05, smoothing: 0.3, detailTimesteps: 2 };

/**
 * The least the sample check's score must move over a run to be followed. On the toy world's
 * DreamBooth runs, once the subject's captions left its colour to the token, the detector told the
 * red training hearts from the base model's hearts of any colour by colour alone and scored every
 * snapshot 1.00 from step 50 on.
 */
export const SAMPLE_RANGE = 0.05;

function smooth(xs: number[], a: number): number[] {
  const out: number[] = [];
  xs.forEach((x, i) => out.push(i === 0 || a === 0 ? x : a * out[i - 1] + (1 - a) * x));
  return out;
}

const finite = (x: number | undefined): x is number => x !== undefined && Number.isFinite(x);
const mean = (xs: readonly number[]) => xs.reduce((a, x) => a + x, 0) / xs.length;

/** The recommended stop from a run's records; null when the log has no validation points. */
export function recommendStop(records: readonly StepRecord[], o: MeterOptions = {}): Recommendation | null {
  const { driftWeight, tolerance, smoothing, detailTimesteps } = { ...DEFAULT_METER, ...o };
  const pts = records.filter((r) => finite(r.val_loss));
  if (pts.length === 0) return null;
  const k = Math.max(1, Math.round(detailTimesteps));
  // A sample check that hardly moves over the run (its detector calls every snapshot the same,
  // e.g. saturated at 1) cannot rank the snapshots: the word's gap, or the loss, decides then.
  const scores = pts.map((r) => r.sample_score);
  const samples = scores.every(finite) && Math.max(...scores) - Math.min(...scores) >= SAMPLE_RANGE;
  const gap = !samples && pts.every((r) => finite(r.concept_gap));
  const signal: Recommendation['signal'] = samples ? 'samples' : gap ? 'concept-gap' : 'held-out-loss';
  const lossCurve = (r: StepRecord) => -(r.val_by_t?.length && k < r.val_by_t.length ? mean(r.val_by_t.slice(0, k)) : r.val_loss!);
  const raw = pts.map((r) => (samples ? r.sample_score! : gap ? r.concept_gap! : lossCurve(r)));
  const concept = smooth(raw, smoothing);
  const lo = Math.min(...concept);
  const hi = Math.max(...concept);
  const progress = concept.map((c) => (hi > lo ? (c - lo) / (hi - lo) : 0));
  const driftRaw = smooth(pts.map((r) => (finite(r.prior_drift) ? r.prior_drift : 0)), smoothing);
  const scale = pts[0].val_loss!;
  const drift = driftRaw.map((d) => (scale > 0 ? (d - driftRaw[0]) / scale : 0));
  const score = progress.map((p, i) => p - driftWeight * drift[i]);
  const best = Math.max(...score);
  const pick = score.findIndex((s) => s >= best - tolerance);
  const peak = concept.indexOf(hi);
  const step = pts[pick].step;
  const last = pts[pts.length - 1].step;
  const verdict: Recommendation['verdict'] = peak === pts.length - 1 && pick === pts.length - 1 && pts.length > 1 ? 'underfit' : last > step * (4 / 3) ? 'overfit' : 'ok';
  const what = samples ? 'the pictures of the sample check' : gap ? 'the concept word' : 'the held-out pictures';
  const message =
    verdict === 'underfit' ? `${what} still improved at step ${last}: train longer (step ${step} is the best so far)`
    : verdict === 'overfit' ? `stop at step ${step}: after it ${what} gain little${driftWeight > 0 && drift[drift.length - 1] > 0 ? ' and the prior drifts' : ''} (the run went on to step ${last})`
    : `step ${step} is a good stop (the run ended at ${last})`;
  // Measured on the toy world (docs/toy-world.md): without a word, the loss misses a style's swings.
  const caveat = samples || gap ? '' : '; without a concept word the held-out loss is a weak guide to a style: compare the snapshots\' samples, or train with sampleCheck';
  return {
    step, bestValStep: pts[peak].step, verdict, signal, message: message + caveat,
    points: pts.map((r, i) => ({ step: r.step, concept: concept[i], progress: progress[i], drift: drift[i], score: score[i] })),
  };
}
