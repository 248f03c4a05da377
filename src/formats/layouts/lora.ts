// LoRA file layouts: kohya (`lora_unet_…`, the de-facto standard) and diffusers/PEFT
// (`unet.<path>.lora_A.weight`), both ways (sd-formats.md §5.1, §5.3, §5.4).
//
// Inside sdtune a LoRA is a LoraFile keyed by PEFT module path (`unet.down_blocks.0…to_q`,
// `text_encoder.text_model…q_proj`): diffusers naming with the component in front (STYLE 2).
//
// kohya names replace every '.' of the module path with '_', and module paths contain '_'
// themselves (to_q, proj_in, transformer_blocks…), so a name cannot be parsed back on its own.
// As A1111 and ComfyUI do, names are resolved against the real module paths of the model, passed
// in; keys that match nothing are returned with a reason, never dropped silently ("lora key not
// loaded" is the ecosystem's most common LoRA complaint).
import * as T from '../../torch/index.ts';
import type { Tensor } from '../../torch/index.ts';
import { unetKeyDiffusersToLdm, unetLayoutFromKeys, type UNetLayout } from './ldm.ts';
import type { Family, KeyShapes, StateDict } from './types.ts';

export interface LoraModule {
  /** lora_down = PEFT lora_A: [r, in] (Linear) or [r, in, kh, kw] (Conv2d). */
  down: Tensor;
  /** lora_up = PEFT lora_B: [out, r] or [out, r, 1, 1]. */
  up: Tensor;
  /** scale = alpha / r (§5.1). Files without alpha mean alpha = r (scale 1). */
  alpha: number;
  /** LoCon CP-decomposition middle factor (kohya `lora_mid.weight`). */
  mid?: Tensor;
}

export interface LoraFile {
  /** By PEFT module path: `unet.<diffusers path>`, `text_encoder.<HF path>`, `text_encoder_2.…`. */
  modules: Map<string, LoraModule>;
  /** safetensors `__metadata__` (all strings, §5.5). */
  metadata: Record<string, string>;
}

export type LoraComponent = 'unet' | 'text_encoder' | 'text_encoder_2';

/** Module paths of the model a LoRA is for, without component prefix (e.g. from modulePathsFromKeys). */
export interface ModulePaths {
  unet?: Iterable<string>;
  textEncoder?: Iterable<string>;
  textEncoder2?: Iterable<string>;
}

/** A file key that was not loaded, and why. */
export interface UnloadedKey {
  key: string;
  reason: string;
}

export interface LoraReadResult {
  lora: LoraFile;
  unloaded: UnloadedKey[];
}

export function rankOf(m: LoraModule): number {
  return m.down.shape[0];
}

export function scaleOf(m: LoraModule): number {
  return m.alpha / rankOf(m);
}

/** `unet.a.b` → ['unet', 'a.b']. */
export function splitComponent(peftPath: string): [LoraComponent, string] {
  for (const c of ['text_encoder_2', 'text_encoder', 'unet'] as const) {
    if (peftPath.startsWith(`${c}.`)) return [c, peftPath.slice(c.length + 1)];
  }
  throw new Error(`LoRA module path '${peftPath}' must start with unet., text_encoder. or text_encoder_2.`);
}

// ---- kohya names (§5.1) ----------------------------------------------------------------------

/** kohya module name: prefix + '_' + path with '.' → '_'. SDXL uses lora_te1 / lora_te2. */
export function kohyaName(peftPath: string, opts: { sdxl?: boolean } = {}): string {
  const [c, path] = splitComponent(peftPath);
  const prefix = c === 'unet' ? 'lora_unet' : c === 'text_encoder_2' ? 'lora_te2' : opts.sdxl ? 'lora_te1' : 'lora_te';
  return `${prefix}_${path.replace(/\./g, '_')}`;
}

/** kohya name → PEFT path; null = two module paths render to the same name (ambiguous). */
export type KohyaIndex = Map<string, string | null>;

/**
 * Every kohya name the model's modules can appear under: diffusers paths for all components,
 * plus LDM paths for the UNet (SDXL kohya files and A1111-era files use them, §5.1/§5.2), plus
 * `lora_te1_` for a single text encoder.
 */
