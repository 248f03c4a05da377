// A1111 hypernetworks (sd-formats.md §7): the per-width MLP pairs of modules/hypernetworks/
// hypernetwork.py, the .pt file A1111 reads and writes, and their application to a UNet.
//
// Application wraps, it does not patch (STYLE rule 7): each transformer block's attn1 and attn2
// get their `to_k` and `to_v` replaced by module path with a HyperContextLinear(base), which
// computes base(chain(context)), where chain runs every active hypernetwork's module for the
// context's width in order (A1111 apply_hypernetworks, §7.3). `remove()` puts the original
// Linear objects back. The wrapper shows its base's tensors under its own path, so the UNet's
// state dict, parameters() and freezing are unchanged while hypernetworks are applied; the
// hypernetwork's own parameters live in the Hypernetwork object, not in the UNet.
import { basename, extname } from 'node:path';
import * as T from '../torch/index.ts';
import { nn, tidy, type Tensor, type DType, type Device } from '../torch/index.ts';
import { BasicTransformerBlock } from '../models/attention.ts';
import { PyFloat, TorchDict, TorchTuple, loadTorchFile, saveTorchFile, type SaveValue, type TorchValue } from '../formats/torchfile.ts';
import {
  defaultDropoutStructure,
  disposeHypernetwork,
  hypernetworkFromObject,
  hypernetworkLayers,
  hypernetworkToObject,
  isHypernetworkObject,
  validateHypernetwork,
  type Hypernetwork as HypernetworkData,
  type HypernetworkLayer,
  type StateDict,
} from '../formats/layouts/index.ts';

// ---- settings -----------------------------------------------------------------------------------

export type WeightInit = 'Normal' | 'XavierUniform' | 'XavierNormal' | 'KaimingUniform' | 'KaimingNormal';
export const WEIGHT_INITS: readonly WeightInit[] = ['Normal', 'XavierUniform', 'XavierNormal', 'KaimingUniform', 'KaimingNormal'];

/** What decides one HypernetworkModule's layers (§7.2) and, for new ones, its initialisation. */
export interface HypernetworkSettings {
  /** Multipliers of the width, starting and ending with 1, e.g. [1, 2, 1]. */
  readonly layerStructure: number[];
  /** null or 'linear' = no activation; otherwise a name of HYPERNETWORK_ACTIVATIONS. */
  readonly activation: string | null;
  /** File key `is_layer_norm`. */
  readonly addLayerNorm: boolean;
  /** One dropout probability per entry of layerStructure (entry i+1 follows Linear i). */
  readonly dropoutStructure: number[];
  /** Whether the last Linear is followed by the activation too. */
  readonly activateOutput: boolean;
  /** Only used when a module is created (a loaded one keeps its tensors). */
  readonly weightInit: string;
}

type ActivationFn = (x: Tensor, training: boolean) => Tensor;
const aten = (name: string, ...args: unknown[]): ActivationFn => (x) => T.callOp(name, '', x, ...args) as Tensor;

/**
 * A1111's activation_dict: its six names (swish is Hardswish there, not SiLU) plus every
 * torch.nn.modules.activation class by its lower-case name, as torch constructs it with no
 * arguments. Each is the ATen op torch's module calls, with torch's default arguments.
 */
const ACTIVATIONS: Readonly<Record<string, ActivationFn>> = {
  relu: (x) => x.relu(),
  leakyrelu: aten('aten::leaky_relu', 0.01),
  elu: aten('aten::elu', 1, 1, 1),
  swish: aten('aten::hardswish'),
  hardswish: aten('aten::hardswish'),
  tanh: (x) => x.tanh(),
  sigmoid: (x) => x.sigmoid(),
  gelu: (x) => x.gelu(),
  silu: (x) => x.silu(),
  mish: aten('aten::mish'),
  relu6: aten('aten::hardtanh', 0, 6),
  selu: aten('aten::selu'),
  celu: aten('aten::celu', 1),
  hardsigmoid: aten('aten::hardsigmoid'),
  hardtanh: aten('aten::hardtanh', -1, 1),
  hardshrink: aten('aten::hardshrink', 0.5),
  softshrink: aten('aten::softshrink', 0.5),
  softplus: aten('aten::softplus', 1, 20),
  softsign: (x) => tidy(() => x.div(x.abs().add(1))),
  tanhshrink: (x) => tidy(() => x.sub(x.tanh())),
  logsigmoid: aten('aten::log_sigmoid'),
  // Random slopes in U(1/8, 1/3) while training, their mean in eval (nn.RReLU).
  rrelu: (x, training) => T.callOp('aten::rrelu', '', x, 1 / 8, 1 / 3, training, null) as Tensor,
};

