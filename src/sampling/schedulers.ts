// Samplers behind one interface (STYLE rule 5), each reproducing a diffusers v0.25.0 scheduler as
// `Scheduler.from_config(<SD's PNDM scheduler_config.json>)` builds it (sd-formats.md §8.3):
//   'ddim'     DDIMScheduler (η = 0 deterministic, η > 0 draws noise)
//   'euler'    EulerDiscreteScheduler (k-diffusion `sample_euler`, s_churn = 0)
//   'euler_a'  EulerAncestralDiscreteScheduler (k-diffusion `sample_euler_ancestral`)
//   'dpmpp_2m' DPMSolverMultistepScheduler, dpmsolver++ order 2 (k-diffusion `sample_dpmpp_2m`)
// with Karras sigmas where diffusers has `use_karras_sigmas` (Euler and DPM++ 2M).
//
// Steps are addressed by index into `timesteps`, not by timestep value: diffusers' lookup of the
// index from the value (`_init_step_index`) is ambiguous when timesteps repeat, and img2img only
// needs the start index. Scalar coefficients are computed on the host in emulated float32 (f32),
// in the order diffusers computes them on 0-dim float32 tensors, and the tensor ops follow
// diffusers' expressions, so a step agrees with diffusers to float32 rounding.
import * as T from '../torch/index.ts';
import {
  NoiseSchedule,
  ddimTimesteps,
  dpmTimesteps,
  eulerTimesteps,
  f32,
  interpIndex,
  karrasSigmas,
  parseSchedulerConfig,
  rint,
  type DDIMConfig,
  type DPMSolverConfig,
  type EulerAncestralConfig,
  type EulerConfig,
  type PredictionType,
  type SchedulerConfig,
  type SchedulerName,
} from './schedule.ts';

export type { SchedulerName } from './schedule.ts';
export const SCHEDULER_NAMES: readonly SchedulerName[] = ['ddim', 'euler', 'euler_a', 'dpmpp_2m'];

export interface StepOptions {
  /** Draws the step's noise (Euler a; DDIM with η > 0) as diffusers' `randn_tensor` does. */
  generator?: T.Generator;
  /** The step's noise itself, shaped like the latents; wins over `generator` (tests, replays). */
  noise?: T.Tensor;
}

/** A sampler. Tensors passed in are never disposed; tensors returned belong to the caller. */
export interface Scheduler {
  readonly name: SchedulerName;
  readonly karras: boolean;
  readonly config: SchedulerConfig;
  readonly schedule: NoiseSchedule;
  readonly predictionType: PredictionType;
  /** Whether step() draws noise (pass a generator for reproducible runs). */
  readonly stochastic: boolean;
  /** Builds the timesteps and sigmas for n sampling steps; resets multistep history. */
  setTimesteps(n: number): void;
  /** The model's t at each step (fractional for Euler, integers otherwise). */
  readonly timesteps: readonly number[];
  /** k-diffusion noise levels, one more than timesteps (the level a step ends at); null for DDIM. */
  readonly sigmas: readonly number[] | null;
  /** Standard deviation of the starting latents: txt2img starts from N(0, I)·initNoiseSigma. */
  readonly initNoiseSigma: number;
  /** The factor scaleModelInput applies at a step: c_in = 1/√(σ²+1) for Euler, else 1. */
  modelInputScale(stepIndex: number): number;
  scaleModelInput(latents: T.Tensor, stepIndex: number): T.Tensor;
  /** The latents after step `stepIndex`, from the model's output at that step. */
  step(modelOutput: T.Tensor, stepIndex: number, latents: T.Tensor, opts?: StepOptions): T.Tensor;
  /**
   * img2img (diffusers StableDiffusionImg2ImgPipeline.get_timesteps): sets n timesteps and returns
   * the index of the first of the ⌊n·strength⌋ steps that are run, and those timesteps.
   */
  timestepsForStrength(n: number, strength: number): { startIndex: number; timesteps: number[] };
  /** Clean latents noised to the level of step `stepIndex` (this scheduler's `add_noise`). */
  addNoise(x0: T.Tensor, noise: T.Tensor, stepIndex: number): T.Tensor;
  /** Forgets multistep history (DPM++ 2M) and frees the tensors it holds. */
  dispose(): void;
}

