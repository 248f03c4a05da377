// The Generate tab: prompt → pictures, with LoRAs and hypernetworks at a weight, a live token
// counter, and a gallery whose pictures carry their settings (A1111's PNG info) to reuse.
import type { AdapterInfo, GenerateRequest, GenerateResult, HypernetworkRef, LoraRef, ModelInfo, OutputImage } from '../../src/server/api-types.ts';
import { api, onEvent, waitForJob } from './api.ts';
import { parseParameters, SAMPLERS, type Sampler } from './params.ts';
import { busy, clearError, debounce, field, fill, h, navigate, option, showError, showNotice } from './ui.ts';

type WeightKind = 'lora' | 'hypernetwork';

interface WeightRow {
  name: string;
  slider: HTMLInputElement;
  row: HTMLElement;
}

let models: ModelInfo[] = [];
let adapters: AdapterInfo[] = [];
let outputs: OutputImage[] = [];
const rows: Record<WeightKind, WeightRow[]> = { lora: [], hypernetwork: [] };

const numberInput = (testid: string, value: number, o: { min?: number; max?: number; step?: number } = {}) =>
  h('input', { type: 'number', testid, value, min: o.min, max: o.max, step: o.step ?? 1, inputmode: 'decimal' });

const modelSelect = h('select', { testid: 'gen-model' });
const prompt = h('textarea', { testid: 'gen-prompt', rows: 3, placeholder: 'a large red star at the top, on a striped cyan background' });
const tokenCount = h('span', { testid: 'token-count', class: 'token-count', 'aria-live': 'polite', title: 'Words the model reads, counted in tokens; every 75 starts a new chunk' }, '0/75');
const negative = h('textarea', { testid: 'gen-negative', rows: 2, placeholder: 'blurry' });
const negativeCount = h('span', { testid: 'token-count-negative', class: 'token-count', 'aria-live': 'polite' }, '0/75');

const loraSelect = h('select', { testid: 'gen-lora-select', 'aria-label': 'LoRA to add' });
const loraAdd = h('button', { type: 'button', testid: 'gen-lora-add', class: 'secondary' }, '+ LoRA');
const loraRows = h('div', { class: 'weight-rows', testid: 'gen-loras' });
const hyperSelect = h('select', { testid: 'gen-hyper-select', 'aria-label': 'Hypernetwork to add' });
const hyperAdd = h('button', { type: 'button', testid: 'gen-hyper-add', class: 'secondary' }, '+ Hypernetwork');
const hyperRows = h('div', { class: 'weight-rows', testid: 'gen-hypers' });
const embeddingsLine = h('p', { class: 'hint', testid: 'gen-embeddings' });

const sampler = h('select', { testid: 'gen-sampler' }, SAMPLERS.map((s) => option(s.value, s.label, s.value === 'euler_a')));
const karras = h('input', { type: 'checkbox', testid: 'gen-karras' });
const steps = numberInput('gen-steps', 20, { min: 1, max: 150 });
const cfg = numberInput('gen-cfg', 7, { min: 0, max: 30, step: 0.5 });
const seed = numberInput('gen-seed', -1, { min: -1 });
const width = numberInput('gen-width', 32, { min: 8, max: 2048, step: 8 });
const height = numberInput('gen-height', 32, { min: 8, max: 2048, step: 8 });
const batch = numberInput('gen-batch', 1, { min: 1, max: 16 });
const submit = h('button', { type: 'submit', testid: 'gen-submit', class: 'primary' }, 'Generate');
const cancel = h('button', { type: 'button', testid: 'gen-cancel', class: 'secondary', hidden: true }, 'Stop');
const progress = h('p', { testid: 'gen-progress', class: 'progress-line', 'aria-live': 'polite' });
/** The running generation's live preview: where the picture is heading, every few steps. */
const previewImg = h('img', { class: 'gen-preview-img', alt: 'Live preview of the picture being made' });
const previewCaption = h('figcaption', { class: 'hint' });
const preview = h('figure', { testid: 'gen-preview', class: 'gen-preview', hidden: true }, previewImg, previewCaption);
previewImg.addEventListener('error', () => (preview.hidden = true));
function hidePreview(): void {
  preview.hidden = true;
  previewImg.removeAttribute('src');
}

