// The DDPM noise schedule (sd-formats.md §8.1), its training helpers (§8.2) and the pure timestep /
// sigma arithmetic the samplers share. Everything follows diffusers v0.25.0 (the version the
// fixtures were made with): `DDPMScheduler.__init__` / `add_noise` / `get_velocity`,
// `training_utils.compute_snr`, and the `set_timesteps` arithmetic of `DDIMScheduler`,
// `EulerDiscreteScheduler` and `DPMSolverMultistepScheduler`.
//
// Precision. diffusers keeps the schedule in float32 torch tensors and builds inference timesteps
// with numpy in float64. To reproduce its numbers exactly (the fixtures check timesteps exactly and
// ᾱ to the bit), the arrays here are Float32Arrays, float32 arithmetic is emulated with
// Math.fround (f32 below: +, −, ×, ÷ and √ of two float32 values, done in float64 and rounded once,
// equal the float32 result), and numpy's float64 steps (linspace, arange, interp, round) are
// written out as numpy computes them.
import * as T from '../torch/index.ts';

export const f32: (x: number) => number = Math.fround;

// ---- configuration (diffusers' scheduler_config.json) -------------------------------------------

export type BetaSchedule = 'linear' | 'scaled_linear' | 'squaredcos_cap_v2';
export type PredictionType = 'epsilon' | 'v_prediction' | 'sample';
export type TimestepSpacing = 'leading' | 'trailing' | 'linspace';
/** The samplers behind the Scheduler interface (schedulers.ts). */
export type SchedulerName = 'ddim' | 'euler' | 'euler_a' | 'dpmpp_2m';
/** A config can also be read for training (DDPMScheduler), which has no sampler here. */
export type ConfigKind = SchedulerName | 'ddpm';

/**
 * Keys every diffusers scheduler shares. Field names are diffusers' config keys on purpose
 * (STYLE rule 2): a parsed config can be handed back to parseSchedulerConfig for another kind,
 * as diffusers' `OtherScheduler.from_config(scheduler.config)`.
 */
interface BaseSchedulerConfig {
  readonly num_train_timesteps: number;
  readonly beta_start: number;
  readonly beta_end: number;
  readonly beta_schedule: BetaSchedule;
  /** Explicit betas (length num_train_timesteps) replacing beta_schedule, or null. */
  readonly trained_betas: readonly number[] | null;
  readonly prediction_type: PredictionType;
  readonly timestep_spacing: TimestepSpacing;
  readonly steps_offset: number;
  /** Lin et al. 2023 "Common diffusion noise schedules are flawed": rescale to zero terminal SNR. */
  readonly rescale_betas_zero_snr: boolean;
  /**
   * Keys that took the class default rather than a value from the file. As in diffusers, parsing
   * this config again for another kind lets that kind's own defaults apply to them (a DDIM config's
   * defaulted "leading" spacing does not turn Euler's "linspace" into "leading").
   */
  readonly _use_default_values: readonly string[];
}
/** DDPMScheduler (training). */
export interface DDPMConfig extends BaseSchedulerConfig {
  readonly kind: 'ddpm';
  readonly clip_sample: boolean;
  readonly variance_type: string;
}
/** DDIMScheduler. */
export interface DDIMConfig extends BaseSchedulerConfig {
  readonly kind: 'ddim';
  readonly clip_sample: boolean;
  readonly clip_sample_range: number;
  /** Use ᾱ_prev = 1 at the last step instead of ᾱ_0 (SD configs say false). */
  readonly set_alpha_to_one: boolean;
  readonly thresholding: boolean;
  readonly dynamic_thresholding_ratio: number;
  readonly sample_max_value: number;
}
/** EulerDiscreteScheduler. */
export interface EulerConfig extends BaseSchedulerConfig {
  readonly kind: 'euler';
  readonly interpolation_type: 'linear' | 'log_linear';
  readonly use_karras_sigmas: boolean;
  readonly sigma_min: number | null;
  readonly sigma_max: number | null;
  readonly timestep_type: 'discrete' | 'continuous';
}
/** EulerAncestralDiscreteScheduler (0.25 has no use_karras_sigmas). */
export interface EulerAncestralConfig extends BaseSchedulerConfig {
  readonly kind: 'euler_a';
}
/**
 * DPMSolverMultistepScheduler. It has no rescale_betas_zero_snr in 0.25: the file's value is kept
 * (as diffusers keeps unknown keys, so a later from_config for another class still sees it) but the
 * sampler ignores it.
 */
