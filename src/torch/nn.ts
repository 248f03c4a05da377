// nn: modules whose parameter names are dotted module paths, equal to checkpoint keys.
//
// Modules are built from a VarBuilder (candle's pattern): each parameter is taken from the
// checkpoint while the module is built — shape-checked and cast — or initialised as PyTorch's
// nn.Module would when there is no checkpoint. Nothing is initialised randomly and then
// overwritten, and a checkpoint that does not fit lists every missing, unexpected and misshapen key.
import type { DType, Device } from './dtype.ts';
import { Tensor, call1, op } from './tensor.ts';
import { keep, tidy } from './scope.ts';
import * as F from './functional.ts';

export class ShapeMismatchError extends Error {
  constructor(
    readonly key: string,
    readonly expected: readonly number[],
    readonly got: readonly number[],
  ) {
    super(`${key}: expected shape [${expected.join(', ')}], the checkpoint has [${got.join(', ')}]`);
    this.name = 'ShapeMismatchError';
  }
}

export class CheckpointMismatchError extends Error {
  constructor(
    readonly missing: string[],
    readonly unexpected: string[],
    readonly mismatched: ShapeMismatchError[],
    what = 'checkpoint',
  ) {
    const parts: string[] = [];
    const list = (xs: string[]) => xs.slice(0, 12).join(', ') + (xs.length > 12 ? `, … (${xs.length} in all)` : '');
    if (missing.length) parts.push(`missing ${missing.length} key(s): ${list(missing)}`);
    if (unexpected.length) parts.push(`unexpected ${unexpected.length} key(s): ${list(unexpected)}`);
    if (mismatched.length) parts.push(`${mismatched.length} shape mismatch(es): ${mismatched.slice(0, 6).map((m) => m.message).join('; ')}`);
    super(`the ${what} does not fit the model: ${parts.join('; ')}`);
    this.name = 'CheckpointMismatchError';
  }
}

/** Where a VarBuilder takes tensors from: a state dict in memory or a lazy file. */
export interface TensorSource {
  has(key: string): boolean;
  /** The tensor's shape without loading it. */
  shape(key: string): readonly number[];
  /** Loads the tensor (caller owns it). */
  get(key: string): Tensor;
  keys(): Iterable<string>;
}

export class MapSource implements TensorSource {
  constructor(private readonly map: ReadonlyMap<string, Tensor>) {}
  has(key: string): boolean {
    return this.map.has(key);
  }
  shape(key: string): readonly number[] {
    return this.map.get(key)!.shape;
  }
  get(key: string): Tensor {
    return this.map.get(key)!.alias();
  }
  keys(): Iterable<string> {
    return this.map.keys();
  }
}

export type Init = (shape: readonly number[], o: { dtype: DType; device: Device }) => Tensor;

/** PyTorch's defaults, so a model built without a checkpoint trains like its PyTorch twin. */
export const init = {
  /** kaiming_uniform_(a=√5): U(-1/√fan_in, 1/√fan_in), nn.Linear's and nn.Conv2d's weight init. */
  kaimingUniform(fanIn: number): Init {
    const bound = fanIn > 0 ? 1 / Math.sqrt(fanIn) : 0;
    return (shape, o) => F.empty(shape, o).uniform_(-bound, bound);
  },
  uniform(bound: number): Init {
    return (shape, o) => F.empty(shape, o).uniform_(-bound, bound);
  },
  normal(std = 1, mean = 0): Init {
    return (shape, o) => F.empty(shape, o).normal_(mean, std);
  },
  zeros: ((shape, o) => F.zeros(shape, o)) as Init,
  ones: ((shape, o) => F.ones(shape, o)) as Init,
};

interface BuildState {
  source: TensorSource | null;
  dtype: DType;
  device: Device;
  used: Set<string>;
  missing: string[];
  mismatched: ShapeMismatchError[];
}

/**
 * Hands each module its parameters by path while the model is built. `pp(name)` descends one
 * module level; `get(name, shape, init)` returns the tensor at `prefix.name`.
 */
export class VarBuilder {
  private constructor(
    private readonly state: BuildState,
    readonly prefix: string,
  ) {}

  /** Random initialisation (no checkpoint). */
  static init(o: { dtype?: DType; device?: Device } = {}): VarBuilder {
    return new VarBuilder({ source: null, dtype: o.dtype ?? 'float32', device: o.device ?? 'cpu', used: new Set(), missing: [], mismatched: [] }, '');
  }
  /** Parameters from a checkpoint; every key must be present with the right shape. */
  static from(source: TensorSource | ReadonlyMap<string, Tensor>, o: { dtype?: DType; device?: Device; prefix?: string } = {}): VarBuilder {
    const src = source instanceof Map ? new MapSource(source) : (source as TensorSource);
    return new VarBuilder({ source: src, dtype: o.dtype ?? 'float32', device: o.device ?? 'cpu', used: new Set(), missing: [], mismatched: [] }, o.prefix ?? '');
  }

