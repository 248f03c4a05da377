// Stable Diffusion benchmark (issue: full-size models): the UNet forward of (a) the tiny fixture
// UNet and (b) an SD1.5-size UNet at 32×32 latents, batch 2 (a CFG step), against the same forward
// in Debian's python3-torch (bench/sd_reference.py, a plain-torch UNet2DConditionModel that loads
// the same diffusers-named file); (c) the peak RSS of loading the SD1.5-size UNet and running one
// step at 64×64 latents (a 512×512 image), batch 2, each side in a fresh process; (d) a 20-step
// txt2img of a tiny model made from the fixtures (sdtune only). The SD1.5-size weights are random
// (PyTorch's default init, seeded), written once to a temp safetensors file both sides load.
// Run as `node --import tsx bench/sd.ts --peak WEIGHTS INPUTS`, this file is (c)'s child process.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadavg, tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import * as T from '../src/torch/index.ts';
import { SafetensorsFile, saveSafetensors } from '../src/formats/safetensors.ts';
import { UNet2DConditionModel } from '../src/models/unet.ts';
import { CLIPTextModel } from '../src/models/clip.ts';
import { AutoencoderKL } from '../src/models/vae.ts';
import {
  SD15_UNET, clipConfigFromTransformers, unetConfigFromDiffusers, unetConfigToDiffusers, vaeConfigFromDiffusers, type UNetConfig,
} from '../src/models/config.ts';
import { SD_SCHEDULER_CONFIG, type StableDiffusion } from '../src/models/load.ts';
import { ClipTokenizer } from '../src/text/tokenizer.ts';
import { generate } from '../src/sampling/pipeline.ts';
import { type BenchLine, PYTHON, ratio, round, timeit } from './common.ts';

const SHARED = process.env.SDTUNE_SHARED ?? join(import.meta.dirname, '..', '..', 'shared');
const FIX = join(SHARED, 'fixtures');

const CFG = {
  // Small models are dominated by per-op costs and scheduling noise: best of `repeats` means.
  tiny: { iters: 20, warm: 3, repeats: 5 },
  sd15: { latent: 32, batch: 2, iters: 3, warm: 1 },
  peak: { latent: 64, batch: 2 },
  txt2img: { steps: 20, cfg: 7.5, sampler: 'euler_a' as const, iters: 2, warm: 1, repeats: 3 },
};

const hwmMb = () => Number(/VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))![1]) / 1024;

/** The best of `repeats` timeit means (the first one warms up). */
function best(fn: () => void, o: { iters: number; warm: number; repeats: number }): number {
  let ms = Infinity;
  for (let r = 0; r < o.repeats; r++) ms = Math.min(ms, timeit(fn, o.iters, r === 0 ? o.warm : 0));
  return ms;
}

function readJson(path: string): Record<string, unknown> {
  return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
}

/** A UNet built straight from a safetensors file (tensors over the file's mapping). */
function loadUnet(weights: string, cfg: UNetConfig): UNet2DConditionModel {
  const file = SafetensorsFile.open(weights);
  try {
    const vb = T.nn.VarBuilder.from(file);
    const unet = new UNet2DConditionModel(vb, cfg);
    vb.finish({ what: weights });
    return unet.eval();
  } finally {
    file.close();
  }
}

function maxAbs(a: T.Tensor, b: T.Tensor): number {
  // .item(): waits for the computation
  return T.tidy(() => a.sub(b).abs().max().item());
}

/** The sample, timestep and context of one CFG step, saved for both sides. */
function writeInputs(path: string, latent: number, batch: number, seed: number): void {
  const g = new T.Generator(seed);
  const inputs = new Map<string, T.Tensor>([
    ['sample', T.randn([batch, 4, latent, latent], { generator: g })],
    ['context', T.randn([batch, 77, SD15_UNET.crossAttentionDim], { generator: g })],
    ['timestep', T.tensor(500, { dtype: 'int64' })],
  ]);
  saveSafetensors(path, inputs);
  for (const t of inputs.values()) t.dispose();
}

/** (c) in this process alone: load, one step, peak RSS (VmHWM). */
function peakChild(weights: string, inputsPath: string): void {
  const base = hwmMb();
  const t0 = performance.now();
  const unet = loadUnet(weights, SD15_UNET);
  const loadMs = performance.now() - t0;
  const ins = SafetensorsFile.open(inputsPath);
  const r = T.noGrad(() => T.tidy(() => {
    const t1 = performance.now();
    const out = unet.forward(ins.get('sample'), ins.get('timestep'), ins.get('context'));
    // .item(): waits for the step to finish
    const finite = out.isfinite().all().item() === 1;
    return { stepMs: performance.now() - t1, finite };
  }));
  ins.close();
  unet.dispose();
  console.log(JSON.stringify({ load_ms: loadMs, step_ms: r.stepMs, finite: r.finite, peak_rss_mb: hwmMb(), base_rss_mb: base }));
}