export interface DPMSolverConfig extends BaseSchedulerConfig {
  readonly kind: 'dpmpp_2m';
  readonly solver_order: number;
  readonly algorithm_type: 'dpmsolver++' | 'dpmsolver' | 'sde-dpmsolver++' | 'sde-dpmsolver';
  readonly solver_type: 'midpoint' | 'heun';
  readonly lower_order_final: boolean;
  readonly euler_at_final: boolean;
  readonly use_karras_sigmas: boolean;
  readonly use_lu_lambdas: boolean;
  readonly lambda_min_clipped: number;
  readonly thresholding: boolean;
  readonly dynamic_thresholding_ratio: number;
  readonly sample_max_value: number;
  readonly variance_type: string | null;
}
export type SchedulerConfig = DDPMConfig | DDIMConfig | EulerConfig | EulerAncestralConfig | DPMSolverConfig;
export type ConfigOf<K extends ConfigKind> = Extract<SchedulerConfig, { kind: K }>;
type Defaults<K extends ConfigKind> = Omit<ConfigOf<K>, 'kind' | '_use_default_values'>;

/** The fields that define the noise schedule itself. */
export type ScheduleFields = Pick<
  BaseSchedulerConfig,
  'num_train_timesteps' | 'beta_start' | 'beta_end' | 'beta_schedule' | 'trained_betas' | 'rescale_betas_zero_snr'
>;

// Each class's own `__init__` defaults in diffusers 0.25.0 (register_to_config).
const BASE_DEFAULTS = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: 'linear',
  trained_betas: null,
  prediction_type: 'epsilon',
  steps_offset: 0,
  rescale_betas_zero_snr: false,
} as const;
const DEFAULTS: { readonly [K in ConfigKind]: Defaults<K> } = {
  ddpm: { ...BASE_DEFAULTS, timestep_spacing: 'leading', clip_sample: true, variance_type: 'fixed_small' },
  ddim: {
    ...BASE_DEFAULTS,
    timestep_spacing: 'leading',
    clip_sample: true,
    clip_sample_range: 1.0,
    set_alpha_to_one: true,
    thresholding: false,
    dynamic_thresholding_ratio: 0.995,
    sample_max_value: 1.0,
  },
  euler: {
    ...BASE_DEFAULTS,
    timestep_spacing: 'linspace',
    interpolation_type: 'linear',
    use_karras_sigmas: false,
    sigma_min: null,
    sigma_max: null,
    timestep_type: 'discrete',
  },
  euler_a: { ...BASE_DEFAULTS, timestep_spacing: 'linspace' },
  dpmpp_2m: {
    ...BASE_DEFAULTS,
    timestep_spacing: 'linspace',
    solver_order: 2,
    algorithm_type: 'dpmsolver++',
    solver_type: 'midpoint',
    lower_order_final: true,
    euler_at_final: false,
    use_karras_sigmas: false,
    use_lu_lambdas: false,
    lambda_min_clipped: -Infinity,
    thresholding: false,
    dynamic_thresholding_ratio: 0.995,
    sample_max_value: 1.0,
    variance_type: null,
  },
};
/** Keys a class does not have: carried through, never reported as defaulted. */
const NOT_OWN: Partial<Record<ConfigKind, readonly string[]>> = { dpmpp_2m: ['rescale_betas_zero_snr'] };

const ENUMS: Record<string, readonly string[]> = {
  beta_schedule: ['linear', 'scaled_linear', 'squaredcos_cap_v2'],
  prediction_type: ['epsilon', 'v_prediction', 'sample'],
  timestep_spacing: ['leading', 'trailing', 'linspace'],
  interpolation_type: ['linear', 'log_linear'],
  timestep_type: ['discrete', 'continuous'],
  algorithm_type: ['dpmsolver++', 'dpmsolver', 'sde-dpmsolver++', 'sde-dpmsolver'],
  solver_type: ['midpoint', 'heun'],
};
const INTEGERS = new Set(['num_train_timesteps', 'steps_offset', 'solver_order']);
const NULLABLE = new Set(['trained_betas', 'sigma_min', 'sigma_max', 'variance_type']);

