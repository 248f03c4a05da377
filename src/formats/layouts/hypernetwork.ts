// A1111 hypernetwork file (sd-formats.md §7.1) ↔ a typed structure, and the module layout of
// §7.2 that decides its `linear.<idx>` key names.
//
// The file is a torch.save'd dict whose per-width entries have *int* keys (768: (k_sd, v_sd)).
// JS plain objects turn keys into strings, so the writer returns a Map, which keeps 768 a number
// for the pickle writer; the reader accepts a Map or a plain object with digit-string keys.
import { pyEntries, pyItems, shapeStr, sameShape, takeTensor, type KeyShapes, type PyTree, type StateDict } from './types.ts';

export interface Hypernetwork {
  name: string;
  step: number;
  /** Multipliers of the width, starting and ending with 1 (e.g. [1, 2, 1]). */
  layerStructure: number[];
  /** 'linear' or null = none; relu, leakyrelu, elu, swish (= Hardswish), tanh, sigmoid, or a torch.nn activation name. */
  activation: string | null;
  /** File key `is_layer_norm`. */
  addLayerNorm: boolean;
  useDropout: boolean;
  /** One probability per entry of layerStructure. */
  dropoutStructure: number[];
  activateOutput: boolean;
  lastLayerDropout: boolean;
  /** Normal | XavierUniform | XavierNormal | KaimingUniform | KaimingNormal. */
  weightInit: string;
  sdCheckpoint: string | null;
  sdCheckpointName: string | null;
  optionalInfo: string | null;
  /** Context width → [module for K, module for V] state dicts (keys `linear.<idx>.weight|bias`). */
  modules: Map<number, [StateDict, StateDict]>;
}

/** parse_dropout_structure: the structure A1111 derives when a file does not store one (§7.2). */
export function defaultDropoutStructure(layerStructure: readonly number[], useDropout: boolean, lastLayerDropout: boolean): number[] {
  const n = layerStructure.length;
  if (!useDropout) return new Array<number>(n).fill(0);
  return [0, ...new Array<number>(Math.max(n - 3, 0)).fill(0.3), lastLayerDropout ? 0.3 : 0, 0];
}

export type HypernetworkLayer =
  | { index: number; kind: 'linear'; in: number; out: number }
  | { index: number; kind: 'layernorm'; dim: number }
  | { index: number; kind: 'activation'; name: string }
  | { index: number; kind: 'dropout'; p: number };

type Settings = Pick<Hypernetwork, 'layerStructure' | 'activation' | 'addLayerNorm' | 'dropoutStructure' | 'activateOutput'>;

/**
 * The nn.Sequential of HypernetworkModule(dim) in order (§7.2). Indices count parameter-less
 * modules (activation, dropout), which is why key indices skip numbers.
 */
export function hypernetworkLayers(dim: number, h: Settings): HypernetworkLayer[] {
  const ls = h.layerStructure;
  if (ls.length < 2 || ls[0] !== 1 || ls[ls.length - 1] !== 1) {
    throw new Error(`hypernetwork layer structure must start and end with 1, got [${ls.join(', ')}]`);
  }
  const out: HypernetworkLayer[] = [];
  let idx = 0;
  const act = h.activation !== null && h.activation !== 'linear';
  for (let i = 0; i < ls.length - 1; i++) {
    const a = Math.trunc(dim * ls[i]), b = Math.trunc(dim * ls[i + 1]);
    out.push({ index: idx++, kind: 'linear', in: a, out: b });
    if (act && (i < ls.length - 2 || h.activateOutput)) out.push({ index: idx++, kind: 'activation', name: h.activation as string });
    if (h.addLayerNorm) out.push({ index: idx++, kind: 'layernorm', dim: b });
    const p = h.dropoutStructure[i + 1] ?? 0;
    if (p > 0) out.push({ index: idx++, kind: 'dropout', p });
  }
  return out;
}

/** The state-dict keys and shapes one module of width `dim` has. */
export function hypernetworkModuleKeys(dim: number, h: Settings): KeyShapes {
  const ks: KeyShapes = new Map();
  for (const l of hypernetworkLayers(dim, h)) {
    if (l.kind === 'linear') {
      ks.set(`linear.${l.index}.weight`, [l.out, l.in]);
      ks.set(`linear.${l.index}.bias`, [l.out]);
    } else if (l.kind === 'layernorm') {
      ks.set(`linear.${l.index}.weight`, [l.dim]);
      ks.set(`linear.${l.index}.bias`, [l.dim]);
    }
  }
  return ks;
}

/** Problems with the module tensors against the settings, as sentences (empty when consistent). */
export function validateHypernetwork(h: Hypernetwork): string[] {
  const problems: string[] = [];
  for (const [dim, pair] of h.modules) {
    const want = hypernetworkModuleKeys(dim, h);
    pair.forEach((sd, which) => {
      const label = `${dim} ${which === 0 ? 'k' : 'v'}`;
      for (const [k, s] of want) {
        const t = sd.get(k);
        if (!t) problems.push(`module ${label}: missing ${k}`);
        else if (!sameShape(t.shape, s)) problems.push(`module ${label}: ${k} is ${shapeStr(t.shape)}, expected ${shapeStr(s)}`);
      }
      for (const k of sd.keys()) if (!want.has(k)) problems.push(`module ${label}: unexpected ${k}`);
    });
  }
  return problems;
}

