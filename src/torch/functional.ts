// Tensor creation, grad modes, randomness and the neural-network functions (torch.nn.functional).
import { native } from './native.ts';
import { DTYPE_BYTES, DTYPE_CODE, type DType, type Device } from './dtype.ts';
import { Generator, Tensor, call1, op, reductionCode, type Reduction, type Shape } from './tensor.ts';

export interface TensorOptions {
  dtype?: DType;
  device?: Device;
  requiresGrad?: boolean;
}

function finish(t: Tensor, o: TensorOptions): Tensor {
  if (o.requiresGrad) t.requiresGrad_(true);
  return t;
}

function factoryArgs(o: TensorOptions): unknown[] {
  // dtype, layout, device, pin_memory (kwargs of every ATen factory)
  return [DTYPE_CODE[o.dtype ?? 'float32'], null, o.device ?? null, null];
}

const F = {
  zeros: op('aten::zeros'),
  ones: op('aten::ones'),
  full: op('aten::full'),
  empty: op('aten::empty', 'memory_format'),
  arange: op('aten::arange', 'start_step'),
  linspace: op('aten::linspace'),
  randn: op('aten::randn', 'generator'),
  rand: op('aten::rand', 'generator'),
  randint: op('aten::randint', 'low_generator'),
  randperm: op('aten::randperm', 'generator'),
  zerosLike: op('aten::zeros_like'),
  onesLike: op('aten::ones_like'),
  randnLike: op('aten::randn_like'),
  eye: op('aten::eye'),
  cat: op('aten::cat'),
  stack: op('aten::stack'),
  linear: op('aten::linear'),
  conv2d: op('aten::conv2d'),
  convTranspose2d: op('aten::conv_transpose2d', 'input'),
  groupNorm: op('aten::group_norm'),
  layerNorm: op('aten::layer_norm'),
  embedding: op('aten::embedding'),
  dropout: op('aten::dropout'),
  upsampleNearest: op('aten::upsample_nearest2d', 'vec'),
  upsampleBilinear: op('aten::upsample_bilinear2d', 'vec'),
  upsampleBicubic: op('aten::upsample_bicubic2d', 'vec'),
  avgPool2d: op('aten::avg_pool2d'),
  maxPool2d: op('aten::max_pool2d'),
  pad: op('aten::constant_pad_nd'),
  mseLoss: op('aten::mse_loss'),
  l1Loss: op('aten::l1_loss'),
  crossEntropy: op('aten::cross_entropy_loss'),
  bceLogits: op('aten::binary_cross_entropy_with_logits'),
  sdpa2: op('aten::scaled_dot_product_attention'),
} as const;

// ---- creation --------------------------------------------------------------------------------

export function zeros(shape: Shape, o: TensorOptions = {}): Tensor {
  return finish(call1(F.zeros, [shape, ...factoryArgs(o)]), o);
}
export function ones(shape: Shape, o: TensorOptions = {}): Tensor {
  return finish(call1(F.ones, [shape, ...factoryArgs(o)]), o);
}
export function full(shape: Shape, value: number, o: TensorOptions = {}): Tensor {
  return finish(call1(F.full, [shape, value, ...factoryArgs(o)]), o);
}
export function empty(shape: Shape, o: TensorOptions = {}): Tensor {
  return finish(call1(F.empty, [shape, ...factoryArgs(o), null]), o);
}
/** [start, end) with step; dtype defaults to int64 when all three are integers, like torch. */
export function arange(start: number, end?: number, step = 1, o: TensorOptions = {}): Tensor {
  if (end === undefined) {
    end = start;
    start = 0;
  }
  const ints = Number.isInteger(start) && Number.isInteger(end) && Number.isInteger(step);
  const dtype = o.dtype ?? (ints ? 'int64' : 'float32');
  return finish(call1(F.arange, [start, end, step, ...factoryArgs({ ...o, dtype })]), o);
}
export function linspace(start: number, end: number, steps: number, o: TensorOptions = {}): Tensor {
  return finish(call1(F.linspace, [start, end, steps, ...factoryArgs(o)]), o);
}
export function eye(n: number, o: TensorOptions = {}): Tensor {
  return finish(call1(F.eye, [n, ...factoryArgs(o)]), o);
}
/**
 * Standard normal values. On the CPU the values are bit-identical to torch.randn with the same
 * seed and shape (same kernel), which users rely on to reproduce images across tools.
 */