export class SchedulerConfigError extends Error {
  constructor(source: string, message: string) {
    super(`${source}: ${message}`);
    this.name = 'SchedulerConfigError';
  }
}

/**
 * JSON as Python's json module writes it, where ±Infinity and NaN are bare words (DPM's
 * lambda_min_clipped is -inf): they become the numbers.
 */
export function parsePythonJson(text: string): unknown {
  const mark = '\u0000py:';
  const quoted = text.replace(/("(?:[^"\\]|\\.)*")|-?Infinity|NaN/g, (m, str: string | undefined) => (str !== undefined ? m : `"\\u0000py:${m}"`));
  return JSON.parse(quoted, (_k, v: unknown) => (typeof v === 'string' && v.startsWith(mark) ? Number(v.slice(mark.length)) : v));
}

/**
 * Reads a diffusers scheduler_config.json (text or parsed object) the way `<Class>.from_config`
 * does for the scheduler `kind`: keys the class has take the file's value, missing keys (and
 * nulls) take that class's own default, keys listed in `_use_default_values` are treated as
 * missing, unknown keys are ignored, and `_class_name` may name any scheduler (SD checkpoints ship
 * a PNDMScheduler config, and pipelines build Euler or DPM++ from it).
 */
export function parseSchedulerConfig<K extends ConfigKind>(json: unknown, kind: K, source = 'scheduler_config.json'): ConfigOf<K> {
  let obj = json;
  if (typeof json === 'string') {
    try {
      obj = parsePythonJson(json);
    } catch (e) {
      throw new SchedulerConfigError(source, `is not valid JSON (${(e as Error).message}); it should be a diffusers scheduler_config.json`);
    }
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
    throw new SchedulerConfigError(source, 'should hold a JSON object of scheduler settings');
  }
  const defaults = DEFAULTS[kind] as unknown as Record<string, unknown> | undefined;
  if (defaults === undefined) throw new SchedulerConfigError(source, `unknown scheduler kind ${JSON.stringify(kind)}`);
  const raw = obj as Record<string, unknown>;
  const usedDefaults = Array.isArray(raw._use_default_values) ? (raw._use_default_values as unknown[]) : [];
  const notOwn: readonly string[] = NOT_OWN[kind] ?? [];
  const out: Record<string, unknown> = { kind };
  const defaulted: string[] = [];
  for (const [key, def] of Object.entries(defaults)) {
    const v = usedDefaults.includes(key) ? undefined : raw[key];
    if (v === undefined || (v === null && !NULLABLE.has(key))) {
      out[key] = def;
      if (!notOwn.includes(key)) defaulted.push(key);
    } else {
      out[key] = checkValue(source, key, v, def);
    }
  }
  out._use_default_values = defaulted;
  const cfg = out as unknown as ConfigOf<K>;
  if (cfg.trained_betas !== null && cfg.trained_betas.length !== cfg.num_train_timesteps) {
    throw new SchedulerConfigError(source, `trained_betas has ${cfg.trained_betas.length} values but num_train_timesteps is ${cfg.num_train_timesteps}`);
  }
  return cfg;
}

function checkValue(source: string, key: string, v: unknown, def: unknown): unknown {
  const bad = (want: string) => new SchedulerConfigError(source, `${key} should be ${want}, got ${JSON.stringify(v)}`);
  if (v === null) return null;
  if (ENUMS[key] !== undefined) {
    if (typeof v !== 'string' || !ENUMS[key].includes(v)) throw bad(`one of ${ENUMS[key].map((s) => `"${s}"`).join(', ')}`);
    return v;
  }
  if (key === 'trained_betas') {
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && x > 0 && x < 1)) throw bad('a list of numbers in (0, 1)');
    return v;
  }
  if (typeof def === 'boolean') {
    if (typeof v !== 'boolean') throw bad('true or false');
    return v;
  }
  if (key === 'variance_type') {
    if (typeof v !== 'string') throw bad('a string');
    return v;
  }
  if (typeof def === 'number' || NULLABLE.has(key)) {
    if (typeof v !== 'number' || Number.isNaN(v)) throw bad('a number');
    if (INTEGERS.has(key) && !(Number.isInteger(v) && v >= (key === 'steps_offset' ? 0 : 1))) throw bad('a positive integer');
    return v;
  }
  if (typeof v !== typeof def) throw bad(`a ${typeof def}`);
  return v;
}

