// What is this file? Kind, family and completeness of any state dict (sd-formats.md §4.5, §4.6,
// §5, §6.1, §7.1), so `inspect` and the loaders can answer with a sentence that names keys
// ("this looks like an SD1 UNet; missing model.diffusion_model.out.2.weight, …") instead of
// failing later on the first missing tensor.
import { detectFamily, type FamilyOptions, type FamilyReport } from './family.ts';
export { detectFamily, type FamilyOptions, type FamilyReport, type Prediction, type Variant } from './family.ts';
import {
  DDPM_BUFFERS, LDM_CLIP, LDM_OPENCLIP, LDM_UNET, LDM_VAE, diffusersShapesToLdm,
} from './ldm.ts';
import {
  SD1_CLIP_KEYS_CONFIG, SD1_UNET_KEYS_CONFIG, SD2_CLIP_KEYS_CONFIG, SD2_UNET_KEYS_CONFIG, SD_VAE_KEYS_CONFIG,
  clipTextKeyShapes, unetKeyShapes, vaeKeyShapes,
} from './keysets.ts';
import { summarizeLoraKeys, type LoraSummary } from './lora.ts';
import { embeddingLayoutOfKeys, type EmbeddingLayout } from './embedding.ts';
import { isHypernetworkObject } from './hypernetwork.ts';
import { isTensorLike, keyShapesOf, listKeys, pyEntries, pyGet, pyObjectState, sameShape, tensorValueShape, shapeStr, type Component, type Family, type KeyShapes, type StateDict } from './types.ts';

export type Kind =
  | 'checkpoint' // single-file LDM checkpoint with two or more of UNet / VAE / text encoder
  | 'unet'
  | 'vae'
  | 'text-encoder'
  | 'lora-kohya'
  | 'lora-peft'
  | 'embedding'
  | 'hypernetwork'
  | 'unknown';

export interface EmaInfo {
  /** EMA tensors (`model_ema.*` other than decay / num_updates). */
  count: number;
  /** How many `model.*` weights have an EMA counterpart. */
  matched: number;
  /** diffusers' own test: more than 100 `model_ema` keys (§4.6). */
  likelyFullEma: boolean;
}

export interface ComponentCheck {
  present: boolean;
  /** Expected keys (for the detected family's standard sizes) that are absent. */
  missing: string[];
  /** Present keys whose shape differs from the standard one. */
  shapeMismatches: string[];
}

export interface DetectionDetails {
  layout?: 'ldm' | 'ldm-bare' | 'diffusers' | 'openclip' | 'kohya' | 'peft' | EmbeddingLayout | 'a1111-hypernetwork';
  components?: Partial<Record<Component, ComponentCheck>>;
  ema?: EmaInfo;
  lora?: LoraSummary;
  embedding?: { vectors: number; widths: number[] };
  hypernetwork?: { widths: number[] };
  /** Keys that belong to none of the recognised parts (capped list in messages). */
  unrecognised?: string[];
}

export interface Detection {
  kind: Kind;
  family: FamilyReport;
  details: DetectionDetails;
  /** Sentences for people, most important first. */
  messages: string[];
}

export type DetectOptions = FamilyOptions;

// ---- EMA (§4.6) ------------------------------------------------------------------------------

/** LitEma's buffer name for a `model.*` parameter: all dots removed after the first segment. */
export function emaKeyFor(modelKey: string): string {
  return `model_ema.${modelKey.split('.').slice(1).join('')}`;
}

export function emaInfo(keys: Iterable<string>): EmaInfo {
  const list = [...keys];
  const ema = new Set(list.filter((k) => k.startsWith('model_ema.') && k !== 'model_ema.decay' && k !== 'model_ema.num_updates'));
  let matched = 0;
  for (const k of list) if (k.startsWith('model.') && ema.has(emaKeyFor(k))) matched++;
  return { count: ema.size, matched, likelyFullEma: list.filter((k) => k.startsWith('model_ema')).length > 100 };
}

/**
 * Prunes a training checkpoint (§4.6). 'non-ema' drops `model_ema.*`; 'ema' first puts each EMA
 * tensor in place of its `model.*` counterpart ("pruned-emaonly"). DDPM buffers are dropped too
 * unless `keepBuffers`. Returned tensors are new handles.
 */
