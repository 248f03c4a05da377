// Raster charts for the toy report (loss curves, technique comparisons, sample grids), drawn
// straight into RGB pixels with no dependencies, so a report renders the same bytes on every
// machine. Nothing is anti-aliased: every pixel is exactly the background, the ink or a series
// colour, which keeps the output deterministic and lets tests find a series by its colour.
// Text uses a built-in 5×7 bitmap font in a 6×8 cell.
import { MAX_PIXELS, type RgbImage } from '../formats/png.ts';

/** A colour as [red, green, blue], each a whole number 0–255. */
export type Rgb = readonly [number, number, number];

/**
 * Eight series colours that stay apart on white and from the gray ink: matplotlib's "tab10"
 * colours with its gray and olive left out (they read as grid lines or text).
 */
export const PALETTE: readonly Rgb[] = [
  [31, 119, 180], // blue
  [255, 127, 14], // orange
  [44, 160, 44], // green
  [214, 39, 40], // red
  [148, 103, 189], // purple
  [140, 86, 75], // brown
  [227, 119, 194], // pink
  [23, 190, 207], // cyan
];

const WHITE: Rgb = [255, 255, 255];
const INK: Rgb = [30, 30, 30];
const AXIS: Rgb = [90, 90, 90];
const GRID: Rgb = [232, 232, 232];
const LEGEND_BORDER: Rgb = [200, 200, 200];
const EMPTY_CELL: Rgb = [224, 224, 224];
const MARKER: Rgb = [90, 90, 90];

// ---- font ----------------------------------------------------------------------------------

/** Glyph size in font pixels; each glyph sits in a CELL_WIDTH × CELL_HEIGHT cell. */
export const GLYPH_WIDTH = 5;
export const GLYPH_HEIGHT = 7;
export const CELL_WIDTH = 6;
export const CELL_HEIGHT = 8;

// Each glyph is 7 rows, top to bottom, of 5 columns: '#' is ink, '.' is background. Lowercase
// letters sit on the same baseline as capitals; g, j, p, q and y are raised so their tails fit
// in the 7 rows.
const GLYPH_ROWS: Record<string, string> = {
  A: '.###. #...# #...# ##### #...# #...# #...#',
  B: '####. #...# #...# ####. #...# #...# ####.',
  C: '.###. #...# #.... #.... #.... #...# .###.',
  D: '####. #...# #...# #...# #...# #...# ####.',
  E: '##### #.... #.... ####. #.... #.... #####',
  F: '##### #.... #.... ####. #.... #.... #....',
  G: '.###. #...# #.... #.### #...# #...# .####',
  H: '#...# #...# #...# ##### #...# #...# #...#',
  I: '.###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.',
  J: '..### ...#. ...#. ...#. ...#. #..#. .##..',
  K: '#...# #..#. #.#.. ##... #.#.. #..#. #...#',
  L: '#.... #.... #.... #.... #.... #.... #####',
  M: '#...# ##.## #.#.# #.#.# #...# #...# #...#',
  N: '#...# #...# ##..# #.#.# #..## #...# #...#',
  O: '.###. #...# #...# #...# #...# #...# .###.',
  P: '####. #...# #...# ####. #.... #.... #....',
  Q: '.###. #...# #...# #...# #.#.# #..#. .##.#',
  R: '####. #...# #...# ####. #.#.. #..#. #...#',
  S: '.#### #.... #.... .###. ....# ....# ####.',
  T: '##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..',
  U: '#...# #...# #...# #...# #...# #...# .###.',
  V: '#...# #...# #...# #...# #...# .#.#. ..#..',
  W: '#...# #...# #...# #.#.# #.#.# #.#.# .#.#.',
  X: '#...# #...# .#.#. ..#.. .#.#. #...# #...#',
  Y: '#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..',
  Z: '##### ....# ...#. ..#.. .#... #.... #####',
  a: '..... ..... .###. ....# .#### #...# .####',
  b: '#.... #.... #.##. ##..# #...# #...# ####.',
  c: '..... ..... .###. #.... #.... #...# .###.',
  d: '....# ....# .##.# #..## #...# #...# .####',
  e: '..... ..... .###. #...# ##### #.... .###.',
  f: '..##. .#..# .#... ###.. .#... .#... .#...',
  g: '..... ..... .#### #...# .#### ....# .###.',
  h: '#.... #.... #.##. ##..# #...# #...# #...#',
  i: '..#.. ..... .##.. ..#.. ..#.. ..#.. .###.',
  j: '...#. ..... ..##. ...#. ...#. #..#. .##..',
  k: '#.... #.... #..#. #.#.. ##... #.#.. #..#.',
  l: '.##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###.',
  m: '..... ..... ##.#. #.#.# #.#.# #...# #...#',
  n: '..... ..... #.##. ##..# #...# #...# #...#',
  o: '..... ..... .###. #...# #...# #...# .###.',
  p: '..... ..... ####. #...# ####. #.... #....',
  q: '..... ..... .#### #...# .#### ....# ....#',
  r: '..... ..... #.##. ##..# #.... #.... #....',
  s: '..... ..... .###. #.... .###. ....# ####.',
  t: '.#... .#... ###.. .#... .#... .#..# ..##.',
  u: '..... ..... #...# #...# #...# #..## .##.#',
  v: '..... ..... #...# #...# #...# .#.#. ..#..',
  w: '..... ..... #...# #...# #.#.# #.#.# .#.#.',
  x: '..... ..... #...# .#.#. ..#.. .#.#. #...#',
  y: '..... ..... #...# #...# .#### ....# .###.',
  z: '..... ..... ##### ...#. ..#.. .#... #####',
  '0': '.###. #...# #..## #.#.# ##..# #...# .###.',
  '1': '..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.',
  '2': '.###. #...# ....# ...#. ..#.. .#... #####',
  '3': '##### ...#. ..#.. ...#. ....# #...# .###.',
  '4': '...#. ..##. .#.#. #..#. ##### ...#. ...#.',
  '5': '##### #.... ####. ....# ....# #...# .###.',
  '6': '..##. .#... #.... ####. #...# #...# .###.',
  '7': '##### ....# ...#. ..#.. .#... .#... .#...',
  '8': '.###. #...# #...# .###. #...# #...# .###.',
  '9': '.###. #...# #...# .#### ....# ...#. .##..',
  ' ': '..... ..... ..... ..... ..... ..... .....',
  '.': '..... ..... ..... ..... ..... .##.. .##..',
  ',': '..... ..... ..... ..... .##.. ..#.. .#...',
  ':': '..... .##.. .##.. ..... .##.. .##.. .....',
  ';': '..... .##.. .##.. ..... .##.. ..#.. .#...',
  '-': '..... ..... ..... ##### ..... ..... .....',
  '+': '..... ..#.. ..#.. ##### ..#.. ..#.. .....',
  _: '..... ..... ..... ..... ..... ..... #####',
  '=': '..... ..... ##### ..... ##### ..... .....',
  '/': '..... ....# ...#. ..#.. .#... #.... .....',
  '(': '...#. ..#.. .#... .#... .#... ..#.. ...#.',
  ')': '.#... ..#.. ...#. ...#. ...#. ..#.. .#...',
  '%': '##... ##..# ...#. ..#.. .#... #..## ...##',
  '[': '.###. .#... .#... .#... .#... .#... .###.',
  ']': '.###. ...#. ...#. ...#. ...#. ...#. .###.',
  '<': '...#. ..#.. .#... #.... .#... ..#.. ...#.',
  '>': '.#... ..#.. ...#. ....# ...#. ..#.. .#...',
  '#': '.#.#. .#.#. ##### .#.#. ##### .#.#. .#.#.',
  '*': '..... ..#.. #.#.# .###. #.#.# ..#.. .....',
  "'": '..#.. ..#.. .#... ..... ..... ..... .....',
  '"': '.#.#. .#.#. .#.#. ..... ..... ..... .....',
  '!': '..#.. ..#.. ..#.. ..#.. ..#.. ..... ..#..',
  '?': '.###. #...# ....# ...#. ..#.. ..... ..#..',
  '×': '..... #...# .#.#. ..#.. .#.#. #...# .....',
  '·': '..... ..... ..... .##.. .##.. ..... .....',
};