export function randn(shape: Shape, o: TensorOptions & { generator?: Generator } = {}): Tensor {
  return finish(call1(F.randn, [shape, o.generator?.h ?? null, ...factoryArgs(o)]), o);
}
export function rand(shape: Shape, o: TensorOptions & { generator?: Generator } = {}): Tensor {
  return finish(call1(F.rand, [shape, o.generator?.h ?? null, ...factoryArgs(o)]), o);
}
/** Integers in [low, high). */
export function randint(low: number, high: number, shape: Shape, o: TensorOptions & { generator?: Generator } = {}): Tensor {
  return call1(F.randint, [low, high, shape, o.generator?.h ?? null, ...factoryArgs({ dtype: 'int64', ...o })]);
}
export function randperm(n: number, o: TensorOptions & { generator?: Generator } = {}): Tensor {
  return call1(F.randperm, [n, o.generator?.h ?? null, ...factoryArgs({ dtype: 'int64', ...o })]);
}
export function zerosLike(t: Tensor): Tensor {
  return call1(F.zerosLike, [t.h]);
}
export function onesLike(t: Tensor): Tensor {
  return call1(F.onesLike, [t.h]);
}
export function randnLike(t: Tensor): Tensor {
  return call1(F.randnLike, [t.h]);
}

type NestedNumbers = number | boolean | NestedNumbers[];

function flattenNested(v: NestedNumbers, shape: number[], out: number[], depth: number): void {
  if (Array.isArray(v)) {
    if (shape.length <= depth) shape.push(v.length);
    else if (shape[depth] !== v.length) throw new Error(`tensor(): ragged nested array at depth ${depth}`);
    for (const x of v) flattenNested(x, shape, out, depth + 1);
  } else {
    if (depth !== shape.length) throw new Error('tensor(): ragged nested array');
    out.push(typeof v === 'boolean' ? (v ? 1 : 0) : v);
  }
}

/** A tensor from (nested) JS numbers or a typed array; float32 unless dtype says otherwise. */
export function tensor(data: NestedNumbers | ArrayLike<number> | BigInt64Array, o: TensorOptions & { shape?: Shape } = {}): Tensor {
  const dtype = o.dtype ?? (data instanceof BigInt64Array ? 'int64' : 'float32');
  let flat: ArrayLike<number | bigint>;
  let shape: number[];
  if (ArrayBuffer.isView(data)) {
    flat = data as ArrayLike<number | bigint>;
    shape = o.shape ? [...o.shape] : [flat.length];
  } else if (typeof data === 'number' || typeof data === 'boolean') {
    flat = [typeof data === 'boolean' ? (data ? 1 : 0) : data];
    shape = o.shape ? [...o.shape] : [];
  } else {
    const out: number[] = [];
    shape = [];
    flattenNested(data as NestedNumbers, shape, out, 0);
    flat = out;
    if (o.shape) shape = [...o.shape];
  }
  const bytes = Buffer.alloc(flat.length * DTYPE_BYTES[dtype]);
  writeValues(bytes, flat, dtype);
  let t = new Tensor(native.fromBuffer(bytes, DTYPE_CODE[dtype], shape, false));
  if (o.device && o.device !== 'cpu') {
    const moved = t.to(o.device);
    t.dispose();
    t = moved;
  }
  return finish(t, o);
}

function writeValues(b: Buffer, v: ArrayLike<number | bigint>, dtype: DType): void {
  const n = v.length;
  switch (dtype) {
    case 'float32': for (let i = 0; i < n; i++) b.writeFloatLE(Number(v[i]), i * 4); break;
    case 'float64': for (let i = 0; i < n; i++) b.writeDoubleLE(Number(v[i]), i * 8); break;
    case 'int64': for (let i = 0; i < n; i++) b.writeBigInt64LE(BigInt(v[i]), i * 8); break;
    case 'int32': for (let i = 0; i < n; i++) b.writeInt32LE(Number(v[i]), i * 4); break;
    case 'int16': for (let i = 0; i < n; i++) b.writeInt16LE(Number(v[i]), i * 2); break;
    case 'int8': for (let i = 0; i < n; i++) b.writeInt8(Number(v[i]), i); break;
    case 'uint8': case 'bool': for (let i = 0; i < n; i++) b.writeUInt8(Number(v[i]) ? (dtype === 'bool' ? 1 : Number(v[i])) : 0, i); break;
    case 'float16': case 'bfloat16': {
      // Write float32 and let ATen round (round-to-nearest-even, as torch does).
      const tmp = Buffer.alloc(n * 4);
      for (let i = 0; i < n; i++) tmp.writeFloatLE(Number(v[i]), i * 4);
      const f = new Tensor(native.fromBuffer(tmp, DTYPE_CODE.float32, [n], false));
      const h = f.to(dtype);
      h.toBuffer().copy(b);
      f.dispose();
      h.dispose();
      break;
    }
  }
}

