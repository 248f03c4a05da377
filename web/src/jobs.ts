// The Jobs tab: every job with live progress; a selected training job shows the over/underfitting
// meter, the recommendation, sample pictures by step and the snapshots to keep.
import type { AdapterInfo, GenerateResult, Job, JobDetail, JobEvent, Preflight, SampleImage, StepPoint } from '../../src/server/api-types.ts';
import { api, isFinished, onEvent, onReconnect } from './api.ts';
import { drawMeter, meterLegend } from './chart.ts';
import { tryProduct } from './generate.ts';
import { busy, fill, formatBytes, formatDate, formatDuration, h, showError, showNotice } from './ui.ts';

type Progress = NonNullable<Job['progress']>;

let jobs: Job[] = [];
let selectedId: string | null = null;
let detail: JobDetail | null = null;
const rowEls = new Map<string, HTMLButtonElement>();
let pickMessage: { id: string; text: string } | null = null;

const list = h('div', { class: 'job-list', testid: 'job-list' });
const detailBox = h('div', { class: 'job-detail', testid: 'job-detail' });
const canvas = h('canvas', { testid: 'meter-chart', class: 'meter-chart', role: 'img', 'aria-label': 'Over/underfitting meter: loss by step' });

const TECHNIQUE_LABEL: Record<string, string> = { dreambooth: 'DreamBooth', lora: 'LoRA', embedding: 'Textual inversion', hypernetwork: 'Hypernetwork' };
const STATUS_LABEL: Record<string, string> = {
  queued: 'Waiting',
  running: 'Running',
  done: 'Done',
  failed: 'Failed',
  cancelled: 'Cancelled',
  interrupted: 'Interrupted',
};

const str = (o: Record<string, unknown> | undefined, k: string): string | undefined => {
  const v = o?.[k];
  return typeof v === 'string' ? v : undefined;
};
const settingsOf = (job: Job): Record<string, unknown> => {
  const s = job.request.settings;
  return typeof s === 'object' && s !== null && !Array.isArray(s) ? (s as Record<string, unknown>) : {};
};

/** One line saying what a job is, in the user's words. */
function titleOf(job: Job): string {
  const r = job.request;
  const tech = TECHNIQUE_LABEL[str(r, 'technique') ?? ''] ?? str(r, 'technique') ?? '';
  switch (job.type) {
    case 'train':
      return `${str(r, 'name') ?? 'training'} · ${tech}`;
    case 'preflight':
      return `Check: ${str(r, 'name') ?? ''} · ${tech}`;
    case 'generate': {
      const p = str(r, 'prompt') ?? '';
      return `Pictures: ${p.length > 60 ? p.slice(0, 57) + '…' : p}`;
    }
    case 'convert':
      return `Convert ${[str(r, 'kind'), str(r, 'name')].filter(Boolean).join(' ')}${str(r, 'to') ? ` to ${str(r, 'to')}` : ''}`;
    default:
      return `${job.type} ${str(r, 'name') ?? ''}`.trim();
  }
}

function progressBar(p: Progress | null, status: Job['status']): HTMLElement {
  const bar = h('progress', { testid: 'job-progress', max: 1, 'aria-label': 'Progress' });
  if (p && p.total > 0) {
    bar.max = p.total;
    bar.value = Math.min(p.step, p.total);
  } else if (status === 'done') bar.value = 1;
  else if (status !== 'running') bar.value = 0;
  // A running job with no step yet stays indeterminate (no value): the bar animates.
  return bar;
}

function stepsText(p: Progress | null): string {
  return p && p.total > 0 ? `${p.step}/${p.total}` : '';
}

// ---- the list ----