// ---- numpy's float64 arithmetic, as diffusers' set_timesteps uses it ---------------------------

/** np.round / np.rint: round half to even (Math.round rounds half up). */
export function rint(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** np.linspace(start, stop, num): start + i·((stop−start)/(num−1)), the last value exactly stop. */
export function npLinspace(start: number, stop: number, num: number): number[] {
  if (num === 1) return [start];
  const step = (stop - start) / (num - 1);
  const y = Array.from({ length: num }, (_, i) => i * step + start);
  y[num - 1] = stop;
  return y;
}

/**
 * np.arange(start, stop, step) for floats: numpy fills start + i·(second − first). Its length
 * ceil((stop − start)/step) can be one too many when the quotient rounds up (1000/(1000/61) =
 * 61.000000000000007), which makes diffusers' "trailing" spacing yield n+1 timesteps ending at −1
 * for 62 values of n; `maxLength` keeps the first n, the ones diffusers means.
 */
export function npArange(start: number, stop: number, step: number, maxLength = Infinity): number[] {
  const n = Math.min(Math.max(Math.ceil((stop - start) / step), 0), maxLength);
  const delta = start + step - start;
  return Array.from({ length: n }, (_, i) => start + i * delta);
}

/** np.interp(x, arange(fp.length), fp) in float64. */
export function interpIndex(x: number, fp: ArrayLike<number>): number {
  const last = fp.length - 1;
  if (x <= 0) return fp[0];
  if (x >= last) return fp[last];
  const j = Math.floor(x);
  if (j === x) return fp[j];
  return (fp[j + 1] - fp[j]) * (x - j) + fp[j];
}

const bits = new DataView(new ArrayBuffer(4));
function f32FromBits(b: number): number {
  bits.setUint32(0, b);
  return bits.getFloat32(0);
}
function f32Bits(x: number): number {
  bits.setFloat32(0, x);
  return bits.getUint32(0);
}

/** The float32 fused multiply-add fmaf(a, b, c): a·b + c rounded once (a·b is exact in float64). */
export function fma32(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const r = f32(s);
  if (r === s) return r;
  // s is a float64 rounding of the exact sum; it rounds to float32 like the exact sum unless it
  // sits exactly halfway between two float32 values, where the TwoSum error decides.
  const bb = s - p;
  const err = p - (s - bb) + (c - bb);
  if (err === 0) return r;
  const other = f32FromBits(f32Bits(r) + ((s > r) === (r > 0) ? 1 : -1));
  if (Math.abs(s - r) !== Math.abs(other - s)) return r;
  return (err > 0) === (other > r) ? other : r;
}

// numpy's SIMD float32 log (`simd_log_FLOAT`, AVX2-FMA3 and AVX512F bodies of
// loops_exponent_log.dispatch.c.src, unchanged from 1.2x to 2.x): range reduction to a mantissa in
// (√½, √2], then ln2·e + P(x)/Q(x) with FMAs. Up to 3.8 ulp from the true log, so diffusers'
// `np.log(sigmas)` (float32) differs from a correctly rounded log in the last bits.
const LOG_P = [0, 0x3f800000, 0x4007361c, 0x3fbd70a9, 0x3ec30333, 0x3cd42bcd].map(f32FromBits);
const LOG_Q = [0x3f800000, 0x4027361c, 0x401cfe0d, 0x3f7c8ae4, 0x3e1e5bf3, 0x3bc083df].map(f32FromBits);
const SQRT1_2_F = f32FromBits(0x3f3504f3);
const LOGE2_F = f32FromBits(0x3f317218);

/** np.log of a float32 value, bit for bit as numpy computes it on x86-64 with AVX2 or AVX-512. */
export function npLogFloat32(x: number): number {
  if (Number.isNaN(x)) return NaN;
  if (x < 0) return NaN;
  if (x === 0) return -Infinity;
  if (x === Infinity) return Infinity;
  let v = f32(x);
  let shift = 0;
  if (v < 2 ** -126) {
    v = f32(v * 2 ** 100); // denormals: pre-scaled by 2^100
    shift = 100;
  }
  const b = f32Bits(v);
  let e = (b >>> 23) - 126 - shift;
  let m = f32FromBits((b & 0x7fffff) | (126 << 23)); // [0.5, 1)
  if (m <= SQRT1_2_F) {
    m = f32(m + m);
    e -= 1;
  }
  m = f32(m - 1);
  let num = fma32(LOG_P[5], m, LOG_P[4]);
  for (let i = 3; i >= 0; i--) num = fma32(num, m, LOG_P[i]);
  let den = fma32(LOG_Q[5], m, LOG_Q[4]);
  for (let i = 3; i >= 0; i--) den = fma32(den, m, LOG_Q[i]);
  return fma32(e, LOGE2_F, f32(num / den));
}

/**
 * Karras et al. 2022 (EDM) eq. 5 with ρ = 7: n sigmas from σ_max down to σ_min, spaced evenly in
 * σ^(1/ρ) (diffusers `_convert_to_karras`, k-diffusion `get_sigmas_karras` without the final 0).
 */
export function karrasSigmas(sigmaMin: number, sigmaMax: number, n: number, rho = 7): number[] {
  const minInv = sigmaMin ** (1 / rho);
  const maxInv = sigmaMax ** (1 / rho);
  return npLinspace(0, 1, n).map((r) => (maxInv + r * (minInv - maxInv)) ** rho);
}

/**
 * Integer timesteps of DDIMScheduler.set_timesteps (descending). "leading" with steps_offset 1 is
 * SD's default: 951, 901, …, 1 for 20 steps (§8.3).
 */
export function ddimTimesteps(spacing: TimestepSpacing, numTrain: number, n: number, stepsOffset: number): number[] {
  checkSteps(n, numTrain);
  switch (spacing) {
    case 'linspace':
      return npLinspace(0, numTrain - 1, n).map(rint).reverse();
    case 'leading': {
      const ratio = Math.floor(numTrain / n);
      return Array.from({ length: n }, (_, i) => (n - 1 - i) * ratio + stepsOffset);
    }
    case 'trailing':
      return npArange(numTrain, 0, -numTrain / n, n).map((t) => rint(t) - 1);
  }
}

/** Float timesteps of Euler(Ancestral)DiscreteScheduler.set_timesteps, as float32 values. */
export function eulerTimesteps(spacing: TimestepSpacing, numTrain: number, n: number, stepsOffset: number): number[] {
  checkSteps(n, numTrain);
  switch (spacing) {
    case 'linspace':
      return npLinspace(0, numTrain - 1, n).map(f32).reverse();
    case 'leading': {
      const ratio = Math.floor(numTrain / n);
      return Array.from({ length: n }, (_, i) => f32((n - 1 - i) * ratio) + stepsOffset);
    }
    case 'trailing':
      return npArange(numTrain, 0, -numTrain / n, n).map((t) => f32(rint(t)) - 1);
  }
}

/**
 * Integer timesteps of DPMSolverMultistepScheduler.set_timesteps: n+1 points, the last (t≈0)
 * dropped, so 20 "linspace" steps are 999, 949, …, 50. `lastTimestep` is num_train_timesteps
 * unless lambda_min_clipped cuts off the noisiest end.
 */
export function dpmTimesteps(spacing: TimestepSpacing, numTrain: number, lastTimestep: number, n: number, stepsOffset: number): number[] {
  checkSteps(n, numTrain);
  switch (spacing) {
    case 'linspace':
      return npLinspace(0, lastTimestep - 1, n + 1).map(rint).reverse().slice(0, n);
    case 'leading': {
      const ratio = Math.floor(lastTimestep / (n + 1));
      return Array.from({ length: n }, (_, i) => (n - i) * ratio + stepsOffset);
    }
    case 'trailing':
      return npArange(lastTimestep, 0, -numTrain / n, n).map((t) => rint(t) - 1);
  }
}

function checkSteps(n: number, numTrain: number): void {
  if (!Number.isInteger(n) || n < 1 || n > numTrain) {
    throw new RangeError(`the number of sampling steps must be an integer from 1 to ${numTrain} (the model's training timesteps), got ${n}`);
  }
}

// ---- the schedule --------------------------------------------------------------------------------

/**
 * β_t (float32). scaled_linear: linspace(√β₀, √β₁)² in float32, SD's schedule (§8.1); linear:
 * linspace(β₀, β₁); squaredcos_cap_v2: Nichol & Dhariwal's cosine ᾱ, computed in float64 with
 * float division (i/N: an integer division here zeroes the schedule) and capped at 0.999.
 * linspace runs in libtorch because its float32 kernel's rounding is what diffusers stored.
 */
export function makeBetas(cfg: ScheduleFields): Float32Array {
  const n = cfg.num_train_timesteps;
  let betas: Float32Array;
  if (cfg.trained_betas !== null) {
    betas = Float32Array.from(cfg.trained_betas);
  } else if (cfg.beta_schedule === 'squaredcos_cap_v2') {
    const alphaBar = (t: number) => Math.cos(((t + 0.008) / 1.008) * (Math.PI / 2)) ** 2;
    betas = Float32Array.from({ length: n }, (_, i) => Math.min(1 - alphaBar((i + 1) / n) / alphaBar(i / n), 0.999));
  } else {
    const scaled = cfg.beta_schedule === 'scaled_linear';
    betas = T.tidy(() => {
      const lin = scaled
        ? T.linspace(cfg.beta_start ** 0.5, cfg.beta_end ** 0.5, n, { dtype: 'float32' }).pow(2)
        : T.linspace(cfg.beta_start, cfg.beta_end, n, { dtype: 'float32' });
      return lin.toTypedArray() as Float32Array;
    });
  }
  return cfg.rescale_betas_zero_snr ? rescaleZeroTerminalSnr(betas) : betas;
}

/**
 * ᾱ_t = ∏_{s≤t} (1 − β_s). torch's CPU cumprod keeps its running product in double and rounds
 * each output to float32; a float32 running product drifts from diffusers' values.
 */
export function cumprodAlphas(betas: Float32Array): { alphas: Float32Array; alphasCumprod: Float32Array } {
  const alphas = betas.map((b) => f32(1 - b));
  const alphasCumprod = new Float32Array(alphas.length);
  let acc = 1;
  for (let i = 0; i < alphas.length; i++) alphasCumprod[i] = acc *= alphas[i];
  return { alphas, alphasCumprod };
}

/** diffusers `rescale_zero_terminal_snr` (Lin et al. 2023, Algorithm 1), in float32. */
export function rescaleZeroTerminalSnr(betas: Float32Array): Float32Array {
  const { alphasCumprod } = cumprodAlphas(betas);
  const s = alphasCumprod.map(Math.sqrt);
  const s0 = s[0];
  const sT = s[s.length - 1];
  const scale = f32(s0 / f32(s0 - sT));
  const bar = s.map((x) => f32(f32(f32(x - sT) * scale) ** 2));
  return bar.map((a, i) => f32(1 - (i === 0 ? a : f32(a / bar[i - 1]))));
}

/** σ_t = √((1 − ᾱ_t)/ᾱ_t) as diffusers computes it from float32 ᾱ (the k-diffusion noise level). */
export function sigmasFromAlphasCumprod(acp: Float32Array): Float32Array {
  return acp.map((a) => Math.sqrt(f32(f32(1 - a) / a)));
}

/**
 * One model's training noise schedule: betas, ᾱ and σ per training timestep, with the DDPM
 * training helpers (§8.2). Plain arrays: the samplers read scalars from it at every step.
 */
export class NoiseSchedule {
  readonly numTrainTimesteps: number;
  readonly alphas: Float32Array;
  readonly alphasCumprod: Float32Array;
  /** σ_t, ascending in t (σ_0 = 0.0292, σ_999 = 14.6146 for SD, §8.1). */
  readonly sigmas: Float32Array;
  /** np.log of the float32 σ_t (numpy's float32 kernel, npLogFloat32), as `_sigma_to_t` reads them. */
  readonly logSigmas: Float32Array;

  constructor(
    readonly betas: Float32Array,
    opts: { terminalAlphaCumprod?: number } = {},
  ) {
    this.numTrainTimesteps = betas.length;
    const { alphas, alphasCumprod } = cumprodAlphas(betas);
    // Euler with rescale_betas_zero_snr sets ᾱ_T = 2⁻²⁴ so that σ_T stays finite.
    if (opts.terminalAlphaCumprod !== undefined) alphasCumprod[alphasCumprod.length - 1] = opts.terminalAlphaCumprod;
    this.alphas = alphas;
    this.alphasCumprod = alphasCumprod;
    this.sigmas = sigmasFromAlphasCumprod(alphasCumprod);
    this.logSigmas = this.sigmas.map(npLogFloat32);
  }

  static fromConfig(cfg: ScheduleFields, opts: { terminalAlphaCumprod?: number } = {}): NoiseSchedule {
    return new NoiseSchedule(makeBetas(cfg), opts);
  }

  /** ᾱ_t for an integer training timestep. */
  alphaCumprod(t: number): number {
    const a = this.alphasCumprod[t];
    if (!Number.isInteger(t) || a === undefined) throw new RangeError(`timestep ${t} is not an integer in [0, ${this.numTrainTimesteps})`);
    return a;
  }

  /** SNR_t = ᾱ_t/(1 − ᾱ_t) = 1/σ_t² (diffusers `compute_snr`; SNR_0 = 1175.4 for SD, §8.1). */
  snr(t: number): number {
    const a = this.alphaCumprod(t);
    return a / (1 - a);
  }

  /**
   * σ → fractional timestep by linear interpolation of log σ between the two neighbouring training
   * timesteps (diffusers `_sigma_to_t`, k-diffusion `DiscreteSchedule.sigma_to_t`, §8.3); clamped
   * to [0, T−1]. Written as numpy 1.24 evaluates diffusers' expression: the float64 log σ meets
   * float32 arrays, so value-based casting rounds it and the weight to float32 (NumPy 2's rules
   * give other last bits, and the fixtures' Karras timesteps are exact float32 values).
   */
  sigmaToT(sigma: number): number {
    const ls = this.logSigmas;
    const logSigma = f32(Math.log(Math.max(sigma, 1e-10)));
    let low = 0;
    while (low + 1 < ls.length && ls[low + 1] <= logSigma) low++;
    low = Math.min(low, ls.length - 2);
    let w = f32(f32(ls[low] - logSigma) / f32(ls[low] - ls[low + 1]));
    w = Math.min(Math.max(w, 0), 1);
    return f32(1 - w) * low + w * (low + 1);
  }

  /**
   * x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε per batch element (diffusers `DDPMScheduler.add_noise`, §8.2 step 2).
   * `timesteps` has one integer per batch element.
   */
  addNoise(x0: T.Tensor, noise: T.Tensor, timesteps: T.Tensor | readonly number[]): T.Tensor {
    return T.tidy(() => {
      const [a, b] = this.coefficients(x0, timesteps);
      return x0.mul(a).add(noise.mul(b));
    });
  }

  /** The v-prediction target v = √ᾱ_t·ε − √(1−ᾱ_t)·x₀ (diffusers `get_velocity`, §8.2 step 3). */
  getVelocity(x0: T.Tensor, noise: T.Tensor, timesteps: T.Tensor | readonly number[]): T.Tensor {
    return T.tidy(() => {
      const [a, b] = this.coefficients(x0, timesteps);
      return noise.mul(a).sub(x0.mul(b));
    });
  }

  /** [√ᾱ_t, √(1−ᾱ_t)] gathered per element and shaped [B, 1, …] for broadcasting, in x's dtype. */
  private coefficients(x: T.Tensor, timesteps: T.Tensor | readonly number[]): [T.Tensor, T.Tensor] {
    const device = x.device;
    const ts = timesteps instanceof T.Tensor ? timesteps.to('int64').to(device) : T.tensor(timesteps as number[], { dtype: 'int64', device });
    const acp = T.tensor(this.alphasCumprod, { dtype: 'float32', device }).to(x.dtype);
    const a = acp.indexSelect(0, ts.flatten());
    const shape = [a.size(0), ...Array<number>(x.ndim - 1).fill(1)];
    return [a.pow(0.5).reshape(...shape), a.rsub(1).pow(0.5).reshape(...shape)];
  }
}

/**
 * Min-SNR-γ loss weight of one sample (Hang et al. 2023; diffusers train_text_to_image and kohya
 * agree, §8.2): min(SNR, γ)/SNR for ε-prediction, min(SNR, γ)/(SNR + 1) for v-prediction.
 */
export function minSnrWeight(snr: number, gamma: number, predictionType: PredictionType): number {
  const m = Math.min(snr, gamma);
  if (predictionType === 'epsilon') return m / snr;
  if (predictionType === 'v_prediction') return m / (snr + 1);
  throw new Error(`min-SNR weighting is defined for epsilon and v_prediction models, not ${predictionType}`);
}
