// The studio's typed API under /api: one table of routes, each with its request schema, from which
// both the validation and the OpenAPI document (GET /api/openapi.json) come. Handlers only check,
// read files and talk to the queue; tensor work is always a job for a worker.
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { basename, extname, join } from 'node:path';
import sharp from 'sharp';
import { writeFileAtomic } from '../formats/atomic.ts';
import { inspectPath } from '../formats/inspect.ts';
import { countTokens } from '../text/prompt.ts';
import { Dataset } from '../training/dataset.ts';
import { recommendStop } from '../training/meter.ts';
import type { StepRecord } from '../training/loop.ts';
import { TECHNIQUES } from '../training/config.ts';
import { SCHEDULER_NAMES } from '../sampling/schedulers.ts';
import type { AdapterKind, BucketPreview, DatasetDetail, DatasetImage, DatasetSummary, GenerateRequest, InspectInfo, JobDetail, SampleImage, StatusInfo, TrainRequest } from './api-types.ts';
import { ADAPTER_DIRS, IMAGE_EXT, checkName } from './data.ts';
import { fmtBytes, type Handler, type Reply, type Req, Router } from './http.ts';
import { HttpError, arr, bool, check, int, jsonSchema, num, obj, rec, str, type Schema } from './schema.ts';
import { STUDIO_LIMITS, TOY_MODEL_NAME, type Studio } from './studio.ts';

export const VERSION = '0.1.0';
export const UPLOAD_LIMIT = 20 << 20;
const GENERATE_LIMIT = 32 << 20;

const NAME_S = str({ min: 1, max: 80 });
const KIND_S = str({ enum: ['lora', 'embedding', 'hypernetwork'] });

export const SCHEMAS = {
  generate: obj({
    prompt: str({ max: 10_000, description: 'A1111 syntax: (emphasis:1.2), [from:to:when], AND, BREAK, <lora:NAME:W>, <hypernet:NAME:W>' }),
    negative_prompt: str({ max: 10_000 }),
    model: str({ max: 200 }),
    seed: int({ min: -1, max: 2 ** 32 - 1, description: '-1 = random' }),
    steps: int({ min: 1, max: STUDIO_LIMITS.genSteps }),
    sampler: str({ enum: SCHEDULER_NAMES }),
    karras: bool(),
    cfg: num({ min: 0, max: 30 }),
    width: int({ min: 8, max: STUDIO_LIMITS.genSide }),
    height: int({ min: 8, max: STUDIO_LIMITS.genSide }),
    batch: int({ min: 1, max: STUDIO_LIMITS.genBatch }),
    clip_skip: int({ min: 1, max: 12 }),
    loras: arr(obj({ name: NAME_S, weight: num({ min: -5, max: 5 }), te: num({ min: -5, max: 5 }) }, ['name', 'weight']), 16),
    hypernetworks: arr(obj({ name: NAME_S, weight: num({ min: -5, max: 5 }) }, ['name', 'weight']), 16),
    init_image: str({ max: GENERATE_LIMIT, description: 'img2img: base64 PNG, JPEG or WebP (a data: URL is fine)' }),
    strength: num({ min: 0, max: 1 }),
    preview_every: int({ min: 0, max: 1000, description: 'a live preview every N sampling steps (GET /api/jobs/{id}/preview); default 5, 0 = none' }),
  }, ['prompt']),
  train: obj({
    technique: str({ enum: TECHNIQUES }),
    dataset: NAME_S,
    name: NAME_S,
    model: str({ max: 200 }),
    validation_dataset: NAME_S,
    continue_from: { ...NAME_S, description: 'LoRA, embedding or hypernetwork: a library file of the same technique to continue training from (its weights, shape and step count)' },
    settings: rec('the settings of `sdtune train` (see `sdtune train TECHNIQUE --help`); paths are chosen by the server'),
    overwrite: bool('replace a library file of the same name'),
    file_format: str({ enum: ['safetensors', 'pt'], description: "embeddings: 'pt' is A1111's format" }),
  }, ['technique', 'dataset', 'name']),
  dataset: obj({ name: NAME_S }, ['name']),
  caption: obj({ caption: str({ max: 5000 }) }, ['caption']),
  pick: obj({ step: int({ min: 0 }) }, ['step']),
  convert: obj({ to: str({ enum: ['kohya', 'peft', 'safetensors', 'a1111-pt'] }), dtype: str({ enum: ['fp16', 'bf16', 'fp32'] }), model: str({ max: 200, description: 'LoRAs: the checkpoint whose module names to use (default: the current model)' }) }, ['to']),
  tokenize: obj({ prompt: str({ max: 10_000 }) }, ['prompt']),
  options: obj({ model: str({ max: 200 }) }, ['model']),
} satisfies Record<string, Schema>;