/**
 * A tensor over a Buffer's bytes. copy=false shares the memory (zero copy; the Buffer stays alive
 * as long as the tensor, and must be aligned to the element size).
 */
export function fromBuffer(buf: ArrayBufferView, dtype: DType, shape: Shape, opts: { copy?: boolean } = {}): Tensor {
  return new Tensor(native.fromBuffer(buf, DTYPE_CODE[dtype], shape, opts.copy === false));
}

export function cat(ts: readonly Tensor[], dim = 0): Tensor {
  return call1(F.cat, [ts.map((t) => t.h), dim]);
}
export function stack(ts: readonly Tensor[], dim = 0): Tensor {
  return call1(F.stack, [ts.map((t) => t.h), dim]);
}

// ---- grad modes ------------------------------------------------------------------------------

/** Runs fn without recording autograd history (torch.no_grad). */
export function noGrad<T>(fn: () => T): T {
  const prev = native.setGradEnabled(false);
  try {
    return fn();
  } finally {
    native.setGradEnabled(prev);
  }
}
export function enableGrad<T>(fn: () => T): T {
  const prev = native.setGradEnabled(true);
  try {
    return fn();
  } finally {
    native.setGradEnabled(prev);
  }
}
export function isGradEnabled(): boolean {
  return native.isGradEnabled();
}
/** torch.inference_mode: faster than noGrad; its tensors can never enter autograd later. */
export function inferenceMode<T>(fn: () => T): T {
  const g = native.enterInference();
  try {
    return fn();
  } finally {
    native.exitInference(g);
  }
}
export function isInferenceMode(): boolean {
  return native.isInferenceMode();
}

// ---- randomness ------------------------------------------------------------------------------

/** Seeds the default generators, as torch.manual_seed. */
export function manualSeed(seed: number | bigint): void {
  native.manualSeed(seed);
}
/** The default generator's state (for exact resume): the CPU's, or with a CUDA device that device's. */
export function getRngState(device?: Device): Buffer {
  return native.generatorState(device?.startsWith('cuda') ? device : null);
}
export function setRngState(state: Buffer, device?: Device): void {
  native.setGeneratorState(device?.startsWith('cuda') ? device : null, state);
}

// ---- mixed precision -------------------------------------------------------------------------

/**
 * Runs fn under CUDA autocast (fp16 or bf16 matmuls and convs, fp32 reductions). On a CPU-only
 * libtorch the scope is a no-op: CPU runs compute in fp32 (fp16 kernels are missing there).
 */
export function autocast<T>(dtype: 'float16' | 'bfloat16', fn: () => T): T {
  if (!native.runtime().cuda) return fn();
  const prev = native.setAutocast(true, DTYPE_CODE[dtype]);
  try {
    return fn();
  } finally {
    native.autocastExit(prev.enabled, prev.dtype);
  }
}

// ---- nn.functional ---------------------------------------------------------------------------

export function linear(x: Tensor, weight: Tensor, bias: Tensor | null = null): Tensor {
  return call1(F.linear, [x.h, weight.h, bias?.h ?? null]);
}

export interface Conv2dOptions {
  stride?: number | [number, number];
  padding?: number | [number, number];
  dilation?: number | [number, number];
  groups?: number;
}
export function conv2d(x: Tensor, weight: Tensor, bias: Tensor | null = null, o: Conv2dOptions = {}): Tensor {
  return call1(F.conv2d, [x.h, weight.h, bias?.h ?? null, o.stride ?? 1, o.padding ?? 0, o.dilation ?? 1, o.groups ?? 1]);
}
export function groupNorm(x: Tensor, groups: number, weight: Tensor | null, bias: Tensor | null, eps = 1e-5): Tensor {
  return call1(F.groupNorm, [x.h, groups, weight?.h ?? null, bias?.h ?? null, eps, true]);
}
export function layerNorm(x: Tensor, normalizedShape: Shape, weight: Tensor | null, bias: Tensor | null, eps = 1e-5): Tensor {
  return call1(F.layerNorm, [x.h, normalizedShape, weight?.h ?? null, bias?.h ?? null, eps, true]);
}
export function embedding(weight: Tensor, ids: Tensor): Tensor {
  return call1(F.embedding, [weight.h, ids.h, -1, false, false]);
}
export function dropout(x: Tensor, p: number, training: boolean): Tensor {
  if (!training || p === 0) return x.alias();
  return call1(F.dropout, [x.h, p, true]);
}
export function mseLoss(a: Tensor, b: Tensor, reduction: Reduction = 'mean'): Tensor {
  return call1(F.mseLoss, [a.h, b.h, reductionCode(reduction)]);
}
export function l1Loss(a: Tensor, b: Tensor, reduction: Reduction = 'mean'): Tensor {
  return call1(F.l1Loss, [a.h, b.h, reductionCode(reduction)]);
}
/** Cross-entropy of logits [N, C] against class indices [N] (int64). */
export function crossEntropy(logits: Tensor, target: Tensor, reduction: Reduction = 'mean'): Tensor {
  return call1(F.crossEntropy, [logits.h, target.h, null, reductionCode(reduction), -100, 0]);
}
export function binaryCrossEntropyWithLogits(logits: Tensor, target: Tensor, reduction: Reduction = 'mean'): Tensor {
  return call1(F.bceLogits, [logits.h, target.h, null, null, reductionCode(reduction)]);
}

