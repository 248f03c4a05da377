// One training job from a resolved config (config.ts): the base model, DreamBooth's class images,
// the dataset, the technique and the loop, put together once. The CLI (`sdtune train`), the toy
// demo and the studio's workers all run training through here.
import { existsSync } from 'node:fs';
import { inspectPath } from '../formats/inspect.ts';
import { join } from 'node:path';
import { loadStableDiffusion, type StableDiffusion } from '../models/load.ts';
import { Dataset, loadTemplate, type DatasetOptions } from './dataset.ts';
import { DatasetTrainData } from './data.ts';
import * as T from '../torch/index.ts';
import { Trainer, TrainingError, withoutWord, type StepRecord, type TrainResult } from './loop.ts';
import { SAMPLE_CHECK, SampleCheckError, prepareSampleCheck, sampleScore, untrustedCheck, type SampleCheck } from './sample-check.ts';
import { FILEWORDS, classPromptsFor, ensureClassImages } from './class-images.ts';
import type { TrainConfig } from './config.ts';
import type { Technique } from './technique.ts';
import { EmbeddingTechnique } from './techniques/embedding.ts';
import { DreamBoothTechnique } from './techniques/dreambooth.ts';
import { LoraTechnique } from './techniques/lora.ts';
import { HypernetworkTechnique } from './techniques/hypernetwork.ts';

/** The technique a config asks for, built on the model. */
export function makeTechnique(model: StableDiffusion, c: TrainConfig): Technique {
  if (c.initFrom !== undefined) checkInitFrom(c.initFrom, c.technique);
  switch (c.technique) {
    case 'embedding':
      return new EmbeddingTechnique(model, { name: c.token!, vectors: c.vectors, initText: c.initText, lr: c.lr, initFrom: c.initFrom });
    case 'dreambooth':
      return new DreamBoothTechnique(model, { token: c.token!, lr: c.lr, trainTextEncoder: c.trainTextEncoder, textEncoderLr: c.textEncoderLr, saveDtype: c.saveDtype as 'fp16' | undefined });
    case 'lora':
      return new LoraTechnique(model, { rank: c.rank!, alpha: c.alpha!, convRank: c.convRank || undefined, convAlpha: c.convAlpha, trainTextEncoder: c.trainTextEncoder, lr: c.lr, textEncoderLr: c.textEncoderLr, format: c.loraFormat as 'kohya' | 'peft', saveDtype: c.saveDtype as 'fp16' | undefined, seed: c.seed, initFrom: c.initFrom,
        info: { gradientCheckpointing: c.gradientCheckpointing ?? false, mixedPrecision: c.mixedPrecision ?? 'no' } });
    case 'hypernetwork':
      return new HypernetworkTechnique(model, { name: hypernetworkName(c), lr: c.lr, layerStructure: c.layerStructure, activation: c.activation, addLayerNorm: c.layerNorm, dropoutStructure: c.dropoutStructure, weightInit: c.weightInit as 'Normal' | undefined, sizes: c.sizes, seed: c.seed, initFrom: c.initFrom });
  }
}

const KIND_WORD: Record<string, string> = { 'lora-kohya': 'a LoRA', 'lora-peft': 'a LoRA', embedding: 'an embedding', hypernetwork: 'a hypernetwork', checkpoint: 'a whole checkpoint' };

/** The file to continue exists and is of the technique's kind (a LoRA for lora, …), or the error says what it is. */
function checkInitFrom(path: string, technique: TrainConfig['technique']): void {
  const want = technique === 'lora' ? 'LoRA' : technique;
  if (!existsSync(path)) throw new TrainingError(`initFrom: ${path} does not exist; pass the ${want} file to continue from, or leave initFrom out to start a new one`);
  let kind: string;
  try {
    kind = inspectPath(path).kind;
  } catch (e) {
    throw new TrainingError(`initFrom: ${(e as Error).message}`);
  }
  const is = KIND_WORD[kind];
  if (!is || kind.startsWith(technique)) return;
  const how = kind === 'checkpoint' ? 'train on it by passing it as model' : `continue it with \`sdtune train ${kind.startsWith('lora') ? 'lora' : kind}\``;
  const a = technique === 'embedding' ? 'an' : 'a';
  throw new TrainingError(`initFrom: ${path} is ${is}, not ${a} ${want}: ${how}, or pass ${a} ${want} file`);
}

