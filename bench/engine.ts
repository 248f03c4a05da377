// Engine benchmark (issue: engine): per-op overhead, large ops, a full training step of a small
// conv + attention network, and memory over 500 steps — each against the same workload in
// Debian's python3-torch (same libtorch), run in one go so the ratios compare like with like.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import * as T from '../src/torch/index.ts';
import { TinyNet, makeBatch } from '../src/torch/examples.ts';
import { BENCH_DEVICE, type BenchLine, PYTHON, ratio, rssMb, timeit } from './common.ts';

const CFG = {
  op_iters: 20000,
  train: { c: 128, heads: 4, batch: 8, size: 32 },
  train_steps: 10,
  soak: { c: 32, heads: 4, batch: 4, size: 16 },
  soak_steps: 500,
};

function trainStep(c: { c: number; heads: number; batch: number; size: number }): { step: () => void; dispose: () => void } {
  T.manualSeed(0);
  const net = new TinyNet(T.nn.VarBuilder.init({ device: BENCH_DEVICE }), { channels: c.c, heads: c.heads });
  const opt = new T.optim.AdamW(net.namedParameters(), { lr: 1e-3 });
  const b = makeBatch(c.batch, c.size);
  const x = T.keep(b.x.to(BENCH_DEVICE));
  const y = T.keep(b.y.to(BENCH_DEVICE));
  b.x.dispose();
  b.y.dispose();
  const step = () =>
    T.tidy(() => {
      const loss = T.mseLoss(net.forward(x), y);
      loss.backward();
      opt.step();
      opt.zeroGrad();
    });
  return { step, dispose: () => { x.dispose(); y.dispose(); opt.dispose(); net.dispose(); } };
}

export function benchEngine(): BenchLine[] {
  const rt = T.runtime();
  const ours: Record<string, number> = {};
  const dev = { device: BENCH_DEVICE };
  const a = T.keep(T.randn([16], dev));
  const b = T.keep(T.randn([16], dev));
  ours.op_add_small = timeit(() => a.add(b).dispose(), CFG.op_iters, 100);
  const m1 = T.keep(T.randn([1024, 1024], dev));
  const m2 = T.keep(T.randn([1024, 1024], dev));
  ours.matmul_1024 = timeit(() => m1.matmul(m2).dispose(), 10);
  const xc = T.keep(T.randn([1, 320, 64, 64], dev));
  const wc = T.keep(T.randn([320, 320, 3, 3], dev));
  ours.conv3x3_320_64 = timeit(() => T.conv2d(xc, wc, null, { padding: 1 }).dispose(), 5, 1);
  for (const t of [a, b, m1, m2, xc, wc]) t.dispose();

  const tr = trainStep(CFG.train);
  ours.train_step = timeit(tr.step, CFG.train_steps);
  tr.dispose();

  const soak = trainStep(CFG.soak);
  let live50 = 0;
  let rss50 = 0;
  for (let i = 0; i < CFG.soak_steps; i++) {
    soak.step();
    if (i === 49) {
      live50 = T.memoryStats().live;
      rss50 = rssMb();
    }
  }
  const liveEnd = T.memoryStats().live;
  const rssEnd = rssMb();
  soak.dispose();

  const ref = JSON.parse(
    execFileSync(PYTHON, [join(import.meta.dirname, 'reference.py'), JSON.stringify({ ...CFG, threads: rt.numThreads, device: BENCH_DEVICE })], {
      env: { ...process.env, OPENBLAS_NUM_THREADS: String(Math.max(1, rt.blasThreads)), OMP_NUM_THREADS: String(rt.numThreads) },
      encoding: 'utf8',
      maxBuffer: 1 << 20,
    }),
  ) as Record<string, number>;

  const lines: BenchLine[] = [];
  for (const k of ['op_add_small', 'matmul_1024', 'conv3x3_320_64', 'train_step']) {
    lines.push({ name: `engine.${k}`, device: BENCH_DEVICE, sdtune_ms: ours[k], reference_ms: ref[k], ratio: ratio(ours[k], ref[k]) });
  }
  lines[lines.length - 1].config = CFG.train;
  lines.push({
    name: 'engine.soak_500_steps',
    steps: CFG.soak_steps,
    live_tensors_at_50: live50,
    live_tensors_at_end: liveEnd,
    rss_growth_mb: +(rssEnd - rss50).toFixed(1),
    reference_rss_growth_mb: +ref.soak_rss_growth_mb.toFixed(1),
    rss_mb: +rssEnd.toFixed(1),
    reference_rss_mb: +ref.soak_rss_mb.toFixed(1),
  });
  return lines;
}
