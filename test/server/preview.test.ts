// Live previews of a running generation: the worker sends x̂₀ decoded every N steps, the queue keeps
// the newest in memory, and it is served as a PNG (GET /api/jobs/{id}/preview, the batch side by
// side), announced by 'preview' events, and put in A1111's /progress as current_image; gone when
// the job ends.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { decodePng } from '../../src/formats/png.ts';
import { sideBySide } from '../../src/server/image.ts';
import type { Job, JobEvent } from '../../src/server/api-types.ts';
import { tempDir } from '../helpers.ts';
import { studio, waitJob } from './helpers.ts';

const tmp = tempDir('sdtune-preview-');
let s: Awaited<ReturnType<typeof studio>>;

before(async () => {
  s = await studio(join(tmp.dir, 'data'));
});
after(async () => {
  await s.close();
  tmp.cleanup();
});

test('sideBySide puts a batch in one row; odd sizes are refused', () => {
  const px = (v: number) => ({ width: 2, height: 2, channels: 3 as const, data: new Uint8Array(12).fill(v) });
  const row = sideBySide([px(1), px(2), px(3)]);
  assert.deepEqual([row.width, row.height], [6, 2]);
  assert.deepEqual([...row.data.subarray(0, 18)], [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3]);
  assert.throws(() => sideBySide([px(1), { width: 3, height: 2, channels: 3, data: new Uint8Array(18) }]), /image 1 is 3×2×3, not 2×2×3/);
});

test('a running generation serves its newest preview; A1111 progress carries it; none after the end', async () => {
  const seen: { step: number; total: number }[] = [];
  const got: { served?: Promise<[{ status: number; png: Buffer }, { current_image: string | null; state: { sampling_step: number } }]> } = {};
  let id = '';
  const on = (e: JobEvent) => {
    if (e.type !== 'preview' || e.id !== id) return;
    seen.push({ step: e.step, total: e.total });
    // Asked while the job still samples (110 steps remain after the first preview).
    got.served ??= Promise.all([
      fetch(`${s.url}/api/jobs/${id}/preview`).then(async (r) => ({ status: r.status, png: Buffer.from(await r.arrayBuffer()) })),
      fetch(`${s.url}/sdapi/v1/progress`).then((r) => r.json() as Promise<{ current_image: string | null; state: { sampling_step: number } }>),
    ]);
  };
  s.studio.queue.on('event', on);
  try {
    const r = await s.call<Job>('POST', '/api/generate', { prompt: 'a large red heart', steps: 150, seed: 4, batch: 2, preview_every: 40 });
    assert.equal(r.status, 202, r.text);
    id = r.json.id;
    const done = await waitJob(s.call, id);
    assert.equal(done.status, 'done', done.error ?? '');
    assert.deepEqual(seen, [{ step: 40, total: 150 }, { step: 80, total: 150 }, { step: 120, total: 150 }]);
    assert.ok(got.served, 'a preview event came');
    const [img, progress] = await got.served;
    assert.equal(img.status, 200);
    const png = decodePng(img.png);
    assert.deepEqual([png.width, png.height], [64, 32], 'the two pictures of the batch side by side, 32 px each');
    assert.ok(progress.current_image, 'A1111 progress has the preview');
    assert.deepEqual(decodePng(Buffer.from(progress.current_image!, 'base64')).width, 64);
  } finally {
    s.studio.queue.off('event', on);
  }
  const gone = await s.call<{ error: string }>('GET', `/api/jobs/${id}/preview`);
  assert.equal(gone.status, 404);
  assert.equal(gone.json.error, `job ${id} is done: previews exist only while it samples (its pictures are in the result)`);
  const idle = await s.call<{ current_image: null }>('GET', '/sdapi/v1/progress');
  assert.equal(idle.json.current_image, null);
  // preview_every 0: no previews at all.
  seen.length = 0;
  s.studio.queue.on('event', on);
  try {
    const r = await s.call<Job>('POST', '/api/generate', { prompt: 'a heart', steps: 12, seed: 1, preview_every: 0 });
    id = r.json.id;
    assert.equal((await waitJob(s.call, id)).status, 'done');
  } finally {
    s.studio.queue.off('event', on);
  }
  assert.deepEqual(seen, []);
  assert.equal((await s.call('GET', '/api/jobs/nope/preview')).status, 404);
});
