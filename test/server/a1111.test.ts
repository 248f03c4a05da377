// The A1111-compatible subset, field by field against the shapes AUTOMATIC1111 v1.10 returns
// (modules/api/models.py): txt2img/img2img responses and their info JSON, options (switching the
// checkpoint), sd-models, samplers, loras, embeddings, hypernetworks, progress, interrupt, and
// the create/train routes with their one-sentence answers.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Hypernetwork } from '../../src/adapters/hypernetwork.ts';
import { decodePng } from '../../src/formats/png.ts';
import { tempDir } from '../helpers.ts';
import { conceptPictures, studio, uploadDataset, type Caller } from './helpers.ts';

const tmp = tempDir('sdtune-a1111-');
let s: Awaited<ReturnType<typeof studio>>;
let call: Caller;

before(async () => {
  s = await studio(join(tmp.dir, 'data'));
  call = s.call;
  await uploadDataset(call, 'hearts', conceptPictures(join(tmp.dir, 'pics'), 'subject', 6));
});
after(async () => {
  await s.close();
  tmp.cleanup();
});

const keys = (o: object) => Object.keys(o).sort();

test('txt2img and img2img: images, parameters echoed with defaults, info JSON', async () => {
  const r = await call<{ images: string[]; parameters: Record<string, unknown>; info: string }>('POST', '/sdapi/v1/txt2img', { prompt: 'a large red heart', negative_prompt: 'stripes', seed: 7, steps: 6, width: 32, height: 32, sampler_name: 'DPM++ 2M Karras', batch_size: 2, cfg_scale: 6 });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(keys(r.json), ['images', 'info', 'parameters']);
  assert.equal(r.json.images.length, 2);
  const png = decodePng(Buffer.from(r.json.images[0], 'base64'));
  assert.equal(png.width, 32);
  assert.match(png.text.parameters, /^a large red heart\nNegative prompt: stripes\nSteps: 6, Sampler: DPM\+\+ 2M Karras, CFG scale: 6, Seed: 7, Size: 32x32/);
  assert.equal(r.json.parameters.seed, 7);
  assert.equal(r.json.parameters.sampler_index, 'Euler');
  assert.equal(r.json.parameters.n_iter, 1);
  const info = JSON.parse(r.json.info);
  for (const k of ['prompt', 'all_prompts', 'negative_prompt', 'all_negative_prompts', 'seed', 'all_seeds', 'subseed', 'all_subseeds', 'subseed_strength', 'width', 'height', 'sampler_name', 'cfg_scale', 'steps', 'batch_size', 'restore_faces', 'face_restoration_model', 'sd_model_name', 'sd_model_hash', 'sd_vae_name', 'sd_vae_hash', 'seed_resize_from_w', 'seed_resize_from_h', 'denoising_strength', 'extra_generation_params', 'index_of_first_image', 'infotexts', 'styles', 'job_timestamp', 'clip_skip', 'is_using_inpainting_conditioning', 'version']) assert.ok(k in info, k);
  assert.equal(info.seed, 7);
  assert.equal(info.sampler_name, 'DPM++ 2M');
  assert.equal(info.sd_model_name, 'toy-sd');
  assert.match(info.sd_model_hash, /^[0-9a-f]{10}$/);
  assert.equal(info.infotexts.length, 2);
  assert.equal(info.infotexts[0], png.text.parameters);
  assert.match(info.job_timestamp, /^\d{14}$/);

  const i2i = await call<{ images: string[]; parameters: Record<string, unknown>; info: string }>('POST', '/sdapi/v1/img2img', { init_images: [r.json.images[0]], prompt: 'a large blue heart', denoising_strength: 0.5, steps: 6, seed: 1 });
  assert.equal(i2i.status, 200, i2i.text);
  assert.equal(i2i.json.parameters.init_images, null);
  assert.equal(JSON.parse(i2i.json.info).denoising_strength, 0.5);
  assert.equal((await call('POST', '/sdapi/v1/img2img', { prompt: 'x' })).status, 404);
  // Features sdtune does not have are refused by name, not ignored.
  const hr = await call<{ detail: { msg: string }[] }>('POST', '/sdapi/v1/txt2img', { prompt: 'x', enable_hr: true });
  assert.equal(hr.status, 422);
  assert.match(hr.json.detail[0].msg, /enable_hr \(hires fix\) is not supported/);
  const unknown = await call<{ detail: { msg: string }[] }>('POST', '/sdapi/v1/txt2img', { prompt: 'x', colour: 1 });
  assert.equal(unknown.status, 422);
});

