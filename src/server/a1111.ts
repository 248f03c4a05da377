// The A1111-compatible subset under /sdapi/v1, with the shapes AUTOMATIC1111 v1.10 returns
// (modules/api/api.py and models.py), so existing clients work unchanged. Each route turns the
// request into the studio's own job and waits for it: A1111's API blocks, ours underneath does not.
// Where A1111 has a feature sdtune does not (hires fix, face restoration, scripts, inpainting
// masks), a request that turns it on gets a 422 naming it instead of a silently different image.
import { readFileSync } from 'node:fs';
import { basename, extname } from 'node:path';
import { readSafetensorsHeader } from '../formats/safetensors.ts';
import { inspectPath } from '../formats/inspect.ts';
import { DEFAULT_HYPERNETWORK_SIZES } from '../adapters/hypernetwork.ts';
import type { GenerateRequest, GenerateResult, Job, TrainRequest } from './api-types.ts';
import { ADAPTER_DIRS, checkName } from './data.ts';
import { Router, type Reply, type Req } from './http.ts';
import { HttpError } from './schema.ts';
import { VERSION } from './api.ts';
import type { Studio } from './studio.ts';

/** A1111's error body (api_middleware): {error, detail, body, errors}. */
export function a1111Error(status: number, message: string): Record<string, unknown> {
  if (status === 422) return { detail: [{ loc: ['body'], msg: message, type: 'value_error' }] };
  return { error: status >= 500 ? 'RuntimeError' : 'HTTPException', detail: message, body: '', errors: '' };
}

const SAMPLERS = [
  { name: 'DPM++ 2M', aliases: ['k_dpmpp_2m'], options: { scheduler: 'karras' }, ours: 'dpmpp_2m' },
  { name: 'Euler a', aliases: ['k_euler_a', 'k_euler_ancestral'], options: { uses_ensd: 'True' }, ours: 'euler_a' },
  { name: 'Euler', aliases: ['k_euler'], options: {}, ours: 'euler' },
  { name: 'DDIM', aliases: ['ddim'], options: {}, ours: 'ddim' },
] as const;

/** "DPM++ 2M Karras" → dpmpp_2m + karras; unknown names fall back to Euler, as A1111 does. */
function sampler(name: unknown, scheduler: unknown): { ours: GenerateRequest['sampler']; label: string; karras: boolean } {
  let n = typeof name === 'string' ? name.trim() : '';
  let karras = typeof scheduler === 'string' && scheduler.toLowerCase() === 'karras';
  if (/ karras$/i.test(n)) {
    karras = true;
    n = n.replace(/ karras$/i, '');
  }
  const hit = SAMPLERS.find((s) => s.name.toLowerCase() === n.toLowerCase() || (s.aliases as readonly string[]).includes(n)) ?? SAMPLERS[2];
  return { ours: hit.ours, label: hit.name, karras };
}

// The fields of A1111's StableDiffusionTxt2ImgProcessingAPI / Img2Img; anything else is refused.
const GEN_FIELDS = new Set(('prompt negative_prompt styles seed subseed subseed_strength seed_resize_from_h seed_resize_from_w sampler_name scheduler batch_size n_iter steps cfg_scale width height restore_faces tiling do_not_save_samples do_not_save_grid eta denoising_strength s_min_uncond s_churn s_tmax s_tmin s_noise override_settings override_settings_restore_afterwards refiner_checkpoint refiner_switch_at disable_extra_networks firstpass_image comments enable_hr firstphase_width firstphase_height hr_scale hr_upscaler hr_second_pass_steps hr_resize_x hr_resize_y hr_checkpoint_name hr_sampler_name hr_scheduler hr_prompt hr_negative_prompt force_task_id sampler_index script_name script_args send_images save_images alwayson_scripts infotext ' +
  'init_images resize_mode image_cfg_scale mask mask_blur_x mask_blur_y mask_blur mask_round inpainting_fill inpaint_full_res inpaint_full_res_padding inpainting_mask_invert initial_noise_multiplier latent_mask include_init_images').split(/\s+/));