export class UnsupportedSchedulerOptionError extends Error {
  constructor(name: SchedulerName, what: string) {
    super(`the ${name} sampler does not support ${what}; remove that setting from the scheduler config or pick another sampler`);
    this.name = 'UnsupportedSchedulerOptionError';
  }
}

/** Noise for one step: given, or drawn like diffusers' randn_tensor (on the generator's device). */
function stepNoise(like: T.Tensor, opts: StepOptions): T.Tensor {
  if (opts.noise !== undefined) {
    const s = opts.noise.shape;
    const want = like.shape;
    if (s.length !== want.length || s.some((d, i) => d !== want[i])) {
      throw new Error(`step noise has shape [${s.join(', ')}], the latents have [${want.join(', ')}]`);
    }
    return opts.noise.alias();
  }
  const g = opts.generator;
  const n = T.randn(like.shape, { generator: g, dtype: like.dtype, device: g?.device ?? like.device });
  if (n.device === like.device) return n;
  const moved = n.to(like.device);
  n.dispose();
  return moved;
}

abstract class BaseScheduler<C extends SchedulerConfig> implements Scheduler {
  abstract readonly name: SchedulerName;
  abstract readonly stochastic: boolean;
  protected ts: number[] = [];
  protected sig: number[] | null = null;

  constructor(
    readonly config: C,
    readonly schedule: NoiseSchedule,
    readonly karras: boolean,
  ) {}

  get predictionType(): PredictionType {
    return this.config.prediction_type;
  }
  get timesteps(): readonly number[] {
    return this.ts;
  }
  get sigmas(): readonly number[] | null {
    return this.sig;
  }
  get initNoiseSigma(): number {
    return 1;
  }
  abstract setTimesteps(n: number): void;
  abstract step(modelOutput: T.Tensor, stepIndex: number, latents: T.Tensor, opts?: StepOptions): T.Tensor;
  abstract addNoise(x0: T.Tensor, noise: T.Tensor, stepIndex: number): T.Tensor;

  modelInputScale(stepIndex: number): number {
    this.checkIndex(stepIndex);
    return 1;
  }
  scaleModelInput(latents: T.Tensor, stepIndex: number): T.Tensor {
    this.checkIndex(stepIndex);
    return latents.alias();
  }

  timestepsForStrength(n: number, strength: number): { startIndex: number; timesteps: number[] } {
    if (!(strength >= 0 && strength <= 1)) throw new RangeError(`img2img strength must be between 0 and 1, got ${strength}`);
    this.setTimesteps(n);
    const initTimestep = Math.min(Math.trunc(n * strength), n);
    const startIndex = Math.max(n - initTimestep, 0);
    if (startIndex >= this.ts.length) {
      throw new RangeError(`strength ${strength} with ${n} steps leaves no denoising step; raise the strength or the number of steps`);
    }
    return { startIndex, timesteps: this.ts.slice(startIndex) };
  }

  dispose(): void {}

  protected checkIndex(i: number): void {
    if (this.ts.length === 0) throw new Error(`${this.name}: call setTimesteps(n) before sampling`);
    if (!Number.isInteger(i) || i < 0 || i >= this.ts.length) {
      throw new RangeError(`${this.name}: step index ${i} is outside 0..${this.ts.length - 1}`);
    }
  }
}

// ---- DDIM ---------------------------------------------------------------------------------------

/**
 * DDIMScheduler (Song et al. 2021; §8.3 "DDIM"). Works in DDPM space: initNoiseSigma 1, the model
 * sees the latents unscaled and the integer t.
 */
export class DDIMScheduler extends BaseScheduler<DDIMConfig> {
  readonly name = 'ddim' as const;
  /** Final ᾱ_prev: 1 with set_alpha_to_one, else ᾱ_0 (SD). */
  private readonly finalAlphaCumprod: number;

