// Report charts: the font draws where it says and is as wide as textWidth says, axes get 4–6 nice
// ticks, lines go where the data goes (and break where it is missing), bar heights are
// proportional to values, grids copy their cells pixel for pixel, and bad options are refused
// with a message that says what to pass.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodePng, writePng, type RgbImage } from '../../src/formats/png.ts';
import {
  CELL_WIDTH, GLYPH_HEIGHT, PALETTE, barChart, drawText, formatNumber, imageGrid, lineChart, niceTicks, textWidth, type Rgb,
} from '../../src/toy/chart.ts';
import { tempDir } from '../helpers.ts';

const blank = (width: number, height: number): RgbImage => ({ width, height, channels: 3, data: new Uint8Array(width * height * 3).fill(255) });
const pixel = (im: RgbImage, x: number, y: number) => Array.from(im.data.subarray((y * im.width + x) * 3, (y * im.width + x) * 3 + 3));
const isColour = (im: RgbImage, x: number, y: number, rgb: Rgb) => {
  const i = (y * im.width + x) * 3;
  return im.data[i] === rgb[0] && im.data[i + 1] === rgb[1] && im.data[i + 2] === rgb[2];
};
/** Every pixel of colour `rgb` with x in [x0, x1). */
const pixelsOf = (im: RgbImage, rgb: Rgb, x0 = 0, x1 = im.width) => {
  const out: { x: number; y: number }[] = [];
  for (let y = 0; y < im.height; y++) for (let x = x0; x < x1; x++) if (isColour(im, x, y, rgb)) out.push({ x, y });
  return out;
};
const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
/** A small RGB image whose every pixel is distinct, so a copy can be checked pixel for pixel. */
const gradient = (width: number, height: number, seed: number): RgbImage => {
  const data = new Uint8Array(width * height * 3);
  for (let p = 0; p < width * height; p++) {
    data[p * 3] = (p * 37 + seed) & 0xff;
    data[p * 3 + 1] = (p * 11 + seed * 3) & 0xff;
    data[p * 3 + 2] = (p * 5 + 100) & 0xff;
  }
  return { width, height, channels: 3, data };
};

// ---- font ----------------------------------------------------------------------------------

test('textWidth is one 6-pixel cell per character, less the last spacing column', () => {
  assert.equal(textWidth(''), 0);
  assert.equal(textWidth('A'), 5);
  assert.equal(textWidth('HH'), 11);
  assert.equal(textWidth('HH', 2), 22);
  assert.equal(textWidth('1.5×'), 4 * CELL_WIDTH - 1); // '×' is one character
});

test('drawText inks exactly the box textWidth × 7·scale from (x, y), and nothing else', () => {
  for (const scale of [1, 2, 3]) {
    const im = blank(80, 40);
    drawText(im, 10, 5, 'HH', [0, 0, 0], scale);
    // H has ink in its first and last columns and its top and bottom rows, so the ink fills the box.
    const ink = pixelsOf(im, [0, 0, 0]);
    assert.ok(ink.length > 0);
    assert.equal(Math.min(...ink.map((p) => p.x)), 10);
    assert.equal(Math.max(...ink.map((p) => p.x)), 10 + textWidth('HH', scale) - 1);
    assert.equal(Math.min(...ink.map((p) => p.y)), 5);
    assert.equal(Math.max(...ink.map((p) => p.y)), 5 + GLYPH_HEIGHT * scale - 1);
    // Everything not ink is still the white background.
    const white = pixelsOf(im, [255, 255, 255]).length;
    assert.equal(white + ink.length, 80 * 40);
  }
});

test('glyphs differ, lowercase has its own shapes, and unknown characters draw a box', () => {
  const render = (ch: string) => {
    const im = blank(6, 7);
    drawText(im, 0, 0, ch, [0, 0, 0]);
    return Array.from(im.data).join(',');
  };
  const chars = Array.from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.,:;-+_=/()%[]<>#*'\"!?×·");
  const shapes = new Set(chars.map(render));
  assert.equal(shapes.size, chars.length, 'two characters share a glyph');
  assert.notEqual(render(' '), render('?'));
  assert.equal(pixelsOf({ ...blank(6, 7), data: Uint8Array.from(render(' ').split(',').map(Number)) }, [0, 0, 0]).length, 0);
  // Unknown: a hollow 5 × 5 box on rows 1–5.
  const im = blank(6, 7);
  drawText(im, 0, 0, 'é', [0, 0, 0]);
  assert.deepEqual(pixel(im, 0, 1), [0, 0, 0]);
  assert.deepEqual(pixel(im, 4, 5), [0, 0, 0]);
  assert.deepEqual(pixel(im, 2, 3), [255, 255, 255]);
  assert.deepEqual(pixel(im, 2, 0), [255, 255, 255]);
  assert.equal(render('é'), render('\u{1F600}'));
});

