// Small DOM helpers shared by every tab: an element builder, the page-wide message areas, the
// tab router hook and the number formatting designers read (sizes, durations, dates).
import { ApiRequestError } from './api.ts';

export type Child = Node | string | number | null | undefined | false;
type AttrValue = string | number | boolean | null | undefined;
export type Attrs = Record<string, AttrValue | ((ev: Event) => void)>;

/**
 * Creates an element. `on…` attributes become listeners, `testid` becomes data-testid, `text` sets
 * the text, `class` the class name; false/null/undefined leave an attribute out.
 */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: (Child | Child[])[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (typeof v === 'function') el.addEventListener(k.replace(/^on/, ''), v);
    else if (v === null || v === undefined || v === false) continue;
    else if (k === 'class') el.className = String(v);
    else if (k === 'testid') el.dataset.testid = String(v);
    else if (k === 'text') el.textContent = String(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

export function append(el: Element, children: (Child | Child[])[]): void {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === 'number' ? String(c) : c);
  }
}

/** Replaces an element's children. */
export function fill(el: Element, ...children: (Child | Child[])[]): void {
  el.replaceChildren();
  append(el, children);
}

/** A labelled form field: the label wraps a caption, the control and an optional hint. */
export function field(label: string, control: HTMLElement, hint?: string, extraClass = ''): HTMLLabelElement {
  return h('label', { class: `field ${extraClass}`.trim() }, h('span', { class: 'field-label' }, label), control, hint ? h('span', { class: 'hint' }, hint) : null);
}

export function option(value: string, label: string, selected = false): HTMLOptionElement {
  const o = h('option', { value }, label);
  o.selected = selected;
  return o;
}

// ---- the page-wide message areas ----

let errorBox: HTMLElement | null = null;
let errorText: HTMLElement | null = null;
let noticeBox: HTMLElement | null = null;
let noticeTimer: ReturnType<typeof setTimeout> | undefined;

export function initMessages(error: HTMLElement, errorMessage: HTMLElement, notice: HTMLElement): void {
  errorBox = error;
  errorText = errorMessage;
  noticeBox = notice;
}

/** The sentence to show for a failure: the server's own `error` text when there is one. */
export function errorMessage(e: unknown): string {
  if (e instanceof ApiRequestError) return e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}

/** Shows a failure in the visible error area (data-testid="error"). */
export function showError(e: unknown, prefix = ''): void {
  const msg = prefix ? `${prefix}: ${errorMessage(e)}` : errorMessage(e);
  if (!errorBox || !errorText) {
    console.error(msg);
    return;
  }
  errorText.textContent = msg;
  errorBox.hidden = false;
}

export function clearError(): void {
  if (errorBox && errorText) {
    errorText.textContent = '';
    errorBox.hidden = true;
  }
}

/** A short success message that fades after a while (data-testid="notice"). */
export function showNotice(text: string): void {
  if (!noticeBox) return;
  noticeBox.textContent = text;
  noticeBox.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    if (noticeBox) noticeBox.hidden = true;
  }, 6000);
}

// ---- navigation between tabs ----

export type TabName = 'generate' | 'train' | 'jobs' | 'library' | 'datasets';
export const TABS: readonly TabName[] = ['generate', 'train', 'jobs', 'library', 'datasets'];

/** Switches tab through the URL hash, so the back button and reloads keep the place. */
export function navigate(tab: TabName, arg?: string): void {
  const hash = arg ? `#${tab}/${encodeURIComponent(arg)}` : `#${tab}`;
  if (location.hash === hash) window.dispatchEvent(new HashChangeEvent('hashchange'));
  else location.hash = hash;
}

// ---- formatting ----

/** Decimal units, as file browsers show them: 688 B, 411 KB, 16.8 MB. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return '?';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let v = n;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  const digits = i === 0 || v >= 100 ? 0 : 1;
  return `${v.toFixed(digits)} ${units[i]}`;
}

/** A rough duration in words: "about 40 s", "about 2 min", "about 1 h 5 min". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return 'unknown';
  if (seconds < 1) return 'under a second';
  if (seconds < 60) return `about ${Math.round(seconds)} s`;
  const min = Math.round(seconds / 60);
  if (min < 60) return `about ${min} min`;
  const hours = Math.floor(min / 60);
  const rest = min % 60;
  return rest ? `about ${hours} h ${rest} min` : `about ${hours} h`;
}

export function formatDate(iso: string | null | undefined): string {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

export function formatNumber(n: number): string {
  return Number.isFinite(n) ? n.toLocaleString('en-US') : '?';
}

/** Calls `fn` once the caller has gone quiet for `ms`. */
export function debounce<A extends unknown[]>(fn: (...args: A) => void, ms: number): (...args: A) => void {
  let t: ReturnType<typeof setTimeout> | undefined;
  return (...args: A) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
}

/** Runs an async action from a button: disables it meanwhile and reports a failure. */
export async function busy(button: HTMLButtonElement, action: () => Promise<void>): Promise<void> {
  button.disabled = true;
  try {
    await action();
  } catch (e) {
    showError(e);
  } finally {
    button.disabled = false;
  }
}
