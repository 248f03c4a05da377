// The Train tab: pick a technique (each with its trade-off in a sentence), a dataset and a preset,
// check the run first (steps, time, memory), then start it and watch it in the Jobs tab.
import type { AdapterInfo, DatasetSummary, Job, ModelInfo, Preflight, TechniqueKind, TrainRequest } from '../../src/server/api-types.ts';
import { api, waitForJob } from './api.ts';
import { busy, clearError, field, fill, formatBytes, formatDuration, formatNumber, h, navigate, option, showError } from './ui.ts';

const TECHNIQUES: readonly { kind: TechniqueKind; title: string; tag: string; explain: string }[] = [
  {
    kind: 'dreambooth',
    title: 'DreamBooth',
    tag: 'Whole model · GB',
    explain: "Trains the whole model: best detail, a GB-size file, and class images keep 'a cat' from turning into your cat.",
  },
  { kind: 'lora', title: 'LoRA', tag: 'Plug-in · MB', explain: 'A small plug-in (MBs) you apply at a weight; good for styles and subjects.' },
  {
    kind: 'embedding',
    title: 'Textual inversion',
    tag: 'One new word · KB',
    explain: 'Teaches one new word (KBs); everything else stays frozen — gentlest, least detail.',
  },
  { kind: 'hypernetwork', title: 'Hypernetwork', tag: 'Restyler · MB', explain: "Small networks that restyle the model's attention; A1111's format, good for styles." },
];

/** Settings only some techniques accept; the server refuses them for the others. */
const ONLY_FOR: Record<string, readonly TechniqueKind[]> = {
  token: ['dreambooth', 'embedding'],
  classPrompt: ['dreambooth'],
  classData: ['dreambooth'],
  numClassImages: ['dreambooth'],
  priorLossWeight: ['dreambooth'],
  trainTextEncoder: ['dreambooth', 'lora'],
  textEncoderLr: ['dreambooth', 'lora'],
  rank: ['lora'],
  alpha: ['lora'],
  convRank: ['lora'],
  convAlpha: ['lora'],
  loraFormat: ['lora'],
  vectors: ['embedding'],
  initText: ['embedding'],
  // The studio takes a built-in template by name (templateName); `template` would be a path.
  templateName: ['embedding', 'hypernetwork'],
  template: ['embedding', 'hypernetwork'],
  layerStructure: ['hypernetwork'],
  activation: ['hypernetwork'],
  layerNorm: ['hypernetwork'],
  dropoutStructure: ['hypernetwork'],
  weightInit: ['hypernetwork'],
  sizes: ['hypernetwork'],
};
const camel = (k: string) => k.replace(/[-_]([a-z])/g, (_m, c: string) => c.toUpperCase());

interface PresetValues {
  steps: number;
  lr: number;
  rank?: number;
  token?: string;
  classPrompt?: string;
  numClassImages?: number;
  /** Settings without a form field; they go into the JSON box, where they can be seen and edited. */
  extra: Record<string, unknown>;
}

// Tuned on the toy model (docs/toy-world.md): what the demo uses for a subject and a style.
const TOY_PRESET: Record<TechniqueKind, PresetValues> = {
  dreambooth: { steps: 160, lr: 1e-4, token: 'sks', classPrompt: 'a heart', numClassImages: 12, extra: {} },
  embedding: { steps: 200, lr: 5e-2, token: 'sksheart', extra: { templateName: 'filewords' } },
  lora: { steps: 300, lr: 5e-3, rank: 8, extra: { trainTextEncoder: false } },
  hypernetwork: { steps: 300, lr: 5e-3, extra: { templateName: 'filewords' } },
};
const PRESETS: Record<string, { label: string; values: Record<TechniqueKind, PresetValues> }> = {
  subject: { label: 'A subject (a thing, a pet, a character)', values: TOY_PRESET },
  style: { label: 'A style (a look, a way of drawing)', values: TOY_PRESET },
};

let technique: TechniqueKind = 'lora';
let nameTouched = false;