test('drawText clips at the image edges instead of throwing', () => {
  const im = blank(20, 10);
  drawText(im, -8, -3, 'WWWWWW', [0, 0, 0], 2);
  assert.ok(pixelsOf(im, [0, 0, 0]).length > 0);
});

// ---- numbers and ticks ---------------------------------------------------------------------

test('formatNumber writes compact labels', () => {
  assert.equal(formatNumber(1200), '1200');
  assert.equal(formatNumber(0.00123), '0.0012');
  assert.equal(formatNumber(1.5e-5), '1.5e-5');
  assert.equal(formatNumber(1e-5), '1e-5');
  assert.equal(formatNumber(2.5e6), '2.5e6');
  assert.equal(formatNumber(0), '0');
  assert.equal(formatNumber(12.345), '12.3');
  assert.equal(formatNumber(-0.5), '-0.5');
  // With the tick step: float noise goes, and ticks a step apart stay apart.
  assert.equal(formatNumber(0.1 * 3, 0.1), '0.3');
  assert.equal(formatNumber(0.125, 0.025), '0.125');
  assert.equal(formatNumber(1250, 250), '1250');
  assert.equal(formatNumber(1e-12, 0.1), '0');
});

test('niceTicks gives 4–6 evenly spaced ticks at 1, 2, 2.5 or 5 × 10^k that cover the range', () => {
  assert.deepEqual(niceTicks(0, 1).ticks, [0, 0.2, 0.4, 0.6, 0.8, 1]); // 0.2 beats 0.25 on a tie
  assert.deepEqual(niceTicks(0, 5).ticks, [0, 1, 2, 3, 4, 5]); // not 0..6 in steps of 2
  assert.deepEqual(niceTicks(0, 2000).ticks, [0, 500, 1000, 1500, 2000]);
  assert.deepEqual(niceTicks(0.13, 0.52).ticks, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]);
  assert.deepEqual(niceTicks(-3, 7).ticks, [-5, -2.5, 0, 2.5, 5, 7.5]); // wastes less than -5..10 by 5
  let state = 12345;
  const rand = () => ((state = (state * 1103515245 + 12345) % 2147483648) / 2147483648);
  for (let i = 0; i < 300; i++) {
    const scale = 10 ** Math.floor(rand() * 16 - 8);
    const lo = (rand() * 2 - 1) * scale;
    const hi = lo + rand() * scale * 10 ** Math.floor(rand() * 3);
    const axis = niceTicks(lo, hi);
    assert.ok(axis.ticks.length >= 4 && axis.ticks.length <= 6, `${axis.ticks.length} ticks for ${lo}..${hi}`);
    const step = axis.step!;
    assert.ok(axis.min <= lo + step * 1e-6 && axis.max >= hi - step * 1e-6, `axis ${axis.min}..${axis.max} misses ${lo}..${hi}`);
    const mantissa = step / 10 ** Math.floor(Math.log10(step));
    assert.ok([1, 2, 2.5, 5].some((m) => Math.abs(m - mantissa) < 1e-9), `step ${step}`);
    for (let t = 1; t < axis.ticks.length; t++) assert.ok(Math.abs(axis.ticks[t] - axis.ticks[t - 1] - step) < step * 1e-9);
    // Labels of neighbouring ticks never collapse into one.
    const labels = axis.ticks.map((t) => formatNumber(t, step));
    assert.equal(new Set(labels).size, labels.length, labels.join(' '));
  }
  // Equal ends are padded, not divided by zero.
  const flat = niceTicks(3, 3);
  assert.ok(flat.min < 3 && flat.max > 3 && flat.ticks.length >= 4);
  const zero = niceTicks(0, 0);
  assert.ok(zero.min <= -1 && zero.max >= 1);
  const close = niceTicks(1, 1 + 1e-15);
  assert.ok(close.min <= 0.9 && close.max >= 1.1 && close.ticks.length >= 4);
});