const gallery = h('div', { testid: 'gallery', class: 'gallery' });
const infoPanel = h('div', { class: 'png-panel card', hidden: true, testid: 'png-panel' });

let runningJob: string | null = null;

// ---- token counter ----

function counterText(c: { count: number; limit: number; chunks: number }): string {
  // A1111 shows 80/150 once a prompt spills into a second chunk of 75.
  const limit = c.count > c.limit ? Math.max(c.limit, 75 * Math.max(1, c.chunks)) : c.limit;
  return `${c.count}/${limit}`;
}

function makeCounter(area: HTMLTextAreaElement, out: HTMLElement): () => void {
  let seq = 0;
  const update = debounce(async () => {
    const mine = ++seq;
    try {
      const c = await api.tokenize(area.value);
      if (mine !== seq) return;
      out.textContent = counterText(c);
      out.classList.toggle('over', c.count > c.limit);
      out.title = 'Words the model reads, counted in tokens; every 75 starts a new chunk';
    } catch (e) {
      if (mine !== seq) return;
      out.textContent = '–';
      out.title = e instanceof Error ? `Could not count tokens: ${e.message}` : 'Could not count tokens';
    }
  }, 250);
  area.addEventListener('input', update);
  return update;
}
const updatePromptCount = makeCounter(prompt, tokenCount);
const updateNegativeCount = makeCounter(negative, negativeCount);

// ---- models and adapters ----

const isToy = (m: ModelInfo | undefined) => !!m && (m.family === 'toy' || m.name.startsWith('toy'));

function applyModelSize(): void {
  const side = isToy(models.find((m) => m.name === modelSelect.value)) || models.length === 0 ? 32 : 512;
  width.value = String(side);
  height.value = String(side);
}

function fillAdapterSelect(select: HTMLSelectElement, add: HTMLButtonElement, kind: WeightKind): void {
  const list = adapters.filter((a) => a.kind === kind);
  const previous = select.value;
  if (list.length === 0) {
    fill(select, option('', kind === 'lora' ? 'No LoRAs yet: train one' : 'No hypernetworks yet: train one'));
    select.disabled = true;
    add.disabled = true;
    return;
  }
  fill(select, list.map((a) => option(a.name, a.name, a.name === previous)));
  select.disabled = false;
  add.disabled = false;
}

function renderEmbeddings(): void {
  const words = adapters.filter((a) => a.kind === 'embedding').map((a) => a.name);
  if (words.length === 0) {
    fill(embeddingsLine, 'No embeddings in the library yet. Train one in the Train tab and type its word in the prompt.');
    return;
  }
  const parts: (Node | string)[] = ['Embeddings in the library: '];
  words.forEach((w, i) => {
    if (i) parts.push(', ');
    parts.push(h('button', { type: 'button', class: 'link', title: `Add "${w}" to the prompt`, onclick: () => insertWord(w) }, w));
  });
  parts.push(' (type the word in the prompt)');
  fill(embeddingsLine, ...parts);
}

function insertWord(word: string): void {
  const v = prompt.value;
  prompt.value = v && !/\s$/.test(v) ? `${v} ${word}` : v + word;
  prompt.focus();
  updatePromptCount();
}

/** Reloads the model and adapter lists; keeps what is chosen and the weight rows. */
export async function refreshLists(): Promise<void> {
  const [m, a] = await Promise.all([api.models(), api.adapters()]);
  const hadModels = models.length > 0;
  models = m;
  adapters = a;
  const previous = modelSelect.value;
  let chosen = previous;
  if (!hadModels || !models.some((x) => x.name === previous)) {
    const st = await api.status().catch(() => null);
    chosen = models.find((x) => x.name === st?.default_model)?.name ?? models[0]?.name ?? '';
  }
  fill(modelSelect, models.map((x) => option(x.name, x.builtin ? `${x.name} (built in)` : x.name, x.name === chosen)));
  if (!hadModels) applyModelSize();
  fillAdapterSelect(loraSelect, loraAdd, 'lora');
  fillAdapterSelect(hyperSelect, hyperAdd, 'hypernetwork');
  renderEmbeddings();
}

