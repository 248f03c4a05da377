// Training benchmark (issue: the efficiency equation as a table). (a) The four techniques —
// DreamBooth, LoRA, textual inversion ('embedding'), hypernetwork — on the tiny model of
// test/sampling/tiny-sd.ts through the product itself (loadStableDiffusion, the CLI's
// makeTechnique with the CLI's defaults, the Trainer over an in-memory TrainData: two 64×64
// pictures, batch 2): trainable parameters, mean step time after warm-up, peak RSS of a fresh
// process doing that run (VmHWM at its end), and the size of the file it writes. (b) One LoRA
// training step (rank 4, alpha 4 on to_q/to_k/to_v/to_out.0 of every attention of the tiny
// fixture UNet; forward, MSE loss vs the noise, backward, AdamW) against the same step written
// directly in python3-torch (bench/train_reference.py), from the same LoRA init and inputs (a temp
// safetensors file both sides load): step time and the agreement of the first losses.
// Run as `node --import tsx bench/train.ts --child TECHNIQUE CHECKPOINT DIR`, this file is (a)'s child.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadavg, tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import * as T from '../src/torch/index.ts';
import { SafetensorsFile, saveSafetensors } from '../src/formats/safetensors.ts';
import { UNet2DConditionModel } from '../src/models/unet.ts';
import { unetConfigFromDiffusers } from '../src/models/config.ts';
import { loadStableDiffusion } from '../src/models/load.ts';
import { injectLora } from '../src/adapters/lora.ts';
import { Trainer, type TrainBatch, type TrainData } from '../src/training/loop.ts';
import { resolveTrainConfig } from '../src/training/config.ts';
import type { TechniqueKind } from '../src/training/technique.ts';
import { makeTechnique } from '../src/training/run.ts';
import { writeTinyCheckpoint } from '../test/sampling/tiny-sd.ts';
import { type BenchLine, PYTHON, ratio, round } from './common.ts';

const SHARED = process.env.SDTUNE_SHARED ?? join(import.meta.dirname, '..', '..', 'shared');
const FIX = join(SHARED, 'fixtures');
const TECHS: TechniqueKind[] = ['dreambooth', 'lora', 'embedding', 'hypernetwork'];
const TOKEN = 'sksheart';
const CAPTIONS = [`a photo of ${TOKEN}`, `${TOKEN} on a plain ground`];

export const CFG = {
  techniques: { warmSteps: 5, steps: 30, batch: 2, side: 64, seed: 0 },
  // Gradient checkpointing: bigger pictures, so that activations, not weights, fill the memory.
  checkpointing: { warmSteps: 2, steps: 4, batch: 4, side: 128, techniques: ['dreambooth', 'lora'] as TechniqueKind[] },
  // Small steps are dominated by per-op costs and scheduling noise: best of `repeats` means.
  loraStep: { rank: 4, alpha: 4, lr: 1e-4, weightDecay: 1e-2, batch: 2, latent: 16, checkSteps: 5, iters: 30, warm: 3, repeats: 5 },
};
const LORA_LAYERS = /\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$/;

const statusMb = (key: 'VmHWM' | 'VmRSS') => Number(new RegExp(`${key}:\\s+(\\d+)`).exec(readFileSync('/proc/self/status', 'utf8'))![1]) / 1024;
const hwmMb = () => statusMb('VmHWM');
/** Sets the peak (VmHWM) back to the current RSS (Linux ≥ 4.0), to measure the steps that follow alone. */
const resetPeak = () => writeFileSync('/proc/self/clear_refs', '5');
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
/** Progress on stderr (stdout carries the JSON lines). */
const note = (s: string) => process.stderr.write(`train bench: ${s}\n`);