function unsupported(b: Record<string, unknown>): string | null {
  if (b.enable_hr) return 'enable_hr (hires fix)';
  if (b.restore_faces) return 'restore_faces';
  if (b.tiling) return 'tiling';
  if (typeof b.subseed_strength === 'number' && b.subseed_strength > 0) return 'subseed_strength (variation seeds)';
  if (b.script_name) return `script_name (${String(b.script_name)})`;
  if (b.alwayson_scripts && typeof b.alwayson_scripts === 'object' && Object.keys(b.alwayson_scripts).length) return `alwayson_scripts (${Object.keys(b.alwayson_scripts).join(', ')})`;
  if (Array.isArray(b.styles) && b.styles.length) return 'styles';
  if (b.mask) return 'mask (inpainting)';
  if (b.refiner_checkpoint) return 'refiner_checkpoint';
  return null;
}

const num = (v: unknown, fallback: number): number => (typeof v === 'number' && Number.isFinite(v) ? v : fallback);

async function jsonBody(req: Req, limit = 64 << 20): Promise<Record<string, unknown>> {
  const b = await req.json(limit);
  if (typeof b !== 'object' || b === null || Array.isArray(b)) throw new HttpError(422, 'the body must be a JSON object');
  return b as Record<string, unknown>;
}

export function a1111Routes(s: Studio): { router: Router } {
  const router = new Router();
  const P = '/sdapi/v1';
  let lastTimestamp = '0';

  /** Titles, names, stems and short hashes all select a checkpoint (A1111's aliases). */
  const findCheckpoint = async (v: string): Promise<string> => {
    for (const m of await s.models()) {
      const stem = m.name.replace(/\.(safetensors|ckpt)$/i, '');
      if ([m.title, m.name, stem].includes(v) || m.title.endsWith(`[${v}]`)) return m.name;
    }
    throw new HttpError(500, `model '${v}' not found`);
  };

  const generate = async (b: Record<string, unknown>, img2img: boolean): Promise<Reply> => {
    for (const k of Object.keys(b)) if (!GEN_FIELDS.has(k) || (!img2img && ['init_images', 'mask', 'resize_mode', 'image_cfg_scale', 'inpainting_fill', 'include_init_images'].includes(k))) throw new HttpError(422, `unknown field ${JSON.stringify(k)}`);
    const no = unsupported(b);
    if (no) throw new HttpError(422, `${no} is not supported by sdtune; leave it off`);
    const over = (b.override_settings ?? {}) as Record<string, unknown>;
    const model = typeof over.sd_model_checkpoint === 'string' ? await findCheckpoint(over.sd_model_checkpoint) : s.currentModel();
    const sam = sampler(b.sampler_name ?? b.sampler_index, b.scheduler);
    const clip = num(over.CLIP_stop_at_last_layers, s.store.setting('CLIP_stop_at_last_layers', 1));
    let init: string | undefined;
    if (img2img) {
      const imgs = b.init_images;
      if (!Array.isArray(imgs) || imgs.length === 0) throw new HttpError(404, 'Init image not found');
      if (typeof imgs[0] !== 'string') throw new HttpError(422, 'init_images must be base64 strings');
      init = imgs[0];
    }
    const batch = Math.trunc(num(b.batch_size, 1));
    const iterations = Math.trunc(num(b.n_iter, 1));
    if (batch < 1 || batch > 16 || iterations < 1 || iterations > 16) throw new HttpError(422, 'batch_size and n_iter must be 1 to 16');
    const seed0 = Math.trunc(num(b.seed, -1));
    const seed = seed0 < 0 ? Math.floor(Math.random() * 2 ** 32) : seed0;
    const native = await s.nativeSide(model);
    const base: GenerateRequest = {
      prompt: typeof b.prompt === 'string' ? b.prompt : '',
      negative_prompt: typeof b.negative_prompt === 'string' ? b.negative_prompt : '',
      model,
      steps: Math.trunc(num(b.steps, 50)),
      cfg: num(b.cfg_scale, 7),
      width: Math.trunc(num(b.width, native)),
      height: Math.trunc(num(b.height, native)),
      batch,
      sampler: sam.ours,
      karras: sam.karras,
      // A1111's show_progress_every_n_steps default.
      preview_every: 10,
      ...(clip > 1 && { clip_skip: clip }),
      ...(init !== undefined && { init_image: init, strength: num(b.denoising_strength, 0.75) }),
    };
    if (base.steps! < 1 || base.steps! > 150) throw new HttpError(422, `steps must be 1 to 150 (got ${base.steps})`);
    if (base.width! < 8 || base.width! > 2048 || base.height! < 8 || base.height! > 2048) throw new HttpError(422, `width and height must be 8 to 2048 (got ${base.width}×${base.height})`);
    const d = new Date();
    lastTimestamp = d.toISOString().replace(/[-:T]/g, '').slice(0, 14);
    const results: GenerateResult['images'] = [];
    for (let i = 0; i < iterations; i++) {
      const job = await s.submitGenerate({ ...base, seed: seed + i * batch });
      const done = await s.queue.wait(job.id);
      if (done.status !== 'done') throw new HttpError(500, done.error ?? `generation ${done.status}`);
      results.push(...(done.result as GenerateResult).images);
    }
    const images = results.map((r) => readFileSync(s.data.inside('outputs', r.file)).toString('base64'));
    const hash = await s.hash(s.modelPath(model));
    const info = {
      prompt: base.prompt, all_prompts: results.map(() => base.prompt),
      negative_prompt: base.negative_prompt, all_negative_prompts: results.map(() => base.negative_prompt),
      seed: results[0]?.seed ?? seed, all_seeds: results.map((r) => r.seed), subseed: -1, all_subseeds: results.map(() => -1), subseed_strength: 0,
      width: base.width, height: base.height, sampler_name: sam.label, cfg_scale: base.cfg, steps: base.steps, batch_size: batch,
      restore_faces: false, face_restoration_model: null, sd_model_name: model.replace(/\.(safetensors|ckpt)$/i, ''), sd_model_hash: hash || null,
      sd_vae_name: null, sd_vae_hash: null, seed_resize_from_w: -1, seed_resize_from_h: -1, denoising_strength: init !== undefined ? base.strength : null,
      extra_generation_params: {}, index_of_first_image: 0, infotexts: results.map((r) => r.parameters), styles: [], job_timestamp: lastTimestamp,
      clip_skip: clip, is_using_inpainting_conditioning: false, version: `sdtune-${VERSION}`,
    };
    // A1111 echoes the request with its defaults filled in, not the resolved values.
    const parameters: Record<string, unknown> = { prompt: '', negative_prompt: '', styles: null, seed: -1, subseed: -1, subseed_strength: 0, sampler_name: null, scheduler: null, batch_size: 1, n_iter: 1, steps: 50, cfg_scale: 7, width: 512, height: 512, restore_faces: null, tiling: null, override_settings: null, sampler_index: 'Euler', script_name: null, script_args: [], send_images: true, save_images: false, alwayson_scripts: {}, ...b };
    if (img2img && !b.include_init_images) parameters.init_images = null;
    return { json: { images: b.send_images === false ? [] : images, parameters, info: JSON.stringify(info) } };
  };

  router.add('POST', `${P}/txt2img`, async (req) => generate(await jsonBody(req), false));
  router.add('POST', `${P}/img2img`, async (req) => generate(await jsonBody(req), true));

  router.add('GET', `${P}/options`, async () => {
    const current = (await s.models()).find((m) => m.name === s.currentModel())!;
    return { json: { sd_model_checkpoint: current.title, sd_checkpoint_hash: await s.hash(s.modelPath(current.name)), CLIP_stop_at_last_layers: s.store.setting('CLIP_stop_at_last_layers', 1), samples_format: 'png', outdir_samples: s.data.dir('outputs'), embeddings_dir: s.data.dir(ADAPTER_DIRS.embedding), hypernetwork_dir: s.data.dir(ADAPTER_DIRS.hypernetwork), lora_dir: s.data.dir(ADAPTER_DIRS.lora) } };
  });
  router.add('POST', `${P}/options`, async (req) => {
    const b = await jsonBody(req);
    const known = ['sd_model_checkpoint', 'CLIP_stop_at_last_layers', 'samples_format'];
    for (const k of Object.keys(b)) if (!known.includes(k)) throw new HttpError(422, `option ${JSON.stringify(k)} is not one sdtune has (it has ${known.join(', ')})`);
    if (b.samples_format !== undefined && b.samples_format !== 'png') throw new HttpError(422, 'samples_format: sdtune writes PNG');
    if (b.CLIP_stop_at_last_layers !== undefined) {
      const v = b.CLIP_stop_at_last_layers;
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 12) throw new HttpError(422, 'CLIP_stop_at_last_layers must be 1 to 12');
      s.store.setSetting('CLIP_stop_at_last_layers', v);
    }
    if (typeof b.sd_model_checkpoint === 'string') s.setCurrentModel(await findCheckpoint(b.sd_model_checkpoint));
    return { json: null };
  });
  router.add('GET', `${P}/sd-models`, async () => {
    const out = [];
    for (const m of await s.models()) {
      const path = s.modelPath(m.name);
      const h = await s.hash(path);
      out.push({ title: m.title, model_name: m.name.replace(/\.(safetensors|ckpt)$/i, ''), hash: h || null, sha256: h ? await s.sha256(path) : null, filename: path, config: null });
    }
    return { json: out };
  });
  router.add('GET', `${P}/samplers`, () => ({ json: SAMPLERS.map(({ name, aliases, options }) => ({ name, aliases, options })) }));
  router.add('GET', `${P}/loras`, () => ({
    json: s.data.adapters('lora').map((a) => {
      const path = s.adapterPath('lora', a.name);
      let metadata: Record<string, unknown> = {};
      if (/\.safetensors$/i.test(path)) {
        for (const [k, v] of Object.entries(readSafetensorsHeader(path).metadata)) {
          if (k === 'ssmd_cover_images') continue;
          try {
            metadata[k] = v.startsWith('{') ? JSON.parse(v) : v;
          } catch {
            metadata[k] = v;
          }
        }
      }
      return { name: a.name, alias: typeof metadata.ss_output_name === 'string' ? metadata.ss_output_name : a.name, path, metadata };
    }),
  }));
  router.add('GET', `${P}/embeddings`, async () => {
    const current = s.currentModel();
    const width = inspectPath(s.modelPath(current)).family === 'sd2' ? 1024 : null;
    const loaded: Record<string, unknown> = {};
    const skipped: Record<string, unknown> = {};
    for (const a of s.data.adapters('embedding')) {
      const r = inspectPath(s.adapterPath('embedding', a.name));
      const md = r.metadata;
      const item = { step: md.step !== undefined ? Number(md.step) : md['sdtune.step'] !== undefined ? Number(md['sdtune.step']) : null, sd_checkpoint: md.sd_checkpoint ?? md['sdtune.base_model_hash'] ?? null, sd_checkpoint_name: md.sd_checkpoint_name ?? md['sdtune.base_model'] ?? null, shape: r.embedding?.width ?? 0, vectors: r.embedding?.vectors ?? 0 };
      (width !== null && item.shape !== width ? skipped : loaded)[a.name] = item;
    }
    return { json: { loaded, skipped } };
  });
  router.add('GET', `${P}/hypernetworks`, () => ({ json: s.data.adapters('hypernetwork').map((a) => ({ name: a.name, path: s.adapterPath('hypernetwork', a.name) })) }));

  router.add('GET', `${P}/progress`, (req) => {
    const id = s.queue.runningId;
    const job: Job | null = id ? s.store.job(id) : null;
    const p = job?.progress;
    const frac = p && p.total > 0 ? p.step / p.total : 0;
    const started = job?.started ? Date.parse(job.started) : Date.now();
    const eta = frac > 0 ? ((Date.now() - started) / 1000) * (1 / frac - 1) : 0;
    return {
      json: {
        progress: job ? frac : 0,
        eta_relative: job ? eta : 0,
        state: { skipped: false, interrupted: s.queue.stopping, stopping_generation: false, job: job ? `${job.type} ${job.id}` : '', job_count: job ? 1 + s.queue.queuedCount() : 0, job_timestamp: lastTimestamp, job_no: 0, sampling_step: p?.step ?? 0, sampling_steps: p?.total ?? 0 },
        // A1111 sends the live preview as bare base64 unless skip_current_image=true.
        current_image: id && req.query.get('skip_current_image') !== 'true' ? s.queue.preview(id)?.png.toString('base64') ?? null : null,
        textinfo: p?.message ?? null,
      },
    };
  });
  router.add('POST', `${P}/interrupt`, () => {
    const id = s.queue.runningId;
    // A1111 answers {} whether or not anything was running (or it was just ending).
    if (id && s.store.job(id)?.status === 'running') s.queue.cancel(id);
    return { json: {} };
  });

  router.add('POST', `${P}/create/embedding`, async (req) => {
    const b = await jsonBody(req);
    const name = String(b.name ?? '').replace(/[^\p{L}\p{N}._\- ]/gu, '').trim();
    if (!name) throw new HttpError(422, 'name is required');
    checkName(name, 'name');
    const vectors = Math.trunc(num(b.num_vectors_per_token, 1));
    if (vectors < 1 || vectors > 75) throw new HttpError(422, 'num_vectors_per_token must be 1 to 75');
    const out = s.data.inside(ADAPTER_DIRS.embedding, `${name}.pt`);
    if (s.data.adapters('embedding').some((a) => a.name === name) && !b.overwrite_old) return { json: { info: `create embedding error: file ${out} already exists` } };
    const initText = typeof b.init_text === 'string' ? b.init_text : '*';
    const job = s.queue.submit('create-embedding', { name, task: { kind: 'create-embedding', model: s.modelPath(undefined), name, vectors, initText, out, device: s.device } });
    const done = await s.queue.wait(job.id);
    if (done.status !== 'done') return { json: { info: `create embedding error: ${done.error}` } };
    return { json: { info: `create embedding filename: ${out}` } };
  });
  router.add('POST', `${P}/create/hypernetwork`, async (req) => {
    const b = await jsonBody(req);
    const name = String(b.name ?? '').trim();
    if (!name) return { json: { info: 'create hypernetwork error: Name cannot be empty!' } };
    checkName(name, 'name');
    const out = s.data.inside(ADAPTER_DIRS.hypernetwork, `${name}.pt`);
    if (s.data.adapters('hypernetwork').some((a) => a.name === name) && !b.overwrite_old) return { json: { info: `create hypernetwork error: file ${out} already exists` } };
    const ls = typeof b.layer_structure === 'string' ? b.layer_structure.split(',').map(Number) : Array.isArray(b.layer_structure) ? b.layer_structure.map(Number) : null;
    if (!ls || ls.some((x) => !Number.isFinite(x)) || ls[0] !== 1 || ls[ls.length - 1] !== 1) throw new HttpError(422, 'layer_structure must be a list that starts and ends with 1, e.g. [1, 2, 1]');
    const sizes = Array.isArray(b.enable_sizes) ? b.enable_sizes.map(Number) : [...DEFAULT_HYPERNETWORK_SIZES];
    const dropout = b.use_dropout && typeof b.dropout_structure === 'string' ? b.dropout_structure.split(',').map(Number) : undefined;
    const settings = { sizes, layerStructure: ls, activation: typeof b.activation_func === 'string' ? b.activation_func : 'linear', layerNorm: b.add_layer_norm === true, dropoutStructure: dropout, weightInit: typeof b.weight_init === 'string' ? b.weight_init : 'Normal' };
    const job = s.queue.submit('create-hypernetwork', { name, task: { kind: 'create-hypernetwork', name, out, ...settings } });
    const done = await s.queue.wait(job.id);
    if (done.status !== 'done') return { json: { info: `create hypernetwork error: ${done.error}` } };
    // A1111's create_hypernetwork returns no path: its answer really says None.
    return { json: { info: 'create hypernetwork filename: None' } };
  });

  const train = async (req: Req, kind: 'embedding' | 'hypernetwork'): Promise<Reply> => {
    const b = await jsonBody(req);
    const name = String(b[`${kind}_name`] ?? '');
    let r: TrainRequest;
    try {
      const file = s.adapterPath(kind, name);
      const dataset = datasetOf(s, b.data_root);
      // A1111 continues the file create/embedding or create/hypernetwork made (or an earlier
      // run trained): `steps` is the total, counted from the step stored in the file.
      const done = fileStep(file);
      const total = Math.trunc(num(b.steps, 100));
      if (done >= total) return { json: { info: `train embedding complete: filename: ${file} error: None` } };
      const lr = shiftSchedule(String(b.learn_rate ?? (kind === 'embedding' ? '0.005' : '0.00001')), done);
      const first = Number(lr.split(/[,:]/)[0]);
      if (!Number.isFinite(first)) throw new HttpError(422, `learn_rate ${JSON.stringify(String(b.learn_rate))} is not a number or schedule`);
      const w = Math.trunc(num(b.training_width, await s.nativeSide(s.currentModel())));
      const h = Math.trunc(num(b.training_height, w));
      const template = typeof b.template_filename === 'string' ? basename(b.template_filename, extname(b.template_filename)) : undefined;
      const settings: Record<string, unknown> = {
        steps: total - done,
        lr: first,
        ...(lr.includes(':') && { lrSchedule: lr }),
        batchSize: Math.trunc(num(b.batch_size, 1)),
        gradAccumulation: Math.max(1, Math.trunc(num(b.gradient_step, 1))),
        resolution: Math.max(w, h),
        noBuckets: b.varsize !== true,
        shuffleCaptions: b.shuffle_tags === true,
        tagDropout: num(b.tag_drop_out, 0),
        ...(template && { templateName: template }),
        ...(b.clip_grad_mode === 'norm' && { maxGradNorm: Number(b.clip_grad_value ?? 1) }),
        ...(b.clip_grad_mode === 'disabled' && { maxGradNorm: 0 }),
        ...(num(b.save_embedding_every ?? b.save_hypernetwork_every, 0) > 0 && { checkpointEvery: Math.trunc(num(b.save_embedding_every ?? b.save_hypernetwork_every, 500)) }),
        ...(num(b.create_image_every, 0) > 0 && { sampleEvery: Math.trunc(num(b.create_image_every, 0)), samplePrompts: [typeof b.preview_prompt === 'string' && b.preview_prompt ? b.preview_prompt : name] }),
      };
      if (kind === 'embedding') settings.token = name;
      r = { technique: kind, dataset, name, settings, continue_from: name, overwrite: true, ...(kind === 'embedding' && { file_format: extname(file) === '.pt' ? 'pt' : 'safetensors' }) };
      const job = s.submitTrain(r);
      const ended = await s.queue.wait(job.id);
      const out = (ended.result as { product_path?: string } | null)?.product_path ?? '';
      return { json: { info: `train embedding complete: filename: ${out} error: ${ended.status === 'done' ? 'None' : ended.error}` } };
    } catch (e) {
      if (e instanceof HttpError && e.status !== 400 && e.status !== 404 && e.status !== 409) throw e;
      // A1111 answers 200 with the reason inside the sentence.
      return { json: { info: `train embedding complete: filename:  error: ${(e as Error).message}` } };
    }
  };
  router.add('POST', `${P}/train/embedding`, (req) => train(req, 'embedding'));
  router.add('POST', `${P}/train/hypernetwork`, (req) => train(req, 'hypernetwork'));
  return { router };
}

