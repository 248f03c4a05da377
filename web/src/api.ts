// The studio's HTTP API as typed functions (fetch + one shared EventSource). Every failure becomes
// an ApiRequestError carrying the server's own `error` sentence, which the tabs show as is.
import type {
  AdapterInfo,
  AdapterKind,
  ApiError,
  BucketPreview,
  DatasetDetail,
  DatasetImage,
  DatasetSummary,
  GenerateRequest,
  InspectInfo,
  Job,
  JobDetail,
  JobEvent,
  JobStatus,
  ModelInfo,
  OutputImage,
  StatusInfo,
  TrainRequest,
} from '../../src/server/api-types.ts';

export class ApiRequestError extends Error {
  override name = 'ApiRequestError';
  constructor(
    message: string,
    readonly status: number,
    readonly field?: string,
  ) {
    super(message);
  }
}

export interface TokenCount {
  count: number;
  limit: number;
  chunks: number;
}

export type ConvertTarget = 'kohya' | 'peft' | 'safetensors' | 'a1111-pt';

const enc = encodeURIComponent;

function isApiError(v: unknown): v is ApiError {
  return typeof v === 'object' && v !== null && typeof (v as { error?: unknown }).error === 'string';
}

/** One request. `body` is sent as JSON, except a Blob (a File), which goes as its raw bytes. */
async function call<T>(method: string, path: string, body?: unknown, contentType?: string): Promise<T> {
  const init: RequestInit = { method, headers: { Accept: 'application/json' } };
  if (body instanceof Blob) {
    init.body = body;
    init.headers = { Accept: 'application/json', 'Content-Type': contentType || body.type || 'application/octet-stream' };
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = { Accept: 'application/json', 'Content-Type': 'application/json' };
  }
  let res: Response;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiRequestError(`Cannot reach the studio server (${e instanceof Error ? e.message : String(e)}). Is it still running?`, 0);
  }
  const text = await res.text();
  let parsed: unknown = undefined;
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
  }
  if (!res.ok) {
    if (isApiError(parsed)) throw new ApiRequestError(parsed.error, res.status, parsed.field);
    const detail = text && text.length < 300 ? `: ${text.trim()}` : '';
    throw new ApiRequestError(`The server answered ${res.status} ${res.statusText}${detail}`, res.status);
  }
  if (res.status === 204 || !text) return undefined as T;
  if (parsed === undefined) throw new ApiRequestError(`The server sent something that is not JSON for ${method} ${path}`, res.status);
  return parsed as T;
}

export const api = {
  status: () => call<StatusInfo>('GET', '/api/status'),

  models: () => call<ModelInfo[]>('GET', '/api/models'),
  model: (name: string) => call<ModelInfo & { inspect: InspectInfo }>('GET', `/api/models/${enc(name)}`),
  deleteModel: (name: string) => call<void>('DELETE', `/api/models/${enc(name)}`),

  adapters: () => call<AdapterInfo[]>('GET', '/api/adapters'),
  adapter: (kind: AdapterKind, name: string) => call<AdapterInfo & { inspect: InspectInfo }>('GET', `/api/adapters/${kind}/${enc(name)}`),
  deleteAdapter: (kind: AdapterKind, name: string) => call<void>('DELETE', `/api/adapters/${kind}/${enc(name)}`),
  convertAdapter: (kind: AdapterKind, name: string, to: ConvertTarget, dtype?: 'fp16' | 'fp32') =>
    call<Job>('POST', `/api/adapters/${kind}/${enc(name)}/convert`, dtype ? { to, dtype } : { to }),

  datasets: () => call<DatasetSummary[]>('GET', '/api/datasets'),
  createDataset: (name: string) => call<DatasetDetail>('POST', '/api/datasets', { name }),
  dataset: (name: string) => call<DatasetDetail>('GET', `/api/datasets/${enc(name)}`),
  deleteDataset: (name: string) => call<void>('DELETE', `/api/datasets/${enc(name)}`),
  uploadImage: (dataset: string, file: File, contentType: string) =>
    call<DatasetImage>('PUT', `/api/datasets/${enc(dataset)}/images/${enc(file.name)}`, file, contentType),
  deleteImage: (dataset: string, file: string) => call<void>('DELETE', `/api/datasets/${enc(dataset)}/images/${enc(file)}`),
  putCaption: (dataset: string, file: string, caption: string) =>
    call<DatasetImage>('PUT', `/api/datasets/${enc(dataset)}/captions/${enc(file)}`, { caption }),
  buckets: (dataset: string, resolution: number) => call<BucketPreview>('GET', `/api/datasets/${enc(dataset)}/buckets?resolution=${resolution}`),

  tokenize: (prompt: string) => call<TokenCount>('POST', '/api/tokenize', { prompt }),
  generate: (req: GenerateRequest) => call<Job>('POST', '/api/generate', req),
  preflight: (req: TrainRequest) => call<Job>('POST', '/api/preflight', req),

  startTraining: (req: TrainRequest) => call<Job>('POST', '/api/jobs', req),
  jobs: () => call<Job[]>('GET', '/api/jobs'),
  job: (id: string) => call<JobDetail>('GET', `/api/jobs/${enc(id)}`),
  cancelJob: (id: string) => call<Job>('POST', `/api/jobs/${enc(id)}/cancel`),
  resumeJob: (id: string) => call<Job>('POST', `/api/jobs/${enc(id)}/resume`),
  pickSnapshot: (id: string, step: number) => call<AdapterInfo>('POST', `/api/jobs/${enc(id)}/pick`, { step }),

  outputs: () => call<OutputImage[]>('GET', '/api/outputs'),
};