/** Two 64×64 pictures (a bright square on a dark ground, and its inverse), one batch of both, always the same. */
function pictures(side = CFG.techniques.side, batch = CFG.techniques.batch): TrainData {
  const make = (i: number): T.Tensor => T.tidy(() => {
    const ground = T.full([1, 3, side, side], i % 2 ? 0.8 : -0.8);
    const q = side / 4;
    const sq = T.full([1, 3, 2 * q, 2 * q], i % 2 ? -0.6 : 0.9);
    const mid = T.cat([ground.slice(2, q, 3 * q).slice(3, 0, q), sq, ground.slice(2, q, 3 * q).slice(3, 3 * q, side)], 3);
    return T.cat([ground.slice(2, 0, q), mid, ground.slice(2, 3 * q, side)], 2);
  });
  const idx = Array.from({ length: batch }, (_, k) => k % CAPTIONS.length);
  const batchOf = (): TrainBatch => ({
    pixels: T.tidy(() => T.cat(idx.map(make), 0)),
    captions: idx.map((k) => CAPTIONS[k]),
    masks: null,
    weights: idx.map(() => 1),
    keys: idx.map((k) => `img${k}`),
  });
  return { batchesPerEpoch: 1, batch: batchOf };
}

/** (a) in this process alone: one technique's run, as `sdtune train TECHNIQUE` would do it. */
interface ChildOptions { gradientCheckpointing?: boolean; side?: number; batch?: number; warmSteps?: number; steps?: number }

async function techniqueChild(kind: TechniqueKind, ckpt: string, dir: string, co: ChildOptions = {}): Promise<void> {
  const baseRss = hwmMb();
  const model = loadStableDiffusion(ckpt, { hash: false });
  const stem = join(dir, TOKEN);
  const c = resolveTrainConfig(kind, {
    flags: { model: ckpt, data: dir, out: stem, ...(kind === 'dreambooth' || kind === 'embedding' ? { token: TOKEN } : {}) },
  });
  const technique = makeTechnique(model, c);
  const out = stem + technique.extension;
  const { seed } = CFG.techniques;
  const warmSteps = co.warmSteps ?? CFG.techniques.warmSteps;
  const steps = co.steps ?? CFG.techniques.steps;
  const marks: number[] = [];
  let steadyRss = 0;
  let peakBefore = 0;
  const trainer = new Trainer(technique, pictures(co.side, co.batch), {
    steps: warmSteps + steps,
    gradAccumulation: c.gradAccumulation,
    lrSchedule: c.lrSchedule,
    warmupSteps: c.warmupSteps,
    maxGradNorm: c.maxGradNorm,
    minSnrGamma: c.minSnrGamma,
    noiseOffset: c.noiseOffset,
    seed,
    workDir: join(dir, 'work'),
    out,
    gradientCheckpointing: co.gradientCheckpointing,
    // no validation, prior meter, samples or checkpoints: the steps and the product alone
    onStep: () => {
      marks.push(performance.now());
      if (marks.length === warmSteps) {
        steadyRss = statusMb('VmRSS');
        peakBefore = hwmMb();
        resetPeak();
      }
    },
  });
  const r = await trainer.run();
  if (r.status !== 'done') throw new Error(`${kind}: ${r.message}`);
  // The timed steps' own peak: latents are cached and the VAE is done by then.
  const stepsPeak = hwmMb();
  // Each step's wall time as the loop runs it (onStep to onStep), after the warm-up steps.
  const intervals = marks.slice(warmSteps).map((t, i) => t - marks[warmSteps - 1 + i]);
  const recordMs = r.records.slice(warmSteps).map((x) => x.step_ms);
  const result = {
    technique: kind,
    trainable_parameters: trainer.trainableParameters,
    step_ms: mean(intervals),
    record_step_ms: mean(recordMs),
    steps_timed: intervals.length,
    first_loss: r.records[0].loss,
    final_loss: r.finalLoss,
    file_bytes: statSync(out).size,
    file: out.slice(dir.length + 1),
    save_dtype: c.saveDtype,
    settings: {
      lr: c.lr, ...(kind === 'lora' ? { rank: c.rank, alpha: c.alpha, train_text_encoder: c.trainTextEncoder } : {}),
      ...(kind === 'dreambooth' ? { train_text_encoder: c.trainTextEncoder } : {}), ...(kind === 'embedding' ? { vectors: c.vectors } : {}),
      ...(kind === 'hypernetwork' ? { layer_structure: c.layerStructure } : {}),
    },
    peak_rss_mb: 0,
    base_rss_mb: baseRss,
    steps_peak_rss_mb: stepsPeak,
    steady_rss_mb: steadyRss,
    gradient_checkpointing: co.gradientCheckpointing ?? false,
  };
  trainer.dispose();
  technique.dispose();
  model.dispose();
  result.peak_rss_mb = Math.max(peakBefore, hwmMb()); // the process's peak, before and after the reset
  console.log(JSON.stringify(result));
}