/** torch.nn activation classes A1111 would list but that cannot work here, with the reason. */
const UNSUPPORTED: Readonly<Record<string, string>> = {
  prelu: 'PReLU has a learnable weight that the hypernetwork layout (§7.2) has no key for',
  threshold: 'Threshold needs constructor arguments, so A1111 cannot build it either',
  glu: 'GLU halves the width, so the next layer would not fit',
  softmax: 'Softmax without a dim picks an implicit dimension (the batch, for 3-D input)',
  softmin: 'Softmin without a dim picks an implicit dimension (the batch, for 3-D input)',
  logsoftmax: 'LogSoftmax without a dim picks an implicit dimension (the batch, for 3-D input)',
  softmax2d: 'Softmax2d needs 3-D or 4-D image input',
  multiheadattention: 'MultiheadAttention is not an activation',
};

/** The activation names a hypernetwork may use (besides 'linear' and null = none). */
export const HYPERNETWORK_ACTIVATIONS: readonly string[] = Object.keys(ACTIVATIONS);

/** Problems with settings, as sentences (empty when they can build modules). */
export function checkHypernetworkSettings(s: HypernetworkSettings): string[] {
  const p: string[] = [];
  const ls = s.layerStructure;
  if (ls.length < 2 || ls[0] !== 1 || ls[ls.length - 1] !== 1) p.push(`the layer structure must start and end with 1, got [${ls.join(', ')}]`);
  if (ls.some((x) => !(Number.isFinite(x) && x > 0))) p.push(`layer structure entries must be positive numbers, got [${ls.join(', ')}]`);
  if (s.dropoutStructure.length !== ls.length) {
    p.push(`the dropout structure [${s.dropoutStructure.join(', ')}] must have one entry per layer structure entry (${ls.length})`);
  }
  if (s.dropoutStructure.some((x) => !(x >= 0 && x < 1))) p.push(`dropout probabilities must be in [0, 1), got [${s.dropoutStructure.join(', ')}]`);
  const a = s.activation;
  if (a !== null && a !== 'linear' && !(a in ACTIVATIONS)) {
    const why = UNSUPPORTED[a];
    p.push(why !== undefined
      ? `the activation ${JSON.stringify(a)} cannot be used: ${why}`
      : `unknown activation ${JSON.stringify(a)}; use linear or one of ${HYPERNETWORK_ACTIVATIONS.join(', ')}`);
  }
  return p;
}

// ---- the module (§7.2) ------------------------------------------------------------------------

/**
 * Draws an initial tensor with the engine's generator. Values are drawn in float32 on the
 * generator's device and then moved, so one seed gives the same weights on every device.
 */
function drawn(gen: T.Generator | null, fill: (t: Tensor, g: T.Generator | null) => void): nn.Init {
  return (shape, o) => {
    const dev: Device = gen?.device ?? o.device;
    const t = T.empty(shape, { dtype: 'float32', device: dev });
    fill(t, gen);
    if (dev === o.device && o.dtype === 'float32') return t;
    const moved = tidy(() => t.to(o.device).to(o.dtype));
    t.dispose();
    return moved;
  };
}

/**
 * A1111's initialisation (HypernetworkModule.__init__): Normal = N(0, 0.01) weights; Xavier and
 * Kaiming (nonlinearity relu, or leaky_relu with slope 0 for leakyrelu: the same gain √2) by
 * their formulas; biases 0. LayerNorm weights are N(0, 0.01) whatever the scheme (A1111's quirk).
 */
