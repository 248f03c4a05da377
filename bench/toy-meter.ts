// The over/underfitting meter against ground truth, on the toy world (`npm run bench -- toy-meter`).
// Each run trains a technique on its concept with product snapshots at every validation; the judge
// scores every snapshot (fidelity × preservation: the ground truth) and the meter (held-out loss and
// prior drift, src/training/meter.ts) picks a step from the log alone. A run counts as a hit when
// the recommended snapshot's ground-truth score is within 10 % of the best snapshot's. The runs
// cover DreamBooth with and without prior preservation, LoRA at several rates and ranks, textual
// inversion, a hypernetwork, and long runs meant to overfit. Everything is seeded: the sweep is
// reproducible. One JSON line per run (printed as each run ends: the sweep takes a while), then a
// summary line.
import { mkdirSync, existsSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { resolveTrainConfig, type TrainConfig } from '../src/training/config.ts';
import { runSampleCheck, runTraining } from '../src/training/run.ts';
import { drawSamples, scoreSamples } from '../src/training/sample-check.ts';
import { loadStableDiffusion } from '../src/models/load.ts';
import { recommendStop, DEFAULT_METER, type MeterOptions } from '../src/training/meter.ts';
import type { StepRecord } from '../src/training/loop.ts';
import { snapshotPath } from '../src/training/loop.ts';
import type { TechniqueKind } from '../src/training/technique.ts';
import { loadJudge } from '../src/toy/judge.ts';
import { TOY_JUDGE_PATH, TOY_MODEL_PATH } from '../src/toy/model.ts';
import { DEMO_RUNS, applyStyleAdapter, baseResults, demoProbes, scoreProduct, writeConceptFolders } from '../src/toy/demo.ts';
import { round, type BenchLine } from './common.ts';

interface SweepRun {
  name: string;
  technique: TechniqueKind;
  concept: 'subject' | 'style';
  steps: number;
  settings: Record<string, unknown>;
}

const demo = (t: TechniqueKind) => DEMO_RUNS.find((r) => r.technique === t)!;

/** The sweep: the demo's settings, then variations around them, then long runs. */
export function sweepRuns(scale = 1): SweepRun[] {
  const S = (n: number) => Math.max(20, Math.round(n * scale));
  const run = (name: string, t: TechniqueKind, steps: number, extra: Record<string, unknown> = {}): SweepRun => ({ name, technique: t, concept: demo(t).concept, steps: S(steps), settings: { ...demo(t).settings, ...extra } });
  return [
    run('dreambooth-prior', 'dreambooth', 400),
    run('dreambooth-no-prior', 'dreambooth', 400, { numClassImages: 0 }),
    run('dreambooth-long-high-lr', 'dreambooth', 800, { lr: 3e-4 }),
    run('embedding', 'embedding', 400),
    // The LoRAs reach the convolutions as the demo's does (LoCon), at the same rank as the rest.
    run('lora-r4-lr5e-4', 'lora', 400, { rank: 4, alpha: 4, convRank: 4, convAlpha: 4, lr: 5e-4 }),
    run('lora-r8-lr5e-3', 'lora', 400),
    run('lora-r16-lr3e-3-long', 'lora', 800, { rank: 16, alpha: 16, convRank: 16, convAlpha: 16, lr: 3e-3 }),
    run('hypernetwork', 'hypernetwork', 400),
  ];
}

/**
 * A sweep run's training config, its product's path, its validation interval and where its product
 * of a validated step lies (its snapshot, or at the last step the product itself; null when neither
 * is on disk), under `out`.
 * SDTUNE_METER_SETTINGS='{"emaDecay":0.98}' adds settings to every run. The sample check is on:
 * 32 pictures per validation (SDTUNE_METER_SETTINGS='{"sampleCheck":0}' turns it off).
 */
export function sweepConfig(r0: SweepRun, out: string): { r: SweepRun; c: TrainConfig; file: string; every: number; snapshot: (step: number) => string | null } {
  const extra = { sampleCheck: 32, ...(JSON.parse(process.env.SDTUNE_METER_SETTINGS ?? '{}') as Record<string, unknown>) };
  const r = { ...r0, settings: { ...r0.settings, ...extra } };
  const every = Math.max(1, Math.round(r.steps / 8));
  const dir = join(out, r.name);
  const data = join(out, 'data');
  const ext = r.technique === 'hypernetwork' ? '.pt' : '.safetensors';
  const file = join(dir, `${r.name}${ext}`);
  const c = resolveTrainConfig(r.technique, {
    flags: { ...r.settings, steps: r.steps, validateEvery: every, checkpointEvery: every, snapshots: true, model: TOY_MODEL_PATH, data: join(data, r.concept), validationData: join(data, `${r.concept}-heldout`), out: file, workDir: join(dir, 'work') },
  });
  const snapshot = (step: number) => {
    const snap = snapshotPath(file, ext, step);
    return existsSync(snap) ? snap : step === r.steps && existsSync(file) ? file : null;
  };
  return { r, c, file, every, snapshot };
}

export async function benchToyMeter(o: { scale?: number; probeCount?: number; out?: string; onLine?: (l: BenchLine) => void } = {}): Promise<BenchLine[]> {
  const scale = o.scale ?? Number(process.env.SDTUNE_METER_SCALE ?? 1);
  const out = o.out ?? join('out', 'bench-toy-meter');
  rmSync(out, { recursive: true, force: true });
  const data = join(out, 'data');
  writeConceptFolders(data);
  const { judge } = loadJudge(TOY_JUDGE_PATH);
  // Ground truth: 8 pictures per probe prompt by default (2 made fidelity jump 0.4↔0.7 between neighbours).
  const probeCount = o.probeCount ?? Number(process.env.SDTUNE_METER_PROBES ?? 8);
  const probes = demoProbes(probeCount);
  const base = baseResults(TOY_MODEL_PATH, judge, probes);
  const lines: BenchLine[] = [];
  try {
    // SDTUNE_METER_RUNS=name,name runs a subset.
    const only = process.env.SDTUNE_METER_RUNS?.split(',').map((x) => x.trim()).filter(Boolean);
    for (const r0 of sweepRuns(scale).filter((x) => !only || only.includes(x.name))) {
      const { r, c, file, every, snapshot } = sweepConfig(r0, out);
      mkdirSync(dirname(file), { recursive: true });
      const t0 = Date.now();
      const { result } = await runTraining(c);
      const trainS = (Date.now() - t0) / 1000;
      // Pictures behind each fidelity (its binomial noise): the concept prompts' probes.
      const pictures = (r.concept === 'subject' ? probes.subject : probes.style).reduce((n, p) => n + p.count, 0);
      const gt: (GroundTruth & { fidelity: number; preservation: number })[] = [];
      for (let step = every; step <= r.steps; step += every) {
        const path = snapshot(step);
        if (!path) continue;
        const s = scoreProduct(r, path, { token: c.token, modelPath: TOY_MODEL_PATH, judge, probes, base }).scores;
        gt.push({ step, fidelity: round(s.concept_fidelity), preservation: round(s.prior_preservation), score: round(s.concept_fidelity * s.prior_preservation), pictures });
        // DreamBooth snapshots are whole models: drop each once scored.
        if (r.technique === 'dreambooth' && path !== file) rmSync(path, { force: true });
      }
      const line = runLine({
        run: r.name, technique: r.technique, steps: r.steps, train_s: round(trainS, 1), ground_truth: gt,
        // The raw validation log, so that the meter can be re-scored and refitted without retraining.
        log: result.records.filter((x) => x.val_loss !== undefined).map((x) => ({ step: x.step, val_loss: x.val_loss!, prior_drift: x.prior_drift ?? 0, val_by_t: x.val_by_t, concept_gap: x.concept_gap, gap_by_t: x.gap_by_t, drift_by_t: x.drift_by_t, sample_score: x.sample_score })),
      });
      lines.push(line);
      o.onLine?.(line);
    }
  } finally {
    judge.dispose();
  }
  lines.push(...sweepSummary(lines as unknown as SweepResult[], { scale, probe_count: probeCount }));
  return lines;
}

type GroundTruth = { step: number; score: number; fidelity?: number; preservation?: number; pictures?: number };
const bestOf = (gt: readonly GroundTruth[]) => gt.reduce((a, b) => (b.score > a.score ? b : a), gt[0]);
const mean = (xs: readonly number[]) => xs.reduce((a, x) => a + x, 0) / xs.length;
export interface SweepResult {
  run: string;
  technique: TechniqueKind;
  steps: number;
  train_s: number;
  ground_truth: GroundTruth[];
  log: (Pick<StepRecord, 'step' | 'val_by_t' | 'concept_gap' | 'gap_by_t' | 'drift_by_t' | 'sample_score'> & { val_loss: number; prior_drift: number })[];
}

/** A run's line: its ground truth and log, and what the meter (as it is now) makes of the log. */
export function runLine(r: SweepResult): BenchLine {
  const gt = r.ground_truth;
  const rec = recommendStop(r.log as unknown as StepRecord[]);
  const best = bestOf(gt);
  const atRec = gt.find((g) => g.step === rec?.step) ?? gt[gt.length - 1];
  return {
    name: 'toy-meter', run: r.run, technique: r.technique, steps: r.steps, train_s: r.train_s,
    recommended_step: rec?.step ?? null, verdict: rec?.verdict ?? null, signal: rec?.signal ?? null, gt_best_step: best.step, gt_best_score: best.score, gt_score_at_recommended: atRec.score,
    step_error: rec ? round(Math.abs(rec.step - best.step) / r.steps) : null, within_10pct: isHit(gt, rec?.step), within_noise: isHitWithinNoise(gt, rec?.step),
    ground_truth: gt, meter: rec?.points.map((p) => ({ step: p.step, concept: round(p.concept, 6), progress: round(p.progress), drift: round(p.drift), score: round(p.score) })) ?? [],
    log: r.log,
  };
}

/** The summary and calibration lines of a sweep. */
export function sweepSummary(runs: readonly SweepResult[], o: Record<string, unknown> = {}): BenchLine[] {
  const lines = runs.map(runLine);
  const hits = lines.filter((l) => l.within_10pct).length;
  return [
    { name: 'toy-meter-summary', runs: lines.length, within_10pct: hits, share: round(hits / lines.length), within_noise: lines.filter((l) => l.within_noise).length, ...o, default_meter: DEFAULT_METER },
    calibrateMeter(runs),
  ];
}

/** A hit: the ground-truth score at the recommended step is within 10 % of the run's best. */
export function isHit(gt: readonly GroundTruth[], step: number | undefined): boolean {
  if (gt.length === 0) return false;
  const best = Math.max(...gt.map((g) => g.score));
  const at = (gt.find((g) => g.step === step) ?? gt[gt.length - 1]).score;
  return best === 0 ? at === 0 : at >= 0.9 * best;
}

/**
 * A hit, or a miss the judge cannot tell from one: the best snapshot's score exceeds the pick's by
 * less than twice the standard error of their difference (binomial, from the fidelity's picture
 * count; the preservation factor taken as exact). The best of eight noisy scores is partly luck,
 * so this asks whether the pick is as good as the best to within what was measured.
 */
export function isHitWithinNoise(gt: readonly GroundTruth[], step: number | undefined): boolean {
  if (isHit(gt, step)) return true;
  const best = gt.reduce((a, b) => (b.score > a.score ? b : a), gt[0]);
  const at = gt.find((g) => g.step === step) ?? gt[gt.length - 1];
  const se = (g: GroundTruth) => (g.pictures && g.fidelity !== undefined ? (g.preservation ?? 1) * Math.sqrt((g.fidelity * (1 - g.fidelity)) / g.pictures) : 0);
  return best.score - at.score < 2 * Math.hypot(se(best), se(at));
}

const GRID: Required<MeterOptions>[] = [];
for (const driftWeight of [0, 0.1, 0.25, 0.5, 1, 2, 4]) for (const tolerance of [0, 0.05, 0.1, 0.2, 0.3]) for (const smoothing of [0, 0.3, 0.5]) for (const detailTimesteps of [1, 2, 3]) GRID.push({ driftWeight, tolerance, smoothing, detailTimesteps });

function hitsWith(runs: readonly SweepResult[], m: MeterOptions): number {
  return runs.filter((r) => isHit(r.ground_truth, recommendStop(r.log as unknown as StepRecord[], m)?.step)).length;
}

const distance = (m: Required<MeterOptions>) =>
  Math.abs(Math.log2((m.driftWeight + 0.25) / (DEFAULT_METER.driftWeight + 0.25))) + Math.abs(m.tolerance - DEFAULT_METER.tolerance) * 5 + Math.abs(m.smoothing - DEFAULT_METER.smoothing) + Math.abs(m.detailTimesteps - DEFAULT_METER.detailTimesteps) / 4;

/** The grid's best settings on these runs (ties go to the setting nearest the defaults). */
export function fitMeter(runs: readonly SweepResult[]): { settings: Required<MeterOptions>; hits: number } {
  let chosen = GRID[0];
  let chosenHits = -1;
  for (const m of GRID) {
    const h = hitsWith(runs, m);
    if (h > chosenHits || (h === chosenHits && distance(m) < distance(chosen))) [chosen, chosenHits] = [m, h];
  }
  return { settings: chosen, hits: chosenHits };
}

/**
 * Are the meter's settings right? The defaults' hits on every run; then leave-one-out: for each
 * run, the settings fitted on the others, scored on it (ground truth it took no part in choosing)
 * — the honest estimate of how a fitted meter does on a run it has not seen. Also the baseline of
 * always taking the last step.
 */
export function calibrateMeter(runs: readonly SweepResult[]): BenchLine {
  const held = runs.map((r, i) => {
    const fit = fitMeter(runs.filter((_, j) => j !== i));
    return { run: r.run, settings: fit.settings, hit: hitsWith([r], fit.settings) === 1 };
  });
  const all = fitMeter(runs);
  return {
    name: 'toy-meter-calibration', runs: runs.length,
    default_meter: DEFAULT_METER, default_hits: hitsWith(runs, DEFAULT_METER),
    fitted_on_all: all.settings, fitted_hits_in_sample: all.hits,
    leave_one_out_hits: held.filter((h) => h.hit).length, leave_one_out: held,
    last_step_hits: runs.filter((r) => isHit(r.ground_truth, r.ground_truth[r.ground_truth.length - 1]?.step)).length,
    // The same counts, a miss the judge cannot tell from the best counting as a hit.
    within_noise: {
      default_hits: runs.filter((r) => isHitWithinNoise(r.ground_truth, recommendStop(r.log as unknown as StepRecord[], DEFAULT_METER)?.step)).length,
      leave_one_out_hits: held.filter((h, i) => isHitWithinNoise(runs[i].ground_truth, recommendStop(runs[i].log as unknown as StepRecord[], h.settings)?.step)).length,
      last_step_hits: runs.filter((r) => isHitWithinNoise(r.ground_truth, r.ground_truth[r.ground_truth.length - 1]?.step)).length,
    },
  };
}

/**
 * The sample check's detector against the judge, on a recorded sweep's style runs (no training).
 * Each validation's snapshot draws the check's pictures again — the run's own prompts and seeds —
 * and they are scored twice: by the run's detector, fitted again as the run fitted it (so it
 * reproduces the logged sample score), and by the judge in its place. The meter is then run on
 * both. Where the meter with the judge hits and with the detector misses, the detector is what
 * fails; where both miss, the rule or the check's prompts do. Needs the sweep's snapshots and data
 * in `out` (DreamBooth's snapshots are deleted once scored, and the subject runs follow the
 * concept gap: only the style runs are replayed).
 */
export async function benchToyMeterOracle(o: { log: readonly SweepResult[]; out?: string; onLine?: (l: BenchLine) => void }): Promise<BenchLine[]> {
  const out = o.out ?? join('out', 'bench-toy-meter');
  const { judge } = loadJudge(TOY_JUDGE_PATH);
  const lines: BenchLine[] = [];
  try {
    for (const rec of o.log) {
      const r0 = sweepRuns().find((x) => x.name === rec.run && x.steps === rec.steps);
      if (!r0 || r0.concept !== 'style' || !rec.log?.length) continue;
      const { r, c, snapshot } = sweepConfig(r0, out);
      const model = loadStableDiffusion(TOY_MODEL_PATH, { hash: false });
      const check = await runSampleCheck(model, c);
      try {
        const detector: number[] = [];
        const judged: number[] = [];
        for (const x of rec.log) {
          const path = snapshot(x.step);
          if (!path) throw new Error(`${rec.run}: the product of step ${x.step} is not in ${out}: replay a sweep whose snapshots are still in ${out} (npm run bench -- toy-meter writes them)`);
          const adapter = applyStyleAdapter(model, r.technique, path);
          try {
            const drawn = drawSamples(model, check);
            detector.push(scoreSamples(check, drawn));
            judged.push(mean(judge.judge(drawn.flat()).map((v) => Number(v.style))));
          } finally {
            adapter.remove();
          }
        }
        // A run whose check was turned off (its held-out AUC too low) logged no scores to compare with.
        const logged = rec.log.every((x) => x.sample_score !== undefined);
        const replayError = logged ? Math.max(...rec.log.map((x, i) => Math.abs(detector[i] - x.sample_score!))) : NaN;
        if (replayError > 0.01) throw new Error(`${rec.run}: the snapshots in ${out} do not give the logged sample scores (off by up to ${replayError.toFixed(3)}): they are not this log's run, or the code changed since; record the sweep again (npm run bench -- toy-meter) and replay its log (SDTUNE_METER_LOG)`);
        const withScores = (xs: number[]) => rec.log.map((x, i) => ({ ...x, sample_score: xs[i] }) as StepRecord);
        const meter = recommendStop(withScores(detector));
        const oracle = recommendStop(withScores(judged));
        const line: BenchLine = {
          name: 'toy-meter-oracle', run: rec.run, gt_best_step: bestOf(rec.ground_truth).step,
          meter_step: meter?.step ?? null, meter_within_10pct: isHit(rec.ground_truth, meter?.step),
          judge_step: oracle?.step ?? null, judge_within_10pct: isHit(rec.ground_truth, oracle?.step), judge_within_noise: isHitWithinNoise(rec.ground_truth, oracle?.step),
          // The replay is faithful when the detector's scores equal the logged ones (null: none logged, the check was off).
          replay_max_error: logged ? round(replayError, 4) : null, held_out_auc: check.heldOut ? round(check.heldOut.auc) : null,
          detector: detector.map((v) => round(v)), judge: judged.map((v) => round(v)),
          fidelity: rec.ground_truth.map((g) => g.fidelity ?? null),
        };
        lines.push(line);
        o.onLine?.(line);
      } finally {
        check.detector.dispose();
        model.dispose();
      }
    }
  } finally {
    judge.dispose();
  }
  const n = (k: string) => lines.filter((l) => l[k] === true).length;
  lines.push({ name: 'toy-meter-oracle-summary', runs: lines.length, meter_within_10pct: n('meter_within_10pct'), judge_within_10pct: n('judge_within_10pct'), judge_within_noise: n('judge_within_noise') });
  return lines;
}