function nodeChild(args: string[]): Record<string, unknown> {
  const out = execFileSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), ...args], {
    encoding: 'utf8',
    env: { ...process.env, SDTUNE_QUIET: '1' },
    maxBuffer: 1 << 20,
  });
  return JSON.parse(out.trim().split('\n').pop()!) as Record<string, unknown>;
}

function python(job: Record<string, unknown>): Record<string, unknown> {
  const rt = T.runtime();
  const out = execFileSync(PYTHON, [join(import.meta.dirname, 'train_reference.py'), JSON.stringify({ ...job, threads: rt.numThreads })], {
    // Same thread policy as this process (bench/sd.ts): n ATen/OpenMP threads, OpenBLAS' own pool as set here.
    env: { ...process.env, OPENBLAS_NUM_THREADS: String(Math.max(1, rt.blasThreads)), OMP_NUM_THREADS: String(rt.numThreads) },
    encoding: 'utf8',
    maxBuffer: 1 << 20,
  });
  return JSON.parse(out.trim().split('\n').pop()!) as Record<string, unknown>;
}

/** The best of `repeats` means of `iters` calls (the first one warms up). */
function best(fn: () => void, o: { iters: number; warm: number; repeats: number }): number {
  let ms = Infinity;
  for (let r = 0; r < o.repeats; r++) {
    for (let i = 0; i < (r === 0 ? o.warm : 0); i++) fn();
    T.synchronize();
    const t = performance.now();
    for (let i = 0; i < o.iters; i++) fn();
    T.synchronize();
    ms = Math.min(ms, (performance.now() - t) / o.iters);
  }
  return ms;
}

/** (b) sdtune's side: the tiny fixture UNet, the LoRA injected as the product does, the init and inputs written for Python. */
export function loraStep(initPath: string): { ms: number; losses: number[]; targets: number; params: number } {
  const o = CFG.loraStep;
  const cfg = unetConfigFromDiffusers(JSON.parse(readFileSync(join(FIX, 'unet', 'sd1', 'config.json'), 'utf8')) as Record<string, unknown>);
  const file = SafetensorsFile.open(join(FIX, 'unet', 'sd1', 'diffusion_pytorch_model.safetensors'));
  let unet: UNet2DConditionModel;
  try {
    const vb = T.nn.VarBuilder.from(file);
    unet = new UNet2DConditionModel(vb, cfg);
    vb.finish({ what: 'unet/sd1' });
  } finally {
    file.close();
  }
  unet.requiresGrad_(false);
  const handle = injectLora({ unet }, { rank: o.rank, alpha: o.alpha, targets: (p) => p.startsWith('unet.') && LORA_LAYERS.test(p) }, 0);
  try {
    const g = new T.Generator(1);
    const inputs = new Map<string, T.Tensor>([
      ['input.latents', T.randn([o.batch, cfg.inChannels, o.latent, o.latent], { generator: g })],
      ['input.noise', T.randn([o.batch, cfg.inChannels, o.latent, o.latent], { generator: g })],
      ['input.context', T.randn([o.batch, 77, cfg.crossAttentionDim], { generator: g })],
      ['input.timesteps', T.tensor([250, 750].slice(0, o.batch), { dtype: 'int64' })],
    ]);
    const init = new Map(inputs);
    for (const [path, b] of handle.modules) {
      const p = path.slice('unet.'.length);
      init.set(`lora.${p}.lora_down.weight`, b.down);
      init.set(`lora.${p}.lora_up.weight`, b.up);
    }
    saveSafetensors(initPath, init);
    const named = [...handle.namedParameters()];
    for (const [, p] of named) p.requiresGrad_(true);
    const opt = new T.optim.AdamW(named, { lr: o.lr, weightDecay: o.weightDecay });
    const [x, noise, ctx, t] = ['latents', 'noise', 'context', 'timesteps'].map((k) => inputs.get(`input.${k}`)!);
    unet.train();
    const step = (): number => {
      const loss = T.tidy(() => {
        const l = T.mseLoss(unet.forward(x, t, ctx), noise);
        l.backward();
        return l.item(); // .item(): waits for the step (the product's loop reads the loss each step too)
      });
      opt.step();
      opt.zeroGrad();
      return loss;
    };
    const losses = Array.from({ length: o.checkSteps }, step);
    const ms = best(step, o);
    const params = named.reduce((s, [, p]) => s + p.numel, 0);
    opt.dispose();
    for (const v of inputs.values()) v.dispose();
    return { ms, losses, targets: handle.modules.size, params };
  } finally {
    handle.remove();
    unet.dispose();
  }
}

