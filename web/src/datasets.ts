// The Datasets tab: folders of training pictures with their captions. Upload by picker or drag and
// drop (pictures first, then .txt files whose name matches a picture become its caption), edit
// captions in place, and preview the size buckets training will use.
import type { DatasetDetail, DatasetImage, DatasetSummary } from '../../src/server/api-types.ts';
import { api } from './api.ts';
import { busy, clearError, errorMessage, field, fill, formatBytes, h, navigate, showError, showNotice } from './ui.ts';

const NAME = /^[A-Za-z0-9][A-Za-z0-9 ._-]{0,79}$/;
const IMAGE_TYPES: Record<string, string> = { png: 'image/png', jpg: 'image/jpeg', jpeg: 'image/jpeg', webp: 'image/webp' };

let datasets: DatasetSummary[] = [];
let selected: string | null = null;
let detail: DatasetDetail | null = null;
let resolutionTouched = false;

const listEl = h('div', { class: 'dataset-list', testid: 'dataset-list' });
const nameInput = h('input', { type: 'text', testid: 'dataset-name', autocomplete: 'off', placeholder: 'my-cat', maxlength: 80 });
const createButton = h('button', { type: 'submit', testid: 'dataset-create', class: 'primary' }, 'Create');
const detailEl = h('div', { class: 'dataset-detail', testid: 'dataset-detail' });
const upload = h('input', { type: 'file', multiple: true, accept: 'image/png,image/jpeg,image/webp,.txt', testid: 'dataset-upload', id: 'dataset-upload' });
const grid = h('div', { class: 'dataset-grid', testid: 'dataset-grid' });
const results = h('ul', { class: 'upload-results', testid: 'upload-results', 'aria-live': 'polite' });
const resolution = h('input', { type: 'number', testid: 'dataset-bucket-resolution', value: 32, min: 8, max: 4096, step: 8 });
const bucketsButton = h('button', { type: 'button', class: 'secondary', testid: 'dataset-buckets' }, 'Preview buckets');
const bucketsOut = h('pre', { class: 'buckets', testid: 'bucket-preview', hidden: true });

const stem = (file: string) => file.replace(/\.[^.]*$/, '');
const extOf = (file: string) => (/\.([^.]+)$/.exec(file)?.[1] ?? '').toLowerCase();

/** The upload's Content-Type: the browser's, or one from the extension when it gives none. */
function imageType(f: File): string | null {
  if (f.type && Object.values(IMAGE_TYPES).includes(f.type)) return f.type;
  return IMAGE_TYPES[extOf(f.name)] ?? null;
}

function renderList(): void {
  if (datasets.length === 0) {
    fill(listEl, h('p', { class: 'empty' }, 'No datasets yet. Name one above to start.'));
    return;
  }
  fill(
    listEl,
    datasets.map((d) => {
      const b = h(
        'button',
        { type: 'button', class: `dataset-row${d.name === selected ? ' selected' : ''}`, testid: 'dataset-row', 'data-name': d.name, 'aria-pressed': String(d.name === selected) },
        h('strong', {}, d.name),
        h('span', { class: 'hint' }, `${d.images} picture${d.images === 1 ? '' : 's'}, ${d.captioned} captioned`),
      );
      b.addEventListener('click', () => void select(d.name));
      return b;
    }),
  );
}

function imageCard(ds: string, item: DatasetImage): HTMLElement {
  const caption = h('textarea', { testid: 'caption-input', rows: 2, placeholder: 'Describe this picture (optional)' }, item.caption ?? '');
  const saved = h('span', { class: 'caption-status', testid: 'caption-status', 'aria-live': 'polite', 'data-state': item.caption ? 'saved' : 'empty' }, item.caption ? 'Saved' : 'No caption');
  let lastSaved = item.caption ?? '';
  let saving: string | null = null;
  const save = async () => {
    const text = caption.value;
    if (text === lastSaved || text === saving) return;
    saving = text;
    saved.textContent = 'Saving…';
    saved.dataset.state = 'saving';
    try {
      const updated = await api.putCaption(ds, item.file, text);
      lastSaved = updated.caption ?? text;
      item.caption = updated.caption;
      saved.textContent = 'Saved';
      saved.dataset.state = 'saved';
      void refreshList();
    } catch (e) {
      saved.textContent = `Not saved: ${errorMessage(e)}`;
      saved.dataset.state = 'error';
      showError(e, `Caption of ${item.file}`);
    } finally {
      saving = null;
    }
  };
  // "change" fires once the text was edited and the box loses focus; blur covers the rest.
  caption.addEventListener('change', () => void save());
  caption.addEventListener('blur', () => void save());
  caption.addEventListener('input', () => {
    saved.textContent = caption.value === lastSaved ? 'Saved' : 'Not saved yet';
    saved.dataset.state = caption.value === lastSaved ? 'saved' : 'dirty';
  });
  const del = h('button', { type: 'button', class: 'danger small', testid: 'dataset-image-delete', 'aria-label': `Delete ${item.file}` }, 'Delete');
  del.addEventListener('click', () =>
    void busy(del, async () => {
      await api.deleteImage(ds, item.file);
      if (detail) detail.items = detail.items.filter((i) => i.file !== item.file);
      card.remove();
      void refreshList();
    }),
  );
  const card = h(
    'figure',
    { class: 'dataset-image', testid: 'dataset-image', 'data-file': item.file },
    h('img', { src: item.url, alt: item.caption || item.file, loading: 'lazy', class: 'pixel' }),
    h('figcaption', {},
      h('span', { class: 'file-name' }, item.file),
      h('span', { class: 'hint' }, `${item.width}×${item.height} · ${formatBytes(item.bytes)}`),
      h('label', { class: 'field' }, h('span', { class: 'sr-only' }, `Caption for ${item.file}`), caption),
      h('div', { class: 'row-actions' }, saved, del),
    ),
  );
  return card;
}

