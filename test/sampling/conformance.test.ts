// One conformance suite run over every sampler variant in the fixtures (STYLE rule 5; fixtures
// README §5): timesteps, sigmas, scaling, single steps fed the recorded model outputs, and whole
// 20-step runs of the fake model, all against diffusers 0.25.0.
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as T from '../../src/torch/index.ts';
import { makeScheduler, sampleLoop, type MakeSchedulerOptions, type Scheduler, type SchedulerName } from '../../src/sampling/schedulers.ts';
import { assertEachRel, assertRel, fakeModel, hasRef, ref, refArray, schedulersJson } from './fixtures.ts';

// Tolerances from the fixtures README "Observed tolerances".
const RTOL_SIGMAS = 1e-6; // sigmas, ᾱ, per-step scale factors
const RTOL_STEP = 1e-5; // one step from recorded inputs
const RTOL_LOOP = 1e-4; // 20 compounded steps

const schedJson = schedulersJson('timesteps_sigmas_20.json');
const trajJson = schedulersJson('trajectories.json');
const SD1_CONFIG: Record<string, unknown> = schedulersJson('sd1_noise_schedule.json').config;
const STEPS: number = schedJson.num_inference_steps;

/** Fixture variant → our sampler name, options and config (the SD1 PNDM config, as pipelines use it). */
const VARIANTS: Record<string, { name: SchedulerName; opts: MakeSchedulerOptions; config: Record<string, unknown> }> = {
  ddim: { name: 'ddim', opts: {}, config: SD1_CONFIG },
  euler: { name: 'euler', opts: {}, config: SD1_CONFIG },
  euler_karras: { name: 'euler', opts: { karras: true }, config: SD1_CONFIG },
  euler_ancestral: { name: 'euler_a', opts: {}, config: SD1_CONFIG },
  dpmpp_2m: { name: 'dpmpp_2m', opts: {}, config: SD1_CONFIG },
  dpmpp_2m_karras: { name: 'dpmpp_2m', opts: { karras: true }, config: SD1_CONFIG },
  ddim_vpred: { name: 'ddim', opts: {}, config: { ...SD1_CONFIG, prediction_type: 'v_prediction' } },
  euler_vpred: { name: 'euler', opts: {}, config: { ...SD1_CONFIG, prediction_type: 'v_prediction' } },
};

test('the suite covers every scheduler in the fixtures', () => {
  assert.deepEqual(Object.keys(VARIANTS).sort(), Object.keys(schedJson.schedulers).sort());
  assert.deepEqual(Object.keys(VARIANTS).sort(), Object.keys(trajJson.runs).sort());
});

const xT = T.keep(ref('trajectory.x_T'));
const pattern = T.keep(ref('trajectory.pattern'));
after(() => {
  xT.dispose();
  pattern.dispose();
});

