// Shared by the studio's tests: a studio on a free localhost port over a temporary data folder,
// JSON calls, and the toy world's concept pictures to upload.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { startStudio, type RunningStudio, type ServeOptions } from '../../src/server/server.ts';
import { writeConceptFolders } from '../../src/toy/demo.ts';
import type { Job } from '../../src/server/api-types.ts';

export async function studio(data: string, o: Partial<ServeOptions> = {}): Promise<RunningStudio & { call: Caller }> {
  const s = await startStudio({ data, port: 0, ...o });
  return Object.assign(s, { call: caller(s.url) });
}

export type Caller = <T = unknown>(method: string, path: string, body?: unknown, headers?: Record<string, string>) => Promise<{ status: number; json: T; text: string }>;

export function caller(base: string): Caller {
  return async (method, path, body, headers = {}) => {
    const isBytes = body instanceof Uint8Array;
    const res = await fetch(base + path, {
      method,
      headers: { ...(body !== undefined && !isBytes && { 'content-type': 'application/json' }), ...headers },
      body: body === undefined ? undefined : isBytes ? body : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    let json: unknown = null;
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
    return { status: res.status, json: json as never, text };
  };
}

/** Polls a job until it ends (or the step predicate holds). */
export async function waitJob(call: Caller, id: string, until: (j: Job) => boolean = (j) => ['done', 'failed', 'cancelled', 'interrupted'].includes(j.status), timeoutMs = 240_000): Promise<Job> {
  const t0 = Date.now();
  for (;;) {
    const r = await call<Job>('GET', `/api/jobs/${id}`);
    if (until(r.json)) return r.json;
    if (Date.now() - t0 > timeoutMs) throw new Error(`job ${id} still ${r.json.status} after ${timeoutMs} ms: ${JSON.stringify(r.json.progress)}`);
    await new Promise((res) => setTimeout(res, 150));
  }
}

/** The toy world's style pictures (outline look) with their captions. */
export function conceptPictures(dir: string, concept: 'style' | 'subject' = 'style', n = 6): { file: string; png: Buffer; caption: string }[] {
  writeConceptFolders(dir);
  const folder = join(dir, concept);
  return readdirSync(folder).filter((f) => f.endsWith('.png')).sort().slice(0, n).map((f) => ({ file: f, png: readFileSync(join(folder, f)), caption: readFileSync(join(folder, f.replace(/\.png$/, '.txt')), 'utf8') }));
}

export async function uploadDataset(call: Caller, name: string, pics: ReturnType<typeof conceptPictures>): Promise<void> {
  const c = await call('POST', '/api/datasets', { name });
  if (c.status !== 201) throw new Error(c.text);
  for (const p of pics) {
    const u = await call('PUT', `/api/datasets/${name}/images/${p.file}`, new Uint8Array(p.png), { 'content-type': 'image/png' });
    if (u.status !== 201) throw new Error(u.text);
    const t = await call('PUT', `/api/datasets/${name}/captions/${p.file}`, { caption: p.caption });
    if (t.status !== 200) throw new Error(t.text);
  }
}

/** Settings of a short toy LoRA run (a few seconds here). */
export const QUICK_LORA = { steps: 30, rank: 4, alpha: 4, lr: 5e-3, trainTextEncoder: false, validateEvery: 10, checkpointEvery: 10, batchSize: 2 };