function weightInit(scheme: string, fanIn: number, fanOut: number, gen: T.Generator | null): nn.Init {
  switch (scheme) {
    case 'Normal':
      return drawn(gen, (t, g) => t.normal_(0, 0.01, g));
    case 'XavierUniform': {
      const b = Math.sqrt(6 / (fanIn + fanOut));
      return drawn(gen, (t, g) => t.uniform_(-b, b, g));
    }
    case 'XavierNormal':
      return drawn(gen, (t, g) => t.normal_(0, Math.sqrt(2 / (fanIn + fanOut)), g));
    case 'KaimingUniform': {
      const b = Math.sqrt(6 / fanIn);
      return drawn(gen, (t, g) => t.uniform_(-b, b, g));
    }
    case 'KaimingNormal':
      return drawn(gen, (t, g) => t.normal_(0, Math.sqrt(2 / fanIn), g));
    default:
      // Thrown only when a new module is initialised: a loaded one never draws.
      return () => {
        throw new Error(`unknown hypernetwork weight initialisation ${JSON.stringify(scheme)}; use one of ${WEIGHT_INITS.join(', ')}`);
      };
  }
}

/** torch.nn.Linear inside a hypernetwork (own class: its initialisation is A1111's, not torch's). */
class HyperLinear extends nn.Module implements nn.Forward {
  readonly weight: Tensor;
  readonly bias: Tensor;
  constructor(vb: nn.VarBuilder, readonly inFeatures: number, readonly outFeatures: number, scheme: string, gen: T.Generator | null) {
    super();
    this.weight = this.param(vb, 'weight', [outFeatures, inFeatures], weightInit(scheme, inFeatures, outFeatures, gen));
    this.bias = this.param(vb, 'bias', [outFeatures], nn.init.zeros);
  }
  forward(x: Tensor): Tensor {
    return T.linear(x, this.weight, this.bias);
  }
}

/** torch.nn.LayerNorm (eps 1e-5) with A1111's N(0, 0.01) weight initialisation. */
class HyperLayerNorm extends nn.Module implements nn.Forward {
  readonly weight: Tensor;
  readonly bias: Tensor;
  constructor(vb: nn.VarBuilder, readonly dim: number, gen: T.Generator | null) {
    super();
    this.weight = this.param(vb, 'weight', [dim], weightInit('Normal', dim, dim, gen));
    this.bias = this.param(vb, 'bias', [dim], nn.init.zeros);
  }
  forward(x: Tensor): Tensor {
    return T.layerNorm(x, [this.dim], this.weight, this.bias, 1e-5);
  }
}

/** A parameter-less activation layer of the Sequential (it still takes an index, §7.2). */
class HyperActivation extends nn.Module implements nn.Forward {
  private readonly fn: ActivationFn;
  constructor(readonly name: string) {
    super();
    const fn = ACTIVATIONS[name];
    if (fn === undefined) throw new Error(`unknown hypernetwork activation ${JSON.stringify(name)}`);
    this.fn = fn;
  }
  forward(x: Tensor): Tensor {
    return this.fn(x, this.training);
  }
}

/**
 * One HypernetworkModule(dim): `linear` is the nn.Sequential of §7.2, so its state-dict keys are
 * `linear.<idx>.weight|bias` with indices counting the parameter-less layers. forward(x, m) =
 * x + linear(x)·m, with m forced to 1 while training (A1111).
 */
export class HypernetworkModule extends nn.Module {
  readonly layers: readonly HypernetworkLayer[];
  private readonly seq: nn.ModuleList<nn.Module & nn.Forward>;

  /**
   * Built from `vb`: from a state dict (VarBuilder.from) or newly initialised (VarBuilder.init),
   * drawing from `generator` (the default generator when null).
   */
  constructor(vb: nn.VarBuilder, readonly dim: number, readonly settings: HypernetworkSettings, o: { generator?: T.Generator | null } = {}) {
    super();
    const problems = checkHypernetworkSettings(settings);
    if (problems.length) throw new Error(`cannot build a hypernetwork module: ${problems.join('; ')}`);
    const gen = o.generator ?? null;
    this.layers = hypernetworkLayers(dim, settings);
    const lvb = vb.pp('linear');
    this.seq = this.child(vb, 'linear', () => new nn.ModuleList<nn.Module & nn.Forward>());
    for (const l of this.layers) {
      const v = lvb.pp(l.index);
      switch (l.kind) {
        case 'linear':
          this.seq.push(new HyperLinear(v, l.in, l.out, settings.weightInit, gen));
          break;
        case 'activation':
          this.seq.push(new HyperActivation(l.name));
          break;
        case 'layernorm':
          this.seq.push(new HyperLayerNorm(v, l.dim, gen));
          break;
        case 'dropout':
          this.seq.push(new nn.Dropout(l.p));
          break;
      }
    }
  }

