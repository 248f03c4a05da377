// The Library tab: the models and adapters the studio holds, what each file is inside (inspect),
// conversion between formats, and deletion.
import type { AdapterInfo, AdapterKind, InspectInfo, Job, ModelInfo } from '../../src/server/api-types.ts';
import { api, waitForJob, type ConvertTarget } from './api.ts';
import { busy, fill, formatBytes, formatDate, formatNumber, h, navigate, option, showError, showNotice } from './ui.ts';

const SECTIONS: readonly { kind: 'model' | AdapterKind; title: string; about: string }[] = [
  { kind: 'model', title: 'Models', about: 'Whole picture-makers. DreamBooth results land here.' },
  { kind: 'lora', title: 'LoRAs', about: 'Plug-ins you add in Generate at a weight.' },
  { kind: 'embedding', title: 'Embeddings', about: 'New words: type the name in a prompt.' },
  { kind: 'hypernetwork', title: 'Hypernetworks', about: 'Restylers you add in Generate at a weight.' },
];

const CONVERT_TO: Partial<Record<AdapterKind, readonly { to: ConvertTarget; label: string }[]>> = {
  lora: [
    { to: 'kohya', label: 'Kohya (A1111, ComfyUI, Forge)' },
    { to: 'peft', label: 'PEFT (diffusers)' },
  ],
  embedding: [
    { to: 'safetensors', label: '.safetensors' },
    { to: 'a1111-pt', label: 'A1111 .pt' },
  ],
};

const root = h('div', { class: 'library', testid: 'library' });

function inspectView(info: InspectInfo): HTMLElement {
  const dtypes = Object.entries(info.dtypes).map(([k, v]) => `${k} × ${formatNumber(v)}`).join(', ');
  const meta = Object.entries(info.metadata);
  return h(
    'div',
    { class: 'inspect', testid: 'library-details' },
    h('dl', { class: 'facts-grid' },
      h('dt', {}, 'Format'), h('dd', {}, info.format),
      h('dt', {}, 'Kind'), h('dd', {}, info.kind),
      h('dt', {}, 'Family'), h('dd', {}, info.family),
      h('dt', {}, 'Tensors'), h('dd', {}, formatNumber(info.tensors)),
      h('dt', {}, 'Parameters'), h('dd', {}, formatNumber(info.parameters)),
      h('dt', {}, 'Size'), h('dd', {}, formatBytes(info.bytes)),
      h('dt', {}, 'Number types'), h('dd', {}, dtypes || '—'),
    ),
    info.messages.length ? h('ul', { class: 'messages' }, info.messages.map((m) => h('li', {}, m))) : null,
    meta.length
      ? h('details', {},
          h('summary', {}, `Metadata (${meta.length})`),
          h('table', { class: 'meta' }, h('tbody', {}, meta.map(([k, v]) => h('tr', {}, h('th', { scope: 'row' }, k), h('td', {}, v.length > 400 ? `${v.slice(0, 400)}…` : v))))),
        )
      : h('p', { class: 'hint' }, 'No metadata in the file.'),
  );
}

function convertControls(a: AdapterInfo, status: HTMLElement): HTMLElement | null {
  const targets = CONVERT_TO[a.kind];
  if (!targets) return null;
  const to = h('select', { testid: 'library-convert-to', 'aria-label': `Convert ${a.name} to` }, targets.map((t) => option(t.to, t.label)));
  const dtype = h('select', { testid: 'library-convert-dtype', 'aria-label': 'Number type' }, option('', 'same numbers'), option('fp16', 'fp16 (half size)'), option('fp32', 'fp32 (full)'));
  const go = h('button', { type: 'button', class: 'secondary small', testid: 'library-convert' }, 'Convert');
  go.addEventListener('click', () =>
    void busy(go, async () => {
      const job: Job = await api.convertAdapter(a.kind, a.name, to.value as ConvertTarget, dtype.value === 'fp16' || dtype.value === 'fp32' ? dtype.value : undefined);
      status.hidden = false;
      status.dataset.jobId = job.id;
      status.textContent = 'Converting…';
      const final = await waitForJob(job.id, (j) => {
        status.textContent = j.status === 'queued' ? 'Waiting for the machine…' : 'Converting…';
      });
      status.dataset.status = final.status;
      if (final.status === 'done') {
        const product = (final.result as { product?: { name?: unknown; file?: unknown } } | null)?.product;
        const made = typeof product?.file === 'string' ? product.file : typeof product?.name === 'string' ? product.name : 'a new file';
        status.textContent = `Converted: ${made} is in the library.`;
        showNotice(`Converted ${a.name}: ${made} is in the library.`);
        await refresh();
      } else {
        status.textContent = `Conversion ${final.status}${final.error ? `: ${final.error}` : ''}`;
        if (final.error) showError(final.error);
      }
    }),
  );
  return h('div', { class: 'convert' }, h('span', { class: 'hint' }, 'Convert to'), to, dtype, go);
}

