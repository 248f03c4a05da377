// LoRA as a module adapter (sd-formats.md §5): a `Linear` or `Conv2d` is swapped, by module path,
// for a LoRALinear / LoRAConv2d that holds the original layer and adds
//   y = base(x) + Σ_i up_i(down_i(x)) · (alpha_i / r_i) · multiplier_i
// (kohya networks/lora.py LoRAModule.forward). The base module object is kept, so remove() puts
// the very same object back. Several LoRAs can sit on one layer (generation stacks files at
// weights); each is a LoraBranch with its own multiplier.
//
// Three ways in:
// - injectLora: new trainable LoRA (kohya init: down kaiming_uniform(a=√5), up zeros) or one
//   built from a LoraFile (resume, fixtures). Its handle lists the parameters by kohya key and
//   turns them back into a LoraFile for loraToKohya / loraToPeft.
// - applyLoraFiles: frozen LoRAs for generation, wrapped (weight 0 is exactly the base model).
// - mergeLoras: A1111's bake-in, W' = W + reshape(up @ down) · scale · w, for `sdtune merge`.
//
// Names: inside a model the wrapped layer keeps its checkpoint keys (`…to_q.weight`); the LoRA
// injected for training adds `…to_q.lora_down.weight` / `.lora_up.weight` (kohya's own suffixes),
// and LoRAs applied from files add `…to_q.<name>.lora_down.weight`. A LoraFile is keyed by PEFT
// module path (`unet.<diffusers path>`, `text_encoder.<HF path>`), as src/formats/layouts/lora.ts.
import { extname } from 'node:path';
import * as T from '../torch/index.ts';
import { type Tensor, tidy, nn } from '../torch/index.ts';
import { SafetensorsFile } from '../formats/safetensors.ts';
import { loadTorchStateDict } from '../formats/torchfile.ts';
import {
  kohyaName, loraFromKohya, loraFromPeft, rankOf, splitComponent, summarizeLoraKeys,
  type LoraComponent, type LoraFile, type LoraModule, type ModulePaths, type UnloadedKey,
} from '../formats/layouts/lora.ts';
import { pyFloat } from '../formats/layouts/kohya-metadata.ts';
import type { StateDict } from '../formats/layouts/types.ts';
import { Transformer2D } from '../models/attention.ts';
import { ClipAttention, ClipMlp, type CLIPTextModel } from '../models/clip.ts';
import { Downsample2D, ResnetBlock2D, Upsample2D, type UNet2DConditionModel } from '../models/unet.ts';

/** The parts of a Stable Diffusion model a LoRA touches (a StableDiffusion object fits). */
export interface ModelParts {
  unet?: UNet2DConditionModel | null;
  textEncoder?: CLIPTextModel | null;
}

/** The layers LoRA adapts. */
export type LoraLayer = nn.Linear | nn.Conv2d;

const join = (prefix: string, name: string): string => (prefix && name ? `${prefix}.${name}` : prefix || name);

function shapeStr(s: readonly number[]): string {
  return `[${s.join(', ')}]`;
}

// ---- modules -------------------------------------------------------------------------------

/**
 * One LoRA on one layer: kohya's LoRAModule without the original (which the wrapper holds).
 * Children `lora_down`, optional `lora_mid` (LoCon CP-decomposition) and `lora_up` are bias-free
 * Linear / Conv2d layers. Conv: lora_down keeps the base kernel, stride and padding and lora_up is
 * 1×1 (§5.1); with lora_mid, lora_down is 1×1 and lora_mid carries the kernel (LyCORIS "tucker").
 */
export class LoraBranch extends nn.Module implements nn.Forward {
  readonly rank: number;
  alpha: number;
  multiplier: number;
  /** kohya's `dropout` (on lora_down's output, training only). */
  dropout: number;
  readonly hasMid: boolean;