for (const [variant, v] of Object.entries(VARIANTS)) {
  describe(`scheduler conformance: ${variant}`, () => {
    const expected = schedJson.schedulers[variant];
    const run = trajJson.runs[variant];
    const make = (): Scheduler => {
      const s = makeScheduler(v.name, v.config, v.opts);
      s.setTimesteps(STEPS);
      return s;
    };
    const key = (i: number, what: string) => `trajectory.${variant}.step_${String(i).padStart(2, '0')}.${what}`;

    test('timesteps are exact (JSON and safetensors)', () => {
      const s = make();
      assert.deepEqual([...s.timesteps], expected.timesteps);
      assert.deepEqual([...s.timesteps], refArray(`${variant}.timesteps`));
      assert.deepEqual(run.steps.map((st: { t: number }) => st.t), [...s.timesteps]);
    });

    test(`sigmas (rtol ${RTOL_SIGMAS}) and init_noise_sigma`, () => {
      const s = make();
      if (expected.sigmas === undefined) {
        assert.equal(s.sigmas, null, 'DDIM has no sigmas');
        assert.equal(hasRef(`${variant}.sigmas`), false);
      } else {
        assertEachRel(s.sigmas!, expected.sigmas, RTOL_SIGMAS, 'sigmas');
        assertEachRel(s.sigmas!, refArray(`${variant}.sigmas`), RTOL_SIGMAS, 'sigmas (safetensors)');
      }
      assertEachRel([s.initNoiseSigma], [expected.init_noise_sigma], RTOL_SIGMAS, 'init_noise_sigma');
    });

    test(`scale_model_input factor per step (rtol ${RTOL_SIGMAS})`, () => {
      const s = make();
      const factors = s.timesteps.map((_, i) => s.modelInputScale(i));
      assertEachRel(factors, run.steps.map((st: { scale_model_input_factor: number }) => st.scale_model_input_factor), RTOL_SIGMAS, 'factor');
    });

    test(`each step from the recorded model output (rtol ${RTOL_STEP} per step)`, (t) => {
      const s = make();
      let worst = 0;
      let latents = T.tidy(() => xT.mul(s.initNoiseSigma));
      try {
        for (let i = 0; i < STEPS; i++) {
          const cur = latents;
          const errs = T.tidy(() => {
            const input = s.scaleModelInput(cur, i);
            const eIn = assertRel(input, ref(key(i, 'model_input')), RTOL_STEP, `step ${i} model_input`);
            const noise = hasRef(key(i, 'noise')) ? ref(key(i, 'noise')) : undefined;
            const prev = s.step(ref(key(i, 'model_output')), i, cur, { noise });
            const eOut = assertRel(prev, ref(key(i, 'prev_sample')), RTOL_STEP, `step ${i} prev_sample`);
            return [eIn, eOut];
          });
          worst = Math.max(worst, ...errs);
          // The next step starts from diffusers' own prev_sample, so errors do not compound.
          latents = ref(key(i, 'prev_sample'));
          cur.dispose();
        }
      } finally {
        latents.dispose();
        s.dispose();
      }
      t.diagnostic(`${variant}: worst per-step relative error ${worst.toExponential(2)}`);
    });

    test(`the whole ${STEPS}-step loop with the fake model (rtol ${RTOL_LOOP}) leaks no tensors per step`, (t) => {
      const s = make();
      const model = fakeModel(pattern);
      const live: number[] = [];
      // Euler a: step i's noise comes from torch.Generator().manual_seed(1000 + i), drawn here as
      // diffusers' randn_tensor does; the fixture checks those draws separately.
      const noiseAt = s.stochastic ? (i: number) => T.randn(xT.shape, { generator: new T.Generator(1000 + i) }) : undefined;
      const final = sampleLoop(s, xT, model, { noiseAt, onStep: () => live.push(T.memoryStats().live) });
      try {
        const err = assertRel(final, ref(`trajectory.${variant}.final`), RTOL_LOOP, 'final latents');
        assertRel(final, ref(key(STEPS - 1, 'prev_sample')), RTOL_LOOP, 'last prev_sample');
        t.diagnostic(`${variant}: final relative error ${err.toExponential(2)}`);
      } finally {
        final.dispose();
        s.dispose();
      }
      // Allow the first step to create the multistep history; after that the count is flat.
      assert.equal(live.length, STEPS);
      assert.deepEqual(live.slice(1), Array(STEPS - 1).fill(live[1]), `live tensors per step: ${live.join(' ')}`);
    });

    test('img2img: timestepsForStrength and addNoise at the start step', () => {
      const s = makeScheduler(v.name, v.config, v.opts);
      const { startIndex, timesteps } = s.timestepsForStrength(STEPS, 0.75);
      // diffusers: init_timestep = int(20·0.75) = 15, t_start = 5.
      assert.equal(startIndex, 5);
      assert.deepEqual(timesteps, expected.timesteps.slice(5));
      T.tidy(() => {
        const x0 = pattern;
        const noisy = s.addNoise(x0, xT, startIndex);
        const sig = s.sigmas;
        let want: T.Tensor;
        if (v.name === 'ddim') {
          const a = s.schedule.alphaCumprod(timesteps[0]);
          want = x0.mul(Math.sqrt(a)).add(xT.mul(Math.sqrt(1 - a)));
        } else if (v.name === 'dpmpp_2m') {
          const a = 1 / Math.sqrt(sig![startIndex] ** 2 + 1);
          want = x0.mul(a).add(xT.mul(sig![startIndex] * a));
        } else {
          want = x0.add(xT.mul(sig![startIndex]));
        }
        assertRel(noisy, want, 1e-6, 'noised latents');
      });
      assert.throws(() => s.timestepsForStrength(STEPS, 0.01), /no denoising step/);
      assert.throws(() => s.timestepsForStrength(STEPS, 1.5), /strength/);
      s.dispose();
    });
  });
}

