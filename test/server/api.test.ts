// The studio's typed API over real HTTP on localhost: datasets, generation, a LoRA trained on the
// toy model and used, snapshots, cancel and resume, a crashed worker, and bad input (malformed
// JSON, unknown fields, absurd steps, a file that is not an image, a 500 MB body, '../' in names):
// clear 4xx, nothing written, the server still up; a job's warnings (a damaged image) are kept with
// it and sent as events, also in a studio.db from before warnings existed.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { decodePng } from '../../src/formats/png.ts';
import { readSafetensorsHeader } from '../../src/formats/safetensors.ts';
import { tempDir } from '../helpers.ts';
import { QUICK_LORA, conceptPictures, studio, uploadDataset, waitJob, type Caller } from './helpers.ts';
import type { DatasetDetail, GenerateResult, Job, JobDetail, JobEvent } from '../../src/server/api-types.ts';
import { startStudio } from '../../src/server/server.ts';
import { Store } from '../../src/server/db.ts';
import Database from 'better-sqlite3';

const tmp = tempDir('sdtune-studio-');
let s: Awaited<ReturnType<typeof studio>>;
let call: Caller;

before(async () => {
  s = await studio(join(tmp.dir, 'data'));
  call = s.call;
  await uploadDataset(call, 'outline', conceptPictures(join(tmp.dir, 'pics')));
});
after(async () => {
  await s.close();
  tmp.cleanup();
});

test('status, models and the OpenAPI document', async () => {
  const st = await call<{ default_model: string; running: null }>('GET', '/api/status');
  assert.equal(st.status, 200);
  assert.equal(st.json.default_model, 'toy-sd.safetensors');
  const models = await call<{ name: string; family: string; builtin: boolean; title: string }[]>('GET', '/api/models');
  assert.deepEqual(models.json.map((m) => [m.name, m.family, m.builtin]), [['toy-sd.safetensors', 'toy', true]]);
  assert.match(models.json[0].title, /^toy-sd\.safetensors \[[0-9a-f]{10}\]$/);
  const doc = await call<{ openapi: string; paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema?: { required?: string[]; additionalProperties?: boolean } }> } }>> }>('GET', '/api/openapi.json');
  assert.equal(doc.json.openapi, '3.1.0');
  for (const p of ['/api/jobs', '/api/generate', '/api/datasets/{name}/images/{file}', '/api/jobs/{id}/resume', '/api/events']) assert.ok(doc.json.paths[p], p);
  const train = doc.json.paths['/api/jobs'].post.requestBody!.content['application/json'].schema!;
  assert.deepEqual(train.required, ['technique', 'dataset', 'name']);
  assert.equal(train.additionalProperties, false);
});

test('datasets: uploads, captions, buckets', async () => {
  const d = await call<DatasetDetail>('GET', '/api/datasets/outline');
  assert.equal(d.json.images, 6);
  assert.equal(d.json.captioned, 6);
  assert.equal(d.json.items[0].width, 32);
  assert.match(d.json.items[0].caption!, /^a (small|large) \w+ \w+/);
  const img = await fetch(s.url + d.json.items[0].url);
  assert.equal(img.headers.get('content-type'), 'image/png');
  const u = await call<{ caption: string }>('PUT', `/api/datasets/outline/captions/${d.json.items[0].file}`, { caption: 'e\u0301dition, café ✓' });
  assert.equal(u.json.caption, 'édition, café ✓'); // NFC
  const b = await call<{ buckets: { width: number; height: number; images: number }[] }>('GET', '/api/datasets/outline/buckets');
  assert.deepEqual(b.json.buckets, [{ width: 32, height: 32, images: 6 }]);
});

