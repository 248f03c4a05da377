// Model-family detection from keys and shapes (sd-formats.md §4.5). Pure and dependency-free so
// that both the LDM converter and the kind detector can use it.
//
// Structure decides first (conv vs linear proj_in, label_emb, the text tower's layout), sizes
// confirm: a tiny test UNet with SD1's structure is reported as sd1 with `standard: false`, so
// the project's small fixtures go through the same code paths as real checkpoints.
import type { Family, KeyShapes, StateDict } from './types.ts';

export type Prediction = 'epsilon' | 'v' | 'unknown';
export type Variant = 'base' | 'inpaint' | 'instruct-pix2pix';

export interface FamilyReport {
  family: Family;
  /** false for SDXL and unknown: say so instead of failing later on a missing key. */
  supported: boolean;
  /** true when the widths are the released models' (768 / 1024 / 2048 context). */
  standard: boolean;
  variant: Variant;
  prediction: Prediction;
  /** Where the prediction type came from, or why it could not be told. */
  predictionSource: string;
  /** Zero-terminal-SNR marker present (ComfyUI `ztsnr`, §4.5). */
  ztsnr: boolean;
  /** One sentence saying what was recognised and from which key. */
  reason: string;
}

export interface FamilyOptions {
  /** File metadata (safetensors `__metadata__`): modelspec.* and ss_* name the prediction type. */
  metadata?: Readonly<Record<string, string>>;
  /** Tensors, when loaded: lets ComfyUI's SD2 v-prediction heuristic run (§4.5). */
  tensors?: StateDict;
  /** `global_step` of a .ckpt's top-level dict: diffusers treats 875000 as SD 2.0-base (epsilon). */
  globalStep?: number;
}

const U = 'model.diffusion_model.';

function firstMatch(keys: KeyShapes, re: RegExp): [string, number[]] | null {
  for (const e of keys) if (re.test(e[0])) return e;
  return null;
}

/** Cross-attention context width read from any attn2.to_k weight, LDM or diffusers naming. */
function contextWidth(keys: KeyShapes): [string, number] | null {
  const e = firstMatch(keys, /(^|\.)attn2\.to_k\.weight$/);
  return e ? [e[0], e[1][e[1].length - 1]] : null;
}

/** How the UNet projects into its transformers: SD1 uses 1x1 convs, SD2/SDXL Linear (§3.4). */
function projStyle(keys: KeyShapes): 'conv' | 'linear' | null {
  const e = firstMatch(keys, /(^|\.)(attentions\.\d+|(input|output)_blocks\.\d+\.1|middle_block\.1)\.proj_in\.weight$/);
  if (!e) return null;
  return e[1].length === 4 ? 'conv' : e[1].length === 2 ? 'linear' : null;
}

function inChannels(keys: KeyShapes): number | null {
  const s = keys.get(`${U}input_blocks.0.0.weight`) ?? keys.get('conv_in.weight');
  return s !== undefined && s.length === 4 ? s[1] : null;
}

function variantOf(keys: KeyShapes): Variant {
  const c = inChannels(keys);
  return c === 9 ? 'inpaint' : c === 8 ? 'instruct-pix2pix' : 'base';
}

/** Text-tower width: CLIP (HF) token embedding, OpenCLIP token embedding or packed in_proj. */
function textTower(keys: KeyShapes): { style: 'clip' | 'openclip'; width: number; key: string } | null {
  for (const [k, s] of keys) {
    if (/(^|\.)text_model\.embeddings\.token_embedding\.weight$/.test(k) || /^(embeddings)\.token_embedding\.weight$/.test(k)) {
      return { style: 'clip', width: s[s.length - 1], key: k };
    }
  }
  for (const [k, s] of keys) {
    if (/^(cond_stage_model\.model\.)?transformer\.resblocks\.0\.attn\.in_proj_weight$/.test(k)) return { style: 'openclip', width: s[s.length - 1], key: k };
    if (/^(cond_stage_model\.model\.)?token_embedding\.weight$/.test(k)) return { style: 'openclip', width: s[s.length - 1], key: k };
  }
  return null;
}

function report(family: Family, reason: string, extra: Partial<FamilyReport> = {}): FamilyReport {
  return {
    family,
    supported: family === 'sd1' || family === 'sd2' || family === 'sd2-v',
    standard: true,
    variant: 'base',
    prediction: 'unknown',
    predictionSource: '',
    ztsnr: false,
    reason,
    ...extra,
  };
}

/**
 * The family of any SD state dict: full LDM checkpoint, diffusers UNet / VAE / text encoder, in
 * either naming. Order of tests follows §4.5 (SDXL markers first, then SD2, then SD1).
 */
export function detectFamily(keys: KeyShapes, opts: FamilyOptions = {}): FamilyReport {
  const base = detectStructure(keys);
  if (base.family === 'unknown') return base;
  base.variant = variantOf(keys);
  base.ztsnr = keys.has('ztsnr');
  predictionOf(base, keys, opts);
  if (base.family === 'sd2' && base.prediction === 'v') base.family = 'sd2-v';
  return base;
}