  /** vb must hold `lora_down.weight`, `lora_up.weight` (and `lora_mid.weight`) in the canonical shapes of loraBranchShapes. */
  constructor(vb: nn.VarBuilder, base: LoraLayer, rank: number, alpha: number, o: { mid?: boolean; multiplier?: number; dropout?: number } = {}) {
    super();
    this.rank = rank;
    this.alpha = alpha;
    this.multiplier = o.multiplier ?? 1;
    this.dropout = o.dropout ?? 0;
    this.hasMid = o.mid === true;
    if (base instanceof nn.Linear) {
      if (this.hasMid) throw new Error(`${vb.prefix}: lora_mid exists only for Conv2d layers`);
      this.child(vb, 'lora_down', (v) => new nn.Linear(v, base.inFeatures, rank, { bias: false }));
      this.child(vb, 'lora_up', (v) => new nn.Linear(v, rank, base.outFeatures, { bias: false }));
    } else {
      const { stride, padding, dilation, groups } = base.o;
      if (groups !== 1) throw new Error(`${vb.prefix}: LoRA on a grouped convolution (groups ${groups}) is not supported`);
      if (this.hasMid) {
        this.child(vb, 'lora_down', (v) => new nn.Conv2d(v, base.inChannels, rank, 1, { bias: false }));
        this.child(vb, 'lora_mid', (v) => new nn.Conv2d(v, rank, rank, base.kernel, { stride, padding, dilation, bias: false }));
      } else {
        this.child(vb, 'lora_down', (v) => new nn.Conv2d(v, base.inChannels, rank, base.kernel, { stride, padding, dilation, bias: false }));
      }
      this.child(vb, 'lora_up', (v) => new nn.Conv2d(v, rank, base.outChannels, 1, { bias: false }));
    }
  }

  /** alpha / rank (§5.1). */
  get scale(): number {
    return this.alpha / this.rank;
  }
  get down(): Tensor {
    return (this.getModule('lora_down') as LoraLayer).weight;
  }
  get up(): Tensor {
    return (this.getModule('lora_up') as LoraLayer).weight;
  }
  get mid(): Tensor | null {
    return this.hasMid ? (this.getModule('lora_mid') as nn.Conv2d).weight : null;
  }

  /** up(down(x)) · scale · multiplier, in the input's dtype (the LoRA may be fp32 over an fp16 model). */
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const w = this.down;
      const h = x.dtype === w.dtype ? x : x.to(w.dtype);
      let d = this.sub('lora_down').forward(h);
      if (this.dropout > 0 && this.training) d = T.dropout(d, this.dropout, true);
      if (this.hasMid) d = this.sub('lora_mid').forward(d);
      const out = this.sub('lora_up').forward(d).mul(this.scale * this.multiplier);
      return out.dtype === x.dtype ? out : out.to(x.dtype);
    });
  }
}

/**
 * The wrapper put in a layer's place. It has no parameters of its own: it lists the base layer's
 * under the layer's own path (so the model's state dict keeps its checkpoint keys) and each
 * branch's under `<path>.<branch name>` (the unnamed branch directly under `<path>`).
 */
export abstract class LoraWrapper<B extends LoraLayer = LoraLayer> extends nn.Module implements nn.Forward {
  /** Branches in the order they were added; '' is the trainable LoRA of injectLora. */
  readonly branches = new Map<string, LoraBranch>();
  /** requiresGrad of the base parameters when the layer was wrapped; restored when unwrapped. */
  readonly baseRequiresGrad: boolean[];

  constructor(readonly base: B) {
    super();
    this.baseRequiresGrad = base.parameters().map((p) => p.requiresGrad);
  }

  addBranch(name: string, b: LoraBranch): void {
    if (this.branches.has(name)) throw new Error(`this layer already holds a LoRA named '${name}'`);
    this.branches.set(name, b);
  }
  /** Detaches the branch (the caller disposes it). */
  removeBranch(name: string): LoraBranch | undefined {
    const b = this.branches.get(name);
    this.branches.delete(name);
    return b;
  }

  forward(x: Tensor): Tensor {
    if (this.branches.size === 0) return this.base.forward(x);
    return tidy(() => {
      let y = this.base.forward(x);
      // A branch at multiplier 0 is skipped, so weight 0 gives exactly the base output.
      for (const b of this.branches.values()) if (b.multiplier !== 0) y = y.add(b.forward(x));
      return y;
    });
  }

  override *namedParameters(prefix = ''): Generator<[string, Tensor]> {
    yield* this.base.namedParameters(prefix);
    for (const [n, b] of this.branches) yield* b.namedParameters(join(prefix, n));
  }
  override *namedBuffers(prefix = ''): Generator<[string, Tensor]> {
    yield* this.base.namedBuffers(prefix);
    for (const [n, b] of this.branches) yield* b.namedBuffers(join(prefix, n));
  }
  /** The wrapper, then its branches and their layers (getModule does not descend into a wrapper). */
  override *namedModules(prefix = ''): Generator<[string, nn.Module]> {
    yield [prefix, this];
    for (const [n, b] of this.branches) {
      const p = join(prefix, n);
      for (const [q, m] of b.namedModules(p)) if (n !== '' || m !== b) yield [q, m];
    }
  }
}