test('bad input: clear 4xx, nothing written, server up', async () => {
  const before = readdirSync(join(s.studio.data.root, 'datasets', 'outline')).sort();
  const cases: [string, string, unknown, number, RegExp, Record<string, string>?][] = [
    ['POST', '/api/jobs', '{"technique": "lora",', 400, /not valid JSON/],
    ['POST', '/api/jobs', { technique: 'lora', dataset: 'outline', name: 'x', colour: 'red' }, 400, /unknown field "colour"/],
    ['POST', '/api/jobs', { technique: 'lora', dataset: 'outline', name: 'x', settings: { steps: 1e9 } }, 400, /steps must be at most/],
    ['POST', '/api/jobs', { technique: 'lora', dataset: 'outline', name: 'x', settings: { stepz: 10 } }, 400, /unknown setting "stepz"/],
    ['POST', '/api/jobs', { technique: 'lora', dataset: 'outline', name: 'x', settings: { out: '/etc/passwd' } }, 400, /server chooses paths/],
    ['POST', '/api/jobs', { technique: 'lora', dataset: '../../etc', name: 'x' }, 400, /not allowed/],
    ['POST', '/api/jobs', { technique: 'lora', dataset: 'outline', name: 'x', settings: { initFrom: '/etc/passwd' } }, 400, /^settings\.initFrom: the server chooses paths; use continue_from \(the name of a library file\)$/],
    ['POST', '/api/jobs', { technique: 'dreambooth', dataset: 'outline', name: 'x', continue_from: 'outline', settings: { token: 'sks' } }, 400, /^continue_from continues a LoRA, embedding or hypernetwork; DreamBooth trains the whole model, so pick the trained checkpoint as the model instead$/],
    ['POST', '/api/jobs', { technique: 'lora', dataset: 'outline', name: 'x', continue_from: 'nope' }, 404, /there is no lora called "nope" in lora\//],
    ['POST', '/api/jobs', { technique: 'lora', dataset: 'outline', name: '../evil' }, 400, /not allowed/],
    ['POST', '/api/jobs', { technique: 'magic', dataset: 'outline', name: 'x' }, 400, /technique must be one of dreambooth, lora, embedding, hypernetwork/],
    ['POST', '/api/generate', { prompt: 'a heart', width: 100000 }, 400, /width must be at most 2048/],
    ['POST', '/api/generate', { prompt: 'a heart', steps: 0 }, 400, /steps must be at least 1/],
    ['POST', '/api/generate', { prompt: 'a heart', width: 33, height: 32 }, 400, /multiples of 8/],
    ['POST', '/api/generate', { prompt: '<lora:nope:1> a heart' }, 404, /no lora called "nope"/],
    ['POST', '/api/generate', { prompt: 'x', init_image: 'bm90IGFuIGltYWdlIGF0IGFsbA==' }, 400, /init_image cannot be read/],
    ['PUT', '/api/datasets/outline/images/fake.png', new TextEncoder().encode('#!/bin/sh\necho not an image\n'), 415, /fake\.png is not a PNG, JPEG or WebP image/, { 'content-type': 'image/png' }],
    ['PUT', '/api/datasets/outline/images/run.sh', new Uint8Array([1, 2, 3]), 415, /upload \.png, \.jpg or \.webp/, { 'content-type': 'image/png' }],
    ['PUT', '/api/datasets/outline/images/..%2F..%2Fstudio.db', new Uint8Array([1]), 400, /not allowed/, { 'content-type': 'image/png' }],
    ['GET', '/api/datasets/..%2F..%2F..%2Fetc', undefined, 400, /not allowed/],
    ['GET', '/files/outputs/..%2Fstudio.db', undefined, 400, /not allowed/],
    ['POST', '/api/datasets', { name: '.hidden' }, 400, /not allowed/],
    ['POST', '/api/datasets', { name: 'outline' }, 409, /already exists/],
    ['DELETE', '/api/models/toy-sd.safetensors', undefined, 409, /cannot be deleted/],
    ['GET', '/api/jobs/nope', undefined, 404, /no job "nope"/],
    ['PATCH', '/api/jobs', undefined, 405, /takes POST, GET, not PATCH/],
    ['POST', '/api/jobs', 'technique=lora', 415, /send JSON/, { 'content-type': 'application/x-www-form-urlencoded' }],
  ];
  for (const [method, path, body, status, msg, headers] of cases) {
    const r = await call<{ error: string }>(method, path, body, headers);
    assert.equal(r.status, status, `${method} ${path}: ${r.text}`);
    assert.match(r.json.error, msg, `${method} ${path}`);
  }
  // A 500 MB body is refused from its Content-Length, before it is read.
  const big = await new Promise<{ status: number; body: string }>((res, rej) => {
    const req = request(`${s.url}/api/datasets/outline/images/huge.png`, { method: 'PUT', headers: { 'content-type': 'image/png', 'content-length': String(500 << 20) } }, (r) => {
      let b = '';
      r.on('data', (c) => (b += c));
      r.on('end', () => res({ status: r.statusCode!, body: b }));
    });
    req.on('error', rej);
    req.write(Buffer.alloc(1 << 16));
  });
  assert.equal(big.status, 413);
  assert.match(JSON.parse(big.body).error, /500\.0 MB; the limit here is 20\.0 MB/);
  assert.deepEqual(readdirSync(join(s.studio.data.root, 'datasets', 'outline')).sort(), before);
  assert.equal(s.studio.store.jobs().filter((j) => j.type === 'train').length, 0);
  assert.equal((await call('GET', '/api/status')).status, 200);
});

test('generate: a job whose PNGs carry the parameters', async () => {
  const r = await call<Job>('POST', '/api/generate', { prompt: 'a large red heart in the center, on a blue background', steps: 8, seed: 5, batch: 2 });
  assert.equal(r.status, 202);
  const done = await waitJob(call, r.json.id);
  assert.equal(done.status, 'done', done.error ?? '');
  const g = done.result as GenerateResult;
  assert.equal(g.images.length, 2);
  const png = decodePng(readFileSync(join(s.studio.data.root, 'outputs', g.images[0].file)));
  assert.equal(png.width, 32);
  assert.match(png.text.parameters, /^a large red heart in the center, on a blue background\nSteps: 8, Sampler: Euler a, CFG scale: 7\.5, Seed: 5, Size: 32x32, Model hash: [0-9a-f]{10}, Model: toy-sd/);
  const outs = await call<{ file: string; parameters: string }[]>('GET', '/api/outputs');
  assert.ok(outs.json.some((o) => o.file === g.images[0].file && o.parameters === png.text.parameters));
});

test('train a LoRA, keep a snapshot, generate with it', async () => {
  const r = await call<Job>('POST', '/api/jobs', { technique: 'lora', dataset: 'outline', name: 'outline-lora', settings: QUICK_LORA });
  assert.equal(r.status, 201, r.text);
  // The same name again while it trains is refused.
  assert.equal((await call('POST', '/api/jobs', { technique: 'lora', dataset: 'outline', name: 'outline-lora', settings: QUICK_LORA })).status, 409);
  const done = await waitJob(call, r.json.id);
  assert.equal(done.status, 'done', done.error ?? '');
  const lib = join(s.studio.data.root, 'lora', 'outline-lora.safetensors');
  const h = readSafetensorsHeader(lib);
  assert.ok(h.entries.some((e) => e.key.startsWith('lora_unet_')), 'kohya keys');
  const d = await call<JobDetail>('GET', `/api/jobs/${r.json.id}`);
  assert.equal(d.json.records.length, 30);
  assert.deepEqual(d.json.records.filter((x) => x.val_loss !== undefined).map((x) => x.step), [10, 20, 30]);
  // The meter's per-timestep curves are kept with the record (the advice reads them).
  assert.equal(d.json.records[9].val_by_t?.length, 5);
  assert.equal(d.json.records[8].val_by_t, undefined);
  assert.deepEqual(d.json.snapshots.map((x) => x.step), [10, 20, 30]);
  assert.ok(d.json.recommendation && [10, 20, 30].includes(d.json.recommendation.step));
  const picked = await call<{ name: string; bytes: number }>('POST', `/api/jobs/${r.json.id}/pick`, { step: 10 });
  assert.equal(picked.status, 200, picked.text);
  const snap = readFileSync(join(s.studio.data.root, 'jobs', r.json.id, 'product', 'outline-lora-step000010.safetensors'));
  assert.deepEqual(readFileSync(lib), snap);
  assert.equal((await call('POST', `/api/jobs/${r.json.id}/pick`, { step: 15 })).status, 404);
  // The library lists it and generation uses it (its name lands in the parameters).
  const ad = await call<{ name: string; kind: string }[]>('GET', '/api/adapters?kind=lora');
  assert.deepEqual(ad.json.map((a) => a.name), ['outline-lora']);
  const inspect = await call<{ inspect: { kind: string } }>('GET', '/api/adapters/lora/outline-lora');
  assert.equal(inspect.json.inspect.kind, 'lora-kohya');
  const g = await call<Job>('POST', '/api/generate', { prompt: 'a large red heart', steps: 6, seed: 1, loras: [{ name: 'outline-lora', weight: 0.8 }] });
  const gd = await waitJob(call, g.json.id);
  assert.match((gd.result as GenerateResult).images[0].parameters, /LoRA: "outline-lora: 0\.8"/);
  // Continued from the library file: the run starts from it and keeps its rank (not the settings').
  const more = await call<Job>('POST', '/api/jobs', { technique: 'lora', dataset: 'outline', name: 'outline-lora-more', continue_from: 'outline-lora', settings: { ...QUICK_LORA, steps: 4, validateEvery: 4, rank: 2 } });
  assert.equal(more.status, 201, more.text);
  const moreDone = await waitJob(call, more.json.id);
  assert.equal(moreDone.status, 'done', moreDone.error ?? '');
  const moreHeader = readSafetensorsHeader(join(s.studio.data.root, 'lora', 'outline-lora-more.safetensors'));
  assert.equal(moreHeader.metadata.ss_network_dim, h.metadata.ss_network_dim);
  assert.deepEqual(moreHeader.entries.map((e) => e.key).sort(), h.entries.map((e) => e.key).sort());
  assert.ok((await call<JobDetail>('GET', `/api/jobs/${more.json.id}`)).json.warnings.some((m) => m.startsWith('continuing the LoRA outline-lora.safetensors:')));
  // Training again under that name needs overwrite.
  const again = await call<{ error: string }>('POST', '/api/jobs', { technique: 'lora', dataset: 'outline', name: 'outline-lora', settings: QUICK_LORA });
  assert.equal(again.status, 409);
  assert.match(again.json.error, /already exists in the library/);
});

test('cancel saves a checkpoint; resume finishes the run', async () => {
  const r = await call<Job>('POST', '/api/jobs', { technique: 'lora', dataset: 'outline', name: 'cancelled', settings: { ...QUICK_LORA, steps: 120, checkpointEvery: 5 } });
  await waitJob(call, r.json.id, (j) => (j.progress?.step ?? 0) >= 12);
  const c = await call<Job>('POST', `/api/jobs/${r.json.id}/cancel`);
  assert.equal(c.status, 200);
  const stopped = await waitJob(call, r.json.id);
  assert.equal(stopped.status, 'cancelled');
  assert.match(stopped.error!, /resume/);
  const step = stopped.progress!.step;
  assert.ok(step < 120);
  assert.ok(readdirSync(join(s.studio.data.root, 'jobs', r.json.id, 'checkpoints')).length > 0);
  const res = await call<Job>('POST', `/api/jobs/${r.json.id}/resume`);
  assert.equal(res.status, 200, res.text);
  const done = await waitJob(call, r.json.id);
  assert.equal(done.status, 'done', done.error ?? '');
  const d = await call<JobDetail>('GET', `/api/jobs/${r.json.id}`);
  assert.deepEqual(d.json.records.map((x) => x.step), Array.from({ length: 120 }, (_, i) => i + 1));
  assert.ok(existsSync(join(s.studio.data.root, 'lora', 'cancelled.safetensors')));
  assert.equal((await call('POST', `/api/jobs/${r.json.id}/resume`)).status, 409);
});

test('a picture is made while a training job runs (two lanes); a preflight waits for the training', async () => {
  const t = await call<Job>('POST', '/api/jobs', { technique: 'lora', dataset: 'outline', name: 'beside', settings: { ...QUICK_LORA, steps: 2000 } });
  try {
    await waitJob(call, t.json.id, (j) => (j.progress?.step ?? 0) >= 3);
    const pre = await call<Job>('POST', '/api/preflight', { technique: 'lora', dataset: 'outline', name: 'beside-check', settings: QUICK_LORA });
    const g = await call<Job>('POST', '/api/generate', { prompt: 'a heart', steps: 4, seed: 2 });
    assert.deepEqual(s.studio.queue.runningIds.sort(), [t.json.id, g.json.id].sort(), 'both lanes busy');
    const made = await waitJob(call, g.json.id);
    assert.equal(made.status, 'done', made.error ?? '');
    assert.equal(s.studio.store.job(t.json.id)!.status, 'running', 'the training went on meanwhile');
    assert.equal(s.studio.store.job(pre.json.id)!.status, 'queued', 'the preflight is in the training lane, behind the run');
    await call('POST', `/api/jobs/${t.json.id}/cancel`);
    assert.equal((await waitJob(call, t.json.id)).status, 'cancelled');
    assert.equal((await waitJob(call, pre.json.id)).status, 'done');
  } finally {
    if (s.studio.store.job(t.json.id)!.status === 'running') await call('POST', `/api/jobs/${t.json.id}/cancel`);
    await waitJob(call, t.json.id);
  }
});

test('--serial: one job at a time, generation waits for the training run', async () => {
  const one = await studio(join(tmp.dir, 'serial'), { serial: true });
  try {
    await uploadDataset(one.call, 'outline', conceptPictures(join(tmp.dir, 'serial-pics'), 'style', 4));
    const t = await one.call<Job>('POST', '/api/jobs', { technique: 'lora', dataset: 'outline', name: 'first', settings: { ...QUICK_LORA, steps: 2000 } });
    await waitJob(one.call, t.json.id, (j) => (j.progress?.step ?? 0) >= 3);
    const g = await one.call<Job>('POST', '/api/generate', { prompt: 'a heart', steps: 4 });
    await new Promise((res) => setTimeout(res, 1500));
    assert.equal(one.studio.store.job(g.json.id)!.status, 'queued');
    await one.call('POST', `/api/jobs/${t.json.id}/cancel`);
    assert.equal((await waitJob(one.call, g.json.id)).status, 'done');
  } finally {
    await one.close();
  }
});

test('a worker that dies marks its job failed with the reason; the server goes on', async () => {
  const r = await call<Job>('POST', '/api/jobs', { technique: 'lora', dataset: 'outline', name: 'killed', settings: { ...QUICK_LORA, steps: 2000 } });
  await waitJob(call, r.json.id, (j) => (j.progress?.step ?? 0) >= 3);
  process.kill(s.studio.queue.workerPid!, 'SIGKILL');
  const failed = await waitJob(call, r.json.id);
  assert.equal(failed.status, 'failed');
  assert.match(failed.error!, /the worker process died \(signal SIGKILL\), probably out of memory/);
  const g = await call<Job>('POST', '/api/generate', { prompt: 'a heart', steps: 4 });
  assert.equal((await waitJob(call, g.json.id)).status, 'done');
});

test('listening beyond localhost needs --auth; auth is checked', async () => {
  await assert.rejects(startStudio({ data: join(tmp.dir, 'd2'), port: 0, host: '0.0.0.0' }), /add --auth user:pass \(or --insecure/);
  const a = await studio(join(tmp.dir, 'd3'), { auth: 'ann:s3cret' });
  try {
    assert.equal((await a.call('GET', '/api/status')).status, 401);
    assert.equal((await a.call('GET', '/api/status', undefined, { authorization: `Basic ${Buffer.from('ann:wrong').toString('base64')}` })).status, 401);
    assert.equal((await a.call('GET', '/api/status', undefined, { authorization: `Basic ${Buffer.from('ann:s3cret').toString('base64')}` })).status, 200);
  } finally {
    await a.close();
  }
  // No CORS: other sites' pages cannot read the API.
  const r = await fetch(`${s.url}/api/status`, { headers: { origin: 'http://evil.example' } });
  assert.equal(r.headers.get('access-control-allow-origin'), null);
});

test('live events over SSE, and a LoRA converted to PEFT by a job', async () => {
  let g!: { json: Job };
  const seen = (await collectEvents(
    async () => {
      g = await call<Job>('POST', '/api/generate', { prompt: 'a heart', steps: 5 });
    },
    (ev) => ev.some((e) => e.type === 'job' && e.job.id === g?.json.id && e.job.status === 'done'),
  )) as { type: string; id?: string; job?: Job }[];
  const mine = seen.filter((e) => (e.id ?? e.job?.id) === g.json.id);
  assert.deepEqual([...new Set(mine.filter((e) => e.type === 'job').map((e) => e.job!.status))], ['queued', 'running', 'done']);
  assert.equal(mine.filter((e) => e.type === 'progress').length, 5);

  const c = await call<Job>('POST', '/api/adapters/lora/outline-lora/convert', { to: 'peft' });
  assert.equal(c.status, 202, c.text);
  const cj = await waitJob(call, c.json.id);
  assert.equal(cj.status, 'done', cj.error ?? '');
  const h = readSafetensorsHeader(join(s.studio.data.root, 'lora', 'outline-lora-peft.safetensors'));
  assert.ok(h.entries.some((e) => /lora_A/.test(e.key)), 'PEFT keys');
  assert.equal((await call('POST', '/api/adapters/lora/outline-lora/convert', { to: 'a1111-pt' })).status, 400);
});

/** Reads server-sent events from /api/events until `until` holds for what was seen. */
async function collectEvents(start: () => Promise<void>, until: (seen: JobEvent[]) => boolean): Promise<JobEvent[]> {
  const ctrl = new AbortController();
  const res = await fetch(`${s.url}/api/events`, { signal: ctrl.signal });
  assert.equal(res.headers.get('content-type'), 'text/event-stream');
  const reader = res.body!.getReader();
  const seen: JobEvent[] = [];
  await start();
  let buf = '';
  while (!until(seen)) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += new TextDecoder().decode(value);
    for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
      const chunk = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (chunk.startsWith('data: ')) seen.push(JSON.parse(chunk.slice(6)));
    }
  }
  ctrl.abort();
  return seen;
}