// ---- line chart ----------------------------------------------------------------------------

const W = 640;
const H = 360;
/** Pixels of the series colour left of the legend (its box is narrow for names of ≤ 5 letters). */
const plotPixels = (im: RgbImage, rgb: Rgb) => pixelsOf(im, rgb, 0, im.width - 80);

test('a rising line runs lower-left to upper-right, a falling one the reverse', () => {
  const rgb = PALETTE[0];
  for (const rising of [true, false]) {
    const points: [number, number][] = Array.from({ length: 11 }, (_, i) => [i, rising ? i : 10 - i]);
    const im = lineChart({ title: 'loss', xLabel: 'step', yLabel: 'loss', series: [{ name: 'train', points }] });
    assert.equal(im.width, W);
    assert.equal(im.height, H);
    assert.equal(im.channels, 3);
    const px = plotPixels(im, rgb);
    assert.ok(px.length > 200, `only ${px.length} series pixels`);
    const xs = px.map((p) => p.x);
    const left = px.filter((p) => p.x < Math.min(...xs) + 40).map((p) => p.y);
    const right = px.filter((p) => p.x > Math.max(...xs) - 40).map((p) => p.y);
    // Image rows grow downwards: low on the chart is a large y.
    const [low, high] = rising ? [mean(left), mean(right)] : [mean(right), mean(left)];
    assert.ok(low > H * 0.6 && high < H * 0.4 && low - high > H * 0.5, `left ${mean(left)}, right ${mean(right)}`);
    // The legend shows a 10 × 7 swatch of the colour right of the plot.
    assert.equal(pixelsOf(im, rgb, W - 60).length, 70, 'legend swatch missing');
  }
});

test('each series gets its own colour: given, or from the palette in order', () => {
  const im = lineChart({
    title: 't', xLabel: 'x', yLabel: 'y',
    series: [
      { name: 'a', points: [[0, 0], [1, 1]] },
      { name: 'b', points: [[0, 1], [1, 0]] },
      { name: 'c', points: [[0, 0.5], [1, 0.5]], rgb: [10, 200, 90] },
    ],
  });
  for (const rgb of [PALETTE[0], PALETTE[1], [10, 200, 90] as Rgb]) assert.ok(plotPixels(im, rgb).length > 100, `no ${rgb} line`);
  assert.equal(pixelsOf(im, PALETTE[2]).length, 0, 'the third series overrides the palette');
});

test('missing points break the line', () => {
  const rgb = PALETTE[0];
  const points = [[0, 0], [1, 1], [2, NaN], [3, 3], undefined, [4, 4], [5, 5]] as [number, number][];
  const im = lineChart({ title: 'gap', xLabel: 'x', yLabel: 'y', series: [{ name: 's', points }] });
  const cols = new Set(plotPixels(im, rgb).map((p) => p.x));
  const lo = Math.min(...cols);
  const hi = Math.max(...cols);
  // Between x = 1 and x = 3 (a fifth of the plot) no column has the series colour.
  let longest = 0;
  let run = 0;
  for (let x = lo; x <= hi; x++) {
    run = cols.has(x) ? 0 : run + 1;
    longest = Math.max(longest, run);
  }
  const plotWidth = hi - lo;
  assert.ok(longest > plotWidth * 0.3 && longest < plotWidth * 0.45, `gap of ${longest} columns in ${plotWidth}`);
});