export class LoRALinear extends LoraWrapper<nn.Linear> {}
export class LoRAConv2d extends LoraWrapper<nn.Conv2d> {}

function wrap(layer: LoraLayer): LoraWrapper {
  return layer instanceof nn.Linear ? new LoRALinear(layer) : new LoRAConv2d(layer);
}

// ---- targets (§5.1 "Default targets") -----------------------------------------------------------

/** Linear/Conv2d layers (or LoRA wrappers) under `m`, not looking inside wrappers. */
function* layersUnder(m: nn.Module, prefix: string): Generator<[string, LoraLayer | LoraWrapper]> {
  let skip: string | null = null;
  for (const [p, c] of m.namedModules(prefix)) {
    if (skip !== null && p.startsWith(skip)) continue;
    if (c instanceof LoraWrapper) {
      skip = `${p}.`;
      yield [p, c];
    } else if (c instanceof nn.Linear || c instanceof nn.Conv2d) {
      yield [p, c];
    }
  }
}

/** Every Linear/Conv2d layer path of a model part: what LoRA names resolve against. */
export function layerPaths(m: nn.Module | null | undefined): string[] {
  return m ? [...layersUnder(m, '')].map(([p]) => p) : [];
}

function kohyaTargetsIn(root: nn.Module, component: LoraComponent, containers: (m: nn.Module) => boolean): string[] {
  const out: string[] = [];
  const seen = new Set<string>();
  let skip: string | null = null;
  for (const [p, m] of root.namedModules()) {
    if (skip !== null && p.startsWith(skip)) continue;
    skip = null;
    if (!containers(m)) continue;
    skip = p ? `${p}.` : '';
    for (const [lp] of layersUnder(m, p)) {
      if (!seen.has(lp)) out.push(`${component}.${lp}`);
      seen.add(lp);
    }
  }
  return out;
}

/**
 * kohya's default LoRA targets, as PEFT module paths (`unet.…`, `text_encoder.…`): every Linear and
 * Conv2d inside Transformer2D (SD1: 16 × 12 = 192), and q/k/v/out_proj, fc1, fc2 of the text
 * encoder (12 × 6 = 72). `conv: true` adds LoCon's ResnetBlock2D, Downsample2D and Upsample2D
 * layers (conv1, conv2, conv_shortcut, time_emb_proj, the samplers' conv); conv_in, conv_out and
 * time_embedding are never targets. Found by class (instanceof), in module order.
 */
export function loraTargets(unet: UNet2DConditionModel | null | undefined, textEncoder: CLIPTextModel | null | undefined, o: { conv?: boolean } = {}): string[] {
  const out: string[] = [];
  if (unet) {
    const locon = o.conv === true;
    out.push(...kohyaTargetsIn(unet, 'unet', (m) => m instanceof Transformer2D || (locon && (m instanceof ResnetBlock2D || m instanceof Downsample2D || m instanceof Upsample2D))));
  }
  if (textEncoder) out.push(...kohyaTargetsIn(textEncoder, 'text_encoder', (m) => m instanceof ClipAttention || m instanceof ClipMlp));
  return out;
}

// ---- fitting a LoRA to a model -------------------------------------------------------------

function rootOf(parts: ModelParts, c: LoraComponent): nn.Module | null {
  if (c === 'unet') return parts.unet ?? null;
  if (c === 'text_encoder') return parts.textEncoder ?? null;
  return null;
}

function findLayer(parts: ModelParts, peftPath: string): { root: nn.Module; path: string; component: LoraComponent; layer: LoraLayer; wrapper: LoraWrapper | null } | string {
  let c: LoraComponent, path: string;
  try {
    [c, path] = splitComponent(peftPath);
  } catch (e) {
    return (e as Error).message;
  }
  const root = rootOf(parts, c);
  if (root === null) return c === 'text_encoder_2' ? 'the model has no second text encoder (an SDXL LoRA?)' : `the model has no ${c === 'unet' ? 'UNet' : 'text encoder'} here`;
  let m: nn.Module;
  try {
    m = root.getModule(path);
  } catch {
    return `no module '${path}' in the ${c === 'unet' ? 'UNet' : 'text encoder'}`;
  }
  if (m instanceof LoraWrapper) return { root, path, component: c, layer: m.base, wrapper: m };
  if (m instanceof nn.Linear || m instanceof nn.Conv2d) return { root, path, component: c, layer: m, wrapper: null };
  return `'${path}' is a ${m.constructor.name}, not a Linear or Conv2d layer`;
}

