// `npm run demo`: the whole story of fine-tuning in a few minutes on the toy world. The embedded
// toy model learns two concepts it has never seen — the subject (the polka-dot "sks heart") with
// DreamBooth and textual inversion, the outline style with a LoRA and a hypernetwork — through the
// same training jobs `sdtune train` runs (src/training/run.ts, from folders of PNG + caption
// files). The judge scores fixed prompts at fixed seeds before and after (metrics.ts), and the
// demo writes a report: before/after grids, a LoRA weight sweep, loss curves and the meter's
// recommended stop, a table comparing the techniques (Markdown and HTML with PNG charts), and the
// same numbers in report.json.
import { mkdirSync, rmSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import * as T from '../torch/index.ts';
import { writeFileAtomic } from '../formats/atomic.ts';
import { writePng, type RgbImage } from '../formats/png.ts';
import { loadEmbeddingFile } from '../formats/embedding-file.ts';
import { disposeEmbedding } from '../formats/layouts/embedding.ts';
import { loadStableDiffusion, type StableDiffusion } from '../models/load.ts';
import { generate } from '../sampling/pipeline.ts';
import { applyLoraFiles, disposeLoraFile } from '../adapters/lora.ts';
import { loadLoraFile } from '../adapters/lora-file.ts';
import { Hypernetwork, applyHypernetworks } from '../adapters/hypernetwork.ts';
import { resolveTrainConfig, type TrainConfig } from '../training/config.ts';
import { runTraining } from '../training/run.ts';
import { recommendStop, type Recommendation } from '../training/meter.ts';
import type { StepRecord } from '../training/loop.ts';
import type { TechniqueKind } from '../training/technique.ts';
import { CLASS_PROMPT, SUBJECT_TOKEN, caption, conceptTrainingSet, sampleScene, writeWorldFolder } from './world.ts';
import { loadJudge, type ToyJudge, type JudgeAccuracy } from './judge.ts';
import { classProbes, runProbes, styleProbes, subjectProbes, subjectScores, styleScores, type Probe, type ProbeResult, type Renderer } from './metrics.ts';
import { PALETTE, barChart, imageGrid, lineChart } from './chart.ts';
import { TOY_JUDGE_PATH, TOY_MODEL_PATH } from './model.ts';

/** The four runs of the demo: which concept each technique learns, and its settings. */
export interface DemoRun {
  technique: TechniqueKind;
  concept: 'subject' | 'style';
  /** Settings for the training job (flags of `sdtune train`, camelCase). */
  settings: Record<string, unknown>;
}

// A validation every 20 steps: every 10 cost the style runs half their training time (the held-out
// pictures and the prior prompts at five timesteps each).
const COMMON = { batchSize: 4, validateEvery: 20, seed: 1, lrSchedule: 'constant' };

// An EMA of the weights for the UNet techniques: without one, the style adapters' snapshots swung
// between neighbours (a hypernetwork's fidelity 0.41 → 0.84 → 0.47 50 steps apart), so the last
// step and the meter's pick were a draw; with 0.98 fidelity rises smoothly over the run
// (docs/toy-world.md). Not for the embedding: its one vector at lr 5e-2 is what it learns, and the
// average lagged it (the demo's fidelity 0.40 without, 0.20 with).
const EMA = { emaDecay: 0.98 };

/** A style has no class prompt: the meter's prior drift is measured on plain captions (none of them a probe's). */
const PLAIN_PROMPTS = Array.from({ length: 4 }, (_, i) => caption(sampleScene(977, i)));

/**
 * Short, fixed settings for the toy model (the benchmark sweeps others). One embedding vector: the
 * toy text encoder reads positions closely, and two vectors for one word shift every later token.
 * The LoRA reaches the 3×3 convolutions too (LoCon, convRank): the outline is a stroke a few pixels
 * wide, drawn by the ResNet blocks rather than by attention — measured over 400 steps, the
 * attention-only LoRA's style fidelity stayed at 0.38–0.48, with the convolutions it reached 0.67
 * at step 150, at about 1.5 times the time per step.
 */
export const DEMO_RUNS: readonly DemoRun[] = [
  { technique: 'dreambooth', concept: 'subject', settings: { ...COMMON, ...EMA, steps: 240, lr: 1e-4, token: SUBJECT_TOKEN, classPrompt: CLASS_PROMPT, numClassImages: 12, priorLossWeight: 1, saveDtype: 'fp16' } },
  { technique: 'embedding', concept: 'subject', settings: { ...COMMON, steps: 200, lr: 5e-2, token: SUBJECT_TOKEN, initText: 'heart', vectors: 1, template: 'filewords' } },
  { technique: 'lora', concept: 'style', settings: { ...COMMON, ...EMA, steps: 160, lr: 5e-3, rank: 8, alpha: 8, convRank: 8, convAlpha: 8, trainTextEncoder: false, priorPrompts: PLAIN_PROMPTS } },
  { technique: 'hypernetwork', concept: 'style', settings: { ...COMMON, ...EMA, steps: 300, lr: 5e-3, template: 'filewords', priorPrompts: PLAIN_PROMPTS } },
];

/** The sweep of adapter weights for the style techniques. */
export const STYLE_WEIGHTS = [0, 0.25, 0.5, 0.75, 1] as const;

export interface TechniqueReport {
  technique: TechniqueKind;
  concept: 'subject' | 'style';
  concept_fidelity: number;
  prompt_fidelity: number;
  prior_preservation: number;
  trainable_parameters: number;
  seconds: number;
  file_bytes: number;
  file: string;
  steps: number;
  final_loss: number;
  /** The meter's advice from held-out loss and prior drift. */
  recommended_step: number | null;
  meter: string;
  /** Style techniques: the share of pictures in the style at each weight (LoRA) or strength (hypernetwork). */
  style_strength?: { weight: number; value: number }[];
}

export interface DemoReport {
  model: string;
  judge_accuracy: JudgeAccuracy;
  /** The base model on the same prompts: the subject and the style should be absent. */
  base: { subject_rate: number; style_rate: number; class_score: number; prompt_fidelity: number };
  techniques: TechniqueReport[];
  seconds: number;
  report: string;
}

export interface DemoOptions {
  /** Folder for the report (made; its data/ and runs/ are replaced). */
  out: string;
  model?: string;
  judge?: string;
  /** Multiplies every run's steps (tests use a shortened run). Default 1. */
  stepScale?: number;
  /** Pictures per probe prompt. Default 4. */
  probeCount?: number;
  log?: (line: string) => void;
}

const SAMPLING = { steps: 15, sampler: 'dpmpp_2m' as const, cfg: 5 };

export interface ProbeSets {
  subject: Probe[];
  klass: Probe[];
  style: Probe[];
}
export type ProbeResults = { [K in keyof ProbeSets]: ProbeResult[] };

/** The demo's probes: `count` pictures per prompt. */
export function demoProbes(count: number): ProbeSets {
  return { subject: subjectProbes(SUBJECT_TOKEN, count), klass: classProbes(count), style: styleProbes(6, count) };
}

/** The base model on every probe (the reference of prior preservation). */
export function baseResults(modelPath: string, judge: ToyJudge, probes: ProbeSets): ProbeResults {
  const base = loadStableDiffusion(modelPath, { hash: false });
  try {
    const r = renderer(base);
    return { subject: runProbes(r, judge, probes.subject, 1), klass: runProbes(r, judge, probes.klass, 2), style: runProbes(r, judge, probes.style, 3) };
  } finally {
    base.dispose();
  }
}

/** Pictures of each concept to train on, and held out for the meter. */
export const CONCEPT_SET = { subject: { train: 12, heldOut: 4 }, style: { train: 40, heldOut: 8 } } as const;

/**
 * The concepts' pictures, as a user would bring them: folders of PNG + caption files. A style
 * needs more pictures than a subject: from a dozen scenes a style adapter learns the scenes too.
 */
export function writeConceptFolders(data: string): void {
  for (const c of ['subject', 'style'] as const) {
    const { train, heldOut } = CONCEPT_SET[c];
    const set = conceptTrainingSet(c, train + heldOut, 7);
    writeWorldFolder(join(data, c), set.slice(0, train));
    writeWorldFolder(join(data, `${c}-heldout`), set.slice(train));
  }
}

function renderer(model: StableDiffusion, embeddings?: Map<string, T.Tensor>): Renderer {
  return (prompt, count, seed) => generate(model, { prompt, batch: count, seed, embeddings, ...SAMPLING }).map((g) => g.image);
}

const firstImages = (rs: readonly ProbeResult[]) => rs.map((r) => r.images[0]);

interface Evaluated {
  report: TechniqueReport;
  grid: RgbImage;
  records: StepRecord[];
  recommendation: Recommendation | null;
  sweep?: RgbImage;
}

export async function runDemo(o: DemoOptions): Promise<DemoReport> {
  const t0 = Date.now();
  const log = o.log ?? (() => {});
  const modelPath = o.model ?? TOY_MODEL_PATH;
  const scale = o.stepScale ?? 1;
  const count = o.probeCount ?? 4;
  mkdirSync(o.out, { recursive: true });
  for (const d of ['data', 'runs']) rmSync(join(o.out, d), { recursive: true, force: true });
  const { judge, accuracy } = loadJudge(o.judge ?? TOY_JUDGE_PATH);
  try {
    const data = join(o.out, 'data');
    writeConceptFolders(data);
    log(`wrote the concepts' training pictures to ${data} (subject ${CONCEPT_SET.subject.train}, style ${CONCEPT_SET.style.train}, and a few held out for the meter)`);
    const probes = demoProbes(count);
    const baseRes = baseResults(modelPath, judge, probes);
    const baseSubject = subjectScores(baseRes.subject, baseRes.klass, baseRes.klass);
    const baseStyle = styleScores(baseRes.style, baseRes.style);
    const baseSummary = { subject_rate: baseSubject.concept_fidelity, style_rate: baseStyle.concept_fidelity, class_score: baseSubject.class_score, prompt_fidelity: baseStyle.prompt_fidelity };
    log(`base model: subject shown in ${pct(baseSummary.subject_rate)} of "sks heart" pictures, outline style in ${pct(baseSummary.style_rate)}`);

    const evaluated: Evaluated[] = [];
    for (const run of DEMO_RUNS) {
      const dir = join(o.out, 'runs', run.technique);
      mkdirSync(dir, { recursive: true });
      const ext = run.technique === 'hypernetwork' ? '.pt' : '.safetensors';
      const file = join(dir, `${run.technique === 'hypernetwork' ? 'outline' : run.technique === 'lora' ? 'outline-lora' : run.technique === 'embedding' ? SUBJECT_TOKEN : 'toy-sks'}${ext}`);
      const steps = Math.max(10, Math.round((run.settings.steps as number) * scale));
      const c: TrainConfig = resolveTrainConfig(run.technique, {
        flags: { ...run.settings, steps, validateEvery: Math.max(1, Math.round((run.settings.validateEvery as number) * Math.min(1, scale * 2))), checkpointEvery: steps, model: modelPath, data: join(data, run.concept), validationData: join(data, `${run.concept}-heldout`), out: file, workDir: join(dir, 'work') },
      });
      log(`${run.technique}: training on the ${run.concept} (${steps} steps) …`);
      const { result } = await runTraining(c, { onStep: () => {} });
      if (result.status !== 'done') throw new Error(`${run.technique}: training ended ${result.status}: ${result.message}`);
      const e = evaluate(run, c, result.records, result.trainableParameters, result.seconds, file, modelPath, judge, probes, baseRes);
      evaluated.push(e);
      const r = e.report;
      log(`${run.technique}: ${result.seconds.toFixed(1)} s, ${r.trainable_parameters.toLocaleString('en')} trainable parameters, ${bytes(r.file_bytes)}; concept fidelity ${r.concept_fidelity.toFixed(2)}, prompt fidelity ${r.prompt_fidelity.toFixed(2)}, prior preservation ${r.prior_preservation.toFixed(2)}`);
    }
    const report = writeReport(o.out, modelPath, accuracy, baseSummary, evaluated, (Date.now() - t0) / 1000);
    log(`report: ${report.report}`);
    return report;
  } finally {
    judge.dispose();
  }
}

const pct = (x: number) => `${Math.round(100 * x)} %`;
const bytes = (n: number) => (n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} kB` : `${n} B`);

export interface ProductScores {
  concept_fidelity: number;
  prompt_fidelity: number;
  prior_preservation: number;
  /** Style adapters: the share of pictures in the style at each weight. */
  style_strength?: { weight: number; value: number }[];
}

interface Scored {
  scores: ProductScores;
  subject?: ProbeResult[];
  klass?: ProbeResult[];
  byWeight?: { w: number; res: ProbeResult[] }[];
}

/**
 * The ground-truth scores of a product: DreamBooth's model or an embedding on the subject probes
 * and class probes; a LoRA or hypernetwork on the style probes at each weight (the scores are
 * those at the last weight, 1 by default).
 */
export function scoreProduct(
  run: Pick<DemoRun, 'technique' | 'concept'>, file: string,
  o: { token?: string; modelPath: string; judge: ToyJudge; probes: ProbeSets; base: ProbeResults; weights?: readonly number[] },
): Scored {
  if (run.concept === 'subject') {
    // DreamBooth's product is a whole model; textual inversion adds vectors to the base.
    const model = loadStableDiffusion(run.technique === 'dreambooth' ? file : o.modelPath, { hash: false });
    let embeddings: Map<string, T.Tensor> | undefined;
    try {
      if (run.technique === 'embedding') {
        const e = loadEmbeddingFile(file);
        try {
          embeddings = new Map([[o.token ?? SUBJECT_TOKEN, T.keep(e.vectors.te!.to('float32'))]]);
        } finally {
          disposeEmbedding(e);
        }
      }
      const r = renderer(model, embeddings);
      const subject = runProbes(r, o.judge, o.probes.subject, 1);
      const klass = runProbes(r, o.judge, o.probes.klass, 2);
      const s = subjectScores(subject, klass, o.base.klass);
      return { scores: { concept_fidelity: s.concept_fidelity, prompt_fidelity: s.prompt_fidelity, prior_preservation: s.prior_preservation }, subject, klass };
    } finally {
      for (const t of embeddings?.values() ?? []) t.dispose();
      model.dispose();
    }
  }
  // Style adapters on the base model, swept over weights.
  const model = loadStableDiffusion(o.modelPath, { hash: false });
  const adapter = applyStyleAdapter(model, run.technique, file);
  try {
    const byWeight = (o.weights ?? [1]).map((w) => {
      // At weight 0 a LoRA (or strength 0 a hypernetwork) gives exactly the base model's output,
      // and the base's pictures of these probes, at these seeds, are already judged.
      if (w === 0) return { w, res: o.base.style };
      adapter.setWeight(w);
      return { w, res: runProbes(renderer(model), o.judge, o.probes.style, 3) };
    });
    const s = styleScores(byWeight[byWeight.length - 1].res, o.base.style);
    const style_strength = byWeight.map((b) => ({ weight: b.w, value: styleScores(b.res, o.base.style).concept_fidelity }));
    return { scores: { ...s, style_strength }, byWeight };
  } finally {
    adapter.remove();
    model.dispose();
  }
}

/** A style technique's file (a LoRA or a hypernetwork) applied to a model at weight 1, until removed. */
export function applyStyleAdapter(model: StableDiffusion, technique: TechniqueKind, file: string): { setWeight: (w: number) => void; remove: () => void } {
  if (technique !== 'lora' && technique !== 'hypernetwork') throw new Error(`${technique} is not a style technique (lora or hypernetwork)`);
  const lora = technique === 'lora' ? loadLoraFile(file, model) : null;
  const net = technique === 'hypernetwork' ? Hypernetwork.fromFile(file) : null;
  const applied = lora ? applyLoraFiles(model, [{ lora }]) : null;
  const hyper = net ? applyHypernetworks(model.unet, [{ net }]) : null;
  return {
    setWeight: (w) => (applied ? applied.setWeights(0, w) : hyper!.setStrength(w)),
    remove: () => {
      hyper?.remove();
      net?.dispose();
      applied?.remove();
      if (lora) disposeLoraFile(lora);
    },
  };
}

function evaluate(
  run: DemoRun, c: TrainConfig, records: StepRecord[], params: number, seconds: number, file: string, modelPath: string, judge: ToyJudge,
  probes: ProbeSets, baseRes: ProbeResults,
): Evaluated {
  const recommendation = recommendStop(records);
  const common = {
    technique: run.technique, concept: run.concept, trainable_parameters: params, seconds, file_bytes: statSync(file).size, file,
    steps: records.length ? records[records.length - 1].step : 0, final_loss: records.length ? records[records.length - 1].loss : NaN,
    recommended_step: recommendation?.step ?? null, meter: recommendation?.message ?? 'no validation points',
  };
  const scored = scoreProduct(run, file, { token: c.token, modelPath, judge, probes, base: baseRes, weights: run.concept === 'style' ? STYLE_WEIGHTS : undefined });
  const report: TechniqueReport = { ...common, ...scored.scores };
  if (run.concept === 'subject') {
    const grid = imageGrid({
      title: `${run.technique}: the subject`, rowLabels: ['base', 'tuned'], colLabels: [...probes.subject.map((_, i) => `sks ${i + 1}`), 'heart', 'blue heart'],
      cells: [[...firstImages(baseRes.subject), ...firstImages(baseRes.klass).slice(0, 2)], [...firstImages(scored.subject!), ...firstImages(scored.klass!).slice(0, 2)]], scale: 3,
    });
    return { report, grid, records, recommendation };
  }
  const byWeight = scored.byWeight!;
  const sweep = imageGrid({
    title: `${run.technique}: the outline style by ${run.technique === 'lora' ? 'LoRA weight' : 'strength'}`,
    rowLabels: STYLE_WEIGHTS.map((w) => `w ${w}`), colLabels: probes.style.map((_, i) => `scene ${i + 1}`), cells: byWeight.map((b) => firstImages(b.res)), scale: 3,
  });
  const grid = imageGrid({ title: `${run.technique}: the style`, rowLabels: ['base', 'tuned'], colLabels: probes.style.map((_, i) => `scene ${i + 1}`), cells: [firstImages(baseRes.style), firstImages(byWeight[byWeight.length - 1].res)], scale: 3 });
  return { report, grid, records, recommendation, sweep };
}

/** Exponential moving average of the training loss, for a readable curve. */
function smoothLoss(records: StepRecord[]): [number, number][] {
  let m = NaN;
  return records.map((r) => {
    m = Number.isNaN(m) ? r.loss : 0.9 * m + 0.1 * r.loss;
    return [r.step, m];
  });
}

function writeReport(out: string, modelPath: string, accuracy: JudgeAccuracy, base: DemoReport['base'], ev: Evaluated[], seconds: number): DemoReport {
  const img = (name: string, image: RgbImage) => {
    writePng(join(out, name), image);
    return name;
  };
  const grids = ev.map((e) => img(`grid-${e.report.technique}.png`, e.grid));
  const sweeps = ev.filter((e) => e.sweep).map((e) => img(`sweep-${e.report.technique}.png`, e.sweep!));
  const colour = (i: number) => PALETTE[i % PALETTE.length];
  const loss = img('loss.png', lineChart({ title: 'training loss (smoothed)', xLabel: 'step', yLabel: 'loss', series: ev.map((e, i) => ({ name: e.report.technique, points: smoothLoss(e.records), rgb: colour(i) })) }));
  const meter = img('meter.png', lineChart({
    title: 'held-out loss (the meter); dashed: recommended stop', xLabel: 'step', yLabel: 'val loss',
    series: ev.map((e, i) => ({ name: e.report.technique, points: e.records.filter((r) => r.val_loss !== undefined).map((r) => [r.step, r.val_loss!] as [number, number]), rgb: colour(i) })),
    markers: ev.flatMap((e, i) => (e.report.recommended_step === null ? [] : [{ x: e.report.recommended_step, label: e.report.technique.slice(0, 4), rgb: colour(i) }])),
  }));
  const bars = img('scores.png', barChart({
    title: 'what each technique learnt, and what it kept', yLabel: 'score', groups: ev.map((e) => e.report.technique), yMax: 1,
    series: [
      { name: 'concept fidelity', values: ev.map((e) => e.report.concept_fidelity) },
      { name: 'prompt fidelity', values: ev.map((e) => e.report.prompt_fidelity) },
      { name: 'prior preservation', values: ev.map((e) => e.report.prior_preservation) },
    ],
  }));
  const styled = ev.filter((e) => e.report.style_strength);
  const strength = img('style-strength.png', lineChart({ title: 'style strength by adapter weight', xLabel: 'weight', yLabel: 'pictures in style', series: styled.map((e, i) => ({ name: e.report.technique, points: e.report.style_strength!.map((s) => [s.weight, s.value] as [number, number]), rgb: colour(i + 2) })) }));
  const techniques = ev.map((e) => e.report);
  const rows = techniques.map((t) => `| ${t.technique} | ${t.concept} | ${t.concept_fidelity.toFixed(2)} | ${t.prompt_fidelity.toFixed(2)} | ${t.prior_preservation.toFixed(2)} | ${t.trainable_parameters.toLocaleString('en')} | ${t.seconds.toFixed(1)} | ${bytes(t.file_bytes)} | ${t.recommended_step ?? '–'} of ${t.steps} |`);
  const md = [
    '# sdtune demo: one toy model, two new concepts, four techniques',
    '',
    `Base model: ${relative(out, modelPath) || modelPath}. The judge (an attribute classifier trained on the toy world) is right ${pct(accuracy.mean)} of the time on pictures it never saw (mean over its heads, clean and VAE-decoded).`,
    `Before tuning, the base model shows the subject in ${pct(base.subject_rate)} of "sks heart" pictures and the outline style in ${pct(base.style_rate)} of ordinary ones.`,
    '',
    '| technique | concept | concept fidelity | prompt fidelity | prior preservation | trainable parameters | seconds | file | meter: stop at |',
    '|---|---|---|---|---|---|---|---|---|',
    ...rows,
    '',
    '*Concept fidelity*: share of pictures from prompts with the concept that show it. *Prompt fidelity*: share of the attributes those prompts name (size, place, background) that the pictures honour. *Prior preservation*: for the subject, class prompts ("a large blue heart in the center, on a black background", one for each of five colours) still give ordinary hearts, without the dots, of the asked-for colour, size, place and background; for the style, the styled pictures still show the asked-for shapes, colours and backgrounds — both as a share of the base model\'s score, at most 1.',
    '',
    `![scores](${bars})`,
    '',
    '## Before and after',
    '',
    ...grids.map((g) => `![${g}](${g})\n`),
    '## The style at adapter weights 0 … 1',
    '',
    `![style strength](${strength})`,
    '',
    ...sweeps.map((s) => `![${s}](${s})\n`),
    '## Loss curves and the over/underfitting meter',
    '',
    `![loss](${loss})`,
    '',
    `![meter](${meter})`,
    '',
    ...techniques.map((t) => `- **${t.technique}**: ${t.meter}.`),
    '',
    `Made in ${seconds.toFixed(0)} s. The same numbers are in report.json.`,
    '',
  ].join('\n');
  writeFileAtomic(join(out, 'report.md'), md);
  writeFileAtomic(join(out, 'report.html'), markdownToHtml(md));
  const report: DemoReport = { model: modelPath, judge_accuracy: accuracy, base, techniques, seconds, report: join(out, 'report.html') };
  writeFileAtomic(join(out, 'report.json'), JSON.stringify(report, null, 2) + '\n');
  return report;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** The report's own Markdown (headings, tables, images, bullets, emphasis) as a page. */
function markdownToHtml(md: string): string {
  const inline = (s: string) => esc(s).replace(/!\[([^\]]*)\]\(([^)]+)\)/g, '<img alt="$1" src="$2">').replace(/\*\*([^*]+)\*\*/g, '<b>$1</b>').replace(/\*([^*]+)\*/g, '<i>$1</i>');
  const out: string[] = [];
  const lines = md.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i];
    if (l.startsWith('# ')) out.push(`<h1>${inline(l.slice(2))}</h1>`);
    else if (l.startsWith('## ')) out.push(`<h2>${inline(l.slice(3))}</h2>`);
    else if (l.startsWith('|')) {
      const cells = (r: string) => r.split('|').slice(1, -1).map((c) => c.trim());
      const head = cells(l);
      i++; // the |---| line
      const body: string[][] = [];
      while (i + 1 < lines.length && lines[i + 1].startsWith('|')) body.push(cells(lines[++i]));
      out.push(`<table><tr>${head.map((h) => `<th>${inline(h)}</th>`).join('')}</tr>${body.map((r) => `<tr>${r.map((c) => `<td>${inline(c)}</td>`).join('')}</tr>`).join('')}</table>`);
    } else if (l.startsWith('- ')) out.push(`<li>${inline(l.slice(2))}</li>`);
    else if (l.trim() !== '') out.push(`<p>${inline(l)}</p>`);
  }
  return `<!doctype html><meta charset="utf-8"><title>sdtune demo</title><style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}img{max-width:100%;image-rendering:pixelated}</style>\n${out.join('\n')}\n`;
}