/** Micro-batches checkEmbeddingCaptions plans: a long run's every epoch would take longer than the mistakes it catches, which show in the first epochs. */
const CHECKED_BATCHES = 5000;

/**
 * Textual inversion learns only where its word stands in a caption: a micro-batch whose captions
 * all lack it has no gradient, and libtorch's backward fails ("does not require grad"). Epoch
 * plans are deterministic, so the run's batches are checked here, before anything trains.
 */
export function checkEmbeddingCaptions(t: Technique, ds: Dataset, microBatches: number, accum = 1): void {
  if (!(t instanceof EmbeddingTechnique) || ds.samples.length === 0) return;
  const known = new Map<string, boolean>();
  const has = (caption: string): boolean => {
    let v = known.get(caption);
    if (v === undefined) known.set(caption, (v = t.appearsIn(caption)));
    return v;
  };
  const samples = ds.samples.filter((s) => !s.isClass);
  const word = `the embedding's word "${t.triggerWord}"`;
  const fix = 'put it in the captions, or use a template that adds it (subject_filewords, or style_filewords for a style)';
  const lacking = samples.filter((s) => !ds.captionVariants(s).every(has));
  if (samples.every((s) => !ds.captionVariants(s).some(has))) {
    const n = samples.length;
    throw new TrainingError(`${word} appears in none of the ${n} caption${n === 1 ? '' : 's'} of ${ds.options.dir} (e.g. "${ds.captionVariants(samples[0])[0]}"): ${fix}`);
  }
  const perEpoch = ds.stepsPerEpoch;
  const end = Math.min(microBatches, CHECKED_BATCHES);
  for (let m = 0; m < end; m += perEpoch) {
    const plan = ds.epochPlan(m / perEpoch).slice(0, end - m);
    const k = plan.findIndex((b) => !b.items.some((i) => has(i.caption)));
    if (k < 0) continue;
    const step = Math.floor((m + k) / accum) + 1;
    const [first] = plan[k].items;
    const example = `${first.sample.name}: "${first.caption}"`;
    if (lacking.length > 0) {
      throw new TrainingError(`${word} is missing from ${lacking.length} of the ${samples.length} captions of ${ds.options.dir}, and step ${step} would train only on such captions (${example}), where there is nothing to learn: ${fix}`);
    }
    throw new TrainingError(`caption or tag dropout leaves step ${step} without ${word} (${example}), where there is nothing to learn: for an embedding, set captionDropout and tagDropout to 0`);
  }
}

/** A hypernetwork is named after its file, as A1111 names it. */
function hypernetworkName(c: TrainConfig): string {
  return (c.out ?? 'hypernetwork').replace(/^.*[\\/]/, '').replace(/\.[^.]+$/, '');
}

/**
 * The run's class prompts: the class prompt, or with [filewords] one per distinct instance caption
 * (read from `ds` when the dataset is already open, else from the training folder).
 */
async function classPromptsOf(model: StableDiffusion, c: TrainConfig, ds?: Dataset): Promise<string[]> {
  if (!c.classPrompt) return [];
  if (!c.classPrompt.includes(FILEWORDS)) return [c.classPrompt];
  const samples = (ds ?? (await Dataset.open(datasetOptions(model, c, undefined)))).samples;
  return classPromptsFor(c.classPrompt, samples.filter((x) => !x.isClass).map((x) => x.caption), c.token);
}

/** The prior-drift meter's prompts: the user's, or (up to four of) the class prompts. */
const PRIOR_PROMPTS_FROM_CLASS = 4;