interface RouteDoc {
  method: string;
  path: string;
  summary: string;
  body?: keyof typeof SCHEMAS | 'image';
  status?: number;
}

const toInspect = (path: string): InspectInfo => {
  const r = inspectPath(path);
  return { format: r.format, kind: r.kind, family: r.family, tensors: r.tensors, parameters: r.parameters, bytes: r.bytes, dtypes: r.dtypes, metadata: r.metadata, messages: r.messages };
};

async function imageInfo(dir: string, dataset: string, file: string): Promise<DatasetImage> {
  const p = join(dir, file);
  const meta = await sharp(p).metadata().catch(() => null);
  const cap = join(dir, `${basename(file, extname(file))}.txt`);
  return {
    file,
    caption: existsSync(cap) ? readFileSync(cap, 'utf8') : null,
    width: meta?.width ?? 0,
    height: meta?.height ?? 0,
    bytes: statSync(p).size,
    url: `/api/datasets/${encodeURIComponent(dataset)}/images/${encodeURIComponent(file)}`,
  };
}

const imagesOf = (dir: string) => readdirSync(dir).filter((f) => IMAGE_EXT.test(f) && !f.startsWith('.')).sort();

export function apiRoutes(s: Studio): { router: Router; docs: RouteDoc[] } {
  const router = new Router();
  const docs: RouteDoc[] = [];
  const route = (method: string, path: string, summary: string, handler: Handler, o: { body?: RouteDoc['body']; status?: number } = {}) => {
    router.add(method, path, handler);
    docs.push({ method, path, summary, ...o });
  };
  const body = async <T>(req: Req, name: keyof typeof SCHEMAS, limit?: number): Promise<T> => check<T>(SCHEMAS[name], await req.json(limit));
  const kindOf = (k: string): AdapterKind => check<AdapterKind>(KIND_S, k, 'kind');

  route('GET', '/api/status', 'The server: version, data folder, device, the running job and the queue', (): Reply => {
    const st: StatusInfo = { version: VERSION, data: s.data.root, device: s.device, running: s.queue.runningId, queued: s.queue.queuedCount(), default_model: s.currentModel() };
    return { json: st };
  });
  route('GET', '/api/openapi.json', 'This document', () => ({ json: openApi(docs) }));
  route('POST', '/api/options', 'Set the current model', async (req) => {
    const b = await body<{ model: string }>(req, 'options');
    s.setCurrentModel(b.model);
    return { json: { model: s.currentModel() } };
  }, { body: 'options' });

  // models and adapters
  route('GET', '/api/models', 'Checkpoints: the embedded toy model and DATA/models', async () => ({ json: await s.models() }));
  route('GET', '/api/models/{name}', 'A checkpoint with what it is (header-only inspection)', async (req) => {
    const m = (await s.models()).find((x) => x.name === req.params.name);
    if (!m) throw new HttpError(404, `there is no model ${JSON.stringify(req.params.name)}`);
    return { json: { ...m, inspect: toInspect(s.modelPath(m.name)) } };
  });
  route('DELETE', '/api/models/{name}', 'Delete a checkpoint from DATA/models', (req) => {
    if (req.params.name === TOY_MODEL_NAME) throw new HttpError(409, 'the embedded toy model is part of sdtune and cannot be deleted');
    const p = s.modelPath(req.params.name);
    rmSync(p, { recursive: true, force: true });
    return { status: 204, empty: true };
  }, { status: 204 });
  route('GET', '/api/adapters', 'LoRAs, embeddings and hypernetworks (?kind= to filter)', (req) => {
    const k = req.query.get('kind');
    return { json: s.data.adapters(k ? kindOf(k) : undefined) };
  });
  route('GET', '/api/adapters/{kind}/{name}', 'An adapter with what it is', (req) => {
    const kind = kindOf(req.params.kind);
    const p = s.adapterPath(kind, req.params.name);
    return { json: { ...s.data.adapters(kind).find((a) => a.file === basename(p))!, inspect: toInspect(p) } };
  });
  route('DELETE', '/api/adapters/{kind}/{name}', 'Delete an adapter', (req) => {
    unlinkSync(s.adapterPath(kindOf(req.params.kind), req.params.name));
    return { status: 204, empty: true };
  }, { status: 204 });
  route('POST', '/api/adapters/{kind}/{name}/convert', 'Convert a LoRA (kohya ↔ PEFT) or an embedding (A1111 .pt ↔ safetensors): a job', async (req) => {
    const kind = kindOf(req.params.kind);
    const b = await body<{ to: string; dtype?: string; model?: string }>(req, 'convert');
    if (kind === 'hypernetwork') throw new HttpError(400, 'hypernetworks have one format (A1111 .pt): nothing to convert to');
    const okTo = kind === 'lora' ? ['kohya', 'peft'] : ['safetensors', 'a1111-pt'];
    if (!okTo.includes(b.to)) throw new HttpError(400, `a ${kind} converts to ${okTo.join(' or ')}`, 'to');
    const input = s.adapterPath(kind, req.params.name);
    const stem = basename(input, extname(input));
    const ext = b.to === 'a1111-pt' ? '.pt' : '.safetensors';
    const outName = `${stem}-${b.to}${ext}`;
    const output = s.data.inside(ADAPTER_DIRS[kind], outName);
    if (existsSync(output)) throw new HttpError(409, `${outName} already exists in ${ADAPTER_DIRS[kind]}/: delete it first`);
    return { status: 202, json: s.queue.submit('convert', { kind, name: req.params.name, to: b.to, dtype: b.dtype, task: { kind: 'convert', input, output, to: b.to, dtype: b.dtype, ...(kind === 'lora' && { model: s.modelPath(b.model) }) } }) };
  }, { body: 'convert', status: 202 });

  // datasets
  route('GET', '/api/datasets', 'Datasets (folders of images with .txt captions)', (): Reply => {
    const root = s.data.dir('datasets');
    const out: DatasetSummary[] = readdirSync(root).filter((d) => !d.startsWith('.') && statSync(join(root, d)).isDirectory()).sort().map((d) => {
      const imgs = imagesOf(join(root, d));
      return { name: d, images: imgs.length, captioned: imgs.filter((f) => existsSync(join(root, d, `${basename(f, extname(f))}.txt`))).length };
    });
    return { json: out };
  });
  route('POST', '/api/datasets', 'Create an empty dataset', async (req) => {
    const b = await body<{ name: string }>(req, 'dataset');
    const dir = s.data.dataset(b.name);
    if (existsSync(dir)) throw new HttpError(409, `dataset ${JSON.stringify(b.name)} already exists`, 'name');
    mkdirSync(dir);
    const d: DatasetDetail = { name: b.name, images: 0, captioned: 0, items: [] };
    return { status: 201, json: d };
  }, { body: 'dataset', status: 201 });
  route('GET', '/api/datasets/{name}', 'A dataset: images, sizes, captions', async (req) => {
    const dir = s.data.existingDataset(req.params.name);
    const items = await Promise.all(imagesOf(dir).map((f) => imageInfo(dir, req.params.name, f)));
    const d: DatasetDetail = { name: req.params.name, images: items.length, captioned: items.filter((i) => i.caption !== null).length, items };
    return { json: d };
  });
  route('DELETE', '/api/datasets/{name}', 'Delete a dataset and its files', (req) => {
    const dir = s.data.existingDataset(req.params.name);
    rmSync(dir, { recursive: true, force: true });
    return { status: 204, empty: true };
  }, { status: 204 });
  route('PUT', '/api/datasets/{name}/images/{file}', `Upload an image (raw body: PNG, JPEG or WebP, at most ${fmtBytes(UPLOAD_LIMIT)})`, async (req) => {
    const dir = s.data.existingDataset(req.params.name);
    const file = checkName(req.params.file, 'file name');
    if (!IMAGE_EXT.test(file)) throw new HttpError(415, `${file}: upload .png, .jpg or .webp images (captions go through PUT …/captions/{file})`, 'file');
    const type = String(req.headers['content-type'] ?? '');
    if (!/^image\/(png|jpeg|webp)$/i.test(type)) throw new HttpError(415, `${file}: Content-Type must be image/png, image/jpeg or image/webp (got ${type || 'none'})`);
    const bytes = await req.body(UPLOAD_LIMIT);
    const meta = await sharp(bytes).metadata().catch(() => null);
    if (!meta || !['png', 'jpeg', 'webp'].includes(meta.format ?? '')) throw new HttpError(415, `${file} is not a PNG, JPEG or WebP image (its bytes say ${meta?.format ?? 'something else'}); nothing was saved`);
    if ((meta.width ?? 0) * (meta.height ?? 0) > 16384 * 16384) throw new HttpError(413, `${file} is ${meta.width}×${meta.height}: too large to train on`);
    writeFileAtomic(s.data.inside('datasets', req.params.name, file), bytes);
    return { status: 201, json: await imageInfo(dir, req.params.name, file) };
  }, { body: 'image', status: 201 });
  route('GET', '/api/datasets/{name}/images/{file}', 'An image of a dataset', (req) => {
    s.data.existingDataset(req.params.name);
    const p = s.data.inside('datasets', req.params.name, checkName(req.params.file, 'file name'));
    if (!IMAGE_EXT.test(p) || !existsSync(p)) throw new HttpError(404, `dataset ${req.params.name} has no image ${req.params.file}`);
    return { file: p };
  });
  route('DELETE', '/api/datasets/{name}/images/{file}', 'Delete an image and its caption', (req) => {
    s.data.existingDataset(req.params.name);
    const file = checkName(req.params.file, 'file name');
    const p = s.data.inside('datasets', req.params.name, file);
    if (!IMAGE_EXT.test(file) || !existsSync(p)) throw new HttpError(404, `dataset ${req.params.name} has no image ${file}`);
    unlinkSync(p);
    rmSync(s.data.inside('datasets', req.params.name, `${basename(file, extname(file))}.txt`), { force: true });
    return { status: 204, empty: true };
  }, { status: 204 });
  route('PUT', '/api/datasets/{name}/captions/{file}', 'Set the caption of an image (its .txt beside it)', async (req) => {
    const dir = s.data.existingDataset(req.params.name);
    const file = checkName(req.params.file, 'file name');
    if (!existsSync(join(dir, file)) || !IMAGE_EXT.test(file)) throw new HttpError(404, `dataset ${req.params.name} has no image ${file}: upload it first`);
    const b = await body<{ caption: string }>(req, 'caption');
    writeFileAtomic(s.data.inside('datasets', req.params.name, `${basename(file, extname(file))}.txt`), b.caption.normalize('NFC'));
    return { json: await imageInfo(dir, req.params.name, file) };
  }, { body: 'caption' });
  route('GET', '/api/datasets/{name}/buckets', 'Aspect-ratio buckets of a dataset at a resolution (?resolution=, default: the current model’s side)', async (req) => {
    const dir = s.data.existingDataset(req.params.name);
    const resolution = check<number>(int({ min: 8, max: STUDIO_LIMITS.resolution }), Number(req.query.get('resolution') ?? (await s.nativeSide(s.currentModel()))), 'resolution');
    const ds = await Dataset.open({ dir, resolution, buckets: { enabled: true, step: Math.min(64, resolution) }, batchSize: 1, seed: 0, verify: false });
    const dry = ds.dryRun(1);
    const r: BucketPreview = { resolution, buckets: dry.buckets.map((b) => ({ width: b.width, height: b.height, images: b.images })), text: dry.text };
    return { json: r };
  });

  // generation, training, jobs
  route('POST', '/api/tokenize', "A1111's token counter (count/limit, 75 per chunk)", async (req) => {
    const b = await body<{ prompt: string }>(req, 'tokenize');
    try {
      const { tokens, limit } = countTokens(b.prompt);
      return { json: { count: tokens, limit, chunks: Math.max(1, limit / 75) } };
    } catch (e) {
      throw new HttpError(400, `prompt: ${(e as Error).message}`, 'prompt');
    }
  }, { body: 'tokenize' });
  route('POST', '/api/generate', 'txt2img / img2img: a job whose result lists the PNGs', async (req) => ({ status: 202, json: await s.submitGenerate(await body<GenerateRequest>(req, 'generate', GENERATE_LIMIT)) }), { body: 'generate', status: 202 });
  route('POST', '/api/preflight', 'Before training: steps, trainable parameters, ETA and memory measured on this machine (a job)', async (req) => ({ status: 202, json: s.submitPreflight(await body<TrainRequest>(req, 'train')) }), { body: 'train', status: 202 });
  route('POST', '/api/jobs', 'Start a training job (the same settings as `sdtune train`)', async (req) => ({ status: 201, json: s.submitTrain(await body<TrainRequest>(req, 'train')) }), { body: 'train', status: 201 });
  route('GET', '/api/jobs', 'Jobs, newest first', () => ({ json: s.store.jobs() }));
  route('GET', '/api/jobs/{id}', 'A job with its step log, the meter’s advice, snapshots and samples', (req) => {
    const job = s.store.job(req.params.id);
    if (!job) throw new HttpError(404, `there is no job ${JSON.stringify(req.params.id)}`);
    const records = s.store.records(job.id);
    const rec = recommendStop(records.map((r) => ({ ...r, epoch: 0, step_ms: 0 })) as StepRecord[]);
    const sampleDir = join(s.data.jobDir(job.id), 'samples');
    const samples: SampleImage[] = existsSync(sampleDir)
      ? readdirSync(sampleDir).filter((f) => /^step-\d+-\d+\.png$/.test(f)).sort().map((f) => ({ step: Number(/^step-(\d+)/.exec(f)![1]), url: `/files/jobs/${encodeURIComponent(job.id)}/samples/${encodeURIComponent(f)}` }))
      : [];
    const d: JobDetail = { ...job, records, recommendation: rec && { step: rec.step, verdict: rec.verdict, message: rec.message }, snapshots: s.snapshots(job), samples };
    return { json: d };
  });
  route('GET', '/api/jobs/{id}/preview', 'The newest live preview of a running generation (PNG; the batch side by side)', (req) => {
    const job = s.store.job(req.params.id);
    if (!job) throw new HttpError(404, `there is no job ${JSON.stringify(req.params.id)}`);
    const p = s.queue.preview(job.id);
    if (!p) throw new HttpError(404, job.status === 'running' ? `job ${job.id} has drawn no preview yet` : `job ${job.id} is ${job.status}: previews exist only while it samples (its pictures are in the result)`);
    return { bytes: p.png, type: 'image/png' };
  });
  route('POST', '/api/jobs/{id}/cancel', 'Cancel a job (a training job saves a checkpoint first and can resume)', (req) => ({ json: s.queue.cancel(req.params.id) }));
  route('POST', '/api/jobs/{id}/resume', 'Resume an interrupted, cancelled or failed training job from its last checkpoint', (req) => ({ json: s.queue.resume(req.params.id) }));
  route('POST', '/api/jobs/{id}/pick', 'Keep the snapshot of a step as the product', async (req) => {
    const job = s.store.job(req.params.id);
    if (!job) throw new HttpError(404, `there is no job ${JSON.stringify(req.params.id)}`);
    const b = await body<{ step: number }>(req, 'pick');
    return { json: s.pick(job, b.step) };
  }, { body: 'pick' });
  route('GET', '/api/outputs', 'Generated images, newest first, with their parameters', async () => ({ json: await s.outputs() }));
  route('GET', '/api/events', 'Server-sent events: job changes, progress and step records of every job', () => ({
    sse: (send) => {
      const on = (e: unknown) => send(e);
      s.queue.on('event', on);
      return () => s.queue.off('event', on);
    },
  }));
  route('GET', '/api/jobs/{id}/events', 'Server-sent events of one job', (req) => ({
    sse: (send) => {
      const on = (e: { type: string; id?: string; job?: { id: string } }) => {
        if ((e.id ?? e.job?.id) === req.params.id) send(e);
      };
      s.queue.on('event', on);
      return () => s.queue.off('event', on);
    },
  }));

  // files
  route('GET', '/files/outputs/{file}', 'A generated PNG', (req) => {
    const p = s.data.inside('outputs', checkName(req.params.file, 'file name'));
    if (!existsSync(p)) throw new HttpError(404, `there is no output ${req.params.file}`);
    return { file: p };
  });
  route('GET', '/files/jobs/{id}/samples/{file}', 'A sample image of a training job', (req) => {
    const p = s.data.inside('jobs', checkName(req.params.id, 'job id'), 'samples', checkName(req.params.file, 'file name'));
    if (!existsSync(p)) throw new HttpError(404, `job ${req.params.id} has no sample ${req.params.file}`);
    return { file: p };
  });
  return { router, docs };
}

export function openApi(docs: readonly RouteDoc[]): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const d of docs) {
    const op: Record<string, unknown> = { summary: d.summary, responses: { [String(d.status ?? 200)]: { description: 'success' }, '4XX': { description: 'bad request: {"error": sentence, "field"?: name}' } } };
    const params = [...d.path.matchAll(/\{(\w+)\}/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' } }));
    if (params.length) op.parameters = params;
    if (d.body === 'image') op.requestBody = { required: true, content: { 'image/png': {}, 'image/jpeg': {}, 'image/webp': {} } };
    else if (d.body) op.requestBody = { required: true, content: { 'application/json': { schema: jsonSchema(SCHEMAS[d.body]) } } };
    (paths[d.path] ??= {})[d.method.toLowerCase()] = op;
  }
  return { openapi: '3.1.0', info: { title: 'sdtune studio', version: VERSION, description: 'Fine-tune Stable Diffusion and generate images. A1111-compatible routes live under /sdapi/v1.' }, paths };
}
