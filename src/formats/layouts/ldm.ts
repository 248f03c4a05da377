// Original single-file (LDM) checkpoints <-> diffusers naming, for SD1 and SD2 (sd-formats.md §4).
//
// diffusers naming is the one naming inside sdtune (STYLE 2); this file is the edge. The UNet and
// VAE maps are general over layers_per_block and the number of levels: both are read from the
// keys (§4.2, §4.3), so the tiny test models and the released ones take the same path. The
// appendix tables (appendix/*.tsv) are the ground truth the tests hold these maps to.
//
// The conversion is written once over an abstract value (a tensor, or just a shape), so the
// key-only form that `inspect` uses cannot drift from the tensor form that loads weights.
import * as T from '../../torch/index.ts';
import type { Tensor } from '../../torch/index.ts';
import { detectFamily, type FamilyReport } from './family.ts';
import { keyShapesOf, listKeys, type Component, type Family, type KeyShapes, type StateDict } from './types.ts';

/** §4.1 prefixes of an SD1/SD2 single-file checkpoint. */
export const LDM_UNET = 'model.diffusion_model.';
export const LDM_VAE = 'first_stage_model.';
export const LDM_CLIP = 'cond_stage_model.transformer.';
export const LDM_OPENCLIP = 'cond_stage_model.model.';

/** DDPM schedule buffers of a LatentDiffusion checkpoint (§4.1): recomputed from §8, never loaded. */
export const DDPM_BUFFERS: ReadonlySet<string> = new Set([
  'betas', 'alphas_cumprod', 'alphas_cumprod_prev', 'sqrt_alphas_cumprod', 'sqrt_one_minus_alphas_cumprod',
  'log_one_minus_alphas_cumprod', 'sqrt_recip_alphas_cumprod', 'sqrt_recipm1_alphas_cumprod', 'posterior_variance',
  'posterior_log_variance_clipped', 'posterior_mean_coef1', 'posterior_mean_coef2',
]);

export interface UNetLayout {
  /** diffusers layers_per_block (LDM num_res_blocks): input-block index stride is L+1 (§4.2). */
  layersPerBlock: number;
  /** Up levels (0 = deepest) that have attention: their upsampler sits at `.2.conv`, else `.1.conv`. */
  upLevelsWithAttention: ReadonlySet<number>;
}
export interface VaeLayout {
  /** Number of resolution levels; decoder `up.{n-1-i}` is diffusers `up_blocks.{i}` (§4.3). */
  levels: number;
}
export interface LdmLayout {
  unet: UNetLayout;
  vae: VaeLayout;
  /** OpenCLIP resblocks kept for SD2's diffusers text encoder (penultimate layer, §3.4): 23. */
  sd2TextLayers: number;
}

// ---- layout from keys ------------------------------------------------------------------------

/** Reads layers_per_block and the up levels with attention from LDM or diffusers UNet keys. */
export function unetLayoutFromKeys(keys: Iterable<string>): UNetLayout {
  const list = [...keys].map((k) => (k.startsWith(LDM_UNET) ? k.slice(LDM_UNET.length) : k));
  let maxRes = -1;
  const upAttn = new Set<number>();
  let minOp = Infinity, minUp = Infinity, maxIn = -1;
  for (const k of list) {
    let m = /^down_blocks\.0\.resnets\.(\d+)\./.exec(k);
    if (m) maxRes = Math.max(maxRes, +m[1]);
    if ((m = /^up_blocks\.(\d+)\.attentions\./.exec(k))) upAttn.add(+m[1]);
    if ((m = /^input_blocks\.(\d+)\.0\.op\./.exec(k))) minOp = Math.min(minOp, +m[1]);
    if ((m = /^output_blocks\.(\d+)\.[12]\.conv\./.exec(k))) minUp = Math.min(minUp, +m[1]);
    if ((m = /^input_blocks\.(\d+)\./.exec(k))) maxIn = Math.max(maxIn, +m[1]);
  }
  let L: number;
  if (maxRes >= 0) L = maxRes + 1;
  else if (minOp < Infinity) L = minOp - 1; // the first downsampler follows L resnets
  else if (minUp < Infinity) L = minUp; // the first upsampler closes up level 0 (L+1 blocks)
  else if (maxIn > 0) L = maxIn; // a single level: input_blocks 1..L
  else L = 2; // SD1/SD2/SDXL
  for (const k of list) {
    const m = /^output_blocks\.(\d+)\.1\.(?!conv\.)/.exec(k);
    if (m) upAttn.add(Math.floor(+m[1] / (L + 1)));
  }
  return { layersPerBlock: L, upLevelsWithAttention: upAttn };
}