test('flat, empty and single-point series draw without throwing', () => {
  const rgb = PALETTE[0];
  const im = lineChart({ title: 'flat', xLabel: 'x', yLabel: 'y', series: [{ name: 'flat', points: [[0, 1], [5, 1]] }, { name: 'empty', points: [] }] });
  const ys = plotPixels(im, rgb).map((p) => p.y);
  assert.ok(ys.length > 100);
  assert.ok(Math.max(...ys) - Math.min(...ys) <= 1, 'a constant series is a horizontal 2-px line');
  assert.ok(Math.abs(mean(ys) - H / 2) < H * 0.15, 'and sits mid-plot, its value padded on both sides');
  lineChart({ title: 'none', xLabel: 'x', yLabel: 'y', series: [] });
  // The smallest size, with names too long for it, still draws.
  const tiny = lineChart({ title: 'a title far too long for the chart', xLabel: 'training step', yLabel: 'validation loss', width: 100, height: 100, series: [{ name: 'a very long series name', points: [[0, 1], [1e6, 2e-7]] }] });
  assert.equal(tiny.width * tiny.height, 100 * 100);
  barChart({ title: 'tiny', yLabel: 'score', groups: ['DreamBooth', 'LoRA'], series: [{ name: 'fidelity', values: [0.5, 0.25] }], width: 100, height: 100 });
  const dot = lineChart({ title: 'dot', xLabel: 'x', yLabel: 'y', series: [{ name: 'one', points: [[2, 2]] }] });
  assert.equal(plotPixels(dot, rgb).length, 9, 'a lone point is a 3 × 3 dot');
});

test('logY leaves out non-positive points and spaces decades evenly', () => {
  const rgb = PALETTE[0];
  const im = lineChart({
    title: 'lr', xLabel: 'step', yLabel: 'lr', logY: true,
    series: [{ name: 'lr', points: [[0, -1], [1, 0], [2, 1e-4], [3, 1e-3], [4, 1e-2]] }],
  });
  const px = plotPixels(im, rgb);
  assert.ok(px.length > 100);
  // On a log axis 1e-4, 1e-3, 1e-2 lie on a straight line: its midpoint column is at the mean height.
  const xs = px.map((p) => p.x);
  const midX = Math.round((Math.min(...xs) + Math.max(...xs)) / 2);
  const midY = mean(px.filter((p) => Math.abs(p.x - midX) <= 1).map((p) => p.y));
  assert.ok(Math.abs(midY - mean([Math.min(...px.map((p) => p.y)), Math.max(...px.map((p) => p.y))])) < 4);
  lineChart({ title: 'none positive', xLabel: 'x', yLabel: 'y', logY: true, series: [{ name: 'z', points: [[0, 0], [1, -2]] }] });
});

test('markers are dashed vertical lines in their colour', () => {
  const rgb: Rgb = [200, 0, 200];
  const im = lineChart({
    title: 'stop', xLabel: 'step', yLabel: 'loss',
    series: [{ name: 's', points: [[0, 1], [100, 0]] }],
    markers: [{ x: 50, label: 'recommended stop', rgb }],
  });
  const px = pixelsOf(im, rgb);
  const byColumn = new Map<number, number>();
  for (const p of px) byColumn.set(p.x, (byColumn.get(p.x) ?? 0) + 1);
  const [column, count] = [...byColumn.entries()].sort((a, b) => b[1] - a[1])[0];
  // The series falls from 1 to 0 over x = 0..100: at the marker it is half way down.
  const series = pixelsOf(im, PALETTE[0], 0, W - 40); // the legend for "s" starts 35 px from the edge
  const line = series.map((p) => p.y);
  const atMarker = series.filter((p) => p.x === column).map((p) => p.y);
  assert.ok(Math.abs(mean(atMarker) - (Math.min(...line) + Math.max(...line)) / 2) <= 3, 'the marker sits at x = 50');
  const rows = px.filter((p) => p.x === column).map((p) => p.y);
  const span = Math.max(...rows) - Math.min(...rows) + 1;
  assert.ok(count > span * 0.5 && count < span * 0.75, `dashed: ${count} of ${span} rows`);
});

// ---- bar chart -----------------------------------------------------------------------------

/** Columns holding at least `min` pixels of `rgb`, grouped into runs: [first column, height]. */
const bars = (im: RgbImage, rgb: Rgb, min = 20) => {
  const heights: number[] = Array.from({ length: im.width }, () => 0);
  for (const p of pixelsOf(im, rgb)) heights[p.x]++;
  const out: { x0: number; x1: number; height: number; top: number }[] = [];
  for (let x = 0; x < im.width; x++) {
    if (heights[x] < min) continue;
    const last = out[out.length - 1];
    if (last && last.x1 === x - 1) {
      last.x1 = x;
      last.height = Math.max(last.height, heights[x]);
    } else {
      out.push({ x0: x, x1: x, height: heights[x], top: 0 });
    }
  }
  for (const b of out) b.top = Math.min(...pixelsOf(im, rgb, b.x0, b.x1 + 1).map((p) => p.y));
  return out;
};

