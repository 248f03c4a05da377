// The toy world (issue 6): a deterministic generator of small synthetic pictures — one coloured
// shape on a background — with captions in a fixed grammar, so a tiny Stable Diffusion can be
// pretrained from scratch on a 2-core CPU (32×32 RGB, or 64×64) and then fine-tuned on concepts the
// base world never shows:
// - a subject, the "sks heart": a heart with polka dots (no base-world shape has a pattern), for
//   DreamBooth and textual inversion, with class prompts for prior preservation;
// - a style, "outline": every shape drawn as its contour (2 px at 32×32 for a large shape, 1 px for
//   a small one) over its background, for LoRA and hypernetworks. A small classifier tells it apart
//   from the base world reliably: the inside of the shape is background.
// Shapes are signed-distance functions (Inigo Quilez, "2D distance functions"), sampled 4×4 per
// pixel for anti-aliasing. Every random choice comes from a stream named by (seed, keys), so the
// same seed gives byte-identical images on every machine.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../formats/atomic.ts';
import { writePng, type RgbImage } from '../formats/png.ts';
import { Rng } from '../rng.ts';

// ---- attributes ----------------------------------------------------------------------------

export const SHAPES = ['circle', 'square', 'triangle', 'star', 'heart'] as const;
export const COLOURS = ['red', 'green', 'blue', 'yellow', 'purple', 'white'] as const;
export const SIZES = ['small', 'large'] as const;
export const POSITIONS = ['center', 'left', 'right', 'top', 'bottom'] as const;
export const BACKGROUNDS = ['black', 'gray', 'orange', 'cyan'] as const;
export const PATTERNS = ['plain', 'striped'] as const;
export const STYLES = ['outline'] as const;

export type Shape = (typeof SHAPES)[number];
export type Colour = (typeof COLOURS)[number];
export type Size = (typeof SIZES)[number];
export type Position = (typeof POSITIONS)[number];
export type Background = (typeof BACKGROUNDS)[number];
export type Pattern = (typeof PATTERNS)[number];
export type Style = (typeof STYLES)[number];

/** One scene of the base world: every attribute a caption names. */
export interface SceneAttrs {
  shape: Shape;
  colour: Colour;
  size: Size;
  position: Position;
  background: Background;
  pattern: Pattern;
}

/** Distinct scenes of the base world: 5 shapes × 6 colours × 2 sizes × 5 positions × 4 backgrounds × 2 patterns. */
export const WORLD_COMBINATIONS = SHAPES.length * COLOURS.length * SIZES.length * POSITIONS.length * BACKGROUNDS.length * PATTERNS.length;

/** A caption naming an attribute the toy world does not have, or naming one twice. */
export class WorldError extends Error {
  override name = 'WorldError';
}

// Shape colours and background colours are disjoint sets, so a colour word alone says which it is;
// the parser still reads "X background" as a background, to give a clear error for "green background".
const SHAPE_RGB: Readonly<Record<Colour, readonly [number, number, number]>> = {
  red: [220, 40, 40],
  green: [40, 180, 60],
  blue: [40, 80, 225],
  yellow: [235, 210, 40],
  purple: [150, 60, 200],
  white: [240, 240, 240],
};

/** Background colour and the second tone of its stripes (lighter on dark backgrounds, darker on light ones). */
const BACKGROUND_RGB: Readonly<Record<Background, { base: readonly [number, number, number]; stripe: readonly [number, number, number] }>> = {
  black: { base: [12, 12, 12], stripe: [75, 75, 75] },
  gray: { base: [128, 128, 128], stripe: [190, 190, 190] },
  orange: { base: [240, 140, 30], stripe: [170, 85, 10] },
  cyan: { base: [40, 200, 210], stripe: [15, 125, 140] },
};

/** Draws every attribute uniformly and independently from `rng`. */
export function sampleSceneFrom(rng: Rng): SceneAttrs {
  return {
    shape: rng.pick(SHAPES),
    colour: rng.pick(COLOURS),
    size: rng.pick(SIZES),
    position: rng.pick(POSITIONS),
    background: rng.pick(BACKGROUNDS),
    pattern: rng.pick(PATTERNS),
  };
}