  constructor(
    config: DDIMConfig,
    /** η of the DDIM paper: 0 is deterministic, 1 is DDPM-like ancestral sampling. */
    readonly eta = 0,
  ) {
    super(config, NoiseSchedule.fromConfig(config), false);
    if (config.thresholding) throw new UnsupportedSchedulerOptionError('ddim', 'dynamic thresholding ("thresholding": true)');
    if (!(eta >= 0)) throw new RangeError(`DDIM eta must be ≥ 0, got ${eta}`);
    this.finalAlphaCumprod = config.set_alpha_to_one ? 1 : this.schedule.alphasCumprod[0];
  }
  get stochastic(): boolean {
    return this.eta > 0;
  }

  setTimesteps(n: number): void {
    const c = this.config;
    this.ts = ddimTimesteps(c.timestep_spacing, c.num_train_timesteps, n, c.steps_offset);
  }

  step(modelOutput: T.Tensor, stepIndex: number, latents: T.Tensor, opts: StepOptions = {}): T.Tensor {
    this.checkIndex(stepIndex);
    const c = this.config;
    const t = this.ts[stepIndex];
    // 1. The previous timestep is t − ⌊T/n⌋ whatever the spacing (diffusers does the same, so
    //    "trailing" and "linspace" runs use ᾱ of a t that is not the next one in the list).
    const prevT = t - Math.floor(c.num_train_timesteps / this.ts.length);
    const aT = this.schedule.alphaCumprod(t);
    const aPrev = prevT >= 0 ? this.schedule.alphaCumprod(prevT) : this.finalAlphaCumprod;
    const bT = f32(1 - aT);
    const sqA = f32(Math.sqrt(aT));
    const sqB = f32(Math.sqrt(bT));
    // 5. σ_t = η·√((1−ᾱ_prev)/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_prev)
    const variance = f32(f32(f32(1 - aPrev) / bT) * f32(1 - f32(aT / aPrev)));
    const std = f32(this.eta * f32(Math.sqrt(variance)));
    const dirCoef = f32(Math.sqrt(f32(f32(1 - aPrev) - f32(std * std))));
    const sqAPrev = f32(Math.sqrt(aPrev));
    return T.tidy(() => {
      // 3. x̂₀ and ε̂ from the model output (§8.2 conversions).
      let x0: T.Tensor;
      let eps: T.Tensor;
      if (c.prediction_type === 'epsilon') {
        x0 = latents.sub(modelOutput.mul(sqB)).div(sqA);
        eps = modelOutput;
      } else if (c.prediction_type === 'v_prediction') {
        x0 = latents.mul(sqA).sub(modelOutput.mul(sqB));
        eps = modelOutput.mul(sqA).add(latents.mul(sqB));
      } else {
        x0 = modelOutput;
        eps = latents.sub(modelOutput.mul(sqA)).div(sqB);
      }
      // 4. clip_sample (SD configs turn it off).
      if (c.clip_sample) x0 = x0.clamp(-c.clip_sample_range, c.clip_sample_range);
      // 6-7. x_prev = √ᾱ_prev·x̂₀ + √(1−ᾱ_prev−σ_t²)·ε̂ (+ σ_t·z)
      const prev = x0.mul(sqAPrev).add(eps.mul(dirCoef));
      if (this.eta > 0) return prev.add(stepNoise(modelOutput, opts).mul(std));
      return prev;
    });
  }

  /** DDPMScheduler.add_noise at the step's timestep: √ᾱ_t·x₀ + √(1−ᾱ_t)·ε. */
  addNoise(x0: T.Tensor, noise: T.Tensor, stepIndex: number): T.Tensor {
    this.checkIndex(stepIndex);
    return this.schedule.addNoise(x0, noise, Array<number>(x0.size(0)).fill(this.ts[stepIndex]));
  }
}

// ---- Euler and Euler ancestral ------------------------------------------------------------------

/** c_in denominators and the α/σ split of a k-diffusion σ, in float32 as diffusers does. */
function sigmaScales(s: number): { inputDen: number; alpha: number; sigmaT: number } {
  const inputDen = f32(Math.sqrt(f32(f32(s * s) + 1)));
  const alpha = f32(1 / inputDen);
  return { inputDen, alpha, sigmaT: f32(s * alpha) };
}