  pp(name: string | number): VarBuilder {
    return new VarBuilder(this.state, this.prefix ? `${this.prefix}.${name}` : String(name));
  }
  get dtype(): DType {
    return this.state.dtype;
  }
  get device(): Device {
    return this.state.device;
  }
  get fromCheckpoint(): boolean {
    return this.state.source !== null;
  }
  path(name: string): string {
    return this.prefix ? `${this.prefix}.${name}` : name;
  }

  get(name: string, shape: readonly number[], initFn: Init): Tensor {
    const key = this.path(name);
    const st = this.state;
    const o = { dtype: st.dtype, device: st.device };
    if (st.source === null) return F.noGrad(() => initFn(shape, o));
    if (!st.source.has(key)) {
      st.missing.push(key);
      return F.noGrad(() => initFn(shape, o));
    }
    st.used.add(key);
    const got = st.source.shape(key);
    if (got.length !== shape.length || got.some((d, i) => d !== shape[i])) {
      st.mismatched.push(new ShapeMismatchError(key, shape, got));
      return F.noGrad(() => initFn(shape, o));
    }
    const t = st.source.get(key);
    if (t.dtype === st.dtype && t.device === st.device) return t;
    const c = F.noGrad(() => t.to(st.device).to(st.dtype));
    t.dispose();
    return c;
  }

  /**
   * Call once the model is built: throws CheckpointMismatchError listing every missing key,
   * every checkpoint key the model did not use (unless allowUnused) and every shape mismatch.
   */
  finish(o: { allowUnused?: boolean | ((key: string) => boolean); what?: string } = {}): { unused: string[] } {
    const st = this.state;
    if (st.source === null) return { unused: [] };
    const unused: string[] = [];
    for (const k of st.source.keys()) if (!st.used.has(k) && (!this.prefix || k.startsWith(this.prefix + '.'))) unused.push(k);
    const allow = o.allowUnused;
    const unexpected = allow === true ? [] : typeof allow === 'function' ? unused.filter((k) => !allow(k)) : unused;
    if (st.missing.length || unexpected.length || st.mismatched.length) {
      throw new CheckpointMismatchError(st.missing, unexpected, st.mismatched, o.what);
    }
    return { unused };
  }
}

/** A module with a one-input forward (layers that adapters may wrap: Linear, Conv2d, …). */
export interface Forward {
  forward(x: Tensor): Tensor;
}

/** Base of every module. Registered children and parameters define the state-dict keys. */
export abstract class Module {
  private readonly params = new Map<string, Tensor>();
  private readonly buffers = new Map<string, Tensor>();
  private readonly children = new Map<string, Module>();
  training = true;

  /** Registers (and returns) a trainable parameter. */
  protected param(vb: VarBuilder, name: string, shape: readonly number[], initFn: Init): Tensor {
    const t = keep(vb.get(name, shape, initFn));
    t.requiresGrad_(true);
    this.params.set(name, t);
    return t;
  }
  /** Registers a non-trainable tensor that is part of the state dict (e.g. position_ids). */
  protected buffer(name: string, t: Tensor): Tensor {
    keep(t);
    this.buffers.set(name, t);
    return t;
  }
  /** Registers a child module under `name`, built with the VarBuilder for that path. */
  protected child<M extends Module>(vb: VarBuilder, name: string | number, build: (vb: VarBuilder) => M): M {
    const m = build(vb.pp(name));
    this.children.set(String(name), m);
    return m;
  }
  /** Registers an already built module (e.g. a ModuleList entry). */
  protected addModule<M extends Module>(name: string | number, m: M): M {
    this.children.set(String(name), m);
    return m;
  }

  /**
   * The child called `name`, looked up when called: an adapter that replaced it (LoRA wrapping
   * to_q, a hypernetwork wrapping to_k) is used without the parent knowing.
   */
  protected sub(name: string): Module & Forward {
    const m = this.children.get(name);
    if (!m) throw new Error(`${this.constructor.name} has no child ${name}`);
    return m as Module & Forward;
  }

  /** Replaces the child at a dotted path (adapters wrap modules this way); returns the old one. */
  replaceModule(path: string, m: Module): Module {
    const parts = path.split('.');
    const last = parts.pop()!;
    let parent: Module = this;
    for (const p of parts) {
      const c = parent.children.get(p);
      if (!c) throw new Error(`no module at ${path}`);
      parent = c;
    }
    const old = parent.children.get(last);
    if (!old) throw new Error(`no module at ${path}`);
    parent.children.set(last, m);
    parent.onChildReplaced(last, m);
    return old;
  }
  /** Subclasses holding a field for a child update it here when an adapter replaces it. */
  protected onChildReplaced(_name: string, _m: Module): void {}