function layerStr(l: LoraLayer): string {
  return l instanceof nn.Linear ? `Linear(${l.inFeatures} → ${l.outFeatures})` : `Conv2d(${l.inChannels} → ${l.outChannels}, ${l.kernel}×${l.kernel})`;
}

/** What is wrong with putting `m` on `layer` (null = it fits). Accepts 2-D factors on 1×1 convs and [r,in,1,1] on Linear. */
function fitProblem(layer: LoraLayer, m: LoraModule): string | null {
  const d = m.down.shape;
  const u = m.up.shape;
  const r = d[0];
  const bad = (what: string) => `${what} does not fit the model's ${layerStr(layer)}`;
  const factors = `lora_down ${shapeStr(d)}, lora_up ${shapeStr(u)}${m.mid ? `, lora_mid ${shapeStr(m.mid.shape)}` : ''}`;
  const isUnit = (s: readonly number[], from: number) => s.slice(from).every((x) => x === 1);
  if (u.length < 2 || u[1] !== r || !isUnit(u, 2)) return `lora_up ${shapeStr(u)} and lora_down ${shapeStr(d)} disagree on the rank`;
  if (layer instanceof nn.Linear) {
    if (m.mid) return bad(`lora_mid ${shapeStr(m.mid.shape)}`);
    if (d.length < 2 || !isUnit(d, 2) || d[1] !== layer.inFeatures || u[0] !== layer.outFeatures) return bad(factors);
    return null;
  }
  const k = layer.kernel;
  if (u[0] !== layer.outChannels || d.length < 2 || d[1] !== layer.inChannels) return bad(factors);
  if (m.mid) {
    const s = m.mid.shape;
    if (!isUnit(d, 2) || s.length !== 4 || s[0] !== r || s[1] !== r || s[2] !== k || s[3] !== k) return bad(factors);
    return null;
  }
  const kernelOk = d.length === 4 ? d[2] === k && d[3] === k : k === 1;
  return kernelOk ? null : bad(factors);
}

/** A LoRA module that does not fit the model: its kohya name, PEFT path and the reason. */
export interface LoraMismatch {
  name: string;
  path: string;
  reason: string;
}

/** Every module of `lora` that has no matching layer (or the wrong shapes) in `parts`. */
export function loraMismatches(parts: ModelParts, lora: LoraFile): LoraMismatch[] {
  const out: LoraMismatch[] = [];
  for (const [path, m] of lora.modules) {
    const found = findLayer(parts, path);
    let name = path;
    try {
      name = kohyaName(path);
    } catch {
      /* keep the path */
    }
    if (typeof found === 'string') out.push({ name, path, reason: found });
    else {
      const p = fitProblem(found.layer, m);
      if (p !== null) out.push({ name, path, reason: p });
    }
  }
  return out;
}

export function listProblems(items: { key: string; reason: string }[], max = 8): string {
  const shown = items.slice(0, max).map((x) => `${x.key} (${x.reason})`).join('; ');
  return items.length > max ? `${shown}; … and ${items.length - max} more` : shown;
}

/** A LoraFile that does not fit the model it is applied to; lists the modules. */
export class LoraMismatchError extends Error {
  constructor(
    readonly what: string,
    readonly mismatched: LoraMismatch[],
  ) {
    super(`${what}: ${mismatched.length} LoRA module(s) do not fit this model: ${listProblems(mismatched.map((m) => ({ key: m.name, reason: m.reason })))}. Is the LoRA for another model (SD 1.x, 2.x or XL)?`);
    this.name = 'LoraMismatchError';
  }
}

export function assertFits(parts: ModelParts, lora: LoraFile, what: string): void {
  const bad = loraMismatches(parts, lora);
  if (bad.length) throw new LoraMismatchError(what, bad);
}

// ---- attaching branches ----------------------------------------------------------------------

/** One LoRA module to attach: factors in any accepted shape (see fitProblem). */
interface BranchSpec {
  peftPath: string;
  down: Tensor;
  up: Tensor;
  mid?: Tensor;
  alpha: number;
}

interface Attached {
  peftPath: string;
  component: LoraComponent;
  root: nn.Module;
  path: string;
  wrapper: LoraWrapper;
  branch: LoraBranch;
}