/** The optimizer steps an embedding or hypernetwork file has been trained (A1111's `step`; 0 when unrecorded). */
function fileStep(path: string): number {
  const md = inspectPath(path).metadata;
  const v = Number(md.step ?? md['sdtune.step'] ?? 0);
  return Number.isInteger(v) && v > 0 ? v : 0;
}

/**
 * A1111's schedule "0.005:100, 1e-3:1000, 1e-5" counts the file's steps; the run counts from 0. So
 * each piece's end moves back by the steps already done, and pieces that ended are dropped (past
 * the last end, its rate holds, as in lr.ts).
 */
export function shiftSchedule(lr: string, done: number): string {
  if (done === 0 || !lr.includes(':')) return lr;
  const pieces = lr.split(',').map((p) => p.trim()).filter((p) => p !== '').map((p) => {
    const [rate, until] = p.split(':').map((x) => x.trim());
    return { rate, until: until === undefined ? undefined : Number(until) };
  });
  const left = pieces.filter((p) => p.until === undefined || !(p.until <= done));
  if (left.length === 0) return pieces[pieces.length - 1].rate;
  return left.map((p) => (p.until === undefined ? p.rate : Number.isFinite(p.until) ? `${p.rate}:${p.until - done}` : `${p.rate}:${p.until}`)).join(', ');
}

/** A1111 takes a folder path; here it must be a dataset: its name, or a path inside DATA/datasets. */
function datasetOf(s: Studio, root: unknown): string {
  if (typeof root !== 'string' || !root) throw new HttpError(400, "Dataset directory doesn't exist (data_root is empty)");
  const base = s.data.dir('datasets');
  const name = root.startsWith('/') ? (root.startsWith(base + '/') ? root.slice(base.length + 1).replace(/\/+$/, '') : null) : root;
  if (name === null || name.includes('/')) throw new HttpError(400, `data_root ${root} is not a dataset of this studio: upload the pictures as a dataset and pass its name (or ${base}/NAME)`);
  s.data.existingDataset(name);
  return name;
}
