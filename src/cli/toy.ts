// `sdtune toy world|concept|pretrain|judge`: the toy world (src/toy/world.ts) as training folders,
// the from-scratch training of the toy Stable Diffusion (src/toy/pretrain.ts) and of its judge
// (src/toy/judge.ts).
import { parseArgs } from 'node:util';
import { conceptTrainingSet, datasetOf, writeWorldFolder } from '../toy/world.ts';
import { pretrainToy } from '../toy/pretrain.ts';
import { loadStableDiffusion } from '../models/load.ts';
import { saveJudge, trainJudge } from '../toy/judge.ts';
import { TOY_JUDGE_PATH, TOY_MODEL_PATH } from '../toy/model.ts';
import { ProgressBar } from './progress.ts';

export const TOY_USAGE = `sdtune toy world --out DIR [--n 200] [--seed 0] [--size 32|64]     scenes with captions
sdtune toy concept subject|style --out DIR [--n 20] [--seed 0]          a concept's training set
sdtune toy pretrain [--out FILE] [--work DIR] [--steps 20000] [--vae-steps 2000] [--scenes 8192] [--batch 32] [--stop-at N]
                                                                        train the toy model from scratch (resumable)
sdtune toy judge [--model FILE] [--out FILE] [--steps 2000] [--seed 0]    train the judge on that model's VAE`;

export class ToyUsageError extends Error {}

function int(name: string, v: string | undefined, d: number): number {
  if (v === undefined) return d;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new ToyUsageError(`--${name} takes a whole number ≥ 1, got ${JSON.stringify(v)}`);
  return n;
}

export async function runToy(args: string[]): Promise<string> {
  const [sub, ...rest] = args;
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: rest,
      allowPositionals: true,
      options: { out: { type: 'string' }, work: { type: 'string' }, n: { type: 'string' }, seed: { type: 'string' }, size: { type: 'string' }, steps: { type: 'string' }, 'vae-steps': { type: 'string' }, scenes: { type: 'string' }, batch: { type: 'string' }, 'stop-at': { type: 'string' } },
    }));
  } catch (e) {
    throw new ToyUsageError(`${(e as Error).message.split('\n')[0]}\n${TOY_USAGE}`);
  }
  const seed = values.seed === undefined ? 0 : int('seed', values.seed as string, 0);
  const size = values.size === '64' ? 64 : 32;
  switch (sub) {
    case 'world': {
      if (!values.out) throw new ToyUsageError('toy world needs --out DIR');
      const files = writeWorldFolder(values.out as string, datasetOf(int('n', values.n as string, 200), seed, { size }));
      return `wrote ${files.length} scenes with captions to ${values.out}`;
    }
    case 'concept': {
      const kind = positionals[0];
      if (kind !== 'subject' && kind !== 'style') throw new ToyUsageError('toy concept needs subject or style');
      if (!values.out) throw new ToyUsageError('toy concept needs --out DIR');
      const files = writeWorldFolder(values.out as string, conceptTrainingSet(kind, int('n', values.n as string, 20), seed, { size }));
      return `wrote ${files.length} ${kind} images with captions to ${values.out}`;
    }
    case 'pretrain': {
      const out = (values.out as string | undefined) ?? 'toy-sd.safetensors';
      const steps = int('steps', values.steps as string, 20000);
      const vaeSteps = int('vae-steps', values['vae-steps'] as string, 2000);
      const vaeBar = new ProgressBar('toy VAE');
      const bar = new ProgressBar('toy SD');
      let stop = false;
      const onSigint = () => {
        stop = true;
        process.stderr.write('\nstopping after this step: saving a checkpoint (run again to resume)\n');
      };
      process.on('SIGINT', onSigint);
      try {
        const r = await pretrainToy({
          out, workDir: (values.work as string | undefined) ?? `${out}.work`, steps, vaeSteps, seed,
          scenes: int('scenes', values.scenes as string, 8192), batch: int('batch', values.batch as string, 32),
          onVaeStep: (s, n, l) => vaeBar.update(s, n, `loss ${l.toFixed(4)}`),
          onStep: (rec, n) => bar.update(rec.step, n, `loss ${rec.loss.toFixed(4)}${rec.val_loss !== undefined ? ` val ${rec.val_loss.toFixed(4)}` : ''}`),
          shouldStop: () => stop,
          stopAt: values['stop-at'] === undefined ? undefined : int('stop-at', values['stop-at'] as string, steps),
        });
        return `${r.status}: wrote ${out} (final loss ${r.loss.toFixed(4)}, ${(r.seconds / 60).toFixed(1)} min)`;
      } finally {
        process.off('SIGINT', onSigint);
      }
    }
    case 'judge': {
      const out = (values.out as string | undefined) ?? TOY_JUDGE_PATH;
      const steps = int('steps', values.steps as string, 2000);
      const model = loadStableDiffusion((values.model as string | undefined) ?? TOY_MODEL_PATH, { hash: false });
      const bar = new ProgressBar('judge');
      try {
        const r = trainJudge({ steps, seed, vae: model.vae, onStep: (s, n, l) => bar.update(s, n, `loss ${l.toFixed(4)}`) });
        saveJudge(r.judge, out, { accuracy: r.accuracy, steps, seed });
        r.judge.dispose();
        const heads = Object.entries(r.accuracy.decoded).map(([h, a]) => `${h} ${(100 * a).toFixed(1)}`).join(', ');
        return `wrote ${out}: accuracy ${(100 * r.accuracy.mean).toFixed(1)} % on ${r.accuracy.n} unseen pictures (VAE-decoded: ${heads}) in ${(r.seconds / 60).toFixed(1)} min`;
      } finally {
        model.dispose();
      }
    }
    default:
      throw new ToyUsageError(TOY_USAGE);
  }
}
