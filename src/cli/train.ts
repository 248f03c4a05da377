// `sdtune train dreambooth|lora|embedding|hypernetwork --model PATH --data DIR --out FILE`:
// settings from flags and/or --config (one schema, src/training/config.ts), a dry run that shows
// images, buckets, repeats and the step count before anything trains, a progress bar with loss,
// it/s and ETA, Ctrl-C that saves a checkpoint and exits, and --resume.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { TrainResult } from '../training/loop.ts';
import { ConfigError, TECHNIQUES, readConfigFile, resolveTrainConfig, trainFlagOptions, trainHelp, type TrainConfig } from '../training/config.ts';
import { describeTraining, runTraining } from '../training/run.ts';
import type { TechniqueKind } from '../training/technique.ts';
import { ProgressBar } from './progress.ts';

export const TRAIN_USAGE = `sdtune train ${TECHNIQUES.join('|')} --model PATH --data DIR --out FILE [options]
  [--config FILE.toml|.json] [--dry-run] [--resume] [--device cpu|cuda] [--quiet]
  sdtune train TECHNIQUE --help lists every option with its default`;

export class TrainUsageError extends Error {}

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
  if (dry) {
    const { text } = await describeTraining(c, { device: device as string | undefined });
    print(text);
    return { result: null, dryRun: text };
  }
  let stop = false;
  const onSigint = () => {
    stop = true;
    process.stderr.write('\nstopping after this step: saving a checkpoint (Ctrl-C again to quit at once)\n');
    process.once('SIGINT', () => process.exit(130));
  };
  const classBar = quiet ? null : new ProgressBar('class images');
  const bar = quiet ? null : new ProgressBar('training', io.err);
  process.on('SIGINT', onSigint);
  try {
    const { result, workDir } = await runTraining(c, {
      device: device as string | undefined,
      resume: resume === true,
      shouldStop: () => stop,
      onClassImages: (d, t) => classBar?.update(d, t),
      onMessage: (m) => process.stderr.write(m + '\n'),
      onStep: (r, steps) => bar?.update(r.step, steps, `loss ${r.loss.toFixed(4)}${r.val_loss !== undefined ? ` val ${r.val_loss.toFixed(4)}` : ''}`),
    });
    if (result.status === 'diverged') throw new Error(result.message);
    print(`${result.message}. ${result.out ? `wrote ${result.out}` : ''} (${result.seconds.toFixed(1)} s, log ${join(workDir, 'log.jsonl')})`);
    return { result, dryRun: null };
  } finally {
    process.off('SIGINT', onSigint);
  }
}
