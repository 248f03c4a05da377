// `sdtune demo` — until the toy world lands, a short, real demo of the engine: a small conv +
// attention network trained with AdamW on the CPU, printing its loss as it falls.
import * as T from '../torch/index.ts';
import { TinyNet, makeBatch } from '../torch/examples.ts';

export function engineDemo(o: { steps?: number; log?: (s: string) => void } = {}): { first: number; last: number; seconds: number } {
  const log = o.log ?? ((s: string) => console.log(s));
  const steps = o.steps ?? 200;
  const rt = T.runtime();
  log(`sdtune engine demo — libtorch ${rt.torchVersion}, ${rt.numThreads} threads, BLAS ${rt.blas.split('/').pop()}${rt.cuda ? `, ${rt.cudaDevices} CUDA device(s)` : ''}`);
  T.manualSeed(0);
  const net = new TinyNet(T.nn.VarBuilder.init(), { channels: 32, heads: 4 });
  log(`TinyNet: conv + self-attention + conv, ${net.numParameters().toLocaleString('en')} parameters; batch 8×4×16×16`);
  const opt = new T.optim.AdamW(net.namedParameters(), { lr: 3e-3, weightDecay: 0 });
  const { x, y } = makeBatch(8, 16);
  const t0 = performance.now();
  let first = NaN;
  let last = NaN;
  for (let i = 0; i < steps; i++) {
    last = T.tidy(() => {
      const loss = T.mseLoss(net.forward(x), y);
      loss.backward();
      opt.step();
      opt.zeroGrad();
      return loss.item(); // .item(): waits for the device
    });
    if (i === 0) first = last;
    if (i % 25 === 0 || i === steps - 1) {
      const bar = '█'.repeat(Math.max(1, Math.round(40 * Math.min(1, last / first))));
      log(`step ${String(i + 1).padStart(4)}  loss ${last.toFixed(5)}  ${bar}`);
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  log(`loss ${first.toFixed(4)} → ${last.toFixed(5)} in ${seconds.toFixed(1)} s (${((steps / seconds)).toFixed(1)} steps/s); live tensors: ${T.memoryStats().live}`);
  for (const t of [x, y]) t.dispose();
  opt.dispose();
  net.dispose();
  return { first, last, seconds };
}
