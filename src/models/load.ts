// Loading a Stable Diffusion model from what users have: a diffusers pipeline folder
// (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/) or a single-file LDM
// checkpoint (.safetensors, .ckpt, .pt). Everything becomes diffusers-named modules, built straight
// from the file (spec §4.1–§4.7); configs come from the folder, from the file's metadata, or are
// inferred from tensor shapes (single files carry none).
import { existsSync, readFileSync, statSync, openSync, readSync, closeSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { basename, join } from 'node:path';
import * as T from '../torch/index.ts';
import { SafetensorsFile } from '../formats/safetensors.ts';
import { loadTorchFile } from '../formats/torchfile.ts';
import { TorchDict, TorchTensorRef } from '../formats/pickle.ts';
import { ldmToDiffusers, detectFamily, type FamilyReport } from '../formats/layouts/index.ts';
import { ClipTokenizer, type Padding } from '../text/tokenizer.ts';
import { CLIPTextModel } from './clip.ts';
import { UNet2DConditionModel } from './unet.ts';
import { AutoencoderKL } from './vae.ts';
import type { ModelOptions } from './attention.ts';
import {
  SD15_TEXT, SD15_UNET, SD2_TEXT, SD2_UNET, SD_VAE,
  clipConfigFromTransformers, unetConfigFromDiffusers, vaeConfigFromDiffusers,
  type ClipTextConfig, type UNetConfig, type VAEConfig,
} from './config.ts';

export type Prediction = 'epsilon' | 'v_prediction';

export interface StableDiffusion {
  /** File or folder name, for PNG info and logs. */
  name: string;
  path: string;
  family: 'sd1' | 'sd2';
  prediction: Prediction;
  tokenizer: ClipTokenizer;
  /** SD1 pads prompts with EOS, SD2 (OpenCLIP) with 0 (§9.3). */
  padding: Padding;
  textEncoder: CLIPTextModel;
  unet: UNet2DConditionModel;
  vae: AutoencoderKL;
  /** diffusers scheduler_config.json contents (or the SD defaults for single files). */
  schedulerConfig: Record<string, unknown>;
  /** A1111's model hash: the first 10 hex digits of the file's sha256 ('' for folders). */
  hash: string;
  device: string;
  dispose(): void;
}

export interface LoadOptions extends ModelOptions {
  device?: string;
  /** Override the prediction type when a file cannot tell (SD2 768-v checkpoints). */
  prediction?: Prediction;
  /** Compute the sha256 for the PNG info (reads the whole file once). Default true. */
  hash?: boolean;
}

/** The scheduler config SD checkpoints are trained with (runwayml/stable-diffusion-v1-5 PNDM). */
export const SD_SCHEDULER_CONFIG: Record<string, unknown> = {
  _class_name: 'PNDMScheduler',
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  beta_start: 0.00085,
  clip_sample: false,
  num_train_timesteps: 1000,
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  trained_betas: null,
};

/** Metadata key under which sdtune stores the configs of a single-file checkpoint it writes. */
export const CONFIG_METADATA_KEY = 'sdtune.config';

export interface SingleFileConfig {
  unet?: Record<string, unknown>;
  vae?: Record<string, unknown>;
  text_encoder?: Record<string, unknown>;
  scheduler?: Record<string, unknown>;
  prediction?: Prediction;
}

function readJson(path: string): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`${path}: cannot read this JSON file (${(e as Error).message})`);
  }
}

/** A lazily read state dict: a safetensors file, or a pickle whose tensors load on demand. */
export interface StateSource extends T.nn.TensorSource {
  metadata: Readonly<Record<string, string>>;
  globalStep?: number;
  close(): void;
}

