// The Tensor type: a handle on an at::Tensor, with the ops the SD models and trainers use.
// Every op is an ATen op called through the dispatcher by schema name (native/ops.cc), so results
// and gradients are PyTorch's own. Methods are synchronous; on a GPU the kernels still run
// asynchronously, and the methods that wait for the device say so (`// waits for the device`).
import { native, type Handle, type OpHandle } from './native.ts';
import { DTYPE_CODE, dtypeFromCode, type DType, type Device } from './dtype.ts';
import { track } from './scope.ts';

/** A lazily resolved ATen op. */
export class Op {
  private handle: OpHandle | null = null;
  constructor(
    readonly name: string,
    readonly overload = '',
  ) {}
  get h(): OpHandle {
    if (this.handle === null) {
      const h = native.findOp(this.name, this.overload);
      if (h === null) {
        throw new Error(`${this.name}${this.overload ? '.' + this.overload : ''} is not available in libtorch ${native.torchVersion}`);
      }
      this.handle = h;
    }
    return this.handle;
  }
  /** Whether the linked libtorch has this op (e.g. scaled_dot_product_attention: 2.x only). */
  get available(): boolean {
    if (this.handle !== null) return true;
    const h = native.findOp(this.name, this.overload);
    if (h !== null) this.handle = h;
    return h !== null;
  }
}

const opCache = new Map<string, Op>();
/** op('aten::conv2d') or op('aten::add', 'Tensor'): cached handle. */
export function op(name: string, overload = ''): Op {
  const key = name + '.' + overload;
  let o = opCache.get(key);
  if (o === undefined) {
    o = new Op(name, overload);
    opCache.set(key, o);
  }
  return o;
}

function isExternal(x: unknown): x is Handle {
  return typeof x === 'object' && x !== null && Object.getPrototypeOf(x) === null && !Array.isArray(x);
}

/** Converts an op's result: handles become Tensors (arrays recursively), other values pass. */
export function wrapResult(x: unknown): unknown {
  if (isExternal(x)) return new Tensor(x);
  if (Array.isArray(x)) return x.map(wrapResult);
  return x;
}

/** Calls an op returning one tensor. Tensor arguments must already be handles. */
export function call1(o: Op, args: unknown[]): Tensor {
  return new Tensor(native.callOp(o.h, args) as Handle);
}
/** Calls an op returning several tensors. */
export function callN(o: Op, args: unknown[]): Tensor[] {
  return (native.callOp(o.h, args) as Handle[]).map((h) => new Tensor(h));
}
/** Calls an in-place op, discarding the result (which is self). */
export function callInplace(o: Op, args: unknown[]): void {
  native.callOp(o.h, args, 1);
}
/** Calls an op by name with Tensor arguments converted, for ops without a method here. */
export function callOp(name: string, overload: string, ...args: unknown[]): unknown {
  return wrapResult(native.callOp(op(name, overload).h, args.map(unwrapArg)));
}

function unwrapArg(a: unknown): unknown {
  if (a instanceof Tensor) return a.h;
  if (Array.isArray(a)) return a.map(unwrapArg);
  return a;
}

export type Scalar = number | boolean;
export type Shape = readonly number[];
/** Reduction modes of ATen's loss functions (at::Reduction). */
const REDUCTION = { none: 0, mean: 1, sum: 2 } as const;
export type Reduction = keyof typeof REDUCTION;
export function reductionCode(r: Reduction): number {
  return REDUCTION[r];
}

