// `sdtune train dreambooth|lora|embedding|hypernetwork --model PATH --data DIR --out FILE`:
// settings from flags and/or --config (one schema, src/training/config.ts), a dry run that shows
// images, buckets, repeats and the step count before anything trains, a progress bar with loss,
// it/s and ETA, Ctrl-C that saves a checkpoint and exits, and --resume.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { loadStableDiffusion, type StableDiffusion } from '../models/load.ts';
import { Dataset, loadTemplate, type DatasetOptions } from '../training/dataset.ts';
import { DatasetTrainData } from '../training/data.ts';
import { Trainer, type TrainResult } from '../training/loop.ts';
import { ensureClassImages } from '../training/class-images.ts';
import { ConfigError, TECHNIQUES, readConfigFile, resolveTrainConfig, trainFlagOptions, trainHelp, type TrainConfig } from '../training/config.ts';
import type { Technique, TechniqueKind } from '../training/technique.ts';
import { EmbeddingTechnique } from '../training/techniques/embedding.ts';
import { DreamBoothTechnique } from '../training/techniques/dreambooth.ts';
import { LoraTechnique } from '../training/techniques/lora.ts';
import { HypernetworkTechnique } from '../training/techniques/hypernetwork.ts';
import { ProgressBar } from './progress.ts';

export const TRAIN_USAGE = `sdtune train ${TECHNIQUES.join('|')} --model PATH --data DIR --out FILE [options]
  [--config FILE.toml|.json] [--dry-run] [--resume] [--device cpu|cuda] [--quiet]
  sdtune train TECHNIQUE --help lists every option with its default`;

export class TrainUsageError extends Error {}

/** The technique a config asks for, built on the model. */
export function makeTechnique(model: StableDiffusion, c: TrainConfig): Technique {
  switch (c.technique) {
    case 'embedding':
      return new EmbeddingTechnique(model, { name: c.token!, vectors: c.vectors, initText: c.initText, lr: c.lr });
    case 'dreambooth':
      return new DreamBoothTechnique(model, { token: c.token!, lr: c.lr, trainTextEncoder: c.trainTextEncoder, textEncoderLr: c.textEncoderLr, saveDtype: c.saveDtype as 'fp16' | undefined });
    case 'lora':
      return new LoraTechnique(model, { rank: c.rank!, alpha: c.alpha!, convRank: c.convRank || undefined, convAlpha: c.convAlpha, trainTextEncoder: c.trainTextEncoder, lr: c.lr, textEncoderLr: c.textEncoderLr, format: c.loraFormat as 'kohya' | 'peft', saveDtype: c.saveDtype as 'fp16' | undefined, seed: c.seed });
    case 'hypernetwork': {
      const name = (c.out ?? 'hypernetwork').replace(/^.*[\\/]/, '').replace(/\.[^.]+$/, '');
      return new HypernetworkTechnique(model, { name, lr: c.lr, layerStructure: c.layerStructure, activation: c.activation, addLayerNorm: c.layerNorm, dropoutStructure: c.dropoutStructure, weightInit: c.weightInit as 'Normal' | undefined, sizes: c.sizes, seed: c.seed });
    }
  }
}

