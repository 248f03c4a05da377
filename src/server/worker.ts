// A job's worker process: all tensor work of the studio runs here, never in the server. The server
// forks one per job (one at a time per device), sends it a task, and hears progress, step records
// and the result over IPC. 'stop' asks a training run to save a checkpoint and end; any other death
// is seen by the server as the process exiting without 'done'.
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { encodePng, writePng } from '../formats/png.ts';
import * as T from '../torch/index.ts';
import { loadStableDiffusion } from '../models/load.ts';
import { convert, type DtypeName, type Target } from '../models/convert.ts';
import { runGenerateJob } from '../sampling/run.ts';
import { describeTraining, runTraining } from '../training/run.ts';
import { EmbeddingTechnique } from '../training/techniques/embedding.ts';
import { Hypernetwork } from '../adapters/hypernetwork.ts';
import type { WeightInit } from '../adapters/hypernetwork.ts';
import type { StepRecord } from '../training/loop.ts';
import { decodeImage, sideBySide } from './image.ts';
import type { FromWorker, ToWorker, WorkerTask } from './protocol.ts';
import type { GenerateResult, Preflight, StepPoint } from './api-types.ts';

const send = (m: FromWorker) => process.send?.(m);
let stopRequested = false;

/** What the studio keeps of a step: the losses and the meter's curves (no sample paths or timings). */
const point = ({ epoch: _e, step_ms: _ms, samples: _s, checkpoint: _c, ...p }: StepRecord): StepPoint => p;

function rssBytes(): number {
  const m = /VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : process.memoryUsage().rss;
}

async function run(task: WorkerTask): Promise<unknown> {
  switch (task.kind) {
    case 'train': {
      const { result, workDir } = await runTraining(task.config, {
        device: task.device,
        resume: task.resume,
        shouldStop: () => stopRequested,
        onClassImages: (d, t) => send({ type: 'progress', step: d, total: t, message: `class images ${d}/${t}` }),
        onMessage: (text) => send({ type: 'message', text }),
        onStep: (r, total) => {
          send({ type: 'progress', step: r.step, total, message: `step ${r.step}/${total}`, loss: r.loss });
          send({ type: 'record', record: point(r) });
        },
      });
      if (result.status === 'diverged') throw new Error(result.message);
      return { status: result.status, steps: result.steps, seconds: result.seconds, message: result.message, out: result.out, trainable_parameters: result.trainableParameters, work_dir: workDir };
    }
    case 'preflight': {
      // The dry run's counts, then two real steps in a scratch folder: their time and the process's
      // peak memory are measurements on this machine, not guesses.
      const plan = await describeTraining(task.config, { device: task.device });
      mkdirSync(task.scratch, { recursive: true });
      try {
        const timing = { ...task.config, steps: 3, numClassImages: 0, validateEvery: 1000, checkpointEvery: 1000, snapshots: false, sampleEvery: 0, sampleCheck: 0, earlyStop: 0, out: join(task.scratch, task.config.technique === 'hypernetwork' ? 'timing.pt' : 'timing.safetensors'), workDir: join(task.scratch, 'work') };
        const { result } = await runTraining(timing, { device: task.device });
        const ms = result.records.slice(1).map((r) => r.step_ms);
        const perStep = (ms.length ? ms.reduce((a, b) => a + b, 0) / ms.length : result.records[0]?.step_ms ?? 0) / 1000;
        const prior = task.config.technique === 'dreambooth' && (task.config.numClassImages ?? 0) > 0 ? 2 : 1;
        const r: Preflight = { steps: plan.steps, trainable_parameters: plan.trainableParameters, eta_seconds: Math.round(plan.steps * perStep * prior), memory_bytes: rssBytes(), text: plan.text };
        return r;
      } finally {
        rmSync(task.scratch, { recursive: true, force: true });
      }
    }
    case 'generate': {
      const t0 = Date.now();
      const init = task.initImage === undefined ? undefined : await decodeImage(task.initImage);
      const every = task.previewEvery ?? 0;
      const preview = every > 0 ? { every, onPreview: (imgs: Parameters<typeof sideBySide>[0], step: number, total: number) => send({ type: 'preview', step, total, png: encodePng(sideBySide(imgs)) }) } : undefined;
      const images = runGenerateJob({ ...task.job, options: { ...task.job.options, ...(init && { init }), ...(preview && { preview }), onStep: (s, n) => send({ type: 'progress', step: s, total: n, message: `sampling ${s}/${n}` }) } });
      const out: GenerateResult = { images: [], seconds: 0 };
      images.forEach((img, i) => {
        const file = `${task.prefix}-${i + 1}.png`;
        writePng(join(task.outDir, file), img.image, { parameters: img.parameters });
        out.images.push({ file, url: `/files/outputs/${encodeURIComponent(file)}`, seed: img.seed, parameters: img.parameters, created: new Date().toISOString() });
      });
      out.seconds = (Date.now() - t0) / 1000;
      return out;
    }
    case 'convert': {
      const r = convert(task.input, task.output, { to: task.to as Target | undefined, dtype: task.dtype as DtypeName | undefined, model: task.model });
      return { output: r.output, kind: r.kind, target: r.target, tensors: r.tensors, notes: r.notes };
    }
    case 'create-embedding': {
      const model = loadStableDiffusion(task.model, { device: task.device });
      try {
        const t = new EmbeddingTechnique(model, { name: task.name, vectors: task.vectors, initText: task.initText });
        try {
          t.save(task.out, { step: 0, baseName: model.name, baseHash: model.hash, settings: {} });
        } finally {
          t.dispose();
        }
        return { out: task.out };
      } finally {
        model.dispose();
      }
    }
    case 'create-hypernetwork': {
      const h = Hypernetwork.create(task.name, { sizes: task.sizes, layerStructure: task.layerStructure, activation: task.activation, addLayerNorm: task.layerNorm, dropoutStructure: task.dropoutStructure, weightInit: task.weightInit as WeightInit });
      try {
        h.save(task.out);
      } finally {
        h.dispose();
      }
      return { out: task.out };
    }
  }
}

// The server is gone (killed): stop now; a training job resumes from its last checkpoint later.
process.on('disconnect', () => process.exit(1));

process.on('message', (m: ToWorker) => {
  if (m.type === 'stop') {
    stopRequested = true;
    return;
  }
  if (m.type === 'threads') {
    T.setNumThreads(m.n);
    return;
  }
  run(m.task).then(
    (result) => {
      send({ type: 'done', result });
      process.removeAllListeners('disconnect');
      process.disconnect?.();
    },
    (e: unknown) => {
      send({ type: 'error', message: e instanceof Error ? e.message : String(e) });
      process.removeAllListeners('disconnect');
      process.disconnect?.();
    },
  );
});
