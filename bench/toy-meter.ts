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
import { join } from 'node:path';
import { resolveTrainConfig } from '../src/training/config.ts';
import { runTraining } from '../src/training/run.ts';
import { recommendStop, DEFAULT_METER, type MeterOptions } from '../src/training/meter.ts';
import type { StepRecord } from '../src/training/loop.ts';
import { snapshotPath } from '../src/training/loop.ts';
import type { TechniqueKind } from '../src/training/technique.ts';
import { loadJudge } from '../src/toy/judge.ts';
import { TOY_JUDGE_PATH, TOY_MODEL_PATH } from '../src/toy/model.ts';
import { DEMO_RUNS, baseResults, demoProbes, scoreProduct, writeConceptFolders } from '../src/toy/demo.ts';
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
    run('lora-r4-lr5e-4', 'lora', 400, { rank: 4, alpha: 4, lr: 5e-4 }),
    run('lora-r8-lr1e-3', 'lora', 400),
    run('lora-r16-lr3e-3-long', 'lora', 800, { rank: 16, alpha: 16, lr: 3e-3 }),
    run('hypernetwork', 'hypernetwork', 400),
  ];
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
    for (const r of sweepRuns(scale)) {
      const every = Math.max(1, Math.round(r.steps / 8));
      const dir = join(out, r.name);
      mkdirSync(dir, { recursive: true });
      const file = join(dir, r.technique === 'hypernetwork' ? `${r.name}.pt` : `${r.name}.safetensors`);
      const c = resolveTrainConfig(r.technique, {
        flags: { ...r.settings, steps: r.steps, validateEvery: every, checkpointEvery: every, snapshots: true, model: TOY_MODEL_PATH, data: join(data, r.concept), validationData: join(data, `${r.concept}-heldout`), out: file, workDir: join(dir, 'work') },
      });
      const t0 = Date.now();
      const { result } = await runTraining(c);
      const trainS = (Date.now() - t0) / 1000;
      const gt: { step: number; fidelity: number; preservation: number; score: number }[] = [];
      for (let step = every; step <= r.steps; step += every) {
        const snap = snapshotPath(file, r.technique === 'hypernetwork' ? '.pt' : '.safetensors', step);
        const path = existsSync(snap) ? snap : step === r.steps ? file : null;
        if (!path) continue;
        const s = scoreProduct(r, path, { token: c.token, modelPath: TOY_MODEL_PATH, judge, probes, base }).scores;
        gt.push({ step, fidelity: round(s.concept_fidelity), preservation: round(s.prior_preservation), score: round(s.concept_fidelity * s.prior_preservation) });
        // DreamBooth snapshots are whole models: drop each once scored.
        if (r.technique === 'dreambooth' && path !== file) rmSync(path, { force: true });
      }
      const rec = recommendStop(result.records);
      const best = gt.reduce((a, b) => (b.score > a.score ? b : a), gt[0]);
      const atRec = gt.find((g) => g.step === rec?.step) ?? gt[gt.length - 1];
      const hit = isHit(gt, rec?.step);
      const line: BenchLine = {
        name: 'toy-meter', run: r.name, technique: r.technique, steps: r.steps, train_s: round(trainS, 1),
        recommended_step: rec?.step ?? null, verdict: rec?.verdict ?? null, gt_best_step: best.step, gt_best_score: best.score, gt_score_at_recommended: atRec.score,
        step_error: rec ? round(Math.abs(rec.step - best.step) / r.steps) : null, within_10pct: hit,
        ground_truth: gt, meter: rec?.points.map((p) => ({ step: p.step, val: round(p.val, 5), drift: round(p.drift, 6) })) ?? [],
        // The raw validation log, so that the meter's settings can be refitted without retraining.
        log: result.records.filter((x) => x.val_loss !== undefined).map((x) => ({ step: x.step, val_loss: x.val_loss, prior_drift: x.prior_drift ?? 0 })),
      };
      lines.push(line);
      o.onLine?.(line);
    }
  } finally {
    judge.dispose();
  }
  const hits = lines.filter((l) => l.within_10pct).length;
  lines.push({ name: 'toy-meter-summary', runs: lines.length, within_10pct: hits, share: round(hits / lines.length), scale, probe_count: probeCount, default_meter: DEFAULT_METER });
  lines.push(calibrateMeter(lines.filter((l) => l.name === 'toy-meter') as unknown as SweepResult[]));
  return lines;
}

type GroundTruth = { step: number; score: number };
export interface SweepResult { run: string; ground_truth: GroundTruth[]; log: { step: number; val_loss: number; prior_drift: number }[] }

/** A hit: the ground-truth score at the recommended step is within 10 % of the run's best. */
export function isHit(gt: readonly GroundTruth[], step: number | undefined): boolean {
  if (gt.length === 0) return false;
  const best = Math.max(...gt.map((g) => g.score));
  const at = (gt.find((g) => g.step === step) ?? gt[gt.length - 1]).score;
  return best === 0 ? at === 0 : at >= 0.9 * best;
}

const GRID: Required<MeterOptions>[] = [];
for (const driftWeight of [0, 0.5, 1, 2, 4, 8]) for (const tolerance of [0, 0.01, 0.02, 0.05, 0.1, 0.2]) for (const smoothing of [0, 0.3, 0.5, 0.7]) GRID.push({ driftWeight, tolerance, smoothing });

function hitsWith(runs: readonly SweepResult[], m: MeterOptions): number {
  return runs.filter((r) => isHit(r.ground_truth, recommendStop(r.log as StepRecord[], m)?.step)).length;
}

/**
 * Are the meter's settings right? Fits driftWeight, tolerance and smoothing on half the runs (even
 * positions; ties go to the setting nearest the defaults) and counts hits on the other half, whose
 * ground truth took no part in the choice; the defaults are counted on the same half.
 */
export function calibrateMeter(runs: readonly SweepResult[]): BenchLine {
  const fit = runs.filter((_, i) => i % 2 === 0);
  const check = runs.filter((_, i) => i % 2 === 1);
  const distance = (m: Required<MeterOptions>) => Math.abs(Math.log2((m.driftWeight + 0.25) / (DEFAULT_METER.driftWeight + 0.25))) + Math.abs(m.tolerance - DEFAULT_METER.tolerance) * 10 + Math.abs(m.smoothing - DEFAULT_METER.smoothing);
  let chosen = GRID[0];
  let chosenHits = -1;
  for (const m of GRID) {
    const h = hitsWith(fit, m);
    if (h > chosenHits || (h === chosenHits && distance(m) < distance(chosen))) [chosen, chosenHits] = [m, h];
  }
  return {
    name: 'toy-meter-calibration', fit_runs: fit.map((r) => r.run), check_runs: check.map((r) => r.run),
    fitted: chosen, fitted_hits_on_fit: chosenHits, fitted_hits_on_check: hitsWith(check, chosen),
    default_hits_on_fit: hitsWith(fit, DEFAULT_METER), default_hits_on_check: hitsWith(check, DEFAULT_METER), check_size: check.length,
  };
}