  /** A new module with A1111's initialisation. */
  static create(dim: number, settings: HypernetworkSettings, o: { generator?: T.Generator | null; dtype?: DType; device?: Device } = {}): HypernetworkModule {
    return new HypernetworkModule(nn.VarBuilder.init({ dtype: o.dtype, device: o.device }), dim, settings, o);
  }

  /**
   * A module from a state dict (`linear.<idx>.*` keys); every key must be there with its shape.
   * The module's tensors are its own copies (the caller keeps ownership of `sd`).
   */
  static fromStateDict(dim: number, settings: HypernetworkSettings, sd: ReadonlyMap<string, Tensor>, o: { dtype?: DType; device?: Device; what?: string } = {}): HypernetworkModule {
    const source: nn.TensorSource = {
      has: (k) => sd.has(k),
      shape: (k) => sd.get(k)!.shape,
      // A copy, so training never writes into a memory-mapped file or the caller's tensors.
      get: (k) => T.noGrad(() => sd.get(k)!.clone()),
      keys: () => sd.keys(),
    };
    const vb = nn.VarBuilder.from(source, { dtype: o.dtype, device: o.device });
    const m = new HypernetworkModule(vb, dim, settings);
    try {
      vb.finish({ what: o.what ?? `hypernetwork module for width ${dim}` });
    } catch (e) {
      m.dispose();
      throw e;
    }
    return m;
  }

  /** x [..., dim] → x + MLP(x)·multiplier (multiplier 1 while training). */
  forward(x: Tensor, multiplier = 1): Tensor {
    const m = this.training ? 1 : multiplier;
    if (m === 0) return x.alias();
    return tidy(() => {
      let h = x;
      for (const layer of this.seq) h = layer.forward(h);
      return x.add(m === 1 ? h : h.mul(m));
    });
  }
}

// ---- the hypernetwork (§7.1) ------------------------------------------------------------------

export interface CreateHypernetworkOptions {
  /** Context widths to make a (k, v) pair for. Default 768, 320, 640, 1280 (add 1024 for SD2). */
  sizes?: readonly number[];
  layerStructure?: readonly number[];
  /** Default 'linear' (none). */
  activation?: string | null;
  addLayerNorm?: boolean;
  /** Without dropoutStructure: A1111's derived structure (0.3 inside, §7.2). Default false. */
  useDropout?: boolean;
  /** With useDropout and no dropoutStructure: dropout after the last hidden layer too (A1111 default true). */
  lastLayerDropout?: boolean;
  dropoutStructure?: readonly number[];
  /** Default 'Normal'. */
  weightInit?: WeightInit;
  /** Default false (A1111's Hypernetwork constructor). */
  activateOutput?: boolean;
  optionalInfo?: string | null;
  sdCheckpoint?: string | null;
  sdCheckpointName?: string | null;
  /** Seed of a generator made for the initialisation; or pass the generator itself. */
  seed?: number | bigint;
  generator?: T.Generator;
  dtype?: DType;
  device?: Device;
}

export const DEFAULT_HYPERNETWORK_SIZES: readonly number[] = [768, 320, 640, 1280];

export class HypernetworkFileError extends Error {
  constructor(
    readonly file: string,
    detail: string,
  ) {
    super(`${file}: ${detail}`);
    this.name = 'HypernetworkFileError';
  }
}

/**
 * An A1111 hypernetwork: for each context width a pair of HypernetworkModules, the first
 * transforming the context for K, the second for V. New and loaded ones start in eval mode with
 * frozen parameters (A1111 eval_mode); train() makes them trainable.
 */