/** Scene `index` of the world named by `seed`: random access, the same on every call. */
export function sampleScene(seed: number, index: number): SceneAttrs {
  return sampleSceneFrom(Rng.derive(seed, 'scene', index));
}

// ---- captions -------------------------------------------------------------------------------

const POSITION_PHRASE: Readonly<Record<Position, string>> = {
  center: 'in the center',
  left: 'on the left',
  right: 'on the right',
  top: 'at the top',
  bottom: 'at the bottom',
};

/** The subject's token, placed before its class noun: "a large sks heart …". */
export const SUBJECT_TOKEN = 'sks';

const article = (word: string) => (/^[aeiou]/.test(word) ? 'an' : 'a');

/**
 * The caption of a scene, in one fixed grammar:
 *   a {size} {colour} [sks ]{shape} {in the center|on the left|on the right|at the top|at the bottom},
 *   on a[n] [striped ]{background} background
 * e.g. "a small red star at the top, on a striped cyan background". Every attribute is named, so
 * parseCaption gives the scene back. With `colour: false` the colour is left out: a subject's own
 * colour is part of what its token stands for ("a large sks heart on the left, …").
 */
export function caption(attrs: SceneAttrs, o: { subject?: boolean; colour?: boolean } = {}): string {
  const noun = o.subject ? `${SUBJECT_TOKEN} ${attrs.shape}` : attrs.shape;
  const bg = attrs.pattern === 'striped' ? `striped ${attrs.background}` : attrs.background;
  const colour = o.colour === false ? '' : ` ${attrs.colour}`;
  return `a ${attrs.size}${colour} ${noun} ${POSITION_PHRASE[attrs.position]}, on ${article(bg)} ${bg} background`;
}

/** What a caption or prompt says: the attributes it names, and whether it names the subject. */
export interface CaptionAttrs extends Partial<SceneAttrs> {
  /** Present (true) when the caption names the subject ("sks heart"). */
  subject?: true;
}

const ALIASES: Readonly<Record<string, string>> = { grey: 'gray', centre: 'center', middle: 'center', centered: 'center', big: 'large', little: 'small' };

const has = <V extends string>(xs: readonly V[], w: string): w is V => (xs as readonly string[]).includes(w);

/**
 * Reads back the attributes a caption names: the inverse of caption(), and lenient enough for
 * prompts ("a red heart on a gray background" → {shape, colour, background, pattern: 'plain'}).
 * Unnamed attributes are absent; a background named without "striped" is plain. Words outside the
 * world's vocabulary are skipped; a colour the world does not have in that role, or two values for
 * one attribute, throw a WorldError naming the caption.
 */
export function parseCaption(text: string): CaptionAttrs {
  const words = text.toLowerCase().split(/[^a-z]+/).filter((w) => w !== '').map((w) => ALIASES[w] ?? w);
  const out: CaptionAttrs = {};
  const set = <K extends keyof SceneAttrs>(key: K, value: SceneAttrs[K]) => {
    if (out[key] !== undefined && out[key] !== value) throw new WorldError(`caption "${text}" names two ${key}s, ${out[key]} and ${value}: a toy scene has one`);
    out[key] = value;
  };
  let sawBackground = false;
  for (let i = 0; i < words.length; i++) {
    const w = words[i];
    const next = words[i + 1];
    if (w === SUBJECT_TOKEN) out.subject = true;
    else if (has(SHAPES, w)) set('shape', w);
    else if (has(SIZES, w)) set('size', w);
    else if (has(POSITIONS, w)) set('position', w);
    else if (has(PATTERNS, w)) set('pattern', w);
    else if (w === 'background') sawBackground = true;
    else if (has(COLOURS, w) || has(BACKGROUNDS, w)) {
      // "… {colour} background" is the background (one word further for "striped {colour} background").
      const isBackground = next === 'background';
      if (isBackground) {
        if (!has(BACKGROUNDS, w)) throw new WorldError(`caption "${text}": ${w} is not a background of the toy world; backgrounds are ${BACKGROUNDS.join(', ')}`);
        set('background', w);
      } else {
        if (!has(COLOURS, w)) throw new WorldError(`caption "${text}": ${w} is not a shape colour of the toy world; shapes are ${COLOURS.join(', ')}`);
        set('colour', w);
      }
    }
  }
  if (out.subject) {
    if (out.shape !== undefined && out.shape !== 'heart') throw new WorldError(`caption "${text}": the subject "${SUBJECT_TOKEN}" is a heart, not a ${out.shape}`);
    out.shape = 'heart';
  }
  if ((sawBackground || out.background !== undefined) && out.pattern === undefined) out.pattern = 'plain';
  return out;
}

