// The studio's two lanes (src/server/queue.ts): a 20-step toy picture made alone and beside a
// LoRA training run, and the run's steps per second alone and while the picture is made. On the
// CPU the two jobs split the cores (half the intra-op threads each while both run).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startStudio } from '../src/server/server.ts';
import { writeConceptFolders } from '../src/toy/demo.ts';
import type { GenerateResult, Job } from '../src/server/api-types.ts';
import { ratio, round, type BenchLine } from './common.ts';

export async function benchStudioLanes(): Promise<BenchLine[]> {
  const dir = mkdtempSync(join(tmpdir(), 'sdtune-bench-studio-'));
  // The toy world's style pictures, written straight into the studio's datasets folder.
  writeConceptFolders(join(dir, 'data', 'datasets'));
  const s = await startStudio({ data: join(dir, 'data'), port: 0 });
  const call = async <R>(method: string, path: string, body?: unknown): Promise<R> => {
    const r = await fetch(s.url + path, { method, headers: { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
    if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${await r.text()}`);
    return (await r.json()) as R;
  };
  const job = (id: string) => s.studio.store.job(id)!;
  const until = async (id: string, ok: (j: Job) => boolean) => {
    while (!ok(job(id))) await new Promise((r) => setTimeout(r, 50));
  };
  const ended = (j: Job) => ['done', 'failed', 'cancelled', 'interrupted'].includes(j.status);
  const picture = async () => {
    const t0 = performance.now();
    const g = await call<Job>('POST', '/api/generate', { prompt: 'a large red heart', steps: 20, seed: 1 });
    await until(g.id, ended);
    if (job(g.id).status !== 'done') throw new Error(`generation ${job(g.id).status}: ${job(g.id).error}`);
    return { wall: performance.now() - t0, sampling: (job(g.id).result as GenerateResult).seconds * 1000 };
  };
  try {
    await picture();
    const alone = await picture();
    const t = await call<Job>('POST', '/api/jobs', { technique: 'lora', dataset: 'style', name: 'lanes', settings: { steps: 5000, rank: 4, alpha: 4, lr: 5e-3, trainTextEncoder: false, batchSize: 2, validateEvery: 5000, checkpointEvery: 5000 } });
    await until(t.id, (j) => (j.progress?.step ?? 0) >= 20);
    const rate = async (fn: () => Promise<unknown>) => {
      const a = job(t.id).progress!.step;
      const t0 = performance.now();
      await fn();
      return (job(t.id).progress!.step - a) / ((performance.now() - t0) / 1000);
    };
    const trainAlone = await rate(() => new Promise((r) => setTimeout(r, 5000)));
    let beside = { wall: 0, sampling: 0 };
    const trainBeside = await rate(async () => (beside = await picture()));
    await call('POST', `/api/jobs/${t.id}/cancel`);
    await until(t.id, ended);
    return [{
      name: 'studio-lanes',
      sdtune_ms: round(beside.wall, 1),
      reference_ms: round(alone.wall, 1),
      ratio: ratio(beside.wall, alone.wall),
      picture_alone_sampling_ms: round(alone.sampling, 1),
      picture_beside_training_sampling_ms: round(beside.sampling, 1),
      training_steps_per_s_alone: round(trainAlone, 2),
      training_steps_per_s_while_drawing: round(trainBeside, 2),
      training_slowdown: ratio(trainAlone, trainBeside),
      note: 'sdtune_ms: a 20-step toy picture (job wall time) made beside a LoRA run; reference_ms: the same picture with the studio idle',
    }];
  } finally {
    await s.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