const O = {
  add: op('aten::add', 'Tensor'),
  addS: op('aten::add', 'Scalar'),
  add_: op('aten::add_', 'Tensor'),
  addS_: op('aten::add_', 'Scalar'),
  sub: op('aten::sub', 'Tensor'),
  subS: op('aten::sub', 'Scalar'),
  sub_: op('aten::sub_', 'Tensor'),
  rsubS: op('aten::rsub', 'Scalar'),
  mul: op('aten::mul', 'Tensor'),
  mulS: op('aten::mul', 'Scalar'),
  mul_: op('aten::mul_', 'Tensor'),
  mulS_: op('aten::mul_', 'Scalar'),
  div: op('aten::div', 'Tensor'),
  divS: op('aten::div', 'Scalar'),
  div_: op('aten::div_', 'Tensor'),
  divS_: op('aten::div_', 'Scalar'),
  pow: op('aten::pow', 'Tensor_Tensor'),
  powS: op('aten::pow', 'Tensor_Scalar'),
  neg: op('aten::neg'),
  abs: op('aten::abs'),
  sqrt: op('aten::sqrt'),
  rsqrt: op('aten::rsqrt'),
  exp: op('aten::exp'),
  log: op('aten::log'),
  sin: op('aten::sin'),
  cos: op('aten::cos'),
  tanh: op('aten::tanh'),
  sigmoid: op('aten::sigmoid'),
  relu: op('aten::relu'),
  silu: op('aten::silu'),
  gelu: op('aten::gelu'),
  sign: op('aten::sign'),
  floor: op('aten::floor'),
  round: op('aten::round'),
  reciprocal: op('aten::reciprocal'),
  clamp: op('aten::clamp'),
  clamp_: op('aten::clamp_'),
  maximum: op('aten::maximum'),
  minimum: op('aten::minimum'),
  softmax: op('aten::softmax', 'int'),
  logSoftmax: op('aten::log_softmax', 'int'),
  matmul: op('aten::matmul'),
  mm: op('aten::mm'),
  bmm: op('aten::bmm'),
  baddbmm: op('aten::baddbmm'),
  reshape: op('aten::reshape'),
  view: op('aten::view'),
  permute: op('aten::permute'),
  transpose: op('aten::transpose', 'int'),
  t: op('aten::t'),
  flatten: op('aten::flatten', 'using_ints'),
  unsqueeze: op('aten::unsqueeze'),
  squeeze: op('aten::squeeze', 'dim'),
  squeezeAll: op('aten::squeeze'),
  expand: op('aten::expand'),
  repeat: op('aten::repeat'),
  contiguous: op('aten::contiguous'),
  chunk: op('aten::chunk'),
  split: op('aten::split', 'Tensor'),
  splitSizes: op('aten::split_with_sizes'),
  select: op('aten::select', 'int'),
  slice: op('aten::slice', 'Tensor'),
  narrow: op('aten::narrow'),
  indexSelect: op('aten::index_select'),
  index: op('aten::index', 'Tensor'),
  gather: op('aten::gather'),
  maskedFill: op('aten::masked_fill', 'Scalar'),
  where: op('aten::where', 'self'),
  sum: op('aten::sum'),
  sumDim: op('aten::sum', 'dim_IntList'),
  mean: op('aten::mean'),
  meanDim: op('aten::mean', 'dim'),
  varDim: op('aten::var', 'correction'),
  amax: op('aten::amax'),
  amin: op('aten::amin'),
  argmax: op('aten::argmax'),
  max: op('aten::max'),
  min: op('aten::min'),
  normP: op('aten::norm', 'ScalarOpt_dim'),
  eq: op('aten::eq', 'Tensor'),
  eqS: op('aten::eq', 'Scalar'),
  ne: op('aten::ne', 'Tensor'),
  gt: op('aten::gt', 'Tensor'),
  gtS: op('aten::gt', 'Scalar'),
  lt: op('aten::lt', 'Tensor'),
  ltS: op('aten::lt', 'Scalar'),
  ge: op('aten::ge', 'Scalar'),
  le: op('aten::le', 'Scalar'),
  isfinite: op('aten::isfinite'),
  all: op('aten::all'),
  any: op('aten::any'),
  toDtype: op('aten::to', 'dtype'),
  toDevice: op('aten::to', 'dtype_layout'),
  clone: op('aten::clone'),
  detach: op('aten::detach'),
  item: op('aten::item'),
  zero_: op('aten::zero_'),
  fill_: op('aten::fill_', 'Scalar'),
  copy_: op('aten::copy_'),
  addcmul_: op('aten::addcmul_'),
  addcdiv_: op('aten::addcdiv_'),
  lerp_: op('aten::lerp_', 'Scalar'),
  sqrt_: op('aten::sqrt_'),
  uniform_: op('aten::uniform_'),
  normal_: op('aten::normal_'),
  setData: op('aten::set_data'),
  cumsum: op('aten::cumsum'),
  sort: op('aten::sort'),
  topk: op('aten::topk'),
  flip: op('aten::flip'),
  roll: op('aten::roll'),
  tril: op('aten::tril'),
  triu: op('aten::triu'),
} as const;

let created = 0;

/** How many Tensor handles were made so far: a clock that Tensor.seq reads. */
export function tensorClock(): number {
  return created;
}

export class Tensor {
  /** The native handle. Stays valid until dispose(). */
  readonly h: Handle;
  kept = false;
  /** When this handle was made (tensorClock()): a tensor cannot depend on one made after it. */
  readonly seq = ++created;