/** A tiny SD1 model from the fixtures: the fixture UNet and VAE, and a seeded random CLIP text tower of the fixture's config widened to the UNet's context size. */
function tinyModel(): StableDiffusion {
  const ucfg = unetConfigFromDiffusers(readJson(join(FIX, 'unet', 'sd1', 'config.json')));
  const vcfg = vaeConfigFromDiffusers(readJson(join(FIX, 'vae', 'two_level', 'config.json')));
  const tcfg = { ...clipConfigFromTransformers(readJson(join(FIX, 'clip_text', 'config.json'))), hiddenSize: ucfg.crossAttentionDim };
  const unet = loadUnet(join(FIX, 'unet', 'sd1', 'diffusion_pytorch_model.safetensors'), ucfg);
  const vfile = SafetensorsFile.open(join(FIX, 'vae', 'two_level', 'diffusion_pytorch_model.safetensors'));
  const vvb = T.nn.VarBuilder.from(vfile);
  const vae = new AutoencoderKL(vvb, vcfg);
  vvb.finish({ what: 'vae/two_level' });
  vfile.close();
  T.manualSeed(0);
  const textEncoder = new CLIPTextModel(T.nn.VarBuilder.init(), tcfg);
  for (const m of [unet, vae, textEncoder]) m.eval().requiresGrad_(false);
  return {
    name: 'tiny-fixture', path: FIX, family: 'sd1', prediction: 'epsilon', tokenizer: ClipTokenizer.default(), padding: 'sd1',
    textEncoder, unet, vae, schedulerConfig: SD_SCHEDULER_CONFIG, hash: '', device: 'cpu',
    dispose() {
      unet.dispose();
      vae.dispose();
      textEncoder.dispose();
    },
  };
}

function python(job: Record<string, unknown>): Record<string, number> {
  const rt = T.runtime();
  const out = execFileSync(PYTHON, [join(import.meta.dirname, 'sd_reference.py'), JSON.stringify({ ...job, threads: rt.numThreads })], {
    // Same thread policy as this process: n ATen/OpenMP threads, OpenBLAS' own pool as set here.
    env: { ...process.env, OPENBLAS_NUM_THREADS: String(Math.max(1, rt.blasThreads)), OMP_NUM_THREADS: String(rt.numThreads) },
    encoding: 'utf8',
    maxBuffer: 1 << 20,
  });
  return JSON.parse(out.trim().split('\n').pop()!) as Record<string, number>;
}

function nodeChild(args: string[]): Record<string, number> {
  const out = execFileSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), ...args], {
    encoding: 'utf8',
    env: { ...process.env, SDTUNE_QUIET: '1' },
    maxBuffer: 1 << 20,
  });
  return JSON.parse(out.trim().split('\n').pop()!) as Record<string, number>;
}