export function openStateSource(path: string): StateSource {
  if (!existsSync(path)) throw new Error(`${path}: no such file`);
  if (/\.safetensors$/i.test(path)) {
    // SafetensorsFile already is a lazy source with metadata.
    return SafetensorsFile.open(path) as unknown as StateSource;
  }
  const tree = loadTorchFile(path);
  let sd: unknown = tree;
  let globalStep: number | undefined;
  if (tree instanceof TorchDict) {
    const inner = tree.get('state_dict');
    if (inner instanceof TorchDict) sd = inner;
    const gs = tree.get('global_step');
    if (typeof gs === 'number') globalStep = gs;
  }
  if (!(sd instanceof TorchDict)) throw new Error(`${path}: this file holds no state dict (a mapping of names to tensors)`);
  const refs = new Map<string, TorchTensorRef>();
  for (const [k, v] of sd) if (typeof k === 'string' && v instanceof TorchTensorRef) refs.set(k, v);
  return {
    metadata: {},
    globalStep,
    has: (k) => refs.has(k),
    shape: (k) => refs.get(k)!.shape,
    get: (k) => refs.get(k)!.load(),
    keys: () => refs.keys(),
    close: () => {},
  };
}

/** A1111's short model hash: sha256 of the whole file, first 10 hex digits. */
export function modelHash(path: string): string {
  const h = createHash('sha256');
  const fd = openSync(path, 'r');
  const buf = Buffer.allocUnsafe(16 << 20);
  try {
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
  return h.digest('hex').slice(0, 10);
}

/** Loads a diffusers pipeline folder or a single-file checkpoint, whichever `path` is. */
export function loadStableDiffusion(path: string, o: LoadOptions = {}): StableDiffusion {
  if (!existsSync(path)) throw new Error(`${path}: no such file or folder. Point --model at a .safetensors/.ckpt checkpoint or a diffusers folder.`);
  if (statSync(path).isDirectory()) return loadDiffusersFolder(path, o);
  return loadSingleFile(path, o);
}

function build(vbSource: T.nn.TensorSource | ReadonlyMap<string, T.Tensor>, device: string, what: string, make: (vb: T.nn.VarBuilder) => T.nn.Module, allowUnused?: (k: string) => boolean): T.nn.Module {
  const vb = T.nn.VarBuilder.from(vbSource, { device });
  const m = make(vb);
  try {
    vb.finish({ what, allowUnused });
  } catch (e) {
    m.dispose();
    throw e;
  }
  return m;
}

function findWeights(dir: string, names: string[]): string {
  for (const n of names) if (existsSync(join(dir, n))) return join(dir, n);
  throw new Error(`${dir}: no weights file (looked for ${names.join(', ')})`);
}

export function loadDiffusersFolder(dir: string, o: LoadOptions = {}): StableDiffusion {
  const device = o.device ?? 'cpu';
  if (!existsSync(join(dir, 'model_index.json'))) throw new Error(`${dir}: not a diffusers pipeline folder (no model_index.json)`);
  const need = ['unet', 'vae', 'text_encoder'];
  const missing = need.filter((p) => !existsSync(join(dir, p, 'config.json')));
  if (missing.length) throw new Error(`${dir}: the pipeline folder lacks ${missing.map((m) => m + '/config.json').join(', ')}`);
  const ucfg = unetConfigFromDiffusers(readJson(join(dir, 'unet', 'config.json')));
  const vcfg = vaeConfigFromDiffusers(readJson(join(dir, 'vae', 'config.json')));
  const tcfg = clipConfigFromTransformers(readJson(join(dir, 'text_encoder', 'config.json')));
  const sched = existsSync(join(dir, 'scheduler', 'scheduler_config.json')) ? readJson(join(dir, 'scheduler', 'scheduler_config.json')) : SD_SCHEDULER_CONFIG;
  const tok = existsSync(join(dir, 'tokenizer', 'vocab.json'))
    ? ClipTokenizer.fromVocabJson(join(dir, 'tokenizer', 'vocab.json'), join(dir, 'tokenizer', 'merges.txt'))
    : ClipTokenizer.default();
  const open = (sub: string, names: string[]) => openStateSource(findWeights(join(dir, sub), names));
  const uSrc = open('unet', ['diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.bin']);
  const vSrc = open('vae', ['diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.bin']);
  const tSrc = open('text_encoder', ['model.safetensors', 'pytorch_model.bin']);
  try {
    const unet = build(uSrc, device, `${dir}/unet`, (vb) => new UNet2DConditionModel(vb, ucfg, o)) as UNet2DConditionModel;
    const vae = build(vSrc, device, `${dir}/vae`, (vb) => new AutoencoderKL(vb, vcfg, o)) as AutoencoderKL;
    // transformers ≤ 4.30 saved text_model.embeddings.position_ids; it is a buffer we rebuild.
    const textEncoder = build(tSrc, device, `${dir}/text_encoder`, (vb) => new CLIPTextModel(vb, tcfg, o), (k) => k.endsWith('position_ids')) as CLIPTextModel;
    const family = ucfg.crossAttentionDim === 1024 || tcfg.act === 'gelu' ? 'sd2' : 'sd1';
    const pred = (o.prediction ?? (sched.prediction_type === 'v_prediction' ? 'v_prediction' : 'epsilon')) as Prediction;
    return assemble({ name: basename(dir), path: dir, family, prediction: pred, tokenizer: tok, textEncoder, unet, vae, schedulerConfig: sched, hash: '', device });
  } finally {
    for (const s of [uSrc, vSrc, tSrc]) s.close();
  }
}

function assemble(m: Omit<StableDiffusion, 'dispose' | 'padding'>): StableDiffusion {
  return {
    ...m,
    padding: m.family === 'sd2' ? 'sd2' : 'sd1',
    dispose() {
      m.unet.dispose();
      m.vae.dispose();
      m.textEncoder.dispose();
    },
  };
}

// ---- configs of single files, from shapes --------------------------------------------------------

type Shapes = ReadonlyMap<string, readonly number[]>;

function count(shapes: Shapes, re: RegExp): number {
  const idx = new Set<string>();
  for (const k of shapes.keys()) {
    const m = re.exec(k);
    if (m) idx.add(m[1]);
  }
  return idx.size;
}

/** UNet config from diffusers-named shapes; heads are not in the shapes: SD1 has 8, SD2 C/64. */
export function inferUnetConfig(s: Shapes, family: 'sd1' | 'sd2'): UNetConfig {
  const get = (k: string) => {
    const v = s.get(k);
    if (!v) throw new Error(`cannot infer the UNet's shape: ${k} is missing`);
    return v;
  };
  const levels = count(s, /^down_blocks\.(\d+)\./);
  const ch = Array.from({ length: levels }, (_, i) => get(`down_blocks.${i}.resnets.0.conv1.weight`)[0]);
  const cross = Array.from({ length: levels }, (_, i) => s.has(`down_blocks.${i}.attentions.0.proj_in.weight`));
  const upCross = Array.from({ length: levels }, (_, i) => s.has(`up_blocks.${i}.attentions.0.proj_in.weight`));
  const toK = [...s].find(([k]) => k.endsWith('attn2.to_k.weight'));
  const base = family === 'sd2' ? SD2_UNET : SD15_UNET;
  const depth = count(s, /^down_blocks\.0\.attentions\.0\.transformer_blocks\.(\d+)\./) || 1;
  return {
    ...base,
    inChannels: get('conv_in.weight')[1],
    outChannels: get('conv_out.weight')[0],
    blockOutChannels: ch,
    layersPerBlock: count(s, /^down_blocks\.0\.resnets\.(\d+)\./),
    downBlocks: cross.map((c) => (c ? 'CrossAttnDownBlock2D' : 'DownBlock2D')),
    upBlocks: upCross.map((c) => (c ? 'CrossAttnUpBlock2D' : 'UpBlock2D')),
    crossAttentionDim: toK ? toK[1][1] : base.crossAttentionDim,
    heads: ch.map((c) => (family === 'sd2' ? Math.max(1, Math.round(c / 64)) : 8)),
    normGroups: Math.min(32, ch[0]),
    useLinearProjection: [...s].some(([k, v]) => k.endsWith('.proj_in.weight') && v.length === 2),
    transformerLayersPerBlock: depth,
  };
}

export function inferVaeConfig(s: Shapes): VAEConfig {
  const levels = count(s, /^encoder\.down_blocks\.(\d+)\./);
  const ch = Array.from({ length: levels }, (_, i) => s.get(`encoder.down_blocks.${i}.resnets.0.conv1.weight`)![0]);
  return {
    ...SD_VAE,
    blockOutChannels: ch,
    layersPerBlock: count(s, /^encoder\.down_blocks\.0\.resnets\.(\d+)\./),
    latentChannels: s.get('post_quant_conv.weight')![0],
    normGroups: Math.min(32, ch[0]),
  };
}

export function inferClipConfig(s: Shapes, family: 'sd1' | 'sd2'): ClipTextConfig {
  const emb = s.get('text_model.embeddings.token_embedding.weight');
  if (!emb) throw new Error('cannot infer the text encoder: text_model.embeddings.token_embedding.weight is missing');
  const hidden = emb[1];
  const base = family === 'sd2' ? SD2_TEXT : SD15_TEXT;
  return {
    ...base,
    vocabSize: emb[0],
    hiddenSize: hidden,
    layers: count(s, /^text_model\.encoder\.layers\.(\d+)\./),
    heads: Math.max(1, Math.round(hidden / 64)),
    intermediateSize: s.get('text_model.encoder.layers.0.mlp.fc1.weight')![0],
    maxPositions: s.get('text_model.embeddings.position_embedding.weight')![0],
  };
}

export function loadSingleFile(path: string, o: LoadOptions = {}): StableDiffusion {
  const device = o.device ?? 'cpu';
  const src = openStateSource(path);
  const all = new Map<string, T.Tensor>();
  try {
    const shapes = new Map<string, number[]>();
    for (const k of src.keys()) shapes.set(k, [...src.shape(k)]);
    const report: FamilyReport = detectFamily(shapes, { metadata: src.metadata, globalStep: src.globalStep });
    if (report.family === 'sdxl') throw new Error(`${path}: this is an SDXL checkpoint (${report.reason}); sdtune supports SD 1.x and 2.x for now`);
    if (!report.supported) throw new Error(`${path}: not a Stable Diffusion 1.x/2.x checkpoint (${report.reason})`);
    if (report.variant !== 'base') throw new Error(`${path}: this is an ${report.variant} model; sdtune generates with base models only for now`);
    for (const k of shapes.keys()) all.set(k, src.get(k)); // zero-copy views for safetensors
    const conv = ldmToDiffusers(all);
    const family = report.family === 'sd1' ? 'sd1' : 'sd2';
    const meta: SingleFileConfig = src.metadata[CONFIG_METADATA_KEY] ? (JSON.parse(src.metadata[CONFIG_METADATA_KEY]) as SingleFileConfig) : {};
    const shp = (m: Map<string, T.Tensor>) => new Map([...m].map(([k, t]) => [k, t.shape] as const));
    for (const [part, m] of [['UNet', conv.unet], ['VAE', conv.vae], ['text encoder', conv.textEncoder]] as const) {
      if (m.size === 0) throw new Error(`${path}: this looks like an ${family.toUpperCase()} checkpoint but has no ${part} weights (${report.reason})`);
    }
    const ucfg = meta.unet ? unetConfigFromDiffusers(meta.unet) : inferUnetConfig(shp(conv.unet), family);
    const vcfg = meta.vae ? vaeConfigFromDiffusers(meta.vae) : inferVaeConfig(shp(conv.vae));
    const tcfg = meta.text_encoder ? clipConfigFromTransformers(meta.text_encoder) : inferClipConfig(shp(conv.textEncoder), family);
    const unet = build(conv.unet, device, `${path} (UNet)`, (vb) => new UNet2DConditionModel(vb, ucfg, o)) as UNet2DConditionModel;
    const vae = build(conv.vae, device, `${path} (VAE)`, (vb) => new AutoencoderKL(vb, vcfg, o)) as AutoencoderKL;
    const textEncoder = build(conv.textEncoder, device, `${path} (text encoder)`, (vb) => new CLIPTextModel(vb, tcfg, o), (k) => k.endsWith('position_ids')) as CLIPTextModel;
    for (const m of [conv.unet, conv.vae, conv.textEncoder, conv.extras]) for (const t of m.values()) t.dispose();
    const pred: Prediction = o.prediction ?? meta.prediction ?? (report.prediction === 'v' ? 'v_prediction' : 'epsilon');
    return assemble({
      name: basename(path).replace(/\.(safetensors|ckpt|pt|pth|bin)$/i, ''),
      path,
      family,
      prediction: pred,
      tokenizer: ClipTokenizer.default(),
      textEncoder,
      unet,
      vae,
      schedulerConfig: meta.scheduler ?? SD_SCHEDULER_CONFIG,
      hash: o.hash === false ? '' : modelHash(path),
      device,
    });
  } finally {
    for (const t of all.values()) t.dispose();
    src.close();
  }
}