  constructor(h: Handle) {
    this.h = h;
    track(this);
  }

  // ---- lifetime ----------------------------------------------------------------------------
  dispose(): void {
    native.dispose(this.h);
  }
  get disposed(): boolean {
    return native.isDisposed(this.h);
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
  /** A second handle on the same tensor: disposing one leaves the other alive. */
  alias(): Tensor {
    return new Tensor(native.alias(this.h));
  }

  // ---- metadata ----------------------------------------------------------------------------
  get shape(): number[] {
    return native.shape(this.h);
  }
  get strides(): number[] {
    return native.strides(this.h);
  }
  get ndim(): number {
    return native.dim(this.h);
  }
  get numel(): number {
    return native.numel(this.h);
  }
  get dtype(): DType {
    return dtypeFromCode(native.dtype(this.h));
  }
  get device(): Device {
    return native.device(this.h);
  }
  get isContiguous(): boolean {
    return native.isContiguous(this.h);
  }
  /** Size of one dimension; negative indices count from the end. */
  size(dim: number): number {
    const s = this.shape;
    const d = dim < 0 ? s.length + dim : dim;
    if (d < 0 || d >= s.length) throw new RangeError(`size(${dim}): tensor has ${s.length} dimensions`);
    return s[d];
  }
  toString(): string {
    return native.describe(this.h);
  }

  // ---- autograd ----------------------------------------------------------------------------
  get requiresGrad(): boolean {
    return native.requiresGrad(this.h);
  }
  requiresGrad_(b = true): this {
    native.setRequiresGrad(this.h, b);
    return this;
  }
  /** The accumulated gradient (a new handle each call), or null. */
  get grad(): Tensor | null {
    const g = native.grad(this.h);
    return g === null ? null : new Tensor(g);
  }
  set grad(g: Tensor | null) {
    native.setGrad(this.h, g === null ? null : g.h);
  }
  get isLeaf(): boolean {
    return native.isLeaf(this.h);
  }
  backward(gradient?: Tensor, opts: { retainGraph?: boolean; createGraph?: boolean } = {}): void {
    native.backward(this.h, gradient ? gradient.h : null, opts.retainGraph, opts.createGraph ?? false);
  }
  detach(): Tensor {
    return call1(O.detach, [this.h]);
  }
  /** Replaces the data behind this tensor (same identity), as param.data = x. */
  setData(x: Tensor): this {
    callInplace(O.setData, [this.h, x.h]);
    return this;
  }

  // ---- data out --------------------------------------------------------------------------------
  /** The value of a one-element tensor. // waits for the device */
  item(): number {
    const v = native.callOp(O.item.h, [this.h]);
    return typeof v === 'boolean' ? (v ? 1 : 0) : (v as number);
  }
  /** Raw little-endian bytes, contiguous. // waits for the device */
  toBuffer(): Buffer {
    return native.toBuffer(this.h);
  }
  /** Values as a typed array of the tensor's dtype (float16/bfloat16 come back as float32). */
  toTypedArray(): Float32Array | Float64Array | Int32Array | BigInt64Array | Int16Array | Int8Array | Uint8Array {
    const d = this.dtype;
    if (d === 'float16' || d === 'bfloat16') {
      const f = this.to('float32');
      try {
        return f.toTypedArray();
      } finally {
        f.dispose();
      }
    }
    const b = this.toBuffer();
    const ab = b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
    switch (d) {
      case 'float32': return new Float32Array(ab);
      case 'float64': return new Float64Array(ab);
      case 'int32': return new Int32Array(ab);
      case 'int64': return new BigInt64Array(ab);
      case 'int16': return new Int16Array(ab);
      case 'int8': return new Int8Array(ab);
      default: return new Uint8Array(ab);
    }
  }
  /** Values as a flat number[] (int64 converted to number). */
  toArray(): number[] {
    const a = this.toTypedArray();
    if (a instanceof BigInt64Array) return Array.from(a, (x) => Number(x));
    return Array.from(a as ArrayLike<number>);
  }

  // ---- conversion ---------------------------------------------------------------------------
  to(target: DType | Device, opts: { copy?: boolean; nonBlocking?: boolean } = {}): Tensor {
    if (target in DTYPE_CODE) {
      return call1(O.toDtype, [this.h, DTYPE_CODE[target as DType], opts.nonBlocking ?? false, opts.copy ?? false]);
    }
    return call1(O.toDevice, [this.h, null, null, target, null, opts.nonBlocking ?? false, opts.copy ?? false]);
  }
  float(): Tensor {
    return this.to('float32');
  }
  cpu(): Tensor {
    return this.to('cpu');
  }
  clone(): Tensor {
    return call1(O.clone, [this.h]);
  }
  contiguous(): Tensor {
    return call1(O.contiguous, [this.h]);
  }

  // ---- arithmetic ----------------------------------------------------------------------------
  add(o: Tensor | Scalar, alpha: number = 1): Tensor {
    return o instanceof Tensor ? call1(O.add, [this.h, o.h, alpha]) : call1(O.addS, [this.h, o, alpha]);
  }
  sub(o: Tensor | Scalar, alpha: number = 1): Tensor {
    return o instanceof Tensor ? call1(O.sub, [this.h, o.h, alpha]) : call1(O.subS, [this.h, o, alpha]);
  }
  /** o - this */
  rsub(o: Scalar): Tensor {
    return call1(O.rsubS, [this.h, o]);
  }
  mul(o: Tensor | Scalar): Tensor {
    return o instanceof Tensor ? call1(O.mul, [this.h, o.h]) : call1(O.mulS, [this.h, o]);
  }
  div(o: Tensor | Scalar): Tensor {
    return o instanceof Tensor ? call1(O.div, [this.h, o.h]) : call1(O.divS, [this.h, o]);
  }
  pow(o: Tensor | Scalar): Tensor {
    return o instanceof Tensor ? call1(O.pow, [this.h, o.h]) : call1(O.powS, [this.h, o]);
  }
  neg(): Tensor { return call1(O.neg, [this.h]); }
  abs(): Tensor { return call1(O.abs, [this.h]); }
  sqrt(): Tensor { return call1(O.sqrt, [this.h]); }
  rsqrt(): Tensor { return call1(O.rsqrt, [this.h]); }
  exp(): Tensor { return call1(O.exp, [this.h]); }
  log(): Tensor { return call1(O.log, [this.h]); }
  sin(): Tensor { return call1(O.sin, [this.h]); }
  cos(): Tensor { return call1(O.cos, [this.h]); }
  tanh(): Tensor { return call1(O.tanh, [this.h]); }
  sigmoid(): Tensor { return call1(O.sigmoid, [this.h]); }
  relu(): Tensor { return call1(O.relu, [this.h]); }
  silu(): Tensor { return call1(O.silu, [this.h]); }
  /** approximate: 'none' (erf, as nn.GELU()) or 'tanh'. */
  gelu(approximate: 'none' | 'tanh' = 'none'): Tensor { return call1(O.gelu, [this.h, approximate]); }
  sign(): Tensor { return call1(O.sign, [this.h]); }
  floor(): Tensor { return call1(O.floor, [this.h]); }
  round(): Tensor { return call1(O.round, [this.h]); }
  reciprocal(): Tensor { return call1(O.reciprocal, [this.h]); }
  clamp(min: number | null, max: number | null = null): Tensor {
    return call1(O.clamp, [this.h, min, max]);
  }
  maximum(o: Tensor): Tensor { return call1(O.maximum, [this.h, o.h]); }
  minimum(o: Tensor): Tensor { return call1(O.minimum, [this.h, o.h]); }
  softmax(dim: number, dtype?: DType): Tensor {
    return call1(O.softmax, [this.h, dim, dtype === undefined ? null : DTYPE_CODE[dtype]]);
  }
  logSoftmax(dim: number): Tensor { return call1(O.logSoftmax, [this.h, dim, null]); }
  matmul(o: Tensor): Tensor { return call1(O.matmul, [this.h, o.h]); }
  mm(o: Tensor): Tensor { return call1(O.mm, [this.h, o.h]); }
  bmm(o: Tensor): Tensor { return call1(O.bmm, [this.h, o.h]); }
  /** beta*this + alpha*(b1 @ b2), batched. */
  baddbmm(b1: Tensor, b2: Tensor, beta = 1, alpha = 1): Tensor {
    return call1(O.baddbmm, [this.h, b1.h, b2.h, beta, alpha]);
  }

  // ---- comparison ----------------------------------------------------------------------------
  eq(o: Tensor | Scalar): Tensor { return o instanceof Tensor ? call1(O.eq, [this.h, o.h]) : call1(O.eqS, [this.h, o]); }
  ne(o: Tensor): Tensor { return call1(O.ne, [this.h, o.h]); }
  gt(o: Tensor | Scalar): Tensor { return o instanceof Tensor ? call1(O.gt, [this.h, o.h]) : call1(O.gtS, [this.h, o]); }
  lt(o: Tensor | Scalar): Tensor { return o instanceof Tensor ? call1(O.lt, [this.h, o.h]) : call1(O.ltS, [this.h, o]); }
  ge(o: Scalar): Tensor { return call1(O.ge, [this.h, o]); }
  le(o: Scalar): Tensor { return call1(O.le, [this.h, o]); }
  isfinite(): Tensor { return call1(O.isfinite, [this.h]); }
  all(): Tensor { return call1(O.all, [this.h]); }
  any(): Tensor { return call1(O.any, [this.h]); }
  /** where(cond, this, other) */
  where(cond: Tensor, other: Tensor): Tensor { return call1(O.where, [cond.h, this.h, other.h]); }
  maskedFill(mask: Tensor, value: number): Tensor { return call1(O.maskedFill, [this.h, mask.h, value]); }

  // ---- reductions ----------------------------------------------------------------------------
  sum(dim?: number | number[], keepdim = false): Tensor {
    if (dim === undefined) return call1(O.sum, [this.h, null]);
    return call1(O.sumDim, [this.h, typeof dim === 'number' ? [dim] : dim, keepdim, null]);
  }
  mean(dim?: number | number[], keepdim = false): Tensor {
    if (dim === undefined) return call1(O.mean, [this.h, null]);
    return call1(O.meanDim, [this.h, typeof dim === 'number' ? [dim] : dim, keepdim, null]);
  }
  /** Variance with Bessel's correction by default (unbiased), as torch.var. */
  var(dim: number | number[], opts: { unbiased?: boolean; keepdim?: boolean } = {}): Tensor {
    return call1(O.varDim, [this.h, typeof dim === 'number' ? [dim] : dim, opts.unbiased === false ? 0 : 1, opts.keepdim ?? false]);
  }
  std(dim: number | number[], opts: { unbiased?: boolean; keepdim?: boolean } = {}): Tensor {
    const v = this.var(dim, opts);
    try {
      return v.sqrt();
    } finally {
      v.dispose();
    }
  }
  amax(dim: number | number[], keepdim = false): Tensor { return call1(O.amax, [this.h, typeof dim === 'number' ? [dim] : dim, keepdim]); }
  amin(dim: number | number[], keepdim = false): Tensor { return call1(O.amin, [this.h, typeof dim === 'number' ? [dim] : dim, keepdim]); }
  argmax(dim?: number, keepdim = false): Tensor { return call1(O.argmax, [this.h, dim ?? null, keepdim]); }
  /** Max of all elements. */
  max(): Tensor { return call1(O.max, [this.h]); }
  min(): Tensor { return call1(O.min, [this.h]); }
  norm(p = 2, dim?: number[], keepdim = false): Tensor { return call1(O.normP, [this.h, p, dim ?? [], keepdim]); }
  cumsum(dim: number): Tensor { return call1(O.cumsum, [this.h, dim, null]); }
  /** [values, indices] */
  sort(dim = -1, descending = false): [Tensor, Tensor] { return callN(O.sort, [this.h, dim, descending]) as [Tensor, Tensor]; }
  topk(k: number, dim = -1, largest = true): [Tensor, Tensor] { return callN(O.topk, [this.h, k, dim, largest, true]) as [Tensor, Tensor]; }

  // ---- shape ---------------------------------------------------------------------------------
  reshape(...shape: number[]): Tensor { return call1(O.reshape, [this.h, shape]); }
  view(...shape: number[]): Tensor { return call1(O.view, [this.h, shape]); }
  permute(...dims: number[]): Tensor { return call1(O.permute, [this.h, dims]); }
  transpose(d0: number, d1: number): Tensor { return call1(O.transpose, [this.h, d0, d1]); }
  /** Transpose of a 2-D tensor. */
  get T(): Tensor { return call1(O.t, [this.h]); }
  flatten(start = 0, end = -1): Tensor { return call1(O.flatten, [this.h, start, end]); }
  unsqueeze(dim: number): Tensor { return call1(O.unsqueeze, [this.h, dim]); }
  squeeze(dim?: number): Tensor { return dim === undefined ? call1(O.squeezeAll, [this.h]) : call1(O.squeeze, [this.h, dim]); }
  expand(...shape: number[]): Tensor { return call1(O.expand, [this.h, shape, false]); }
  repeat(...times: number[]): Tensor { return call1(O.repeat, [this.h, times]); }
  chunk(n: number, dim = 0): Tensor[] { return callN(O.chunk, [this.h, n, dim]); }
  split(size: number | number[], dim = 0): Tensor[] {
    return typeof size === 'number' ? callN(O.split, [this.h, size, dim]) : callN(O.splitSizes, [this.h, size, dim]);
  }
  select(dim: number, index: number): Tensor { return call1(O.select, [this.h, dim, index]); }
  /** Python's t[start:end:step] along dim; null end = to the end. */
  slice(dim: number, start: number | null = 0, end: number | null = null, step = 1): Tensor {
    return call1(O.slice, [this.h, dim, start, end, step]);
  }
  narrow(dim: number, start: number, length: number): Tensor { return call1(O.narrow, [this.h, dim, start, length]); }
  indexSelect(dim: number, index: Tensor): Tensor { return call1(O.indexSelect, [this.h, dim, index.h]); }
  /** Advanced indexing t[i0, i1, …] with integer/bool tensors (null = full slice). */
  index(indices: (Tensor | null)[]): Tensor { return call1(O.index, [this.h, indices.map((t) => (t === null ? null : t.h))]); }
  gather(dim: number, index: Tensor): Tensor { return call1(O.gather, [this.h, dim, index.h, false]); }
  flip(...dims: number[]): Tensor { return call1(O.flip, [this.h, dims]); }
  roll(shifts: number[], dims: number[]): Tensor { return call1(O.roll, [this.h, shifts, dims]); }
  tril(diagonal = 0): Tensor { return call1(O.tril, [this.h, diagonal]); }
  triu(diagonal = 0): Tensor { return call1(O.triu, [this.h, diagonal]); }

  // ---- in place (optimizers, EMA, initialisation). Each returns this. ----------------------
  add_(o: Tensor | Scalar, alpha: number = 1): this {
    if (o instanceof Tensor) callInplace(O.add_, [this.h, o.h, alpha]);
    else callInplace(O.addS_, [this.h, o, alpha]);
    return this;
  }
  sub_(o: Tensor, alpha: number = 1): this { callInplace(O.sub_, [this.h, o.h, alpha]); return this; }
  mul_(o: Tensor | Scalar): this {
    if (o instanceof Tensor) callInplace(O.mul_, [this.h, o.h]);
    else callInplace(O.mulS_, [this.h, o]);
    return this;
  }
  div_(o: Tensor | Scalar): this {
    if (o instanceof Tensor) callInplace(O.div_, [this.h, o.h]);
    else callInplace(O.divS_, [this.h, o]);
    return this;
  }
  /** this += value * t1 * t2 */
  addcmul_(t1: Tensor, t2: Tensor, value: number = 1): this { callInplace(O.addcmul_, [this.h, t1.h, t2.h, value]); return this; }
  /** this += value * t1 / t2 */
  addcdiv_(t1: Tensor, t2: Tensor, value: number = 1): this { callInplace(O.addcdiv_, [this.h, t1.h, t2.h, value]); return this; }
  /** this += weight * (end - this) */
  lerp_(end: Tensor, weight: number): this { callInplace(O.lerp_, [this.h, end.h, weight]); return this; }
  sqrt_(): this { callInplace(O.sqrt_, [this.h]); return this; }
  clamp_(min: number | null, max: number | null = null): this { callInplace(O.clamp_, [this.h, min, max]); return this; }
  zero_(): this { callInplace(O.zero_, [this.h]); return this; }
  fill_(v: Scalar): this { callInplace(O.fill_, [this.h, v]); return this; }
  copy_(src: Tensor): this { callInplace(O.copy_, [this.h, src.h, false]); return this; }
  uniform_(low = 0, high = 1, generator: Generator | null = null): this {
    callInplace(O.uniform_, [this.h, low, high, generator?.h ?? null]);
    return this;
  }
  normal_(mean = 0, std = 1, generator: Generator | null = null): this {
    callInplace(O.normal_, [this.h, mean, std, generator?.h ?? null]);
    return this;
  }
}

/** A random generator (torch.Generator). Its state can be saved for exact resume. */
export class Generator {
  readonly h: import('./native.ts').GeneratorHandle;
  readonly device: Device;
  constructor(seed: number | bigint, device: Device = 'cpu') {
    this.h = native.newGenerator(seed, device);
    this.device = device;
  }
  getState(): Buffer {
    return native.generatorState(this.h);
  }
  setState(state: Buffer): void {
    native.setGeneratorState(this.h, state);
  }
}