/** True when a parsed caption names every attribute of a scene. */
export function isCompleteScene(c: CaptionAttrs): c is CaptionAttrs & SceneAttrs {
  return c.shape !== undefined && c.colour !== undefined && c.size !== undefined && c.position !== undefined && c.background !== undefined && c.pattern !== undefined;
}

// ---- rendering ------------------------------------------------------------------------------

export type WorldSize = 32 | 64;

export interface RenderOptions {
  /** Width and height in pixels. Default 32. Geometry is in fractions of the image, so 64 is 32 sharper. */
  size?: WorldSize;
  /** Seeds a small jitter of position, scale, rotation, colour and stripe phase. Without, the canonical scene. */
  seed?: number;
  /** Draw the shape as the subject (polka dots). Only hearts are the subject; renderSubject sets both. */
  subject?: boolean;
  /** Draw the scene in a style of the toy world. */
  style?: Style;
  /** Marks beyond the world's own (the VAE's codec set); subject and style set theirs. */
  marks?: Marks;
}

/**
 * Marks drawn on a shape, in units of its half-extent R (so they grow and turn with it): the
 * subject's polka dots and the outline style are two settings of these. The VAE learns from
 * random settings of all of them (codecImage), so it can encode and decode concepts that the
 * text encoder and UNet never saw — as a real SD VAE can draw things its UNet was never taught.
 */
export interface Marks {
  /** A staggered grid of dots inside the shape: centre spacing and radius (× R), colour (default: contrasting). */
  dots?: { spacing: number; radius: number; rgb?: readonly [number, number, number] };
  /** Only the contour is filled: stroke width × R (at least OUTLINE_MIN of the image side). */
  outline?: number;
  /** A fill colour outside the palette. */
  fill?: readonly [number, number, number];
}

/** Half-extent of a shape, in fractions of the image side. */
const RADIUS: Readonly<Record<Size, number>> = { small: 0.15, large: 0.28 };
/** Space kept between a shape placed on a side and the image edge. */
const MARGIN = 0.04;
/**
 * The outline style's stroke, as a fraction of the shape's half-extent, inside the shape's edge so
 * its extent is kept: 2.7 pixels for a large shape at 32×32; a small one gets OUTLINE_MIN (1.6 px),
 * the least the 8×8 latents of the toy VAE keep.
 */
const OUTLINE_WIDTH = 0.3;
const OUTLINE_MIN = 0.05;
/** The subject's polka dots (× R): about 7 px apart and 5 px wide on a large heart at 32×32. */
const SUBJECT_DOTS = { spacing: 0.8, radius: 0.27 } as const;
/** Diagonal stripes: one light and one dark band per period (along x + y). */
const STRIPE_PERIOD = 0.25;
const SUPERSAMPLE = 4;

interface Jitter {
  dx: number;
  dy: number;
  scale: number;
  angle: number;
  /** Brightness factor and per-channel offsets of the shape colour. */
  gain: number;
  tint: [number, number, number];
  bgTint: [number, number, number];
  stripePhase: number;
}