export function pruneEma(sd: StateDict, mode: 'ema' | 'non-ema', opts: { keepBuffers?: boolean } = {}): {
  sd: StateDict;
  replaced: number;
  /** 'ema' mode: model weights that had no EMA copy and were kept as they are. */
  missingEma: string[];
  dropped: string[];
} {
  const out: StateDict = new Map();
  const dropped: string[] = [];
  const missingEma: string[] = [];
  let replaced = 0;
  const info = emaInfo(sd.keys());
  if (mode === 'ema' && info.matched === 0) {
    throw new Error('This checkpoint has no EMA weights (no model_ema.* keys matching model.*): prune it with mode "non-ema".');
  }
  for (const [k, t] of sd) {
    if (k.startsWith('model_ema.') || (!opts.keepBuffers && DDPM_BUFFERS.has(k))) {
      dropped.push(k);
      continue;
    }
    const e = mode === 'ema' && k.startsWith('model.') ? sd.get(emaKeyFor(k)) : undefined;
    if (e !== undefined) {
      if (!sameShape(e.shape, t.shape)) throw new Error(`EMA weight ${emaKeyFor(k)} is ${shapeStr(e.shape)} but ${k} is ${shapeStr(t.shape)}`);
      out.set(k, e.alias());
      replaced++;
    } else {
      if (mode === 'ema' && k.startsWith(LDM_UNET)) missingEma.push(k);
      out.set(k, t.alias());
    }
  }
  return { sd: out, replaced, missingEma, dropped };
}

// ---- expected key sets -----------------------------------------------------------------------

type StdFamily = 'sd1' | 'sd2';

const expectedCache = new Map<string, KeyShapes>();

/** Standard keys and shapes of one component in one naming (built once, §3 configs). */
export function expectedKeys(family: StdFamily, component: Component, naming: 'ldm' | 'diffusers'): KeyShapes {
  const id = `${family}:${component}:${naming}`;
  const hit = expectedCache.get(id);
  if (hit) return hit;
  const diff =
    component === 'unet' ? unetKeyShapes(family === 'sd1' ? SD1_UNET_KEYS_CONFIG : SD2_UNET_KEYS_CONFIG)
      : component === 'vae' ? vaeKeyShapes(SD_VAE_KEYS_CONFIG)
        : clipTextKeyShapes(family === 'sd1' ? SD1_CLIP_KEYS_CONFIG : SD2_CLIP_KEYS_CONFIG);
  const ks = naming === 'diffusers' ? diff : diffusersShapesToLdm({ [component]: diff }, family, { positionIds: false, sd2TextExtras: 'omit' });
  expectedCache.set(id, ks);
  return ks;
}

function checkComponent(keys: KeyShapes, expected: KeyShapes, present: boolean): ComponentCheck {
  const missing: string[] = [];
  const shapeMismatches: string[] = [];
  for (const [k, s] of expected) {
    const got = keys.get(k);
    if (got === undefined) missing.push(k);
    else if (!sameShape(got, s)) shapeMismatches.push(`${k} is ${shapeStr(got)}, expected ${shapeStr(s)}`);
  }
  return { present, missing, shapeMismatches };
}

const COMPONENT_WORD: Record<Component, string> = { unet: 'UNet', vae: 'VAE', textEncoder: 'text encoder' };

// ---- detection -------------------------------------------------------------------------------

function unknownFamily(reason: string): FamilyReport {
  return { family: 'unknown', supported: false, standard: false, variant: 'base', prediction: 'unknown', predictionSource: '', ztsnr: false, reason };
}

/** A family told from an adapter's widths or metadata (no UNet structure to look at). */
function adapterFamily(family: Family, reason: string): FamilyReport {
  if (family === 'unknown') return unknownFamily(reason);
  const prediction = family === 'sd2-v' ? 'v' : family === 'sd1' ? 'epsilon' : 'unknown';
  return { ...unknownFamily(reason), family, supported: family !== 'sdxl', standard: true, prediction };
}

/**
 * Kind, family and completeness of a flat state dict (safetensors, or a .ckpt's state_dict).
 * Accepts tensors or just shapes. For .pt object trees (embeddings, hypernetworks) use detectObject.
 */