function addWeightRow(kind: WeightKind, name: string, weight = 1): void {
  if (!name) return;
  const existing = rows[kind].find((r) => r.name === name);
  if (existing) {
    existing.slider.value = String(weight);
    existing.slider.dispatchEvent(new Event('input'));
    existing.slider.focus();
    return;
  }
  const prefix = kind === 'lora' ? 'lora' : 'hyper';
  const value = h('output', { class: 'weight-value', testid: `${prefix}-weight-value` }, weight.toFixed(2));
  const slider = h('input', { type: 'range', min: 0, max: 1.5, step: 0.05, value: weight, testid: `${prefix}-weight`, 'aria-label': `Weight of ${name}` });
  slider.value = String(weight);
  slider.addEventListener('input', () => {
    value.textContent = Number(slider.value).toFixed(2);
  });
  const remove = h('button', { type: 'button', class: 'secondary small', testid: `${prefix}-remove`, 'aria-label': `Remove ${name}` }, 'Remove');
  const row = h('div', { class: 'weight-row', testid: `${prefix}-row`, 'data-name': name }, h('span', { class: 'weight-name' }, name), slider, value, remove);
  const entry: WeightRow = { name, slider, row };
  remove.addEventListener('click', () => {
    rows[kind] = rows[kind].filter((r) => r !== entry);
    row.remove();
  });
  rows[kind].push(entry);
  (kind === 'lora' ? loraRows : hyperRows).append(row);
}

function clearWeightRows(): void {
  for (const kind of ['lora', 'hypernetwork'] as const) {
    for (const r of rows[kind]) r.row.remove();
    rows[kind] = [];
  }
}

// ---- the gallery ----

function renderGallery(): void {
  if (outputs.length === 0) {
    fill(gallery, h('p', { class: 'empty' }, 'No pictures yet. Write a prompt and press Generate.'));
    return;
  }
  fill(
    gallery,
    outputs.map((o) =>
      h(
        'button',
        { type: 'button', class: 'gallery-item', title: o.parameters.split('\n')[0], onclick: () => showInfo(o) },
        h('img', { src: o.url, alt: o.parameters.split('\n')[0] || o.file, testid: 'gallery-image', loading: 'lazy', width: 128, height: 128 }),
      ),
    ),
  );
}

function addOutputs(images: OutputImage[]): void {
  const known = new Set(images.map((i) => i.url));
  outputs = [...images, ...outputs.filter((o) => !known.has(o.url))];
  renderGallery();
}

async function refreshOutputs(): Promise<void> {
  const fresh = await api.outputs();
  const known = new Set(fresh.map((i) => i.url));
  // Keep pictures this page just made even if the list has not caught up yet.
  outputs = [...outputs.filter((o) => !known.has(o.url) && !fresh.some((f) => f.file === o.file)), ...fresh];
  renderGallery();
}

function showInfo(o: OutputImage): void {
  const use = h('button', { type: 'button', class: 'primary', testid: 'png-use' }, 'Use these settings');
  use.addEventListener('click', () => useParameters(o.parameters));
  const close = h('button', { type: 'button', class: 'secondary', testid: 'png-close' }, 'Close');
  close.addEventListener('click', () => {
    infoPanel.hidden = true;
  });
  fill(
    infoPanel,
    h('div', { class: 'png-panel-body' },
      h('a', { href: o.url, target: '_blank', rel: 'noopener', class: 'png-big-link' }, h('img', { src: o.url, alt: 'The chosen picture', class: 'png-big' })),
      h('div', { class: 'png-text' },
        h('h3', {}, 'Settings stored in this picture'),
        h('pre', { testid: 'png-info', class: 'png-info' }, o.parameters || '(this picture has no settings stored)'),
        h('div', { class: 'actions' }, use, h('a', { href: o.url, download: o.file, class: 'button secondary' }, 'Download'), close),
      ),
    ),
  );
  infoPanel.hidden = false;
  infoPanel.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
}

