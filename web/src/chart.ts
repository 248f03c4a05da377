// The over/underfitting meter, drawn on a canvas with no chart library: training loss (light,
// noisy), held-out validation loss (the line to watch) on the left axis, prior drift on the right
// axis, the sample check's score (when the run has one) from 0 at the bottom to 1 at the top, and
// a vertical marker at the step the meter recommends keeping.
import type { Recommendation, StepPoint } from '../../src/server/api-types.ts';
import { h } from './ui.ts';

const COLORS = {
  loss: 'rgba(90, 110, 140, 0.45)',
  val: '#1f5f8b',
  drift: '#b8561c',
  marker: '#2e7d32',
  samples: '#7b3fa0',
  grid: '#e3e1dc',
  text: '#5b5f66',
};

export interface MeterData {
  records: StepPoint[];
  recommendation: Recommendation | null;
}

function niceTicks(lo: number, hi: number, count: number): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function label(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1000) return `${Math.round(v / 100) / 10}k`;
  if (a < 0.01) return v.toExponential(0);
  return String(Number(v.toPrecision(3)));
}

function extent(values: number[]): [number, number] {
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.length === 0) return [0, 1];
  let lo = Math.min(...finite);
  let hi = Math.max(...finite);
  if (lo === hi) {
    lo -= Math.abs(lo) * 0.1 || 0.5;
    hi += Math.abs(hi) * 0.1 || 0.5;
  }
  const pad = (hi - lo) * 0.06;
  return [lo - pad, hi + pad];
}