function toStateDict(x: unknown, where: string): StateDict {
  const entries = pyEntries(x);
  if (entries === null) throw new Error(`hypernetwork entry ${where} is not a state dict`);
  const sd: StateDict = new Map();
  for (const [k0, v] of entries) {
    const t = takeTensor(v);
    if (t === null) continue; // e.g. an OrderedDict's _metadata
    // Very old files: linear1/linear2 = linear.0/linear.1 (A1111 fix_old_state_dict, §7.1).
    const k = String(k0).replace(/^linear1\./, 'linear.0.').replace(/^linear2\./, 'linear.1.');
    sd.set(k, t);
  }
  return sd;
}

const SETTING_KEYS = new Set([
  'step', 'name', 'layer_structure', 'activation_func', 'is_layer_norm', 'weight_initialization', 'sd_checkpoint',
  'sd_checkpoint_name', 'activate_output', 'use_dropout', 'dropout_structure', 'last_layer_dropout', 'optional_info',
]);

/** True when a .pt object tree is an A1111 hypernetwork (settings keys or int-keyed k/v pairs). */
export function isHypernetworkObject(tree: unknown): boolean {
  const entries = pyEntries(tree);
  if (entries === null) return false;
  if (entries.some(([k]) => k === 'layer_structure')) return true;
  return entries.some(([k, v]) => {
    const pair = pyItems(v);
    return /^\d+$/.test(String(k)) && pair !== null && pair.length === 2 && pyEntries(pair[0]) !== null;
  });
}

function num(v: unknown): number | undefined {
  return typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : undefined;
}
function bool(v: unknown, dflt: boolean): boolean {
  return typeof v === 'boolean' ? v : dflt;
}
function str(v: unknown): string | null {
  return typeof v === 'string' ? v : null;
}
function numbers(v: unknown): number[] | undefined {
  const items = pyItems(v);
  return items !== null && items.every((x) => num(x) !== undefined) ? items.map((x) => num(x) as number) : undefined;
}

/** Reads the dict of §7.1, applying A1111's defaults for missing settings. Tensors are new handles. */
export function hypernetworkFromObject(tree: unknown, opts: { fileStem?: string } = {}): Hypernetwork {
  const entries = pyEntries(tree);
  if (entries === null) throw new Error('not a hypernetwork: expected a dict');
  const get = new Map(entries.map(([k, v]) => [String(k), v]));
  const modules = new Map<number, [StateDict, StateDict]>();
  for (const [k, v] of entries) {
    if (!/^\d+$/.test(String(k)) || SETTING_KEYS.has(String(k))) continue;
    const pair = pyItems(v);
    if (pair === null || pair.length !== 2) throw new Error(`hypernetwork entry ${k} should be a (k, v) pair of state dicts`);
    modules.set(Number(k), [toStateDict(pair[0], `${k}[0]`), toStateDict(pair[1], `${k}[1]`)]);
  }
  const layerStructure = numbers(get.get('layer_structure')) ?? [1, 2, 1];
  const stored = numbers(get.get('dropout_structure'));
  const lastLayerDropout = bool(get.get('last_layer_dropout'), false);
  // A1111: use_dropout follows a stored dropout_structure when there is one.
  const useDropout = stored !== undefined ? stored.some((p) => p > 0) : bool(get.get('use_dropout'), false);
  const act = get.get('activation_func');
  return {
    name: str(get.get('name')) ?? opts.fileStem ?? 'hypernetwork',
    step: num(get.get('step')) ?? 0,
    layerStructure,
    activation: typeof act === 'string' ? act : null,
    addLayerNorm: bool(get.get('is_layer_norm'), false),
    useDropout,
    dropoutStructure: stored ?? defaultDropoutStructure(layerStructure, useDropout, lastLayerDropout),
    activateOutput: bool(get.get('activate_output'), true),
    lastLayerDropout,
    weightInit: str(get.get('weight_initialization')) ?? 'Normal',
    sdCheckpoint: str(get.get('sd_checkpoint')),
    sdCheckpointName: str(get.get('sd_checkpoint_name')),
    optionalInfo: str(get.get('optional_info')),
    modules,
  };
}

/**
 * The dict A1111's Hypernetwork.save writes, in its key order: int width keys first, each a
 * [k, v] pair of Map state dicts (tensors are new handles), then the settings.
 */
export function hypernetworkToObject(h: Hypernetwork): Map<string | number, PyTree> {
  const out = new Map<string | number, PyTree>();
  const copy = (sd: StateDict): StateDict => new Map([...sd].map(([k, t]) => [k, t.alias()]));
  for (const [dim, [k, v]] of h.modules) out.set(dim, [copy(k), copy(v)]);
  out.set('step', h.step);
  out.set('name', h.name);
  out.set('layer_structure', [...h.layerStructure]);
  out.set('activation_func', h.activation);
  out.set('is_layer_norm', h.addLayerNorm);
  out.set('weight_initialization', h.weightInit);
  out.set('sd_checkpoint', h.sdCheckpoint);
  out.set('sd_checkpoint_name', h.sdCheckpointName);
  out.set('activate_output', h.activateOutput);
  out.set('use_dropout', h.useDropout);
  out.set('dropout_structure', [...h.dropoutStructure]);
  // A1111 recomputes this from the structure on save (§7.1).
  out.set('last_layer_dropout', h.dropoutStructure.length >= 2 ? h.dropoutStructure[h.dropoutStructure.length - 2] !== 0 : h.lastLayerDropout);
  out.set('optional_info', h.optionalInfo);
  return out;
}

export function disposeHypernetwork(h: Hypernetwork): void {
  for (const pair of h.modules.values()) for (const sd of pair) for (const t of sd.values()) t.dispose();
}
