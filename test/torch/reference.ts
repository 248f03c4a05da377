// Loads the PyTorch reference values recorded by test/data/torch/make.py.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from '../helpers.ts';

export interface Recorded {
  shape: number[];
  values: number[];
}
export interface OpCase {
  inputs: Record<string, Recorded>;
  w: number[];
  out_shape: number[];
  out: number[];
  grads: Record<string, number[]>;
}
export interface OptRun {
  p0: number[];
  grads: number[][];
  traj: number[][];
}
export interface Reference {
  torch_version: string;
  rng: {
    seed: number;
    shape: number[];
    randn_head: number[];
    randn_sum: number;
    randn_bits_sum: number;
    gen_equal: boolean;
    rand_head: number[];
    rand_sum: number;
    randint_head: number[];
    randint_sum: number;
  }[];
  cases: Record<string, OpCase>;
  adamw: OptRun;
  adamw_defaults: OptRun;
  sgd_nesterov: OptRun;
  sgd_plain: OptRun;
  clip: { shapes: number[][]; grads_in: number[][]; max_norm: number; total: number; grads_out: number[][] };
}

export const REF: Reference = JSON.parse(readFileSync(join(REPO, 'test', 'data', 'torch', 'reference.json'), 'utf8'));