test('bar heights are proportional to the values, with the value printed above each bar', () => {
  const im = barChart({
    title: 'techniques', yLabel: 'score', groups: ['DreamBooth', 'LoRA', 'TI'],
    series: [{ name: 'concept fidelity', values: [0.4, 0.8, 0.2] }, { name: 'prior preservation', values: [0.9, 0.3, 0.6] }],
  });
  const first = bars(im, PALETTE[0]);
  const second = bars(im, PALETTE[1]);
  assert.equal(first.length, 3);
  assert.equal(second.length, 3);
  const ratio = (a: number, b: number) => a / b;
  // 5% tolerance: bars are whole pixels and start one row above the axis.
  assert.ok(Math.abs(ratio(first[1].height, first[0].height) - 2) < 0.1, `${first[1].height} / ${first[0].height}`);
  assert.ok(Math.abs(ratio(second[0].height, second[1].height) - 3) < 0.15, `${second[0].height} / ${second[1].height}`);
  // Bars of a group stand side by side, first series first.
  for (let g = 0; g < 3; g++) assert.ok(first[g].x1 < second[g].x0 && second[g].x0 - first[g].x1 < 5);
  // A dark label just above every bar.
  for (const b of [...first, ...second]) {
    let ink = 0;
    for (let y = b.top - 9; y < b.top; y++) for (let x = b.x0 - 4; x <= b.x1 + 4; x++) if (isColour(im, x, y, [30, 30, 30])) ink++;
    assert.ok(ink > 20, `no value label above the bar at x ${b.x0}`);
  }
});

test('yMax fixes the top of the axis and cuts taller bars there', () => {
  const im = barChart({ title: 'capped', yLabel: 'v', groups: ['a', 'b', 'c'], series: [{ name: 's', values: [0.25, 1, 3] }], yMax: 1 });
  const [a, b, c] = bars(im, PALETTE[0]);
  assert.ok(Math.abs(b.height / a.height - 4) < 0.2, `${b.height} / ${a.height}`);
  assert.equal(c.height, b.height, 'a value over yMax is drawn at yMax');
  barChart({ title: 'empty', yLabel: 'v', groups: [], series: [] });
  barChart({ title: 'zeros', yLabel: 'v', groups: ['a'], series: [{ name: 's', values: [0] }, { name: 'n', values: [NaN] }] });
  barChart({ title: 'negative', yLabel: 'v', groups: ['a', 'b'], series: [{ name: 's', values: [-0.5, 0.5] }] });
});

// ---- image grid ----------------------------------------------------------------------------

test('imageGrid has the documented size and copies each cell scaled by nearest neighbour', () => {
  const cells = [
    [gradient(5, 4, 1), gradient(5, 4, 2), null],
    [gradient(5, 4, 3), null, gradient(5, 4, 4)],
  ];
  const scale = 3;
  const gap = 2;
  const rowLabels = ['seed 1', 'b'];
  const im = imageGrid({ cells, rowLabels, colLabels: ['x', 'y', 'z'], scale, gap });
  const labelLeft = textWidth('seed 1') + 4;
  const cellW = 5 * scale;
  const cellH = 4 * scale;
  assert.equal(im.width, gap + labelLeft + 3 * cellW + 2 * gap + gap);
  assert.equal(im.height, gap + 10 + 2 * cellH + gap + gap);
  for (let r = 0; r < 2; r++) {
    for (let c = 0; c < 3; c++) {
      const ox = gap + labelLeft + c * (cellW + gap);
      const oy = gap + 10 + r * (cellH + gap);
      const src = cells[r][c];
      for (let y = 0; y < cellH; y++) {
        for (let x = 0; x < cellW; x++) {
          const want = src ? pixel(src, Math.floor(x / scale), Math.floor(y / scale)) : [224, 224, 224];
          assert.deepEqual(pixel(im, ox + x, oy + y), want, `cell ${r},${c} pixel ${x},${y}`);
        }
      }
    }
  }
  // The row labels are drawn in the left margin.
  assert.ok(pixelsOf(im, [30, 30, 30], 0, labelLeft).length > 20);
  // No labels, no title: just the cells and the gaps.
  const bare = imageGrid({ cells: [[gradient(2, 2, 0)]], scale: 1, gap: 0 });
  assert.deepEqual(bare, gradient(2, 2, 0));
});

