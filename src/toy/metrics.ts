// Ground truth for fine-tuning on the toy world: fixed prompts, fixed seeds, the judge's verdicts.
//   concept fidelity   — prompts with the concept show it (the subject's dots; the outline look);
//   prompt fidelity    — the attributes those prompts ask for are honoured ("… on a cyan background");
//   prior preservation — what the base model could do is still there, measured against the base:
//                        for a subject, class prompts ("a large blue heart …", one per colour) still
//                        give ordinary hearts of the asked-for kind, without the dots; for a style,
//                        the styled pictures still show the shapes, colours and backgrounds asked for;
//   style strength     — how often the style shows at a LoRA weight / hypernetwork strength.
import type { RgbImage } from '../formats/png.ts';
import { SHAPES, SIZES, SUBJECT_TOKEN, caption, parseCaption, sampleScene, type SceneAttrs } from './world.ts';
import type { ToyJudge, Verdict } from './judge.ts';

/** Pictures for a prompt: `count` of them from one seed (the pipeline's batch convention). */
export type Renderer = (prompt: string, count: number, seed: number) => RgbImage[];

/** What a prompt asks for: the attributes it names, and whether the concept must show. */
export interface Expectation extends Partial<SceneAttrs> {
  subject?: boolean;
  style?: boolean;
}

export interface Probe {
  prompt: string;
  count: number;
  expect: Expectation;
}

export interface ProbeResult {
  probe: Probe;
  images: RgbImage[];
  verdicts: Verdict[];
}

const ATTRIBUTES = ['shape', 'colour', 'size', 'position', 'background', 'pattern'] as const;

/** The probe of a prompt: its attributes as parseCaption reads them. */
function probe(prompt: string, count: number, concept: Expectation): Probe {
  const { subject: _s, ...attrs } = parseCaption(prompt);
  return { prompt, count, expect: { ...attrs, ...concept } };
}

/**
 * Prompts naming the subject, at places and on backgrounds the training set had and had not. Each
 * names the size, the position and the background: the toy base model follows whole captions only
 * (given "a heart" it draws a small blob of any shape; with the size left open, small hearts, whose
 * dots its VAE cannot keep). The colour is left to the word. No striped backgrounds: the judge
 * calls the base model's hearts on stripes dotted (16 of 16 on "… on a striped black background").
 */
export function subjectProbes(token = SUBJECT_TOKEN, count = 4): Probe[] {
  return [
    `a large ${token} heart on the right, on a black background`,
    `a large ${token} heart in the center, on a gray background`,
    `a large ${token} heart on the left, on a cyan background`,
    `a large ${token} heart at the top, on an orange background`,
    `a large ${token} heart at the bottom, on a gray background`,
  ].map((p) => ({ ...probe(p.replace(token, SUBJECT_TOKEN), count, { subject: true }), prompt: p }));
}

/**
 * Class prompts of the subject: ordinary hearts, each named in full, in five colours — the
 * subject's red among them, where a drifting class shows dots first. Each colour is asked for, so a
 * class collapsing onto the subject (every heart red, or dotted) fails the attribute checks.
 */
export function classProbes(count = 4): Probe[] {
  return [
    'a large red heart on the left, on a gray background',
    'a large blue heart in the center, on a black background',
    'a small yellow heart on the right, on a cyan background',
    'a large white heart at the bottom, on an orange background',
    'a large green heart at the top, on a cyan background',
  ].map((p) => probe(p, count, { subject: false, style: false }));
}

/**
 * Plain captions of scenes (the style is a look, not a word): every shape in turn, and small and
 * large shapes in turn, as in the style's training set (about half of each size); the rest of each
 * scene comes from the scene stream. Left to the stream, the six probes of seed 4242 were all small
 * shapes, whose 10-pixel outlines are the hardest to draw through the toy VAE: the demo's LoRA
 * showed the style in 0.13 of small-shape pictures and 0.65 of large-shape ones (8 pictures per
 * probe, 6 probes each).
 */
export function styleProbes(n = 8, count = 3, seed = 4242): Probe[] {
  const out: Probe[] = [];
  for (let i = 0; out.length < n; i++) {
    const scene = sampleScene(seed, i);
    if (scene.shape === SHAPES[out.length % SHAPES.length] && scene.size === SIZES[out.length % SIZES.length]) out.push(probe(caption(scene), count, { style: true }));
  }
  return out;
}

/** Generates and judges every probe; probe i uses seed + 1000·i. */
export function runProbes(render: Renderer, judge: ToyJudge, probes: readonly Probe[], seed = 0): ProbeResult[] {
  return probes.map((p, i) => {
    const images = render(p.prompt, p.count, seed + 1000 * i);
    return { probe: p, images, verdicts: judge.judge(images) };
  });
}

/** Which checks of an expectation a verdict meets (attributes and, unless left out, the concepts). */
function checks(e: Expectation, v: Verdict, o: { concepts: boolean }): boolean[] {
  const out: boolean[] = [];
  for (const k of ATTRIBUTES) if (e[k] !== undefined) out.push(v[k] === e[k]);
  if (o.concepts && e.subject !== undefined) out.push(v.subject === e.subject);
  if (o.concepts && e.style !== undefined) out.push(v.style === e.style);
  return out;
}

const mean = (xs: number[]) => (xs.length ? xs.reduce((s, x) => s + x, 0) / xs.length : NaN);

/** Fraction of pictures that show the concept. */
export function conceptRate(results: readonly ProbeResult[], concept: 'subject' | 'style'): number {
  return mean(results.flatMap((r) => r.verdicts.map((v) => Number(v[concept]))));
}

/**
 * Mean over pictures of the fraction of asked-for attributes honoured; with `concepts`, the
 * concept checks count too (a class prompt must not show the subject).
 */
export function attributeScore(results: readonly ProbeResult[], o: { concepts?: boolean } = {}): number {
  return mean(results.flatMap((r) => r.verdicts.map((v) => {
    const c = checks(r.probe.expect, v, { concepts: o.concepts ?? false });
    return c.length ? c.filter(Boolean).length / c.length : 1;
  })));
}

const ratio = (a: number, b: number) => (b > 0 ? Math.min(1, a / b) : a > 0 ? 1 : 0);

export interface SubjectScores {
  concept_fidelity: number;
  prompt_fidelity: number;
  /** Class-prompt score (attributes + no subject + no style) over the base's, capped at 1. */
  prior_preservation: number;
  class_score: number;
}

/** The subject metrics of a tuned model, against the base model's class-prompt results. */
export function subjectScores(concept: readonly ProbeResult[], klass: readonly ProbeResult[], baseClass: readonly ProbeResult[]): SubjectScores {
  const classScore = attributeScore(klass, { concepts: true });
  return {
    concept_fidelity: conceptRate(concept, 'subject'),
    prompt_fidelity: attributeScore(concept),
    prior_preservation: ratio(classScore, attributeScore(baseClass, { concepts: true })),
    class_score: classScore,
  };
}

export interface StyleScores {
  concept_fidelity: number;
  prompt_fidelity: number;
  /** The styled pictures' attribute score over the base model's on the same prompts (capped at 1). */
  prior_preservation: number;
}

/** The style metrics of an adapter at one weight, against the base model on the same prompts. */
export function styleScores(styled: readonly ProbeResult[], base: readonly ProbeResult[]): StyleScores {
  const attrs = attributeScore(styled);
  return { concept_fidelity: conceptRate(styled, 'style'), prompt_fidelity: attrs, prior_preservation: ratio(attrs, attributeScore(base)) };
}
