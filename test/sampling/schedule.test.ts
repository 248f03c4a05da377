// The noise schedule (sd-formats.md §8.1), the training helpers (§8.2), the timestep arithmetic and
// config parsing, against fixtures/schedulers (README §5) and closed forms (STYLE rule 11).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as T from '../../src/torch/index.ts';
import {
  NoiseSchedule,
  SchedulerConfigError,
  ddimTimesteps,
  dpmTimesteps,
  eulerTimesteps,
  f32,
  fma32,
  karrasSigmas,
  makeBetas,
  minSnrWeight,
  npArange,
  npLinspace,
  npLogFloat32,
  parseSchedulerConfig,
  rescaleZeroTerminalSnr,
  rint,
  type ConfigKind,
} from '../../src/sampling/schedule.ts';
import { assertEachRel, assertRel, ref, refArray, schedulersJson } from './fixtures.ts';

const noiseJson = schedulersJson('sd1_noise_schedule.json');
const schedJson = schedulersJson('timesteps_sigmas_20.json');
const SD1_CONFIG: Record<string, unknown> = noiseJson.config;
const sd1 = NoiseSchedule.fromConfig(parseSchedulerConfig(SD1_CONFIG, 'ddpm'));

describe('SD1 noise schedule (§8.1)', () => {
  test('betas and alphas_cumprod equal diffusers float32 values bit for bit', () => {
    const want = noiseJson.diffusers_DDPMScheduler_float32;
    assert.deepEqual([...sd1.betas], want.betas);
    assert.deepEqual([...sd1.alphasCumprod], want.alphas_cumprod);
    assert.deepEqual([...sd1.betas], refArray('betas'));
    assert.deepEqual([...sd1.alphas], refArray('alphas'));
    assert.deepEqual([...sd1.alphasCumprod], refArray('alphas_cumprod'));
  });

  test('LDM float64 alphas_cumprod disagree by < 4.7e-7 (rtol 1e-6 holds)', () => {
    const own: number[] = noiseJson.float64_own_computation.alphas_cumprod;
    let d = 0;
    for (let i = 0; i < own.length; i++) d = Math.max(d, Math.abs(sd1.alphasCumprod[i] - own[i]));
    assert.ok(Math.abs(d - noiseJson.max_abs_diff_f32_vs_f64_alphas_cumprod) < 1e-9, `max diff ${d}`);
    assertEachRel(sd1.alphasCumprod, refArray('alphas_cumprod_float64_own'), 1e-6, 'alphas_cumprod vs float64');
  });

  test('sigmas = √((1−ᾱ)/ᾱ) as diffusers computes them in float32', () => {
    assert.deepEqual([...sd1.sigmas], noiseJson['sigmas_from_alphas_cumprod_f32 ((1-acp)/acp)**0.5']);
  });

  test('the reference values of §8.1', () => {
    // §8.1 prints values of the float64 (LDM) computation to 8 digits; diffusers' float32 ᾱ is
    // within 4.8e-7 of them (§8.1), σ and SNR within the printed digits.
    const near = (x: number, want: number, atol: number, what: string) => assert.ok(Math.abs(x - want) <= atol, `${what}: ${x} vs ${want}`);
    near(sd1.alphasCumprod[0], 0.99914998, 5e-7, 'ᾱ_0');
    near(sd1.alphasCumprod[500], 0.27633268, 5e-7, 'ᾱ_500');
    near(sd1.alphasCumprod[999], 0.0046601, 5e-7, 'ᾱ_999');
    near(sd1.sigmas[0], 0.0291675, 5e-8, 'σ_0');
    near(sd1.sigmas[999], 14.614642, 5e-6, 'σ_999');
    near(sd1.snr(0), 1175.44, 5e-3, 'SNR_0');
    near(sd1.snr(999), 0.004682, 5e-7, 'SNR_999');
  });
});

