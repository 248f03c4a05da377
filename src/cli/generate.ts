// `sdtune generate`: txt2img and img2img from the command line, over the one generation path
// (src/sampling/pipeline.ts). Each image is a PNG with A1111's `parameters` chunk, written
// atomically; a batch writes NAME-1.png, NAME-2.png, ….
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, extname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import * as T from '../torch/index.ts';
import { decodePng, writePng } from '../formats/png.ts';
import { loadEmbeddingFile } from '../formats/embedding-file.ts';
import { disposeEmbedding } from '../formats/layouts/embedding.ts';
import { loadStableDiffusion, type StableDiffusion } from '../models/load.ts';
import { generate, type GenerateOptions } from '../sampling/pipeline.ts';
import { SCHEDULER_NAMES, type SchedulerName } from '../sampling/schedulers.ts';
import { ProgressBar } from './progress.ts';

export class GenerateUsageError extends Error {}

export const GENERATE_USAGE = `sdtune generate --model PATH --prompt TEXT --out FILE.png
  [--negative TEXT] [--seed N] [--steps N] [--sampler ${SCHEDULER_NAMES.join('|')}] [--karras]
  [--cfg X] [--width W --height H] [--batch N] [--clip-skip N]
  [--init IMAGE.png --strength S] [--embedding FILE]... [--embeddings-dir DIR] [--device cpu|cuda]`;

const EMBEDDING_FILE = /\.(pt|bin|safetensors)$/i;

export interface GenerateCliResult {
  files: string[];
  seed: number;
  seconds: number;
}

function number(name: string, v: string | undefined, int: boolean): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || (int && !Number.isInteger(n))) throw new GenerateUsageError(`--${name} takes ${int ? 'a whole number' : 'a number'}, got ${JSON.stringify(v)}`);
  return n;
}

/** Embedding files by prompt word: --embedding files, then every file in --embeddings-dir. */
function loadEmbeddings(model: StableDiffusion, files: string[], dir: string | undefined): Map<string, T.Tensor> {
  const all = [...files];
  if (dir !== undefined) {
    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new GenerateUsageError(`--embeddings-dir ${dir}: no such folder`);
    for (const f of readdirSync(dir).sort()) if (EMBEDDING_FILE.test(f)) all.push(join(dir, f));
  }
  const out = new Map<string, T.Tensor>();
  const width = model.textEncoder.cfg.hiddenSize;
  for (const file of all) {
    if (!existsSync(file)) throw new GenerateUsageError(`--embedding ${file}: no such file`);
    const e = loadEmbeddingFile(file);
    try {
      const v = e.vectors.te;
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
  return out;
}

export function runGenerate(args: string[]): GenerateCliResult {
  const { values } = parseArgs({
    args,
    allowPositionals: false,
    options: {
      model: { type: 'string' },
      prompt: { type: 'string' },
      negative: { type: 'string' },
      seed: { type: 'string' },
      steps: { type: 'string' },
      sampler: { type: 'string' },
      karras: { type: 'boolean' },
      cfg: { type: 'string' },
      width: { type: 'string' },
      height: { type: 'string' },
      batch: { type: 'string' },
      'clip-skip': { type: 'string' },
      init: { type: 'string' },
      strength: { type: 'string' },
      embedding: { type: 'string', multiple: true },
      'embeddings-dir': { type: 'string' },
      device: { type: 'string' },
      out: { type: 'string' },
      quiet: { type: 'boolean' },
    },
  });
  if (!values.model) throw new GenerateUsageError('generate needs --model (a .safetensors/.ckpt checkpoint or a diffusers folder)');
  if (values.prompt === undefined) throw new GenerateUsageError('generate needs --prompt');
  if (!values.out) throw new GenerateUsageError('generate needs --out FILE.png');
  if (extname(values.out).toLowerCase() !== '.png') throw new GenerateUsageError(`--out ${values.out}: sdtune writes PNG files (with the generation parameters inside); use a .png name`);
  const outDir = dirname(resolve(values.out));
  if (!existsSync(outDir)) throw new GenerateUsageError(`--out ${values.out}: the folder ${outDir} does not exist`);
  if (values.sampler !== undefined && !SCHEDULER_NAMES.includes(values.sampler as SchedulerName)) {
    throw new GenerateUsageError(`--sampler must be one of ${SCHEDULER_NAMES.join(', ')} (got ${values.sampler})`);
  }
  if (values.strength !== undefined && values.init === undefined) throw new GenerateUsageError('--strength goes with --init (img2img)');
  let init: GenerateOptions['init'];
  if (values.init !== undefined) {
    if (!existsSync(values.init)) throw new GenerateUsageError(`--init ${values.init}: no such file`);
    init = decodePng(readFileSync(values.init), values.init);
  }
  const seed = number('seed', values.seed, true);
  const o: GenerateOptions = {
    prompt: values.prompt,
    negative: values.negative,
    seed: seed === undefined || seed === -1 ? undefined : seed,
    steps: number('steps', values.steps, true),
    sampler: values.sampler as SchedulerName | undefined,
    karras: values.karras,
    cfg: number('cfg', values.cfg, false),
    width: number('width', values.width, true),
    height: number('height', values.height, true),
    batch: number('batch', values.batch, true),
    clipSkip: number('clip-skip', values['clip-skip'], true),
    init,
    strength: number('strength', values.strength, false),
  };

  const t0 = Date.now();
  const model = loadStableDiffusion(values.model, { device: values.device ?? 'cpu' });
  let embeddings: Map<string, T.Tensor> | undefined;
  try {
    embeddings = loadEmbeddings(model, values.embedding ?? [], values['embeddings-dir']);
    const bar = values.quiet ? null : new ProgressBar('sampling');
    const images = generate(model, { ...o, embeddings, onStep: (s, n) => bar?.update(s, n) });
    const stem = values.out.slice(0, -extname(values.out).length);
    const files = images.map((_img, i) => (images.length === 1 ? values.out! : `${stem}-${i + 1}.png`));
    images.forEach((img, i) => writePng(files[i], img.image, { parameters: img.parameters }));
    return { files, seed: images[0].seed, seconds: (Date.now() - t0) / 1000 };
  } finally {
    for (const t of embeddings?.values() ?? []) t.dispose();
    model.dispose();
  }
}

export function describeGenerate(r: GenerateCliResult): string {
  return `wrote ${r.files.join(', ')} (seed ${r.seed}, ${r.seconds.toFixed(1)} s)`;
}