/** Fills the form from A1111's parameters text. */
export function useParameters(text: string): void {
  const p = parseParameters(text);
  if (p.model) {
    const m = models.find((x) => x.name === p.model || x.title === p.model || x.title.startsWith(`${p.model}.`) || x.title.startsWith(`${p.model} `));
    if (m) modelSelect.value = m.name;
    else showNotice(`The model "${p.model}" is not in the library; keeping ${modelSelect.value}.`);
  }
  prompt.value = p.prompt;
  negative.value = p.negative;
  if (p.steps !== undefined) steps.value = String(p.steps);
  if (p.cfg !== undefined) cfg.value = String(p.cfg);
  if (p.seed !== undefined) seed.value = String(p.seed);
  if (p.sampler) sampler.value = p.sampler;
  karras.checked = !!p.karras;
  if (p.width !== undefined) width.value = String(p.width);
  if (p.height !== undefined) height.value = String(p.height);
  clearWeightRows();
  const missing: string[] = [];
  for (const t of p.tags) {
    if (adapters.some((a) => a.kind === t.kind && a.name === t.name)) addWeightRow(t.kind, t.name, t.weight);
    else missing.push(t.name);
  }
  if (missing.length) showNotice(`Not in the library, so left out: ${missing.join(', ')}.`);
  else showNotice('The form now holds the settings of that picture.');
  updatePromptCount();
  updateNegativeCount();
  prompt.focus();
}

// ---- generating ----

function numberOf(input: HTMLInputElement, label: string): number {
  const n = Number(input.value);
  if (input.value.trim() === '' || !Number.isFinite(n)) throw new Error(`${label} must be a number`);
  return n;
}

function buildRequest(): GenerateRequest {
  if (!prompt.value.trim()) throw new Error('Write a prompt first: a sentence describing the picture.');
  let s = Math.round(numberOf(seed, 'Seed'));
  // -1 means "surprise me": draw the seed here so the PNG info names the one that was used.
  if (s < 0) s = Math.floor(Math.random() * 2 ** 31);
  const loras: LoraRef[] = rows.lora.map((r) => ({ name: r.name, weight: Number(r.slider.value) }));
  const hypernetworks: HypernetworkRef[] = rows.hypernetwork.map((r) => ({ name: r.name, weight: Number(r.slider.value) }));
  const req: GenerateRequest = {
    prompt: prompt.value,
    model: modelSelect.value || undefined,
    seed: s,
    steps: Math.round(numberOf(steps, 'Steps')),
    sampler: sampler.value as Sampler,
    cfg: numberOf(cfg, 'CFG scale'),
    width: Math.round(numberOf(width, 'Width')),
    height: Math.round(numberOf(height, 'Height')),
    batch: Math.round(numberOf(batch, 'Batch')),
  };
  if (negative.value.trim()) req.negative_prompt = negative.value;
  if (karras.checked) req.karras = true;
  if (loras.length) req.loras = loras;
  if (hypernetworks.length) req.hypernetworks = hypernetworks;
  return req;
}

function isGenerateResult(v: unknown): v is GenerateResult {
  return typeof v === 'object' && v !== null && Array.isArray((v as { images?: unknown }).images);
}

async function runGenerate(): Promise<void> {
  clearError();
  const req = buildRequest();
  submit.disabled = true;
  progress.textContent = 'Sending…';
  try {
    const job = await api.generate(req);
    runningJob = job.id;
    cancel.hidden = false;
    progress.textContent = job.status === 'queued' ? 'Waiting for the machine (another job is running)…' : 'Starting…';
    const final = await waitForJob(
      job.id,
      (j) => {
        if (j.status === 'queued') progress.textContent = 'Waiting for the machine (another job is running)…';
        else if (j.status === 'running' && j.progress) progress.textContent = `Step ${j.progress.step} of ${j.progress.total}${j.progress.message ? ` · ${j.progress.message}` : ''}`;
      },
      (p) => {
        progress.textContent = `Step ${p.step} of ${p.total}${p.message ? ` · ${p.message}` : ''}`;
      },
    );
    if (final.status === 'done' && isGenerateResult(final.result)) {
      addOutputs(final.result.images);
      const n = final.result.images.length;
      progress.textContent = `Done: ${n} picture${n === 1 ? '' : 's'} in ${final.result.seconds.toFixed(1)} s.`;
    } else if (final.status === 'failed') {
      progress.textContent = 'It did not work.';
      showError(final.error ?? 'The picture could not be made.');
    } else {
      progress.textContent = final.status === 'cancelled' ? 'Stopped.' : `Ended: ${final.status}.`;
    }
  } catch (e) {
    progress.textContent = '';
    throw e;
  } finally {
    runningJob = null;
    hidePreview();
    cancel.hidden = true;
    submit.disabled = false;
  }
}