export function vaeLayoutFromKeys(keys: Iterable<string>): VaeLayout {
  let max = -1;
  for (const k0 of keys) {
    const k = k0.startsWith(LDM_VAE) ? k0.slice(LDM_VAE.length) : k0;
    const m = /^(?:encoder\.down|decoder\.up|encoder\.down_blocks|decoder\.up_blocks)\.(\d+)\./.exec(k);
    if (m) max = Math.max(max, +m[1]);
  }
  return { levels: max >= 0 ? max + 1 : 4 };
}

/** The released SD1/SD2 layout: layers_per_block 2, attention on up levels 1–3, 4 VAE levels. */
export const SD_LAYOUT: LdmLayout = { unet: { layersPerBlock: 2, upLevelsWithAttention: new Set([1, 2, 3]) }, vae: { levels: 4 }, sd2TextLayers: 23 };

export function layoutFromKeys(keys: Iterable<string>, partial: Partial<LdmLayout> = {}): LdmLayout {
  const list = [...keys];
  return {
    unet: partial.unet ?? unetLayoutFromKeys(list.filter((k) => !k.startsWith(LDM_VAE) && !k.startsWith('cond_stage_model.'))),
    vae: partial.vae ?? vaeLayoutFromKeys(list.filter((k) => k.startsWith(LDM_VAE) || /^(encoder|decoder)\./.test(k))),
    sd2TextLayers: partial.sd2TextLayers ?? 23,
  };
}

// ---- UNet (§4.2) -----------------------------------------------------------------------------

const RES_LDM: readonly (readonly [string, string])[] = [
  ['in_layers.0.', 'norm1.'],
  ['in_layers.2.', 'conv1.'],
  ['emb_layers.1.', 'time_emb_proj.'],
  ['out_layers.0.', 'norm2.'],
  ['out_layers.3.', 'conv2.'],
  ['skip_connection.', 'conv_shortcut.'],
];

function renameBy(rest: string, table: readonly (readonly [string, string])[], reverse: boolean): string | null {
  for (const [a, b] of table) {
    const [from, to] = reverse ? [b, a] : [a, b];
    if (rest.startsWith(from)) return to + rest.slice(from.length);
  }
  return null;
}

/** One UNet key, `model.diffusion_model.` already stripped, to diffusers; null if not a UNet key. */
export function unetKeyLdmToDiffusers(k: string, L: number): string | null {
  const res = (rest: string): string | null => renameBy(rest, RES_LDM, false);
  const pre = (p: string, s: string | null): string | null => (s === null ? null : p + s);
  let m: RegExpExecArray | null;
  for (const [a, b] of [['time_embed.0.', 'time_embedding.linear_1.'], ['time_embed.2.', 'time_embedding.linear_2.'],
    ['label_emb.0.0.', 'add_embedding.linear_1.'], ['label_emb.0.2.', 'add_embedding.linear_2.'],
    ['out.0.', 'conv_norm_out.'], ['out.2.', 'conv_out.']] as const) {
    if (k.startsWith(a)) return b + k.slice(a.length);
  }
  if ((m = /^input_blocks\.(\d+)\.(\d+)\.(.+)$/.exec(k))) {
    const n = +m[1], sub = +m[2], rest = m[3];
    if (n === 0) return sub === 0 ? `conv_in.${rest}` : null;
    const i = Math.floor((n - 1) / (L + 1)), j = (n - 1) % (L + 1);
    if (j === L) return sub === 0 && rest.startsWith('op.') ? `down_blocks.${i}.downsamplers.0.conv.${rest.slice(3)}` : null;
    if (sub === 0) return pre(`down_blocks.${i}.resnets.${j}.`, res(rest));
    return sub === 1 ? `down_blocks.${i}.attentions.${j}.${rest}` : null;
  }
  if ((m = /^middle_block\.(\d+)\.(.+)$/.exec(k))) {
    const sub = +m[1], rest = m[2];
    if (sub === 1) return `mid_block.attentions.0.${rest}`;
    return sub === 0 || sub === 2 ? pre(`mid_block.resnets.${sub / 2}.`, res(rest)) : null;
  }
  if ((m = /^output_blocks\.(\d+)\.(\d+)\.(.+)$/.exec(k))) {
    const n = +m[1], sub = +m[2], rest = m[3];
    const i = Math.floor(n / (L + 1)), j = n % (L + 1);
    if (sub === 0) return pre(`up_blocks.${i}.resnets.${j}.`, res(rest));
    // An attention block has no `conv` child, so `.1.conv` is an upsampler on a level without attention.
    if (rest.startsWith('conv.') && (sub === 1 || sub === 2)) return j === L ? `up_blocks.${i}.upsamplers.0.${rest}` : null;
    return sub === 1 ? `up_blocks.${i}.attentions.${j}.${rest}` : null;
  }
  return null;
}