const NO_JITTER: Jitter = { dx: 0, dy: 0, scale: 1, angle: 0, gain: 1, tint: [0, 0, 0], bgTint: [0, 0, 0], stripePhase: 0 };

function jitterOf(seed: number): Jitter {
  const r = Rng.derive(seed, 'jitter');
  const tint = (a: number): [number, number, number] => [r.range(-a, a), r.range(-a, a), r.range(-a, a)];
  // Small enough that a "left" shape stays in the left third and a red stays red.
  return {
    dx: r.range(-0.025, 0.025),
    dy: r.range(-0.025, 0.025),
    scale: r.range(0.94, 1.06),
    angle: r.range(-10, 10) * (Math.PI / 180),
    gain: r.range(0.92, 1.05),
    tint: tint(8),
    bgTint: tint(6),
    stripePhase: r.next(),
  };
}

/** Centre of a shape of half-extent `radius` at `position`, in image fractions (y down). */
function centreOf(position: Position, radius: number): [number, number] {
  const near = radius + MARGIN;
  switch (position) {
    case 'center':
      return [0.5, 0.5];
    case 'left':
      return [near, 0.5];
    case 'right':
      return [1 - near, 0.5];
    case 'top':
      return [0.5, near];
    case 'bottom':
      return [0.5, 1 - near];
  }
}

// Signed distances (negative inside) in shape-local coordinates, y up; after Inigo Quilez.
const SQRT3 = Math.sqrt(3);
const STAR_K1X = 0.809016994375, STAR_K1Y = -0.587785252292;

function sdBox(x: number, y: number, b: number): number {
  const dx = Math.abs(x) - b, dy = Math.abs(y) - b;
  return Math.hypot(Math.max(dx, 0), Math.max(dy, 0)) + Math.min(Math.max(dx, dy), 0);
}

/** Equilateral triangle, centroid at the origin, vertices at distance 2r/√3, one pointing up. */
function sdTriangle(px: number, py: number, r: number): number {
  let x = Math.abs(px) - r;
  let y = py + r / SQRT3;
  if (x + SQRT3 * y > 0) [x, y] = [(x - SQRT3 * y) / 2, (-SQRT3 * x - y) / 2];
  x -= Math.min(Math.max(x, -2 * r), 0);
  return -Math.hypot(x, y) * Math.sign(y);
}

/** Five-pointed star of outer radius r, one point up; rf sets how deep the notches are. */
function sdStar5(px: number, py: number, r: number, rf: number): number {
  let x = Math.abs(px), y = py;
  let d = 2 * Math.max(STAR_K1X * x + STAR_K1Y * y, 0);
  x -= d * STAR_K1X;
  y -= d * STAR_K1Y;
  d = 2 * Math.max(-STAR_K1X * x + STAR_K1Y * y, 0);
  x -= d * -STAR_K1X;
  y -= d * STAR_K1Y;
  x = Math.abs(x);
  y -= r;
  const bax = rf * -STAR_K1Y, bay = rf * STAR_K1X - 1;
  const h = Math.min(Math.max((x * bax + y * bay) / (bax * bax + bay * bay), 0), r);
  return Math.hypot(x - bax * h, y - bay * h) * Math.sign(y * bax - x * bay);
}

/** Heart with its tip at the origin and lobes up to y ≈ 1.10, half-width ≈ 0.60. */
function sdHeart(px: number, py: number): number {
  const x = Math.abs(px), y = py;
  if (y + x > 1) return Math.hypot(x - 0.25, y - 0.75) - Math.SQRT2 / 4;
  const m = 0.5 * Math.max(x + y, 0);
  return Math.sqrt(Math.min(x * x + (y - 1) * (y - 1), (x - m) * (x - m) + (y - m) * (y - m))) * Math.sign(x - y);
}

const HEART_HALF_HEIGHT = 0.552;
/** The heart's unit scale for a half-extent R: R / HEART_SCALE units per heart unit. */
const HEART_SCALE = 0.58;