/** The LoRA factors reshaped to the layer's kind: Linear 2-D, Conv2d 4-D (views, caller owns). */
function canonical(layer: LoraLayer, s: BranchSpec): { down: Tensor; up: Tensor; mid?: Tensor } {
  const r = s.down.shape[0];
  if (layer instanceof nn.Linear) return { down: s.down.reshape(r, layer.inFeatures), up: s.up.reshape(layer.outFeatures, r) };
  const down = s.down.ndim === 4 ? s.down.alias() : s.down.reshape(r, layer.inChannels, 1, 1);
  return { down, up: s.up.reshape(layer.outChannels, r, 1, 1), ...(s.mid ? { mid: s.mid.alias() } : {}) };
}

let branchCounter = 0;

/**
 * Wraps (or reuses the wrapper of) each target layer and adds a branch called `name`. Everything
 * is checked before the model is touched. Trainable branches get their own copy of the factors
 * (the optimizer updates them in place); frozen ones may share the file's memory.
 */
function attach(parts: ModelParts, name: string, specs: BranchSpec[], o: { trainable: boolean; dtype?: T.DType; freezeBase: boolean; multiplier: { unet: number; te: number }; dropout?: number; what: string }): Attached[] {
  const bad: LoraMismatch[] = [];
  const found = specs.map((s) => {
    const f = findLayer(parts, s.peftPath);
    const reason = typeof f === 'string' ? f : fitProblem(f.layer, s) ?? (f.wrapper?.branches.has(name) ? `it already holds a LoRA named '${name}'` : null);
    if (reason !== null) bad.push({ name: safeKohyaName(s.peftPath), path: s.peftPath, reason });
    return f;
  });
  if (bad.length) throw new LoraMismatchError(o.what, bad);
  const out: Attached[] = [];
  specs.forEach((s, i) => {
    const f = found[i] as Exclude<(typeof found)[number], string>;
    const layer = f.layer;
    const dtype = o.dtype ?? layer.weight.dtype;
    const device = layer.weight.device;
    const branch = tidy(() => {
      const c = canonical(layer, s);
      const own = (t: Tensor) => (o.trainable ? T.noGrad(() => t.clone()) : t);
      const map = new Map<string, Tensor>([['lora_down.weight', own(c.down)], ['lora_up.weight', own(c.up)]]);
      if (c.mid) map.set('lora_mid.weight', own(c.mid));
      const vb = nn.VarBuilder.from(map, { dtype, device });
      const b = new LoraBranch(vb, layer, rankOf(s), s.alpha, { mid: c.mid !== undefined, multiplier: f.component === 'unet' ? o.multiplier.unet : o.multiplier.te, dropout: o.dropout });
      vb.finish({ what: `${o.what} (${s.peftPath})` });
      if (!o.trainable) b.requiresGrad_(false);
      b.train(f.root.training);
      return b;
    });
    let wrapper = f.wrapper;
    if (wrapper === null) {
      wrapper = wrap(layer);
      f.root.replaceModule(f.path, wrapper);
    }
    if (o.freezeBase) for (const p of layer.parameters()) p.requiresGrad_(false);
    wrapper.addBranch(name, branch);
    out.push({ peftPath: s.peftPath, component: f.component, root: f.root, path: f.path, wrapper, branch });
  });
  return out;
}

function safeKohyaName(path: string): string {
  try {
    return kohyaName(path);
  } catch {
    return path;
  }
}

/** Takes the branches off again; a wrapper left without branches gives its place back to the base layer. */
function detach(list: Attached[], name: string): void {
  for (const a of list) {
    const b = a.wrapper.removeBranch(name);
    b?.dispose();
    if (a.wrapper.branches.size > 0) continue;
    // Another adapter may have wrapped this wrapper since; then it stays, as a pass-through.
    let here: nn.Module | null = null;
    try {
      here = a.root.getModule(a.path);
    } catch {
      here = null;
    }
    if (here === a.wrapper) {
      a.root.replaceModule(a.path, a.wrapper.base);
      a.wrapper.base.parameters().forEach((p, i) => p.requiresGrad_(a.wrapper.baseRequiresGrad[i] ?? p.requiresGrad));
    }
  }
}

// ---- injectLora (training) ---------------------------------------------------------------------

