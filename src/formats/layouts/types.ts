// Shared vocabulary of the layout converters (sd-formats.md §4–§7).
//
// Every converter here is a pure function over key names (and shapes), plus the few reshapes and
// splits a layout needs. They take and return the neutral StateDict, so they do not care whether
// the tensors came from safetensors, a pickle or a live model.
//
// Ownership convention (all files in this folder): every tensor in a returned StateDict is a new
// handle the caller owns and disposes. Where the bytes do not change it is an alias() or a view
// of the input's storage, so nothing is copied; the input map is left untouched and still owned
// by its caller. Disposing one side never invalidates the other.
import type { Tensor } from '../../torch/index.ts';

/** Tensors by key, in insertion order (the order a writer will lay them out). */
export type StateDict = Map<string, Tensor>;
/** Keys with their shapes only: what `inspect` can read from a header without loading data. */
export type KeyShapes = Map<string, number[]>;

/** The three models of an SD1/SD2 pipeline, named as the diffusers folder names them (§4.7). */
export type Component = 'unet' | 'vae' | 'textEncoder';

/**
 * Model families this project knows (§3, §4.5). 'sd2-v' is SD2 with v-prediction, only when it can
 * be told (§4.5 has no canonical marker). SDXL is recognised so it can be refused with a clear
 * sentence; it is not supported yet.
 */
export type Family = 'sd1' | 'sd2' | 'sd2-v' | 'sdxl' | 'unknown';

/**
 * A Python value as the .pt writer takes it (src/formats/torchfile.ts): dicts as Maps (int keys
 * kept) or plain objects, lists as arrays, tensors as tensors.
 */
export type PyTree =
  | null
  | boolean
  | number
  | string
  | Tensor
  | readonly PyTree[]
  | ReadonlyMap<string | number, PyTree>
  | { readonly [key: string]: PyTree };

export function keyShapesOf(sd: StateDict): KeyShapes {
  const out: KeyShapes = new Map();
  for (const [k, t] of sd) out.set(k, t.shape);
  return out;
}

/** Writes up to `max` names, then "… (N more)": errors name keys but stay readable (STYLE 16). */
export function listKeys(keys: readonly string[], max = 6): string {
  if (keys.length <= max) return keys.join(', ');
  return `${keys.slice(0, max).join(', ')}, … (${keys.length - max} more)`;
}

export function shapeStr(s: readonly number[]): string {
  return `[${s.join(', ')}]`;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/**
 * Entries of a Python dict as a pickle reader hands it over: a Map (which keeps int keys, as the
 * hypernetwork file needs, §7.1) or a plain object. Anything else gives null.
 */
export function pyEntries(x: unknown): [string | number, unknown][] | null {
  if (x instanceof Map) return [...x.entries()] as [string | number, unknown][];
  if (x !== null && typeof x === 'object' && isPlainObject(x)) {
    return Object.entries(x as Record<string, unknown>);
  }
  return null;
}

export function pyGet(x: unknown, key: string): unknown {
  if (x instanceof Map) return x.get(key);
  if (x !== null && typeof x === 'object' && isPlainObject(x)) return (x as Record<string, unknown>)[key];
  return undefined;
}

function isPlainObject(x: object): boolean {
  const p = Object.getPrototypeOf(x);
  return p === Object.prototype || p === null;
}

/** A pickled object's instance state (`obj.state` of torchfile's TorchObject, or `__state__`). */
export function pyObjectState(x: unknown): unknown {
  if (x === null || typeof x !== 'object' || x instanceof Map) return undefined;
  const o = x as { state?: unknown; __state__?: unknown };
  return o.state ?? o.__state__;
}

/** Structural tensor test, so a tree from any reader (or a test double) is accepted. */
export function isTensorLike(x: unknown): x is Tensor {
  return (
    x !== null &&
    typeof x === 'object' &&
    typeof (x as Tensor).reshape === 'function' &&
    typeof (x as Tensor).dispose === 'function' &&
    Array.isArray((x as Tensor).shape)
  );
}

/**
 * A pickle reader may hand out tensors lazily (torchfile's TorchTensorRef: `shape` plus
 * `load()`); tree readers here accept both that and a loaded tensor.
 */
interface LazyTensor {
  readonly shape: readonly number[];
  load(): Tensor;
}

function isLazyTensor(x: unknown): x is LazyTensor {
  return x !== null && typeof x === 'object' && typeof (x as LazyTensor).load === 'function' && Array.isArray((x as LazyTensor).shape);
}

/** A tensor or a lazily loaded one. */
export function isTensorValue(x: unknown): boolean {
  return isTensorLike(x) || isLazyTensor(x);
}

/** The shape of a tensor value without loading it, or null. */
export function tensorValueShape(x: unknown): number[] | null {
  if (isTensorLike(x)) return x.shape;
  if (isLazyTensor(x)) return [...x.shape];
  return null;
}

/** A new handle the caller owns: an alias of a loaded tensor, or the lazy one loaded now. */
export function takeTensor(x: unknown): Tensor | null {
  if (isTensorLike(x)) return x.alias();
  if (isLazyTensor(x)) return x.load();
  return null;
}

/** Items of a Python list or tuple (an array, or a tuple object with `items`), else null. */
export function pyItems(x: unknown): readonly unknown[] | null {
  if (Array.isArray(x)) return x;
  const items = x !== null && typeof x === 'object' ? (x as { items?: unknown }).items : undefined;
  return Array.isArray(items) ? items : null;
}
