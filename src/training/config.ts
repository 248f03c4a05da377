// The training settings: one typed schema for the command-line flags, the --config file (TOML or
// JSON) and the server's job requests. Each field says its type, default, the techniques it is
// for and a sentence of help; parsing checks all of it and names what is wrong.
import { readFileSync } from 'node:fs';
import { parse as parseToml } from 'smol-toml';
import type { TechniqueKind } from './technique.ts';

export const TECHNIQUES: readonly TechniqueKind[] = ['dreambooth', 'lora', 'embedding', 'hypernetwork'];

type Kind = 'string' | 'number' | 'integer' | 'boolean' | 'string[]' | 'number[]';

interface Field {
  kind: Kind;
  help: string;
  /** Per technique, or one value for all. */
  default?: unknown | Partial<Record<TechniqueKind, unknown>>;
  /** The techniques that read it (all when absent). */
  for?: readonly TechniqueKind[];
  choices?: readonly string[];
  min?: number;
  max?: number;
}

const ALL = TECHNIQUES;

/** The schema. Keys are the config-file names; flags are the same in kebab-case. */
export const TRAIN_FIELDS = {
  model: { kind: 'string', help: 'base model: a .safetensors/.ckpt checkpoint or a diffusers folder' },
  data: { kind: 'string', help: 'folder of training images (captions in same-name .txt files; kohya "10_word" subfolders)' },
  out: { kind: 'string', help: 'the product file (LoRA/embedding .safetensors or .pt, hypernetwork .pt, checkpoint .safetensors or a folder)' },
  workDir: { kind: 'string', help: 'checkpoints, samples and log.jsonl (default: OUT.work beside the product)' },
  steps: { kind: 'integer', help: 'optimizer steps (wins over epochs)', min: 1, max: 10_000_000 },
  epochs: { kind: 'integer', help: 'passes over the data (images × repeats)', min: 1, max: 100_000 },
  batchSize: { kind: 'integer', help: 'images per step', default: 1, min: 1, max: 256 },
  resolution: { kind: 'integer', help: 'training side in pixels (buckets keep about this area)', min: 8, max: 4096 },
  bucketStep: { kind: 'integer', help: 'bucket sides are multiples of this', default: 64, min: 8, max: 256 },
  noBuckets: { kind: 'boolean', help: 'crop every image to a square instead of aspect-ratio buckets', default: false },
  randomCrop: { kind: 'boolean', help: 'random instead of centre crops (disables latent caching)', default: false },
  lr: { kind: 'number', help: 'learning rate (UNet or trained vectors/MLPs)', default: { dreambooth: 2e-6, lora: 1e-4, embedding: 5e-3, hypernetwork: 1e-5 }, min: 0, max: 10 },
  textEncoderLr: { kind: 'number', help: 'learning rate of the text encoder (LoRA, DreamBooth with trainTextEncoder)', for: ['lora', 'dreambooth'], min: 0, max: 10 },
  lrSchedule: { kind: 'string', help: 'constant, constant_with_warmup, linear, cosine, or A1111 pieces like "0.005:100, 1e-3:1000, 1e-5"', default: 'constant' },
  warmupSteps: { kind: 'integer', help: 'LR warm-up steps', default: 0, min: 0 },
  gradAccumulation: { kind: 'integer', help: 'micro-batches per optimizer step', default: 1, min: 1, max: 1024 },
  maxGradNorm: { kind: 'number', help: 'clip the gradient norm to this (0 = off)', default: 1, min: 0 },
  minSnrGamma: { kind: 'number', help: 'min-SNR-γ loss weighting (0 = off; 5 is usual)', default: 0, min: 0 },
  noiseOffset: { kind: 'number', help: 'noise offset (0.05–0.1 helps very dark/bright images)', default: 0, min: 0, max: 1 },
  seed: { kind: 'integer', help: 'seed of every random draw (data order, noise, timesteps)', default: 0, min: 0 },
  emaDecay: { kind: 'number', help: 'keep an EMA of the weights with this decay (e.g. 0.999; warmed up as (1 + step) / (10 + step) until it reaches it); the product, validation and samples use it', min: 0, max: 1 },
  mixedPrecision: { kind: 'string', help: 'fp16 or bf16 autocast on CUDA (CPU trains in fp32)', default: 'no', choices: ['no', 'fp16', 'bf16'] },
  gradientCheckpointing: { kind: 'boolean', help: "recompute the UNet's (and a trained text encoder's) activations in the backward pass: much less memory for about a third more time per step", default: false },
  saveDtype: { kind: 'string', help: 'dtype of the product file', default: { dreambooth: 'fp16', lora: 'fp16', embedding: 'fp32', hypernetwork: 'fp32' }, choices: ['fp32', 'fp16', 'bf16'] },
  // captions
  captionExtension: { kind: 'string', help: 'caption file extension', default: '.txt' },
  template: { kind: 'string', help: 'A1111 prompt template: a built-in name (subject, style, subject_filewords, style_filewords, hypernetwork, none = \"an image\", filewords = the captions as written) or a file', for: ['embedding', 'hypernetwork'], default: { embedding: 'subject_filewords', hypernetwork: 'hypernetwork' } },
  shuffleCaptions: { kind: 'boolean', help: 'shuffle the comma-separated tags of each caption', default: false },
  keepTokens: { kind: 'integer', help: 'leave the first N tags in place when shuffling', default: 0, min: 0 },
  captionDropout: { kind: 'number', help: 'probability of training a sample with an empty caption', default: 0, min: 0, max: 1 },
  tagDropout: { kind: 'number', help: 'probability of dropping each tag', default: 0, min: 0, max: 1 },
  // the concept
  token: { kind: 'string', help: 'the new word: DreamBooth rare token ("sks"), embedding name ("sksheart")', for: ['dreambooth', 'embedding'] },
  classPrompt: { kind: 'string', help: 'DreamBooth class prompt ("a photo of a heart") for prior preservation; [filewords] stands for each training caption without the token, one class prompt per caption', for: ['dreambooth'] },
  classData: { kind: 'string', help: 'folder of class images; generated by the base model (and cached) when missing', for: ['dreambooth'] },
  numClassImages: { kind: 'integer', help: 'class images for prior preservation (0 = no prior preservation)', for: ['dreambooth'], default: 0, min: 0, max: 10_000 },
  priorLossWeight: { kind: 'number', help: 'weight of the class images in the loss', for: ['dreambooth'], default: 1, min: 0, max: 100 },
  trainTextEncoder: { kind: 'boolean', help: 'also train the text encoder', for: ['dreambooth', 'lora'], default: { dreambooth: false, lora: true } },
  // LoRA
  rank: { kind: 'integer', help: 'LoRA rank (network_dim)', for: ['lora'], default: 8, min: 1, max: 1024 },
  alpha: { kind: 'number', help: 'LoRA alpha (scale = alpha/rank)', for: ['lora'], default: 8, min: 0 },
  convRank: { kind: 'integer', help: 'LoCon: rank of the 3×3 conv layers (0 = off)', for: ['lora'], default: 0, min: 0, max: 1024 },
  convAlpha: { kind: 'number', help: 'LoCon: alpha of the conv layers', for: ['lora'], default: 1, min: 0 },
  loraFormat: { kind: 'string', help: 'kohya (A1111, ComfyUI, Forge) or peft (diffusers)', for: ['lora'], default: 'kohya', choices: ['kohya', 'peft'] },
  // textual inversion
  vectors: { kind: 'integer', help: 'vectors per token', for: ['embedding'], default: 1, min: 1, max: 75 },
  initText: { kind: 'string', help: 'text whose vectors start the embedding', for: ['embedding'], default: '*' },
  // hypernetwork
  layerStructure: { kind: 'number[]', help: 'layer widths as multiples of the context width, e.g. 1,2,1', for: ['hypernetwork'], default: [1, 2, 1] },
  activation: { kind: 'string', help: 'linear, relu, leakyrelu, elu, swish, tanh, sigmoid, gelu, …', for: ['hypernetwork'], default: 'linear' },
  layerNorm: { kind: 'boolean', help: 'add layer normalisation', for: ['hypernetwork'], default: false },
  dropoutStructure: { kind: 'number[]', help: 'dropout per layer, e.g. 0,0.3,0', for: ['hypernetwork'] },
  weightInit: { kind: 'string', help: 'Normal, XavierUniform, XavierNormal, KaimingUniform, KaimingNormal', for: ['hypernetwork'], default: 'Normal', choices: ['Normal', 'XavierUniform', 'XavierNormal', 'KaimingUniform', 'KaimingNormal'] },
  sizes: { kind: 'number[]', help: 'context widths to create modules for (default: every width the model uses)', for: ['hypernetwork'] },
  // watching the run
  checkpointEvery: { kind: 'integer', help: 'save a resumable checkpoint (and a product snapshot) every N steps', default: 100, min: 1 },
  snapshots: { kind: 'boolean', help: 'with each checkpoint, also save the product as OUT-stepNNNNNN (to keep the best one)', default: { dreambooth: false, lora: true, embedding: true, hypernetwork: true } },
  sampleEvery: { kind: 'integer', help: 'generate the sample prompts every N steps (0 = never)', default: 0, min: 0 },
  samplePrompts: { kind: 'string[]', help: 'prompts for sample images' },
  validateEvery: { kind: 'integer', help: 'compute the validation and prior-drift losses every N steps', default: 25, min: 1 },
  validationData: { kind: 'string', help: 'folder of held-out images (captions beside them) for the validation loss (default: 4 training images)' },
  priorPrompts: { kind: 'string[]', help: 'ordinary prompts for the prior-drift meter (default: the class prompt)' },
  sampleCheck: { kind: 'integer', help: 'at each validation, draw N pictures and score how many show the concept, with a detector fitted on the training pictures against the base model\'s (the meter then reads it; 0 = off). With held-out pictures the detector is tested on them first, and the check is turned off if it cannot tell them from the base model\'s', default: 0, min: 0 },
  initFrom: { kind: 'string', help: 'continue training from a LoRA, embedding or hypernetwork file: it starts from that file\'s weights, and its rank, vectors or layer structure (kohya\'s --network_weights, A1111\'s continued training)', for: ['lora', 'embedding', 'hypernetwork'] },
  earlyStop: { kind: 'integer', help: 'stop once the meter\'s recommended step has stood for N validations (0 = off)', default: 0, min: 0 },
} as const satisfies Record<string, Field>;