test('a damaged image in a dataset: training goes on, and the job keeps and sends the warning naming it', async () => {
  await uploadDataset(call, 'damaged', conceptPictures(join(tmp.dir, 'pics'), 'style', 2));
  // The upload refuses non-images, so the file is dropped into the folder as a designer would.
  writeFileSync(join(s.studio.data.root, 'datasets', 'damaged', 'broken.png'), 'this is not an image');
  const skipped = 'skipped: broken.png: cannot read this image (it is not an image, or in a format that cannot be read); it is skipped';
  let id = '';
  const events = await collectEvents(
    async () => {
      const r = await call<Job>('POST', '/api/jobs', { technique: 'lora', dataset: 'damaged', name: 'damaged-lora', settings: { ...QUICK_LORA, steps: 2 } });
      assert.equal(r.status, 201, r.text);
      assert.deepEqual(r.json.warnings, []);
      id = r.json.id;
    },
    (seen) => seen.some((e) => e.type === 'job' && e.job.id === id && ['done', 'failed'].includes(e.job.status)),
  );
  const done = await waitJob(call, id);
  assert.equal(done.status, 'done', done.error ?? '');
  assert.deepEqual(done.warnings, [skipped]);
  assert.deepEqual(events.filter((e) => e.type === 'warning' && e.id === id).map((e) => e.type === 'warning' && e.text), [skipped]);
  const listed = await call<Job[]>('GET', '/api/jobs');
  assert.deepEqual(listed.json.find((j) => j.id === id)!.warnings, [skipped]);
  const d = await call<JobDetail>('GET', `/api/jobs/${id}`);
  assert.deepEqual(d.json.warnings, [skipped]);
  assert.equal(d.json.records.length, 2, 'trained on the two good pictures');
});

