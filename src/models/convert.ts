// Conversions behind `sdtune convert IN OUT [--to …] [--dtype fp16|bf16|fp32] [--prune-ema|--use-ema]` and the studio's Library:
// checkpoints (LDM single file ↔ diffusers folder, .ckpt → .safetensors, dtype, EMA),
// LoRAs (kohya ↔ PEFT) and embeddings (A1111 .pt ↔ safetensors ↔ diffusers). Metadata is kept
// where the target has a place for it; every file is written atomically (temp + rename), and a
// folder is assembled under a temporary name and renamed into place at the end.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, extname, join } from "node:path";
import * as T from '../torch/index.ts';
import { saveSafetensors, SafetensorsFile } from '../formats/safetensors.ts';
import { loadEmbeddingFile } from '../formats/embedding-file.ts';
import { loadTorchFile, saveTorchFile } from '../formats/torchfile.ts';
import * as L from '../formats/layouts/index.ts';
import { openStateSource, inferClipConfig, inferUnetConfig, inferVaeConfig, CONFIG_METADATA_KEY, type SingleFileConfig } from '../models/load.ts';
import { clipConfigToTransformers, unetConfigToDiffusers, vaeConfigToDiffusers, unetConfigFromDiffusers, vaeConfigFromDiffusers, clipConfigFromTransformers } from '../models/config.ts';
import { inspectPath } from '../formats/inspect.ts';
import { writePipelineFolder } from '../models/save.ts';

export type Target = 'ldm' | 'diffusers' | 'kohya' | 'peft' | 'a1111-pt' | 'safetensors';
export type DtypeName = 'fp16' | 'bf16' | 'fp32';

export interface ConvertOptions {
  to?: Target;
  dtype?: DtypeName;
  /** Drop EMA weights (keep the trained ones); `useEma` takes the EMA weights instead. */
  pruneEma?: boolean;
  useEma?: boolean;
  /** For LoRA conversion of non-standard models: module paths come from this checkpoint. */
  model?: string;
  onProgress?: (done: number, total: number) => void;
}

export interface ConvertResult {
  kind: string;
  target: Target;
  output: string;
  tensors: number;
  notes: string[];
}

export const DTYPES: Record<DtypeName, T.DType> = { fp16: 'float16', bf16: 'bfloat16', fp32: 'float32' };

/** New handles of every tensor, floating ones cast to `dtype` (the caller disposes them). */
export function castAll(sd: Map<string, T.Tensor>, dtype: DtypeName | undefined, progress?: (d: number, t: number) => void): Map<string, T.Tensor> {
  const out = new Map<string, T.Tensor>();
  let i = 0;
  for (const [k, t] of sd) {
    // Only floating tensors change dtype; ids and counters (int64) stay as they are.
    out.set(k, dtype && T.isFloating(t.dtype) && t.dtype !== DTYPES[dtype] ? t.to(DTYPES[dtype]) : t.alias());
    progress?.(++i, sd.size);
  }
  return out;
}

export function disposeAll(...maps: (Map<string, T.Tensor> | undefined)[]): void {
  for (const m of maps) if (m) for (const t of m.values()) t.dispose();
}

function loadAll(path: string): { sd: Map<string, T.Tensor>; metadata: Record<string, string> } {
  const src = openStateSource(path);
  const sd = new Map<string, T.Tensor>();
  for (const k of src.keys()) sd.set(k, src.get(k));
  return { sd, metadata: { ...src.metadata } };
}

function defaultTarget(kind: string, input: string, output: string): Target {
  const ext = extname(output).toLowerCase();
  if (kind === 'lora-kohya') return 'peft';
  if (kind === 'lora-peft') return 'kohya';
  if (kind === 'embedding') return ext === '.pt' ? 'a1111-pt' : ext === '.safetensors' ? 'safetensors' : 'diffusers';
  if (kind === 'checkpoint' && statSync(input).isDirectory()) return 'ldm';
  if (ext === '' || (existsSync(output) && statSync(output).isDirectory())) return 'diffusers';
  return 'safetensors';
}

export function convert(input: string, output: string, o: ConvertOptions = {}): ConvertResult {
  const report = inspectPath(input);
  const kind = report.format === 'diffusers-folder' ? 'diffusers-folder' : report.kind;
  const target = o.to ?? defaultTarget(report.format === 'diffusers-folder' ? 'checkpoint' : kind, input, output);
  const done = (tensors: number, notes: string[] = []): ConvertResult => ({ kind, target, output, tensors, notes });
  switch (kind) {
    case 'diffusers-folder':
      if (target !== 'ldm' && target !== 'safetensors') throw new Error(`${input} is a diffusers folder: convert it --to ldm (a single .safetensors checkpoint)`);
      return done(...diffusersToSingleFile(input, output, o));
    case 'checkpoint':
    case 'unet':
    case 'vae':
    case 'text-encoder':
      if (target === 'diffusers') {
        if (kind !== 'checkpoint') throw new Error(`${input} holds only a ${kind}; a diffusers pipeline folder needs a full checkpoint`);
        return done(...singleFileToDiffusers(input, output, o));
      }
      if (target !== 'ldm' && target !== 'safetensors') throw new Error(`${input} is a ${kind}: convert it --to safetensors (or ldm) or --to diffusers`);
      return done(...resaveStateDict(input, output, o));
    case 'lora-kohya':
    case 'lora-peft':
      return done(...convertLora(input, output, kind, target, o));
    case 'embedding':
      return done(...convertEmbedding(input, output, target, o));
    case 'hypernetwork':
      throw new Error(`${input} is an A1111 hypernetwork: A1111's .pt is its only format, so there is nothing to convert it to`);
    default:
      throw new Error(`${input}: sdtune cannot convert this file (${report.messages[0] ?? kind})`);
  }
}