/** The dataset a config describes (class images folder included). */
export function datasetOptions(model: StableDiffusion, c: TrainConfig, classDir: string | undefined): DatasetOptions {
  const factor = 2 ** (model.vae.cfg.blockOutChannels.length - 1);
  const resolution = c.resolution ?? model.unet.cfg.sampleSize * factor;
  const name = c.technique === 'hypernetwork' ? hypernetworkName(c) : c.token;
  return {
    dir: c.data!,
    classDir,
    // With [filewords], every generated class picture has its own caption file.
    classPrompt: c.classPrompt?.includes(FILEWORDS) ? undefined : c.classPrompt,
    resolution,
    buckets: { enabled: !c.noBuckets, step: Math.min(c.bucketStep ?? 64, resolution) },
    randomCrop: c.randomCrop,
    batchSize: c.batchSize ?? 1,
    seed: c.seed ?? 0,
    alpha: 'mask',
    captionExtension: c.captionExtension,
    caption: {
      template: c.template ? loadTemplate(c.template) : undefined,
      name,
      shuffle: c.shuffleCaptions,
      keepTokens: c.keepTokens,
      tagDropout: c.tagDropout,
      captionDropout: c.captionDropout,
    },
  };
}

export interface RunTrainingOptions {
  device?: string;
  /** Resume from the newest checkpoint in the work folder. */
  resume?: boolean;
  /** Class images made (done of total), before training starts. */
  onClassImages?: (done: number, total: number) => void;
  onStep?: (r: StepRecord, total: number) => void;
  /** Warnings: skipped images, unreadable files. */
  onMessage?: (m: string) => void;
  /** Checked between steps: true saves a checkpoint and stops. */
  shouldStop?: () => boolean;
}

export interface TrainingRun {
  result: TrainResult;
  workDir: string;
  steps: number;
}

/** Optimizer steps of a run: --steps, or epochs over the dataset in accumulated micro-batches. */
function stepsOf(c: TrainConfig, ds: Dataset): number {
  return c.steps ?? Math.max(1, Math.ceil(((c.epochs ?? 1) * ds.stepsPerEpoch) / (c.gradAccumulation ?? 1)));
}

/** What a run would do, without training: images, buckets, repeats, steps, trainable parameters. */
export interface TrainingPlan {
  text: string;
  steps: number;
  trainableParameters: number;
}

export async function describeTraining(c: TrainConfig, o: { device?: string } = {}): Promise<TrainingPlan> {
  const model = loadStableDiffusion(c.model!, { device: o.device ?? 'cpu', hash: false });
  let technique: Technique | null = null;
  try {
    const workDir = c.workDir ?? `${c.out}.work`;
    const classDir = c.classData ?? join(workDir, 'class-images');
    const wantClass = c.technique === 'dreambooth' && (c.numClassImages ?? 0) > 0;
    const ds = await Dataset.open(datasetOptions(model, c, wantClass && existsSync(classDir) ? classDir : undefined));
    const accum = c.gradAccumulation ?? 1;
    const epochs = c.epochs ?? 1;
    const steps = stepsOf(c, ds);
    const lines = [ds.dryRun(epochs).text];
    if (wantClass && !existsSync(classDir)) {
      const prompts = await classPromptsOf(model, c, ds);
      const of = prompts.length === 1 ? `"${prompts[0]}"` : `the instance captions without "${c.token}" (${prompts.length} prompts, e.g. "${prompts[0]}")`;
      lines.push(`${c.numClassImages} class images of ${of} will be generated by the base model into ${classDir} first (prior preservation doubles the samples per epoch).`);
    }
    if (c.steps !== undefined) lines.push(`--steps ${c.steps} is set: training runs ${c.steps} optimizer steps (${((c.steps * accum) / Math.max(1, ds.stepsPerEpoch)).toFixed(2)} epochs).`);
    else if (accum > 1) lines.push(`with gradient accumulation ${accum}: ${steps} optimizer steps.`);
    if ((c.sampleCheck ?? 0) > 0) {
      const every = c.validateEvery ?? 25;
      lines.push(`sample check: the base model draws up to ${SAMPLE_CHECK.maxCaptions * SAMPLE_CHECK.negativesPerCaption} pictures before the first step, then ${c.sampleCheck} pictures are drawn at each of ${Math.ceil(steps / every)} validations (${SAMPLE_CHECK.steps} sampling steps each).${c.validationData !== undefined ? ` The detector is first tested on the held-out pictures, against one base-model picture per held-out caption; below an AUC of ${SAMPLE_CHECK.minHeldOutAuc} the check is turned off.` : ''}`);
    }
    technique = makeTechnique(model, c);
    if (technique.continued) lines.push(`${technique.continued}.`);
    checkEmbeddingCaptions(technique, ds, steps * accum, accum);
    const params = technique.groups().reduce((s, g) => s + g.params.reduce((n, [, p]) => n + p.numel, 0), 0);
    lines.push(`${c.technique}: ${params.toLocaleString('en')} trainable parameters; the result goes to ${c.out}`);
    return { text: lines.join('\n'), steps, trainableParameters: params };
  } finally {
    technique?.dispose();
    model.dispose();
  }
}