/**
 * Distance to a shape of half-extent R centred at the origin (y up), in the same units as R. Each
 * shape is scaled and shifted so its bounding box is centred and its area is close to a circle's.
 */
function shapeDistance(shape: Shape, x: number, y: number, R: number): number {
  switch (shape) {
    case 'circle':
      return Math.hypot(x, y) - R;
    case 'square':
      return sdBox(x, y, 0.85 * R);
    case 'triangle':
      // Circumradius 1.2R spans y ∈ [-0.6R, 1.2R]: shift down 0.3R to centre the box.
      return sdTriangle(x, y + 0.3 * R, 1.2 * R * (SQRT3 / 2));
    case 'star':
      // Outer radius 1.2R spans y ∈ [-0.97R, 1.2R].
      return sdStar5(x, y + 0.115 * R, 1.2 * R, 0.6);
    case 'heart': {
      const s = R / HEART_SCALE;
      return sdHeart(x / s, y / s + HEART_HALF_HEIGHT) * s;
    }
  }
}

/** A staggered grid of dots in shape units (x, y already divided by R). */
function onDot(x: number, y: number, spacing: number, radius: number): boolean {
  const row = Math.round(y / spacing);
  const cx = (Math.round(x / spacing - (row & 1) / 2) + (row & 1) / 2) * spacing;
  return Math.hypot(x - cx, y - row * spacing) < radius;
}

/** Light dots on dark colours, dark dots on light ones, so the pattern shows on every colour. */
function dotColour(c: readonly number[]): [number, number, number] {
  const luma = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
  const toward = luma < 160 ? 255 : 0;
  return [c[0] + 0.7 * (toward - c[0]), c[1] + 0.7 * (toward - c[1]), c[2] + 0.7 * (toward - c[2])];
}

const clamp255 = (v: number) => Math.min(255, Math.max(0, v));

/** Renders a scene to an 8-bit RGB image. The same attributes and options give the same bytes. */
export function renderScene(attrs: SceneAttrs, o: RenderOptions = {}): RgbImage {
  const size = o.size ?? 32;
  if (size !== 32 && size !== 64) throw new WorldError(`toy world images are 32 or 64 pixels wide, not ${size}`);
  if (o.subject && attrs.shape !== 'heart') throw new WorldError(`the subject is a heart; a ${attrs.shape} cannot be drawn as the subject`);
  const j = o.seed === undefined ? NO_JITTER : jitterOf(o.seed);
  const R = RADIUS[attrs.size] * j.scale;
  const [cx0, cy0] = centreOf(attrs.position, RADIUS[attrs.size]);
  const cx = cx0 + j.dx, cy = cy0 + j.dy;
  const cos = Math.cos(j.angle), sin = Math.sin(j.angle);
  const marks: Marks = { ...(o.subject ? { dots: SUBJECT_DOTS } : {}), ...(o.style === 'outline' ? { outline: OUTLINE_WIDTH } : {}), ...o.marks };
  const fg = (marks.fill ?? SHAPE_RGB[attrs.colour]).map((v, k) => clamp255(v * j.gain + j.tint[k]));
  const dot = marks.dots?.rgb ?? dotColour(fg);
  const stroke = marks.outline === undefined ? Infinity : Math.max(marks.outline * R, OUTLINE_MIN);
  const bgSpec = BACKGROUND_RGB[attrs.background];
  const bg = bgSpec.base.map((v, k) => clamp255(v + j.bgTint[k]));
  const stripe = bgSpec.stripe.map((v, k) => clamp255(v + j.bgTint[k]));

  const data = new Uint8Array(size * size * 3);
  const n = SUPERSAMPLE * SUPERSAMPLE;
  for (let py = 0; py < size; py++) {
    for (let px = 0; px < size; px++) {
      let r = 0, g = 0, b = 0;
      for (let sy = 0; sy < SUPERSAMPLE; sy++) {
        for (let sx = 0; sx < SUPERSAMPLE; sx++) {
          const u = (px + (sx + 0.5) / SUPERSAMPLE) / size;
          const v = (py + (sy + 0.5) / SUPERSAMPLE) / size;
          // Shape-local: centred, y up, turned by -angle (the shape turns by +angle).
          const ox = u - cx, oy = cy - v;
          const x = cos * ox + sin * oy, y = -sin * ox + cos * oy;
          const d = shapeDistance(attrs.shape, x, y, R);
          let c: readonly number[];
          if (d < 0 && marks.dots && onDot(x / R, y / R, marks.dots.spacing, marks.dots.radius)) c = dot;
          else if (d < 0 && d > -stroke) c = fg;
          else if (attrs.pattern === 'striped') {
            const t = (u + v) / STRIPE_PERIOD + j.stripePhase;
            c = t - Math.floor(t) < 0.5 ? bg : stripe;
          } else c = bg;
          r += c[0];
          g += c[1];
          b += c[2];
        }
      }
      const i = (py * size + px) * 3;
      data[i] = Math.round(r / n);
      data[i + 1] = Math.round(g / n);
      data[i + 2] = Math.round(b / n);
    }
  }
  return { width: size, height: size, channels: 3, data };
}