type Fields = typeof TRAIN_FIELDS;
type ValueOf<K extends Kind> = K extends 'string' ? string : K extends 'number' | 'integer' ? number : K extends 'boolean' ? boolean : K extends 'string[]' ? string[] : number[];
export type TrainConfig = { technique: TechniqueKind } & { -readonly [K in keyof Fields]?: ValueOf<Fields[K]['kind']> };

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export const kebab = (k: string): string => k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());

/** Reads a --config file: TOML (.toml) or JSON. Keys may be camelCase, snake_case or kebab-case. */
export function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`${path}: cannot read the config file (${(e as Error).message})`);
  }
  try {
    return (/\.toml$/i.test(path) ? parseToml(text) : JSON.parse(text)) as Record<string, unknown>;
  } catch (e) {
    throw new ConfigError(`${path}: not valid ${/\.toml$/i.test(path) ? 'TOML' : 'JSON'} (${(e as Error).message.split('\n')[0]})`);
  }
}

const camel = (k: string): string => k.replace(/[-_]([a-z])/g, (_, c: string) => c.toUpperCase());

function coerce(key: string, f: Field, v: unknown, where: string): unknown {
  const bad = (what: string): never => {
    throw new ConfigError(`${where}: ${key} ${what}`);
  };
  const num = (x: unknown): number => {
    const n = typeof x === 'string' && x.trim() !== '' ? Number(x) : x;
    if (typeof n !== 'number' || !Number.isFinite(n)) bad(`must be a number (got ${JSON.stringify(x)})`);
    return n as number;
  };
  let out: unknown;
  switch (f.kind) {
    case 'string':
      if (typeof v !== 'string') bad(`must be text (got ${JSON.stringify(v)})`);
      out = v;
      break;
    case 'boolean':
      if (v === 'true' || v === true) out = true;
      else if (v === 'false' || v === false) out = false;
      else bad(`must be true or false (got ${JSON.stringify(v)})`);
      break;
    case 'number':
    case 'integer': {
      const n = num(v);
      if (f.kind === 'integer' && !Number.isInteger(n)) bad(`must be a whole number (got ${n})`);
      if (f.min !== undefined && n < f.min) bad(`must be at least ${f.min} (got ${n})`);
      if (f.max !== undefined && n > f.max) bad(`must be at most ${f.max} (got ${n})`);
      out = n;
      break;
    }
    case 'string[]':
      out = typeof v === 'string' ? [v] : Array.isArray(v) && v.every((x) => typeof x === 'string') ? v : bad('must be a list of texts');
      break;
    case 'number[]':
      out = (typeof v === 'string' ? v.split(',') : Array.isArray(v) ? v : bad('must be a list of numbers, e.g. 1,2,1')) as unknown[];
      out = (out as unknown[]).map(num);
      break;
  }
  if (f.choices && !f.choices.includes(out as string)) bad(`must be one of ${f.choices.join(', ')} (got ${JSON.stringify(out)})`);
  return out;
}