/** One diffusers UNet key to LDM (without `model.diffusion_model.`); null if not a UNet key. */
export function unetKeyDiffusersToLdm(k: string, layout: UNetLayout): string | null {
  const L = layout.layersPerBlock;
  const res = (rest: string): string | null => renameBy(rest, RES_LDM, true);
  const pre = (p: string, s: string | null): string | null => (s === null ? null : p + s);
  let m: RegExpExecArray | null;
  for (const [b, a] of [['time_embed.0.', 'time_embedding.linear_1.'], ['time_embed.2.', 'time_embedding.linear_2.'],
    ['label_emb.0.0.', 'add_embedding.linear_1.'], ['label_emb.0.2.', 'add_embedding.linear_2.'],
    ['out.0.', 'conv_norm_out.'], ['out.2.', 'conv_out.'], ['input_blocks.0.0.', 'conv_in.']] as const) {
    if (k.startsWith(a)) return b + k.slice(a.length);
  }
  if ((m = /^down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$/.exec(k))) {
    const i = +m[1], j = +m[3], n = i * (L + 1) + j + 1;
    return m[2] === 'resnets' ? pre(`input_blocks.${n}.0.`, res(m[4])) : `input_blocks.${n}.1.${m[4]}`;
  }
  if ((m = /^down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$/.exec(k))) return `input_blocks.${(+m[1] + 1) * (L + 1)}.0.op.${m[2]}`;
  if ((m = /^mid_block\.resnets\.([01])\.(.+)$/.exec(k))) return pre(`middle_block.${2 * +m[1]}.`, res(m[2]));
  if ((m = /^mid_block\.attentions\.0\.(.+)$/.exec(k))) return `middle_block.1.${m[1]}`;
  if ((m = /^up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$/.exec(k))) {
    const n = +m[1] * (L + 1) + +m[3];
    return m[2] === 'resnets' ? pre(`output_blocks.${n}.0.`, res(m[4])) : `output_blocks.${n}.1.${m[4]}`;
  }
  if ((m = /^up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$/.exec(k))) {
    const i = +m[1];
    return `output_blocks.${i * (L + 1) + L}.${layout.upLevelsWithAttention.has(i) ? 2 : 1}.conv.${m[2]}`;
  }
  return null;
}

// ---- VAE (§4.3) ------------------------------------------------------------------------------

const VAE_RES: readonly (readonly [string, string])[] = [
  ['norm1.', 'norm1.'], ['conv1.', 'conv1.'], ['norm2.', 'norm2.'], ['conv2.', 'conv2.'], ['nin_shortcut.', 'conv_shortcut.'],
];
const VAE_ATTN: readonly (readonly [string, string])[] = [
  ['norm.', 'group_norm.'], ['q.', 'to_q.'], ['k.', 'to_k.'], ['v.', 'to_v.'], ['proj_out.', 'to_out.0.'],
];
/** Names written before diffusers ~0.14; accepted on read (§4.3, diffusers conv_attn_to_linear). */
const VAE_LEGACY: readonly (readonly [string, string])[] = [
  ['query.', 'to_q.'], ['key.', 'to_k.'], ['value.', 'to_v.'], ['proj_attn.', 'to_out.0.'],
];

/** Modern name for a diffusers VAE key (legacy `attentions.0.query` etc. → `to_q`). */
export function normalizeDiffusersVaeKey(k: string): string {
  const m = /^((?:encoder|decoder)\.mid_block\.attentions\.0\.)(.+)$/.exec(k);
  if (!m) return k;
  return m[1] + (renameBy(m[2], VAE_LEGACY, false) ?? m[2]);
}

/** True for the four mid-block attention *weights*, stored [C,C,1,1] in LDM and [C,C] in diffusers. */
export function isVaeAttnWeight(diffusersKey: string): boolean {
  return /^(encoder|decoder)\.mid_block\.attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.weight$/.test(diffusersKey);
}

export function vaeKeyLdmToDiffusers(k: string, levels: number): string | null {
  let m: RegExpExecArray | null;
  if (/^(encoder|decoder)\.(conv_in|conv_out)\./.test(k) || /^(post_)?quant_conv\./.test(k)) return k;
  if ((m = /^(encoder|decoder)\.norm_out\.(.+)$/.exec(k))) return `${m[1]}.conv_norm_out.${m[2]}`;
  const res = (p: string, rest: string): string | null => {
    const r = renameBy(rest, VAE_RES, false);
    return r === null ? null : p + r;
  };
  if ((m = /^encoder\.down\.(\d+)\.block\.(\d+)\.(.+)$/.exec(k))) return res(`encoder.down_blocks.${m[1]}.resnets.${m[2]}.`, m[3]);
  if ((m = /^encoder\.down\.(\d+)\.downsample\.conv\.(.+)$/.exec(k))) return `encoder.down_blocks.${m[1]}.downsamplers.0.conv.${m[2]}`;
  if ((m = /^decoder\.up\.(\d+)\.block\.(\d+)\.(.+)$/.exec(k))) return res(`decoder.up_blocks.${levels - 1 - +m[1]}.resnets.${m[2]}.`, m[3]);
  if ((m = /^decoder\.up\.(\d+)\.upsample\.conv\.(.+)$/.exec(k))) return `decoder.up_blocks.${levels - 1 - +m[1]}.upsamplers.0.conv.${m[2]}`;
  if ((m = /^(encoder|decoder)\.mid\.block_([12])\.(.+)$/.exec(k))) return res(`${m[1]}.mid_block.resnets.${+m[2] - 1}.`, m[3]);
  if ((m = /^(encoder|decoder)\.mid\.attn_1\.(.+)$/.exec(k))) {
    const r = renameBy(m[2], VAE_ATTN, false);
    return r === null ? null : `${m[1]}.mid_block.attentions.0.${r}`;
  }
  return null;
}