export class Hypernetwork {
  name: string;
  /** Optimizer steps trained (file key `step`). */
  step: number;
  sdCheckpoint: string | null;
  sdCheckpointName: string | null;
  optionalInfo: string | null;
  /** Width → [k module, v module], in the file's order. */
  readonly modules: ReadonlyMap<number, readonly [HypernetworkModule, HypernetworkModule]>;
  private trainingMode = false;

  private constructor(
    readonly settings: HypernetworkSettings & { readonly useDropout: boolean },
    modules: Map<number, readonly [HypernetworkModule, HypernetworkModule]>,
    meta: { name: string; step: number; sdCheckpoint: string | null; sdCheckpointName: string | null; optionalInfo: string | null },
  ) {
    this.modules = modules;
    this.name = meta.name;
    this.step = meta.step;
    this.sdCheckpoint = meta.sdCheckpoint;
    this.sdCheckpointName = meta.sdCheckpointName;
    this.optionalInfo = meta.optionalInfo;
    this.train(false);
  }

  /** A new hypernetwork with A1111's defaults (§7.4) and initialisation (§7.2). */
  static create(name: string, opts: CreateHypernetworkOptions = {}): Hypernetwork {
    const layerStructure = [...(opts.layerStructure ?? [1, 2, 1])];
    const dropoutStructure = opts.dropoutStructure !== undefined
      ? [...opts.dropoutStructure]
      : defaultDropoutStructure(layerStructure, opts.useDropout ?? false, opts.lastLayerDropout ?? true);
    // As A1111 reads it back: use_dropout follows the structure ([1, 2, 1] without last-layer
    // dropout has none to use).
    const useDropout = dropoutStructure.some((p) => p > 0);
    const settings = {
      layerStructure,
      activation: opts.activation === undefined ? 'linear' : opts.activation,
      addLayerNorm: opts.addLayerNorm ?? false,
      dropoutStructure,
      activateOutput: opts.activateOutput ?? false,
      weightInit: opts.weightInit ?? 'Normal',
      useDropout,
    };
    const problems = checkHypernetworkSettings(settings);
    if (!WEIGHT_INITS.includes(settings.weightInit)) problems.push(`unknown weight initialisation ${JSON.stringify(settings.weightInit)}; use one of ${WEIGHT_INITS.join(', ')}`);
    const sizes = opts.sizes ?? DEFAULT_HYPERNETWORK_SIZES;
    if (sizes.length === 0) problems.push('no sizes were given (the context widths to make modules for, e.g. 768, 320, 640, 1280)');
    for (const s of sizes) if (!(Number.isInteger(s) && s > 0)) problems.push(`size ${s} is not a positive integer width`);
    if (new Set(sizes).size !== sizes.length) problems.push(`sizes [${sizes.join(', ')}] repeat a width`);
    if (problems.length) throw new Error(`cannot create hypernetwork ${JSON.stringify(name)}: ${problems.join('; ')}`);

    const generator = opts.generator ?? (opts.seed !== undefined ? new T.Generator(opts.seed) : null);
    const modules = new Map<number, readonly [HypernetworkModule, HypernetworkModule]>();
    const o = { generator, dtype: opts.dtype, device: opts.device };
    try {
      for (const size of sizes) modules.set(size, [HypernetworkModule.create(size, settings, o), HypernetworkModule.create(size, settings, o)]);
    } catch (e) {
      for (const pair of modules.values()) for (const m of pair) m.dispose();
      throw e;
    }
    return new Hypernetwork(settings, modules, {
      name, step: 0, sdCheckpoint: opts.sdCheckpoint ?? null, sdCheckpointName: opts.sdCheckpointName ?? null, optionalInfo: opts.optionalInfo ?? null,
    });
  }