export function buildKohyaIndex(paths: ModulePaths): KohyaIndex {
  const index: KohyaIndex = new Map();
  const put = (name: string, peft: string): void => {
    const prev = index.get(name);
    if (prev === undefined) index.set(name, peft);
    else if (prev !== peft) index.set(name, null);
  };
  const unet = [...(paths.unet ?? [])];
  const layout: UNetLayout = unetLayoutFromKeys(unet);
  for (const p of unet) {
    put(`lora_unet_${p.replace(/\./g, '_')}`, `unet.${p}`);
    const ldm = unetKeyDiffusersToLdm(`${p}.weight`, layout);
    if (ldm !== null) put(`lora_unet_${ldm.slice(0, -'.weight'.length).replace(/\./g, '_')}`, `unet.${p}`);
  }
  const te2 = [...(paths.textEncoder2 ?? [])];
  for (const p of paths.textEncoder ?? []) {
    const u = p.replace(/\./g, '_');
    put(`lora_te1_${u}`, `text_encoder.${p}`);
    if (te2.length === 0) put(`lora_te_${u}`, `text_encoder.${p}`);
  }
  for (const p of te2) put(`lora_te2_${p.replace(/\./g, '_')}`, `text_encoder_2.${p}`);
  return index;
}

const KOHYA_PREFIX = /^lora_(unet|te\d?)_/;
const KOHYA_SUFFIX = /^(lora_down\.weight|lora_up\.weight|alpha|lora_mid\.weight)$/;

function componentLabel(name: string): string {
  return name.startsWith('lora_unet_') ? 'UNet' : name.startsWith('lora_te2_') ? 'second text encoder' : 'text encoder';
}

/**
 * Reads a kohya LoRA state dict, resolving module names against `paths`. `.alpha` is read with
 * item() (a host sync, once per module). Returned tensors are new handles.
 */
export function loraFromKohya(sd: StateDict, paths: ModulePaths, metadata: Record<string, string> = {}): LoraReadResult {
  const index = buildKohyaIndex(paths);
  const groups = new Map<string, Map<string, [string, Tensor]>>();
  const unloaded: UnloadedKey[] = [];
  for (const [key, t] of sd) {
    if (key.startsWith('bundle_emb.')) {
      unloaded.push({ key, reason: 'textual-inversion embedding bundled in the LoRA (bundle_emb, §5.1): load it as an embedding' });
      continue;
    }
    const dot = key.indexOf('.');
    const name = dot < 0 ? key : key.slice(0, dot);
    const suffix = dot < 0 ? '' : key.slice(dot + 1);
    if (!KOHYA_PREFIX.test(name)) {
      unloaded.push({ key, reason: 'not a kohya LoRA key (expected lora_unet_…, lora_te_…, lora_te1_… or lora_te2_…)' });
      continue;
    }
    if (!KOHYA_SUFFIX.test(suffix)) {
      const what = /^(hada_|lokr_)/.test(suffix) ? 'LyCORIS LoHa/LoKr weights' : suffix === 'dora_scale' ? 'DoRA magnitude' : `'${suffix}'`;
      unloaded.push({ key, reason: `${what} not supported (plain LoRA and LoCon only)` });
      continue;
    }
    const g = groups.get(name) ?? new Map<string, [string, Tensor]>();
    g.set(suffix, [key, t]);
    groups.set(name, g);
  }
  const modules = new Map<string, LoraModule>();
  for (const [name, g] of groups) {
    const keys = [...g.values()].map(([k]) => k);
    const fail = (reason: string): void => {
      for (const key of keys) unloaded.push({ key, reason });
    };
    const path = index.get(name);
    if (path === undefined) {
      fail(`no ${componentLabel(name)} module named '${name}' in the model (lora key not loaded)`);
      continue;
    }
    if (path === null) {
      fail(`'${name}' matches more than one module of the model`);
      continue;
    }
    const down = g.get('lora_down.weight')?.[1];
    const up = g.get('lora_up.weight')?.[1];
    if (!down || !up) {
      fail(`module ${path} has ${down ? 'lora_down but no lora_up' : 'lora_up but no lora_down'}`);
      continue;
    }
    if (down.shape[0] !== up.shape[1]) {
      fail(`module ${path}: lora_down ${JSON.stringify(down.shape)} and lora_up ${JSON.stringify(up.shape)} disagree on the rank`);
      continue;
    }
    const a = g.get('alpha')?.[1];
    // .item(): waits for the device (alpha is a 0-d tensor, §5.1). No alpha means alpha = rank.
    const alpha = a === undefined ? down.shape[0] : a.item();
    const mid = g.get('lora_mid.weight')?.[1];
    modules.set(path, { down: down.alias(), up: up.alias(), alpha, ...(mid ? { mid: mid.alias() } : {}) });
  }
  return { lora: { modules, metadata: { ...metadata } }, unloaded };
}