/**
 * EulerDiscreteScheduler and EulerAncestralDiscreteScheduler (Karras et al. 2022, Algorithm 1
 * with s_churn = 0; §8.3 "Euler", "Euler a"). They work in k-diffusion space: x = x₀ + σ·ε, the
 * model sees c_in·x and a fractional t. Sigmas are interpolated linearly in σ at the timesteps (the
 * §8.3 DISAGREEMENT with k-diffusion's log-linear interpolation), and end with 0.
 */
export class EulerScheduler extends BaseScheduler<EulerConfig | EulerAncestralConfig> {
  readonly name: 'euler' | 'euler_a';

  constructor(
    config: EulerConfig | EulerAncestralConfig,
    readonly ancestral: boolean,
  ) {
    const karras = config.kind === 'euler' && config.use_karras_sigmas;
    // diffusers sets ᾱ_T = 2⁻²⁴ with zero-terminal-SNR betas so that σ_T is finite.
    super(config, NoiseSchedule.fromConfig(config, config.rescale_betas_zero_snr ? { terminalAlphaCumprod: 2 ** -24 } : {}), karras);
    this.name = ancestral ? 'euler_a' : 'euler';
    if (config.kind === 'euler') {
      if (config.interpolation_type !== 'linear') throw new UnsupportedSchedulerOptionError(this.name, `interpolation_type "${config.interpolation_type}"`);
      if (config.timestep_type !== 'discrete') throw new UnsupportedSchedulerOptionError(this.name, `timestep_type "${config.timestep_type}"`);
    }
  }
  get stochastic(): boolean {
    return this.ancestral;
  }

  setTimesteps(n: number): void {
    const c = this.config;
    let ts = eulerTimesteps(c.timestep_spacing, c.num_train_timesteps, n, c.steps_offset);
    let sig = ts.map((t) => interpIndex(t, this.schedule.sigmas));
    if (c.kind === 'euler' && c.use_karras_sigmas) {
      sig = karrasSigmas(c.sigma_min ?? sig[sig.length - 1], c.sigma_max ?? sig[0], n);
      ts = sig.map((s) => f32(this.schedule.sigmaToT(s)));
    }
    this.ts = ts;
    this.sig = [...sig.map(f32), 0];
  }

  /** max σ, or √(σ_max²+1) with "leading" spacing (whose first t is not the noisiest). */
  override get initNoiseSigma(): number {
    if (this.sig === null) throw new Error(`${this.name}: call setTimesteps(n) before reading initNoiseSigma`);
    const m = Math.max(...this.sig);
    return this.config.timestep_spacing === 'leading' ? f32(Math.sqrt(f32(f32(m * m) + 1))) : m;
  }

  override modelInputScale(stepIndex: number): number {
    this.checkIndex(stepIndex);
    return 1 / sigmaScales(this.sig![stepIndex]).inputDen;
  }
  /** latents / √(σ²+1): the k-diffusion c_in (§8.3). */
  override scaleModelInput(latents: T.Tensor, stepIndex: number): T.Tensor {
    this.checkIndex(stepIndex);
    return latents.div(sigmaScales(this.sig![stepIndex]).inputDen);
  }

  step(modelOutput: T.Tensor, stepIndex: number, latents: T.Tensor, opts: StepOptions = {}): T.Tensor {
    this.checkIndex(stepIndex);
    const sigmas = this.sig!;
    const s = sigmas[stepIndex];
    const next = sigmas[stepIndex + 1];
    // Ancestral split of the move to σ_next: σ_up of fresh noise, a deterministic move to σ_down.
    let sigmaUp = 0;
    let target = next;
    if (this.ancestral) {
      const s2 = f32(s * s);
      const n2 = f32(next * next);
      sigmaUp = f32(Math.sqrt(f32(f32(n2 * f32(s2 - n2)) / s2)));
      target = f32(Math.sqrt(f32(n2 - f32(sigmaUp * sigmaUp))));
    }
    const dt = f32(target - s);
    return T.tidy(() => {
      // 1. denoised D(x, σ) from the model output (§8.3 denoiser wrapper)
      const x0 = this.denoised(modelOutput, latents, s);
      // 2. d = (x − D)/σ; x ← x + d·(σ_next − σ)
      const d = latents.sub(x0).div(s);
      const prev = latents.add(d.mul(dt));
      // diffusers draws (and adds, times σ_up = 0) noise at the last step too, so a generator
      // advances the same way.
      if (this.ancestral) return prev.add(stepNoise(modelOutput, opts).mul(sigmaUp));
      return prev;
    });
  }