/**
 * Builds the config from a file's object and the flags (flags win), fills each technique's
 * defaults and checks everything: unknown keys, types, ranges, settings the technique ignores.
 */
export function resolveTrainConfig(technique: string, sources: { file?: Record<string, unknown>; fileName?: string; flags?: Record<string, unknown> }): TrainConfig {
  if (!TECHNIQUES.includes(technique as TechniqueKind)) throw new ConfigError(`unknown technique ${JSON.stringify(technique)}: choose ${TECHNIQUES.join(', ')}`);
  const tech = technique as TechniqueKind;
  const cfg: Record<string, unknown> = { technique: tech };
  const fields = TRAIN_FIELDS as Record<string, Field>;
  const take = (obj: Record<string, unknown>, where: string, isFlag: boolean) => {
    for (const [raw, v] of Object.entries(obj)) {
      if (v === undefined) continue;
      const key = camel(raw);
      if (key === 'technique') {
        if (v !== tech) throw new ConfigError(`${where}: technique is ${JSON.stringify(v)} but the command says ${tech}`);
        continue;
      }
      const f = fields[key];
      if (!f) {
        const near = Object.keys(fields).find((k) => k.toLowerCase() === key.toLowerCase() || k.toLowerCase().startsWith(key.toLowerCase().slice(0, 4)));
        throw new ConfigError(`${where}: unknown setting ${isFlag ? '--' + kebab(key) : JSON.stringify(raw)}${near ? ` (did you mean ${isFlag ? '--' + kebab(near) : near}?)` : ''}`);
      }
      if (key === 'initFrom' && tech === 'dreambooth') throw new ConfigError(`${where}: ${isFlag ? '--init-from' : key} continues an adapter file; DreamBooth trains the whole model, so to continue a DreamBooth run pass its checkpoint as ${isFlag ? '--model' : 'model'}`);
      if (f.for && !f.for.includes(tech)) throw new ConfigError(`${where}: ${isFlag ? '--' + kebab(key) : key} is a ${f.for.join('/')} setting; ${tech} does not use it`);
      cfg[key] = coerce(isFlag ? '--' + kebab(key) : key, f, v, where);
    }
  };
  if (sources.file) take(sources.file, sources.fileName ?? 'config', false);
  if (sources.flags) take(sources.flags, 'command line', true);
  for (const [k, f] of Object.entries(fields)) {
    if (cfg[k] !== undefined || f.default === undefined) continue;
    if (f.for && !f.for.includes(tech)) continue;
    const d = f.default;
    const v = typeof d === 'object' && d !== null && !Array.isArray(d) ? (d as Record<string, unknown>)[tech] : d;
    if (v !== undefined) cfg[k] = Array.isArray(v) ? [...v] : v;
  }
  for (const need of ['model', 'data', 'out'] as const) if (cfg[need] === undefined) throw new ConfigError(`train ${tech} needs --${need}${need === 'model' ? ' (a checkpoint or diffusers folder)' : need === 'data' ? ' (a folder of images)' : ' (where to write the result)'}`);
  if ((tech === 'dreambooth' || tech === 'embedding') && cfg.token === undefined) {
    throw new ConfigError(tech === 'dreambooth' ? 'train dreambooth needs --token, the rare word for the subject (e.g. "sks")' : 'train embedding needs --token, the new word (e.g. "sksheart"); the file is named after it');
  }
  if (cfg.numClassImages && !cfg.classPrompt) throw new ConfigError('--num-class-images needs --class-prompt (e.g. "a photo of a heart")');
  const ls = cfg.layerStructure as number[] | undefined;
  if (ls && (ls.length < 2 || ls[0] !== 1 || ls[ls.length - 1] !== 1)) throw new ConfigError(`--layer-structure must start and end with 1, e.g. 1,2,1 (got ${ls.join(',')})`);
  const ds = cfg.dropoutStructure as number[] | undefined;
  if (ds && ls && ds.length !== ls.length) throw new ConfigError(`--dropout-structure needs one value per layer (${ls.length}), got ${ds.length}`);
  return cfg as TrainConfig;
}