  getModule(path: string): Module {
    let m: Module = this;
    if (path === '') return m;
    for (const p of path.split('.')) {
      const c = m.children.get(p);
      if (!c) throw new Error(`no module at ${path}`);
      m = c;
    }
    return m;
  }

  *namedModules(prefix = ''): Generator<[string, Module]> {
    yield [prefix, this];
    for (const [n, c] of this.children) yield* c.namedModules(prefix ? `${prefix}.${n}` : n);
  }
  *namedParameters(prefix = ''): Generator<[string, Tensor]> {
    for (const [n, p] of this.params) yield [prefix ? `${prefix}.${n}` : n, p];
    for (const [n, c] of this.children) yield* c.namedParameters(prefix ? `${prefix}.${n}` : n);
  }
  *namedBuffers(prefix = ''): Generator<[string, Tensor]> {
    for (const [n, b] of this.buffers) yield [prefix ? `${prefix}.${n}` : n, b];
    for (const [n, c] of this.children) yield* c.namedBuffers(prefix ? `${prefix}.${n}` : n);
  }
  parameters(): Tensor[] {
    return [...this.namedParameters()].map(([, p]) => p);
  }
  numParameters(): number {
    let n = 0;
    for (const [, p] of this.namedParameters()) n += p.numel;
    return n;
  }
  /** Parameters and buffers by key. The tensors are the module's own (not copies). */
  stateDict(): Map<string, Tensor> {
    return new Map([...this.namedParameters(), ...this.namedBuffers()]);
  }

  /**
   * Copies values into the existing parameters (identity kept, so optimizers stay valid).
   * strict: every key must match; shapes always must.
   */
  loadStateDict(sd: ReadonlyMap<string, Tensor>, o: { strict?: boolean } = {}): { missing: string[]; unexpected: string[] } {
    const own = this.stateDict();
    const missing = [...own.keys()].filter((k) => !sd.has(k));
    const unexpected = [...sd.keys()].filter((k) => !own.has(k));
    const mismatched: ShapeMismatchError[] = [];
    for (const [k, t] of own) {
      const s = sd.get(k);
      if (!s) continue;
      const a = t.shape;
      const b = s.shape;
      if (a.length !== b.length || a.some((d, i) => d !== b[i])) mismatched.push(new ShapeMismatchError(k, a, b));
    }
    if (mismatched.length || ((o.strict ?? true) && (missing.length || unexpected.length))) {
      throw new CheckpointMismatchError(o.strict ?? true ? missing : [], o.strict ?? true ? unexpected : [], mismatched, 'state dict');
    }
    F.noGrad(() => {
      for (const [k, t] of own) {
        const s = sd.get(k);
        if (s) t.copy_(s);
      }
    });
    return { missing, unexpected };
  }

  /** Moves/casts every parameter and buffer in place (identity kept). */
  to(target: DType | Device): this {
    F.noGrad(() => {
      for (const [, t] of [...this.namedParameters(), ...this.namedBuffers()]) {
        tidy(() => {
          t.setData(t.to(target));
        });
      }
    });
    return this;
  }

  train(on = true): this {
    for (const [, m] of this.namedModules()) m.training = on;
    return this;
  }
  eval(): this {
    return this.train(false);
  }
  /** Sets requiresGrad on every parameter (freezing a base model: requiresGrad_(false)). */
  requiresGrad_(on: boolean): this {
    for (const p of this.parameters()) p.requiresGrad_(on);
    return this;
  }
  zeroGrad(): void {
    for (const p of this.parameters()) p.grad = null;
  }
  /** Disposes every parameter and buffer (the module is unusable afterwards). */
  dispose(): void {
    for (const [, t] of [...this.namedParameters(), ...this.namedBuffers()]) t.dispose();
  }
}

export class Linear extends Module {
  weight: Tensor;
  bias: Tensor | null;
  constructor(
    vb: VarBuilder,
    readonly inFeatures: number,
    readonly outFeatures: number,
    o: { bias?: boolean } = {},
  ) {
    super();
    this.weight = this.param(vb, 'weight', [outFeatures, inFeatures], init.kaimingUniform(inFeatures));
    this.bias = o.bias === false ? null : this.param(vb, 'bias', [outFeatures], init.uniform(1 / Math.sqrt(inFeatures)));
  }
  forward(x: Tensor): Tensor {
    return F.linear(x, this.weight, this.bias);
  }
}