function renderGrid(): void {
  if (!detail || !selected) return;
  const ds = selected;
  if (detail.items.length === 0) {
    fill(grid, h('p', { class: 'empty drop-hint' }, 'No pictures yet. Drop pictures (and .txt captions) here, or use the button above.'));
    return;
  }
  fill(grid, detail.items.map((i) => imageCard(ds, i)));
}

function renderDetail(): void {
  if (!selected || !detail) {
    fill(detailEl, h('p', { class: 'empty' }, 'Choose a dataset, or create one, to add pictures.'));
    return;
  }
  const d = detail;
  const del = h('button', { type: 'button', class: 'danger', testid: 'dataset-delete' }, 'Delete dataset');
  del.addEventListener('click', () => {
    if (!window.confirm(`Delete the dataset "${d.name}" and all its pictures?`)) return;
    void busy(del, async () => {
      await api.deleteDataset(d.name);
      showNotice(`Deleted ${d.name}.`);
      selected = null;
      detail = null;
      history.replaceState(null, '', '#datasets');
      await refreshList();
      renderDetail();
    });
  });
  const train = h('button', { type: 'button', class: 'primary', testid: 'dataset-train' }, 'Train on these');
  train.addEventListener('click', () => navigate('train', d.name));
  fill(results);
  bucketsOut.hidden = true;
  fill(
    detailEl,
    h('div', { class: 'job-head' }, h('h2', {}, d.name), h('span', { class: 'hint', testid: 'dataset-counts' }, `${d.images} pictures, ${d.captioned} captioned`)),
    h('div', { class: 'actions' }, train, del),
    h('div', { class: 'upload-box' },
      h('label', { for: 'dataset-upload', class: 'field-label' }, 'Add pictures (PNG, JPEG, WebP) and captions (.txt with the same name)'),
      upload,
      h('p', { class: 'hint' }, 'Or drag files onto the pictures below. A caption file "cat1.txt" goes with "cat1.png".'),
    ),
    results,
    h('div', { class: 'buckets-box' },
      field('Training size', resolution, 'Pictures are grouped by shape at about this many pixels a side (32 for the toy model, 512 for SD 1.x).'),
      bucketsButton,
    ),
    bucketsOut,
    grid,
  );
  renderGrid();
}

function resultLine(file: string, ok: boolean, text: string): void {
  results.append(h('li', { class: ok ? 'ok' : 'bad', testid: 'upload-result', 'data-file': file, 'data-ok': String(ok) }, `${file}: ${text}`));
}

async function uploadFiles(files: File[]): Promise<void> {
  if (!selected || files.length === 0) return;
  const ds = selected;
  clearError();
  fill(results);
  const images = files.filter((f) => imageType(f) !== null);
  const captions = files.filter((f) => extOf(f.name) === 'txt');
  const others = files.filter((f) => !images.includes(f) && !captions.includes(f));
  let failed = 0;
  for (const f of others) {
    resultLine(f.name, false, 'not a picture (PNG, JPEG, WebP) or a caption (.txt); skipped');
    failed++;
  }
  // Pictures first, so the captions that follow have a picture to belong to.
  for (const f of images) {
    try {
      const img = await api.uploadImage(ds, f, imageType(f) ?? f.type);
      resultLine(f.name, true, `added (${img.width}×${img.height})`);
    } catch (e) {
      resultLine(f.name, false, errorMessage(e));
      failed++;
    }
  }
  if (captions.length) {
    const current = await api.dataset(ds);
    for (const f of captions) {
      const s = stem(f.name);
      const target = current.items.find((i) => stem(i.file) === s) ?? current.items.find((i) => stem(i.file).toLowerCase() === s.toLowerCase());
      if (!target) {
        resultLine(f.name, false, `no picture called "${s}" (.png, .jpg or .webp) in this dataset`);
        failed++;
        continue;
      }
      try {
        await api.putCaption(ds, target.file, (await f.text()).trim());
        resultLine(f.name, true, `caption of ${target.file}`);
      } catch (e) {
        resultLine(f.name, false, errorMessage(e));
        failed++;
      }
    }
  }
  if (failed) showError(`${failed} of ${files.length} file${files.length === 1 ? '' : 's'} could not be added; see the list under the upload button.`);
  else showNotice(`Added ${files.length} file${files.length === 1 ? '' : 's'}.`);
  if (selected === ds) {
    detail = await api.dataset(ds);
    renderGrid();
    const counts = detailEl.querySelector('[data-testid="dataset-counts"]');
    if (counts) counts.textContent = `${detail.images} pictures, ${detail.captioned} captioned`;
  }
  await refreshList();
}