function resaveStateDict(input: string, output: string, o: ConvertOptions): [number, string[]] {
  const { sd, metadata } = loadAll(input);
  const notes: string[] = [];
  let work = sd;
  try {
    const ema = L.emaInfo(sd.keys());
    if (ema.count > 0 && (o.pruneEma || o.useEma)) {
      const r = L.pruneEma(sd, o.useEma ? 'ema' : 'non-ema');
      notes.push(o.useEma ? `took ${r.replaced} EMA weights as the model's` : `dropped ${ema.count} EMA weights`);
      work = r.sd;
    } else if (ema.count > 0) {
      notes.push(`kept ${ema.count} EMA weights (use --prune-ema or --use-ema to drop them)`);
    }
    const cast = castAll(work, o.dtype, o.onProgress);
    try {
      saveSafetensors(output, cast, { ...metadata, format: 'pt' });
      return [cast.size, notes];
    } finally {
      disposeAll(cast);
    }
  } finally {
    if (work !== sd) disposeAll(work);
    disposeAll(sd);
  }
}

function singleFileToDiffusers(input: string, output: string, o: ConvertOptions): [number, string[]] {
  const { sd, metadata } = loadAll(input);
  const notes: string[] = [];
  let work = sd;
  try {
    if (L.emaInfo(sd.keys()).count > 0) {
      work = L.pruneEma(sd, o.useEma ? 'ema' : 'non-ema').sd;
      notes.push(o.useEma ? 'used the EMA weights' : 'used the non-EMA weights (pass --use-ema for the EMA ones)');
    }
    const conv = L.ldmToDiffusers(work);
    const family = conv.family.family === 'sd1' ? 'sd1' : 'sd2';
    const meta: SingleFileConfig = metadata[CONFIG_METADATA_KEY] ? JSON.parse(metadata[CONFIG_METADATA_KEY]) : {};
    const shp = (m: Map<string, T.Tensor>) => new Map([...m].map(([k, t]) => [k, t.shape] as const));
    const ucfg = meta.unet ? unetConfigFromDiffusers(meta.unet) : inferUnetConfig(shp(conv.unet), family);
    const vcfg = meta.vae ? vaeConfigFromDiffusers(meta.vae) : inferVaeConfig(shp(conv.vae));
    const tcfg = meta.text_encoder ? clipConfigFromTransformers(meta.text_encoder) : inferClipConfig(shp(conv.textEncoder), family);
    const prediction = meta.prediction ?? (conv.family.prediction === 'v' ? 'v_prediction' : 'epsilon');
    if (conv.ignored.length) notes.push(`left out ${conv.ignored.length} key(s) diffusers has no place for (${conv.ignored.slice(0, 3).join(', ')}${conv.ignored.length > 3 ? ', …' : ''})`);
    let n = 0;
    const total = conv.unet.size + conv.vae.size + conv.textEncoder.size;
    writePipelineFolder(output, {
      unet: conv.unet,
      vae: conv.vae,
      textEncoder: conv.textEncoder,
      configs: { unet: unetConfigToDiffusers(ucfg), vae: vaeConfigToDiffusers(vcfg), text_encoder: clipConfigToTransformers(tcfg), scheduler: meta.scheduler ?? {} },
      family,
      prediction,
    }, { dtype: o.dtype, onTensor: () => o.onProgress?.(++n, total) });
    disposeAll(conv.unet, conv.vae, conv.textEncoder, conv.extras);
    return [total, notes];
  } finally {
    if (work !== sd) disposeAll(work);
    disposeAll(sd);
  }
}