describe('scheduler-specific behaviour', () => {
  test('Euler a: Generator(1000+i) draws exactly the noise diffusers recorded', () => {
    const s = makeScheduler('euler_a', SD1_CONFIG);
    s.setTimesteps(STEPS);
    for (const i of [0, 7, 19]) {
      T.tidy(() => {
        const k = `trajectory.euler_ancestral.step_${String(i).padStart(2, '0')}`;
        const latents = i === 0 ? xT.mul(s.initNoiseSigma) : ref(`trajectory.euler_ancestral.step_${String(i - 1).padStart(2, '0')}.prev_sample`);
        const viaGenerator = s.step(ref(`${k}.model_output`), i, latents, { generator: new T.Generator(1000 + i) });
        const viaNoise = s.step(ref(`${k}.model_output`), i, latents, { noise: ref(`${k}.noise`) });
        assert.deepEqual(viaGenerator.toArray(), viaNoise.toArray());
      });
    }
  });

  test('DDIM timesteps for leading, trailing and linspace spacing', () => {
    for (const [spacing, want] of Object.entries(schedJson.ddim_timestep_spacing_variants)) {
      const s = makeScheduler('ddim', { ...SD1_CONFIG, timestep_spacing: spacing });
      s.setTimesteps(STEPS);
      assert.deepEqual([...s.timesteps], want, spacing);
    }
    // §8.3: leading with offset 1 for 50 steps is 981, …, 21, 1.
    const s = makeScheduler('ddim', SD1_CONFIG);
    s.setTimesteps(50);
    assert.equal(s.timesteps[0], 981);
    assert.equal(s.timesteps[48], 21);
    assert.equal(s.timesteps[49], 1);
  });

  test('DDIM with η > 0: adds σ_t·z to the η = 0 step, reproducibly from a generator', () => {
    const eta = 0.7;
    const det = makeScheduler('ddim', SD1_CONFIG);
    const sto = makeScheduler('ddim', SD1_CONFIG, { eta });
    assert.equal(sto.stochastic, true);
    det.setTimesteps(STEPS);
    sto.setTimesteps(STEPS);
    const i = 3;
    const t = det.timesteps[i];
    const aT = det.schedule.alphaCumprod(t);
    const aPrev = det.schedule.alphaCumprod(t - 50);
    // §8.3: σ_t = η·√((1−ᾱ_prev)/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_prev), and the ε̂ direction shrinks to √(1−ᾱ_prev−σ_t²).
    const sigmaT = eta * Math.sqrt((1 - aPrev) / (1 - aT)) * Math.sqrt(1 - aT / aPrev);
    T.tidy(() => {
      const eps = ref('trajectory.ddim.step_03.model_output');
      const x = ref('trajectory.ddim.step_02.prev_sample');
      const z = T.randn(x.shape, { generator: new T.Generator(7) });
      const x0 = x.sub(eps.mul(Math.sqrt(1 - aT))).div(Math.sqrt(aT));
      const want = x0.mul(Math.sqrt(aPrev)).add(eps.mul(Math.sqrt(1 - aPrev - sigmaT ** 2))).add(z.mul(sigmaT));
      assertRel(sto.step(eps, i, x, { noise: z }), want, 1e-5, 'η step');
      const a = sto.step(eps, i, x, { generator: new T.Generator(7) });
      assert.deepEqual(a.toArray(), sto.step(eps, i, x, { noise: z }).toArray(), 'generator draws randn_tensor noise');
      assert.notDeepEqual(a.toArray(), det.step(eps, i, x).toArray());
    });
  });

  test('DPM++ 2M: the 0.25 final sigma is σ(t=0), and Karras makes the last step the identity', () => {
    const s = makeScheduler('dpmpp_2m', SD1_CONFIG);
    s.setTimesteps(STEPS);
    assertEachRel([s.sigmas![STEPS]], [0.029167532920837402], 1e-7, 'last sigma');
    const k = makeScheduler('dpmpp_2m', SD1_CONFIG, { karras: true });
    k.setTimesteps(STEPS);
    assert.equal(k.sigmas![STEPS], k.sigmas![STEPS - 1]);
    T.tidy(() => {
      const x = ref('trajectory.dpmpp_2m_karras.step_18.prev_sample');
      const out = k.step(ref('trajectory.dpmpp_2m_karras.step_19.model_output'), STEPS - 1, x);
      assert.deepEqual(out.toArray(), x.toArray());
    });
    k.dispose();
  });

  test('unsupported combinations are refused with a sentence', () => {
    assert.throws(() => makeScheduler('euler_a', SD1_CONFIG, { karras: true }), /does not support Karras/);
    assert.throws(() => makeScheduler('ddim', SD1_CONFIG, { karras: true }), /does not support Karras/);
    assert.throws(() => makeScheduler('euler', SD1_CONFIG, { eta: 0.5 }), /eta/);
    assert.throws(() => makeScheduler('dpmpp_2m', { ...SD1_CONFIG, algorithm_type: 'sde-dpmsolver++' }), /algorithm_type/);
    const s = makeScheduler('euler', SD1_CONFIG);
    assert.throws(() => s.modelInputScale(0), /setTimesteps/);
    s.setTimesteps(10);
    assert.throws(() => s.modelInputScale(10), /outside 0\.\.9/);
  });
});