describe('other beta schedules (pure maths)', () => {
  const base = { num_train_timesteps: 1000, beta_start: 0.0001, beta_end: 0.02, trained_betas: null, rescale_betas_zero_snr: false } as const;

  test('linear: evenly spaced from beta_start to beta_end', () => {
    const b = makeBetas({ ...base, beta_schedule: 'linear' });
    assert.equal(b[0], f32(0.0001));
    assert.equal(b[999], f32(0.02));
    assertEachRel([b[500] - b[499], b[1] - b[0]], [0.0199 / 999, 0.0199 / 999], 1e-3, 'spacing');
  });

  test('squaredcos_cap_v2: Nichol & Dhariwal cosine ᾱ with float division, capped at 0.999', () => {
    const b = makeBetas({ ...base, beta_schedule: 'squaredcos_cap_v2' });
    const alphaBar = (t: number) => Math.cos(((t + 0.008) / 1.008) * (Math.PI / 2)) ** 2;
    // Values from Python's float64 evaluation (an integer i/N would make every β 0 or 0.999).
    assert.equal(b[0], f32(4.128422369831242e-5));
    assert.equal(b[500], f32(0.003155691549181938));
    assert.equal(b[998], f32(0.7499993929011166));
    assert.equal(b[999], f32(0.999));
    for (const i of [1, 250, 900]) assertEachRel([b[i]], [1 - alphaBar((i + 1) / 1000) / alphaBar(i / 1000)], 1e-6, `β_${i}`);
    const s = new NoiseSchedule(b);
    for (let i = 1; i < 1000; i++) assert.ok(s.alphasCumprod[i] < s.alphasCumprod[i - 1], `ᾱ decreases at ${i}`);
  });

  test('trained_betas replace the schedule', () => {
    const betas = Array.from({ length: 4 }, (_, i) => 0.1 * (i + 1));
    const b = makeBetas({ ...base, num_train_timesteps: 4, beta_schedule: 'linear', trained_betas: betas });
    assert.deepEqual([...b], betas.map(f32));
  });

  test('rescale_betas_zero_snr: terminal SNR 0, ᾱ_0 kept (Lin et al. 2023)', () => {
    const cfg = { ...base, beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear' } as const;
    const before = NoiseSchedule.fromConfig(cfg);
    const after = new NoiseSchedule(rescaleZeroTerminalSnr(before.betas));
    assert.ok(Math.abs(after.alphasCumprod[999]) < 1e-12, `ᾱ_T = ${after.alphasCumprod[999]}`);
    assert.equal(after.snr(999), after.alphasCumprod[999] / (1 - after.alphasCumprod[999]));
    assertEachRel([after.alphasCumprod[0]], [before.alphasCumprod[0]], 1e-6, 'ᾱ_0');
    assert.ok(after.alphasCumprod[500] < before.alphasCumprod[500]);
    assert.deepEqual(NoiseSchedule.fromConfig({ ...cfg, rescale_betas_zero_snr: true }).betas, after.betas);
  });
});

describe('training helpers (§8.2)', () => {
  test('addNoise equals DDPMScheduler.add_noise (timesteps as a tensor or numbers)', () => {
    T.tidy(() => {
      const x0 = ref('add_noise.original_samples');
      const noise = ref('add_noise.noise');
      const ts = ref('add_noise.timesteps');
      assert.deepEqual(ts.toArray(), [0, 250, 500, 999]);
      const want = ref('add_noise.noisy');
      assertRel(sd1.addNoise(x0, noise, ts), want, 1e-6, 'add_noise (tensor t)');
      assertRel(sd1.addNoise(x0, noise, [0, 250, 500, 999]), want, 1e-6, 'add_noise (number t)');
    });
  });

  test('getVelocity equals DDPMScheduler.get_velocity: v = √ᾱ·ε − √(1−ᾱ)·x₀', () => {
    T.tidy(() => {
      const x0 = ref('add_noise.original_samples');
      const noise = ref('add_noise.noise');
      const v = sd1.getVelocity(x0, noise, ref('add_noise.timesteps'));
      assertRel(v, ref('get_velocity.v_target'), 1e-6, 'v_target');
      // Closed form for one sample (t = 500).
      const a = sd1.alphaCumprod(500);
      const want = noise.select(0, 2).mul(Math.sqrt(a)).sub(x0.select(0, 2).mul(Math.sqrt(1 - a)));
      assertRel(v.select(0, 2), want, 1e-6, 'closed form');
    });
  });

  test('the helpers free their temporaries', () => {
    T.tidy(() => {
      const x0 = ref('add_noise.original_samples');
      const noise = ref('add_noise.noise');
      const before = T.memoryStats().live;
      sd1.addNoise(x0, noise, [1, 2, 3, 4]).dispose();
      sd1.getVelocity(x0, noise, [1, 2, 3, 4]).dispose();
      assert.equal(T.memoryStats().live, before);
    });
  });

  test('SNR closed form: ᾱ/(1−ᾱ) = 1/σ²', () => {
    for (const t of [0, 1, 250, 500, 998, 999]) {
      const a = sd1.alphasCumprod[t];
      assertEachRel([sd1.snr(t)], [a / (1 - a)], 1e-12, `SNR_${t}`);
      assertEachRel([sd1.snr(t)], [1 / sd1.sigmas[t] ** 2], 1e-6, `1/σ²_${t}`);
    }
    assert.throws(() => sd1.snr(1000), /timestep 1000/);
    assert.throws(() => sd1.snr(2.5), /not an integer/);
  });

  test('min-SNR-γ weights (γ = 5)', () => {
    const hi = sd1.snr(0);
    const lo = sd1.snr(999);
    assertEachRel([minSnrWeight(hi, 5, 'epsilon')], [5 / hi], 1e-12, 'ε, high SNR');
    assert.equal(minSnrWeight(lo, 5, 'epsilon'), 1);
    assertEachRel([minSnrWeight(hi, 5, 'v_prediction')], [5 / (hi + 1)], 1e-12, 'v, high SNR');
    assertEachRel([minSnrWeight(lo, 5, 'v_prediction')], [lo / (lo + 1)], 1e-12, 'v, low SNR');
    assert.throws(() => minSnrWeight(1, 5, 'sample'), /epsilon and v_prediction/);
  });
});

describe('numpy arithmetic behind set_timesteps', () => {
  test('rint rounds half to even like np.round', () => {
    assert.deepEqual([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, 2.4999, 49.95].map(rint), [0, 2, 2, 4, -0, -2, 2, 50]);
  });

  test('npLinspace and npArange', () => {
    assert.deepEqual(npLinspace(0, 1, 5), [0, 0.25, 0.5, 0.75, 1]);
    assert.deepEqual(npLinspace(3, 9, 1), [3]);
    assert.deepEqual(npArange(1000, 0, -250), [1000, 750, 500, 250]);
    // np.arange(1000, 0, -1000/61) has 62 values (the last rounds to −0); keep n.
    assert.equal(npArange(1000, 0, -1000 / 61).length, 62);
    assert.equal(npArange(1000, 0, -1000 / 61, 61).length, 61);
  });

  test('DDIM, Euler and DPM timesteps for each spacing', () => {
    const v = schedJson.ddim_timestep_spacing_variants;
    assert.deepEqual(ddimTimesteps('leading', 1000, 20, 1), v.leading);
    assert.deepEqual(ddimTimesteps('trailing', 1000, 20, 1), v.trailing);
    assert.deepEqual(ddimTimesteps('linspace', 1000, 20, 1), v.linspace);
    const trailing61 = ddimTimesteps('trailing', 1000, 61, 0);
    assert.equal(trailing61.length, 61);
    assert.equal(trailing61[60], 15);
    assert.deepEqual(eulerTimesteps('linspace', 1000, 20, 1), schedJson.schedulers.euler.timesteps);
    assert.deepEqual(eulerTimesteps('leading', 1000, 4, 1), [751, 501, 251, 1]);
    assert.deepEqual(eulerTimesteps('trailing', 1000, 4, 1), [999, 749, 499, 249]);
    assert.deepEqual(dpmTimesteps('linspace', 1000, 1000, 20, 1), schedJson.schedulers.dpmpp_2m.timesteps);
    assert.deepEqual(dpmTimesteps('leading', 1000, 1000, 3, 1), [751, 501, 251]);
    assert.deepEqual(dpmTimesteps('trailing', 1000, 1000, 4, 1), [999, 749, 499, 249]);
    assert.throws(() => ddimTimesteps('leading', 1000, 0, 1), /from 1 to 1000/);
    assert.throws(() => eulerTimesteps('linspace', 1000, 1001, 1), /from 1 to 1000/);
  });

  test('Karras sigmas match §8.3 for 20 steps', () => {
    const s = karrasSigmas(sd1.sigmas[0], sd1.sigmas[999], 20);
    const want = [14.6146, 11.7254, 9.3402, 7.3836, 5.7894, 4.4998, 3.4648, 2.6408, 1.9909, 1.4832, 1.0908, 0.7909, 0.5647, 0.3964, 0.273, 0.1842, 0.1213, 0.0779, 0.0485, 0.0292];
    // §8.3 prints 4 decimals.
    s.forEach((x, i) => assert.ok(Math.abs(x - want[i]) <= 5e-5, `σ_${i}: ${x} vs ${want[i]}`));
    assert.equal(f32(s[0]), sd1.sigmas[999]);
  });

  test('npLogFloat32 is numpy float32 log: within 4 ulp of the true log, exact at 1 and 2', () => {
    assert.equal(npLogFloat32(1), 0);
    assert.equal(npLogFloat32(2), f32(Math.LN2));
    assert.equal(npLogFloat32(0), -Infinity);
    assert.ok(Number.isNaN(npLogFloat32(-1)));
    for (let x = 1e-3; x < 1e3; x *= 1.37) {
      const v = f32(x);
      const got = npLogFloat32(v);
      const ulp = 2 ** (Math.floor(Math.log2(Math.abs(Math.log(v)))) - 23);
      assert.ok(Math.abs(got - Math.log(v)) <= 4 * ulp, `log(${v}): ${got} vs ${Math.log(v)}`);
    }
    // With a correctly rounded log some log σ_t change in the last bit, which moves the Euler
    // Karras timesteps (stored exactly) by an ulp; numpy's kernel reproduces them.
    const ks = karrasSigmas(sd1.sigmas[0], sd1.sigmas[999], 20);
    assert.deepEqual(ks.map((s) => f32(sd1.sigmaToT(s))), schedJson.schedulers.euler_karras.timesteps);
  });

  test('fma32 rounds once', () => {
    // 1 + 2^-24 is a float32 tie: a·b + c with a tiny positive extra must round up.
    const a = f32(1 + 2 ** -23);
    const b = f32(1 + 2 ** -23); // a·b = 1 + 2^-22 + 2^-46
    assert.equal(fma32(a, b, -1), f32(2 ** -22 + 2 ** -46));
    assert.equal(fma32(f32(2 ** -12), f32(2 ** -12), 1), 1); // 1 + 2^-24: tie to even
    assert.equal(fma32(f32(2 ** -12 + 2 ** -23), f32(2 ** -12), 1), f32(1 + 2 ** -23)); // just above the tie
  });

  test('sigmaToT inverts the discrete sigmas and clamps', () => {
    for (const t of [0, 1, 100, 500, 998, 999]) assertEachRel([sd1.sigmaToT(sd1.sigmas[t])], [t], 1e-5, `t(σ_${t})`);
    assert.equal(sd1.sigmaToT(1e-6), 0);
    assert.equal(sd1.sigmaToT(100), 999);
    const mid = sd1.sigmaToT(Math.sqrt(sd1.sigmas[400] * sd1.sigmas[401]));
    assert.ok(Math.abs(mid - 400.5) < 1e-3, `log-midpoint → ${mid}`);
  });
});

describe('parseSchedulerConfig (diffusers from_config)', () => {
  const KINDS: Record<string, ConfigKind> = {
    ddim: 'ddim',
    euler: 'euler',
    euler_karras: 'euler',
    euler_ancestral: 'euler_a',
    dpmpp_2m: 'dpmpp_2m',
  };

  test('from the SD1 PNDM config: the full configs diffusers stored, _use_default_values included', () => {
    for (const [variant, kind] of Object.entries(KINDS)) {
      const want = schedJson.schedulers[variant].config;
      const overrides = variant === 'euler_karras' ? { use_karras_sigmas: true } : {};
      const got: Record<string, unknown> = { ...parseSchedulerConfig({ ...SD1_CONFIG, ...overrides }, kind) };
      delete got.kind;
      const defaulted = got._use_default_values as string[];
      delete got._use_default_values;
      for (const [k, v] of Object.entries(got)) {
        if (k in want) assert.deepEqual(v, want[k], `${variant}.${k}`);
        else assert.deepEqual([kind, k, v], ['dpmpp_2m', 'rescale_betas_zero_snr', false], 'a key diffusers lacks');
      }
      // Every key of diffusers' class that we model is there, and the defaulted ones agree.
      const modelled = Object.keys(want).filter((k) => !k.startsWith('_') && k in got);
      assert.deepEqual(modelled.sort(), Object.keys(got).filter((k) => k in want).sort());
      assert.deepEqual(defaulted.sort(), want._use_default_values.filter((k: string) => k in got).sort(), `${variant} defaults`);
    }
  });

  test('missing keys take each class default; unknown keys and _class_name are ignored', () => {
    const ddim = parseSchedulerConfig({ _class_name: 'LMSDiscreteScheduler', foo: 1 }, 'ddim');
    assert.equal(ddim.beta_schedule, 'linear');
    assert.equal(ddim.beta_start, 0.0001);
    assert.equal(ddim.clip_sample, true);
    assert.equal(ddim.set_alpha_to_one, true);
    assert.equal(ddim.steps_offset, 0);
    assert.equal(ddim.timestep_spacing, 'leading');
    assert.ok(!('foo' in ddim));
    const euler = parseSchedulerConfig({}, 'euler');
    assert.equal(euler.timestep_spacing, 'linspace');
    assert.equal(euler.use_karras_sigmas, false);
    assert.equal(euler.sigma_min, null);
    // DPMSolverMultistepScheduler 0.25 has no rescale_betas_zero_snr: carried for from_config, unused.
    const dpm = parseSchedulerConfig({ rescale_betas_zero_snr: true }, 'dpmpp_2m');
    assert.equal(dpm.rescale_betas_zero_snr, true);
    assert.ok(!dpm._use_default_values.includes('rescale_betas_zero_snr'));
    assert.equal(parseSchedulerConfig(dpm, 'euler').rescale_betas_zero_snr, true);
    assert.equal(dpm.lambda_min_clipped, -Infinity);
    assert.equal(dpm.solver_order, 2);
    assert.equal(parseSchedulerConfig({ timestep_spacing: null }, 'ddim').timestep_spacing, 'leading');
  });

  test('a parsed config converts to another kind as from_config(other.config) does', () => {
    const ddim = parseSchedulerConfig(SD1_CONFIG, 'ddim');
    const euler = parseSchedulerConfig(ddim, 'euler');
    assert.equal(euler.timestep_spacing, 'linspace', "DDIM's defaulted spacing is not carried over");
    assert.equal(euler.steps_offset, 1);
    assert.equal(euler.beta_schedule, 'scaled_linear');
    const explicit = parseSchedulerConfig({ ...SD1_CONFIG, timestep_spacing: 'trailing' }, 'ddim');
    assert.equal(parseSchedulerConfig(explicit, 'euler').timestep_spacing, 'trailing');
  });

  test('JSON text as Python writes it (bare -Infinity)', () => {
    const text = '{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity, "note": "a: -Infinity, b", "solver_order": 3}';
    const c = parseSchedulerConfig(text, 'dpmpp_2m');
    assert.equal(c.lambda_min_clipped, -Infinity);
    assert.equal(c.solver_order, 3);
  });

  test('wrong values are refused with the key and the file named', () => {
    assert.throws(() => parseSchedulerConfig({ beta_schedule: 'cosine' }, 'ddim', 'model/scheduler/scheduler_config.json'), (e: Error) => {
      assert.ok(e instanceof SchedulerConfigError);
      assert.match(e.message, /^model\/scheduler\/scheduler_config\.json: beta_schedule should be one of "linear", "scaled_linear", "squaredcos_cap_v2", got "cosine"/);
      return true;
    });
    assert.throws(() => parseSchedulerConfig({ num_train_timesteps: 10.5 }, 'euler'), /num_train_timesteps should be a positive integer/);
    assert.throws(() => parseSchedulerConfig({ clip_sample: 'no' }, 'ddim'), /clip_sample should be true or false/);
    assert.throws(() => parseSchedulerConfig({ trained_betas: [0.1, 0.2], num_train_timesteps: 3 }, 'ddpm'), /trained_betas has 2 values/);
    assert.throws(() => parseSchedulerConfig('{"beta_start": ', 'ddim'), /is not valid JSON/);
    assert.throws(() => parseSchedulerConfig([1, 2], 'ddim'), /JSON object/);
  });
});
