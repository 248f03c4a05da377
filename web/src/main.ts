// The page's frame: the tab bar (driven by the URL hash: #generate, #jobs/ID, …), the status line
// and the message areas. Each tab builds itself once and refreshes whenever it is shown.
import type { StatusInfo } from '../../src/server/api-types.ts';
import { api, onEvent, onReconnect } from './api.ts';
import { createDatasetsTab, showDatasets } from './datasets.ts';
import { createGenerateTab, showGenerate } from './generate.ts';
import { createJobsTab, showJobs } from './jobs.ts';
import { createLibraryTab, showLibrary } from './library.ts';
import { createTrainTab, showTrain } from './train.ts';
import { clearError, debounce, initMessages, TABS, type TabName } from './ui.ts';
import './style.css';

const byId = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page lacks #${id}`);
  return el as T;
};

initMessages(byId('error-bar'), byId('error-text'), byId('notice'));
byId<HTMLButtonElement>('error-dismiss').addEventListener('click', clearError);

const tabs: Record<TabName, { create: () => HTMLElement; show: (arg?: string) => Promise<void> }> = {
  generate: { create: createGenerateTab, show: showGenerate },
  train: { create: createTrainTab, show: showTrain },
  jobs: { create: createJobsTab, show: showJobs },
  library: { create: createLibraryTab, show: showLibrary },
  datasets: { create: createDatasetsTab, show: showDatasets },
};
for (const name of TABS) byId(`tab-${name}`).append(tabs[name].create());

const navButtons = [...document.querySelectorAll<HTMLButtonElement>('nav.tabs button[data-tab]')];
for (const b of navButtons) {
  b.addEventListener('click', () => {
    const tab = b.dataset.tab ?? 'generate';
    // Clicking the current tab again still reloads it.
    if (location.hash === `#${tab}`) route();
    else location.hash = `#${tab}`;
  });
}

let current: TabName | null = null;

function parseHash(): { tab: TabName; arg?: string } {
  const [head, ...rest] = location.hash.replace(/^#/, '').split('/');
  const tab = (TABS as readonly string[]).includes(head) ? (head as TabName) : 'generate';
  const raw = rest.join('/');
  let arg: string | undefined;
  try {
    arg = raw ? decodeURIComponent(raw) : undefined;
  } catch {
    arg = raw;
  }
  return { tab, arg };
}

function route(): void {
  const { tab, arg } = parseHash();
  if (tab !== current) clearError();
  current = tab;
  for (const name of TABS) byId(`tab-${name}`).hidden = name !== tab;
  for (const b of navButtons) {
    if (b.dataset.tab === tab) b.setAttribute('aria-current', 'page');
    else b.removeAttribute('aria-current');
    if (b.dataset.tab === tab) b.scrollIntoView({ block: 'nearest', inline: 'nearest' });
  }
  document.title = `${tab[0].toUpperCase()}${tab.slice(1)} · sdtune studio`;
  void tabs[tab].show(arg);
}

window.addEventListener('hashchange', route);
route();

// ---- the status line ----

const statusLine = document.querySelector<HTMLElement>('[data-testid="status"]') ?? document.createElement('p');

function describe(s: StatusInfo): string {
  const work = s.running ? `busy with a job${s.queued ? `, ${s.queued} waiting` : ''}` : s.queued ? `${s.queued} waiting` : 'idle';
  return `${s.device} · ${work} · v${s.version}`;
}

const refreshStatus = debounce(async () => {
  try {
    statusLine.textContent = describe(await api.status());
    statusLine.classList.remove('offline');
  } catch {
    statusLine.textContent = 'Server not reachable';
    statusLine.classList.add('offline');
  }
}, 300);

refreshStatus();
onEvent((ev) => {
  if (ev.type === 'job') refreshStatus();
});
onReconnect(refreshStatus);