/** The dataset a config describes (class images folder included). */
export function datasetOptions(model: StableDiffusion, c: TrainConfig, classDir: string | undefined): DatasetOptions {
  const factor = 2 ** (model.vae.cfg.blockOutChannels.length - 1);
  const resolution = c.resolution ?? model.unet.cfg.sampleSize * factor;
  const name = c.technique === 'hypernetwork' ? (c.out ?? '').replace(/^.*[\\/]/, '').replace(/\.[^.]+$/, '') : c.token;
  return {
    dir: c.data!,
    classDir,
    classPrompt: c.classPrompt,
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

export interface TrainCliResult {
  result: TrainResult | null;
  dryRun: string | null;
}

export async function runTrain(args: string[], io: { out?: (s: string) => void; err?: NodeJS.WriteStream } = {}): Promise<TrainCliResult> {
  const print = io.out ?? ((s: string) => process.stdout.write(s + '\n'));
  const [technique, ...rest] = args;
  if (!technique || technique.startsWith('-')) throw new TrainUsageError(`train needs a technique first: ${TECHNIQUES.join(', ')}\n${TRAIN_USAGE}`);
  if (!TECHNIQUES.includes(technique as TechniqueKind)) throw new TrainUsageError(`unknown technique ${JSON.stringify(technique)}: choose ${TECHNIQUES.join(', ')}`);
  if (rest.includes('--help') || rest.includes('-h')) {
    print(`${TRAIN_USAGE}\n\noptions for ${technique}:\n${trainHelp(technique as TechniqueKind)}`);
    return { result: null, dryRun: null };
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      allowPositionals: false,
      strict: true,
      options: { ...trainFlagOptions(), config: { type: 'string' }, 'dry-run': { type: 'boolean' }, resume: { type: 'boolean' }, device: { type: 'string' }, quiet: { type: 'boolean' } },
    });
  } catch (e) {
    throw new TrainUsageError(`${(e as Error).message.split('\n')[0]} (sdtune train ${technique} --help lists the options)`);
  }
  const { config, 'dry-run': dry, resume, device, quiet, ...flags } = parsed.values as Record<string, unknown>;
  const file = typeof config === 'string' ? readConfigFile(config) : undefined;
  let c: TrainConfig;
  try {
    c = resolveTrainConfig(technique, { file, fileName: config as string | undefined, flags });
  } catch (e) {
    if (e instanceof ConfigError) throw new TrainUsageError(e.message);
    throw e;
  }
  if (!existsSync(c.data!)) throw new TrainUsageError(`--data ${c.data}: no such folder`);
  const outDir = dirname(resolve(c.out!));
  if (!existsSync(outDir)) throw new TrainUsageError(`--out ${c.out}: the folder ${outDir} does not exist`);
  const workDir = c.workDir ?? `${c.out}.work`;

  const model = loadStableDiffusion(c.model!, { device: (device as string | undefined) ?? 'cpu' });
  let technique_: Technique | null = null;
  let data: DatasetTrainData | null = null;
  let trainer: Trainer | null = null;
  const onSigint = () => {
    stop = true;
    process.stderr.write('\nstopping after this step: saving a checkpoint (Ctrl-C again to quit at once)\n');
    process.once('SIGINT', () => process.exit(130));
  };
  let stop = false;
  try {
    // DreamBooth's class images: the user's folder, or generated by the base model (cached).
    let classDir: string | undefined = c.classData;
    const wantClass = c.technique === 'dreambooth' && (c.numClassImages ?? 0) > 0;
    if (wantClass) {
      classDir ??= join(workDir, 'class-images');
      if (!dry) {
        const bar = quiet ? null : new ProgressBar('class images');
        // At the training resolution: they are trained on as they are.
        const side = datasetOptions(model, c, undefined).resolution as number;
        ensureClassImages(model, { prompt: c.classPrompt!, count: c.numClassImages!, dir: classDir, seed: c.seed, width: side, height: side, onProgress: (d, t) => bar?.update(d, t) });
      }
    }
    const ds = await Dataset.open(datasetOptions(model, c, wantClass && existsSync(classDir!) ? classDir : undefined));
    const accum = c.gradAccumulation ?? 1;
    const epochs = c.epochs ?? 1;
    const steps = c.steps ?? Math.max(1, Math.ceil((epochs * ds.stepsPerEpoch) / accum));
    if (dry) {
      const summary = ds.dryRun(epochs);
      const lines = [summary.text];
      if (wantClass && !existsSync(classDir!)) lines.push(`${c.numClassImages} class images of "${c.classPrompt}" will be generated by the base model into ${classDir} first (prior preservation doubles the samples per epoch).`);
      if (c.steps !== undefined) lines.push(`--steps ${c.steps} is set: training runs ${c.steps} optimizer steps (${(c.steps * accum / Math.max(1, ds.stepsPerEpoch)).toFixed(2)} epochs).`);
      else if (accum > 1) lines.push(`with gradient accumulation ${accum}: ${steps} optimizer steps.`);
      technique_ = makeTechnique(model, c);
      const params = technique_.groups().reduce((s, g) => s + g.params.reduce((n, [, p]) => n + p.numel, 0), 0);
      lines.push(`${c.technique}: ${params.toLocaleString('en')} trainable parameters; the result goes to ${c.out}`);
      const text = lines.join('\n');
      print(text);
      return { result: null, dryRun: text };
    }
    for (const w of ds.warnings) process.stderr.write(`warning: ${w}\n`);
    for (const s of ds.skipped) process.stderr.write(`skipped: ${s.message}\n`);
    technique_ = makeTechnique(model, c);
    data = new DatasetTrainData(ds, { priorLossWeight: c.priorLossWeight, onMessage: (m) => process.stderr.write(`warning: ${m}\n`) });
    const bar = quiet ? null : new ProgressBar('training', io.err);
    const priorPrompts = c.priorPrompts ?? (c.classPrompt ? [c.classPrompt] : []);
    trainer = new Trainer(technique_, data, {
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
      workDir,
      out: c.out!,
      checkpointEvery: c.checkpointEvery,
      snapshots: c.technique !== 'dreambooth',
      sampleEvery: c.sampleEvery,
      samplePrompts: c.samplePrompts,
      validateEvery: c.validateEvery,
      priorPrompts,
      resume: resume === true,
      shouldStop: () => stop,
      onStep: (r) => bar?.update(r.step, steps, `loss ${r.loss.toFixed(4)}${r.val_loss !== undefined ? ` val ${r.val_loss.toFixed(4)}` : ''}`),
      settings: Object.fromEntries(Object.entries(c).filter(([, v]) => ['string', 'number', 'boolean'].includes(typeof v))) as Record<string, string | number | boolean>,
    });
    process.on('SIGINT', onSigint);
    const result = await trainer.run();
    if (result.status === 'diverged') throw new Error(result.message);
    print(`${result.message}. ${result.out ? `wrote ${result.out}` : ''} (${result.seconds.toFixed(1)} s, log ${join(workDir, 'log.jsonl')})`);
    return { result, dryRun: null };
  } finally {
    process.off('SIGINT', onSigint);
    trainer?.dispose();
    data?.dispose();
    technique_?.dispose();
    model.dispose();
  }
}