function fillRow(row: HTMLButtonElement, job: Job): void {
  row.dataset.jobId = job.id;
  row.dataset.status = job.status;
  row.classList.toggle('selected', job.id === selectedId);
  row.setAttribute('aria-pressed', String(job.id === selectedId));
  fill(
    row,
    h('span', { class: 'job-type' }, job.type),
    h('span', { class: 'job-title' }, titleOf(job)),
    h('span', { class: `status status-${job.status}`, testid: 'job-row-status' }, STATUS_LABEL[job.status] ?? job.status),
    progressBar(job.progress, job.status),
    h('span', { class: 'job-steps', testid: 'job-steps' }, stepsText(job.progress)),
  );
}

function renderList(): void {
  if (jobs.length === 0) {
    rowEls.clear();
    fill(list, h('p', { class: 'empty' }, 'No jobs yet. Start one in Generate or Train.'));
    return;
  }
  const rows = jobs.map((job) => {
    let row = rowEls.get(job.id);
    if (!row) {
      const r = h('button', { type: 'button', class: 'job-row', testid: 'job-row' });
      r.addEventListener('click', () => void select(job.id));
      rowEls.set(job.id, r);
      row = r;
    }
    fillRow(row, job);
    return row;
  });
  // Keep the same elements (and so keyboard focus) while the order or contents change.
  list.replaceChildren(...rows);
  for (const id of [...rowEls.keys()]) if (!jobs.some((j) => j.id === id)) rowEls.delete(id);
}

function upsert(job: Job): void {
  const i = jobs.findIndex((j) => j.id === job.id);
  if (i >= 0) jobs[i] = job;
  else jobs.unshift(job);
  renderList();
}

// ---- the detail ----

let refreshTimer: ReturnType<typeof setTimeout> | undefined;
let refreshDue = 0;
/**
 * Re-reads the selected job within `ms`, once for however many calls come meanwhile (records
 * arrive many times a second); a sooner request moves the pending one forward.
 */
function scheduleRefresh(ms: number): void {
  const due = Date.now() + ms;
  if (refreshTimer !== undefined) {
    if (due >= refreshDue) return;
    clearTimeout(refreshTimer);
  }
  refreshDue = due;
  refreshTimer = setTimeout(() => {
    refreshTimer = undefined;
    if (selectedId) void loadDetail(selectedId);
  }, ms);
}

async function loadDetail(id: string): Promise<void> {
  try {
    const d = await api.job(id);
    if (selectedId !== id) return;
    detail = d;
    const i = jobs.findIndex((j) => j.id === id);
    if (i >= 0) {
      jobs[i] = d;
      const row = rowEls.get(id);
      if (row) fillRow(row, d);
    }
    renderDetail();
  } catch (e) {
    if (selectedId === id) showError(e);
  }
}

async function select(id: string): Promise<void> {
  selectedId = id;
  if (location.hash !== `#jobs/${encodeURIComponent(id)}`) history.replaceState(null, '', `#jobs/${encodeURIComponent(id)}`);
  for (const [rid, row] of rowEls) {
    row.classList.toggle('selected', rid === id);
    row.setAttribute('aria-pressed', String(rid === id));
  }
  if (detail?.id !== id) {
    detail = null;
    fill(detailBox, h('p', { class: 'hint' }, 'Loading…'));
  }
  await loadDetail(id);
}

function productOf(job: Job): { name?: string; bytes?: number; kind?: string } {
  const r = job.result;
  if (typeof r !== 'object' || r === null) return {};
  const p = (r as { product?: unknown }).product;
  if (typeof p !== 'object' || p === null) return {};
  const o = p as Record<string, unknown>;
  return { name: typeof o.name === 'string' ? o.name : undefined, bytes: typeof o.bytes === 'number' ? o.bytes : undefined, kind: typeof o.kind === 'string' ? o.kind : undefined };
}

