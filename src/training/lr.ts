// Learning-rate schedules (§6.4, §7.4; diffusers optimization.get_scheduler; A1111
// learn_schedule.py). Each is a pure function of the optimizer step, so a resumed run needs no
// scheduler state: the step alone gives the rate.
export type LrScheduleName = 'constant' | 'constant_with_warmup' | 'linear' | 'cosine';

export interface LrScheduleSpec {
  /** A named schedule, or A1111's piecewise syntax "0.005:100, 1e-3:1000, 1e-5". */
  schedule: LrScheduleName | string;
  /** Base rate (ignored by the piecewise syntax, which carries its own rates). */
  lr: number;
  warmupSteps?: number;
  totalSteps: number;
}

export class LrScheduleError extends Error {
  override name = 'LrScheduleError';
}

/** One piece of A1111's schedule: `rate` applies to steps below `until` (the last runs to the end). */
export interface LrPiece {
  rate: number;
  until: number;
}

const NAMED = new Set(['constant', 'constant_with_warmup', 'linear', 'cosine']);

/** A named schedule (scales a base rate), as opposed to A1111's pieces (absolute rates). */
export function isNamedSchedule(s: string): s is LrScheduleName {
  return NAMED.has(s);
}

/**
 * A1111's "rate:step, rate:step, rate": each rate holds until its step; the last may omit the
 * step and runs to the end. Steps must increase. Errors name the piece that is wrong.
 */
export function parsePiecewise(text: string, totalSteps: number): LrPiece[] {
  const pieces: LrPiece[] = [];
  const parts = text.split(',').map((p) => p.trim()).filter((p) => p !== '');
  if (parts.length === 0) throw new LrScheduleError('the learning-rate schedule is empty');
  parts.forEach((part, i) => {
    const [r, s, extra] = part.split(':').map((x) => x.trim());
    const rate = Number(r);
    if (extra !== undefined || r === '' || !Number.isFinite(rate) || rate < 0) {
      throw new LrScheduleError(`learning-rate piece ${JSON.stringify(part)}: expected "rate" or "rate:step", e.g. "0.005:100"`);
    }
    let until = totalSteps;
    if (s !== undefined) {
      until = Number(s);
      if (!Number.isInteger(until) || until <= 0) throw new LrScheduleError(`learning-rate piece ${JSON.stringify(part)}: the step must be a positive whole number`);
    } else if (i !== parts.length - 1) {
      throw new LrScheduleError(`learning-rate piece ${JSON.stringify(part)}: only the last piece may leave out its step`);
    }
    if (pieces.length && until <= pieces[pieces.length - 1].until) {
      throw new LrScheduleError(`learning-rate piece ${JSON.stringify(part)}: steps must increase (${until} follows ${pieces[pieces.length - 1].until})`);
    }
    pieces.push({ rate, until });
  });
  return pieces;
}

/** Returns lr(step) for steps 0 … totalSteps−1. Validates the spec once, up front. */
export function lrSchedule(spec: LrScheduleSpec): (step: number) => number {
  const warm = spec.warmupSteps ?? 0;
  const total = spec.totalSteps;
  if (!Number.isInteger(total) || total < 1) throw new LrScheduleError(`total steps must be at least 1 (got ${total})`);
  if (!Number.isInteger(warm) || warm < 0) throw new LrScheduleError(`warm-up steps must be a whole number ≥ 0 (got ${warm})`);
  if (!NAMED.has(spec.schedule)) {
    const pieces = parsePiecewise(spec.schedule, total);
    return (step) => (pieces.find((p) => step < p.until) ?? pieces[pieces.length - 1]).rate;
  }
  if (!(spec.lr >= 0 && Number.isFinite(spec.lr))) throw new LrScheduleError(`the learning rate must be a number ≥ 0 (got ${spec.lr})`);
  const lr = spec.lr;
  const warmup = (step: number) => (step < warm ? step / Math.max(1, warm) : 1);
  switch (spec.schedule as LrScheduleName) {
    case 'constant':
      return () => lr;
    case 'constant_with_warmup':
      return (step) => lr * warmup(step);
    case 'linear':
      // diffusers get_linear_schedule_with_warmup: up over warm-up, then down to 0 at the end
      return (step) => (step < warm ? lr * warmup(step) : lr * Math.max(0, (total - step) / Math.max(1, total - warm)));
    case 'cosine':
      // diffusers get_cosine_schedule_with_warmup (num_cycles 0.5): half a cosine from lr to 0
      return (step) => {
        if (step < warm) return lr * warmup(step);
        const progress = (step - warm) / Math.max(1, total - warm);
        return lr * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
      };
  }
}