test('options, sd-models, samplers, progress, interrupt', async () => {
  const models = await call<Record<string, unknown>[]>('GET', '/sdapi/v1/sd-models');
  assert.deepEqual(keys(models.json[0]), ['config', 'filename', 'hash', 'model_name', 'sha256', 'title']);
  assert.equal(models.json[0].model_name, 'toy-sd');
  assert.match(String(models.json[0].sha256), /^[0-9a-f]{64}$/);
  assert.equal(String(models.json[0].sha256).slice(0, 10), models.json[0].hash);
  const opts = await call<Record<string, unknown>>('GET', '/sdapi/v1/options');
  assert.equal(opts.json.sd_model_checkpoint, models.json[0].title);
  const set = await call('POST', '/sdapi/v1/options', { sd_model_checkpoint: 'toy-sd' });
  assert.equal(set.status, 200);
  assert.equal(set.text, 'null');
  const bad = await call<{ error: string; detail: string; body: string; errors: string }>('POST', '/sdapi/v1/options', { sd_model_checkpoint: 'nope.safetensors' });
  assert.equal(bad.status, 500);
  assert.deepEqual(keys(bad.json), ['body', 'detail', 'error', 'errors']);
  assert.match(bad.json.detail, /model 'nope\.safetensors' not found/);
  const samplers = await call<{ name: string; aliases: string[]; options: Record<string, string> }[]>('GET', '/sdapi/v1/samplers');
  assert.deepEqual(samplers.json.map((x) => x.name), ['DPM++ 2M', 'Euler a', 'Euler', 'DDIM']);
  assert.deepEqual(keys(samplers.json[0]), ['aliases', 'name', 'options']);
  const p = await call<{ progress: number; eta_relative: number; state: Record<string, unknown>; current_image: null; textinfo: unknown }>('GET', '/sdapi/v1/progress');
  assert.deepEqual(keys(p.json), ['current_image', 'eta_relative', 'progress', 'state', 'textinfo']);
  assert.deepEqual(keys(p.json.state), ['interrupted', 'job', 'job_count', 'job_no', 'job_timestamp', 'sampling_step', 'sampling_steps', 'skipped', 'stopping_generation']);
  const i = await call('POST', '/sdapi/v1/interrupt');
  assert.equal(i.status, 200);
  assert.equal(i.text, '{}');
});