/** A prompt that uses a fresh product: its first sample prompt, else its new word. */
function tryPrompt(job: Job): string | undefined {
  const s = settingsOf(job);
  const samples = s.samplePrompts;
  if (Array.isArray(samples) && typeof samples[0] === 'string' && samples[0].trim()) return samples[0];
  const token = typeof s.token === 'string' ? s.token : undefined;
  if (!token) return undefined;
  const cls = typeof s.classPrompt === 'string' ? s.classPrompt : '';
  const m = /^(an?|the)\s+(.*)$/i.exec(cls.trim());
  if (str(job.request, 'technique') === 'dreambooth' && cls) return m ? `${m[1]} ${token} ${m[2]}` : `${token} ${cls}`;
  return token;
}

function samplesGrid(samples: SampleImage[]): HTMLElement {
  const byStep = new Map<number, SampleImage[]>();
  for (const s of samples) byStep.set(s.step, [...(byStep.get(s.step) ?? []), s]);
  const steps = [...byStep.keys()].sort((a, b) => a - b);
  return h(
    'div',
    { class: 'samples', testid: 'job-samples' },
    steps.length === 0 ? h('p', { class: 'hint' }, 'No sample pictures (add sample prompts in Train to get some).') : null,
    steps.map((step) =>
      h('div', { class: 'sample-step', testid: 'job-sample-step', 'data-step': step },
        h('span', { class: 'sample-label' }, `Step ${step}`),
        h('div', { class: 'sample-images' }, (byStep.get(step) ?? []).map((s) => h('a', { href: s.url, target: '_blank', rel: 'noopener' }, h('img', { src: s.url, alt: `Sample at step ${step}`, testid: 'job-sample', loading: 'lazy' })))),
      ),
    ),
  );
}

function snapshotsList(d: JobDetail): HTMLElement {
  const rec = d.recommendation?.step;
  // The message outlives the re-renders that live updates cause.
  const out = h('p', { class: 'hint', testid: 'job-pick-result', 'aria-live': 'polite' }, pickMessage?.id === d.id ? pickMessage.text : '');
  return h(
    'div',
    { class: 'snapshots', testid: 'job-snapshots' },
    d.snapshots.length === 0 ? h('p', { class: 'hint' }, 'No snapshots saved (yet).') : null,
    h('ul', {},
      [...d.snapshots].sort((a, b) => a.step - b.step).map((s) => {
        const pick = h('button', { type: 'button', class: 'secondary small', testid: 'job-pick', 'data-step': s.step }, 'Keep this one');
        pick.addEventListener('click', () =>
          void busy(pick, async () => {
            const a: AdapterInfo = await api.pickSnapshot(d.id, s.step);
            pickMessage = { id: d.id, text: `Kept step ${s.step}: "${a.name}" (${formatBytes(a.bytes)}) is now the result in the library.` };
            out.textContent = pickMessage.text;
            showNotice(`Kept the step ${s.step} snapshot as ${a.name}.`);
          }),
        );
        return h('li', { testid: 'job-snapshot', 'data-step': s.step, class: s.step === rec ? 'recommended' : '' },
          h('span', {}, `Step ${s.step}`),
          s.step === rec ? h('span', { class: 'badge' }, 'recommended') : null,
          h('span', { class: 'hint' }, s.file),
          pick,
        );
      }),
    ),
    out,
  );
}

/** What the worker warned about (skipped images, unreadable captions), under the job's status. */
function warningsList(job: Job): HTMLElement | null {
  const w = job.warnings;
  if (w.length === 0) return null;
  return h('div', { class: 'job-warnings', testid: 'job-warnings', role: 'status' },
    h('h3', {}, w.length === 1 ? '1 warning' : `${w.length} warnings`),
    h('ul', {}, w.map((text) => h('li', { testid: 'job-warning' }, text))),
  );
}

