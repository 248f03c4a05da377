// One generation job with its adapters: the model loaded, embeddings, LoRAs and hypernetworks
// applied at their weights, the pipeline run, everything disposed. `sdtune generate` and the
// studio's workers both generate through here (and the pipeline below it exists once).
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import * as T from '../torch/index.ts';
import { loadEmbeddingFile } from '../formats/embedding-file.ts';
import { disposeEmbedding } from '../formats/layouts/embedding.ts';
import { loadStableDiffusion, type StableDiffusion } from '../models/load.ts';
import { applyLoraFiles, disposeLoraFile, type AppliedLoras } from '../adapters/lora.ts';
import { loadLoraFile, type LoadedLora } from '../adapters/lora-file.ts';
import { Hypernetwork, applyHypernetworks, type HypernetworkHandle } from '../adapters/hypernetwork.ts';
import { generate, type GenerateOptions, type GeneratedImage } from './pipeline.ts';

export const EMBEDDING_FILE = /\.(pt|bin|safetensors)$/i;

export interface GenerateJob {
  model: string;
  device?: string;
  options: Omit<GenerateOptions, 'embeddings' | 'extraParameters' | 'onExtraNetworks'>;
  /** Embedding files; their words become usable in the prompt. */
  embeddings?: string[];
  /** Skip embeddings made for another model instead of failing (A1111 lists them as skipped). */
  lenientEmbeddings?: boolean;
  loras?: { file: string; unet: number; te: number }[];
  hypernetworks?: { file: string; strength: number }[];
}

/** Embedding files of a folder (A1111's embeddings/ folder), sorted. */
export function embeddingFilesIn(dir: string): string[] {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) return [];
  return readdirSync(dir).sort().filter((f) => EMBEDDING_FILE.test(f)).map((f) => join(dir, f));
}

/** Embedding vectors by prompt word, checked against the model's text encoder. */
export function loadEmbeddings(model: StableDiffusion, files: readonly string[], o: { lenient?: boolean } = {}): Map<string, T.Tensor> {
  const out = new Map<string, T.Tensor>();
  const width = model.textEncoder.cfg.hiddenSize;
  try {
    for (const file of files) {
      if (!existsSync(file)) throw new Error(`${file}: no such embedding file`);
      const e = loadEmbeddingFile(file);
      try {
        const v = e.vectors.te;
        if (o.lenient && (!v || v.size(1) !== width)) continue;
        if (!v) throw new Error(`${file}: this embedding is for SDXL (clip_l/clip_g); the model is ${model.family.toUpperCase()}`);
        if (v.size(1) !== width) {
          throw new Error(`${file}: its vectors have ${v.size(1)} values but ${model.name}'s text encoder uses ${width} (it was trained for ${v.size(1) === 768 ? 'SD 1.x' : v.size(1) === 1024 ? 'SD 2.x' : 'another model'}); use an embedding made for this model`);
        }
        if (out.has(e.name)) throw new Error(`${file}: another embedding already uses the word '${e.name}'; rename one of the files`);
        out.set(e.name, T.keep(v.to('float32')));
      } finally {
        disposeEmbedding(e);
      }
    }
  } catch (err) {
    for (const t of out.values()) t.dispose();
    throw err;
  }
  return out;
}

/** A file's name without folder and extension (A1111 names networks by it). */
export const stemOf = (file: string): string => file.replace(/^.*[\\/]/, '').replace(/\.[^.]+$/, '');

/** Runs one generation; the images carry A1111's parameters text (adapters named in it). */
export function runGenerateJob(job: GenerateJob): GeneratedImage[] {
  for (const f of [...(job.loras ?? []), ...(job.hypernetworks ?? [])].map((x) => x.file)) if (!existsSync(f)) throw new Error(`${f}: no such file`);
  const model = loadStableDiffusion(job.model, { device: job.device ?? 'cpu' });
  let embeddings: Map<string, T.Tensor> | undefined;
  const loras: LoadedLora[] = [];
  const hypers: Hypernetwork[] = [];
  let applied: AppliedLoras | null = null;
  let hyperHandle: HypernetworkHandle | null = null;
  try {
    embeddings = loadEmbeddings(model, job.embeddings ?? [], { lenient: job.lenientEmbeddings });
    const loraSpecs = job.loras ?? [];
    const hyperSpecs = job.hypernetworks ?? [];
    for (const l of loraSpecs) loras.push(loadLoraFile(l.file, model));
    if (loras.length) applied = applyLoraFiles(model, loras.map((lora, i) => ({ lora, unet: loraSpecs[i].unet, te: loraSpecs[i].te })));
    for (const h of hyperSpecs) hypers.push(Hypernetwork.fromFile(h.file, { device: model.device }));
    if (hypers.length) hyperHandle = applyHypernetworks(model.unet, hypers.map((net, i) => ({ net, strength: hyperSpecs[i].strength })));
    const used: Record<string, string> = {};
    if (loraSpecs.length) used.LoRA = loraSpecs.map((l) => `${stemOf(l.file)}: ${l.unet}`).join(', ');
    if (hyperSpecs.length) used.Hypernet = hyperSpecs.map((h) => `${stemOf(h.file)}: ${h.strength}`).join(', ');
    // Tags in the prompt were resolved to files by the caller; they are cut from the text here.
    return generate(model, { ...job.options, embeddings, extraParameters: used, onExtraNetworks: () => {} });
  } finally {
    hyperHandle?.remove();
    for (const h of hypers) h.dispose();
    applied?.remove();
    for (const l of loras) disposeLoraFile(l);
    for (const t of embeddings?.values() ?? []) t.dispose();
    model.dispose();
  }
}