const radios = TECHNIQUES.map((t) =>
  h('input', { type: 'radio', name: 'technique', value: t.kind, testid: `train-technique-${t.kind}`, checked: t.kind === technique }),
);
const explain = h('p', { testid: 'train-explain', class: 'explain', 'aria-live': 'polite' });
const modelSelect = h('select', { testid: 'train-model' });
const datasetSelect = h('select', { testid: 'train-dataset', id: 'train-dataset' });
const validationSelect = h('select', { testid: 'train-validation-dataset' });
const nameInput = h('input', { type: 'text', testid: 'train-name', autocomplete: 'off', placeholder: 'my-style', pattern: '[A-Za-z0-9][A-Za-z0-9 ._\\-]*' });
const continueSelect = h('select', { testid: 'train-continue' });
/** The library's adapters, for "Continue from" (refilled when the technique changes). */
let library: AdapterInfo[] = [];
const presetSelect = h(
  'select',
  { testid: 'train-preset' },
  option('', 'None: I will set the numbers'),
  Object.entries(PRESETS).map(([k, p]) => option(k, p.label)),
);

const num = (testid: string, o: { value?: number; min?: number; step?: number | 'any'; placeholder?: string } = {}) =>
  h('input', { type: 'number', testid, value: o.value, min: o.min, step: o.step ?? 1, placeholder: o.placeholder, inputmode: 'decimal' });
const steps = num('train-steps', { value: 300, min: 1 });
const lr = h('input', { type: 'text', testid: 'train-lr', value: '5e-3', inputmode: 'decimal', autocomplete: 'off' });
const batchSize = num('train-batch', { value: 1, min: 1 });
const saveMemory = h('input', { type: 'checkbox', testid: 'train-save-memory' });
const rank = num('train-rank', { value: 8, min: 1 });
const token = h('input', { type: 'text', testid: 'train-token', autocomplete: 'off', placeholder: 'sks' });
const classPrompt = h('input', { type: 'text', testid: 'train-class-prompt', autocomplete: 'off', placeholder: 'a heart' });
const classImages = num('train-class-images', { value: 0, min: 0 });
const validateEvery = num('train-validate-every', { value: 10, min: 1 });
const sampleCheck = num('train-sample-check', { value: 0, min: 0 });
const checkpointEvery = num('train-checkpoint-every', { value: 25, min: 1 });
const sampleEvery = num('train-sample-every', { value: 25, min: 1 });
const samplePrompts = h('textarea', { testid: 'train-sample-prompts', rows: 3, placeholder: 'a sks heart, on a striped cyan background' });
const settingsJson = h('textarea', { testid: 'train-settings-json', rows: 6, spellcheck: false, class: 'mono' }, '{}');
const preflightButton = h('button', { type: 'button', testid: 'train-preflight', class: 'secondary' }, 'Check first');
const startButton = h('button', { type: 'button', testid: 'train-start', class: 'primary' }, 'Start training');
const preflightResult = h('div', { testid: 'preflight-result', class: 'preflight', 'aria-live': 'polite' });

/** Wrappers of the fields that belong to some techniques only. */
const onlyFor: { el: HTMLElement; kinds: readonly TechniqueKind[] }[] = [];
function techField(kinds: readonly TechniqueKind[], label: string, control: HTMLElement, hint: string): HTMLElement {
  const el = field(label, control, hint);
  onlyFor.push({ el, kinds });
  return el;
}