/**
 * kohya state dict of a LoraFile: `N.lora_down.weight`, `N.lora_up.weight`, `N.alpha` (0-d
 * float32; the writer casts it with the rest to the save dtype, §5.1), `N.lora_mid.weight`.
 */
export function loraToKohya(lora: LoraFile): { tensors: StateDict; metadata: Record<string, string> } {
  const sdxl = [...lora.modules.keys()].some((p) => p.startsWith('text_encoder_2.'));
  const tensors: StateDict = new Map();
  for (const [path, m] of lora.modules) {
    const n = kohyaName(path, { sdxl });
    tensors.set(`${n}.lora_down.weight`, m.down.alias());
    tensors.set(`${n}.lora_up.weight`, m.up.alias());
    if (m.mid) tensors.set(`${n}.lora_mid.weight`, m.mid.alias());
    tensors.set(`${n}.alpha`, T.tensor(m.alpha));
  }
  return { tensors, metadata: { ...lora.metadata } };
}

// ---- diffusers / PEFT (§5.3) -----------------------------------------------------------------

/** The metadata key newer diffusers stores the PEFT LoraConfig under (lora_base.py). */
export const LORA_ADAPTER_METADATA_KEY = 'lora_adapter_metadata';

interface PeftConfigPart {
  r?: number;
  lora_alpha?: number;
  alpha_pattern?: Record<string, number>;
  rank_pattern?: Record<string, number>;
}

/**
 * PEFT key → [component, module path, 'A' | 'B' | 'alpha']. Also the older diffusers spellings
 * §5.3 lists (attention-processor LoRA, lora_linear_layer) and ComfyUI's `.lora.up` / `_lora.up`.
 */
function parsePeftKey(key: string): [LoraComponent, string, 'A' | 'B' | 'alpha'] | null {
  let comp: LoraComponent | null = null;
  let rest = key;
  for (const c of ['text_encoder_2', 'text_encoder', 'unet'] as const) {
    if (key.startsWith(`${c}.`)) {
      comp = c;
      rest = key.slice(c.length + 1);
      break;
    }
  }
  let path: string, part: 'A' | 'B' | 'alpha';
  let m: RegExpExecArray | null;
  const ud = (s: string): 'A' | 'B' => (s === 'down' || s === 'A' ? 'A' : 'B');
  if ((m = /^(.+)\.lora_([AB])\.weight$/.exec(rest))) [path, part] = [m[1], m[2] as 'A' | 'B'];
  else if ((m = /^(.+)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$/.exec(rest))) {
    [path, part] = [`${m[1]}.${m[2] === 'to_out' ? 'to_out.0' : m[2]}`, ud(m[3])];
  } else if ((m = /^(.+)\.to_(q|k|v|out)_lora\.(down|up)\.weight$/.exec(rest))) {
    [path, part] = [`${m[1]}.${m[2]}_proj`, ud(m[3])]; // old text-encoder attention-processor names
  } else if ((m = /^(.+?)(?:\.lora_linear_layer|\.lora|_lora)\.(down|up)\.weight$/.exec(rest))) [path, part] = [m[1], ud(m[2])];
  else if ((m = /^(.+)\.alpha$/.exec(rest))) [path, part] = [m[1], 'alpha'];
  else return null;
  comp ??= path.startsWith('text_model.') ? 'text_encoder' : 'unet';
  return [comp, path, part];
}

