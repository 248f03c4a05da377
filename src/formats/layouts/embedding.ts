// Textual-inversion embedding layouts (sd-formats.md §6.1) ↔ one typed structure.
//
// Readers take either a safetensors StateDict or the plain object tree a pickle reader returns
// for a .pt/.bin (dicts as plain objects or Maps, tensors as engine tensors). Writers give back
// the same forms; src/formats/torchfile.ts turns a tree into a .pt. Precedence follows A1111's
// create_embedding_from_data: string_to_param first, then clip_l + clip_g, then a single tensor.
import type { Tensor } from '../../torch/index.ts';
import { isTensorValue, pyEntries, pyGet, pyObjectState, takeTensor, tensorValueShape, type Family, type KeyShapes, type StateDict } from './types.ts';

/**
 * Which text encoder a set of vectors is for: 'te' is the single encoder of SD1 (CLIP-L, 768)
 * and SD2 (OpenCLIP-H, 1024); 'clip_l' / 'clip_g' are SDXL's two (768 and 1280), as kohya and
 * A1111 name them.
 */
export type EncoderSlot = 'te' | 'clip_l' | 'clip_g';

export type EmbeddingLayout =
  | 'a1111' // .pt: string_to_token / string_to_param / name / step / sd_checkpoint…
  | 'a1111-legacy' // .pt from rinongal/textual_inversion: ParameterDict, token as a 0-d tensor
  | 'kohya' // safetensors {emb_params: [n, D]}
  | 'sdxl' // {clip_l: [n,768], clip_g: [n,1280]}
  | 'diffusers' // learned_embeds.{bin,safetensors}: {<token>: [n, D]}
  | 'single'; // any other single-tensor file (A1111 accepts these)

export interface Embedding {
  /** The prompt trigger: A1111 uses the file stem, so readers prefer it over the stored name. */
  name: string;
  /** [n, dim] per text encoder. */
  vectors: Partial<Record<EncoderSlot, Tensor>>;
  /** Optimizer steps done (A1111 `step`). */
  step?: number;
  /** Checkpoint it was trained on (A1111 `sd_checkpoint` short hash and `sd_checkpoint_name`). */
  checkpoint?: { hash: string | null; name: string | null };
  /** diffusers placeholder token (`<cat-toy>`), when the file had one. */
  token?: string;
  layout: EmbeddingLayout;
}

/** A1111's constant: the id of "*</w>" in the CLIP vocabulary (§6.1). */
export const A1111_STAR_TOKEN = 265;

/** A 1-D vector counts as one row (A1111); returns a new handle. */
function asRows(t: Tensor): Tensor {
  return t.ndim === 1 ? t.reshape(1, t.shape[0]) : t.alias();
}

function checkRows(t: Tensor, what: string): void {
  if (t.ndim !== 1 && t.ndim !== 2) throw new Error(`${what}: an embedding is [vectors, width], got shape [${t.shape.join(', ')}]`);
}

function numberOrUndefined(v: unknown): number | undefined {
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  return undefined;
}

function strOrNull(v: unknown): string | null {
  return typeof v === 'string' ? v : null;
}

/**
 * The one tensor value inside string_to_param: a dict, or (legacy) a ParameterDict object whose
 * entries live in `_parameters` (A1111 reads getattr(param_dict, '_parameters', param_dict)).
 */
function paramValue(p: unknown): { value: unknown; legacy: boolean } | null {
  if (isTensorValue(p)) return { value: p, legacy: false };
  const inner = pyGet(p, '_parameters') ?? pyGet(pyObjectState(p), '_parameters');
  const entries = pyEntries(inner ?? p);
  if (entries === null) return null;
  const tensors = entries.map(([, v]) => v).filter(isTensorValue);
  if (tensors.length !== 1) {
    throw new Error(`string_to_param holds ${tensors.length} tensors; an A1111 embedding holds exactly one (§6.1)`);
  }
  return { value: tensors[0], legacy: inner !== undefined };
}

function checkShape(s: readonly number[] | null, what: string): void {
  if (s === null || (s.length !== 1 && s.length !== 2)) {
    throw new Error(`${what}: an embedding is [vectors, width], got ${s === null ? 'no tensor' : `shape [${s.join(', ')}]`}`);
  }
}

