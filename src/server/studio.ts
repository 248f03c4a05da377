// The studio's state and the rules that turn requests into worker tasks: the data folder, the job
// store and queue, the model list (the embedded toy model plus DATA/models), and for each job type
// how its names become paths inside the data folder. The HTTP routes (api.ts, a1111.ts) are thin
// over this.
import { copyFileSync, createReadStream, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, extname, join } from 'node:path';
import { createHash } from 'node:crypto';
import sharp from 'sharp';
import { decodeImage } from './image.ts';
import { inspectPath } from '../formats/inspect.ts';
import { parseExtraNetworks } from '../text/prompt.ts';
import { ConfigError, TRAIN_FIELDS, resolveTrainConfig, type TrainConfig } from '../training/config.ts';
import { snapshotPath } from '../training/loop.ts';
import { TOY_MODEL_PATH, toyModelAvailable } from '../toy/model.ts';
import type { AdapterInfo, AdapterKind, GenerateRequest, Job, ModelInfo, OutputImage, Snapshot, TrainRequest } from './api-types.ts';
import { ADAPTER_DIRS, DataDir, IMAGE_EXT, MODEL_EXT, checkName } from './data.ts';
import { Store } from './db.ts';
import { JobQueue } from './queue.ts';
import type { WorkerTask } from './protocol.ts';
import { HttpError } from './schema.ts';

export const TOY_MODEL_NAME = 'toy-sd.safetensors';

/** The studio's own bounds on top of the CLI's schema: a browser form should not start a week-long job by a typo. */
export const STUDIO_LIMITS = { steps: 100_000, batchSize: 64, resolution: 2048, genSteps: 150, genBatch: 16, genSide: 2048 };

/** Settings a request may not set: the server chooses every path. */
/** Sampling steps between live previews when a request does not say (each costs a small VAE decode). */
export const DEFAULT_PREVIEW_EVERY = 5;

const PATH_SETTINGS = ['model', 'data', 'out', 'workDir', 'classData', 'validationData', 'template', 'initFrom'];

const camel = (k: string): string => k.replace(/[-_]([a-z])/g, (_, c: string) => c.toUpperCase());

export interface StudioOptions {
  data: string;
  device?: string;
  /** Extra node flags for worker processes (tests). */
  workerArgs?: string[];
  /** One job at a time: generation waits for a training run (a GPU without memory for two models). */
  serial?: boolean;
}

export class Studio {
  readonly data: DataDir;
  readonly store: Store;
  readonly queue: JobQueue;
  readonly device: string;
  private readonly hashes = new Map<string, string>();
  private readonly inspected = new Map<string, ModelInfo>();

  constructor(o: StudioOptions) {
    this.data = new DataDir(o.data);
    this.store = new Store(this.data.db);
    this.device = o.device ?? 'cpu';
    this.queue = new JobQueue(this.store, (job, resume) => this.task(job, resume), { device: this.device, workerArgs: o.workerArgs, serial: o.serial, finish: (job, result) => this.finish(job, result) });
  }

  async close(): Promise<void> {
    await this.queue.close();
    this.store.close();
  }

  // ---- models -------------------------------------------------------------------------------

  /** Checkpoints by name: the embedded toy model first, then DATA/models (files and diffusers folders). */
  modelPaths(): Map<string, string> {
    const m = new Map<string, string>();
    if (toyModelAvailable()) m.set(TOY_MODEL_NAME, TOY_MODEL_PATH);
    const dir = this.data.dir('models');
    for (const f of readdirSync(dir).sort()) {
      if (f.startsWith('.')) continue;
      const p = join(dir, f);
      const st = statSync(p);
      if ((st.isFile() && MODEL_EXT.test(f)) || (st.isDirectory() && existsSync(join(p, 'model_index.json')))) m.set(f, p);
    }
    return m;
  }

  modelPath(name: string | undefined): string {
    const n = name ?? this.currentModel();
    const p = this.modelPaths().get(n);
    if (!p) throw new HttpError(404, `there is no model ${JSON.stringify(n)}: GET /api/models lists them (put checkpoints in ${this.data.dir('models')})`, 'model');
    return p;
  }

  /** The side a model generates and trains at by default (the toy model: 32 px). */
  async nativeSide(name: string): Promise<number> {
    const m = (await this.models()).find((x) => x.name === name);
    return m?.family === 'toy' ? 32 : m?.family === 'sdxl' ? 1024 : m?.family === 'sd2' ? 768 : 512;
  }

  currentModel(): string {
    const names = [...this.modelPaths().keys()];
    const chosen = this.store.setting<string | null>('model', null);
    if (chosen && names.includes(chosen)) return chosen;
    if (names.length === 0) throw new HttpError(409, `no model is available: put a checkpoint in ${this.data.dir('models')}`);
    return names[0];
  }