test('imageGrid centres smaller cells on white, and a title widens the margin', () => {
  const im = imageGrid({ cells: [[gradient(4, 4, 0), gradient(2, 2, 9)]], scale: 2, gap: 1, title: 'Samples' });
  assert.equal(im.height, 1 + 20 + 8 + 1);
  assert.equal(im.width, Math.max(1 + 8 + 1 + 8 + 1, textWidth('Samples') + 2));
  const ox = 1 + 8 + 1;
  const oy = 1 + 20;
  assert.deepEqual(pixel(im, ox, oy), [255, 255, 255], 'padding is white');
  assert.deepEqual(pixel(im, ox + 2, oy + 2), pixel(gradient(2, 2, 9), 0, 0));
  assert.deepEqual(pixel(im, ox + 5, oy + 5), pixel(gradient(2, 2, 9), 1, 1));
  assert.deepEqual(pixel(im, ox + 6, oy + 6), [255, 255, 255]);
});

// ---- files and errors ----------------------------------------------------------------------

test('a chart survives writePng → decodePng byte for byte', () => {
  const { dir, cleanup } = tempDir();
  try {
    const chart = lineChart({ title: 'round trip', xLabel: 'x', yLabel: 'y', series: [{ name: 's', points: [[0, 1], [1, 3], [2, 2]] }] });
    const path = join(dir, 'chart.png');
    writePng(path, chart, { Title: 'round trip' });
    const back = decodePng(readFileSync(path), path);
    assert.equal(back.width, chart.width);
    assert.equal(back.height, chart.height);
    assert.equal(back.channels, 3);
    assert.deepEqual(Buffer.from(back.data), Buffer.from(chart.data));
    assert.equal(back.text.Title, 'round trip');
  } finally {
    cleanup();
  }
});

test('bad options are refused with a message that says what to pass', () => {
  const base = { title: 't', xLabel: 'x', yLabel: 'y', series: [] };
  assert.throws(() => lineChart({ ...base, width: 50 }), /lineChart: width must be a whole number of pixels from 100 .*got 50.*pass/);
  assert.throws(() => lineChart({ ...base, height: NaN }), /height must be .*got NaN/);
  assert.throws(() => barChart({ title: 't', yLabel: 'y', groups: [], series: [], width: 99 }), /barChart: width must be/);
  assert.throws(() => barChart({ title: 't', yLabel: 'y', groups: ['a', 'b'], series: [{ name: 's', values: [1] }] }), /"s" has 1 values but there are 2 groups; pass one value per group/);
  assert.throws(() => barChart({ title: 't', yLabel: 'y', groups: [], series: [], yMax: -1 }), /yMax must be a positive finite number/);
  assert.throws(() => imageGrid({ cells: [[gradient(2, 2, 0)]], scale: NaN }), /imageGrid: scale must be a whole number .*got NaN.*pass scale/);
  assert.throws(() => imageGrid({ cells: [[gradient(2, 2, 0)]], scale: Infinity }), /scale must be a whole number/);
  const rgba: RgbImage = { width: 2, height: 2, channels: 4, data: new Uint8Array(16) };
  assert.throws(() => imageGrid({ cells: [[null, rgba]] }), /cell \[0\]\[1\] has 4 channels; pass RGB cells \(channels: 3\)/);
  assert.throws(() => imageGrid({ cells: [] }), /cells is empty/);
  assert.throws(() => imageGrid({ cells: [[null]], rowLabels: ['a', 'b'] }), /2 rowLabels for 1 rows/);
  assert.throws(() => drawText(blank(10, 10), 0, 0, 'a', [0, 0, 0], Infinity), /drawText: scale must be a whole number/);
  assert.throws(() => drawText(blank(10, 10), 0, 0, 'a', [0, 0, 300]), /colour must be \[red, green, blue\] with whole numbers 0–255/);
  assert.throws(() => lineChart({ ...base, series: [{ name: 's', points: [], rgb: [1, 2] as unknown as Rgb }] }), /colour must be/);
});
