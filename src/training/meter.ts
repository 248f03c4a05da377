// The over/underfitting meter turned into advice: from a run's log (val_loss on held-out concept
// images, prior_drift on class prompts, both at fixed noise and timesteps), the step to stop at.
//   underfitting: the held-out loss is still falling — the concept is not learnt yet;
//   overfitting:  the held-out loss rises again (the training pictures are memorised), or the
//                 prior drift keeps growing after the held-out loss has levelled off (the class
//                 forgets itself).
// The rule: smooth both curves; the recommended step is the earliest validation whose score
//   val / val_min + driftWeight · drift / val_min
// is within `tolerance` of the best score. Earliest, because past the knee more steps buy little
// and cost drift. The benchmark's sweep (bench/toy-meter.ts) checks it against ground truth.
import type { StepRecord } from './loop.ts';

export interface MeterOptions {
  /** Weight of the prior drift against the held-out loss. */
  driftWeight?: number;
  /** Relative slack: the earliest step scoring within it of the best is recommended. */
  tolerance?: number;
  /** Smoothing of both curves (exponential, per validation point; 0 = none). */
  smoothing?: number;
}

export interface Recommendation {
  /** Recommended step (a validated step; the product snapshot of that step, when one was saved). */
  step: number;
  /** The step with the lowest smoothed held-out loss. */
  bestValStep: number;
  /** 'underfit' when the best is the last validation (train longer), 'ok', or 'overfit' when the run went past it by more than a third. */
  verdict: 'underfit' | 'ok' | 'overfit';
  /** One sentence for the user. */
  message: string;
  /** The validation points used: step, smoothed held-out loss, smoothed drift, score. */
  points: { step: number; val: number; drift: number; score: number }[];
}

export const DEFAULT_METER: Required<MeterOptions> = { driftWeight: 1, tolerance: 0.02, smoothing: 0.5 };

function smooth(xs: number[], a: number): number[] {
  const out: number[] = [];
  xs.forEach((x, i) => out.push(i === 0 || a === 0 ? x : a * out[i - 1] + (1 - a) * x));
  return out;
}

/** The recommended stop from a run's records; null when the log has no validation points. */
export function recommendStop(records: readonly StepRecord[], o: MeterOptions = {}): Recommendation | null {
  const { driftWeight, tolerance, smoothing } = { ...DEFAULT_METER, ...o };
  const pts = records.filter((r) => r.val_loss !== undefined && Number.isFinite(r.val_loss));
  if (pts.length === 0) return null;
  const val = smooth(pts.map((r) => r.val_loss!), smoothing);
  const drift = smooth(pts.map((r) => (r.prior_drift !== undefined && Number.isFinite(r.prior_drift) ? r.prior_drift : 0)), smoothing);
  const vmin = Math.min(...val);
  const scale = vmin > 0 ? vmin : 1;
  const score = val.map((v, i) => v / scale + (driftWeight * drift[i]) / scale);
  const best = Math.min(...score);
  const pick = score.findIndex((s) => s <= best * (1 + tolerance));
  const bestVal = val.indexOf(vmin);
  const step = pts[pick].step;
  const last = pts[pts.length - 1].step;
  const verdict: Recommendation['verdict'] = bestVal === pts.length - 1 && pts.length > 1 ? 'underfit' : last > step * (4 / 3) ? 'overfit' : 'ok';
  const message =
    verdict === 'underfit' ? `the held-out loss was still falling at step ${last}: train longer (step ${step} is the best so far)`
    : verdict === 'overfit' ? `stop at step ${step}: after it the held-out loss stops improving${driftWeight > 0 ? ' and the prior drifts' : ''} (the run went on to step ${last})`
    : `step ${step} is a good stop (the run ended at ${last})`;
  return { step, bestValStep: pts[bestVal].step, verdict, message, points: pts.map((r, i) => ({ step: r.step, val: val[i], drift: drift[i], score: score[i] })) };
}