export function vaeKeyDiffusersToLdm(k0: string, levels: number): string | null {
  const k = normalizeDiffusersVaeKey(k0);
  let m: RegExpExecArray | null;
  if (/^(encoder|decoder)\.(conv_in|conv_out)\./.test(k) || /^(post_)?quant_conv\./.test(k)) return k;
  if ((m = /^(encoder|decoder)\.conv_norm_out\.(.+)$/.exec(k))) return `${m[1]}.norm_out.${m[2]}`;
  const res = (p: string, rest: string): string | null => {
    const r = renameBy(rest, VAE_RES, true);
    return r === null ? null : p + r;
  };
  if ((m = /^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$/.exec(k))) return res(`encoder.down.${m[1]}.block.${m[2]}.`, m[3]);
  if ((m = /^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$/.exec(k))) return `encoder.down.${m[1]}.downsample.conv.${m[2]}`;
  if ((m = /^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$/.exec(k))) return res(`decoder.up.${levels - 1 - +m[1]}.block.${m[2]}.`, m[3]);
  if ((m = /^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$/.exec(k))) return `decoder.up.${levels - 1 - +m[1]}.upsample.conv.${m[2]}`;
  if ((m = /^(encoder|decoder)\.mid_block\.resnets\.([01])\.(.+)$/.exec(k))) return res(`${m[1]}.mid.block_${+m[2] + 1}.`, m[3]);
  if ((m = /^(encoder|decoder)\.mid_block\.attentions\.0\.(.+)$/.exec(k))) {
    const r = renameBy(m[2], VAE_ATTN, true);
    return r === null ? null : `${m[1]}.mid.attn_1.${r}`;
  }
  return null;
}

// ---- text encoders (§4.4) --------------------------------------------------------------------

/**
 * diffusers/HF CLIP key with the `text_model.` wrapper. transformers ≥ 5.6 saves state dicts
 * without it; readers accept both, writers always write it (§4.4).
 */
export function normalizeClipTextKey(k: string): string {
  return /^(embeddings|encoder|final_layer_norm)\./.test(k) ? `text_model.${k}` : k;
}

const OPENCLIP_LAYER: readonly (readonly [string, string])[] = [
  ['ln_1.', 'layer_norm1.'], ['ln_2.', 'layer_norm2.'], ['attn.out_proj.', 'self_attn.out_proj.'],
  ['mlp.c_fc.', 'mlp.fc1.'], ['mlp.c_proj.', 'mlp.fc2.'],
];

/** OpenCLIP key (without `cond_stage_model.model.`) to HF; keys = [q,k,v] for the packed in_proj. */
export function openclipKeyToDiffusers(k: string, keepLayers: number): { keys: string[]; split: boolean } | 'drop' | null {
  let m: RegExpExecArray | null;
  if (k === 'token_embedding.weight') return { keys: ['text_model.embeddings.token_embedding.weight'], split: false };
  if (k === 'positional_embedding') return { keys: ['text_model.embeddings.position_embedding.weight'], split: false };
  if ((m = /^ln_final\.(.+)$/.exec(k))) return { keys: [`text_model.final_layer_norm.${m[1]}`], split: false };
  if (k === 'text_projection' || k === 'logit_scale') return 'drop'; // unused by SD2 (diffusers SD_2_TEXT_ENCODER_KEYS_TO_IGNORE)
  if ((m = /^transformer\.resblocks\.(\d+)\.(.+)$/.exec(k))) {
    const n = +m[1], rest = m[2];
    if (n >= keepLayers) return 'drop'; // SD2 conditions on the penultimate layer: the last block is unused (§3.4)
    const p = `text_model.encoder.layers.${n}.`;
    const pm = /^attn\.in_proj_(weight|bias)$/.exec(rest);
    if (pm) return { keys: ['q', 'k', 'v'].map((x) => `${p}self_attn.${x}_proj.${pm[1]}`), split: true };
    const r = renameBy(rest, OPENCLIP_LAYER, false);
    return r === null ? null : { keys: [p + r], split: false };
  }
  return null;
}

