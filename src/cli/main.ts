// The sdtune command line. Each subcommand lives in its own file; this one only dispatches.
import { engineDemo } from './demo.ts';
import { runDemo } from '../toy/demo.ts';
import { parseArgs } from 'node:util';
import { formatInspect, inspectPath } from '../formats/inspect.ts';
import { formatTokenize, tokenizePrompt } from './tokenize.ts';
import { convert, type DtypeName, type Target } from '../models/convert.ts';
import { GENERATE_USAGE, GenerateUsageError, describeGenerate, runGenerate } from './generate.ts';
import { MERGE_USAGE, MergeUsageError, describeMerge, runMerge } from './merge.ts';
import { TrainUsageError, runTrain } from './train.ts';
import { ToyUsageError, runToy } from './toy.ts';
import { ServeUsageError, runServe } from './serve.ts';

const USAGE = `usage: sdtune <command> [options]

commands:
  demo [--out DIR] [--short]
                       teach the embedded toy model two new concepts with all four techniques and
                       write a report comparing them (--short: a quick run; engine: the engine demo)
  inspect PATH [--json]
                       what a model file is: format, kind, family, tensors, metadata
  convert IN OUT [--to ldm|diffusers|kohya|peft|a1111-pt|safetensors] [--dtype fp16|bf16|fp32]
                 [--prune-ema | --use-ema] [--model CHECKPOINT]
                       checkpoints (single file <-> diffusers folder), LoRAs, embeddings
  generate --model PATH --prompt TEXT --out FILE.png [options]
                       txt2img / img2img (sdtune generate --help lists the options)
  tokenize TEXT [--json] [--sd2]
                       CLIP token ids of TEXT (BOS/EOS, no padding) and A1111's count, e.g. 12/75
  train dreambooth|lora|embedding|hypernetwork --model PATH --data DIR --out FILE [options]
                       fine-tune (--dry-run shows the step count first; --help lists the options)
  merge --model CKPT --lora FILE:W [--lora …] --out OUT.safetensors
                       bake LoRAs into a checkpoint
  serve [--port 7860] [--host 127.0.0.1] [--data DIR] [--auth user:pass] [--serial]
                       the studio: web UI, HTTP API (/api, OpenAPI), A1111-compatible /sdapi/v1
  toy world|concept|pretrain|judge [options]
                       the toy world's training folders; the toy model trained from scratch
  help                 this text
`;

class UsageError extends Error {}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'demo': {
      if (rest[0] === 'engine') {
        engineDemo({ steps: rest.includes('--quick') ? 30 : 200 });
        return 0;
      }
      const { values } = parseArgs({ args: rest, options: { out: { type: 'string' }, short: { type: 'boolean' } } });
      const out = (values.out as string | undefined) ?? 'demo-report';
      const t0 = Date.now();
      const r = await runDemo({ out, stepScale: values.short ? 0.25 : 1, probeCount: values.short ? 2 : 4, log: (l) => process.stdout.write(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(3)} s] ${l}\n`) });
      process.stdout.write(`\nthe report is ${r.report} (and report.md, report.json beside it)\n`);
      return 0;
    }
    case 'tokenize': {
      const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: { json: { type: 'boolean' }, sd2: { type: 'boolean' } } });
      if (positionals.length === 0) throw new UsageError('tokenize needs TEXT (quote it; use -- before text that starts with -)');
      const r = tokenizePrompt(positionals.join(' '), { sd2: values.sd2 });
      process.stdout.write(values.json ? JSON.stringify(r) + '\n' : formatTokenize(r));
      return 0;
    }
    case 'inspect': {
      const path = rest.find((a) => !a.startsWith('--'));
      if (!path) throw new UsageError('inspect needs a PATH');
      const r = inspectPath(path);
      process.stdout.write((rest.includes('--json') ? JSON.stringify(r) : formatInspect(r)) + '\n');
      return 0;
    }
    case 'convert': {
      const { values, positionals } = parseArgs({
        args: rest,
        allowPositionals: true,
        options: { to: { type: 'string' }, dtype: { type: 'string' }, 'prune-ema': { type: 'boolean' }, 'use-ema': { type: 'boolean' }, model: { type: 'string' } },
      });
      if (positionals.length !== 2) throw new UsageError('convert needs IN and OUT');
      const targets = ['ldm', 'diffusers', 'kohya', 'peft', 'a1111-pt', 'safetensors'];
      if (values.to && !targets.includes(values.to)) throw new UsageError(`--to must be one of ${targets.join(', ')}`);
      if (values.dtype && !['fp16', 'bf16', 'fp32'].includes(values.dtype)) throw new UsageError('--dtype must be fp16, bf16 or fp32');
      let last = 0;
      const r = convert(positionals[0], positionals[1], {
        to: values.to as Target | undefined,
        dtype: values.dtype as DtypeName | undefined,
        pruneEma: values['prune-ema'],
        useEma: values['use-ema'],
        model: values.model,
        onProgress: (d, t) => {
          const pct = Math.floor((100 * d) / t);
          if (process.stderr.isTTY && (pct !== last || d === t)) process.stderr.write(`\rconverting ${d}/${t} tensors (${pct}%)`);
          last = pct;
          if (d === t && process.stderr.isTTY) process.stderr.write('\n');
        },
      });
      process.stdout.write(`wrote ${r.output} (${r.kind} → ${r.target}, ${r.tensors} tensors)${r.notes.length ? '; ' + r.notes.join('; ') : ''}\n`);
      return 0;
    }
    case 'generate': {
      if (rest.includes('--help') || rest.includes('-h')) {
        process.stdout.write(GENERATE_USAGE + '\n');
        return 0;
      }
      process.stdout.write(describeGenerate(runGenerate(rest)) + '\n');
      return 0;
    }
    case 'train':
      await runTrain(rest);
      return 0;
    case 'serve':
      await runServe(rest);
      return 0;
    case 'toy':
      process.stdout.write((await runToy(rest)) + '\n');
      return 0;
    case 'merge': {
      if (rest.includes('--help') || rest.includes('-h')) {
        process.stdout.write(MERGE_USAGE + '\n');
        return 0;
      }
      process.stdout.write(describeMerge(runMerge(rest)) + '\n');
      return 0;
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return cmd === undefined ? 2 : 0;
    default:
      process.stderr.write(`sdtune: unknown command '${cmd}'\n${USAGE}`);
      return 2;
  }
}

const isMain = process.argv[1] && /(?:main\.ts|sdtune(?:\.mjs)?)$/.test(process.argv[1]);
if (isMain) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`sdtune: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(e instanceof UsageError || e instanceof GenerateUsageError || e instanceof MergeUsageError || e instanceof TrainUsageError || e instanceof ToyUsageError || e instanceof ServeUsageError ? 2 : 1);
    },
  );
}