function resultBlock(d: JobDetail): HTMLElement | null {
  if (d.status !== 'done' || d.result === null || d.result === undefined) return null;
  if (d.type === 'generate') {
    const r = d.result as GenerateResult;
    if (!Array.isArray(r.images)) return null;
    return h('div', { class: 'sample-images' }, r.images.map((i) => h('img', { src: i.url, alt: i.parameters.split('\n')[0], class: 'pixel' })));
  }
  if (d.type === 'preflight') {
    const p = d.result as Preflight;
    return h('div', {}, h('p', {}, `${p.steps} steps, ${formatDuration(p.eta_seconds)}, ≈ ${formatBytes(p.memory_bytes)} of memory`), p.text ? h('pre', {}, p.text) : null);
  }
  const prod = productOf(d);
  if (prod.name) return h('p', {}, `Result: ${prod.name}${prod.kind ? ` (${prod.kind})` : ''}${prod.bytes !== undefined ? `, ${formatBytes(prod.bytes)}` : ''} — in the Library.`);
  return null;
}

function renderDetail(): void {
  const d = detail;
  if (!d) {
    fill(detailBox, h('p', { class: 'empty' }, 'Choose a job to see how it is going.'));
    return;
  }
  const actions = h('div', { class: 'actions' });
  if (d.status === 'queued' || d.status === 'running') {
    const cancel = h('button', { type: 'button', class: 'secondary', testid: 'job-cancel' }, 'Cancel');
    cancel.addEventListener('click', () =>
      void busy(cancel, async () => {
        upsertAndShow(await api.cancelJob(d.id));
      }),
    );
    actions.append(cancel);
  }
  if (d.type === 'train' && (d.status === 'interrupted' || d.status === 'cancelled' || d.status === 'failed')) {
    const resume = h('button', { type: 'button', class: 'primary', testid: 'job-resume' }, 'Resume from the last checkpoint');
    resume.addEventListener('click', () =>
      void busy(resume, async () => {
        upsertAndShow(await api.resumeJob(d.id));
        showNotice('Training continues from its last checkpoint.');
      }),
    );
    actions.append(resume);
  }
  if (d.type === 'train' && d.status === 'done') {
    const tryIt = h('button', { type: 'button', class: 'primary', testid: 'job-try' }, 'Try it in Generate');
    tryIt.addEventListener('click', () =>
      void busy(tryIt, () => tryProduct({ technique: str(d.request, 'technique') ?? '', name: productOf(d).name ?? str(d.request, 'name') ?? '', prompt: tryPrompt(d) })),
    );
    actions.append(tryIt);
  }
  const isTrain = d.type === 'train';
  const rec = d.recommendation;
  fill(
    detailBox,
    h('div', { class: 'job-head' },
      h('h2', {}, titleOf(d)),
      h('span', { class: `status status-${d.status}`, testid: 'job-status' }, STATUS_LABEL[d.status] ?? d.status),
    ),
    h('p', { class: 'hint' }, [`Started ${formatDate(d.started ?? d.created)}`, d.finished && isFinished(d.status) ? ` · ended ${formatDate(d.finished)}` : ''].join('')),
    h('div', { class: 'job-progress-line' }, progressBar(d.progress, d.status), h('span', { testid: 'job-detail-steps', class: 'job-steps' }, stepsText(d.progress)), h('span', { class: 'hint', testid: 'job-message' }, d.progress?.message ?? '')),
    d.error ? h('p', { class: 'bad', testid: 'job-error', role: 'alert' }, d.error) : null,
    warningsList(d),
    actions,
    resultBlock(d),
    isTrain
      ? h('section', { class: 'card meter' },
          h('h3', {}, 'Is it learning or memorising?'),
          canvas,
          // Known from the request, so the key is right before the first validation comes in.
          meterLegend({ samples: Number((d.request.settings as Record<string, unknown> | undefined)?.sampleCheck ?? 0) > 0 || d.records.some((r) => r.sample_score !== undefined) }),
          h('p', { testid: 'job-recommendation', class: `recommendation ${rec ? `verdict-${rec.verdict}` : ''}` },
            rec ? `${rec.verdict === 'ok' ? 'Looks right' : rec.verdict === 'underfit' ? 'Still learning' : 'Memorising'}: ${rec.message}` : 'No recommendation yet: it comes after the first validations.'),
        )
      : null,
    isTrain ? h('section', { class: 'card' }, h('h3', {}, 'Sample pictures by step'), samplesGrid(d.samples)) : null,
    isTrain ? h('section', { class: 'card' }, h('h3', {}, 'Snapshots'), h('p', { class: 'hint' }, 'Saved copies along the way. Keep the one that looks best; it replaces the result in the library.'), snapshotsList(d)) : null,
    h('details', { class: 'request' }, h('summary', {}, 'What was asked'), h('pre', { class: 'mono' }, JSON.stringify(d.request, null, 2))),
  );
  if (isTrain) requestAnimationFrame(redraw);
}