export function benchSd(): BenchLine[] {
  const rt = T.runtime();
  // Other processes on the cores skew these timings badly (OpenMP barriers wait for a
  // descheduled thread), so the 1-minute load average at the start goes into every line.
  const threads = { threads: rt.numThreads, blas_threads: rt.blasThreads, loadavg_1m_at_start: round(loadavg()[0], 2) };
  const dir = mkdtempSync(join(tmpdir(), 'sdtune-bench-sd-'));
  const lines: BenchLine[] = [];
  try {
    // (a) the tiny fixture UNet, checked against diffusers' outputs while we are at it
    const tinyCfg = unetConfigFromDiffusers(readJson(join(FIX, 'unet', 'sd1', 'config.json')));
    const tinyWeights = join(FIX, 'unet', 'sd1', 'diffusion_pytorch_model.safetensors');
    const tiny = loadUnet(tinyWeights, tinyCfg);
    const ins = SafetensorsFile.open(join(FIX, 'unet', 'inputs.safetensors'));
    const outs = SafetensorsFile.open(join(FIX, 'unet', 'sd1', 'outputs.safetensors'));
    const tinyRes = T.noGrad(() => T.tidy(() => {
      const sample = ins.get('sample');
      const ctx = ins.get('encoder_hidden_states');
      let err = 0;
      for (const kind of ['int', 'float', 'scalar']) err = Math.max(err, maxAbs(tiny.forward(sample, ins.get(`timestep_${kind}`), ctx), outs.get(`out.timestep_${kind}`)));
      const t = ins.get('timestep_int');
      const ms = best(() => T.tidy(() => { tiny.forward(sample, t, ctx); }), CFG.tiny);
      return { err, ms };
    }));
    ins.close();
    outs.close();
    tiny.dispose();

    // (d) 20-step txt2img of a tiny model (sdtune only: the reference would need CLIP, VAE and the sampler too)
    let txt: BenchLine;
    try {
      const model = tinyModel();
      try {
        const o = { prompt: 'a photograph of an astronaut riding a horse', negative: 'blurry', steps: CFG.txt2img.steps, cfg: CFG.txt2img.cfg, sampler: CFG.txt2img.sampler, seed: 0 };
        let size = '';
        const ms = best(() => {
          const img = generate(model, o)[0].image;
          size = `${img.width}x${img.height}`;
        }, CFG.txt2img);
        txt = { name: 'sd.txt2img_tiny_20_steps', sdtune_ms: ms, per_step_ms: ms / CFG.txt2img.steps, image: size, config: CFG.txt2img, reference: 'none (sdtune only)' };
      } finally {
        model.dispose();
      }
    } catch (e) {
      txt = { name: 'sd.txt2img_tiny_20_steps', error: (e as Error).message };
    }

    // (b) SD1.5-size UNet, random weights written once for both sides
    const weights = join(dir, 'unet', 'diffusion_pytorch_model.safetensors');
    const config = join(dir, 'unet', 'config.json');
    mkdirSync(join(dir, 'unet'));
    writeFileSync(config, JSON.stringify(unetConfigToDiffusers(SD15_UNET), null, 2));
    let t0 = performance.now();
    T.manualSeed(0);
    const gen = new UNet2DConditionModel(T.nn.VarBuilder.init(), SD15_UNET);
    saveSafetensors(weights, gen.stateDict());
    gen.dispose();
    const makeMs = performance.now() - t0;
    const in32 = join(dir, 'inputs32.safetensors');
    const in64 = join(dir, 'inputs64.safetensors');
    writeInputs(in32, CFG.sd15.latent, CFG.sd15.batch, 1);
    writeInputs(in64, CFG.peak.latent, CFG.peak.batch, 2);

    t0 = performance.now();
    const unet = loadUnet(weights, SD15_UNET);
    const loadMs = performance.now() - t0;
    const i32 = SafetensorsFile.open(in32);
    const ours = T.noGrad(() => {
      const x = T.keep(i32.get('sample'));
      const t = T.keep(i32.get('timestep'));
      const c = T.keep(i32.get('context'));
      const out = T.keep(unet.forward(x, t, c));
      const ms = timeit(() => T.tidy(() => { unet.forward(x, t, c); }), CFG.sd15.iters, CFG.sd15.warm);
      for (const v of [x, t, c]) v.dispose();
      return { out, ms };
    });
    i32.close();
    unet.dispose();

    const refOut = join(dir, 'ref_out32.safetensors');
    const ref = python({
      mode: 'time',
      tiny: { config: join(FIX, 'unet', 'sd1', 'config.json'), weights: tinyWeights, inputs: join(FIX, 'unet', 'inputs.safetensors'), outputs: join(FIX, 'unet', 'sd1', 'outputs.safetensors'), ...CFG.tiny },
      sd15: { config, weights, inputs: in32, output: refOut, iters: CFG.sd15.iters, warm: CFG.sd15.warm },
    });
    const rf = SafetensorsFile.open(refOut);
    const ro = rf.get('out');
    const diff = maxAbs(ours.out, ro);
    const absmax = T.tidy(() => ours.out.abs().max().item());
    ro.dispose();
    rf.close();
    ours.out.dispose();

    lines.push({
      name: 'sd.unet_tiny_fixture', sdtune_ms: tinyRes.ms, reference_ms: ref.tiny_ms, ratio: ratio(tinyRes.ms, ref.tiny_ms),
      shape: [2, 4, 16, 16], params: 283284, sdtune_max_abs_err_vs_diffusers: tinyRes.err, reference_max_abs_err_vs_diffusers: ref.tiny_max_abs_err, ...threads,
    });
    lines.push({
      name: 'sd.unet_sd15_32x32_b2', sdtune_ms: ours.ms, reference_ms: ref.sd15_ms, ratio: ratio(ours.ms, ref.sd15_ms),
      shape: [CFG.sd15.batch, 4, CFG.sd15.latent, CFG.sd15.latent], iters: CFG.sd15.iters, max_abs_diff_vs_reference: diff, output_absmax: round(absmax, 4),
      weights_make_and_save_ms: round(makeMs, 0), load_ms: round(loadMs, 1), ...threads,
    });

    // (c) peak RSS, each side in a fresh process
    const p = nodeChild(['--peak', weights, in64]);
    const pr = python({ mode: 'peak', config, weights, inputs: in64 });
    lines.push({
      name: 'sd.unet_sd15_load_and_step_64x64_b2_peak_rss', sdtune_ms: p.step_ms, reference_ms: pr.step_ms, ratio: ratio(p.step_ms, pr.step_ms),
      peak_rss_mb: round(p.peak_rss_mb, 1), reference_peak_rss_mb: round(pr.peak_rss_mb, 1), rss_ratio: ratio(p.peak_rss_mb, pr.peak_rss_mb),
      base_rss_mb: round(p.base_rss_mb, 1), load_ms: round(p.load_ms, 1), finite: Boolean(p.finite) && Boolean(pr.finite),
      weights_mb: round(statSync(weights).size / 2 ** 20, 1), note: 'sdtune maps the file (tensors over the mapping); the reference reads each tensor into its own memory', ...threads,
    });
    lines.push(txt);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return lines;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1] && process.argv[2] === '--peak') {
  peakChild(process.argv[3], process.argv[4]);
}