/** Drawn for any character the font lacks: a small hollow box. */
const UNKNOWN_ROWS = '..... ##### #...# #...# #...# ##### .....';

/** Turns '#'/'.' rows into GLYPH_WIDTH × GLYPH_HEIGHT ones and zeros, row-major. */
function parseGlyph(name: string, rows: string): Uint8Array {
  const lines = rows.split(' ');
  if (lines.length !== GLYPH_HEIGHT || lines.some((l) => !/^[#.]{5}$/.test(l))) {
    throw new Error(`chart font: glyph ${JSON.stringify(name)} must be ${GLYPH_HEIGHT} rows of ${GLYPH_WIDTH} '#' or '.'`);
  }
  const bits = new Uint8Array(GLYPH_WIDTH * GLYPH_HEIGHT);
  for (let y = 0; y < GLYPH_HEIGHT; y++) for (let x = 0; x < GLYPH_WIDTH; x++) bits[y * GLYPH_WIDTH + x] = lines[y][x] === '#' ? 1 : 0;
  return bits;
}

const FONT = new Map<string, Uint8Array>(Object.entries(GLYPH_ROWS).map(([ch, rows]) => [ch, parseGlyph(ch, rows)]));
const UNKNOWN_GLYPH = parseGlyph('unknown', UNKNOWN_ROWS);

/** Width in pixels of `text` drawn at `scale`: one cell per character, less the last spacing column. */
export function textWidth(text: string, scale = 1): number {
  checkScale('textWidth', scale);
  const n = Array.from(text).length;
  return n === 0 ? 0 : n * CELL_WIDTH * scale - scale;
}

/**
 * Draws one line of text with its top-left corner at (x, y); each font pixel becomes a
 * scale × scale block. Ink outside the image is dropped. The text is 7 × scale pixels tall
 * and textWidth(text, scale) wide.
 */
export function drawText(img: RgbImage, x: number, y: number, text: string, rgb: Rgb, scale = 1): void {
  checkCanvas('drawText', img);
  checkScale('drawText', scale);
  checkRgb('drawText', rgb);
  if (!Number.isFinite(x) || !Number.isFinite(y)) throw new Error(`drawText: x and y must be finite numbers (got ${x}, ${y}); pass pixel coordinates of the text's top-left corner`);
  const x0 = Math.round(x);
  const y0 = Math.round(y);
  const chars = Array.from(text);
  for (let i = 0; i < chars.length; i++) {
    const glyph = FONT.get(chars[i]) ?? UNKNOWN_GLYPH;
    for (let gy = 0; gy < GLYPH_HEIGHT; gy++) {
      for (let gx = 0; gx < GLYPH_WIDTH; gx++) {
        if (glyph[gy * GLYPH_WIDTH + gx]) fillRect(img, x0 + (i * CELL_WIDTH + gx) * scale, y0 + gy * scale, scale, scale, rgb);
      }
    }
  }
}

/**
 * Draws text turned a quarter turn anticlockwise (it reads bottom to top, as a y-axis label
 * does), inside the box whose top-left corner is (x, y): 7 × scale wide, textWidth tall.
 */
function drawTextUp(img: RgbImage, x: number, y: number, text: string, rgb: Rgb, scale = 1): void {
  const chars = Array.from(text);
  const length = chars.length * CELL_WIDTH - 1; // in font pixels
  for (let i = 0; i < chars.length; i++) {
    const glyph = FONT.get(chars[i]) ?? UNKNOWN_GLYPH;
    for (let gy = 0; gy < GLYPH_HEIGHT; gy++) {
      for (let gx = 0; gx < GLYPH_WIDTH; gx++) {
        // Font pixel (u along the text, gy down the glyph) goes to column gy, row length-1-u.
        const u = i * CELL_WIDTH + gx;
        if (glyph[gy * GLYPH_WIDTH + gx]) fillRect(img, x + gy * scale, y + (length - 1 - u) * scale, scale, scale, rgb);
      }
    }
  }
}

/** The longest prefix of `text` that fits in `width` pixels at scale 1. */
function fitText(text: string, width: number): string {
  const chars = Array.from(text);
  const n = Math.max(0, Math.floor((width + 1) / CELL_WIDTH));
  return chars.length <= n ? text : chars.slice(0, n).join('');
}

// ---- pixels --------------------------------------------------------------------------------

/** A rectangle of pixels, bounds inclusive. */
interface Box {
  x0: number;
  y0: number;
  x1: number;
  y1: number;
}

function blankImage(width: number, height: number, rgb: Rgb): RgbImage {
  if (width * height > MAX_PIXELS) throw new Error(`chart: a ${width}×${height} image is too large (over ${MAX_PIXELS} pixels); pass a smaller size or scale`);
  const data = new Uint8Array(width * height * 3);
  for (let p = 0; p < width * height; p++) {
    data[p * 3] = rgb[0];
    data[p * 3 + 1] = rgb[1];
    data[p * 3 + 2] = rgb[2];
  }
  return { width, height, channels: 3, data };
}

/** Fills a w × h rectangle from (x, y), keeping only pixels inside the image and inside `clip`. */
function fillRect(img: RgbImage, x: number, y: number, w: number, h: number, rgb: Rgb, clip?: Box): void {
  const left = Math.max(x, 0, clip ? clip.x0 : 0);
  const top = Math.max(y, 0, clip ? clip.y0 : 0);
  const right = Math.min(x + w - 1, img.width - 1, clip ? clip.x1 : img.width - 1);
  const bottom = Math.min(y + h - 1, img.height - 1, clip ? clip.y1 : img.height - 1);
  for (let yy = top; yy <= bottom; yy++) {
    for (let xx = left; xx <= right; xx++) {
      const i = (yy * img.width + xx) * 3;
      img.data[i] = rgb[0];
      img.data[i + 1] = rgb[1];
      img.data[i + 2] = rgb[2];
    }
  }
}

function strokeRect(img: RgbImage, box: Box, rgb: Rgb): void {
  fillRect(img, box.x0, box.y0, box.x1 - box.x0 + 1, 1, rgb);
  fillRect(img, box.x0, box.y1, box.x1 - box.x0 + 1, 1, rgb);
  fillRect(img, box.x0, box.y0, 1, box.y1 - box.y0 + 1, rgb);
  fillRect(img, box.x1, box.y0, 1, box.y1 - box.y0 + 1, rgb);
}

/** Bresenham's line between two pixel centres, each step a 2 × 2 block, clipped to `clip`. */
function drawLine(img: RgbImage, xa: number, ya: number, xb: number, yb: number, rgb: Rgb, clip: Box): void {
  const dx = Math.abs(xb - xa);
  const dy = -Math.abs(yb - ya);
  const sx = xa < xb ? 1 : -1;
  const sy = ya < yb ? 1 : -1;
  let err = dx + dy;
  let x = xa;
  let y = ya;
  for (;;) {
    fillRect(img, x, y, 2, 2, rgb, clip);
    if (x === xb && y === yb) break;
    const e2 = 2 * err;
    if (e2 >= dy) {
      err += dy;
      x += sx;
    }
    if (e2 <= dx) {
      err += dx;
      y += sy;
    }
  }
}

// ---- numbers and axes ----------------------------------------------------------------------

/** Decimal exponent of the last significant digit of a positive step (0.025 → -3, 200 → 2). */
function lastDigitExponent(step: number): number {
  const e = Math.floor(Math.log10(step));
  for (let k = 0; k < 4; k++) {
    const m = step / 10 ** (e - k);
    if (Math.abs(m - Math.round(m)) < 1e-6) return e - k;
  }
  return e - 3;
}

/**
 * Formats a number compactly for a label: 1200 → "1200", 0.00123 → "0.0012", 1.5e-5 → "1.5e-5".
 * Without `step`: whole numbers from 1000 up, three significant digits from 1 to 1000, two below
 * 1; exponent form below 1e-4 and from 1e6 up. With `step` (the tick spacing), enough digits to
 * tell ticks `step` apart.
 */
export function formatNumber(v: number, step?: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (step !== undefined && a < step * 1e-6) return '0'; // float residue of a zero tick
  const e = Math.floor(Math.log10(a));
  let lsd: number;
  if (step !== undefined && Number.isFinite(step) && step > 0) lsd = lastDigitExponent(step);
  else if (a >= 1000) lsd = 0;
  else lsd = a >= 1 ? e - 2 : e - 1;
  let s: string;
  if (a < 1e-4 || a >= 1e6) {
    const digits = Math.min(4, Math.max(1, e - lsd + 1));
    const [mantissa, exponent] = v.toExponential(digits - 1).split('e');
    s = `${stripZeros(mantissa)}e${exponent.replace('+', '')}`;
  } else {
    s = stripZeros(v.toFixed(Math.min(10, Math.max(0, -lsd))));
  }
  return Number(s) === 0 ? '0' : s;
}

/** "0.0500" → "0.05", "2.0" → "2", "120" → "120". */
function stripZeros(s: string): string {
  return s.includes('.') ? s.replace(/0+$/, '').replace(/\.$/, '') : s;
}

/** An axis: data between min and max maps onto the plot; ticks are labelled. */
export interface Axis {
  min: number;
  max: number;
  ticks: number[];
  /** Tick spacing for a linear axis (decides label digits); undefined for a log axis. */
  step?: number;
  log: boolean;
}

/**
 * x × 10^k without float noise where it can be avoided: dividing by an exact power of ten gives
 * the double nearest the decimal (3 / 10 is 0.3, where 3 × 0.1 is 0.30000000000000004).
 */
function timesPowerOfTen(x: number, k: number): number {
  return k < 0 ? x / 10 ** -k : x * 10 ** k;
}

/**
 * Four to six ticks at multiples of 1, 2, 2.5 or 5 × 10^k; the axis runs from the first tick to
 * the last, which cover [lo, hi]. Of the spacings that give 4–6 ticks, the one that wastes the
 * least axis wins; on a tie, 1, 2 or 5 beat 2.5, then wider spacing wins. Equal ends are padded by
 * 10% (by 1 around zero).
 */
export function niceTicks(lo: number, hi: number): Axis {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) throw new Error(`niceTicks: the range ends must be finite numbers (got ${lo}, ${hi})`);
  if (hi < lo) [lo, hi] = [hi, lo];
  // Ends too close to label apart count as equal.
  if (hi - lo <= Math.max(Math.abs(lo), Math.abs(hi)) * 1e-12 || hi - lo < 1e-290) {
    const mid = (lo + hi) / 2;
    const pad = Math.abs(mid) < 1e-290 ? 1 : Math.abs(mid) * 0.1;
    lo = mid - pad;
    hi = mid + pad;
  }
  const span = hi - lo;
  if (!Number.isFinite(span)) throw new Error(`niceTicks: the range ${lo} to ${hi} is too wide to draw; pass values within ±1e307`);
  // Start from a step that leaves at most 2 intervals, then shrink it by at most 2× at a time:
  // the first step that gives 3 or more intervals gives at most 5, so 4 to 6 ticks. Smaller
  // steps are tried until they give more than 5 intervals.
  const mantissas = [5, 2.5, 2, 1];
  let best: { first: number; last: number; m: number; k: number; waste: number } | null = null;
  for (let k = Math.ceil(Math.log10(span)) + 1; k > -400; k--) {
    for (const m of mantissas) {
      const step = timesPowerOfTen(m, k);
      const first = Math.floor(lo / step + 1e-9);
      const last = Math.ceil(hi / step - 1e-9);
      const intervals = last - first;
      if (intervals < 3) continue;
      if (intervals > 5) {
        if (best === null) throw new Error(`niceTicks: found no tick spacing for ${lo} to ${hi}`);
        const ticks: number[] = [];
        for (let i = best.first; i <= best.last; i++) ticks.push(timesPowerOfTen(i * best.m, best.k));
        return { min: ticks[0], max: ticks[ticks.length - 1], ticks, step: timesPowerOfTen(best.m, best.k), log: false };
      }
      const waste = (intervals * step) / span;
      const better = best === null || waste < best.waste - 1e-9 || (Math.abs(waste - best.waste) <= 1e-9 && best.m === 2.5 && m !== 2.5);
      if (better) best = { first, last, m, k, waste };
    }
  }
  throw new Error(`niceTicks: found no tick spacing for ${lo} to ${hi}`);
}

/** Ticks for a log axis over positive [lo, hi]: decades, with 2× and 5× (or 3×) in short ranges. */
function logTicks(lo: number, hi: number): Axis {
  const a = Math.floor(Math.log10(lo) + 1e-9);
  let b = Math.ceil(Math.log10(hi) - 1e-9);
  if (b <= a) b = a + 1;
  const decades = b - a;
  const ticks: number[] = [];
  if (decades === 1) {
    for (const m of [1, 2, 5, 10]) ticks.push(timesPowerOfTen(m, a));
  } else if (decades === 2) {
    for (const m of [1, 3, 10, 30, 100]) ticks.push(timesPowerOfTen(m, a));
  } else {
    const step = Math.ceil(decades / 5);
    b = a + Math.ceil(decades / step) * step;
    for (let k = a; k <= b; k += step) ticks.push(timesPowerOfTen(1, k));
  }
  return { min: ticks[0], max: ticks[ticks.length - 1], ticks, log: true };
}

/** Where v falls along the axis, 0 at min and 1 at max. */
function axisFraction(axis: Axis, v: number): number {
  if (axis.log) return (Math.log10(v) - Math.log10(axis.min)) / (Math.log10(axis.max) - Math.log10(axis.min));
  return (v - axis.min) / (axis.max - axis.min);
}

function tickLabel(axis: Axis, v: number): string {
  return formatNumber(v, axis.step);
}

// ---- chart frame ---------------------------------------------------------------------------

const PAD = 8;
const TICK = 4;
const TICK_GAP = 3;
const LEGEND_ROW = 10;

interface LegendEntry {
  name: string;
  rgb: Rgb;
}

/** Where a chart's data goes: `area` is the data range's pixel box, `clip` what lines may touch. */
interface Frame {
  /** Column of the y axis line and row of the x axis line. */
  axisX: number;
  axisY: number;
  area: Box;
  clip: Box;
}

function legendWidth(entries: LegendEntry[], maxWidth: number): number {
  if (entries.length === 0) return 0;
  const nameWidth = Math.max(...entries.map((e) => textWidth(e.name)));
  return Math.min(maxWidth, 4 + 10 + 4 + nameWidth + 4);
}

/** A bordered box of colour swatches and names with its top-left corner at (x, y). */
function drawLegend(img: RgbImage, x: number, y: number, width: number, entries: LegendEntry[]): void {
  strokeRect(img, { x0: x, y0: y, x1: x + width - 1, y1: y + entries.length * LEGEND_ROW + 4 }, LEGEND_BORDER);
  for (let i = 0; i < entries.length; i++) {
    const rowY = y + 4 + i * LEGEND_ROW;
    fillRect(img, x + 4, rowY, 10, 7, entries[i].rgb);
    drawText(img, x + 18, rowY, fitText(entries[i].name, width - 22), INK);
  }
}

/**
 * Draws title, axis labels, legend and axis lines, and says where the data goes. Leaves room on
 * the left for y tick labels `yTickWidth` wide and below for one row of x tick labels.
 */
function drawFrame(img: RgbImage, o: { title: string; xLabel: string; yLabel: string; yTickWidth: number; legend: LegendEntry[]; rightSlack: number }): Frame {
  const W = img.width;
  const H = img.height;
  const titleScale = textWidth(o.title, 2) <= W - 2 * PAD ? 2 : 1;
  drawText(img, Math.floor((W - textWidth(o.title, titleScale)) / 2), PAD, o.title, INK, titleScale);
  const top = PAD + GLYPH_HEIGHT * titleScale + PAD;
  const xLabelRows = o.xLabel === '' ? 0 : GLYPH_HEIGHT + 5;
  const axisY = H - 1 - PAD - xLabelRows - GLYPH_HEIGHT - TICK_GAP - TICK;
  const axisX = PAD + (o.yLabel === '' ? 0 : GLYPH_HEIGHT + 5) + o.yTickWidth + TICK_GAP + TICK;
  let lw = legendWidth(o.legend, Math.floor(W * 0.3));
  let right = W - 1 - PAD - (lw > 0 ? lw + PAD : o.rightSlack);
  if (right - axisX < 40) {
    // Too narrow for a legend beside the plot: leave it out rather than crush the data.
    lw = 0;
    right = W - 1 - PAD - o.rightSlack;
  }
  right = Math.max(right, axisX + 3);
  if (lw > 0) drawLegend(img, W - PAD - lw, top, lw, o.legend);
  const bottom = Math.max(axisY, top + 3);
  if (o.yLabel !== '') {
    const label = fitText(o.yLabel, bottom - top + 1);
    drawTextUp(img, PAD, top + Math.floor((bottom - top + 1 - textWidth(label)) / 2), label, INK);
  }
  if (o.xLabel !== '') {
    const label = fitText(o.xLabel, W - 2 * PAD);
    const centre = Math.floor((axisX + right) / 2);
    const x = Math.min(Math.max(PAD, centre - Math.floor(textWidth(label) / 2)), W - PAD - textWidth(label));
    drawText(img, x, H - PAD - GLYPH_HEIGHT, label, INK);
  }
  fillRect(img, axisX, top, 1, bottom - top + 1, AXIS);
  fillRect(img, axisX, bottom, right - axisX + 1, 1, AXIS);
  return {
    axisX,
    axisY: bottom,
    // Data stays one pixel off the axes, and 2 × 2 line blocks still end inside the clip box.
    area: { x0: axisX + 2, y0: top + 1, x1: Math.max(axisX + 2, right - 1), y1: Math.max(top + 1, bottom - 2) },
    clip: { x0: axisX + 1, y0: top, x1: right, y1: bottom - 1 },
  };
}

function pixelX(frame: Frame, axis: Axis, v: number): number {
  return Math.round(frame.area.x0 + axisFraction(axis, v) * (frame.area.x1 - frame.area.x0));
}

function pixelY(frame: Frame, axis: Axis, v: number): number {
  return Math.round(frame.area.y1 - axisFraction(axis, v) * (frame.area.y1 - frame.area.y0));
}

/** Y ticks: a mark and a right-aligned label at each, and a light grid line across the plot. */
function drawYTicks(img: RgbImage, frame: Frame, axis: Axis): void {
  for (const t of axis.ticks) {
    const y = pixelY(frame, axis, t);
    fillRect(img, frame.clip.x0, y, frame.clip.x1 - frame.clip.x0 + 1, 1, GRID);
    fillRect(img, frame.axisX - TICK, y, TICK, 1, AXIS);
    const label = tickLabel(axis, t);
    drawText(img, frame.axisX - TICK - TICK_GAP - textWidth(label), y - 3, label, INK);
  }
}

function checkSize(where: string, name: string, v: number): void {
  if (!Number.isInteger(v) || v < 100 || v > 8192) {
    throw new Error(`${where}: ${name} must be a whole number of pixels from 100 to 8192 (got ${v}); pass e.g. ${name}: ${name === 'width' ? 640 : 360}, or leave it out for the default`);
  }
}

function checkScale(where: string, scale: number): void {
  if (!Number.isInteger(scale) || scale < 1 || scale > 64) {
    throw new Error(`${where}: scale must be a whole number from 1 to 64 (got ${scale}); pass scale: 1, 2, 3…, or leave it out for the default`);
  }
}

function checkRgb(where: string, rgb: Rgb): void {
  if (!Array.isArray(rgb) || rgb.length !== 3 || rgb.some((c) => !Number.isInteger(c) || c < 0 || c > 255)) {
    throw new Error(`${where}: a colour must be [red, green, blue] with whole numbers 0–255 (got ${JSON.stringify(rgb)}); pass e.g. [31, 119, 180] or a PALETTE entry`);
  }
}

function checkCanvas(where: string, img: RgbImage): void {
  if (img.channels !== 3 || img.data.length !== img.width * img.height * 3) {
    throw new Error(`${where}: the image must be RGB (channels: 3, width × height × 3 bytes; got channels ${img.channels}, ${img.data.length} bytes for ${img.width}×${img.height}); pass an RGB image`);
  }
}

// ---- line chart ----------------------------------------------------------------------------

export interface LineSeries {
  name: string;
  /** [x, y] pairs in drawing order; a missing or non-finite point breaks the line. */
  points: [number, number][];
  rgb?: Rgb;
}

export interface ChartMarker {
  /** Where the dashed vertical line goes, in x data units. */
  x: number;
  label: string;
  rgb?: Rgb;
}

export interface LineChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: LineSeries[];
  /** Pixels; default 640. */
  width?: number;
  /** Pixels; default 360. */
  height?: number;
  /** Logarithmic y axis; points with y ≤ 0 are left out (and break the line). */
  logY?: boolean;
  /** Dashed vertical lines with a label, e.g. "recommended stop". */
  markers?: ChartMarker[];
}