export async function benchTrain(): Promise<BenchLine[]> {
  const rt = T.runtime();
  // Other processes on the cores skew these timings badly (OpenMP barriers wait for a
  // descheduled thread), so the 1-minute load average at the start goes into every line.
  const threads = { threads: rt.numThreads, blas_threads: rt.blasThreads, loadavg_1m_at_start: round(loadavg()[0], 2) };
  const dir = mkdtempSync(join(tmpdir(), 'sdtune-bench-train-'));
  const lines: BenchLine[] = [];
  try {
    // (a) each technique in a fresh process on the same tiny checkpoint
    const ckpt = writeTinyCheckpoint(dir);
    const rows: Record<string, unknown>[] = [];
    for (const kind of TECHS) {
      const work = mkdtempSync(join(dir, `${kind}-`));
      note(`${kind} (a fresh process, ${CFG.techniques.warmSteps + CFG.techniques.steps} steps)`);
      try {
        const r = nodeChild(['--child', kind, ckpt, work]);
        const row = {
          technique: kind,
          trainable_parameters: r.trainable_parameters as number,
          step_ms: round(r.step_ms as number, 2),
          peak_rss_mb: round(r.peak_rss_mb as number, 1),
          file_bytes: r.file_bytes as number,
        };
        rows.push(row);
        lines.push({
          name: `train.${kind}`, sdtune_ms: r.step_ms as number, trainable_parameters: row.trainable_parameters, peak_rss_mb: row.peak_rss_mb, file_bytes: row.file_bytes,
          file: r.file, save_dtype: r.save_dtype, record_step_ms_mean: round(r.record_step_ms as number, 2), steps_timed: r.steps_timed,
          warmup_steps: CFG.techniques.warmSteps, first_loss: round(r.first_loss as number, 5), final_loss: round(r.final_loss as number, 5),
          base_rss_mb: round(r.base_rss_mb as number, 1), settings: r.settings,
          data: `${CFG.techniques.batch}×3×${CFG.techniques.side}×${CFG.techniques.side} pixels per step (latents cached), model tiny-sd (test/sampling/tiny-sd.ts)`,
          reference: 'none (sdtune only)', ...threads,
        });
      } catch (e) {
        lines.push({ name: `train.${kind}`, error: (e as Error).message.split('\n').slice(0, 6).join('\n') });
      } finally {
        rmSync(work, { recursive: true, force: true });
      }
    }
    lines.push({
      name: 'train.efficiency_table',
      columns: ['technique', 'trainable_parameters', 'step_ms', 'peak_rss_mb', 'file_bytes'],
      rows,
      note: 'each row: the product\'s own run of that technique on the tiny model, CLI defaults, in a fresh process (peak_rss_mb is that process\'s VmHWM; node + libtorch alone is base_rss_mb in the train.<technique> lines)',
      ...threads,
    });

    // (c) gradient checkpointing: the same run with it off and on, each in a fresh process
    const gc = CFG.checkpointing;
    for (const kind of gc.techniques) {
      const got: Record<string, unknown>[] = [];
      for (const on of [false, true]) {
        const work = mkdtempSync(join(dir, `gc-${kind}-`));
        note(`${kind} at ${gc.side}×${gc.side}, batch ${gc.batch}, gradient checkpointing ${on ? 'on' : 'off'} (a fresh process)`);
        try {
          got.push(nodeChild(['--child', kind, ckpt, work, JSON.stringify({ gradientCheckpointing: on, side: gc.side, batch: gc.batch, warmSteps: gc.warmSteps, steps: gc.steps })]));
        } catch (e) {
          lines.push({ name: `train.gradient_checkpointing.${kind}`, error: (e as Error).message.split('\n').slice(0, 6).join('\n') });
        } finally {
          rmSync(work, { recursive: true, force: true });
        }
      }
      if (got.length !== 2) continue;
      const [off, on] = got;
      // What the steps add over the memory held between them (weights, optimizer state, caches).
      const extra = (r: Record<string, unknown>) => (r.steps_peak_rss_mb as number) - (r.steady_rss_mb as number);
      lines.push({
        name: `train.gradient_checkpointing.${kind}`, sdtune_ms: on.step_ms as number, reference_ms: off.step_ms as number, ratio: ratio(on.step_ms as number, off.step_ms as number),
        steps_peak_rss_mb_off: round(off.steps_peak_rss_mb as number, 1), steps_peak_rss_mb_on: round(on.steps_peak_rss_mb as number, 1),
        steady_rss_mb_off: round(off.steady_rss_mb as number, 1), steady_rss_mb_on: round(on.steady_rss_mb as number, 1),
        step_memory_mb_off: round(extra(off), 1), step_memory_mb_on: round(extra(on), 1), step_memory_ratio: ratio(extra(on), extra(off)),
        final_loss_off: round(off.final_loss as number, 6), final_loss_on: round(on.final_loss as number, 6),
        data: `${gc.batch}×3×${gc.side}×${gc.side} pixels per step (latents cached), model tiny-sd, ${gc.steps} steps timed after ${gc.warmSteps}`,
        note: 'ratio = step time with checkpointing over without; step memory = the timed steps\' peak RSS (VmHWM reset after the warm-up) over the RSS between steps',
        reference: 'the same run without gradient checkpointing', ...threads,
      });
    }

    // (b) one LoRA step, sdtune vs python3-torch, same init and inputs
    const o = CFG.loraStep;
    const initPath = join(dir, 'lora-init.safetensors');
    note('LoRA step on the tiny UNet: sdtune');
    const ours = loraStep(initPath);
    note('LoRA step on the tiny UNet: python3-torch');
    const ref = python({
      config: join(FIX, 'unet', 'sd1', 'config.json'), weights: join(FIX, 'unet', 'sd1', 'diffusion_pytorch_model.safetensors'), init: initPath,
      rank: o.rank, alpha: o.alpha, lr: o.lr, weight_decay: o.weightDecay, check_steps: o.checkSteps, iters: o.iters, warm: o.warm, repeats: o.repeats,
    });
    const refLosses = ref.losses as number[];
    const refMs = ref.step_ms as number;
    lines.push({
      name: 'train.lora_step_tiny_unet', sdtune_ms: ours.ms, reference_ms: refMs, ratio: ratio(ours.ms, refMs), goal_ratio: 1.05,
      first_loss: ours.losses[0], reference_first_loss: refLosses[0], first_loss_abs_diff: Math.abs(ours.losses[0] - refLosses[0]),
      max_loss_abs_diff_first_steps: Math.max(...ours.losses.map((l, i) => Math.abs(l - refLosses[i]))), loss_steps_compared: ours.losses.length,
      lora_targets: ours.targets, reference_lora_targets: ref.targets, trainable_parameters: ours.params, reference_trainable_parameters: ref.trainable_parameters,
      latents: [o.batch, 4, o.latent, o.latent], context: [o.batch, 77, 32], rank: o.rank, alpha: o.alpha, lr: o.lr, weight_decay: o.weightDecay,
      timing: `best of ${o.repeats} means of ${o.iters} steps, after ${o.checkSteps + o.warm} steps`,
      reference: `python3-torch ${ref.torch}, torch.optim.AdamW defaults (foreach off on CPU), zero_grad(set_to_none=True)`, ...threads,
    });
    for (const l of lines) if (!('error' in l)) l.loadavg_1m_at_end = round(loadavg()[0], 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return lines;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1] && process.argv[2] === '--child') {
  techniqueChild(process.argv[3] as TechniqueKind, process.argv[4], process.argv[5], JSON.parse(process.argv[6] ?? '{}') as ChildOptions).catch((e: unknown) => {
    process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  });
}