function matchPattern(pattern: Record<string, number> | undefined, path: string): number | undefined {
  if (!pattern) return undefined;
  // PEFT matches a pattern key k as the regex `(.*\.)?k$` on the module name; keys here are paths.
  for (const [k, v] of Object.entries(pattern)) if (path === k || path.endsWith(`.${k}`)) return v;
  return undefined;
}

function peftConfigs(metadata: Record<string, string>): Map<LoraComponent, PeftConfigPart> {
  const out = new Map<LoraComponent, PeftConfigPart>();
  const raw = metadata[LORA_ADAPTER_METADATA_KEY];
  if (!raw) return out;
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(raw) as Record<string, unknown>;
  } catch {
    return out;
  }
  for (const [k, v] of Object.entries(parsed)) {
    const m = /^(unet|text_encoder|text_encoder_2)\.(r|lora_alpha|alpha_pattern|rank_pattern)$/.exec(k);
    if (!m) continue;
    const c = m[1] as LoraComponent;
    const part = out.get(c) ?? {};
    (part as Record<string, unknown>)[m[2]] = v;
    out.set(c, part);
  }
  return out;
}

/**
 * Reads a diffusers/PEFT LoRA. PEFT files carry no alpha tensors: alpha comes from the
 * `lora_adapter_metadata` config when present, else alpha = r (the diffusers scripts' choice,
 * scale 1; §5.3). With `paths`, module paths not in the model are reported, not loaded.
 */
export function loraFromPeft(sd: StateDict, metadata: Record<string, string> = {}, paths?: ModulePaths): LoraReadResult {
  const configs = peftConfigs(metadata);
  const known = paths && {
    unet: paths.unet ? new Set(paths.unet) : null,
    text_encoder: paths.textEncoder ? new Set(paths.textEncoder) : null,
    text_encoder_2: paths.textEncoder2 ? new Set(paths.textEncoder2) : null,
  };
  const unloaded: UnloadedKey[] = [];
  const groups = new Map<string, { A?: [string, Tensor]; B?: [string, Tensor]; alpha?: [string, Tensor] }>();
  for (const [key, t] of sd) {
    const p = parsePeftKey(key);
    if (p === null) {
      const why = /lora_magnitude_vector|dora/.test(key) ? 'DoRA magnitude not supported' : 'not a diffusers/PEFT LoRA key (expected <path>.lora_A.weight / .lora_B.weight)';
      unloaded.push({ key, reason: why });
      continue;
    }
    const [c, path, part] = p;
    const id = `${c}.${path}`;
    const g = groups.get(id) ?? {};
    g[part] = [key, t];
    groups.set(id, g);
  }
  const modules = new Map<string, LoraModule>();
  for (const [id, g] of groups) {
    const keys = [g.A, g.B, g.alpha].filter((x) => x !== undefined).map((x) => x[0]);
    const fail = (reason: string): void => {
      for (const key of keys) unloaded.push({ key, reason });
    };
    const [c, path] = splitComponent(id);
    const set = known?.[c];
    if (set && !set.has(path)) {
      fail(`no ${c} module '${path}' in the model (lora key not loaded)`);
      continue;
    }
    if (!g.A || !g.B) {
      fail(`module ${id} has only ${g.A ? 'lora_A' : 'lora_B'}`);
      continue;
    }
    const [down, up] = [g.A[1], g.B[1]];
    if (down.shape[0] !== up.shape[1]) {
      fail(`module ${id}: lora_A ${JSON.stringify(down.shape)} and lora_B ${JSON.stringify(up.shape)} disagree on the rank`);
      continue;
    }
    const cfg = configs.get(c);
    const r = down.shape[0];
    // .item(): waits for the device, only for the rare files that carry alpha tensors.
    const alpha = g.alpha ? g.alpha[1].item() : matchPattern(cfg?.alpha_pattern, path) ?? cfg?.lora_alpha ?? r;
    modules.set(id, { down: down.alias(), up: up.alias(), alpha });
  }
  return { lora: { modules, metadata: { ...metadata } }, unloaded };
}