/** `--flag value` options for util.parseArgs, from the schema. */
export function trainFlagOptions(): Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> {
  const o: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = {};
  for (const [k, f] of Object.entries(TRAIN_FIELDS as Record<string, Field>)) {
    o[kebab(k)] = f.kind === 'boolean' ? { type: 'boolean' } : f.kind === 'string[]' ? { type: 'string', multiple: true } : { type: 'string' };
  }
  return o;
}

/** The flags' help text, grouped as the schema is. */
export function trainHelp(technique?: TechniqueKind): string {
  const lines: string[] = [];
  for (const [k, f] of Object.entries(TRAIN_FIELDS as Record<string, Field>)) {
    if (technique && f.for && !f.for.includes(technique)) continue;
    const d = f.default;
    const dv = typeof d === 'object' && d !== null && !Array.isArray(d) ? (technique ? (d as Record<string, unknown>)[technique] : Object.entries(d).map(([t, v]) => `${t} ${v}`).join(', ')) : d;
    lines.push(`  --${kebab(k)}${f.kind === 'boolean' ? '' : ' ' + f.kind.toUpperCase().replace('[]', ',…')}`.padEnd(34) + f.help + (dv !== undefined ? ` [${Array.isArray(dv) ? dv.join(',') : dv}]` : ''));
  }
  return lines.join('\n');
}
