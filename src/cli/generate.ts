// `sdtune generate`: txt2img and img2img from the command line, over the one generation path
// (src/sampling/pipeline.ts). Each image is a PNG with A1111's `parameters` chunk, written
// atomically; a batch writes NAME-1.png, NAME-2.png, ….
import { existsSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { dirname, extname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { decodePng, writePng } from '../formats/png.ts';
import type { GenerateOptions } from '../sampling/pipeline.ts';
import { embeddingFilesIn, runGenerateJob, stemOf } from '../sampling/run.ts';
import { SCHEDULER_NAMES, type SchedulerName } from '../sampling/schedulers.ts';
import { ProgressBar } from './progress.ts';
import { TOY_MODEL_PATH, toyModelAvailable } from '../toy/model.ts';
import { parseLoraArg } from './merge.ts';
import { parseExtraNetworks } from '../text/prompt.ts';
import { sideBySide } from '../server/image.ts';

export class GenerateUsageError extends Error {}

export const GENERATE_USAGE = `sdtune generate [--model PATH] --prompt TEXT --out FILE.png   (default model: the embedded toy model)
  [--negative TEXT] [--seed N] [--steps N] [--sampler ${SCHEDULER_NAMES.join('|')}] [--karras]
  [--cfg X] [--width W --height H] [--batch N] [--clip-skip N]
  [--init IMAGE.png --strength S] [--embedding FILE]... [--embeddings-dir DIR]
  [--lora FILE[:W[:TE_W]]]... [--lora-dir DIR] [--hypernetwork FILE[:W]]... [--hypernetwork-dir DIR]
  [--device cpu|cuda] [--preview-every N]
  In the prompt, <lora:NAME:W> and <hypernet:NAME:W> are looked up in --lora-dir / --hypernetwork-dir.
  --preview-every N: every N steps, FILE.preview.png shows where the pictures are heading (open it in
  an image viewer that reloads); it goes when the pictures are written.`;

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

function parseGenerateArgs(args: string[]) {
  try {
    return parseArgs({
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
        lora: { type: 'string', multiple: true },
        'lora-dir': { type: 'string' },
        hypernetwork: { type: 'string', multiple: true },
        'hypernetwork-dir': { type: 'string' },
        'embeddings-dir': { type: 'string' },
        device: { type: 'string' },
        'preview-every': { type: 'string' },
        out: { type: 'string' },
        quiet: { type: 'boolean' },
      },
    });
  } catch (e) {
    throw new GenerateUsageError(`${(e as Error).message.split('\n')[0]} (sdtune generate --help lists the options)`);
  }
}

export function runGenerate(args: string[]): GenerateCliResult {
  const { values } = parseGenerateArgs(args);
  // Without --model: the embedded toy model, so a newcomer sees something work.
  if (!values.model && toyModelAvailable()) values.model = TOY_MODEL_PATH;
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

  // Tags in the prompt are checked (and their files found) before the model loads.
  const tags = parseExtraNetworks(o.prompt);
  const loraSpecs = (values.lora ?? []).map(parseLoraArg);
  for (const l of tags.loras) loraSpecs.push({ file: findNetwork('lora', l.name, values['lora-dir'], LORA_FILE), unet: l.unet, te: l.te });
  const hyperSpecs = (values.hypernetwork ?? []).map((a) => {
    const m = /^(.*?)(?::([-+]?\d*\.?\d+(?:e[-+]?\d+)?))?$/i.exec(a)!;
    return { file: m[1], strength: m[2] === undefined ? 1 : Number(m[2]) };
  });
  for (const h of tags.hypernets) hyperSpecs.push({ file: findNetwork('hypernet', h.name, values['hypernetwork-dir'], /\.pt$/i), strength: h.multiplier });
  for (const f of [...loraSpecs, ...hyperSpecs].map((x) => x.file)) if (!existsSync(f)) throw new GenerateUsageError(`${f}: no such file`);

  const embeddings = [...(values.embedding ?? [])];
  for (const f of embeddings) if (!existsSync(f)) throw new GenerateUsageError(`--embedding ${f}: no such file`);
  const dir = values['embeddings-dir'];
  if (dir !== undefined) {
    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new GenerateUsageError(`--embeddings-dir ${dir}: no such folder`);
    embeddings.push(...embeddingFilesIn(dir));
  }
  const every = number('preview-every', values['preview-every'], true);
  if (every !== undefined && every < 1) throw new GenerateUsageError(`--preview-every takes a number of steps, 1 or more (got ${every})`);
  const stem = values.out.slice(0, -extname(values.out).length);
  // The batch side by side, replaced atomically: a viewer never reads half a file.
  const previewFile = `${stem}.preview.png`;
  const t0 = Date.now();
  const bar = values.quiet ? null : new ProgressBar('sampling');
  let images: ReturnType<typeof runGenerateJob>;
  try {
    images = runGenerateJob({
      model: values.model,
      device: values.device ?? 'cpu',
      options: { ...o, onStep: (s, n) => bar?.update(s, n), ...(every && { preview: { every, onPreview: (imgs) => writePng(previewFile, sideBySide(imgs)) } }) },
      embeddings,
      loras: loraSpecs,
      hypernetworks: hyperSpecs,
    });
  } finally {
    if (every) rmSync(previewFile, { force: true });
  }
  const files = images.map((_img, i) => (images.length === 1 ? values.out! : `${stem}-${i + 1}.png`));
  images.forEach((img, i) => writePng(files[i], img.image, { parameters: img.parameters }));
  return { files, seed: images[0].seed, seconds: (Date.now() - t0) / 1000 };
}

const LORA_FILE = /\.(safetensors|pt|ckpt|bin)$/i;


/** A1111's lookup of <lora:NAME> / <hypernet:NAME>: a file of that stem in the folder (or below). */
function findNetwork(kind: 'lora' | 'hypernet', name: string, dir: string | undefined, ext: RegExp): string {
  const flag = kind === 'lora' ? '--lora-dir' : '--hypernetwork-dir';
  if (dir === undefined) throw new GenerateUsageError(`the prompt names <${kind}:${name}> but no ${flag} was given to find it in`);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new GenerateUsageError(`${flag} ${dir}: no such folder`);
  const walk = (d: string): string | null => {
    for (const e of readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = join(d, e.name);
      if (e.isFile() && ext.test(e.name) && stemOf(e.name) === name) return p;
      if (e.isDirectory() && !e.name.startsWith('.')) {
        const hit = walk(p);
        if (hit) return hit;
      }
    }
    return null;
  };
  const hit = walk(dir);
  if (!hit) throw new GenerateUsageError(`the prompt names <${kind}:${name}> but ${dir} has no ${name} file (${kind === 'lora' ? '.safetensors, .pt' : '.pt'})`);
  return hit;
}

export function describeGenerate(r: GenerateCliResult): string {
  return `wrote ${r.files.join(', ')} (seed ${r.seed}, ${r.seconds.toFixed(1)} s)`;
}