  /**
   * Reads an A1111 hypernetwork .pt (§7.1) through the restricted unpickler, with A1111's
   * defaults for missing settings and the very old linear1/linear2 names. Throws an error naming
   * the file when it is not a hypernetwork or its tensors do not fit its settings.
   */
  static fromFile(path: string, o: { dtype?: DType; device?: Device } = {}): Hypernetwork {
    const tree: TorchValue = loadTorchFile(path);
    if (!isHypernetworkObject(tree)) {
      throw new HypernetworkFileError(path, 'is not an A1111 hypernetwork (it has no layer_structure and no per-width (k, v) module pairs); is it a LoRA, an embedding or a checkpoint?');
    }
    let data: HypernetworkData;
    try {
      data = hypernetworkFromObject(tree, { fileStem: basename(path, extname(path)) });
    } catch (e) {
      throw new HypernetworkFileError(path, `${(e as Error).message}; the file is damaged or was not written as an A1111 hypernetwork`);
    }
    const settings = {
      layerStructure: data.layerStructure,
      activation: data.activation,
      addLayerNorm: data.addLayerNorm,
      dropoutStructure: data.dropoutStructure,
      activateOutput: data.activateOutput,
      weightInit: data.weightInit,
      useDropout: data.useDropout,
    };
    const modules = new Map<number, readonly [HypernetworkModule, HypernetworkModule]>();
    try {
      if (data.modules.size === 0) throw new HypernetworkFileError(path, 'holds hypernetwork settings but no per-width modules, so it would change nothing');
      const problems = checkHypernetworkSettings(settings);
      if (problems.length) throw new HypernetworkFileError(path, `has settings sdtune cannot use: ${problems.join('; ')}`);
      const wrong = validateHypernetwork(data);
      if (wrong.length) {
        const shown = wrong.slice(0, 6).join('; ') + (wrong.length > 6 ? `; … (${wrong.length} problems in all)` : '');
        throw new HypernetworkFileError(path,
          `its tensors do not fit its own settings (layer_structure [${data.layerStructure.join(', ')}], activation ${String(data.activation)}, layer norm ${data.addLayerNorm ? 'on' : 'off'}): ${shown}. ` +
          'The file is damaged or was written by a tool with another layout; re-export it from the tool that trained it');
      }
      for (const [dim, [k, v]] of data.modules) {
        modules.set(dim, [
          HypernetworkModule.fromStateDict(dim, settings, k, { ...o, what: `hypernetwork ${path}, module ${dim} k` }),
          HypernetworkModule.fromStateDict(dim, settings, v, { ...o, what: `hypernetwork ${path}, module ${dim} v` }),
        ]);
      }
    } catch (e) {
      for (const pair of modules.values()) for (const m of pair) m.dispose();
      throw e;
    } finally {
      disposeHypernetwork(data);
    }
    return new Hypernetwork(settings, modules, data);
  }

  /** The context widths this hypernetwork has modules for. */
  get sizes(): number[] {
    return [...this.modules.keys()];
  }

  /** The module transforming a context of width `width` for K or V, if there is one. */
  module(width: number, which: 'k' | 'v'): HypernetworkModule | undefined {
    return this.modules.get(width)?.[which === 'k' ? 0 : 1];
  }