function diffusersToSingleFile(dir: string, output: string, o: ConvertOptions): [number, string[]] {
  const read = (sub: string, names: string[]) => {
    const f = names.map((n) => join(dir, sub, n)).find((p) => existsSync(p));
    if (!f) throw new Error(`${dir}/${sub}: no weights (${names.join(' or ')})`);
    return loadAll(f).sd;
  };
  const json = (p: string) => JSON.parse(readFileSync(join(dir, p), 'utf8')) as Record<string, unknown>;
  const unet = read('unet', ['diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.bin']);
  const vae = read('vae', ['diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.bin']);
  const te = read('text_encoder', ['model.safetensors', 'pytorch_model.bin']);
  try {
    const ucfg = json('unet/config.json');
    const family = ucfg.cross_attention_dim === 1024 ? 'sd2' : 'sd1';
    const ldm = L.diffusersToLdm({ unet, vae, textEncoder: te }, family);
    const sched = existsSync(join(dir, 'scheduler', 'scheduler_config.json')) ? json('scheduler/scheduler_config.json') : {};
    // The configs travel in the metadata, so a non-standard model (a tiny one, a custom width) loads again.
    const cfg: SingleFileConfig = { unet: ucfg, vae: json('vae/config.json'), text_encoder: json('text_encoder/config.json'), scheduler: sched, prediction: sched.prediction_type === 'v_prediction' ? 'v_prediction' : 'epsilon' };
    const cast = castAll(ldm, o.dtype, o.onProgress);
    try {
      saveSafetensors(output, cast, { format: 'pt', [CONFIG_METADATA_KEY]: JSON.stringify(cfg) });
      return [cast.size, []];
    } finally {
      disposeAll(cast, ldm);
    }
  } finally {
    disposeAll(unet, vae, te);
  }
}

function modulePaths(family: string, modelPath?: string): L.ModulePaths {
  if (modelPath) {
    const src = openStateSource(modelPath);
    const shapes = new Map<string, number[]>();
    for (const k of src.keys()) shapes.set(k, [...src.shape(k)]);
    src.close();
    const isLdm = [...shapes.keys()].some((k) => k.startsWith(L.LDM_UNET));
    if (isLdm) {
      const conv = L.ldmShapesToDiffusers(shapes);
      return { unet: L.modulePathsFromKeys(conv.unet.keys()), textEncoder: L.modulePathsFromKeys(conv.textEncoder.keys()) };
    }
    return { unet: L.modulePathsFromKeys(shapes.keys()) };
  }
  const sd2 = family === 'sd2' || family === 'sd2-v';
  return {
    unet: L.modulePathsFromKeys(L.unetKeyShapes(sd2 ? L.SD2_UNET_KEYS_CONFIG : L.SD1_UNET_KEYS_CONFIG).keys()),
    textEncoder: L.modulePathsFromKeys(L.clipTextKeyShapes(sd2 ? L.SD2_CLIP_KEYS_CONFIG : L.SD1_CLIP_KEYS_CONFIG).keys()),
  };
}

function convertLora(input: string, output: string, kind: string, target: Target, o: ConvertOptions): [number, string[]] {
  if (target !== 'kohya' && target !== 'peft') throw new Error(`${input} is a LoRA: convert it --to kohya or --to peft`);
  const f = SafetensorsFile.open(input);
  const sd = new Map<string, T.Tensor>();
  for (const k of f.keys()) sd.set(k, f.get(k));
  const metadata = { ...f.metadata };
  f.close();
  const report = L.detectKind(new Map([...sd].map(([k, t]) => [k, t.shape])), { metadata });
  const paths = modulePaths(report.family.family, o.model);
  try {
    const read = kind === 'lora-kohya' ? L.loraFromKohya(sd, paths, metadata) : L.loraFromPeft(sd, metadata, paths);
    if (read.unloaded.length) {
      for (const m of read.lora.modules.values()) for (const t of [m.down, m.up, m.mid]) t?.dispose();
      throw new Error(`${input}: ${read.unloaded.length} LoRA key(s) match no module of a ${report.family.family} model (${read.unloaded.slice(0, 3).map((u) => `${u.key}: ${u.reason}`).join('; ')}). Pass --model CHECKPOINT to resolve names against that model.`);
    }
    const out = target === 'peft' ? L.loraToPeft(read.lora) : L.loraToKohya(read.lora);
    const cast = castAll(out.tensors, o.dtype, o.onProgress);
    try {
      saveSafetensors(output, cast, out.metadata);
    } finally {
      disposeAll(cast, out.tensors);
      for (const m of read.lora.modules.values()) for (const t of [m.down, m.up, m.mid]) t?.dispose();
    }
    return [cast.size, [`${read.lora.modules.size} LoRA modules`]];
  } finally {
    disposeAll(sd);
  }
}

function convertEmbedding(input: string, output: string, target: Target, o: ConvertOptions): [number, string[]] {
  const emb = loadEmbeddingFile(input);
  try {
    const dt = o.dtype ? DTYPES[o.dtype] : null;
    const castE = (m: Map<string, T.Tensor>) => castAll(m, o.dtype, o.onProgress);
    if (target === 'a1111-pt') {
      const obj = L.embeddingToA1111(emb);
      const v = obj.string_to_param['*'];
      if (dt && v.dtype !== dt) obj.string_to_param['*'] = v.to(dt);
      saveTorchFile(output, obj as never);
      return [1, [`name "${emb.name}"`]];
    }
    const sd = target === 'diffusers' ? L.embeddingToDiffusers(emb) : L.embeddingToKohya(emb);
    const cast = castE(sd);
    try {
      saveSafetensors(output, cast, { format: 'pt' });
    } finally {
      disposeAll(cast, sd);
    }
    return [cast.size, [`name "${emb.name}"`]];
  } finally {
    L.disposeEmbedding(emb);
  }
}