/**
 * Reads an embedding from a .pt/.bin object tree (A1111, legacy, diffusers .bin, SDXL dict).
 * `fileStem` is the file name without extension: the trigger word in A1111.
 */
export function embeddingFromObject(tree: unknown, opts: { fileStem?: string } = {}): Embedding {
  const stp = pyGet(tree, 'string_to_param');
  if (stp !== undefined) {
    const p = paramValue(stp);
    if (p === null) throw new Error('string_to_param has no tensor: not a textual-inversion embedding');
    checkShape(tensorValueShape(p.value), 'string_to_param');
    const loaded = takeTensor(p.value) as Tensor;
    const t = loaded.ndim === 1 ? loaded.reshape(1, loaded.shape[0]) : loaded;
    if (t !== loaded) loaded.dispose();
    // Legacy files hold the token id as a 0-d tensor and the vectors in a ParameterDict.
    const legacy = p.legacy || isTensorValue(pyGet(pyGet(tree, 'string_to_token'), '*'));
    const stored = strOrNull(pyGet(tree, 'name'));
    const hash = strOrNull(pyGet(tree, 'sd_checkpoint'));
    const cname = strOrNull(pyGet(tree, 'sd_checkpoint_name'));
    const step = numberOrUndefined(pyGet(tree, 'step'));
    return {
      name: opts.fileStem ?? stored ?? 'embedding',
      vectors: { te: t },
      ...(step !== undefined ? { step } : {}),
      ...(hash !== null || cname !== null ? { checkpoint: { hash, name: cname } } : {}),
      layout: legacy ? 'a1111-legacy' : 'a1111',
    };
  }
  const entries = pyEntries(tree);
  if (entries === null) throw new Error('not a textual-inversion embedding: expected a dict');
  const sd: StateDict = new Map();
  try {
    for (const [k, v] of entries) {
      const t = takeTensor(v);
      if (t !== null) sd.set(String(k), t);
    }
    return embeddingFromStateDict(sd, opts);
  } finally {
    for (const t of sd.values()) t.dispose(); // the result holds its own handles
  }
}

/** Reads an embedding from safetensors tensors (kohya emb_params, SDXL clip_l/clip_g, diffusers, single). */
export function embeddingFromStateDict(sd: StateDict, opts: { fileStem?: string } = {}): Embedding {
  const name = (fallback: string): string => opts.fileStem ?? fallback;
  const l = sd.get('clip_l'), g = sd.get('clip_g');
  if (l && g) {
    checkRows(l, 'clip_l');
    checkRows(g, 'clip_g');
    return { name: name('embedding'), vectors: { clip_l: asRows(l), clip_g: asRows(g) }, layout: 'sdxl' };
  }
  const e = sd.get('emb_params');
  if (e) {
    checkRows(e, 'emb_params');
    return { name: name('embedding'), vectors: { te: asRows(e) }, layout: 'kohya' };
  }
  // A1111 string_to_param flattened by a safetensors conversion.
  const flat = [...sd].filter(([k]) => k.startsWith('string_to_param.'));
  if (flat.length === 1) {
    checkRows(flat[0][1], flat[0][0]);
    return { name: name('embedding'), vectors: { te: asRows(flat[0][1]) }, layout: 'a1111' };
  }
  if (sd.size === 1) {
    const [k, t] = [...sd][0];
    checkRows(t, k);
    // diffusers names the tensor by its placeholder token (`<cat-toy>`); A1111 accepts any name.
    const diffusers = /^<.*>$/.test(k) || !/^(emb|param|weight|embedding)s?$/i.test(k);
    return {
      name: name(k.replace(/^<(.*)>$/, '$1')),
      vectors: { te: asRows(t) },
      ...(diffusers ? { token: k } : {}),
      layout: diffusers ? 'diffusers' : 'single',
    };
  }
  throw new Error(
    `not a textual-inversion embedding: ${sd.size} tensors (${[...sd.keys()].slice(0, 4).join(', ')}…); ` +
      'expected emb_params, clip_l + clip_g, string_to_param or a single tensor (§6.1)',
  );
}