/** Draws the meter into `canvas`, sized to its CSS box and sharp on high-DPI screens. */
export function drawMeter(canvas: HTMLCanvasElement, data: MeterData): void {
  const cssW = Math.max(240, canvas.clientWidth || canvas.parentElement?.clientWidth || 600);
  const cssH = Math.max(180, canvas.clientHeight || 260);
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(cssW * dpr) || canvas.height !== Math.round(cssH * dpr)) {
    canvas.width = Math.round(cssW * dpr);
    canvas.height = Math.round(cssH * dpr);
  }
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);
  ctx.font = '11px system-ui, -apple-system, "Segoe UI", sans-serif';

  const recs = [...data.records].sort((a, b) => a.step - b.step);
  if (recs.length === 0) {
    ctx.fillStyle = COLORS.text;
    ctx.textAlign = 'center';
    ctx.fillText('No measurements yet: the chart fills in as training runs.', cssW / 2, cssH / 2);
    return;
  }
  const hasDrift = recs.some((r) => r.prior_drift !== undefined && Number.isFinite(r.prior_drift));
  const m = { left: 52, right: hasDrift ? 52 : 16, top: 14, bottom: 30 };
  const w = cssW - m.left - m.right;
  const ht = cssH - m.top - m.bottom;

  const rec = data.recommendation;
  const steps = recs.map((r) => r.step);
  let x0 = Math.min(...steps, rec ? rec.step : Infinity);
  let x1 = Math.max(...steps, rec ? rec.step : -Infinity);
  if (x0 === x1) {
    x0 -= 1;
    x1 += 1;
  }
  const lossValues = recs.flatMap((r) => [r.loss, r.val_loss ?? NaN]);
  const [y0, y1] = extent(lossValues);
  const [d0raw, d1] = extent(recs.map((r) => r.prior_drift ?? NaN));
  const d0 = Math.min(0, d0raw);

  const X = (s: number) => m.left + ((s - x0) / (x1 - x0)) * w;
  const Y = (v: number) => m.top + ht - ((v - y0) / (y1 - y0)) * ht;
  const D = (v: number) => m.top + ht - ((v - d0) / (d1 - d0)) * ht;

  // Grid and axes.
  ctx.strokeStyle = COLORS.grid;
  ctx.lineWidth = 1;
  ctx.fillStyle = COLORS.text;
  ctx.textAlign = 'right';
  ctx.textBaseline = 'middle';
  for (const t of niceTicks(y0, y1, 4)) {
    const y = Math.round(Y(t)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(m.left, y);
    ctx.lineTo(m.left + w, y);
    ctx.stroke();
    ctx.fillText(label(t), m.left - 6, y);
  }
  if (hasDrift) {
    ctx.textAlign = 'left';
    ctx.fillStyle = COLORS.drift;
    for (const t of niceTicks(d0, d1, 4)) ctx.fillText(label(t), m.left + w + 6, D(t));
  }
  ctx.fillStyle = COLORS.text;
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  for (const t of niceTicks(x0, x1, Math.max(2, Math.floor(w / 80)))) {
    if (!Number.isInteger(t)) continue;
    ctx.fillText(label(t), X(t), m.top + ht + 6);
  }
  ctx.textAlign = 'right';
  ctx.fillText('step', m.left + w, m.top + ht + 18);
  ctx.save();
  ctx.translate(12, m.top + ht / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = 'center';
  ctx.textBaseline = 'middle';
  ctx.fillText('loss', 0, 0);
  ctx.restore();
  if (hasDrift) {
    ctx.save();
    ctx.translate(cssW - 10, m.top + ht / 2);
    ctx.rotate(Math.PI / 2);
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.fillStyle = COLORS.drift;
    ctx.fillText('prior drift', 0, 0);
    ctx.restore();
  }

  ctx.save();
  ctx.beginPath();
  ctx.rect(m.left, m.top, w, ht);
  ctx.clip();

  const line = (points: [number, number][], color: string, width: number, dash: number[] = [], dots = false) => {
    if (points.length === 0) return;
    ctx.strokeStyle = color;
    ctx.fillStyle = color;
    ctx.lineWidth = width;
    ctx.setLineDash(dash);
    ctx.beginPath();
    points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.stroke();
    ctx.setLineDash([]);
    if (dots || points.length === 1) {
      for (const [x, y] of points) {
        ctx.beginPath();
        ctx.arc(x, y, 2.5, 0, Math.PI * 2);
        ctx.fill();
      }
    }
  };
  line(recs.filter((r) => Number.isFinite(r.loss)).map((r) => [X(r.step), Y(r.loss)]), COLORS.loss, 1);
  const val = recs.filter((r) => r.val_loss !== undefined && Number.isFinite(r.val_loss));
  line(val.map((r) => [X(r.step), Y(r.val_loss as number)]), COLORS.val, 2.2, [], val.length < 60);
  if (hasDrift) {
    const dr = recs.filter((r) => r.prior_drift !== undefined && Number.isFinite(r.prior_drift));
    line(dr.map((r) => [X(r.step), D(r.prior_drift as number)]), COLORS.drift, 1.8, [5, 4], dr.length < 60);
  }
  const sc = recs.filter((r) => r.sample_score !== undefined && Number.isFinite(r.sample_score));
  if (sc.length) {
    // A share (0–1), so it gets the plot's full height rather than an axis of its own.
    const S = (v: number) => m.top + ht - Math.min(1, Math.max(0, v)) * ht;
    line(sc.map((r) => [X(r.step), S(r.sample_score as number)]), COLORS.samples, 2, [1, 3], true);
    const last = sc[sc.length - 1];
    ctx.fillStyle = COLORS.samples;
    ctx.textAlign = 'right';
    ctx.textBaseline = (last.sample_score as number) > 0.85 ? 'top' : 'bottom';
    ctx.fillText(`${Math.round((last.sample_score as number) * 100)} % show it`, Math.min(X(last.step), m.left + w) - 4, S(last.sample_score as number) + ((last.sample_score as number) > 0.85 ? 4 : -4));
  }
  ctx.restore();

  if (rec) {
    const x = Math.round(X(rec.step)) + 0.5;
    ctx.strokeStyle = COLORS.marker;
    ctx.lineWidth = 1.5;
    ctx.setLineDash([3, 3]);
    ctx.beginPath();
    ctx.moveTo(x, m.top);
    ctx.lineTo(x, m.top + ht);
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = COLORS.marker;
    ctx.textBaseline = 'top';
    const text = `keep step ${rec.step}`;
    const tw = ctx.measureText(text).width;
    ctx.textAlign = x + tw + 8 > m.left + w ? 'right' : 'left';
    ctx.fillText(text, ctx.textAlign === 'right' ? x - 4 : x + 4, m.top + 2);
  }
}

/** The chart's key, in plain words. */
export function meterLegend(o: { samples?: boolean } = {}): HTMLElement {
  const key = (color: string, text: string, dashed = false) =>
    h('li', {}, h('span', { class: `swatch${dashed ? ' dashed' : ''}`, style: `--swatch: ${color}` }), text);
  return h(
    'div',
    { class: 'meter-legend', testid: 'meter-legend' },
    h('ul', {},
      key(COLORS.loss, 'training loss (noisy; always falls)'),
      key(COLORS.val, 'validation loss on held-out pictures'),
      key(COLORS.drift, 'prior drift: how far ordinary prompts have moved (right axis)', true),
      o.samples ? key(COLORS.samples, 'sample check: the share of pictures that show your concept (bottom 0 %, top 100 %)', true) : null,
      key(COLORS.marker, 'the step the meter recommends keeping', true),
    ),
    h('p', {}, 'How to read it: validation falling = still learning (underfit); validation rising or drift growing = memorising (overfit).'),
  );
}