/** HF key to OpenCLIP (without prefix); `part` 0/1/2 = rows of the packed in_proj (q, k, v). */
export function openclipKeyFromDiffusers(k0: string): { key: string; part?: number } | 'drop' | null {
  const k = normalizeClipTextKey(k0);
  let m: RegExpExecArray | null;
  if (k === 'text_model.embeddings.token_embedding.weight') return { key: 'token_embedding.weight' };
  if (k === 'text_model.embeddings.position_embedding.weight') return { key: 'positional_embedding' };
  if (k === 'text_model.embeddings.position_ids') return 'drop'; // a buffer OpenCLIP does not have
  if ((m = /^text_model\.final_layer_norm\.(.+)$/.exec(k))) return { key: `ln_final.${m[1]}` };
  if ((m = /^text_model\.encoder\.layers\.(\d+)\.(.+)$/.exec(k))) {
    const p = `transformer.resblocks.${m[1]}.`;
    const q = /^self_attn\.([qkv])_proj\.(weight|bias)$/.exec(m[2]);
    if (q) return { key: `${p}attn.in_proj_${q[2]}`, part: 'qkv'.indexOf(q[1]) };
    const r = renameBy(m[2], OPENCLIP_LAYER, true);
    return r === null ? null : { key: p + r };
  }
  return null;
}

// ---- one key, any component ------------------------------------------------------------------

export type LdmKeyOp = 'same' | 'toLinear' | 'splitQkv';
export interface LdmKeyMapping {
  component: Component;
  /** One diffusers key, or three (q, k, v) for SD2's packed in_proj. */
  keys: string[];
  op: LdmKeyOp;
}

/**
 * Where one LDM checkpoint key goes in diffusers naming, or null when it has no diffusers
 * counterpart (DDPM buffers, EMA copies, position_ids, SD2's unused last block, SDXL parts).
 */
export function ldmKeyToDiffusers(key: string, layout: LdmLayout = SD_LAYOUT): LdmKeyMapping | null {
  if (key.startsWith(LDM_UNET)) {
    const d = unetKeyLdmToDiffusers(key.slice(LDM_UNET.length), layout.unet.layersPerBlock);
    return d === null ? null : { component: 'unet', keys: [d], op: 'same' };
  }
  if (key.startsWith(LDM_VAE)) {
    const d = vaeKeyLdmToDiffusers(key.slice(LDM_VAE.length), layout.vae.levels);
    return d === null ? null : { component: 'vae', keys: [d], op: isVaeAttnWeight(d) ? 'toLinear' : 'same' };
  }
  if (key.startsWith(LDM_CLIP)) {
    let d = key.slice(LDM_CLIP.length);
    // Files from older transformers lack `text_model.` (A1111 checkpoint_dict_replacements_sd1).
    if (!d.startsWith('text_model.')) d = `text_model.${d}`;
    // Stored position_ids are ignored and regenerated: merges hold them as rounded floats (§4.1).
    if (d === 'text_model.embeddings.position_ids') return null;
    return { component: 'textEncoder', keys: [d], op: 'same' };
  }
  if (key.startsWith(LDM_OPENCLIP)) {
    const d = openclipKeyToDiffusers(key.slice(LDM_OPENCLIP.length), layout.sd2TextLayers);
    if (d === null || d === 'drop') return null;
    return { component: 'textEncoder', keys: d.keys, op: d.split ? 'splitQkv' : 'same' };
  }
  return null;
}

/** Why a key of an LDM checkpoint has no diffusers counterpart (for `inspect` and reports). */
export function ignoredReason(key: string): string {
  if (DDPM_BUFFERS.has(key)) return 'DDPM schedule buffer (recomputed, §8)';
  if (key.startsWith('model_ema.')) return 'EMA copy of the UNet (pruneEma chooses EMA or not, §4.6)';
  if (key.endsWith('embeddings.position_ids')) return 'position_ids buffer (regenerated as 0..76, §4.1)';
  if (key.startsWith(LDM_OPENCLIP)) return "SD2 text-tower part diffusers does not use (last block, text_projection, logit_scale; §4.4)";
  if (key.startsWith('conditioner.') || key.includes('label_emb')) return 'SDXL part (not supported yet)';
  if (key === 'v_pred' || key === 'ztsnr') return 'ComfyUI prediction marker (§4.5)';
  return 'not part of an SD1/SD2 UNet, VAE or text encoder';
}

// ---- the conversion, written once over values (tensors or shapes) ----------------------------

interface ValueOps<V> {
  same(v: V): V;
  /** [C,C,1,1] → [C,C] (a no-op when already 2-D). */
  toLinear(v: V): V;
  /** [C,C] → [C,C,1,1] (a no-op when already 4-D). */
  toConv(v: V): V;
  split3(v: V, key: string): [V, V, V];
  cat3(vs: readonly V[]): V;
  clone(v: V): V;
  ones(shape: number[]): V;
  scalar(x: number): V;
  arangeIds(n: number): V;
  shape(v: V): number[];
}

