// Shared by the benchmarks: timing, the Python reference and the JSON line format
// (`name`, `sdtune_ms`, `reference_ms`, `ratio` = sdtune/reference, plus any details).
import { readFileSync } from 'node:fs';
import * as T from '../src/torch/index.ts';

export type BenchLine = { name: string; sdtune_ms?: number; reference_ms?: number; ratio?: number } & Record<string, unknown>;

/** Debian's python3-torch: the reference (the product itself never needs Python). */
export const PYTHON = process.env.SDTUNE_REF_PYTHON ?? '/usr/bin/python3';
/** Where the device-aware benchmarks run: SDTUNE_BENCH_DEVICE=cuda on a GPU machine. */
export const BENCH_DEVICE = process.env.SDTUNE_BENCH_DEVICE ?? 'cpu';

/** Mean ms per call; on a GPU, queued work is waited for before the clock stops. */
export function timeit(fn: () => void, n: number, warm = 3): number {
  for (let i = 0; i < warm; i++) fn();
  T.synchronize();
  const t = performance.now();
  for (let i = 0; i < n; i++) fn();
  T.synchronize();
  return (performance.now() - t) / n;
}

export function ratio(a: number, b: number): number {
  return +(a / b).toFixed(3);
}

export function rssMb(): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

export function round(x: number, digits = 3): number {
  return +x.toFixed(digits);
}