/** "Try it in Generate" from the Jobs tab: choose the new product and a prompt that uses it. */
export async function tryProduct(p: { technique: string; name: string; prompt?: string }): Promise<void> {
  await refreshLists();
  if (p.technique === 'lora' || p.technique === 'hypernetwork') {
    const kind: WeightKind = p.technique;
    if (!adapters.some((a) => a.kind === kind && a.name === p.name)) throw new Error(`The ${kind === 'lora' ? 'LoRA' : 'hypernetwork'} "${p.name}" is not in the library yet.`);
    addWeightRow(kind, p.name, 1);
  } else if (p.technique === 'dreambooth') {
    if (models.some((m) => m.name === p.name)) {
      modelSelect.value = p.name;
      applyModelSize();
    }
  }
  if (p.prompt) prompt.value = p.prompt;
  updatePromptCount();
  navigate('generate');
}

export function createGenerateTab(): HTMLElement {
  modelSelect.addEventListener('change', applyModelSize);
  loraAdd.addEventListener('click', () => addWeightRow('lora', loraSelect.value));
  hyperAdd.addEventListener('click', () => addWeightRow('hypernetwork', hyperSelect.value));
  cancel.addEventListener('click', () => {
    if (runningJob) void busy(cancel, async () => void (await api.cancelJob(runningJob as string)));
  });
  const form = h(
    'form',
    { class: 'card gen-form', novalidate: true },
    field('Model', modelSelect, 'The picture-maker to use. Your DreamBooth results appear here too.'),
    h('label', { class: 'field' }, h('span', { class: 'field-label' }, 'Prompt ', tokenCount), prompt, h('span', { class: 'hint' }, 'Describe the picture in plain words.')),
    h('label', { class: 'field' }, h('span', { class: 'field-label' }, 'Negative prompt ', negativeCount), negative, h('span', { class: 'hint' }, 'What to keep out of the picture.')),
    h('fieldset', { class: 'adapters' },
      h('legend', {}, 'Add-ons'),
      h('div', { class: 'adapter-picker' }, loraSelect, loraAdd),
      h('p', { class: 'hint' }, 'LoRAs add a style or subject; the slider sets how strongly.'),
      loraRows,
      h('div', { class: 'adapter-picker' }, hyperSelect, hyperAdd),
      h('p', { class: 'hint' }, 'Hypernetworks restyle the whole picture.'),
      hyperRows,
      embeddingsLine,
    ),
    h('div', { class: 'grid-fields' },
      field('Sampler', sampler, 'How the noise is cleaned up.'),
      field('Steps', steps, 'More steps: finer, slower.'),
      field('CFG scale', cfg, 'How closely to follow the prompt.'),
      field('Seed', seed, '-1 picks a new one each time.'),
      field('Width', width),
      field('Height', height),
      field('Batch', batch, 'Pictures per run.'),
      h('label', { class: 'field checkbox' }, karras, h('span', {}, 'Karras schedule (often cleaner at few steps)')),
    ),
    h('div', { class: 'actions' }, submit, cancel),
    progress,
  );
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    runGenerate().catch((e: unknown) => showError(e));
  });
  // Ctrl/Cmd+Enter in the prompt generates, as in A1111.
  prompt.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey) && !submit.disabled) form.requestSubmit();
  });
  // A generate job started elsewhere (or by another page) still lands in the gallery.
  onEvent((ev) => {
    if (ev.type === 'job' && ev.job.type === 'generate' && ev.job.status === 'done' && isGenerateResult(ev.job.result)) addOutputs(ev.job.result.images);
    if (ev.type === 'preview' && ev.id === runningJob) {
      previewImg.src = `/api/jobs/${encodeURIComponent(ev.id)}/preview?step=${ev.step}`;
      previewCaption.textContent = `Where it is heading, at step ${ev.step} of ${ev.total}`;
      preview.hidden = false;
    }
  });
  renderGallery();
  return h(
    'div',
    { class: 'gen-layout' },
    form,
    h('div', { class: 'gen-results' }, h('h2', {}, 'Pictures'), h('p', { class: 'hint' }, 'Click a picture to see the settings that made it.'), preview, infoPanel, gallery),
  );
}

export async function showGenerate(): Promise<void> {
  const results = await Promise.allSettled([refreshLists(), refreshOutputs()]);
  for (const r of results) if (r.status === 'rejected') showError(r.reason);
  updatePromptCount();
  updateNegativeCount();
}