const tensorOps: ValueOps<Tensor> = {
  same: (t) => t.alias(),
  toLinear: (t) => (t.ndim === 4 ? t.reshape(t.shape[0], t.shape[1]) : t.alias()),
  toConv: (t) => (t.ndim === 2 ? t.reshape(t.shape[0], t.shape[1], 1, 1) : t.alias()),
  split3: (t, key) => {
    if (t.shape[0] % 3 !== 0) throw new Error(`${key}: packed q/k/v projection has ${t.shape[0]} rows, not a multiple of 3`);
    return t.chunk(3, 0) as [Tensor, Tensor, Tensor];
  },
  cat3: (ts) => T.cat(ts, 0),
  clone: (t) => t.clone(),
  ones: (s) => T.ones(s),
  scalar: (x) => T.tensor(x),
  arangeIds: (n) => T.arange(0, n, 1, { dtype: 'int64' }).reshape(1, n),
  shape: (t) => t.shape,
};

const shapeOps: ValueOps<number[]> = {
  same: (s) => [...s],
  toLinear: (s) => (s.length === 4 ? [s[0], s[1]] : [...s]),
  toConv: (s) => (s.length === 2 ? [s[0], s[1], 1, 1] : [...s]),
  split3: (s, key) => {
    if (s[0] % 3 !== 0) throw new Error(`${key}: packed q/k/v projection has ${s[0]} rows, not a multiple of 3`);
    const r = [s[0] / 3, ...s.slice(1)];
    return [r, [...r], [...r]];
  },
  cat3: (ss) => [ss[0][0] * 3, ...ss[0].slice(1)],
  clone: (s) => [...s],
  ones: (s) => [...s],
  scalar: () => [],
  arangeIds: (n) => [1, n],
  shape: (s) => s,
};

export interface LdmConversion<V> {
  unet: Map<string, V>;
  vae: Map<string, V>;
  textEncoder: Map<string, V>;
  family: FamilyReport;
  /** Input keys with no diffusers counterpart; their values are in `extras`. */
  ignored: string[];
  /** The ignored entries (new handles), so diffusersToLdm can put them back for an exact round trip. */
  extras: Map<string, V>;
  layout: LdmLayout;
}

function convertFromLdm<V>(sd: Map<string, V>, ops: ValueOps<V>, shapes: KeyShapes, partial: Partial<LdmLayout>): LdmConversion<V> {
  const family = detectFamily(shapes);
  if (family.family === 'sdxl') {
    throw new Error(`This is an SDXL checkpoint (${family.reason}). sdtune converts SD1 and SD2 checkpoints only, for now.`);
  }
  const layout = layoutFromKeys(sd.keys(), partial);
  const out: Record<Component, Map<string, V>> = { unet: new Map(), vae: new Map(), textEncoder: new Map() };
  const from = new Map<string, string>();
  const ignored: string[] = [];
  const extras = new Map<string, V>();
  for (const [k, v] of sd) {
    const m = ldmKeyToDiffusers(k, layout);
    if (m === null) {
      ignored.push(k);
      extras.set(k, ops.same(v));
      continue;
    }
    const dst = out[m.component];
    for (const d of m.keys) {
      const prev = from.get(`${m.component}:${d}`);
      if (prev !== undefined) throw new Error(`Checkpoint holds the same weight twice: ${prev} and ${k} both map to ${d}. The file looks corrupt or merged incorrectly.`);
      from.set(`${m.component}:${d}`, k);
    }
    if (m.op === 'splitQkv') {
      const parts = ops.split3(v, k);
      m.keys.forEach((d, i) => dst.set(d, parts[i]));
    } else {
      dst.set(m.keys[0], m.op === 'toLinear' ? ops.toLinear(v) : ops.same(v));
    }
  }
  return { ...out, family, ignored, extras, layout };
}

/**
 * Splits an SD1/SD2 single-file checkpoint into diffusers-named UNet, VAE and text encoder.
 * Keys with no diffusers counterpart are listed in `ignored` and kept in `extras`. Throws for SDXL.
 * Returned tensors are new handles (views of the input where bytes do not change).
 */
export function ldmToDiffusers(sd: StateDict, opts: { layout?: Partial<LdmLayout> } = {}): LdmConversion<Tensor> {
  return convertFromLdm(sd, tensorOps, keyShapesOf(sd), opts.layout ?? {});
}

/** The key-and-shape form of ldmToDiffusers, for `inspect` on a header without loading tensors. */
export function ldmShapesToDiffusers(keys: KeyShapes, opts: { layout?: Partial<LdmLayout> } = {}): LdmConversion<number[]> {
  return convertFromLdm(keys, shapeOps, keys, opts.layout ?? {});
}

export interface DiffusersParts<V> {
  unet?: Map<string, V>;
  vae?: Map<string, V>;
  textEncoder?: Map<string, V>;
}

