// The job queue: jobs persisted in the store, run first come first served in forked worker
// processes. Two lanes: generation, and everything else (training, preflights, conversions), one
// job at a time in each, so a picture can be tried (a snapshot, a LoRA at a weight) while a run
// trains; `serial` makes it one lane. The server's event loop only moves messages.
//   - A worker that exits without 'done' (crash, OOM kill) marks its job failed with the exit
//     code or signal and the last lines it wrote; the server stays up and runs the next job.
//   - A server killed mid-job comes back with that job 'interrupted'; a training job resumes from
//     its last checkpoint (resume), everything else can simply be submitted again.
//   - cancel: a queued job is dropped at once; a running training job is asked to save a
//     checkpoint and stop (it is resumable), other running jobs are killed.
import { fork, type ChildProcess, type Serializable } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { cpus } from 'node:os';
import { existsSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import type { Job, JobEvent, JobType } from './api-types.ts';
import type { Store } from './db.ts';
import type { FromWorker, ToWorker, WorkerTask } from './protocol.ts';
import { HttpError } from './schema.ts';

const WORKER = fileURLToPath(new URL('./worker.ts', import.meta.url));
const now = () => new Date().toISOString();
/** Intra-op threads of a job alone (the native policy: SDTUNE_NUM_THREADS, else every core), and of each of two sharing the CPU. */
const fullCores = () => Number(process.env.SDTUNE_NUM_THREADS) > 0 ? Math.trunc(Number(process.env.SDTUNE_NUM_THREADS)) : cpus().length;
const halfCores = () => Math.max(1, Math.floor(fullCores() / 2));

/** Turns a job into the task its worker runs (names resolved to paths by the server). */
export type TaskBuilder = (job: Job, resume: boolean) => WorkerTask;

/** Generation runs beside the other jobs; each lane runs one job at a time. */
type Lane = 'generate' | 'main';

interface Running {
  id: string;
  lane: Lane;
  child: ChildProcess;
  stderr: string[];
  finished: boolean;
  /** cancel() was called: the end of the run is a cancellation, not a failure. */
  cancelRequested: boolean;
  /** The newest live preview of a generation (kept in memory while the job runs, not stored). */
  preview?: { step: number; total: number; png: Buffer };
}

export class JobQueue extends EventEmitter {
  private readonly running = new Map<Lane, Running>();
  private readonly waiters = new Map<string, ((j: Job) => void)[]>();
  private closed = false;

  constructor(
    private readonly store: Store,
    private readonly build: TaskBuilder,
    private readonly o: {
      device: string;
      workerArgs?: string[];
      /** Turns a worker's result into the stored one (moves products). */
      finish?: (job: Job, result: unknown) => unknown;
      /** One job at a time, generation included (a device without memory for two models). */
      serial?: boolean;
    },
  ) {
    super();
    this.setMaxListeners(100);
    // A previous server died with these jobs running: nothing runs them now.
    for (const j of store.jobs({ status: ['running'] })) {
      const step = j.progress?.step;
      this.setJob(j.id, {
        status: 'interrupted',
        finished: now(),
        error: j.type === 'train' ? `the server stopped during this job${step ? ` (at step ${step})` : ''}; resume it to continue from its last checkpoint` : 'the server stopped during this job; submit it again',
      });
    }
  }

  /** The job A1111's progress reports: a running generation first, else the other lane's job. */
  private get current(): Running | null {
    return this.running.get('generate') ?? this.running.get('main') ?? null;
  }

  private find(id: string): Running | null {
    return [...this.running.values()].find((r) => r.id === id) ?? null;
  }

  get runningId(): string | null {
    return this.current?.id ?? null;
  }

  /** Every running job (one per lane). */
  get runningIds(): string[] {
    return [...this.running.values()].map((r) => r.id);
  }

  /** The worker process id of the training lane's job, else of the generation (what an operator would kill). */
  get workerPid(): number | null {
    return (this.running.get('main') ?? this.running.get('generate'))?.child.pid ?? null;
  }

  /** The running job's newest live preview (a PNG), or null (not running, or none drawn yet). */
  preview(id: string): { step: number; total: number; png: Buffer } | null {
    const r = this.find(id);
    return r && !r.finished ? r.preview ?? null : null;
  }

  queuedCount(): number {
    return this.store.count('queued');
  }

  /** The job runningId names was asked to stop (A1111's progress reports it as interrupted). */
  get stopping(): boolean {
    return this.current?.cancelRequested ?? false;
  }

  submit(type: JobType, request: Record<string, unknown>): Job {
    if (this.closed) throw new HttpError(503, 'the server is shutting down');
    const job = this.store.createJob(type, request);
    this.emitEvent({ type: 'job', job });
    queueMicrotask(() => this.pump());
    return job;
  }

  /** Resolves when the job ends (done, failed, cancelled or interrupted). */
  wait(id: string): Promise<Job> {
    const j = this.store.job(id);
    if (j && ['done', 'failed', 'cancelled', 'interrupted'].includes(j.status)) return Promise.resolve(j);
    return new Promise((res) => this.waiters.set(id, [...(this.waiters.get(id) ?? []), res]));
  }

  cancel(id: string): Job {
    const j = this.mustGet(id);
    if (j.status === 'queued') return this.setJob(id, { status: 'cancelled', finished: now(), error: 'cancelled before it started' });
    const r = this.find(id);
    if (j.status !== 'running' || !r) throw new HttpError(409, `job ${id} is ${j.status}; only queued or running jobs can be cancelled`);
    if (j.type === 'train') {
      // The loop checks between steps, saves a checkpoint and returns 'stopped'.
      sendTo(r.child, { type: 'stop' });
    } else {
      r.child.kill('SIGTERM');
    }
    r.cancelRequested = true;
    return j;
  }

  resume(id: string): Job {
    const j = this.mustGet(id);
    if (j.type !== 'train') throw new HttpError(409, `job ${id} is a ${j.type} job; only training jobs resume (submit it again)`);
    if (!['interrupted', 'cancelled', 'failed'].includes(j.status)) throw new HttpError(409, `job ${id} is ${j.status}; only interrupted, cancelled or failed training jobs resume`);
    const work = String((j.request as { work_dir?: unknown }).work_dir ?? '');
    const ckpts = existsSync(join(work, 'checkpoints')) ? readdirSync(join(work, 'checkpoints')).filter((f) => /^step-\d+/.test(f)) : [];
    if (ckpts.length === 0) throw new HttpError(409, `job ${id} saved no checkpoint before it ended; start it again instead`);
    // The loop goes on from its newest checkpoint: the steps logged after it will be logged again.
    const from = Math.max(...ckpts.map((f) => Number(/^step-(\d+)/.exec(f)![1])));
    this.store.dropRecordsAfter(id, from);
    const job = this.setJob(id, { status: 'queued', finished: null, error: null, request: { ...j.request, resume: true } });
    queueMicrotask(() => this.pump());
    return job;
  }

  /** Stops taking jobs; a running training job saves a checkpoint (it resumes after a restart). */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.running.values()].map(async (r) => {
      if (r.child.exitCode !== null || r.child.signalCode !== null) return;
      const done = new Promise<void>((res) => r.child.once('exit', () => res()));
      if (this.store.job(r.id)?.type === 'train' && r.child.connected) sendTo(r.child, { type: 'stop' });
      else r.child.kill('SIGTERM');
      const t = setTimeout(() => r.child.kill('SIGKILL'), 30_000);
      await done;
      clearTimeout(t);
    }));
  }

  private mustGet(id: string): Job {
    const j = this.store.job(id);
    if (!j) throw new HttpError(404, `there is no job ${JSON.stringify(id)}`);
    return j;
  }

  private setJob(id: string, patch: Parameters<Store['update']>[1]): Job {
    const job = this.store.update(id, patch);
    this.emitEvent({ type: 'job', job });
    if (['done', 'failed', 'cancelled', 'interrupted'].includes(job.status)) {
      for (const w of this.waiters.get(id) ?? []) w(job);
      this.waiters.delete(id);
    }
    return job;
  }

  private emitEvent(e: JobEvent): void {
    this.emit('event', e);
  }

  private pump(): void {
    if (this.closed) return;
    for (const lane of this.o.serial ? (['main'] as const) : (['main', 'generate'] as const)) {
      if (this.running.has(lane)) continue;
      const job = this.store.nextQueued(this.o.serial ? undefined : lane === 'generate' ? ['generate'] : { not: ['generate'] });
      if (job) this.start(job, lane);
    }
  }

  private start(job: Job, lane: Lane): void {
    const resume = (job.request as { resume?: unknown }).resume === true;
    let task: WorkerTask;
    try {
      task = this.build(job, resume);
    } catch (e) {
      this.setJob(job.id, { status: 'failed', finished: now(), error: (e as Error).message });
      queueMicrotask(() => this.pump());
      return;
    }
    // On the CPU, two jobs at once split the cores: two pools of spinning threads on the same
    // cores slow both many times over (measured: libtorch-notes.md, "Threads"; docs/studio.md).
    const share = this.o.device === 'cpu' && this.running.size > 0;
    const env = share ? { ...process.env, SDTUNE_NUM_THREADS: String(halfCores()) } : process.env;
    const child = fork(WORKER, [], { execArgv: ['--import', 'tsx', ...(this.o.workerArgs ?? [])], stdio: ['ignore', 'pipe', 'pipe', 'ipc'], serialization: 'advanced', env });
    if (share) for (const other of this.running.values()) sendTo(other.child, { type: 'threads', n: halfCores() });
    const r: Running = { id: job.id, lane, child, stderr: [], finished: false, cancelRequested: false };
    this.running.set(lane, r);
    const keep = (b: Buffer) => {
      r.stderr.push(...b.toString().split('\n').filter((l) => l.trim()));
      if (r.stderr.length > 20) r.stderr.splice(0, r.stderr.length - 20);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    this.setJob(job.id, { status: 'running', started: now(), progress: { step: 0, total: 0, message: 'starting' } });
    child.on('message', (m: FromWorker) => this.onMessage(r, m));
    // A failed spawn or a write to a worker that is going away: its 'exit' reports the job.
    child.on('error', (e) => keep(Buffer.from(`worker: ${e.message}`)));
    child.on('exit', (code, signal) => {
      if (!r.finished) {
        const cancelled = r.cancelRequested;
        const why = signal ? `signal ${signal}` : `exit code ${code}`;
        const tail = r.stderr.slice(-5).join(' | ');
        this.setJob(r.id, cancelled
          ? { status: 'cancelled', finished: now(), error: 'cancelled while running' }
          : { status: 'failed', finished: now(), error: `the worker process died (${why})${signal === 'SIGKILL' ? ', probably out of memory' : ''}${tail ? `: ${tail}` : ''}` });
      }
      this.running.delete(lane);
      // The job left alone has the cores again.
      if (this.o.device === 'cpu') for (const other of this.running.values()) sendTo(other.child, { type: 'threads', n: fullCores() });
      if (!this.closed) queueMicrotask(() => this.pump());
    });
    sendTo(child, { type: 'start', task });
  }

  private onMessage(r: Running, m: FromWorker): void {
    const id = r.id;
    switch (m.type) {
      case 'progress': {
        const progress = { step: m.step, total: m.total, message: m.message, ...(m.loss !== undefined && { loss: m.loss }) };
        this.store.update(id, { progress });
        this.emitEvent({ type: 'progress', id, ...progress });
        break;
      }
      case 'preview':
        r.preview = { step: m.step, total: m.total, png: Buffer.from(m.png) };
        this.emitEvent({ type: 'preview', id, step: m.step, total: m.total });
        break;
      case 'record':
        this.store.addRecord(id, m.record);
        this.emitEvent({ type: 'record', id, record: m.record });
        break;
      case 'message': {
        const kept = this.store.addWarning(id, m.text);
        if (kept !== null) this.emitEvent({ type: 'warning', id, text: kept });
        break;
      }
      case 'done': {
        r.finished = true;
        let result: unknown;
        try {
          result = this.o.finish ? this.o.finish(this.store.job(id)!, m.result) : m.result;
        } catch (e) {
          this.setJob(id, { status: 'failed', finished: now(), result: m.result, error: `the job finished but its result could not be stored: ${(e as Error).message}` });
          break;
        }
        const res = result as { status?: string; message?: string } | null;
        const cancelled = r.cancelRequested || res?.status === 'stopped';
        this.setJob(id, cancelled ? { status: 'cancelled', finished: now(), result, error: `stopped: ${res?.message ?? 'a checkpoint was saved'}; resume to continue` } : { status: 'done', finished: now(), result, error: null });
        break;
      }
      case 'error': {
        r.finished = true;
        // Generation beside a training run shares its device: out of memory is the likely cause.
        const beside = r.lane === 'generate' && this.running.has('main') && /out of memory/i.test(m.message);
        this.setJob(id, { status: 'failed', finished: now(), error: beside ? `${m.message}; a training job is using the device: generate after it ends, or start the studio with --serial (one job at a time)` : m.message });
        break;
      }
    }
  }
}

/**
 * A message to a worker. The worker may exit between the `connected` check and the write (a stop
 * sent as it finishes): the write then fails with EPIPE, which is no error of the server's, and
 * the child's 'exit' says what became of the job.
 */
function sendTo(child: ChildProcess, message: ToWorker): void {
  if (!child.connected) return;
  child.send(message as unknown as Serializable, (e) => {
    if (e && (e as NodeJS.ErrnoException).code !== 'EPIPE' && (e as NodeJS.ErrnoException).code !== 'ERR_IPC_CHANNEL_CLOSED') child.emit('error', e);
  });
}