function mode(values: number[]): number {
  const n = new Map<number, number>();
  for (const v of values) n.set(v, (n.get(v) ?? 0) + 1);
  let best = values[0], count = 0;
  for (const [v, c] of n) if (c > count) [best, count] = [v, c];
  return best;
}

/**
 * diffusers/PEFT form of a LoraFile. Alpha is per module (§5.4): by default it goes into the
 * `lora_adapter_metadata` config (lora_alpha plus alpha_pattern / rank_pattern for modules that
 * differ), so values are untouched and the round trip is exact. With `bakeAlpha`, lora_B is
 * multiplied by alpha/r and lora_alpha = r (scale 1), for loaders that ignore the config.
 */
export function loraToPeft(lora: LoraFile, opts: { bakeAlpha?: boolean } = {}): { tensors: StateDict; metadata: Record<string, string> } {
  const tensors: StateDict = new Map();
  const byComp = new Map<LoraComponent, [string, number, number][]>();
  for (const [id, m] of lora.modules) {
    if (m.mid) throw new Error(`${id} is a LoCon CP-decomposed module (lora_mid), which the PEFT format cannot hold; save as kohya instead.`);
    const [c, path] = splitComponent(id);
    const r = rankOf(m);
    const bake = opts.bakeAlpha === true && m.alpha !== r;
    tensors.set(`${id}.lora_A.weight`, m.down.alias());
    tensors.set(`${id}.lora_B.weight`, bake ? m.up.mul(m.alpha / r) : m.up.alias());
    const list = byComp.get(c) ?? [];
    list.push([path, r, opts.bakeAlpha ? r : m.alpha]);
    byComp.set(c, list);
  }
  const config: Record<string, unknown> = {};
  for (const [c, list] of byComp) {
    const r = mode(list.map((x) => x[1]));
    const alpha = mode(list.map((x) => x[2]));
    const rankPattern: Record<string, number> = {};
    const alphaPattern: Record<string, number> = {};
    for (const [p, pr, pa] of list) {
      if (pr !== r) rankPattern[p] = pr;
      if (pa !== alpha) alphaPattern[p] = pa;
    }
    config[`${c}.r`] = r;
    config[`${c}.lora_alpha`] = alpha;
    config[`${c}.rank_pattern`] = rankPattern;
    config[`${c}.alpha_pattern`] = alphaPattern;
    config[`${c}.target_modules`] = list.map((x) => x[0]);
  }
  const metadata = { ...lora.metadata, format: 'pt', [LORA_ADAPTER_METADATA_KEY]: JSON.stringify(config) };
  return { tensors, metadata };
}

// ---- A1111 layer names (§5.2) ----------------------------------------------------------------

/**
 * The layer name A1111 gives a module (`convert_diffusers_name_to_compvis`), for messages and for
 * matching its reports: UNet → `diffusion_model_` + LDM path; SD1 text → `transformer_` + HF path;
 * SD2 text → OpenCLIP `model_transformer_resblocks_…` (q/k/v are packed into in_proj there).
 */
export function a1111LayerName(peftPath: string, family: Family, unetLayout: UNetLayout): string | null {
  const [c, path] = splitComponent(peftPath);
  const u = (s: string): string => s.replace(/\./g, '_');
  if (c === 'unet') {
    const ldm = unetKeyDiffusersToLdm(`${path}.weight`, unetLayout);
    return ldm === null ? null : `diffusion_model_${u(ldm.slice(0, -'.weight'.length))}`;
  }
  if (c === 'text_encoder_2') return null;
  if (family === 'sd1') return `transformer_${u(path)}`;
  const m = /^text_model\.encoder\.layers\.(\d+)\.(.+)$/.exec(path);
  if (!m) return null;
  const rest = u(m[2]).replace(/^self_attn_/, 'attn_').replace(/^mlp_fc1$/, 'mlp_c_fc').replace(/^mlp_fc2$/, 'mlp_c_proj');
  return `model_transformer_resblocks_${m[1]}_${rest}`;
}

// ---- summary for detection (§4.5, §5.2) ------------------------------------------------------