function readJson(): Record<string, unknown> {
  const text = settingsJson.value.trim();
  if (!text) return {};
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new Error(`"All settings (JSON)" is not valid JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('"All settings (JSON)" must be a JSON object, like {"seed": 1}');
  return v as Record<string, unknown>;
}

function writeJson(o: Record<string, unknown>): void {
  settingsJson.value = Object.keys(o).length ? JSON.stringify(o, null, 2) : '{}';
}

function applyPreset(): void {
  const preset = PRESETS[presetSelect.value];
  if (!preset) return;
  const p = preset.values[technique];
  steps.value = String(p.steps);
  lr.value = String(p.lr);
  if (p.rank !== undefined) rank.value = String(p.rank);
  if (p.token !== undefined) token.value = p.token;
  if (p.classPrompt !== undefined) classPrompt.value = p.classPrompt;
  if (p.numClassImages !== undefined) classImages.value = String(p.numClassImages);
  let extra: Record<string, unknown> = {};
  try {
    extra = readJson();
  } catch {
    extra = {};
  }
  // Preset keys of other techniques go; the user's own other keys stay.
  for (const other of Object.values(preset.values)) for (const k of Object.keys(other.extra)) delete extra[k];
  writeJson({ ...extra, ...p.extra });
}

function suggestName(): void {
  if (nameTouched) return;
  const ds = datasetSelect.value;
  nameInput.value = ds ? `${ds}-${technique}`.replace(/[^A-Za-z0-9 ._-]/g, '-').slice(0, 80) : '';
}

function fillContinue(): void {
  const mine = library.filter((a) => a.kind === technique).map((a) => ({ value: a.name, label: a.name }));
  fillSelect(continueSelect, mine, { value: '', label: mine.length ? 'Nothing: start a new one' : 'Nothing in the library yet' }, continueSelect.value);
}

function setTechnique(kind: TechniqueKind): void {
  technique = kind;
  fillContinue();
  const t = TECHNIQUES.find((x) => x.kind === kind);
  explain.textContent = t ? t.explain : '';
  for (const r of radios) r.closest('.technique-card')?.classList.toggle('selected', r.value === kind);
  for (const f of onlyFor) f.el.hidden = !f.kinds.includes(kind);
  if (presetSelect.value) applyPreset();
  else {
    try {
      const o = readJson();
      let changed = false;
      for (const k of Object.keys(o)) {
        const only = ONLY_FOR[camel(k)];
        if (only && !only.includes(kind)) {
          delete o[k];
          changed = true;
        }
      }
      if (changed) writeJson(o);
    } catch {
      // Invalid JSON is reported when the run is checked or started.
    }
  }
  suggestName();
}

function intOf(input: HTMLInputElement, label: string): number | undefined {
  if (input.value.trim() === '') return undefined;
  const n = Number(input.value);
  if (!Number.isInteger(n)) throw new Error(`${label} must be a whole number`);
  return n;
}

/** The request the form describes; throws a plain sentence when something is missing. */
function buildRequest(): TrainRequest {
  if (!datasetSelect.value) throw new Error('Choose a dataset first (make one in the Datasets tab).');
  const name = nameInput.value.trim();
  if (!name) throw new Error('Give the result a name: it becomes the file name in the library.');
  const s: Record<string, unknown> = {};
  const put = (k: string, v: unknown) => {
    if (v !== undefined && v !== '') s[k] = v;
  };
  put('steps', intOf(steps, 'Steps'));
  if (lr.value.trim()) {
    const v = Number(lr.value);
    if (!Number.isFinite(v) || v <= 0) throw new Error('Learning rate must be a positive number, like 1e-4 or 0.0001');
    s.lr = v;
  }
  put('batchSize', intOf(batchSize, 'Batch size'));
  if (saveMemory.checked) s.gradientCheckpointing = true;
  if (technique === 'lora') put('rank', intOf(rank, 'Rank'));
  if (technique === 'dreambooth' || technique === 'embedding') {
    if (!token.value.trim()) throw new Error(technique === 'dreambooth' ? 'DreamBooth needs a token: a rare word for your subject, like "sks".' : 'Textual inversion needs a token: the new word, like "sksheart".');
    s.token = token.value.trim();
  }
  if (technique === 'dreambooth') {
    const images = intOf(classImages, 'Class images') ?? 0;
    if (classPrompt.value.trim()) {
      s.classPrompt = classPrompt.value.trim();
      s.numClassImages = images;
    } else if (images > 0) throw new Error('Class images need a class prompt: what your subject is in general, like "a heart".');
  }
  put('validateEvery', intOf(validateEvery, 'Validate every'));
  put('sampleCheck', intOf(sampleCheck, 'Sample check'));
  put('checkpointEvery', intOf(checkpointEvery, 'Checkpoint every'));
  const prompts = samplePrompts.value.split('\n').map((l) => l.trim()).filter(Boolean);
  if (prompts.length) {
    s.samplePrompts = prompts;
    put('sampleEvery', intOf(sampleEvery, 'Sample every'));
  }
  const req: TrainRequest = { technique, dataset: datasetSelect.value, name, settings: { ...s, ...readJson() } };
  if (modelSelect.value) req.model = modelSelect.value;
  if (validationSelect.value) req.validation_dataset = validationSelect.value;
  if (technique !== 'dreambooth' && continueSelect.value) {
    req.continue_from = continueSelect.value;
    // Continuing a file under its own name replaces it when the run is done, as A1111 does.
    if (continueSelect.value === name) req.overwrite = true;
  }
  return req;
}

function isPreflight(v: unknown): v is Preflight {
  return typeof v === 'object' && v !== null && typeof (v as { steps?: unknown }).steps === 'number';
}

async function runPreflight(): Promise<void> {
  clearError();
  const req = buildRequest();
  fill(preflightResult, h('p', { class: 'hint' }, 'Checking: timing one step on this machine…'));
  let final: Job;
  try {
    const job = await api.preflight(req);
    final = await waitForJob(job.id, (j) => {
      if (j.status === 'queued') fill(preflightResult, h('p', { class: 'hint' }, 'Waiting for the machine (another job is running)…'));
    });
  } catch (e) {
    fill(preflightResult, h('p', { class: 'bad' }, 'The check could not run: see the message at the top.'));
    throw e;
  }
  if (final.status === 'done' && isPreflight(final.result)) {
    const p = final.result;
    fill(
      preflightResult,
      h('ul', { class: 'facts' },
        h('li', {}, h('strong', {}, formatNumber(p.steps)), ' steps'),
        h('li', {}, h('strong', {}, formatDuration(p.eta_seconds)), ' on this machine'),
        h('li', {}, h('strong', {}, `≈ ${formatBytes(p.memory_bytes)}`), ' of memory'),
        h('li', {}, h('strong', {}, formatNumber(p.trainable_parameters)), ' numbers to learn'),
      ),
      p.text ? h('pre', { class: 'preflight-text' }, p.text) : null,
    );
  } else {
    const why = final.error ?? `the check ended: ${final.status}`;
    fill(preflightResult, h('p', { class: 'bad' }, `The check did not pass: ${why}`));
    if (final.status === 'failed') showError(why);
  }
}

async function startTraining(): Promise<void> {
  clearError();
  const job = await api.startTraining(buildRequest());
  navigate('jobs', job.id);
}

function fillSelect(select: HTMLSelectElement, items: { value: string; label: string }[], first: { value: string; label: string } | null, keep: string): void {
  fill(select, first ? option(first.value, first.label) : null, items.map((i) => option(i.value, i.label, i.value === keep)));
  if (![...select.options].some((o) => o.value === keep) && select.options.length) select.selectedIndex = 0;
}

let datasetsEmpty: HTMLElement | null = null;

async function refresh(preselect?: string): Promise<void> {
  const [models, datasets, status, adapters] = await Promise.all([api.models(), api.datasets(), api.status().catch(() => null), api.adapters().catch(() => [])]);
  library = adapters;
  fillContinue();
  const modelKeep = modelSelect.value || status?.default_model || '';
  fillSelect(modelSelect, models.map((m: ModelInfo) => ({ value: m.name, label: m.builtin ? `${m.name} (built in)` : m.name })), null, modelKeep);
  const label = (d: DatasetSummary) => `${d.name} (${d.images} picture${d.images === 1 ? '' : 's'}, ${d.captioned} captioned)`;
  const dsKeep = preselect ?? datasetSelect.value;
  fillSelect(datasetSelect, datasets.map((d) => ({ value: d.name, label: label(d) })), datasets.length ? null : { value: '', label: 'No datasets yet' }, dsKeep);
  fillSelect(validationSelect, datasets.map((d) => ({ value: d.name, label: label(d) })), { value: '', label: 'None: set aside 4 of the training pictures' }, validationSelect.value);
  if (datasetsEmpty) datasetsEmpty.hidden = datasets.length > 0;
  suggestName();
}

export function createTrainTab(): HTMLElement {
  const cards = h(
    'fieldset',
    { class: 'techniques' },
    h('legend', {}, 'What to train'),
    TECHNIQUES.map((t, i) =>
      h('label', { class: 'technique-card' }, radios[i], h('span', { class: 'technique-title' }, t.title), h('span', { class: 'technique-tag' }, t.tag)),
    ),
  );
  for (const r of radios) r.addEventListener('change', () => r.checked && setTechnique(r.value as TechniqueKind));
  datasetSelect.addEventListener('change', suggestName);
  nameInput.addEventListener('input', () => {
    nameTouched = nameInput.value.trim() !== '';
  });
  presetSelect.addEventListener('change', applyPreset);
  preflightButton.addEventListener('click', () => void busy(preflightButton, runPreflight));

  datasetsEmpty = h('p', { class: 'hint warn', hidden: true }, 'You have no datasets yet: add pictures first.');
  const form = h(
    'form',
    { class: 'train-form', novalidate: true },
    cards,
    explain,
    h('section', { class: 'card' },
      h('h3', {}, 'What to learn from'),
      h('div', { class: 'grid-fields' },
        h('div', { class: 'field' },
          h('label', { class: 'field-label', for: 'train-dataset' }, 'Dataset'),
          datasetSelect,
          h('span', { class: 'hint' }, 'The pictures to learn from. ', h('a', { href: '#datasets', testid: 'train-datasets-link' }, 'Upload pictures in the Datasets tab'), '.'),
          datasetsEmpty,
        ),
        field('Held-out pictures', validationSelect, 'Optional: pictures kept out of training to measure real learning.'),
        field('Starting model', modelSelect, 'The model to fine-tune.'),
        field('Name of the result', nameInput, 'Letters, digits, spaces, . _ - ; this is the file name in the library.'),
        field('Preset', presetSelect, 'Fills in numbers that work on the built-in toy model.'),
        techField(['lora', 'embedding', 'hypernetwork'], 'Continue from', continueSelect, 'Optional: a file in your library to keep training. It keeps its rank, vectors or layers; give the result the same name to replace it.'),
      ),
    ),
    h('section', { class: 'card' },
      h('h3', {}, 'How long and how fast'),
      h('div', { class: 'grid-fields' },
        field('Steps', steps, 'How many small learning steps to take.'),
        field('Learning rate', lr, 'How big each step is; too big forgets, too small learns nothing.'),
        field('Batch size', batchSize, 'Pictures per step; more needs more memory.'),
        field('Save memory', saveMemory, 'Recomputes parts of the model instead of keeping them (gradient checkpointing): far less memory for about 40 % more time. For a GPU that runs out of memory.'),
        techField(['lora'], 'Rank', rank, 'How much the LoRA can hold; bigger is a larger file.'),
        techField(['dreambooth', 'embedding'], 'Token', token, 'The made-up word you will type in prompts, like "sks". With the presets, write it in your captions too.'),
        techField(['dreambooth'], 'Class prompt', classPrompt, 'What your subject is in general, like "a heart". [filewords] stands for each picture\'s caption without the token.'),
        techField(['dreambooth'], 'Class images', classImages, 'Pictures of the general class made first, to keep the model from forgetting it.'),
      ),
    ),
    h('section', { class: 'card' },
      h('h3', {}, 'Watching the run'),
      h('div', { class: 'grid-fields' },
        field('Validate every', validateEvery, 'Steps between measurements of the over/underfitting meter.'),
        field('Sample check', sampleCheck, 'Pictures drawn at each measurement and scored for your concept by a detector fitted on your pictures; the meter then follows them. 0 = off (each picture costs a generation).'),
        field('Checkpoint every', checkpointEvery, 'Steps between saved copies you can go back to.'),
        field('Sample every', sampleEvery, 'Steps between sample pictures (needs sample prompts).'),
        field('Sample prompts', samplePrompts, 'One per line; pictures are made with them as training goes.', 'wide'),
      ),
      h('details', { class: 'json-settings' },
        h('summary', { testid: 'train-settings-toggle' }, 'All settings (JSON)'),
        h('p', { class: 'hint' }, 'Any setting of `sdtune train`, e.g. {"seed": 1, "earlyStop": 3}. These win over the form above.'),
        h('label', { class: 'field' }, h('span', { class: 'field-label' }, 'Extra settings'), settingsJson),
      ),
    ),
    h('div', { class: 'actions' }, preflightButton, startButton),
    preflightResult,
  );
  // Training is costly, so only the button starts it; Enter in a field must not.
  form.addEventListener('submit', (ev) => ev.preventDefault());
  startButton.addEventListener('click', () => void busy(startButton, startTraining));
  setTechnique(technique);
  return form;
}

/** `arg`: a dataset to preselect, or `continue:KIND:NAME` (the Library's "Keep training"). */
export async function showTrain(arg?: string): Promise<void> {
  const cont = /^continue:(lora|embedding|hypernetwork):(.+)$/.exec(arg ?? '');
  try {
    await refresh(cont ? undefined : arg);
    if (cont) {
      const kind = cont[1] as TechniqueKind;
      for (const r of radios) r.checked = r.value === kind;
      setTechnique(kind);
      continueSelect.value = cont[2];
      // A new name by default: giving it the same name replaces the file when the run is done.
      nameInput.value = `${cont[2]}-more`.slice(0, 80);
      nameTouched = true;
    }
  } catch (e) {
    showError(e);
  }
}