export interface ToLdmOptions<V> {
  /** Entries to carry over (DDPM buffers, SD2's unused text-tower parts…), typically ldmToDiffusers' extras. */
  extras?: Map<string, V>;
  /** Write SD1's `position_ids` int64 [1,77], which older loaders expect (§4.1). Default true. */
  positionIds?: boolean;
  /**
   * SD2: A1111 and ComfyUI build the full 24-block OpenCLIP tower. When `extras` lacks block 23,
   * `text_projection` and `logit_scale`, 'synthesize' fills them the way kohya does (copy block
   * 22, ones, 1); they do not affect SD2 conditioning (§4.4). Default 'synthesize'.
   */
  sd2TextExtras?: 'synthesize' | 'omit';
  layout?: Partial<LdmLayout>;
}

function convertToLdm<V>(parts: DiffusersParts<V>, family: Family, ops: ValueOps<V>, opts: ToLdmOptions<V>): Map<string, V> {
  if (family !== 'sd1' && family !== 'sd2' && family !== 'sd2-v') {
    throw new Error(`diffusersToLdm writes SD1 and SD2 checkpoints; got family '${family}'.`);
  }
  const out = new Map<string, V>();
  const unknown: string[] = [];
  if (parts.unet) {
    const layout = opts.layout?.unet ?? unetLayoutFromKeys(parts.unet.keys());
    for (const [k, v] of parts.unet) {
      const d = unetKeyDiffusersToLdm(k, layout);
      if (d === null) unknown.push(`unet: ${k}`);
      else out.set(LDM_UNET + d, ops.same(v));
    }
  }
  if (parts.vae) {
    const layout = opts.layout?.vae ?? vaeLayoutFromKeys(parts.vae.keys());
    for (const [k, v] of parts.vae) {
      const d = vaeKeyDiffusersToLdm(k, layout.levels);
      if (d === null) unknown.push(`vae: ${k}`);
      else out.set(LDM_VAE + d, isVaeAttnWeight(normalizeDiffusersVaeKey(k)) ? ops.toConv(v) : ops.same(v));
    }
  }
  if (parts.textEncoder) {
    if (family === 'sd1') clipToLdm(parts.textEncoder, ops, opts, out);
    else openclipToLdm(parts.textEncoder, ops, opts, out, unknown);
  }
  if (unknown.length > 0) {
    throw new Error(`These diffusers keys have no place in an ${family.toUpperCase()} single-file checkpoint: ${listKeys(unknown)}. Is the model an SD1/SD2 UNet, VAE and text encoder?`);
  }
  for (const [k, v] of opts.extras ?? []) if (!out.has(k)) out.set(k, ops.same(v));
  return out;
}

function clipToLdm<V>(te: Map<string, V>, ops: ValueOps<V>, opts: ToLdmOptions<V>, out: Map<string, V>): void {
  let positions: number | null = null;
  for (const [k0, v] of te) {
    const k = normalizeClipTextKey(k0);
    out.set(LDM_CLIP + k, ops.same(v));
    if (k === 'text_model.embeddings.position_embedding.weight') positions = ops.shape(v)[0];
  }
  const pid = `${LDM_CLIP}text_model.embeddings.position_ids`;
  if ((opts.positionIds ?? true) && positions !== null && !out.has(pid) && !opts.extras?.has(pid)) out.set(pid, ops.arangeIds(positions));
}

function openclipToLdm<V>(te: Map<string, V>, ops: ValueOps<V>, opts: ToLdmOptions<V>, out: Map<string, V>, unknown: string[]): void {
  const packed = new Map<string, (V | undefined)[]>();
  let lastLayer = -1;
  for (const [k, v] of te) {
    const d = openclipKeyFromDiffusers(k);
    if (d === 'drop') continue;
    if (d === null) {
      unknown.push(`textEncoder: ${k}`);
      continue;
    }
    const m = /^transformer\.resblocks\.(\d+)\./.exec(d.key);
    if (m) lastLayer = Math.max(lastLayer, +m[1]);
    if (d.part === undefined) {
      out.set(LDM_OPENCLIP + d.key, ops.same(v));
    } else {
      const slot = packed.get(d.key) ?? [undefined, undefined, undefined];
      slot[d.part] = v;
      packed.set(d.key, slot);
    }
  }
  for (const [k, slot] of packed) {
    if (slot.some((x) => x === undefined)) {
      unknown.push(`textEncoder: ${k} needs all of q_proj, k_proj and v_proj (missing ${['q', 'k', 'v'].filter((_, i) => slot[i] === undefined).join(', ')})`);
      continue;
    }
    // OpenCLIP packs q, k, v along dim 0 in that order (nn.MultiheadAttention in_proj, §4.4).
    out.set(LDM_OPENCLIP + k, ops.cat3(slot as V[]));
  }
  if ((opts.sd2TextExtras ?? 'synthesize') === 'omit' || lastLayer < 0) return;
  const have = (k: string): boolean => out.has(LDM_OPENCLIP + k) || (opts.extras?.has(LDM_OPENCLIP + k) ?? false);
  const next = lastLayer + 1;
  // Only the block reading dropped (§3.4: SD2 uses the penultimate of 24) is filled in.
  if (next === (opts.layout?.sd2TextLayers ?? 23) && !have(`transformer.resblocks.${next}.ln_1.weight`)) {
    // kohya convert_text_encoder_state_dict_to_sd_v2(make_dummy_weights): copy the last block.
    const src = `${LDM_OPENCLIP}transformer.resblocks.${lastLayer}.`;
    for (const [k, v] of [...out]) if (k.startsWith(src)) out.set(`${LDM_OPENCLIP}transformer.resblocks.${next}.${k.slice(src.length)}`, ops.clone(v));
  }
  const lnFinal = out.get(`${LDM_OPENCLIP}ln_final.weight`);
  const width = lnFinal === undefined ? 1024 : ops.shape(lnFinal)[0];
  if (!have('text_projection')) out.set(`${LDM_OPENCLIP}text_projection`, ops.ones([width, width]));
  if (!have('logit_scale')) out.set(`${LDM_OPENCLIP}logit_scale`, ops.scalar(1));
}

