// The studio's store: jobs, their step logs and the settings, in SQLite (better-sqlite3, WAL), so a
// killed server comes back with every job as it was. Only the server process writes here; workers
// report over IPC. Statements are synchronous and short (no tensor work), so the event loop is
// never held for long.
import Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import type { Job, JobStatus, JobType, StepPoint } from './api-types.ts';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT UNIQUE NOT NULL,
  type TEXT NOT NULL,
  status TEXT NOT NULL,
  created TEXT NOT NULL,
  started TEXT,
  finished TEXT,
  request TEXT NOT NULL,
  progress TEXT,
  result TEXT,
  error TEXT,
  warnings TEXT
);
CREATE TABLE IF NOT EXISTS records (
  job_id TEXT NOT NULL,
  step INTEGER NOT NULL,
  loss REAL NOT NULL,
  lr REAL NOT NULL,
  val_loss REAL,
  prior_drift REAL,
  meter TEXT,
  PRIMARY KEY (job_id, step)
);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
`;

interface JobRow {
  id: string;
  type: string;
  status: string;
  created: string;
  started: string | null;
  finished: string | null;
  request: string;
  progress: string | null;
  result: string | null;
  error: string | null;
  warnings: string | null;
}

/** Warnings kept per job; a folder of thousands of bad files should not bloat every job listing. */
const MAX_WARNINGS = 100;

/** The meter's per-timestep curves and concept gap, kept as one JSON column. */
const METER_FIELDS = ['val_by_t', 'concept_gap', 'gap_by_t', 'drift_by_t', 'sample_score'] as const;

const parse = (s: string | null): unknown => (s === null ? null : JSON.parse(s));

function toJob(r: JobRow): Job {
  return {
    id: r.id,
    type: r.type as JobType,
    status: r.status as JobStatus,
    created: r.created,
    started: r.started,
    finished: r.finished,
    request: parse(r.request) as Record<string, unknown>,
    progress: parse(r.progress) as Job['progress'],
    result: parse(r.result),
    error: r.error,
    warnings: (parse(r.warnings) as string[] | null) ?? [],
  };
}

export class Store {
  private readonly db: Database.Database;

  constructor(file: string) {
    try {
      this.db = new Database(file);
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('busy_timeout = 5000');
      this.db.exec(SCHEMA);
      // A studio.db from before job warnings and the meter's finer curves lacks their columns.
      this.addColumnIfMissing('jobs', 'warnings');
      this.addColumnIfMissing('records', 'meter');
    } catch (e) {
      throw new Error(`${file}: cannot open the studio database (${(e as Error).message}); move the file away to start with an empty one`);
    }
  }

  private addColumnIfMissing(table: 'jobs' | 'records', column: string): void {
    const cols = this.db.prepare(`PRAGMA table_info(${table})`).all() as { name: string }[];
    if (!cols.some((c) => c.name === column)) this.db.exec(`ALTER TABLE ${table} ADD COLUMN ${column} TEXT`);
  }

  close(): void {
    this.db.close();
  }

  createJob(type: JobType, request: Record<string, unknown>): Job {
    const id = `${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
    this.db.prepare('INSERT INTO jobs (id, type, status, created, request) VALUES (?, ?, ?, ?, ?)').run(id, type, 'queued', new Date().toISOString(), JSON.stringify(request));
    return this.job(id)!;
  }

  job(id: string): Job | null {
    const r = this.db.prepare('SELECT * FROM jobs WHERE id = ?').get(id) as JobRow | undefined;
    return r ? toJob(r) : null;
  }

  jobs(o: { status?: JobStatus[]; limit?: number } = {}): Job[] {
    const where = o.status?.length ? `WHERE status IN (${o.status.map(() => '?').join(',')})` : '';
    const rows = this.db.prepare(`SELECT * FROM jobs ${where} ORDER BY seq DESC LIMIT ?`).all(...(o.status ?? []), o.limit ?? 200) as JobRow[];
    return rows.map(toJob);
  }

  count(status: JobStatus): number {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM jobs WHERE status = ?').get(status) as { n: number }).n;
  }

  /** The oldest queued job (first come, first served). */
  /** The oldest queued job, of these types (or of any type but these), or of any type. */
  nextQueued(types?: JobType[] | { not: JobType[] }): Job | null {
    const list = types === undefined ? [] : Array.isArray(types) ? types : types.not;
    const where = list.length === 0 ? '' : ` AND type ${Array.isArray(types) ? '' : 'NOT '}IN (${list.map(() => '?').join(', ')})`;
    const r = this.db.prepare(`SELECT * FROM jobs WHERE status = 'queued'${where} ORDER BY seq ASC LIMIT 1`).get(...list) as JobRow | undefined;
    return r ? toJob(r) : null;
  }

  update(id: string, patch: Partial<Pick<Job, 'status' | 'started' | 'finished' | 'progress' | 'result' | 'error' | 'request'>>): Job {
    const cols: string[] = [];
    const vals: unknown[] = [];
    for (const [k, v] of Object.entries(patch)) {
      cols.push(`${k} = ?`);
      vals.push(k === 'progress' || k === 'result' || k === 'request' ? (v === null ? null : JSON.stringify(v)) : v);
    }
    if (cols.length) this.db.prepare(`UPDATE jobs SET ${cols.join(', ')} WHERE id = ?`).run(...vals, id);
    return this.job(id)!;
  }

  /**
   * Adds a warning a job's worker sent (a skipped image, an unreadable caption) and returns the
   * line kept, or null: a repeat (a resumed run scans its folder again) and lines past the cap are not.
   */
  addWarning(id: string, text: string): string | null {
    const w = this.job(id)?.warnings;
    if (!w || w.includes(text) || w.length > MAX_WARNINGS) return null;
    const line = w.length === MAX_WARNINGS ? `more than ${MAX_WARNINGS} warnings; the rest are not kept` : text;
    this.db.prepare('UPDATE jobs SET warnings = ? WHERE id = ?').run(JSON.stringify([...w, line]), id);
    return line;
  }

  addRecord(id: string, r: StepPoint): void {
    const meter = Object.fromEntries(METER_FIELDS.filter((k) => r[k] !== undefined).map((k) => [k, r[k]]));
    this.db
      .prepare('INSERT OR REPLACE INTO records (job_id, step, loss, lr, val_loss, prior_drift, meter) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(id, r.step, r.loss, r.lr, r.val_loss ?? null, r.prior_drift ?? null, Object.keys(meter).length ? JSON.stringify(meter) : null);
  }

  records(id: string): StepPoint[] {
    const rows = this.db.prepare('SELECT step, loss, lr, val_loss, prior_drift, meter FROM records WHERE job_id = ? ORDER BY step').all(id) as { step: number; loss: number; lr: number; val_loss: number | null; prior_drift: number | null; meter: string | null }[];
    return rows.map((r) => ({
      step: r.step, loss: r.loss, lr: r.lr,
      ...(r.val_loss !== null && { val_loss: r.val_loss }),
      ...(r.prior_drift !== null && { prior_drift: r.prior_drift }),
      ...(parse(r.meter) as Partial<StepPoint> | null),
    }));
  }

  /** A resumed run repeats the steps after its checkpoint: their old records go. */
  dropRecordsAfter(id: string, step: number): void {
    this.db.prepare('DELETE FROM records WHERE job_id = ? AND step > ?').run(id, step);
  }

  setting<T>(key: string, fallback: T): T {
    const r = this.db.prepare('SELECT value FROM settings WHERE key = ?').get(key) as { value: string } | undefined;
    return r ? (JSON.parse(r.value) as T) : fallback;
  }

  setSetting(key: string, value: unknown): void {
    this.db.prepare('INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)').run(key, JSON.stringify(value));
  }
}