function row(kind: 'model' | AdapterKind, item: ModelInfo | AdapterInfo): HTMLElement {
  const name = item.name;
  const details = h('div', { class: 'row-details', hidden: true });
  const convertStatus = h('p', { class: 'hint', testid: 'library-convert-status', hidden: true, 'aria-live': 'polite' });
  const inspect = h('button', { type: 'button', class: 'secondary small', testid: 'library-inspect', 'aria-expanded': 'false' }, 'Details');
  inspect.addEventListener('click', () =>
    void busy(inspect, async () => {
      if (!details.hidden) {
        details.hidden = true;
        inspect.setAttribute('aria-expanded', 'false');
        return;
      }
      const got = kind === 'model' ? await api.model(name) : await api.adapter(kind, name);
      fill(details, inspectView(got.inspect));
      details.hidden = false;
      inspect.setAttribute('aria-expanded', 'true');
    }),
  );
  const builtin = kind === 'model' && (item as ModelInfo).builtin;
  let del: HTMLButtonElement | null = null;
  if (!builtin) {
    const b = h('button', { type: 'button', class: 'danger small', testid: 'library-delete' }, 'Delete');
    b.addEventListener('click', () => {
      if (!window.confirm(`Delete ${name} for good? This removes the file from the studio.`)) return;
      void busy(b, async () => {
        if (kind === 'model') await api.deleteModel(name);
        else await api.deleteAdapter(kind, name);
        showNotice(`Deleted ${name}.`);
        await refresh();
      });
    });
    del = b;
  }
  // An adapter can be trained further: the Train tab opens with it as the starting point.
  let more: HTMLButtonElement | null = null;
  if (kind !== 'model') {
    more = h('button', { type: 'button', class: 'secondary small', testid: 'library-continue' }, 'Keep training');
    more.addEventListener('click', () => navigate('train', `continue:${kind}:${name}`));
  }
  const sub = kind === 'model' ? (item as ModelInfo).title : `${(item as AdapterInfo).file} · ${formatDate((item as AdapterInfo).modified)}`;
  return h(
    'li',
    { class: 'library-row', testid: 'library-row', 'data-kind': kind, 'data-name': name },
    h('div', { class: 'row-main' },
      h('div', { class: 'row-name' }, h('span', {}, h('strong', {}, name), builtin ? h('span', { class: 'badge' }, 'built in') : null), h('span', { class: 'hint' }, sub)),
      h('span', { class: 'size' }, formatBytes(item.bytes)),
      h('div', { class: 'row-actions' }, inspect, more, kind === 'model' ? null : convertControls(item as AdapterInfo, convertStatus), del),
    ),
    convertStatus,
    details,
  );
}

async function refresh(): Promise<void> {
  const [models, adapters] = await Promise.all([api.models(), api.adapters()]);
  fill(
    root,
    SECTIONS.map((s) => {
      const items: (ModelInfo | AdapterInfo)[] = s.kind === 'model' ? models : adapters.filter((a) => a.kind === s.kind);
      return h('section', { class: 'card', testid: `library-section-${s.kind}` },
        h('h2', {}, s.title),
        h('p', { class: 'hint' }, s.about),
        items.length ? h('ul', { class: 'library-list' }, items.map((i) => row(s.kind, i))) : h('p', { class: 'empty' }, 'None yet.'),
      );
    }),
  );
}

export function createLibraryTab(): HTMLElement {
  return root;
}

export async function showLibrary(): Promise<void> {
  try {
    await refresh();
  } catch (e) {
    showError(e);
  }
}