/**
 * Joins diffusers-named parts into one SD1/SD2 single-file checkpoint (§4.1, §4.4). Unknown keys
 * are an error that names them. Returned tensors are new handles.
 */
export function diffusersToLdm(parts: DiffusersParts<Tensor>, family: Family, opts: ToLdmOptions<Tensor> = {}): StateDict {
  return convertToLdm(parts, family, tensorOps, opts);
}

/** Key-and-shape form of diffusersToLdm. */
export function diffusersShapesToLdm(parts: DiffusersParts<number[]>, family: Family, opts: ToLdmOptions<number[]> = {}): KeyShapes {
  return convertToLdm(parts, family, shapeOps, opts);
}

/** LDM name of one diffusers key of `component`, as a checkpoint would hold it (null if none). */
export function diffusersKeyToLdm(component: Component, key: string, family: Family, layout: LdmLayout = SD_LAYOUT): string | null {
  if (component === 'unet') {
    const d = unetKeyDiffusersToLdm(key, layout.unet);
    return d === null ? null : LDM_UNET + d;
  }
  if (component === 'vae') {
    const d = vaeKeyDiffusersToLdm(key, layout.vae.levels);
    return d === null ? null : LDM_VAE + d;
  }
  if (family === 'sd1') return LDM_CLIP + normalizeClipTextKey(key);
  const d = openclipKeyFromDiffusers(key);
  return d === null || d === 'drop' ? null : LDM_OPENCLIP + d.key;
}

// ---- standalone VAE files --------------------------------------------------------------------

/**
 * A standalone VAE file (`*.vae.pt` / `*.vae.safetensors`) to diffusers naming: A1111-style files
 * keep LDM names without `first_stage_model.`; prefixed LDM and diffusers files (legacy attention
 * names included) are accepted too. Keys that are not VAE weights are an error naming them.
 */
export function vaeFileToDiffusers(sd: StateDict): StateDict {
  const keys = [...sd.keys()];
  const ldm = keys.some((k) => /^(first_stage_model\.)?(encoder\.down\.|decoder\.up\.|(encoder|decoder)\.mid\.)/.test(k));
  const levels = vaeLayoutFromKeys(keys).levels;
  const out: StateDict = new Map();
  const unknown: string[] = [];
  for (const [k0, t] of sd) {
    const k = k0.startsWith(LDM_VAE) ? k0.slice(LDM_VAE.length) : k0;
    if (ldm) {
      const d = vaeKeyLdmToDiffusers(k, levels);
      if (d === null) unknown.push(k0);
      else out.set(d, isVaeAttnWeight(d) ? tensorOps.toLinear(t) : t.alias());
    } else {
      const d = normalizeDiffusersVaeKey(k);
      if (vaeKeyDiffusersToLdm(d, levels) === null) unknown.push(k0);
      else out.set(d, isVaeAttnWeight(d) ? tensorOps.toLinear(t) : t.alias());
    }
  }
  if (unknown.length > 0) {
    for (const t of out.values()) t.dispose();
    throw new Error(`These keys are not VAE weights: ${listKeys(unknown)}. Is this a VAE file?`);
  }
  return out;
}

/** A diffusers VAE as a standalone A1111-style VAE file (LDM names, no prefix). */
export function diffusersVaeToFile(vae: StateDict): StateDict {
  const full = convertToLdm({ vae }, 'sd1', tensorOps, {});
  const out: StateDict = new Map();
  for (const [k, t] of full) out.set(k.slice(LDM_VAE.length), t);
  return out;
}