// ---- live events ----

type Listener = (ev: JobEvent) => void;
const listeners = new Set<Listener>();
const reconnectListeners = new Set<() => void>();
let source: EventSource | null = null;
let lostConnection = false;

function isJobEvent(v: unknown): v is JobEvent {
  if (typeof v !== 'object' || v === null) return false;
  const t = (v as { type?: unknown }).type;
  return t === 'job' || t === 'progress' || t === 'record' || t === 'warning' || t === 'preview';
}

/** Opens the one shared stream on first use; EventSource reconnects by itself after a drop. */
function connect(): void {
  if (source || typeof EventSource === 'undefined') return;
  source = new EventSource('/api/events');
  source.onmessage = (msg: MessageEvent<string>) => {
    let data: unknown;
    try {
      data = JSON.parse(msg.data);
    } catch {
      return;
    }
    if (!isJobEvent(data)) return;
    for (const l of [...listeners]) {
      try {
        l(data);
      } catch (e) {
        console.error('event listener failed', e);
      }
    }
  };
  source.onerror = () => {
    lostConnection = true;
  };
  source.onopen = () => {
    // Events sent while the stream was down are lost: let the tabs reload what they show.
    if (!lostConnection) return;
    lostConnection = false;
    for (const l of [...reconnectListeners]) l();
  };
}

/** Subscribes to every job event; returns the unsubscribe function. */
export function onEvent(fn: Listener): () => void {
  connect();
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** Called after the event stream came back from a drop. */
export function onReconnect(fn: () => void): () => void {
  connect();
  reconnectListeners.add(fn);
  return () => reconnectListeners.delete(fn);
}

export const FINISHED: readonly JobStatus[] = ['done', 'failed', 'cancelled', 'interrupted'];
export const isFinished = (s: JobStatus): boolean => FINISHED.includes(s);

/**
 * Resolves with the job once it is done, failed, cancelled or interrupted. Listens to the events
 * and also polls GET /api/jobs/{id} every 2 s, so a dropped stream cannot leave it hanging.
 * `onUpdate` sees every status change and progress report on the way.
 */
export function waitForJob(id: string, onUpdate?: (job: Job) => void, onProgress?: (p: Extract<JobEvent, { type: 'progress' }>) => void): Promise<Job> {
  return new Promise((resolve, reject) => {
    let settled = false;
    let polling = false;
    const finish = (job: Job) => {
      if (settled) return;
      settled = true;
      off();
      clearInterval(timer);
      resolve(job);
    };
    const fail = (e: unknown) => {
      if (settled) return;
      settled = true;
      off();
      clearInterval(timer);
      reject(e);
    };
    const seen = (job: Job) => {
      if (settled) return;
      onUpdate?.(job);
      if (isFinished(job.status)) finish(job);
    };
    // An event may carry a slimmer job than GET does: read the full one (result, error) at the end.
    const seenEvent = (job: Job) => {
      if (settled || !isFinished(job.status)) return seen(job);
      api.job(id).then((full) => seen(isFinished(full.status) ? full : job), () => seen(job));
    };
    const off = onEvent((ev) => {
      if (ev.type === 'job' && ev.job.id === id) seenEvent(ev.job);
      else if (ev.type === 'progress' && ev.id === id && !settled) onProgress?.(ev);
    });
    const poll = async () => {
      if (polling || settled) return;
      polling = true;
      try {
        seen(await api.job(id));
      } catch (e) {
        // A vanished job will never finish; a network blip may pass, so keep polling then.
        if (e instanceof ApiRequestError && e.status === 404) fail(e);
      } finally {
        polling = false;
      }
    };
    const timer = setInterval(poll, 2000);
    void poll();
  });
}