  setCurrentModel(name: string): void {
    if (!this.modelPaths().has(name)) throw new HttpError(404, `there is no model ${JSON.stringify(name)}`);
    this.store.setSetting('model', name);
  }

  /** A1111's short hash (sha256, 10 hex digits), streamed off the event loop and cached per size and time. */
  async hash(path: string): Promise<string> {
    return (await this.sha256(path)).slice(0, 10);
  }

  async sha256(path: string): Promise<string> {
    const st = statSync(path);
    if (!st.isFile()) return '';
    const key = `${path}:${st.size}:${st.mtimeMs}`;
    const hit = this.hashes.get(key);
    if (hit) return hit;
    const h = createHash('sha256');
    await new Promise<void>((res, rej) => createReadStream(path).on('data', (c) => h.update(c)).on('end', () => res()).on('error', rej));
    const v = h.digest('hex');
    this.hashes.set(key, v);
    return v;
  }

  /** The model list; each file is inspected and hashed once per size and time (A1111 clients ask often). */
  async models(): Promise<ModelInfo[]> {
    const out: ModelInfo[] = [];
    for (const [name, path] of this.modelPaths()) {
      const st = statSync(path);
      const key = `${name}:${path}:${st.size}:${st.mtimeMs}`;
      let m = this.inspected.get(key);
      if (!m) {
        const r = inspectPath(path);
        const hash = await this.hash(path);
        m = { name, title: hash ? `${name} [${hash}]` : name, kind: r.kind, family: path === TOY_MODEL_PATH ? 'toy' : r.family, bytes: r.bytes, builtin: path === TOY_MODEL_PATH };
        this.inspected.set(key, m);
      }
      out.push(m);
    }
    return out;
  }

  // ---- adapters and outputs ------------------------------------------------------------------

  adapterPath(kind: AdapterKind, name: string): string {
    return this.data.adapterFile(kind, name);
  }

  async outputs(limit = 200): Promise<OutputImage[]> {
    const dir = this.data.dir('outputs');
    const files = readdirSync(dir).filter((f) => /\.png$/i.test(f) && !f.startsWith('.')).map((f) => ({ f, t: statSync(join(dir, f)).mtimeMs })).sort((a, b) => b.t - a.t || b.f.localeCompare(a.f)).slice(0, limit);
    const out: OutputImage[] = [];
    for (const { f, t } of files) {
      // Text chunks only (sharp reads them without decoding the pixels).
      const meta = await sharp(join(dir, f)).metadata().catch(() => null);
      const parameters = meta?.comments?.find((c) => c.keyword === 'parameters')?.text ?? '';
      const seed = Number(/(?:^|, )Seed: (\d+)/m.exec(parameters)?.[1] ?? -1);
      out.push({ file: f, url: `/files/outputs/${encodeURIComponent(f)}`, seed, parameters, created: new Date(t).toISOString() });
    }
    return out;
  }

  // ---- requests → tasks ----------------------------------------------------------------------