/** A line chart: axes with nice ticks, one polyline per series, dashed markers and a legend. */
export function lineChart(o: LineChartOptions): RgbImage {
  const width = o.width ?? 640;
  const height = o.height ?? 360;
  checkSize('lineChart', 'width', width);
  checkSize('lineChart', 'height', height);
  const logY = o.logY ?? false;
  const markers = o.markers ?? [];
  const colours = o.series.map((s, i) => s.rgb ?? PALETTE[i % PALETTE.length]);
  for (const c of colours) checkRgb('lineChart', c);
  for (const m of markers) if (m.rgb) checkRgb('lineChart', m.rgb);

  // 1. Which points are drawn, and the data range they span (markers widen the x range).
  const usable = (p: [number, number] | undefined | null): p is [number, number] =>
    p != null && Number.isFinite(p[0]) && Number.isFinite(p[1]) && (!logY || p[1] > 0);
  let xLo = Infinity;
  let xHi = -Infinity;
  let yLo = Infinity;
  let yHi = -Infinity;
  for (const s of o.series) {
    for (const p of s.points) {
      if (!usable(p)) continue;
      xLo = Math.min(xLo, p[0]);
      xHi = Math.max(xHi, p[0]);
      yLo = Math.min(yLo, p[1]);
      yHi = Math.max(yHi, p[1]);
    }
  }
  for (const m of markers) {
    if (!Number.isFinite(m.x)) continue;
    xLo = Math.min(xLo, m.x);
    xHi = Math.max(xHi, m.x);
  }
  if (xLo > xHi) [xLo, xHi] = [0, 1];
  if (yLo > yHi) [yLo, yHi] = logY ? [1, 10] : [0, 1];
  const xAxis = niceTicks(xLo, xHi);
  const yAxis = logY ? logTicks(yLo, yHi) : niceTicks(yLo, yHi);

  // 2. Frame, ticks and grid.
  const img = blankImage(width, height, WHITE);
  const yTickWidth = Math.max(...yAxis.ticks.map((t) => textWidth(tickLabel(yAxis, t))));
  const lastXLabel = tickLabel(xAxis, xAxis.ticks[xAxis.ticks.length - 1]);
  const frame = drawFrame(img, {
    title: o.title,
    xLabel: o.xLabel,
    yLabel: o.yLabel,
    yTickWidth,
    legend: o.series.map((s, i) => ({ name: s.name, rgb: colours[i] })),
    rightSlack: Math.ceil(textWidth(lastXLabel) / 2),
  });
  drawYTicks(img, frame, yAxis);
  for (const t of xAxis.ticks) {
    const x = pixelX(frame, xAxis, t);
    fillRect(img, x, frame.clip.y0, 1, frame.clip.y1 - frame.clip.y0 + 1, GRID);
    fillRect(img, x, frame.axisY + 1, 1, TICK, AXIS);
    const label = tickLabel(xAxis, t);
    drawText(img, x - Math.floor(textWidth(label) / 2), frame.axisY + TICK + TICK_GAP, label, INK);
  }
  // The grid overdrew the axis lines where they cross; draw them again.
  fillRect(img, frame.axisX, frame.clip.y0, 1, frame.axisY - frame.clip.y0 + 1, AXIS);
  fillRect(img, frame.axisX, frame.axisY, frame.clip.x1 - frame.axisX + 1, 1, AXIS);

  // 3. Markers, under the data: dashed lines (5 on, 3 off) with staggered labels.
  for (let i = 0; i < markers.length; i++) {
    const m = markers[i];
    if (!Number.isFinite(m.x)) continue;
    const rgb = m.rgb ?? MARKER;
    const x = pixelX(frame, xAxis, m.x);
    for (let y = frame.clip.y0; y <= frame.clip.y1; y++) if ((y - frame.clip.y0) % 8 < 5) fillRect(img, x, y, 1, 1, rgb, frame.clip);
    const w = textWidth(m.label);
    const labelX = x + 3 + w <= frame.clip.x1 ? x + 3 : x - 3 - w;
    drawText(img, labelX, frame.clip.y0 + 2 + i * LEGEND_ROW, m.label, rgb);
  }

  // 4. Series: polylines through consecutive usable points; a lone point is a 3 × 3 dot.
  for (let s = 0; s < o.series.length; s++) {
    const rgb = colours[s];
    let run: [number, number][] = [];
    const flush = () => {
      if (run.length === 1) fillRect(img, run[0][0] - 1, run[0][1] - 1, 3, 3, rgb, frame.clip);
      for (let i = 1; i < run.length; i++) drawLine(img, run[i - 1][0], run[i - 1][1], run[i][0], run[i][1], rgb, frame.clip);
      run = [];
    };
    for (const p of o.series[s].points) {
      if (usable(p)) run.push([pixelX(frame, xAxis, p[0]), pixelY(frame, yAxis, p[1])]);
      else flush();
    }
    flush();
  }
  return img;
}