export function detectKind(input: KeyShapes | StateDict, opts: DetectOptions = {}): Detection {
  const keys = toKeyShapes(input);
  const tensors = opts.tensors ?? (isStateDict(input) ? input : undefined);
  if (keys.size === 0) return { kind: 'unknown', family: unknownFamily('the file holds no tensors'), details: {}, messages: ['The file holds no tensors.'] };

  // LoRA (§5.1, §5.3).
  const lora = summarizeLoraKeys(keys, opts.metadata ?? {});
  if (lora !== null) {
    const fam = adapterFamily(lora.family, `LoRA for ${lora.family === 'unknown' ? 'an unknown base model' : lora.family.toUpperCase()} (${lora.familySource})`);
    const messages = [
      `${lora.format === 'kohya' ? 'kohya' : 'diffusers/PEFT'} LoRA${lora.locon ? ' with conv layers (LoCon)' : ''}: ${lora.modules} modules (${lora.unetModules} UNet, ${lora.textEncoderModules} text encoder), rank ${lora.ranks.join('/')}.`,
    ];
    if (lora.unsupported.length > 0) messages.push(`Keys this project does not apply: ${listKeys(lora.unsupported)}.`);
    if (lora.family === 'sdxl') messages.push('It is for SDXL, which is recognised but not supported yet.');
    return { kind: lora.format === 'kohya' ? 'lora-kohya' : 'lora-peft', family: fam, details: { layout: lora.format, lora }, messages };
  }

  // Textual-inversion embedding (§6.1).
  const emb = embeddingLayoutOfKeys(keys);
  if (emb !== null) {
    const w = emb.widths;
    const family: Family = emb.layout === 'sdxl' ? 'sdxl' : w[0] === 768 ? 'sd1' : w[0] === 1024 ? 'sd2' : 'unknown';
    const fam = adapterFamily(family, family === 'unknown' ? `embedding width ${w[0]} matches no SD text encoder` : `embedding width ${w.join(' + ')}`);
    return {
      kind: 'embedding',
      family: fam,
      details: { layout: emb.layout, embedding: { vectors: emb.vectors, widths: w } },
      messages: [`Textual-inversion embedding (${emb.layout} layout): ${emb.vectors} vector${emb.vectors === 1 ? '' : 's'} of width ${w.join(' + ')}.`],
    };
  }

  return detectModel(keys, { ...opts, tensors });
}

function detectModel(keys: KeyShapes, opts: DetectOptions): Detection {
  const family = detectFamily(keys, opts);
  const list = [...keys.keys()];
  const has = (p: string): boolean => list.some((k) => k.startsWith(p));
  const ldm = { unet: has(LDM_UNET), vae: has(LDM_VAE), textEncoder: has(LDM_CLIP) || has(LDM_OPENCLIP) };
  const messages: string[] = [];
  const details: DetectionDetails = {};
  let kind: Kind;
  let naming: 'ldm' | 'diffusers' = 'ldm';
  let parts: Component[];

  if (ldm.unet || ldm.vae || ldm.textEncoder || has('conditioner.')) {
    parts = (['unet', 'vae', 'textEncoder'] as const).filter((c) => ldm[c]);
    kind = parts.length >= 2 || has('conditioner.') ? 'checkpoint' : parts[0] === 'unet' ? 'unet' : parts[0] === 'vae' ? 'vae' : 'text-encoder';
    details.layout = 'ldm';
    const ema = emaInfo(list);
    if (ema.count > 0) {
      details.ema = ema;
      messages.push(`Holds ${ema.count} EMA weights (model_ema.*, ${ema.matched} matching the UNet): prune with EMA or without before use (§4.6).`);
    }
  } else if (keys.has('conv_in.weight') && (has('down_blocks.') || has('time_embedding.'))) {
    [kind, parts, naming, details.layout] = ['unet', ['unet'], 'diffusers', 'diffusers'];
  } else if (has('encoder.down_blocks.') || has('decoder.up_blocks.') || (keys.has('quant_conv.weight') && has('decoder.mid_block.'))) {
    [kind, parts, naming, details.layout] = ['vae', ['vae'], 'diffusers', 'diffusers'];
  } else if (has('encoder.down.') || has('decoder.up.')) {
    // A standalone VAE file (.vae.pt / .vae.safetensors) keeps LDM names without the prefix.
    [kind, parts, details.layout] = ['vae', [], 'ldm-bare'];
  } else if (has('text_model.') || (has('embeddings.') && has('encoder.layers.'))) {
    [kind, parts, naming, details.layout] = ['text-encoder', ['textEncoder'], 'diffusers', 'diffusers'];
  } else if (has('transformer.resblocks.')) {
    [kind, parts, details.layout] = ['text-encoder', [], 'openclip'];
  } else {
    const sample = listKeys(list.slice(0, 5), 5);
    return {
      kind: 'unknown',
      family: unknownFamily(`no SD key layout recognised (first keys: ${sample})`),
      details: { unrecognised: list },
      messages: [`Not a Stable Diffusion model, LoRA or embedding that sdtune recognises. First keys: ${sample}.`],
    };
  }

  const what = kind === 'checkpoint' ? 'checkpoint' : COMPONENT_WORD[parts[0] ?? (kind === 'vae' ? 'vae' : 'textEncoder')];
  const famWord = family.family === 'unknown' ? '' : `${family.family.toUpperCase()} `;
  if (family.family === 'sdxl') {
    messages.unshift(`This looks like an SDXL ${what}: ${family.reason}.`);
    return { kind, family, details, messages };
  }
  // "an SD1 UNet", "a VAE": every family word starts with "SD".
  const looks = `This looks like ${famWord ? 'an' : 'a'} ${famWord}${what}${naming === 'diffusers' ? ' (diffusers naming)' : ''}`;
  messages.unshift(`${looks}.`);
  if (!family.standard && family.family !== 'unknown') messages.push(`Non-standard sizes: ${family.reason}.`);
  if (family.family === 'unknown') messages.push(`The model family cannot be told: ${family.reason}.`);
  if ((family.family === 'sd2' || family.family === 'sd2-v') && family.prediction === 'unknown') messages.push(family.predictionSource);

  // Completeness against the standard key sets, only when the sizes are the released ones.
  const std: StdFamily | null = family.family === 'sd1' ? 'sd1' : family.family === 'sd2' || family.family === 'sd2-v' ? 'sd2' : null;
  if (std !== null && family.standard && family.variant === 'base') {
    details.components = {};
    const all = kind === 'checkpoint' ? (['unet', 'vae', 'textEncoder'] as const) : parts;
    for (const c of all) {
      const present = parts.includes(c);
      const check = present ? checkComponent(keys, expectedKeys(std, c, naming), true) : { present: false, missing: [], shapeMismatches: [] };
      details.components[c] = check;
      if (!present) {
        messages.push(`It has no ${COMPONENT_WORD[c]} weights; supply a ${COMPONENT_WORD[c]} separately.`);
        continue;
      }
      if (check.missing.length > 0) {
        // The headline names the missing keys: the first thing a person needs to see.
        if (kind === 'checkpoint') messages.push(`Its ${COMPONENT_WORD[c]} is incomplete: missing ${listKeys(check.missing)}.`);
        else messages[0] = `${looks}; missing ${listKeys(check.missing)}.`;
      }
      if (check.shapeMismatches.length > 0) {
        messages.push(`The ${COMPONENT_WORD[c]} has unexpected shapes: ${listKeys(check.shapeMismatches, 4)}.`);
      }
    }
  }
  if (kind === 'checkpoint' && ldm.textEncoder === false && has('conditioner.')) messages.push('SDXL text encoders (conditioner.*) are not supported yet.');
  return { kind, family, details, messages };
}