export interface InjectOptions {
  /** network_dim. Not needed with `from`. */
  rank?: number;
  /** network_alpha (kohya's default 1; 0 means alpha = rank, scale 1). */
  alpha?: number;
  /** LoCon conv_dim / conv_alpha, for Conv2d layers with a kernel larger than 1×1 (default: rank, alpha). */
  convRank?: number;
  convAlpha?: number;
  /**
   * PEFT module paths, or a filter over loraTargets(). Default: loraTargets() (with conv layers
   * when convRank is given), or the modules of `from`.
   */
  targets?: readonly string[] | ((peftPath: string) => boolean);
  /** Build the LoRA from these weights instead of initialising it (copied; the file stays untouched). */
  from?: LoraFile;
  /** dtype of the LoRA parameters (default float32, whatever the model's dtype). */
  dtype?: T.DType;
  /** kohya's neuron dropout on lora_down's output during training (default 0). */
  dropout?: number;
  /** Set requiresGrad false on the wrapped layers' own parameters (default true); restored by remove(). */
  freezeBase?: boolean;
  /** Initial multipliers (default 1 for both). */
  multiplier?: { unet?: number; te?: number };
  /** Branch name inside the wrappers (default '': parameters are `<layer path>.lora_down.weight`). */
  name?: string;
}

/** A LoRA attached to a model. */
export interface LoraHandle {
  readonly name: string;
  /** The branches by PEFT module path, in target order. */
  readonly modules: ReadonlyMap<string, LoraBranch>;
  /** The LoRA parameters by kohya key (`lora_unet_…to_q.lora_down.weight`), down before up per module. */
  namedParameters(): Map<string, Tensor>;
  parameters(): Tensor[];
  /** Multipliers for UNet and text-encoder modules (A1111's unet/te weights); te defaults to unet. */
  setMultiplier(unet: number, te?: number): void;
  /**
   * A snapshot as a LoraFile (copies; the caller disposes them, e.g. with disposeLoraFile), ready
   * for loraToKohya / loraToPeft. Metadata: ss_network_* plus `metadata`.
   */
  toLoraFile(metadata?: Record<string, string>): LoraFile;
  /** Takes the LoRA off and frees it; the original layer objects are back in place. Idempotent. */
  remove(): void;
}

function makeHandle(name: string, list: Attached[], meta: () => Record<string, string>): LoraHandle {
  let removed = false;
  const modules = new Map(list.map((a) => [a.peftPath, a.branch]));
  const alive = () => {
    if (removed) throw new Error(`this LoRA${name ? ` ('${name}')` : ''} was removed`);
  };
  return {
    name,
    modules,
    namedParameters() {
      alive();
      const out = new Map<string, Tensor>();
      for (const a of list) {
        const n = kohyaName(a.peftPath);
        out.set(`${n}.lora_down.weight`, a.branch.down);
        if (a.branch.mid) out.set(`${n}.lora_mid.weight`, a.branch.mid);
        out.set(`${n}.lora_up.weight`, a.branch.up);
      }
      return out;
    },
    parameters() {
      return [...this.namedParameters().values()];
    },
    setMultiplier(unet: number, te: number = unet) {
      alive();
      for (const a of list) a.branch.multiplier = a.component === 'unet' ? unet : te;
    },
    toLoraFile(metadata: Record<string, string> = {}) {
      alive();
      const out = new Map<string, LoraModule>();
      T.noGrad(() => {
        for (const a of list) {
          const b = a.branch;
          const mid = b.mid;
          out.set(a.peftPath, { down: b.down.clone(), up: b.up.clone(), alpha: b.alpha, ...(mid ? { mid: mid.clone() } : {}) });
        }
      });
      return { modules: out, metadata: { ...meta(), ...metadata } };
    },
    remove() {
      if (removed) return;
      removed = true;
      detach(list, name);
    },
  };
}

function resolveTargets(parts: ModelParts, o: InjectOptions): string[] {
  if (Array.isArray(o.targets)) return [...(o.targets as readonly string[])];
  const all = o.from && o.targets === undefined ? [...o.from.modules.keys()] : loraTargets(parts.unet, parts.textEncoder, { conv: o.convRank !== undefined });
  const f = o.targets as ((p: string) => boolean) | undefined;
  return f ? all.filter(f) : all;
}

/**
 * Puts a LoRA on `parts` for training. New LoRAs follow kohya: lora_down ~ kaiming_uniform(a=√5)
 * = U(±1/√fan_in) drawn from `generator` (a seed or a Generator; the global RNG without one),
 * visiting targets in order, and lora_up = 0, so the model's output is unchanged until a step is
 * taken. A 3×3 conv gets convRank/convAlpha, Linear and 1×1 layers rank/alpha (§5.1 LoCon).
 */