// ---- bar chart -----------------------------------------------------------------------------

export interface BarSeries {
  name: string;
  /** One value per group; NaN for a missing one (drawn as "n/a"). */
  values: number[];
  rgb?: Rgb;
}

export interface BarChartOptions {
  title: string;
  yLabel: string;
  /** One group of bars per entry, labelled under the x axis (e.g. one per technique). */
  groups: string[];
  series: BarSeries[];
  width?: number;
  height?: number;
  /** Top of the y axis; taller bars are cut off there. Default: a nice value above the data. */
  yMax?: number;
}

/** Grouped bars from zero, one bar per series in each group, each with its value above it. */
export function barChart(o: BarChartOptions): RgbImage {
  const width = o.width ?? 640;
  const height = o.height ?? 360;
  checkSize('barChart', 'width', width);
  checkSize('barChart', 'height', height);
  const colours = o.series.map((s, i) => s.rgb ?? PALETTE[i % PALETTE.length]);
  for (const c of colours) checkRgb('barChart', c);
  for (const s of o.series) {
    if (s.values.length !== o.groups.length) {
      throw new Error(`barChart: series ${JSON.stringify(s.name)} has ${s.values.length} values but there are ${o.groups.length} groups; pass one value per group (NaN for a missing one)`);
    }
  }
  if (o.yMax !== undefined && !(Number.isFinite(o.yMax) && o.yMax > 0)) {
    throw new Error(`barChart: yMax must be a positive finite number (got ${o.yMax}); pass e.g. yMax: 1, or leave it out to fit the data`);
  }

  // 1. The y axis starts at zero (or below, for negative values).
  let lo = 0;
  let hi = 0;
  for (const s of o.series) {
    for (const v of s.values) {
      if (!Number.isFinite(v)) continue;
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
  }
  let yAxis: Axis;
  if (o.yMax !== undefined) {
    const yMax = o.yMax;
    const nice = niceTicks(lo, yMax);
    yAxis = { ...nice, max: yMax, ticks: nice.ticks.filter((t) => t <= yMax * (1 + 1e-9)) };
  } else {
    yAxis = niceTicks(lo, hi === lo ? lo + 1 : hi);
  }

  // 2. Frame and ticks; the x axis line is drawn again at zero.
  const img = blankImage(width, height, WHITE);
  const yTickWidth = Math.max(...yAxis.ticks.map((t) => textWidth(tickLabel(yAxis, t))));
  const frame = drawFrame(img, {
    title: o.title,
    xLabel: '',
    yLabel: o.yLabel,
    yTickWidth,
    legend: o.series.map((s, i) => ({ name: s.name, rgb: colours[i] })),
    rightSlack: 0,
  });
  drawYTicks(img, frame, yAxis);
  fillRect(img, frame.axisX, frame.clip.y0, 1, frame.axisY - frame.clip.y0 + 1, AXIS);

  // 3. Bars: each group gets an equal slot; its bars fill the middle 80%.
  const zeroY = pixelY(frame, yAxis, 0);
  const plotLeft = frame.clip.x0;
  const plotWidth = frame.clip.x1 - frame.clip.x0 + 1;
  const nGroups = o.groups.length;
  const nSeries = o.series.length;
  for (let g = 0; g < nGroups; g++) {
    const slotX = plotLeft + Math.floor((g * plotWidth) / nGroups);
    const slotW = Math.floor(((g + 1) * plotWidth) / nGroups) - Math.floor((g * plotWidth) / nGroups);
    const barW = nSeries > 0 ? Math.max(1, Math.floor((slotW * 0.8) / nSeries)) : 0;
    const barsX = slotX + Math.floor((slotW - barW * nSeries) / 2);
    for (let s = 0; s < nSeries; s++) {
      const v = o.series[s].values[g];
      const x = barsX + s * barW;
      const centre = x + Math.floor(barW / 2);
      let label: string;
      let labelY: number;
      if (Number.isFinite(v)) {
        const vy = pixelY(frame, yAxis, Math.min(v, yAxis.max));
        const y0 = Math.min(vy, zeroY);
        // Bars from a zero baseline stand on the x axis line.
        const y1 = Math.max(vy, lo < 0 ? zeroY : frame.clip.y1);
        // A one-pixel white seam keeps neighbouring bars apart when they are wide enough.
        fillRect(img, x, y0, barW > 3 ? barW - 1 : barW, y1 - y0 + 1, colours[s], frame.clip);
        label = v.toFixed(2);
        labelY = v >= 0 ? y0 - CELL_HEIGHT - 1 : y1 + 3;
      } else {
        label = 'n/a';
        labelY = zeroY - CELL_HEIGHT - 1;
      }
      drawText(img, centre - Math.floor(textWidth(label) / 2), Math.max(0, labelY), label, INK);
    }
    const name = fitText(o.groups[g], slotW);
    drawText(img, slotX + Math.floor((slotW - textWidth(name)) / 2), frame.axisY + TICK_GAP + 1, name, INK);
  }
  if (lo < 0) fillRect(img, frame.axisX, zeroY, frame.clip.x1 - frame.axisX + 1, 1, AXIS);
  return img;
}

// ---- image grid ----------------------------------------------------------------------------

export interface ImageGridOptions {
  /** rows × columns; a short row or a null cell is drawn as a light gray cell. */
  cells: (RgbImage | null)[][];
  rowLabels?: string[];
  colLabels?: string[];
  /** Nearest-neighbour upscaling of every cell; default 4. */
  scale?: number;
  /** Pixels between cells and around the grid; default 4. */
  gap?: number;
  title?: string;
}

/** Height in pixels reserved for a grid title and for the column-label row. */
const GRID_TITLE_HEIGHT = 2 * CELL_HEIGHT + 4;
const GRID_LABEL_HEIGHT = CELL_HEIGHT + 2;

/**
 * Lays images out in a labelled grid on white. Every cell is the largest input's size × scale;
 * smaller images are centred in theirs. The size is
 *   width  = gap + L + cols × cellW + (cols − 1) × gap + gap,  L = widest row label + 4 (0 without)
 *   height = gap + T + C + rows × cellH + (rows − 1) × gap + gap, T = 20 with a title, C = 10 with
 *            column labels (0 without),
 * widened if needed so the title fits at scale 1. Column labels are cut to the cell width.
 */
export function imageGrid(o: ImageGridOptions): RgbImage {
  const scale = o.scale ?? 4;
  const gap = o.gap ?? 4;
  checkScale('imageGrid', scale);
  if (!Number.isInteger(gap) || gap < 0 || gap > 256) throw new Error(`imageGrid: gap must be a whole number of pixels from 0 to 256 (got ${gap}); pass e.g. gap: 4, or leave it out`);
  const rows = o.cells.length;
  const cols = Math.max(0, ...o.cells.map((r) => r.length));
  if (rows === 0 || cols === 0) throw new Error('imageGrid: cells is empty; pass at least one row with one cell (null for an empty one)');
  if (o.rowLabels && o.rowLabels.length !== rows) throw new Error(`imageGrid: ${o.rowLabels.length} rowLabels for ${rows} rows; pass one label per row, or none`);
  if (o.colLabels && o.colLabels.length !== cols) throw new Error(`imageGrid: ${o.colLabels.length} colLabels for ${cols} columns; pass one label per column, or none`);

  // 1. Check the cells and find the largest.
  let srcW = 0;
  let srcH = 0;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < o.cells[r].length; c++) {
      const cell = o.cells[r][c];
      if (cell == null) continue;
      if (cell.channels !== 3) throw new Error(`imageGrid: cell [${r}][${c}] has ${cell.channels} channels; pass RGB cells (channels: 3), e.g. with the alpha channel dropped`);
      if (!Number.isInteger(cell.width) || !Number.isInteger(cell.height) || cell.width < 1 || cell.height < 1 || cell.data.length !== cell.width * cell.height * 3) {
        throw new Error(`imageGrid: cell [${r}][${c}] holds ${cell.data.length} bytes for ${cell.width}×${cell.height}×3; pass an RGB image whose data is width × height × 3 bytes`);
      }
      srcW = Math.max(srcW, cell.width);
      srcH = Math.max(srcH, cell.height);
    }
  }
  if (srcW === 0) [srcW, srcH] = [16, 16]; // every cell is null: draw 16 × 16 gray placeholders
  const cellW = srcW * scale;
  const cellH = srcH * scale;

  // 2. Layout.
  const labelLeft = o.rowLabels ? Math.max(...o.rowLabels.map((l) => textWidth(l))) + 4 : 0;
  const titleTop = o.title ? GRID_TITLE_HEIGHT : 0;
  const labelTop = o.colLabels ? GRID_LABEL_HEIGHT : 0;
  const gridW = gap + labelLeft + cols * cellW + (cols - 1) * gap + gap;
  const width = o.title ? Math.max(gridW, textWidth(o.title) + 2 * gap) : gridW;
  const height = gap + titleTop + labelTop + rows * cellH + (rows - 1) * gap + gap;
  const img = blankImage(width, height, WHITE);
  const cellX = (c: number) => gap + labelLeft + c * (cellW + gap);
  const cellY = (r: number) => gap + titleTop + labelTop + r * (cellH + gap);

  // 3. Text.
  if (o.title) {
    const s = textWidth(o.title, 2) <= width - 2 * gap ? 2 : 1;
    drawText(img, Math.floor((width - textWidth(o.title, s)) / 2), gap + Math.floor((GRID_TITLE_HEIGHT - 4 - GLYPH_HEIGHT * s) / 2), o.title, INK, s);
  }
  if (o.colLabels) {
    for (let c = 0; c < cols; c++) {
      const label = fitText(o.colLabels[c], cellW);
      drawText(img, cellX(c) + Math.floor((cellW - textWidth(label)) / 2), gap + titleTop, label, INK);
    }
  }
  if (o.rowLabels) {
    for (let r = 0; r < rows; r++) drawText(img, gap, cellY(r) + Math.floor((cellH - GLYPH_HEIGHT) / 2), o.rowLabels[r], INK);
  }

  // 4. Cells, each source pixel a scale × scale block.
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const cell = o.cells[r][c] ?? null;
      if (cell === null) {
        fillRect(img, cellX(c), cellY(r), cellW, cellH, EMPTY_CELL);
        continue;
      }
      const ox = cellX(c) + Math.floor((cellW - cell.width * scale) / 2);
      const oy = cellY(r) + Math.floor((cellH - cell.height * scale) / 2);
      for (let y = 0; y < cell.height * scale; y++) {
        const srcRow = Math.floor(y / scale) * cell.width;
        const dstRow = (oy + y) * width;
        for (let x = 0; x < cell.width * scale; x++) {
          const s = (srcRow + Math.floor(x / scale)) * 3;
          const d = (dstRow + ox + x) * 3;
          img.data[d] = cell.data[s];
          img.data[d + 1] = cell.data[s + 1];
          img.data[d + 2] = cell.data[s + 2];
        }
      }
    }
  }
  return img;
}
