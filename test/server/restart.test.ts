// A server killed mid-training (SIGKILL: no chance to save) comes back with the job interrupted;
// resuming it continues from the last checkpoint, and the step log ends up whole — each step once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, tempDir } from '../helpers.ts';
import { QUICK_LORA, caller, conceptPictures, uploadDataset, waitJob } from './helpers.ts';
import type { Job, JobDetail } from '../../src/server/api-types.ts';

function serve(data: string): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(REPO, 'src/cli/main.ts'), 'serve', '--port', '0', '--data', data], { cwd: REPO, stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((res, rej) => {
    let out = '';
    child.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      const m = /sdtune studio: (http:\/\/\S+)/.exec(out);
      if (m) res({ child, url: m[1] });
    });
    child.on('exit', (code) => rej(new Error(`sdtune serve exited (${code}): ${out}`)));
  });
}

test('restart during training: interrupted, then resumed from its checkpoint', async () => {
  const tmp = tempDir('sdtune-restart-');
  const data = join(tmp.dir, 'data');
  let a = await serve(data);
  try {
    let call = caller(a.url);
    await uploadDataset(call, 'outline', conceptPictures(join(tmp.dir, 'pics')));
    const r = await call<Job>('POST', '/api/jobs', { technique: 'lora', dataset: 'outline', name: 'survivor', settings: { ...QUICK_LORA, steps: 90, checkpointEvery: 10 } });
    await waitJob(call, r.json.id, (j) => (j.progress?.step ?? 0) >= 25);
    a.child.kill('SIGKILL');
    await new Promise((res) => a.child.once('exit', res));

    a = await serve(data);
    call = caller(a.url);
    const back = await call<Job>('GET', `/api/jobs/${r.json.id}`);
    assert.equal(back.json.status, 'interrupted');
    assert.match(back.json.error!, /the server stopped during this job \(at step \d+\); resume it to continue from its last checkpoint/);
    const res = await call<Job>('POST', `/api/jobs/${r.json.id}/resume`);
    assert.equal(res.status, 200, res.text);
    const done = await waitJob(call, r.json.id);
    assert.equal(done.status, 'done', done.error ?? '');
    const d = await call<JobDetail>('GET', `/api/jobs/${r.json.id}`);
    assert.deepEqual(d.json.records.map((x) => x.step), Array.from({ length: 90 }, (_, i) => i + 1));
    assert.ok(existsSync(join(data, 'lora', 'survivor.safetensors')));
  } finally {
    a.child.kill('SIGTERM');
    tmp.cleanup();
  }
});