/** A run's training set (with DreamBooth's class images: the user's folder, or generated by the base model and cached) and held-out set. */
async function openRunDatasets(model: StableDiffusion, c: TrainConfig, classPrompts: string[], workDir: string, o: RunTrainingOptions): Promise<{ ds: Dataset; validation?: Dataset }> {
  let classDir: string | undefined = c.classData;
  const wantClass = c.technique === 'dreambooth' && (c.numClassImages ?? 0) > 0;
  if (wantClass) {
    classDir ??= join(workDir, 'class-images');
    // At the training resolution: they are trained on as they are.
    const side = datasetOptions(model, c, undefined).resolution as number;
    ensureClassImages(model, { prompt: classPrompts, count: c.numClassImages!, dir: classDir, seed: c.seed, width: side, height: side, onProgress: o.onClassImages });
  }
  const ds = await Dataset.open(datasetOptions(model, c, wantClass ? classDir : undefined));
  // Held-out images: the same captioning and crops as the training set, no class images.
  const validation = c.validationData === undefined ? undefined : await Dataset.open({ ...datasetOptions(model, c, undefined), dir: c.validationData });
  return { ds, validation };
}

/**
 * The sample check a run of this config fits (the same detector, prompts and seeds), on the base
 * model given, without training: for re-scoring a finished run's snapshots (bench/toy-meter.ts).
 */
export async function runSampleCheck(model: StableDiffusion, c: TrainConfig): Promise<SampleCheck> {
  if ((c.sampleCheck ?? 0) <= 0) throw new SampleCheckError('this run has no sample check (sampleCheck is 0)');
  const { ds, validation } = await openRunDatasets(model, c, await classPromptsOf(model, c), c.workDir ?? `${c.out}.work`, {});
  return fitSampleCheck(model, c, ds, validation);
}