  /** Every parameter, named `<width>.<k|v>.linear.<idx>.<weight|bias>` (A1111 weights()). */
  namedParameters(): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [dim, [k, v]] of this.modules) {
      for (const [n, p] of k.namedParameters()) out.push([`${dim}.k.${n}`, p]);
      for (const [n, p] of v.namedParameters()) out.push([`${dim}.v.${n}`, p]);
    }
    return out;
  }
  /** The trainable tensors (what the optimizer gets). */
  parameters(): Tensor[] {
    return this.namedParameters().map(([, p]) => p);
  }
  numParameters(): number {
    return this.parameters().reduce((n, p) => n + p.numel, 0);
  }

  get training(): boolean {
    return this.trainingMode;
  }
  /**
   * A1111 train_mode / eval_mode: training = dropout on, multiplier forced to 1, parameters
   * require grad; eval = dropout off, the strength applies, parameters frozen.
   */
  train(on = true): this {
    this.trainingMode = on;
    for (const pair of this.modules.values()) {
      for (const m of pair) {
        m.train(on);
        m.requiresGrad_(on);
      }
    }
    return this;
  }
  eval(): this {
    return this.train(false);
  }

  /** Moves or casts every module in place (parameter identity kept). */
  to(target: DType | Device): this {
    for (const pair of this.modules.values()) for (const m of pair) m.to(target);
    return this;
  }

  /**
   * Writes the dict A1111's Hypernetwork.save writes (§7.1), in its key order: each width an int
   * key → a tuple of two OrderedDict state dicts, then the settings. The file has only
   * data.pkl, data/N and version entries, so A1111's safe loader accepts it (§2.4).
   */
  save(path: string): void {
    const data: HypernetworkData = {
      name: this.name,
      step: this.step,
      layerStructure: [...this.settings.layerStructure],
      activation: this.settings.activation,
      addLayerNorm: this.settings.addLayerNorm,
      useDropout: this.settings.useDropout,
      dropoutStructure: [...this.settings.dropoutStructure],
      activateOutput: this.settings.activateOutput,
      lastLayerDropout: false,
      weightInit: this.settings.weightInit,
      sdCheckpoint: this.sdCheckpoint,
      sdCheckpointName: this.sdCheckpointName,
      optionalInfo: this.optionalInfo,
      modules: new Map([...this.modules].map(([dim, [k, v]]) => [dim, [k.stateDict(), v.stateDict()]])),
    };
    const obj = hypernetworkToObject(data);
    const owned: StateDict[] = [];
    try {
      const out = new Map<string | number, SaveValue>();
      for (const [key, value] of obj) {
        if (typeof key === 'number') {
          // A1111: (k.state_dict(), v.state_dict()) — a tuple of OrderedDicts.
          const pair = value as StateDict[];
          owned.push(...pair);
          out.set(key, new TorchTuple<SaveValue>(pair.map((sd) => new TorchDict<SaveValue>(sd, true))));
        } else if (key === 'layer_structure' || key === 'dropout_structure') {
          // A1111 parses both as floats ([1.0, 2.0, 1.0]).
          out.set(key, (value as number[]).map((x) => new PyFloat(x)));
        } else {
          out.set(key, value as SaveValue);
        }
      }
      saveTorchFile(path, out);
    } finally {
      for (const sd of owned) for (const t of sd.values()) t.dispose();
    }
  }

  /** Frees every module's tensors; remove() any application first. */
  dispose(): void {
    for (const pair of this.modules.values()) for (const m of pair) m.dispose();
  }
}

// ---- application (§7.3) -----------------------------------------------------------------------

export interface ActiveHypernetwork {
  net: Hypernetwork;
  /** A1111's multiplier (`<hypernet:name:strength>`); ignored while the net trains. Default 1. */
  strength?: number;
}

/** What every wrapper of one application reads, so setStrength and bypass act at once. */
interface ApplyState {
  entries: { net: Hypernetwork; strength: number }[];
  bypassed: boolean;
}

/**
 * Replaces an Attention's to_k or to_v: forward(ctx) = base(chain(ctx)), where chain applies each
 * active hypernetwork's k (or v) module for ctx's width in order, at its strength; widths
 * without a module pass through. The base's tensors appear under this module's path, so state
 * dict keys stay those of the plain UNet.
 */
export class HyperContextLinear extends nn.Module implements nn.Forward {
  constructor(
    readonly base: nn.Module & nn.Forward,
    readonly which: 'k' | 'v',
    private readonly state: ApplyState,
  ) {
    super();
  }

  forward(ctx: Tensor): Tensor {
    const st = this.state;
    if (st.bypassed || st.entries.length === 0) return this.base.forward(ctx);
    return tidy(() => {
      const width = ctx.size(-1);
      let c = ctx;
      for (const e of st.entries) {
        const m = e.net.module(width, this.which);
        if (m !== undefined) c = m.forward(c, e.strength);
      }
      return this.base.forward(c);
    });
  }

  override *namedParameters(prefix = ''): Generator<[string, Tensor]> {
    yield* this.base.namedParameters(prefix);
  }
  override *namedBuffers(prefix = ''): Generator<[string, Tensor]> {
    yield* this.base.namedBuffers(prefix);
  }
  /** This wrapper at its path, then what lies below the base (a LoRA's parts), so train() reaches them. */
  override *namedModules(prefix = ''): Generator<[string, nn.Module]> {
    yield [prefix, this];
    for (const [p, m] of this.base.namedModules(prefix)) if (m !== this.base) yield [p, m];
  }
}