/** The subject's attributes: a scene without a shape, since the subject is always a heart. */
export type SubjectAttrs = Omit<SceneAttrs, 'shape'>;

/** The "sks heart": a heart with polka dots, a pattern no base-world shape has, in any colour and place. */
export function renderSubject(attrs: SubjectAttrs, o: Omit<RenderOptions, 'subject'> = {}): RgbImage {
  return renderScene({ ...attrs, shape: 'heart' }, { ...o, subject: true });
}

/**
 * A scene in a style. The style is a function of the scene, not a filter on pixels: 'outline' keeps
 * the background and draws only the shape's contour, 2 px at 32×32 for a large shape and 1 px for a
 * small one (the subject keeps its dots).
 */
export function applyStyle(attrs: SceneAttrs, style: Style, o: Omit<RenderOptions, 'style'> = {}): RgbImage {
  return renderScene(attrs, { ...o, style });
}

// ---- data sets ------------------------------------------------------------------------------

/** One picture with its caption: what a training folder holds as name.png + name.txt. */
export interface WorldItem {
  /** File stem, unique within a set. */
  name: string;
  attrs: SceneAttrs;
  caption: string;
  image: RgbImage;
  subject: boolean;
  style: Style | null;
}

const stem = (prefix: string, i: number) => `${prefix}-${String(i).padStart(5, '0')}`;

/** `n` base-world scenes of the world `seed`, rendered with jitter: the pretraining set. */
export function* datasetOf(n: number, seed: number, o: { size?: WorldSize } = {}): Generator<WorldItem> {
  for (let i = 0; i < n; i++) {
    const attrs = sampleScene(seed, i);
    const image = renderScene(attrs, { size: o.size, seed: Rng.derive(seed, 'render', i).uint32() });
    yield { name: stem('world', i), attrs, caption: caption(attrs), image, subject: false, style: null };
  }
}

/**
 * Image `index` of the VAE's codec set `seed`: a base-world scene, and in 60 % of them random
 * marks (dots of any spacing, size and colour; outlines of any width; fills outside the palette),
 * so the VAE is a general codec of flat pictures and not a memory of the base world. The text
 * encoder and UNet never see these: to them, dots and outlines are new.
 */
export function codecImage(seed: number, index: number, o: { size?: WorldSize } = {}): RgbImage {
  const rng = Rng.derive(seed, 'codec', index);
  const attrs = sampleSceneFrom(rng);
  const renderSeed = rng.uint32();
  const marks: Marks = {};
  if (rng.next() < 0.6) {
    const rgb = (): [number, number, number] => [rng.range(0, 255), rng.range(0, 255), rng.range(0, 255)];
    const kind = rng.next();
    if (kind < 0.45 || kind >= 0.8) {
      const spacing = rng.range(0.5, 1.3);
      marks.dots = { spacing, radius: spacing * rng.range(0.2, 0.45), rgb: rng.next() < 0.5 ? undefined : rgb() };
    }
    if (kind >= 0.45) marks.outline = rng.range(0.15, 0.6);
    if (rng.next() < 0.3) marks.fill = rgb();
  }
  return renderScene(attrs, { size: o.size, seed: renderSeed, marks });
}