export function injectLora(parts: ModelParts, o: InjectOptions, generator?: T.Generator | number): LoraHandle {
  const name = o.name ?? '';
  const targets = resolveTargets(parts, o);
  if (targets.length === 0) throw new Error('injectLora: no target layers (the model parts are missing, or the filter matched nothing)');
  const gen = typeof generator === 'number' ? new T.Generator(generator) : generator ?? null;
  const norm = (a: number | undefined, r: number) => (a === undefined ? 1 : a === 0 ? r : a);
  const specs: BranchSpec[] = [];
  const made: Tensor[] = [];
  try {
    for (const peftPath of targets) {
      if (o.from) {
        const m = o.from.modules.get(peftPath);
        if (!m) throw new Error(`injectLora: the LoRA file has no module ${peftPath} (${safeKohyaName(peftPath)})`);
        specs.push({ peftPath, ...m });
        continue;
      }
      if (o.rank === undefined || !(o.rank >= 1) || !Number.isInteger(o.rank)) throw new Error(`injectLora: rank must be a whole number ≥ 1 (got ${o.rank})`);
      const f = findLayer(parts, peftPath);
      if (typeof f === 'string') throw new LoraMismatchError('injectLora', [{ name: safeKohyaName(peftPath), path: peftPath, reason: f }]);
      const l = f.layer;
      const big = l instanceof nn.Conv2d && l.kernel > 1;
      const r = big ? o.convRank ?? o.rank : o.rank;
      const alpha = big ? norm(o.convAlpha ?? o.alpha, r) : norm(o.alpha, r);
      const downShape = l instanceof nn.Linear ? [r, l.inFeatures] : [r, l.inChannels, l.kernel, l.kernel];
      const upShape = l instanceof nn.Linear ? [l.outFeatures, r] : [l.outChannels, r, 1, 1];
      const fanIn = downShape.slice(1).reduce((a, b) => a * b, 1);
      const bound = 1 / Math.sqrt(fanIn);
      // Drawn in fp32 on the CPU, so a seed gives the same LoRA on every device.
      const down = T.noGrad(() => T.empty(downShape, { dtype: 'float32' }).uniform_(-bound, bound, gen));
      const up = T.zeros(upShape, { dtype: 'float32' });
      made.push(down, up);
      specs.push({ peftPath, down, up, alpha });
    }
    const list = attach(parts, name, specs, {
      trainable: true,
      dtype: o.dtype ?? 'float32',
      freezeBase: o.freezeBase ?? true,
      multiplier: { unet: o.multiplier?.unet ?? 1, te: o.multiplier?.te ?? o.multiplier?.unet ?? 1 },
      dropout: o.dropout,
      what: 'injectLora',
    });
    return makeHandle(name, list, () => networkMetadata(list));
  } finally {
    for (const t of made) t.dispose();
  }
}

/** kohya's ss_network_* keys for what was injected (dim/alpha of Linear layers; conv ones in args). */
function networkMetadata(list: Attached[]): Record<string, string> {
  const lin = list.filter((a) => !(a.wrapper.base instanceof nn.Conv2d && a.wrapper.base.kernel > 1));
  const conv = list.filter((a) => !lin.includes(a));
  const first = lin[0] ?? list[0];
  const md: Record<string, string> = { ss_network_module: 'networks.lora' };
  if (first) {
    md.ss_network_dim = String(first.branch.rank);
    md.ss_network_alpha = pyFloat(first.branch.alpha);
  }
  if (conv.length) md.ss_network_args = JSON.stringify({ conv_dim: String(conv[0].branch.rank), conv_alpha: pyFloat(conv[0].branch.alpha) });
  return md;
}

/** The trainable LoRA parameters of a model by kohya key, for the branch called `name` ('' = injectLora's default). */
export function loraParameters(parts: ModelParts, name = ''): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const [c, root] of [['unet', parts.unet], ['text_encoder', parts.textEncoder]] as const) {
    if (!root) continue;
    for (const [p, m] of layersUnder(root, '')) {
      if (!(m instanceof LoraWrapper)) continue;
      const b = m.branches.get(name);
      if (!b) continue;
      const n = kohyaName(`${c}.${p}`);
      for (const [k, t] of [['lora_down', b.down], ['lora_mid', b.mid], ['lora_up', b.up]] as const) if (t && t.requiresGrad) out.set(`${n}.${k}.weight`, t);
    }
  }
  return out;
}

/** Disposes the tensors of a LoraFile. */
export function disposeLoraFile(lora: LoraFile): void {
  for (const m of lora.modules.values()) for (const t of [m.down, m.up, m.mid]) t?.dispose();
}

// ---- generation: applying and merging files --------------------------------------------------