export interface LoraSummary {
  format: 'kohya' | 'peft';
  modules: number;
  unetModules: number;
  textEncoderModules: number;
  ranks: number[];
  /** Has 3x3 conv modules (LoCon, `conv_dim`). */
  locon: boolean;
  hasAlpha: boolean;
  /** Keys of kinds this project cannot apply (LyCORIS, DoRA, bundled embeddings). */
  unsupported: string[];
  /** Family from metadata (A1111's rule) or, failing that, from the text/context widths. */
  family: Family;
  familySource: string;
}

/** A1111's LoRA version rule from metadata (§5.2); 'unknown' without metadata. */
export function familyFromLoraMetadata(md: Readonly<Record<string, string>>): Family {
  const v = md.ss_base_model_version;
  if (v?.startsWith('sdxl_')) return 'sdxl';
  if (v === 'sd_v2_v') return 'sd2-v';
  if (md.ss_v2 === 'True' || v === 'sd_v2') return md['modelspec.prediction_type'] === 'v' ? 'sd2-v' : 'sd2';
  return Object.keys(md).some((k) => k.startsWith('ss_') || k.startsWith('modelspec.')) ? 'sd1' : 'unknown';
}

export function summarizeLoraKeys(keys: KeyShapes, metadata: Readonly<Record<string, string>> = {}): LoraSummary | null {
  const kohya = [...keys.keys()].some((k) => KOHYA_PREFIX.test(k));
  const peft = !kohya && [...keys.keys()].some((k) => parsePeftKey(k) !== null && !/\.alpha$/.test(k));
  if (!kohya && !peft) return null;
  const ranks = new Set<number>();
  const mods = new Set<string>();
  let unet = 0, te = 0, locon = false, hasAlpha = false;
  const unsupported: string[] = [];
  let widthFamily: Family = 'unknown', widthSource = '';
  for (const [k, s] of keys) {
    let id: string | null = null, isDown = false;
    if (kohya) {
      const m = /^([^.]+)\.(lora_down\.weight|lora_up\.weight|alpha|lora_mid\.weight|.+)$/.exec(k);
      if (!m || !KOHYA_PREFIX.test(m[1]) || !KOHYA_SUFFIX.test(m[2])) {
        unsupported.push(k);
        continue;
      }
      id = m[1];
      isDown = m[2] === 'lora_down.weight';
      hasAlpha ||= m[2] === 'alpha';
    } else {
      const p = parsePeftKey(k);
      if (p === null) {
        unsupported.push(k);
        continue;
      }
      id = `${p[0]}.${p[1]}`;
      isDown = p[2] === 'A';
    }
    if (!mods.has(id)) {
      mods.add(id);
      if (/^(lora_unet_|unet\.)/.test(id)) unet++;
      else te++;
    }
    if (!isDown) continue;
    ranks.add(s[0]);
    if (s.length === 4 && (s[2] > 1 || s[3] > 1)) locon = true;
    if (widthFamily === 'unknown') {
      if (/^lora_te2_|^text_encoder_2\./.test(id)) [widthFamily, widthSource] = ['sdxl', 'a second text encoder'];
      else if (/(lora_te1?_|text_encoder\.).*(q_proj|fc1)$/.test(id) && (s[1] === 768 || s[1] === 1024)) {
        [widthFamily, widthSource] = [s[1] === 768 ? 'sd1' : 'sd2', `text-encoder width ${s[1]}`];
      } else if (/attn2[._]to_k$/.test(id) && [768, 1024, 2048].includes(s[1])) {
        widthFamily = s[1] === 768 ? 'sd1' : s[1] === 1024 ? 'sd2' : 'sdxl';
        widthSource = `cross-attention width ${s[1]}`;
      }
    }
  }
  const mdFamily = familyFromLoraMetadata(metadata);
  return {
    format: kohya ? 'kohya' : 'peft',
    modules: mods.size,
    unetModules: unet,
    textEncoderModules: te,
    ranks: [...ranks].sort((a, b) => a - b),
    locon,
    hasAlpha,
    unsupported,
    family: mdFamily !== 'unknown' ? mdFamily : widthFamily,
    familySource: mdFamily !== 'unknown' ? 'metadata (ss_v2 / ss_base_model_version)' : widthSource || 'nothing in the file says',
  };
}