/** The subject's own colour: DreamBooth photographs one object, so its set keeps one colour. */
export const SUBJECT_COLOUR: Colour = 'red';

export interface ConceptOptions {
  size?: WorldSize;
  /** Subject sets: the heart's colour, or 'any' to vary it. Default SUBJECT_COLOUR. */
  colour?: Colour | 'any';
}

/**
 * The subject is one object, and a large one: at 32×32 a small heart is 10 pixels wide, and its
 * dots would be finer than the toy VAE's 8×8 latents can keep.
 */
export const SUBJECT_SIZE: Size = 'large';

function subjectScene(seed: number, i: number, colour: Colour | 'any'): SceneAttrs {
  const attrs = sampleSceneFrom(Rng.derive(seed, 'subject', i));
  return { ...attrs, shape: 'heart', size: SUBJECT_SIZE, colour: colour === 'any' ? attrs.colour : colour };
}

/**
 * A small fine-tuning set for a concept.
 * - 'subject': the sks heart (large) in varied places and backgrounds, captioned with the token
 *   and without its colour ("a large sks heart on the left, on a gray background"), as DreamBooth
 *   captions one object: the colour is the object's, so the token learns it. Measured on the toy
 *   model (DreamBooth, 300 steps, 12 pictures per probe): concept fidelity 0.82 with the colour
 *   left to the token, 0.53 with "red" in every caption — then the token need not carry the
 *   colour, and the probes, which do not name it, get the base model's hearts. A set of
 *   `colour: 'any'` names each heart's colour, since the colour is no longer the object's.
 * - 'style': base-world scenes of every shape drawn in the outline style, with their plain captions
 *   (the style is learned as a look, not a word).
 * The scenes come from their own streams, so they are not pictures of the pretraining set.
 */
export function conceptTrainingSet(kind: 'subject' | 'style', n: number, seed: number, o: ConceptOptions = {}): WorldItem[] {
  const out: WorldItem[] = [];
  for (let i = 0; i < n; i++) {
    const renderSeed = Rng.derive(seed, kind, 'render', i).uint32();
    if (kind === 'subject') {
      const attrs = subjectScene(seed, i, o.colour ?? SUBJECT_COLOUR);
      const image = renderScene(attrs, { size: o.size, seed: renderSeed, subject: true });
      out.push({ name: stem('sks', i), attrs, caption: caption(attrs, { subject: true, colour: o.colour === 'any' }), image, subject: true, style: null });
    } else {
      const attrs = sampleSceneFrom(Rng.derive(seed, 'style', i));
      const image = applyStyle(attrs, 'outline', { size: o.size, seed: renderSeed });
      out.push({ name: stem('outline', i), attrs, caption: caption(attrs), image, subject: false, style: 'outline' });
    }
  }
  return out;
}

/** The bare class prompt of the subject. */
export const CLASS_PROMPT = 'a heart';

/**
 * Writes items as a training folder: name.png and name.txt (the caption) side by side, the format
 * src/training/dataset.ts reads. Creates the folder; returns the PNG paths in order.
 */
export function writeWorldFolder(dir: string, items: Iterable<WorldItem>): string[] {
  mkdirSync(dir, { recursive: true });
  const seen = new Set<string>();
  const written: string[] = [];
  for (const it of items) {
    if (seen.has(it.name)) throw new WorldError(`writeWorldFolder: two items are named "${it.name}" in ${dir}; each needs its own file name`);
    seen.add(it.name);
    const png = join(dir, `${it.name}.png`);
    writePng(png, it.image);
    writeFileAtomic(join(dir, `${it.name}.txt`), it.caption + '\n');
    written.push(png);
  }
  return written;
}