export interface HypernetworkHandle {
  /** The wrapped module paths (`….attn1.to_k`, …). */
  readonly paths: readonly string[];
  /** Context widths the wrapped projections take (from their Linear's in-features). */
  readonly widths: ReadonlySet<number>;
  /** Sets the strength of one applied hypernetwork, or of all when `net` is omitted. */
  setStrength(strength: number, net?: Hypernetwork): void;
  /** Bypass: the wrappers pass the context through unchanged (the base model's prediction). */
  bypass(on: boolean): void;
  /** Puts the original to_k/to_v modules back; later calls do nothing. */
  remove(): void;
}

function checkStrength(s: number): number {
  if (!Number.isFinite(s)) throw new Error(`hypernetwork strength must be a finite number, got ${s}`);
  return s;
}

/**
 * Applies hypernetworks to every transformer block's attn1 and attn2 (to_k and to_v) of `unet`,
 * chained in the given order. Apply after any LoRA (a LoRA looks for Linear modules, and a
 * wrapped to_k is no longer one); remove in the reverse order.
 */
export function applyHypernetworks(unet: nn.Module, nets: readonly ActiveHypernetwork[]): HypernetworkHandle {
  const state: ApplyState = { entries: nets.map((e) => ({ net: e.net, strength: checkStrength(e.strength ?? 1) })), bypassed: false };
  const targets: { path: string; which: 'k' | 'v' }[] = [];
  for (const [path, m] of unet.namedModules()) {
    if (!(m instanceof BasicTransformerBlock)) continue;
    for (const attn of ['attn1', 'attn2']) {
      for (const which of ['k', 'v'] as const) targets.push({ path: `${path ? path + '.' : ''}${attn}.to_${which}`, which });
    }
  }
  if (targets.length === 0) throw new Error('cannot apply hypernetworks: the model has no transformer blocks (pass the UNet)');
  for (const t of targets) {
    if (unet.getModule(t.path) instanceof HyperContextLinear) {
      throw new Error(`cannot apply hypernetworks: ${t.path} already has hypernetworks applied; remove() them first, or apply all of them in one call`);
    }
  }
  const first = unet.getModule(targets[0].path);
  const device = first instanceof nn.Linear ? first.weight.device : null;
  for (const e of state.entries) {
    const p = e.net.parameters()[0];
    if (device !== null && p !== undefined && p.device !== device) {
      throw new Error(`cannot apply hypernetwork ${e.net.name}: it is on ${p.device} but the UNet is on ${device}; move it first with .to('${device}')`);
    }
  }
  const wrappers: { path: string; wrapper: HyperContextLinear; base: nn.Module }[] = [];
  const widths = new Set<number>();
  for (const t of targets) {
    const base = unet.getModule(t.path) as nn.Module & nn.Forward;
    if (base instanceof nn.Linear) widths.add(base.inFeatures);
    const wrapper = new HyperContextLinear(base, t.which, state);
    unet.replaceModule(t.path, wrapper);
    wrappers.push({ path: t.path, wrapper, base });
  }
  let removed = false;
  return {
    paths: wrappers.map((w) => w.path),
    widths,
    setStrength(strength: number, net?: Hypernetwork): void {
      checkStrength(strength);
      const hit = state.entries.filter((e) => net === undefined || e.net === net);
      if (net !== undefined && hit.length === 0) throw new Error(`hypernetwork ${net.name} is not part of this application`);
      for (const e of hit) e.strength = strength;
    },
    bypass(on: boolean): void {
      state.bypassed = on;
    },
    remove(): void {
      if (removed) return;
      // Check every path first, so a failed remove changes nothing.
      for (const w of wrappers) {
        if (unet.getModule(w.path) !== w.wrapper) {
          throw new Error(`cannot remove the hypernetworks: ${w.path} was replaced after they were applied; remove the later adapter first`);
        }
      }
      for (const w of wrappers) unet.replaceModule(w.path, w.base);
      removed = true;
      state.entries = [];
    },
  };
}