test('a studio.db from before job warnings and meter curves opens: the columns are added, old rows read as they were', () => {
  const file = join(tmp.dir, 'old-studio.db');
  const old = new Database(file);
  old.exec(`CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, type TEXT NOT NULL, status TEXT NOT NULL, created TEXT NOT NULL, started TEXT, finished TEXT, request TEXT NOT NULL, progress TEXT, result TEXT, error TEXT)`);
  old.prepare('INSERT INTO jobs (id, type, status, created, request) VALUES (?, ?, ?, ?, ?)').run('old-1', 'train', 'done', '2026-01-01T00:00:00.000Z', '{}');
  old.exec('CREATE TABLE records (job_id TEXT NOT NULL, step INTEGER NOT NULL, loss REAL NOT NULL, lr REAL NOT NULL, val_loss REAL, prior_drift REAL, PRIMARY KEY (job_id, step))');
  old.prepare('INSERT INTO records (job_id, step, loss, lr, val_loss) VALUES (?, ?, ?, ?, ?)').run('old-1', 10, 0.5, 1e-4, 0.25);
  old.close();
  const store = new Store(file);
  try {
    assert.deepEqual(store.job('old-1')!.warnings, []);
    // Records from before the meter's finer curves read as they were; new ones keep them.
    assert.deepEqual(store.records('old-1'), [{ step: 10, loss: 0.5, lr: 1e-4, val_loss: 0.25 }]);
    store.addRecord('old-1', { step: 20, loss: 0.4, lr: 1e-4, val_loss: 0.2, concept_gap: 0.01, val_by_t: [1, 2, 3, 4, 5] });
    assert.deepEqual(store.records('old-1')[1], { step: 20, loss: 0.4, lr: 1e-4, val_loss: 0.2, val_by_t: [1, 2, 3, 4, 5], concept_gap: 0.01 });
    assert.equal(store.addWarning('old-1', 'skipped: a.png: cannot read this image'), 'skipped: a.png: cannot read this image');
    assert.equal(store.addWarning('old-1', 'skipped: a.png: cannot read this image'), null, 'a repeat (a resumed run) is kept once');
    for (let i = 0; i < 150; i++) store.addWarning('old-1', `w${i}`);
    const w = store.job('old-1')!.warnings;
    assert.equal(w.length, 101);
    assert.deepEqual([w[0], w[99], w[100]], ['skipped: a.png: cannot read this image', 'w98', 'more than 100 warnings; the rest are not kept']);
  } finally {
    store.close();
  }
  // Opening it again does not add the column twice.
  new Store(file).close();
});