/** Width per slot, and the family that width means (A1111 skips embeddings of another width). */
export function embeddingFamily(e: Embedding): Family {
  if (e.vectors.clip_l && e.vectors.clip_g) return 'sdxl';
  const w = e.vectors.te?.shape[1];
  return w === 768 ? 'sd1' : w === 1024 ? 'sd2' : 'unknown';
}

export function vectorCount(e: Embedding): number {
  const t = e.vectors.te ?? e.vectors.clip_l ?? e.vectors.clip_g;
  return t === undefined ? 0 : t.shape[0];
}

function single(e: Embedding, what: string): Tensor {
  const t = e.vectors.te;
  if (!t) throw new Error(`${what} holds one set of vectors (SD1/SD2); '${e.name}' is an SDXL embedding (clip_l + clip_g): save it as safetensors`);
  return t;
}

/**
 * A1111 `.pt` dict as a plain object tree (§6.1): string_to_token {'*': 265}, string_to_param
 * {'*': Tensor[n, D]}, name, step, sd_checkpoint, sd_checkpoint_name. Tensors are new handles.
 */
export function embeddingToA1111(e: Embedding): {
  string_to_token: { '*': number };
  string_to_param: { '*': Tensor };
  name: string;
  step: number;
  sd_checkpoint: string | null;
  sd_checkpoint_name: string | null;
} {
  return {
    string_to_token: { '*': A1111_STAR_TOKEN },
    string_to_param: { '*': single(e, 'An A1111 .pt embedding').alias() },
    name: e.name,
    step: e.step ?? 0,
    sd_checkpoint: e.checkpoint?.hash ?? null,
    sd_checkpoint_name: e.checkpoint?.name ?? null,
  };
}

/** kohya safetensors: {emb_params} for SD1/SD2, {clip_l, clip_g} for SDXL (§6.1). */
export function embeddingToKohya(e: Embedding): StateDict {
  if (e.vectors.clip_l && e.vectors.clip_g) {
    return new Map([['clip_l', e.vectors.clip_l.alias()], ['clip_g', e.vectors.clip_g.alias()]]);
  }
  return new Map([['emb_params', single(e, 'A kohya embedding').alias()]]);
}

/** diffusers learned_embeds: {<token>: [n, D]}; the token defaults to `<name>`. */
export function embeddingToDiffusers(e: Embedding, token = e.token ?? `<${e.name}>`): StateDict {
  return new Map([[token, single(e, 'A diffusers learned_embeds file').alias()]]);
}

export function disposeEmbedding(e: Embedding): void {
  for (const t of Object.values(e.vectors)) t?.dispose();
}

/** Layout of an embedding file from its keys alone (for detection), or null. */
export function embeddingLayoutOfKeys(keys: KeyShapes): { layout: EmbeddingLayout; vectors: number; widths: number[] } | null {
  const rows = (s: number[]): number => (s.length === 1 ? 1 : s[0]);
  const l = keys.get('clip_l'), g = keys.get('clip_g');
  if (l && g && keys.size === 2) return { layout: 'sdxl', vectors: rows(l), widths: [l[l.length - 1], g[g.length - 1]] };
  const e = keys.get('emb_params');
  if (e && keys.size === 1) return { layout: 'kohya', vectors: rows(e), widths: [e[e.length - 1]] };
  if (keys.size === 1) {
    const [k, s] = [...keys][0];
    // A1111's own key says what it is at any width; for a bare single tensor, require the shape
    // of a few vectors (A1111 caps them at 75) of a plausible width.
    if (/^string_to_param\./.test(k) && (s.length === 1 || s.length === 2)) return { layout: 'a1111', vectors: rows(s), widths: [s[s.length - 1]] };
    if (s.length === 2 && s[0] <= 75 && s[1] >= 16) return { layout: 'diffusers', vectors: s[0], widths: [s[1]] };
    if (s.length === 1 && s[0] >= 16) return { layout: 'single', vectors: 1, widths: [s[0]] };
  }
  return null;
}