/** F.interpolate for 4-D inputs: nearest (as SD's Upsample2D), bilinear or bicubic. */
export function interpolate(
  x: Tensor,
  o: { size?: [number, number]; scaleFactor?: number; mode?: 'nearest' | 'bilinear' | 'bicubic'; alignCorners?: boolean },
): Tensor {
  const mode = o.mode ?? 'nearest';
  const size = o.size ?? null;
  const scales = size === null ? [o.scaleFactor ?? 1, o.scaleFactor ?? 1] : null;
  if (mode === 'nearest') return call1(F.upsampleNearest, [x.h, size, scales]);
  const op = mode === 'bilinear' ? F.upsampleBilinear : F.upsampleBicubic;
  return call1(op, [x.h, size, o.alignCorners ?? false, scales]);
}
export function avgPool2d(x: Tensor, kernel: number, stride = kernel): Tensor {
  return call1(F.avgPool2d, [x.h, kernel, stride, 0, false, true, null]);
}
export function maxPool2d(x: Tensor, kernel: number, stride = kernel): Tensor {
  return call1(F.maxPool2d, [x.h, kernel, stride, 0, 1, false]);
}
/** Constant padding, pads = [left, right, top, bottom, …] as F.pad. */
export function pad(x: Tensor, pads: number[], value = 0): Tensor {
  return call1(F.pad, [x.h, pads, value]);
}

export type AttentionImpl = 'auto' | 'sdpa' | 'math';

/**
 * softmax(q kᵀ · scale + mask) v over [..., L, E] inputs. 'sdpa' uses ATen's fused
 * scaled_dot_product_attention (libtorch ≥ 2.0), 'math' the exact composition of ops, 'auto' the
 * first when the linked libtorch has it. Both give the same values within float rounding.
 * mask: boolean (true = attend) or additive float, broadcastable to [..., L, S].
 */
export function scaledDotProductAttention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  o: { mask?: Tensor | null; causal?: boolean; scale?: number; impl?: AttentionImpl } = {},
): Tensor {
  const impl = o.impl ?? 'auto';
  const useFused = impl === 'sdpa' || (impl === 'auto' && F.sdpa2.available);
  if (useFused) {
    const args: unknown[] = [q.h, k.h, v.h, o.mask?.h ?? null, 0.0, o.causal ?? false];
    // 2.1+ has the scale argument; with the default scale, leave it out for 2.0.
    if (o.scale !== undefined) args.push(o.scale);
    return call1(F.sdpa2, args);
  }
  return attentionMath(q, k, v, o.mask ?? null, o.causal ?? false, o.scale);
}

function attentionMath(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | null, causal: boolean, scale?: number): Tensor {
  const e = q.size(-1);
  const s = scale ?? 1 / Math.sqrt(e);
  const kt = k.transpose(-2, -1);
  const scores = q.matmul(kt);
  kt.dispose();
  scores.mul_(s);
  if (causal) {
    const L = q.size(-2);
    const S = k.size(-2);
    const keepMask = ones([L, S], { dtype: 'bool', device: q.device });
    const tri = keepMask.tril();
    const inv = tri.eq(false);
    const filled = scores.maskedFill(inv, -Infinity);
    scores.dispose();
    keepMask.dispose();
    tri.dispose();
    inv.dispose();
    return finishAttention(filled, v, mask);
  }
  return finishAttention(scores, v, mask);
}

function finishAttention(scores: Tensor, v: Tensor, mask: Tensor | null): Tensor {
  let s = scores;
  if (mask !== null) {
    if (mask.dtype === 'bool') {
      const inv = mask.eq(false);
      s = scores.maskedFill(inv, -Infinity);
      inv.dispose();
    } else {
      s = scores.add(mask);
    }
    scores.dispose();
  }
  const p = s.softmax(-1);
  s.dispose();
  const out = p.matmul(v);
  p.dispose();
  return out;
}

/** Whether this libtorch has the fused attention op (2.x). */
export function hasFusedAttention(): boolean {
  return F.sdpa2.available;
}