/** Trains as the config says; the product is written to c.out (and snapshots beside it). */
export async function runTraining(c: TrainConfig, o: RunTrainingOptions = {}): Promise<TrainingRun> {
  const workDir = c.workDir ?? `${c.out}.work`;
  const model = loadStableDiffusion(c.model!, { device: o.device ?? 'cpu' });
  let technique: Technique | null = null;
  let data: DatasetTrainData | null = null;
  let trainer: Trainer | null = null;
  let check: SampleCheck | null = null;
  try {
    const classPrompts = await classPromptsOf(model, c);
    const { ds, validation } = await openRunDatasets(model, c, classPrompts, workDir, o);
    const accum = c.gradAccumulation ?? 1;
    const steps = stepsOf(c, ds);
    for (const w of ds.warnings) o.onMessage?.(`warning: ${w}`);
    for (const s of ds.skipped) o.onMessage?.(`skipped: ${s.message}`);
    // Fitted on the base model, before the technique changes anything.
    let sc = (c.sampleCheck ?? 0) > 0 ? await fitSampleCheck(model, c, ds, validation) : null;
    // A detector that cannot tell held-out pictures from the base model's would lead the meter astray.
    const untrusted = sc ? untrustedCheck(sc) : null;
    if (sc && untrusted) {
      o.onMessage?.(`warning: ${untrusted}`);
      sc.detector.dispose();
      sc = null;
    }
    check = sc;
    if (sc) o.onMessage?.(`sample check: a detector fitted on the training pictures against the base model's scores them ${sc.fit.positives.toFixed(2)} and ${sc.fit.negatives.toFixed(2)}${sc.heldOut ? `, and tells held-out pictures from the base model's in ${Math.round(sc.heldOut.auc * 100)} % of pairs` : ' (no held-out pictures to test it on)'}; it will score ${sc.prompts.length * sc.perPrompt} pictures at each validation`);
    technique = makeTechnique(model, c);
    if (technique.continued) o.onMessage?.(technique.continued);
    checkEmbeddingCaptions(technique, ds, steps * accum, accum);
    data = new DatasetTrainData(ds, { priorLossWeight: c.priorLossWeight, validation, onMessage: (m) => o.onMessage?.(`warning: ${m}`) });
    trainer = new Trainer(technique, data, {
      steps,
      gradAccumulation: accum,
      lrSchedule: c.lrSchedule,
      warmupSteps: c.warmupSteps,
      maxGradNorm: c.maxGradNorm,
      minSnrGamma: c.minSnrGamma,
      noiseOffset: c.noiseOffset,
      seed: c.seed,
      emaDecay: c.emaDecay,
      mixedPrecision: c.mixedPrecision as 'no' | undefined,
      gradientCheckpointing: c.gradientCheckpointing,
      workDir,
      out: c.out!,
      checkpointEvery: c.checkpointEvery,
      snapshots: c.snapshots ?? c.technique !== 'dreambooth',
      sampleEvery: c.sampleEvery,
      samplePrompts: c.samplePrompts,
      validateEvery: c.validateEvery,
      priorPrompts: c.priorPrompts ?? classPrompts.slice(0, PRIOR_PROMPTS_FROM_CLASS),
      conceptWord: conceptWordOf(c),
      checkSamples: sc ? (m, embeddings) => sampleScore(m, sc, embeddings) : undefined,
      earlyStop: c.earlyStop,
      resume: o.resume === true,
      shouldStop: o.shouldStop,
      onStep: (r) => o.onStep?.(r, steps),
      settings: Object.fromEntries(Object.entries(c).filter(([, v]) => ['string', 'number', 'boolean'].includes(typeof v))) as Record<string, string | number | boolean>,
    });
    const result = await trainer.run();
    return { result, workDir, steps };
  } finally {
    trainer?.dispose();
    data?.dispose();
    technique?.dispose();
    check?.detector.dispose();
    model.dispose();
  }
}

/** The concept's word, where the technique has one (DreamBooth's token, the embedding's name). */
const conceptWordOf = (c: TrainConfig): string | undefined => (c.technique === 'dreambooth' || c.technique === 'embedding' ? c.token : undefined);

/** Captions and decoded pictures of a dataset's own pictures (class images left out), one per picture. */
async function datasetPictures(ds: Dataset): Promise<{ captions: string[]; pictures: T.Tensor[] }> {
  const seen = new Set<number>();
  const captions: string[] = [];
  const pictures: T.Tensor[] = [];
  for (const b of ds.epochPlan(0)) {
    for (const item of b.items) {
      if (item.sample.isClass || seen.has(item.sample.index)) continue;
      seen.add(item.sample.index);
      captions.push(item.caption || item.sample.caption);
      const px = await ds.loadItem(item);
      px.mask?.dispose();
      pictures.push(px.pixels);
    }
  }
  return { captions, pictures };
}

/** The sample check of a run (sample-check.ts): the held-out captions are drawn (else the training captions). */
async function fitSampleCheck(model: StableDiffusion, c: TrainConfig, ds: Dataset, validation: Dataset | undefined): Promise<SampleCheck> {
  const { captions, pictures } = await datasetPictures(ds);
  const held = validation ? await datasetPictures(validation) : undefined;
  try {
    const prompts = held ? held.captions : captions;
    const side = datasetOptions(model, c, undefined).resolution as number;
    const word = conceptWordOf(c);
    return prepareSampleCheck(model, { pictures, captions, prompts, without: (x) => (word ? withoutWord(x, word) : x), count: c.sampleCheck!, width: side, height: side, seed: c.seed, heldOut: held });
  } finally {
    for (const p of [...pictures, ...(held?.pictures ?? [])]) p.dispose();
  }
}