async function select(name: string): Promise<void> {
  selected = name;
  if (location.hash !== `#datasets/${encodeURIComponent(name)}`) history.replaceState(null, '', `#datasets/${encodeURIComponent(name)}`);
  renderList();
  try {
    const d = await api.dataset(name);
    if (selected !== name) return;
    detail = d;
  } catch (e) {
    detail = null;
    showError(e);
  }
  renderDetail();
}

async function refreshList(): Promise<void> {
  datasets = await api.datasets();
  renderList();
  if (detail && selected) {
    const s = datasets.find((d) => d.name === selected);
    const counts = detailEl.querySelector('[data-testid="dataset-counts"]');
    if (s && counts) counts.textContent = `${s.images} pictures, ${s.captioned} captioned`;
  }
}

async function create(): Promise<void> {
  clearError();
  const name = nameInput.value.trim();
  if (!NAME.test(name) || name.includes('..')) throw new Error('A dataset name uses letters, digits, spaces, ".", "_" and "-", and starts with a letter or digit.');
  const d = await api.createDataset(name);
  nameInput.value = '';
  showNotice(`Created ${d.name}. Now add pictures.`);
  await refreshList();
  await select(d.name);
}

export function createDatasetsTab(): HTMLElement {
  upload.addEventListener('change', () => {
    const files = [...(upload.files ?? [])];
    upload.value = '';
    uploadFiles(files).catch((e: unknown) => showError(e));
  });
  // The whole detail panel takes drops, so a near miss of the grid still uploads.
  detailEl.addEventListener('dragover', (ev) => {
    if (!selected || !ev.dataTransfer?.types.includes('Files')) return;
    ev.preventDefault();
    ev.dataTransfer.dropEffect = 'copy';
    grid.classList.add('dragging');
  });
  detailEl.addEventListener('dragleave', (ev) => {
    if (ev.target === detailEl || !detailEl.contains(ev.relatedTarget as Node | null)) grid.classList.remove('dragging');
  });
  detailEl.addEventListener('drop', (ev) => {
    if (!selected) return;
    ev.preventDefault();
    grid.classList.remove('dragging');
    uploadFiles([...(ev.dataTransfer?.files ?? [])]).catch((e: unknown) => showError(e));
  });
  resolution.addEventListener('input', () => {
    resolutionTouched = true;
  });
  bucketsButton.addEventListener('click', () =>
    void busy(bucketsButton, async () => {
      if (!selected) return;
      const r = Math.round(Number(resolution.value));
      if (!Number.isFinite(r) || r < 8) throw new Error('Training size must be a number of pixels, like 64 or 512.');
      const b = await api.buckets(selected, r);
      bucketsOut.textContent = b.text;
      bucketsOut.hidden = false;
    }),
  );
  const form = h('form', { class: 'create-dataset', novalidate: true },
    field('New dataset', nameInput, 'Letters, digits, spaces, . _ -'),
    createButton,
  );
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    void busy(createButton, create);
  });
  renderDetail();
  return h('div', { class: 'datasets-layout' }, h('div', { class: 'datasets-side card' }, h('h2', {}, 'Your datasets'), form, listEl), detailEl);
}

export async function showDatasets(arg?: string): Promise<void> {
  try {
    await refreshList();
    if (!resolutionTouched) {
      const [status, models] = await Promise.all([api.status(), api.models()]);
      const m = models.find((x) => x.name === status.default_model);
      resolution.value = !m || m.family === 'toy' || m.name.startsWith('toy') ? '32' : '512';
    }
  } catch (e) {
    showError(e);
  }
  const want = arg ?? selected ?? datasets[0]?.name;
  if (want && datasets.some((d) => d.name === want)) await select(want);
  else if (want && arg) await select(want);
  else renderDetail();
}