  private denoised(modelOutput: T.Tensor, latents: T.Tensor, s: number): T.Tensor {
    switch (this.config.prediction_type) {
      case 'epsilon':
        return latents.sub(modelOutput.mul(s));
      case 'v_prediction': {
        const den = f32(f32(s * s) + 1);
        return modelOutput.mul(f32(-s / f32(Math.sqrt(den)))).add(latents.div(den));
      }
      case 'sample':
        return modelOutput.alias();
    }
  }

  /** x₀ + σ·ε at the step's σ (Euler's add_noise). */
  addNoise(x0: T.Tensor, noise: T.Tensor, stepIndex: number): T.Tensor {
    this.checkIndex(stepIndex);
    const s = this.sig![stepIndex];
    return T.tidy(() => x0.add(noise.mul(s)));
  }
}

// ---- DPM-Solver++ (2M) --------------------------------------------------------------------------

/**
 * DPMSolverMultistepScheduler with algorithm_type "dpmsolver++" and solver order 2 (Lu et al.
 * 2022; §8.3 "DPM++ 2M"), which A1111 calls "DPM++ 2M" (Karras with use_karras_sigmas). The model
 * works in DDPM space (initNoiseSigma 1, no input scaling, integer t); the update is written with
 * the k-diffusion σ of each timestep and its α_t = 1/√(σ²+1), σ_t = σ·α_t.
 *
 * The diffusers 0.25 quirk that this reproduces: the sigma after the last timestep is σ(t=0) =
 * 0.0292, not 0 ("Karras" repeats its last sigma instead, which makes the last step the identity:
 * h = 0). The result therefore keeps the noise of t = 0 instead of being fully denoised, and with
 * ≥ 15 steps the last step is second order (lower_order_final only applies below 15 steps).
 * diffusers 0.26 added final_sigmas_type="zero" to change this.
 */
export class DPMSolverMultistepScheduler extends BaseScheduler<DPMSolverConfig> {
  readonly name = 'dpmpp_2m' as const;
  readonly stochastic = false;
  /** The previous step's x̂₀ and its index (the multistep history). */
  private prevX0: T.Tensor | null = null;
  private prevIndex = -1;

  constructor(config: DPMSolverConfig) {
    // DPMSolverMultistepScheduler 0.25 has no zero-terminal-SNR rescaling.
    super(config, NoiseSchedule.fromConfig({ ...config, rescale_betas_zero_snr: false }), config.use_karras_sigmas);
    const c = config;
    if (c.algorithm_type !== 'dpmsolver++') throw new UnsupportedSchedulerOptionError('dpmpp_2m', `algorithm_type "${c.algorithm_type}" (only "dpmsolver++")`);
    if (c.thresholding) throw new UnsupportedSchedulerOptionError('dpmpp_2m', 'dynamic thresholding ("thresholding": true)');
    if (c.use_lu_lambdas) throw new UnsupportedSchedulerOptionError('dpmpp_2m', 'use_lu_lambdas');
    if (c.variance_type === 'learned' || c.variance_type === 'learned_range') throw new UnsupportedSchedulerOptionError('dpmpp_2m', `variance_type "${c.variance_type}"`);
    // "2M" is the sampler's name: the config's solver_order (3 in a few SDXL configs) is not used.
  }