function isStateDict(x: KeyShapes | StateDict): x is StateDict {
  for (const v of x.values()) return isTensorLike(v);
  return false;
}

function toKeyShapes(x: KeyShapes | StateDict): KeyShapes {
  return isStateDict(x) ? keyShapesOf(x) : x;
}

/**
 * Detection for a .pt/.ckpt/.bin object tree as a pickle reader returns it: hypernetworks and
 * A1111 embeddings are recognised from their dict structure; a `state_dict` wrapper is unwrapped
 * (§4.1) and its `global_step` used for SD2's prediction type; flat tensor dicts go to detectKind.
 */
export function detectObject(tree: unknown, opts: DetectOptions = {}): Detection {
  if (isHypernetworkObject(tree)) {
    const widths = (pyEntries(tree) ?? []).map(([k]) => String(k)).filter((k) => /^\d+$/.test(k)).map(Number);
    const family: Family = widths.includes(1024) ? 'sd2' : widths.includes(768) ? 'sd1' : 'unknown';
    const fam = adapterFamily(family, family === 'unknown' ? 'hypernetwork without a 768 or 1024 context width' : `hypernetwork with context width ${family === 'sd2' ? 1024 : 768}`);
    return {
      kind: 'hypernetwork',
      family: fam,
      details: { layout: 'a1111-hypernetwork', hypernetwork: { widths } },
      messages: [`A1111 hypernetwork for context widths ${widths.join(', ')}.`],
    };
  }
  const stp = pyGet(tree, 'string_to_param');
  if (stp !== undefined) {
    const params = pyGet(stp, '_parameters') ?? pyGet(pyObjectState(stp), '_parameters') ?? stp;
    const s = (pyEntries(params) ?? []).map(([, v]) => tensorValueShape(v)).find((x) => x !== null) ?? [0, 0];
    return detectKind(new Map([['string_to_param.*', s.length === 1 ? [1, s[0]] : s]]), opts);
  }
  const inner = pyGet(tree, 'state_dict');
  const step = pyGet(tree, 'global_step');
  const globalStep = typeof step === 'number' ? step : typeof step === 'bigint' ? Number(step) : opts.globalStep;
  // Shapes only: nothing is loaded to tell what a file is.
  const keys: KeyShapes = new Map();
  for (const [k, v] of pyEntries(inner ?? tree) ?? []) {
    const s = tensorValueShape(v);
    if (s !== null) keys.set(String(k), s);
  }
  return detectKind(keys, { ...opts, ...(globalStep !== undefined ? { globalStep } : {}) });
}