export class Conv2d extends Module {
  weight: Tensor;
  bias: Tensor | null;
  readonly o: Required<Omit<F.Conv2dOptions, 'stride' | 'padding' | 'dilation'>> & F.Conv2dOptions;
  constructor(
    vb: VarBuilder,
    readonly inChannels: number,
    readonly outChannels: number,
    readonly kernel: number,
    o: F.Conv2dOptions & { bias?: boolean } = {},
  ) {
    super();
    const groups = o.groups ?? 1;
    const fanIn = (inChannels / groups) * kernel * kernel;
    this.o = { stride: o.stride ?? 1, padding: o.padding ?? 0, dilation: o.dilation ?? 1, groups };
    this.weight = this.param(vb, 'weight', [outChannels, inChannels / groups, kernel, kernel], init.kaimingUniform(fanIn));
    this.bias = o.bias === false ? null : this.param(vb, 'bias', [outChannels], init.uniform(1 / Math.sqrt(fanIn)));
  }
  forward(x: Tensor): Tensor {
    return F.conv2d(x, this.weight, this.bias, this.o);
  }
}

export class GroupNorm extends Module {
  weight: Tensor | null;
  bias: Tensor | null;
  constructor(
    vb: VarBuilder,
    readonly groups: number,
    readonly channels: number,
    readonly eps = 1e-5,
    affine = true,
  ) {
    super();
    if (channels % groups !== 0) throw new Error(`GroupNorm at ${vb.prefix}: ${channels} channels do not split into ${groups} groups`);
    this.weight = affine ? this.param(vb, 'weight', [channels], init.ones) : null;
    this.bias = affine ? this.param(vb, 'bias', [channels], init.zeros) : null;
  }
  forward(x: Tensor): Tensor {
    return F.groupNorm(x, this.groups, this.weight, this.bias, this.eps);
  }
}

export class LayerNorm extends Module {
  weight: Tensor | null;
  bias: Tensor | null;
  constructor(
    vb: VarBuilder,
    readonly dim: number,
    readonly eps = 1e-5,
    affine = true,
  ) {
    super();
    this.weight = affine ? this.param(vb, 'weight', [dim], init.ones) : null;
    this.bias = affine ? this.param(vb, 'bias', [dim], init.zeros) : null;
  }
  forward(x: Tensor): Tensor {
    return F.layerNorm(x, [this.dim], this.weight, this.bias, this.eps);
  }
}

export class Embedding extends Module {
  weight: Tensor;
  constructor(
    vb: VarBuilder,
    readonly num: number,
    readonly dim: number,
  ) {
    super();
    this.weight = this.param(vb, 'weight', [num, dim], init.normal(1));
  }
  forward(ids: Tensor): Tensor {
    return F.embedding(this.weight, ids);
  }
}

export class Dropout extends Module {
  constructor(readonly p: number) {
    super();
  }
  forward(x: Tensor): Tensor {
    return F.dropout(x, this.p, this.training);
  }
}

export type Activation = 'silu' | 'gelu' | 'gelu_tanh' | 'quick_gelu' | 'relu' | 'tanh' | 'sigmoid' | 'linear' | 'leakyrelu' | 'elu' | 'swish' | 'mish';

/** Applies an activation by name (configs name them; hypernetworks list A1111's). */
export function activate(x: Tensor, a: Activation): Tensor {
  switch (a) {
    case 'silu':
    case 'swish':
      return x.silu();
    case 'gelu':
      return x.gelu();
    case 'gelu_tanh':
      return x.gelu('tanh');
    case 'quick_gelu':
      // CLIP's x * sigmoid(1.702 x)
      return tidy(() => x.mul(x.mul(1.702).sigmoid()));
    case 'relu':
      return x.relu();
    case 'tanh':
      return x.tanh();
    case 'sigmoid':
      return x.sigmoid();
    case 'linear':
      return x.alias();
    case 'leakyrelu':
      return call1(op('aten::leaky_relu'), [x.h, 0.01]);
    case 'elu':
      return call1(op('aten::elu'), [x.h, 1, 1, 1]);
    case 'mish':
      return call1(op('aten::mish'), [x.h]);
  }
}

/** nn.ModuleList: children named 0, 1, 2, … */
export class ModuleList<M extends Module> extends Module {
  readonly items: M[] = [];
  constructor(items: M[] = []) {
    super();
    items.forEach((m) => this.push(m));
  }
  push(m: M): void {
    this.addModule(this.items.length, m);
    this.items.push(m);
  }
  get length(): number {
    return this.items.length;
  }
  at(i: number): M {
    return this.items[i];
  }
  [Symbol.iterator](): Iterator<M> {
    return this.items[Symbol.iterator]();
  }
  protected override onChildReplaced(name: string, m: Module): void {
    this.items[Number(name)] = m as M;
  }
}