  setTimesteps(n: number): void {
    const c = this.config;
    const sch = this.schedule;
    // lambda_min_clipped drops the noisiest timesteps whose log-SNR λ_t = log α_t − log σ_t is
    // below it (searchsorted over the flipped λ); the default −∞ keeps all.
    let clipped = 0;
    for (const a of sch.alphasCumprod) {
      const lambda = f32(f32(Math.log(f32(Math.sqrt(a)))) - f32(Math.log(f32(Math.sqrt(f32(1 - a))))));
      if (lambda < c.lambda_min_clipped) clipped++;
    }
    let ts = dpmTimesteps(c.timestep_spacing, c.num_train_timesteps, c.num_train_timesteps - clipped, n, c.steps_offset);
    let sig: number[];
    if (c.use_karras_sigmas) {
      sig = karrasSigmas(sch.sigmas[0], sch.sigmas[sch.sigmas.length - 1], n);
      ts = sig.map((s) => rint(sch.sigmaToT(s)));
      sig.push(sig[n - 1]);
    } else {
      sig = ts.map((t) => interpIndex(t, sch.sigmas));
      sig.push(sch.sigmas[0]);
    }
    this.ts = ts;
    this.sig = sig.map(f32);
    this.dispose();
  }

  step(modelOutput: T.Tensor, stepIndex: number, latents: T.Tensor): T.Tensor {
    this.checkIndex(stepIndex);
    const c = this.config;
    const sig = this.sig!;
    const n = this.ts.length;
    // diffusers 0.25: first order on the first step after setTimesteps and, below 15 steps, on
    // the last; a step that does not follow the previous one starts a new history.
    const lowerOrderFinal = stepIndex === n - 1 && (c.euler_at_final || (c.lower_order_final && n < 15));
    const hasHistory = this.prevX0 !== null && this.prevIndex === stepIndex - 1;
    const s0 = sigmaScales(sig[stepIndex]);
    const st = sigmaScales(sig[stepIndex + 1]);
    const lambda = (x: { alpha: number; sigmaT: number }) => f32(f32(Math.log(x.alpha)) - f32(Math.log(x.sigmaT)));
    const lambdaT = lambda(st);
    const lambdaS0 = lambda(s0);
    const h = f32(lambdaT - lambdaS0);
    const ratio = f32(st.sigmaT / s0.sigmaT);
    const phi = f32(st.alpha * f32(f32(Math.exp(-h)) - 1)); // α_t·(e^{−h} − 1)
    const prevX0 = this.prevX0;
    const out = T.tidy(() => {
      // convert_model_output: the data prediction x̂₀ at σ_s0.
      let x0: T.Tensor;
      if (c.prediction_type === 'epsilon') x0 = latents.sub(modelOutput.mul(s0.sigmaT)).div(s0.alpha);
      else if (c.prediction_type === 'v_prediction') x0 = latents.mul(s0.alpha).sub(modelOutput.mul(s0.sigmaT));
      else x0 = modelOutput.clone();
      T.keep(x0);
      let prev: T.Tensor;
      if (!hasHistory || lowerOrderFinal) {
        // dpm_solver_first_order_update: x_t = (σ_t/σ_s)·x − α_t(e^{−h} − 1)·D₀
        prev = latents.mul(ratio).sub(x0.mul(phi));
      } else {
        // multistep_dpm_solver_second_order_update with r₀ = h₀/h and D₁ = (m₀ − m₁)/r₀.
        const s1 = sigmaScales(sig[stepIndex - 1]);
        const h0 = f32(lambdaS0 - lambda(s1));
        const r0 = f32(h0 / h);
        const d1 = x0.sub(prevX0!).mul(f32(1 / r0));
        const d1Coef = c.solver_type === 'midpoint' ? f32(0.5 * phi) : f32(-st.alpha * f32(f32(f32(f32(Math.exp(-h)) - 1) / h) + 1));
        prev = latents.mul(ratio).sub(x0.mul(phi)).sub(d1.mul(d1Coef));
      }
      return { prev, x0 };
    });
    prevX0?.dispose();
    this.prevX0 = out.x0;
    this.prevIndex = stepIndex;
    return out.prev;
  }

  /** α·x₀ + σ_t·ε at the step's σ (DPMSolverMultistepScheduler.add_noise). */
  addNoise(x0: T.Tensor, noise: T.Tensor, stepIndex: number): T.Tensor {
    this.checkIndex(stepIndex);
    const { alpha, sigmaT } = sigmaScales(this.sig![stepIndex]);
    return T.tidy(() => x0.mul(alpha).add(noise.mul(sigmaT)));
  }

  override dispose(): void {
    this.prevX0?.dispose();
    this.prevX0 = null;
    this.prevIndex = -1;
  }
}