  /** Checks a training request and resolves it to the CLI's config (what the worker runs). */
  trainConfig(r: TrainRequest, workDir: string, productDir: string): TrainConfig {
    checkName(r.name, 'name');
    const data = this.data.existingDataset(r.dataset);
    if (!readdirSync(data).some((f) => IMAGE_EXT.test(f))) throw new HttpError(400, `dataset ${JSON.stringify(r.dataset)} has no images yet: upload some first`, 'dataset');
    const settings: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(r.settings ?? {})) {
      const key = camel(k);
      if (PATH_SETTINGS.includes(key)) throw new HttpError(400, `settings.${k}: the server chooses ${key === 'template' ? 'templates' : 'paths'}; ${key === 'data' ? 'use dataset' : key === 'model' ? 'use model' : key === 'validationData' ? 'use validation_dataset' : key === 'template' ? 'use templateName (a built-in template)' : key === 'initFrom' ? 'use continue_from (the name of a library file)' : 'it is set for you'}`, `settings.${k}`);
      settings[key === 'templateName' ? 'template' : key] = v;
    }
    if (typeof settings.template === 'string' && !/^[a-z_]+$/.test(settings.template)) throw new HttpError(400, 'settings.templateName must be a built-in template name (subject, style, subject_filewords, style_filewords, hypernetwork, filewords, none)', 'settings.templateName');
    const ext = productExt(r);
    if (r.continue_from !== undefined && r.technique === 'dreambooth') throw new HttpError(400, 'continue_from continues a LoRA, embedding or hypernetwork; DreamBooth trains the whole model, so pick the trained checkpoint as the model instead', 'continue_from');
    const initFrom = r.continue_from === undefined ? undefined : this.adapterPath(r.technique as AdapterKind, r.continue_from);
    let c: TrainConfig;
    try {
      c = resolveTrainConfig(r.technique, {
        file: settings,
        fileName: 'settings',
        flags: {
          model: this.modelPath(r.model),
          data,
          out: join(productDir, `${r.name}${ext}`),
          workDir,
          ...(r.validation_dataset !== undefined && { validationData: this.data.existingDataset(r.validation_dataset) }),
          ...(initFrom !== undefined && { initFrom }),
        },
      });
    } catch (e) {
      if (e instanceof ConfigError) throw new HttpError(400, e.message.replace(/^command line: /, ''), 'settings');
      throw e;
    }
    if ((c.steps ?? 0) > STUDIO_LIMITS.steps) throw new HttpError(400, `settings.steps must be at most ${STUDIO_LIMITS.steps} here (got ${c.steps})`, 'settings.steps');
    if ((c.batchSize ?? 1) > STUDIO_LIMITS.batchSize) throw new HttpError(400, `settings.batchSize must be at most ${STUDIO_LIMITS.batchSize} here`, 'settings.batchSize');
    if ((c.resolution ?? 0) > STUDIO_LIMITS.resolution) throw new HttpError(400, `settings.resolution must be at most ${STUDIO_LIMITS.resolution} here`, 'settings.resolution');
    return c;
  }

  /** Where a finished training product goes in the library. */
  libraryPath(r: Pick<TrainRequest, 'technique' | 'name' | 'file_format'>): string {
    const folder = r.technique === 'dreambooth' ? 'models' : ADAPTER_DIRS[r.technique as AdapterKind];
    return this.data.inside(folder, `${r.name}${productExt(r)}`);
  }

  submitTrain(r: TrainRequest): Job {
    checkName(r.name, 'name');
    const lib = this.libraryPath(r);
    if (existsSync(lib) && !r.overwrite) throw new HttpError(409, `${basename(lib)} already exists in the library: choose another name, delete it first, or send overwrite: true`, 'name');
    const active = this.store.jobs({ status: ['queued', 'running'] }).find((j) => j.type === 'train' && j.request.name === r.name && j.request.technique === r.technique);
    if (active) throw new HttpError(409, `job ${active.id} is already training ${JSON.stringify(r.name)}`, 'name');
    // Checked now (a bad setting is a 400 on submit, not a failed job later), resolved again per run.
    this.trainConfig(r, join(this.data.dir('jobs'), 'check'), join(this.data.dir('jobs'), 'check'));
    return this.queue.submit('train', { ...r });
  }

  submitPreflight(r: TrainRequest): Job {
    this.trainConfig(r, join(this.data.dir('jobs'), 'check'), join(this.data.dir('jobs'), 'check'));
    return this.queue.submit('preflight', { ...r });
  }

  async submitGenerate(r: GenerateRequest): Promise<Job> {
    this.modelPath(r.model);
    const tags = parseExtraNetworksChecked(r.prompt);
    for (const l of [...(r.loras ?? []), ...tags.loras.map((t) => ({ name: t.name }))]) this.adapterPath('lora', l.name);
    for (const h of [...(r.hypernetworks ?? []), ...tags.hypernets.map((t) => ({ name: t.name }))]) this.adapterPath('hypernetwork', h.name);
    const w = r.width ?? 0;
    const h = r.height ?? 0;
    if (w % 8 || h % 8) throw new HttpError(400, `width and height must be multiples of 8 (got ${w}×${h})`, w % 8 ? 'width' : 'height');
    // Read once here, so that a broken image is a 400 now; the worker decodes it again.
    if (r.init_image !== undefined) await decodeImage(r.init_image);
    return this.queue.submit('generate', { ...r });
  }

  /** The worker task of a job: every name resolved to a path inside the data folder. */
  private task(job: Job, resume: boolean): WorkerTask {
    const work = this.data.jobDir(job.id);
    switch (job.type) {
      case 'train': {
        const r = job.request as unknown as TrainRequest;
        const config = this.trainConfig(r, work, join(work, 'product'));
        mkdirSync(join(work, 'product'), { recursive: true });
        this.store.update(job.id, { request: { ...job.request, work_dir: work } });
        return { kind: 'train', config, resume, device: this.device };
      }
      case 'preflight': {
        const r = job.request as unknown as TrainRequest;
        const config = this.trainConfig(r, join(work, 'dry'), join(work, 'dry'));
        return { kind: 'preflight', config, device: this.device, scratch: join(work, 'scratch') };
      }
      case 'generate':
        return this.generateTask(job);
      case 'convert':
      case 'create-embedding':
      case 'create-hypernetwork':
        return job.request.task as WorkerTask;
    }
  }

  private generateTask(job: Job): WorkerTask {
    const r = job.request as unknown as GenerateRequest;
    const tags = parseExtraNetworksChecked(r.prompt);
    const loras = [...(r.loras ?? []).map((l) => ({ file: this.adapterPath('lora', l.name), unet: l.weight, te: l.te ?? l.weight })), ...tags.loras.map((t) => ({ file: this.adapterPath('lora', t.name), unet: t.unet, te: t.te }))];
    const hypernetworks = [...(r.hypernetworks ?? []).map((h) => ({ file: this.adapterPath('hypernetwork', h.name), strength: h.weight })), ...tags.hypernets.map((t) => ({ file: this.adapterPath('hypernetwork', t.name), strength: t.multiplier }))];
    return {
      kind: 'generate',
      outDir: this.data.dir('outputs'),
      prefix: job.id,
      initImage: r.init_image,
      previewEvery: r.preview_every ?? DEFAULT_PREVIEW_EVERY,
      job: {
        model: this.modelPath(r.model),
        device: this.device,
        embeddings: this.data.adapters('embedding').map((a) => this.adapterPath('embedding', a.name)),
        lenientEmbeddings: true,
        loras,
        hypernetworks,
        options: {
          prompt: r.prompt,
          negative: r.negative_prompt,
          seed: r.seed === undefined || r.seed < 0 ? undefined : r.seed,
          steps: r.steps,
          sampler: r.sampler,
          karras: r.karras,
          cfg: r.cfg,
          width: r.width,
          height: r.height,
          batch: r.batch,
          clipSkip: r.clip_skip,
          strength: r.init_image === undefined ? undefined : r.strength,
        },
      },
    };
  }

  /** After a worker's 'done': a training product moves from the job folder into the library. */
  private finish(job: Job, result: unknown): unknown {
    if (job.type !== 'train') return result;
    const r = result as { out?: string | null; status?: string };
    const req = job.request as unknown as TrainRequest;
    if (r.status !== 'done' || !r.out || !existsSync(r.out)) return result;
    const lib = this.libraryPath(req);
    rmSync(lib, { recursive: true, force: true });
    renameSync(r.out, lib);
    const st = statSync(lib);
    const product = { kind: req.technique === 'dreambooth' ? 'model' : req.technique, name: req.name, file: basename(lib), bytes: st.size, modified: st.mtime.toISOString() };
    return { ...r, product, product_path: lib, technique: req.technique };
  }

  snapshots(job: Job): Snapshot[] {
    if (job.type !== 'train') return [];
    const req = job.request as unknown as TrainRequest;
    const dir = join(this.data.jobDir(job.id), 'product');
    if (!existsSync(dir)) return [];
    const ext = productExt(req);
    const out: Snapshot[] = [];
    for (const f of readdirSync(dir)) {
      const m = /-step(\d+)\.[a-z]+$/.exec(f);
      if (m && extname(f) === ext) out.push({ step: Number(m[1]), file: f });
    }
    return out.sort((a, b) => a.step - b.step);
  }

  /** Keeps a snapshot as the product (the library file is replaced atomically). */
  pick(job: Job, step: number): AdapterInfo {
    if (job.type !== 'train') throw new HttpError(409, 'only training jobs have snapshots');
    const req = job.request as unknown as TrainRequest;
    if (req.technique === 'dreambooth') throw new HttpError(409, 'DreamBooth runs keep no snapshots (each would be a whole model); train with snapshots on, or stop at the step you want');
    const ext = productExt(req);
    const snap = snapshotPath(join(this.data.jobDir(job.id), 'product', `${req.name}${ext}`), ext, step);
    if (!existsSync(snap)) throw new HttpError(404, `job ${job.id} has no snapshot at step ${step}: its snapshots are at ${this.snapshots(job).map((s) => s.step).join(', ') || 'no steps'}`, 'step');
    const lib = this.libraryPath(req);
    const tmp = `${lib}.tmp-${process.pid}`;
    copyFileSync(snap, tmp);
    renameSync(tmp, lib);
    const kind = req.technique as AdapterKind;
    return this.data.adapters(kind).find((a) => a.file === basename(lib))!;
  }
}

function productExt(r: Pick<TrainRequest, 'technique' | 'file_format'>): string {
  return r.technique === 'hypernetwork' || (r.technique === 'embedding' && r.file_format === 'pt') ? '.pt' : '.safetensors';
}

function parseExtraNetworksChecked(prompt: string) {
  try {
    return parseExtraNetworks(prompt);
  } catch (e) {
    throw new HttpError(400, `prompt: ${(e as Error).message}`, 'prompt');
  }
}

export const TRAIN_SETTING_NAMES = Object.keys(TRAIN_FIELDS).filter((k) => !PATH_SETTINGS.includes(k));