test('create/embedding + train/embedding, create/hypernetwork + train/hypernetwork, and the lists', async () => {
  const ce = await call<{ info: string }>('POST', '/sdapi/v1/create/embedding', { name: 'sksheart', num_vectors_per_token: 1, overwrite_old: false, init_text: 'heart' });
  assert.equal(ce.json.info, `create embedding filename: ${join(s.studio.data.root, 'embeddings', 'sksheart.pt')}`);
  const again = await call<{ info: string }>('POST', '/sdapi/v1/create/embedding', { name: 'sksheart', num_vectors_per_token: 1, overwrite_old: false, init_text: 'heart' });
  assert.match(again.json.info, /^create embedding error: file .*sksheart\.pt already exists$/);
  const emb = await call<{ loaded: Record<string, Record<string, unknown>>; skipped: object }>('GET', '/sdapi/v1/embeddings');
  assert.deepEqual(keys(emb.json), ['loaded', 'skipped']);
  assert.deepEqual(keys(emb.json.loaded.sksheart), ['sd_checkpoint', 'sd_checkpoint_name', 'shape', 'step', 'vectors']);
  assert.equal(emb.json.loaded.sksheart.vectors, 1);
  assert.equal(emb.json.loaded.sksheart.step, 0);
  const te = await call<{ info: string }>('POST', '/sdapi/v1/train/embedding', { id_task: 't1', embedding_name: 'sksheart', learn_rate: '0.05', batch_size: 2, gradient_step: 1, data_root: 'hearts', log_directory: 'textual_inversion', training_width: 32, training_height: 32, varsize: false, steps: 12, clip_grad_mode: 'disabled', clip_grad_value: '0.1', shuffle_tags: false, tag_drop_out: 0, latent_sampling_method: 'once', use_weight: false, create_image_every: 0, save_embedding_every: 0, template_filename: 'subject_filewords.txt', save_image_with_stored_embedding: false, preview_from_txt2img: false });
  assert.equal(te.json.info, `train embedding complete: filename: ${join(s.studio.data.root, 'embeddings', 'sksheart.pt')} error: None`);
  const after = await call<{ loaded: Record<string, { step: number }> }>('GET', '/sdapi/v1/embeddings');
  assert.equal(after.json.loaded.sksheart.step, 12);
  // As in A1111, training continues the file and `steps` is the total: 12 more steps than none, 15 three more.
  const embFile = join(s.studio.data.root, 'embeddings', 'sksheart.pt');
  const at12 = readFileSync(embFile);
  const again12 = await call<{ info: string }>('POST', '/sdapi/v1/train/embedding', { embedding_name: 'sksheart', learn_rate: '0.05', data_root: 'hearts', training_width: 32, steps: 12, template_filename: 'subject_filewords.txt' });
  assert.equal(again12.json.info, `train embedding complete: filename: ${embFile} error: None`);
  assert.deepEqual(readFileSync(embFile), at12, 'already trained to 12 steps: the file is untouched');
  const to15 = await call<{ info: string }>('POST', '/sdapi/v1/train/embedding', { embedding_name: 'sksheart', learn_rate: '0.05:13, 0.01', data_root: 'hearts', training_width: 32, steps: 15, template_filename: 'subject_filewords.txt' });
  assert.equal(to15.json.info, `train embedding complete: filename: ${embFile} error: None`);
  const more = s.studio.store.jobs({ status: ['done'] }).find((j) => j.type === 'train')!;
  assert.equal(more.progress?.total, 3, 'three steps trained, from the file');
  assert.equal(more.request.continue_from, 'sksheart');
  assert.deepEqual((more.request.settings as Record<string, unknown>).lrSchedule, '0.05:1, 0.01', 'the schedule counted on from step 12');
  const at15 = await call<{ loaded: Record<string, { step: number }> }>('GET', '/sdapi/v1/embeddings');
  assert.equal(at15.json.loaded.sksheart.step, 15);
  const outside = await call<{ info: string }>('POST', '/sdapi/v1/train/embedding', { embedding_name: 'sksheart', data_root: '/etc', steps: 1 });
  assert.match(outside.json.info, /^train embedding complete: filename: {2}error: data_root \/etc is not a dataset of this studio/);

  const ch = await call<{ info: string }>('POST', '/sdapi/v1/create/hypernetwork', { name: 'outline', enable_sizes: [64], layer_structure: [1, 2, 1], activation_func: 'relu', weight_init: 'Normal', add_layer_norm: false, use_dropout: false, overwrite_old: false });
  assert.equal(ch.json.info, 'create hypernetwork filename: None');
  const hn = await call<{ name: string; path: string }[]>('GET', '/sdapi/v1/hypernetworks');
  assert.deepEqual(hn.json, [{ name: 'outline', path: join(s.studio.data.root, 'hypernetworks', 'outline.pt') }]);
  const th = await call<{ info: string }>('POST', '/sdapi/v1/train/hypernetwork', { id_task: 't2', hypernetwork_name: 'outline', learn_rate: '0.005', batch_size: 2, gradient_step: 1, data_root: join(s.studio.data.root, 'datasets', 'hearts'), log_directory: 'x', training_width: 32, training_height: 32, varsize: false, steps: 8, clip_grad_mode: 'disabled', clip_grad_value: '0.1', shuffle_tags: false, tag_drop_out: 0, latent_sampling_method: 'once', use_weight: false, create_image_every: 0, save_hypernetwork_every: 0, template_filename: 'hypernetwork.txt', preview_from_txt2img: false });
  assert.equal(th.json.info, `train embedding complete: filename: ${join(s.studio.data.root, 'hypernetworks', 'outline.pt')} error: None`);
  const hnFile = join(s.studio.data.root, 'hypernetworks', 'outline.pt');
  const trained = Hypernetwork.fromFile(hnFile);
  assert.equal(trained.step, 8);
  assert.deepEqual(trained.settings.layerStructure, [1, 2, 1]);
  assert.equal(trained.settings.activation, 'relu', 'the structure create/hypernetwork wrote');
  trained.dispose();
  const th10 = await call<{ info: string }>('POST', '/sdapi/v1/train/hypernetwork', { hypernetwork_name: 'outline', learn_rate: '0.005', batch_size: 2, data_root: 'hearts', training_width: 32, steps: 10, template_filename: 'hypernetwork.txt' });
  assert.equal(th10.json.info, `train embedding complete: filename: ${hnFile} error: None`);
  const h10 = Hypernetwork.fromFile(hnFile);
  assert.equal(h10.step, 10);
  h10.dispose();

  const loras = await call<unknown[]>('GET', '/sdapi/v1/loras');
  assert.deepEqual(loras.json, []);
});