/** One LoRA file at A1111-style weights: `<lora:name:te:unet>`. A missing weight takes the other's, else 1. */
export interface LoraWeights {
  lora: LoraFile;
  unet?: number;
  te?: number;
}

function weightsOf(e: LoraWeights): { unet: number; te: number } {
  const unet = e.unet ?? e.te ?? 1;
  return { unet, te: e.te ?? unet };
}

export interface AppliedLoras {
  /** One handle per file, in order. */
  readonly handles: readonly LoraHandle[];
  /** Changes the weights of file i without re-applying it. */
  setWeights(i: number, unet: number, te?: number): void;
  /** Takes every file off again (in reverse order); the original layers are back. */
  remove(): void;
}

/**
 * Wraps the model's layers with the files' LoRAs (frozen, in the layers' dtype and device). The
 * weights stay adjustable, and weight 0 gives exactly the base model's output. Every file is
 * checked against the model first (LoraMismatchError lists what does not fit); nothing is
 * changed unless all fit. The files' tensors are not taken over: the caller still disposes them.
 */
export function applyLoraFiles(model: ModelParts, files: readonly LoraWeights[]): AppliedLoras {
  files.forEach((e, i) => assertFits(model, e.lora, `LoRA #${i + 1}`));
  const handles: LoraHandle[] = [];
  try {
    files.forEach((e, i) => {
      const name = `lora${++branchCounter}`;
      const specs = [...e.lora.modules].map(([peftPath, m]) => ({ peftPath, ...m }));
      const list = attach(model, name, specs, { trainable: false, freezeBase: false, multiplier: weightsOf(e), what: `LoRA #${i + 1}` });
      handles.push(makeHandle(name, list, () => ({ ...e.lora.metadata })));
    });
  } catch (err) {
    for (const h of handles.reverse()) h.remove();
    throw err;
  }
  return {
    handles,
    setWeights(i, unet, te = unet) {
      const h = handles[i];
      if (!h) throw new RangeError(`no applied LoRA #${i + 1} (there are ${handles.length})`);
      h.setMultiplier(unet, te);
    },
    remove() {
      for (let i = handles.length - 1; i >= 0; i--) handles[i].remove();
    },
  };
}

/**
 * ΔW of one module in float32, shaped like the layer's weight: reshape(up.flatten(1) @
 * down.flatten(1)) (A1111 network_lora.py, ComfyUI weight_adapter/lora.py). With lora_mid the
 * 1×1 down and the mid kernel are composed first, as ComfyUI does.
 */
export function loraDelta(m: LoraModule, weightShape: readonly number[]): Tensor {
  return tidy(() => {
    let down = m.down.to('float32');
    if (m.mid) {
      const mid = m.mid.to('float32');
      const [r, inCh] = [down.shape[0], down.shape[1]];
      // K[o, i, y, x] = Σ_r mid[o, r, y, x] · down[r, i]: down.T [in, r] @ mid.T.flatten(1) [r, r·kh·kw]
      down = down.reshape(r, inCh).transpose(0, 1).mm(mid.transpose(0, 1).flatten(1))
        .reshape(inCh, mid.shape[0], mid.shape[2], mid.shape[3]).transpose(0, 1);
    }
    const up = m.up.to('float32');
    return up.reshape(up.shape[0], -1).mm(down.reshape(down.shape[0], -1)).reshape(...weightShape);
  });
}

/**
 * Bakes the files into the weights in place (A1111's merge): W' = W + ΔW · (alpha/r) · w, with
 * the unet weight for UNet layers and the te weight for text-encoder layers. The sum is formed in
 * float32 and stored in the weight's dtype. Checks every file first. Returns the number of layer
 * updates made.
 */
export function mergeLoras(model: ModelParts, files: readonly LoraWeights[]): number {
  files.forEach((e, i) => assertFits(model, e.lora, `LoRA #${i + 1}`));
  let n = 0;
  T.noGrad(() => {
    for (const e of files) {
      const w = weightsOf(e);
      for (const [peftPath, m] of e.lora.modules) {
        const f = findLayer(model, peftPath);
        if (typeof f === 'string') throw new Error(f); // checked above
        const mult = f.component === 'unet' ? w.unet : w.te;
        const s = (m.alpha / rankOf(m)) * mult;
        if (s === 0) continue;
        const W = f.layer.weight;
        tidy(() => {
          const delta = loraDelta(m, W.shape).to(W.device);
          W.copy_(W.to('float32').add(delta, s).to(W.dtype));
        });
        n++;
      }
    }
  });
  return n;
}