// ---- factory and loop ---------------------------------------------------------------------------

export interface MakeSchedulerOptions {
  /** Karras sigmas (Euler, DPM++ 2M); default: the config's use_karras_sigmas. */
  karras?: boolean;
  /** DDIM's η (default 0). */
  eta?: number;
}

/**
 * A sampler built from a model's scheduler config (diffusers scheduler_config.json text, its
 * parsed object, or a parsed SchedulerConfig of any kind), as `<Class>.from_config(config)`.
 */
export function makeScheduler(name: SchedulerName, config: unknown, opts: MakeSchedulerOptions = {}): Scheduler {
  if (opts.eta !== undefined && name !== 'ddim') throw new UnsupportedSchedulerOptionError(name, 'eta (only DDIM has it)');
  switch (name) {
    case 'ddim':
      if (opts.karras) throw new UnsupportedSchedulerOptionError(name, 'Karras sigmas');
      return new DDIMScheduler(parseSchedulerConfig(config, 'ddim'), opts.eta ?? 0);
    case 'euler': {
      const c = parseSchedulerConfig(config, 'euler');
      return new EulerScheduler({ ...c, use_karras_sigmas: opts.karras ?? c.use_karras_sigmas }, false);
    }
    case 'euler_a':
      if (opts.karras) throw new UnsupportedSchedulerOptionError(name, 'Karras sigmas (diffusers 0.25 EulerAncestralDiscreteScheduler has none)');
      return new EulerScheduler(parseSchedulerConfig(config, 'euler_a'), true);
    case 'dpmpp_2m': {
      const c = parseSchedulerConfig(config, 'dpmpp_2m');
      return new DPMSolverMultistepScheduler({ ...c, use_karras_sigmas: opts.karras ?? c.use_karras_sigmas });
    }
    default:
      throw new Error(`unknown sampler ${JSON.stringify(name)}; choose one of ${SCHEDULER_NAMES.join(', ')}`);
  }
}

/** The denoiser: the (guided) UNet's prediction for input x at timestep t. */
export type DenoiseModel = (x: T.Tensor, t: number, stepIndex: number) => T.Tensor;

export interface SampleLoopOptions {
  /** img2img: clean latents, noised with x_T to the level of startIndex before the loop. */
  init?: T.Tensor;
  /** First step to run (img2img: timestepsForStrength().startIndex). Default 0. */
  startIndex?: number;
  /** Generator for the steps' noise (Euler a, DDIM η > 0). */
  generator?: T.Generator;
  /** Per-step noise to use instead of drawing it (tests, replays). */
  noiseAt?: (stepIndex: number) => T.Tensor | undefined;
  /** Called after each step with the new latents (previews, progress, cancellation by throwing). */
  onStep?: (stepIndex: number, latents: T.Tensor) => void;
}

/**
 * The denoising loop (diffusers StableDiffusionPipeline.__call__ step 7), for a scheduler whose
 * setTimesteps (or timestepsForStrength) has been called. x_T is N(0, I) noise: txt2img starts
 * from x_T·initNoiseSigma, img2img from `init` noised with x_T. Each step's temporaries are freed
 * with the step; the model's output is disposed by the loop. Returns the final latents.
 */
export function sampleLoop(scheduler: Scheduler, xT: T.Tensor, model: DenoiseModel, opts: SampleLoopOptions = {}): T.Tensor {
  const start = opts.startIndex ?? 0;
  let x = opts.init !== undefined ? scheduler.addNoise(opts.init, xT, start) : T.tidy(() => xT.mul(scheduler.initNoiseSigma));
  try {
    for (let i = start; i < scheduler.timesteps.length; i++) {
      const cur = x;
      x = T.tidy(() => {
        const input = scheduler.scaleModelInput(cur, i);
        const out = model(input, scheduler.timesteps[i], i);
        return scheduler.step(out, i, cur, { generator: opts.generator, noise: opts.noiseAt?.(i) });
      });
      cur.dispose();
      opts.onStep?.(i, x);
    }
  } catch (e) {
    x.dispose();
    throw e;
  }
  return x;
}