function detectStructure(keys: KeyShapes): FamilyReport {
  // 1. SDXL (A1111 sd_models_config.py and diffusers infer_diffusers_model_type markers).
  for (const k of ['conditioner.embedders.1.model.ln_final.weight', 'conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias']) {
    if (keys.has(k)) return report('sdxl', `SDXL base checkpoint (has ${k}); SDXL is recognised but not supported yet`);
  }
  if (keys.has('conditioner.embedders.0.model.ln_final.weight')) {
    return report('sdxl', 'SDXL refiner checkpoint (has conditioner.embedders.0.model.ln_final.weight); SDXL is recognised but not supported yet');
  }
  for (const k of [`${U}label_emb.0.0.weight`, 'add_embedding.linear_1.weight']) {
    if (keys.has(k)) return report('sdxl', `SDXL UNet (has ${k}, the size/crop conditioning); SDXL is recognised but not supported yet`);
  }
  const ctx = contextWidth(keys);
  if (ctx && (ctx[1] === 2048 || ctx[1] === 1280)) {
    return report('sdxl', `SDXL UNet (cross-attention width ${ctx[1]} in ${ctx[0]}); SDXL is recognised but not supported yet`);
  }

  // 2. SD2 / SD1 from the UNet's structure, confirmed by the context width.
  const proj = projStyle(keys);
  if (proj !== null) {
    const family: Family = proj === 'linear' ? 'sd2' : 'sd1';
    const want = family === 'sd2' ? 1024 : 768;
    const standard = ctx !== null && ctx[1] === want;
    const how = proj === 'linear' ? 'Linear proj_in/proj_out (use_linear_projection)' : '1x1-conv proj_in/proj_out';
    const size = ctx === null ? '' : standard ? `, context ${ctx[1]}` : `, but context width ${ctx[1]} (the released models use ${want}: a small or custom model)`;
    return report(family, `${family.toUpperCase()}-style UNet: ${how}${size}`, { standard });
  }
  if (ctx !== null && (ctx[1] === 768 || ctx[1] === 1024)) {
    const family: Family = ctx[1] === 1024 ? 'sd2' : 'sd1';
    return report(family, `${family.toUpperCase()} UNet (cross-attention width ${ctx[1]} in ${ctx[0]})`);
  }

  // 3. Text encoder alone (or a checkpoint without a UNet): the tower's layout and width.
  const te = textTower(keys);
  if (te !== null) {
    if (te.style === 'openclip') {
      return report('sd2', `SD2 text encoder (OpenCLIP layout, width ${te.width} in ${te.key})`, { standard: te.width === 1024 });
    }
    if (te.width === 1024) return report('sd2', `SD2 text encoder (CLIP layout, width 1024 in ${te.key})`);
    return report('sd1', `SD1 text encoder (CLIP layout, width ${te.width} in ${te.key})`, { standard: te.width === 768 });
  }
  const hasVae = [...keys.keys()].some((k) => /^(first_stage_model\.)?(encoder|decoder)\.(conv_in|mid)/.test(k));
  if (hasVae) {
    return report('unknown', 'SD1 and SD2 share the VAE architecture');
  }
  return report('unknown', 'no key that tells the families apart is present (§4.5 looks at proj_in, attn2.to_k and the text tower)');
}

// ---- prediction type (§4.5: no canonical marker; DISAGREEMENT among tools) -------------------

function predictionOf(r: FamilyReport, keys: KeyShapes, opts: FamilyOptions): void {
  const set = (p: Prediction, src: string): void => {
    r.prediction = p;
    r.predictionSource = src;
  };
  // ComfyUI and newer tools: an empty `v_pred` tensor marks v-prediction.
  if (keys.has('v_pred')) return set('v', 'the `v_pred` marker key (ComfyUI convention)');
  const md = opts.metadata ?? {};
  const mp = md['modelspec.prediction_type'] ?? md['modelspec.predict_key'];
  if (mp === 'v' || mp === 'v_prediction') return set('v', `metadata modelspec.prediction_type = ${mp}`);
  if (mp === 'epsilon') return set('epsilon', 'metadata modelspec.prediction_type = epsilon');
  if (md.ss_base_model_version === 'sd_v2_v') return set('v', 'metadata ss_base_model_version = sd_v2_v');
  if (md.ss_base_model_version === 'sd_v2' || md.ss_base_model_version === 'sd_v1') {
    return set('epsilon', `metadata ss_base_model_version = ${md.ss_base_model_version}`);
  }
  if (r.family === 'sd1') return set('epsilon', 'SD1 models are epsilon-prediction unless marked otherwise');
  if (r.family === 'sdxl') return set('epsilon', 'SDXL base is epsilon-prediction unless a `v_pred` key says otherwise');
  // SD2 from here on.
  if (r.variant === 'inpaint') return set('epsilon', 'SD2 inpainting models are epsilon-prediction (ComfyUI)');
  if (opts.globalStep === 875000) return set('epsilon', 'global_step 875000 = SD 2.0-base (diffusers _legacy_load_scheduler)');
  const t = opts.tensors;
  if (t !== undefined) {
    const k = [`${U}output_blocks.11.1.transformer_blocks.0.norm1.bias`, 'up_blocks.3.attentions.2.transformer_blocks.0.norm1.bias'].find((x) => t.has(x));
    if (k !== undefined) {
      const s = populationStd(t.get(k)!.toArray()); // toArray(): waits for the device
      return set(s > 0.09 ? 'v' : 'epsilon', `ComfyUI heuristic: population std of ${k} = ${s.toFixed(4)} (${s > 0.09 ? '>' : '<='} 0.09)`);
    }
  }
  set(
    'unknown',
    'SD2 keys do not say whether the model predicts v or epsilon (768-px 2.x models are v, 512-px "base" models epsilon); ' +
      'load the tensors to run ComfyUI\'s heuristic, put a <checkpoint>.yaml beside it, or state the prediction type.',
  );
}

function populationStd(v: number[]): number {
  if (v.length === 0) return 0;
  const mean = v.reduce((a, b) => a + b, 0) / v.length;
  return Math.sqrt(v.reduce((a, b) => a + (b - mean) * (b - mean), 0) / v.length);
}