function upsertAndShow(job: Job): void {
  upsert(job);
  if (job.id === selectedId) void loadDetail(job.id);
}

function redraw(): void {
  if (detail && canvas.isConnected) drawMeter(canvas, { records: detail.records, recommendation: detail.recommendation });
}

function onProgress(ev: Extract<JobEvent, { type: 'progress' }>): void {
  const p: Progress = { step: ev.step, total: ev.total, message: ev.message, loss: ev.loss };
  const job = jobs.find((j) => j.id === ev.id);
  if (job) {
    job.progress = p;
    if (job.status === 'queued') job.status = 'running';
    const row = rowEls.get(job.id);
    if (row) fillRow(row, job);
  }
  if (detail && detail.id === ev.id) {
    detail.progress = p;
    const line = detailBox.querySelector('.job-progress-line');
    if (line) fill(line, progressBar(p, detail.status), h('span', { testid: 'job-detail-steps', class: 'job-steps' }, stepsText(p)), h('span', { class: 'hint', testid: 'job-message' }, p.message));
  }
}

function onRecord(id: string, record: StepPoint): void {
  if (!detail || detail.id !== id) return;
  const i = detail.records.findIndex((r) => r.step === record.step);
  if (i >= 0) detail.records[i] = record;
  else detail.records.push(record);
  redraw();
  // The recommendation, samples and snapshots come with the detail, not the events.
  if (record.val_loss !== undefined) scheduleRefresh(1500);
}

function onWarning(id: string, text: string): void {
  const job = jobs.find((j) => j.id === id);
  if (job && !job.warnings.includes(text)) job.warnings = [...job.warnings, text];
  if (!detail || detail.id !== id || detail.warnings.includes(text)) return;
  detail.warnings = [...detail.warnings, text];
  const old = detailBox.querySelector('[data-testid="job-warnings"]');
  const box = warningsList(detail);
  if (old && box) old.replaceWith(box);
  else renderDetail();
}

async function refresh(): Promise<void> {
  jobs = await api.jobs();
  renderList();
}

export function createJobsTab(): HTMLElement {
  onEvent((ev) => {
    if (ev.type === 'job') {
      upsert(ev.job);
      if (ev.job.id === selectedId) {
        // Show the new status (and its buttons) at once; records and snapshots follow the fetch.
        if (detail && detail.id === ev.job.id) {
          detail = { ...detail, ...ev.job };
          renderDetail();
        }
        scheduleRefresh(150);
      }
    } else if (ev.type === 'progress') onProgress(ev);
    else if (ev.type === 'warning') onWarning(ev.id, ev.text);
    else if (ev.type === 'record') onRecord(ev.id, ev.record);
  });
  onReconnect(() => {
    void refresh().catch(() => undefined);
    if (selectedId) void loadDetail(selectedId);
  });
  new ResizeObserver(() => redraw()).observe(canvas);
  renderList();
  renderDetail();
  return h('div', { class: 'jobs-layout' }, h('div', { class: 'jobs-list-pane' }, h('h2', {}, 'Jobs'), list), detailBox);
}

export async function showJobs(arg?: string): Promise<void> {
  try {
    await refresh();
  } catch (e) {
    showError(e);
  }
  const id = arg ?? selectedId ?? jobs.find((j) => j.type === 'train')?.id ?? null;
  if (id) await select(id);
}
