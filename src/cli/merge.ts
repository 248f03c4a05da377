// `sdtune merge --model CKPT --lora FILE[:W[:TE_W]] … --out OUT.safetensors [--dtype fp16|bf16|fp32]`:
// bakes LoRAs into a checkpoint the way A1111 merges them (W' = W + ΔW·(alpha/r)·w, sd-formats.md
// §5.2) and writes an LDM single-file checkpoint, atomically (temp file + rename), with the
// model's configs in the metadata so a non-standard model loads again.
import { existsSync, statSync } from 'node:fs';
import { basename, dirname, extname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { saveSafetensors } from '../formats/safetensors.ts';
import { DDPM_BUFFERS, diffusersToLdm } from '../formats/layouts/index.ts';
import { CONFIG_METADATA_KEY, loadStableDiffusion, openStateSource, type SingleFileConfig } from '../models/load.ts';
import { clipConfigToTransformers, unetConfigToDiffusers, vaeConfigToDiffusers } from '../models/config.ts';
import { disposeLoraFile, mergeLoras } from '../adapters/lora.ts';
import { loadLoraFile, type LoadedLora } from '../adapters/lora-file.ts';
import { castAll, disposeAll, type DtypeName } from '../models/convert.ts';

export class MergeUsageError extends Error {}

export const MERGE_USAGE = `sdtune merge --model CHECKPOINT --lora FILE[:W[:TE_W]] [--lora …] --out OUT.safetensors
  [--dtype fp16|bf16|fp32] [--device cpu|cuda]
  Bakes each LoRA into the weights at weight W (default 1; TE_W, if given, is the text-encoder
  weight, else W) and writes a single-file checkpoint.`;

/** Metadata key listing the LoRAs a merged checkpoint holds. */
export const MERGED_LORAS_METADATA_KEY = 'sdtune.merged_loras';

export interface MergeSpec {
  file: string;
  unet: number;
  te: number;
}

export interface MergeResult {
  output: string;
  tensors: number;
  loras: (MergeSpec & { modules: number })[];
  seconds: number;
}

/** `FILE`, `FILE:W` or `FILE:W:TE_W`; only trailing numbers are weights, so `C:\x.safetensors` stays a path. */
export function parseLoraArg(arg: string): MergeSpec {
  const parts = arg.split(':');
  const nums: number[] = [];
  while (parts.length > 1 && nums.length < 2 && /^\s*[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?\s*$/i.test(parts[parts.length - 1])) nums.unshift(Number(parts.pop()));
  const file = parts.join(':');
  if (file === '') throw new MergeUsageError(`--lora ${arg}: give a file, e.g. --lora style.safetensors:0.8`);
  const unet = nums[0] ?? 1;
  return { file, unet, te: nums[1] ?? unet };
}

export function runMerge(args: string[]): MergeResult {
  const { values } = parseArgs({
    args,
    allowPositionals: false,
    options: {
      model: { type: 'string' },
      lora: { type: 'string', multiple: true },
      out: { type: 'string' },
      dtype: { type: 'string' },
      device: { type: 'string' },
    },
  });
  if (!values.model) throw new MergeUsageError('merge needs --model (a .safetensors/.ckpt checkpoint or a diffusers folder)');
  const specs = (values.lora ?? []).map(parseLoraArg);
  if (specs.length === 0) throw new MergeUsageError('merge needs at least one --lora FILE[:W]');
  if (!values.out) throw new MergeUsageError('merge needs --out OUT.safetensors');
  const out = values.out;
  if (extname(out).toLowerCase() !== '.safetensors') throw new MergeUsageError(`--out ${out}: sdtune writes merged checkpoints as .safetensors; use that extension`);
  if (existsSync(out) && statSync(out).isDirectory()) throw new MergeUsageError(`--out ${out} is a folder; give a file name`);
  if (!existsSync(dirname(resolve(out)))) throw new MergeUsageError(`--out ${out}: the folder ${dirname(resolve(out))} does not exist`);
  const dtype = values.dtype as DtypeName | undefined;
  if (dtype !== undefined && !['fp16', 'bf16', 'fp32'].includes(dtype)) throw new MergeUsageError('--dtype must be fp16, bf16 or fp32');
  for (const s of specs) if (!existsSync(s.file)) throw new MergeUsageError(`--lora ${s.file}: no such file`);

  const t0 = Date.now();
  const model = loadStableDiffusion(values.model, { device: values.device ?? 'cpu', hash: false });
  const loras: LoadedLora[] = [];
  try {
    // Every file is read and checked against the model before any weight changes.
    for (const s of specs) loras.push(loadLoraFile(s.file, model));
    mergeLoras(model, loras.map((lora, i) => ({ lora, unet: specs[i].unet, te: specs[i].te })));

    const ldm = diffusersToLdm({ unet: model.unet.stateDict(), vae: model.vae.stateDict(), textEncoder: model.textEncoder.stateDict() }, model.family);
    // The DDPM schedule buffers of a single-file input travel along (they are the same before and after).
    if (statSync(values.model).isFile()) {
      const src = openStateSource(values.model);
      try {
        for (const k of src.keys()) if (DDPM_BUFFERS.has(k) && !ldm.has(k)) ldm.set(k, src.get(k));
      } finally {
        src.close();
      }
    }
    const cfg: SingleFileConfig = {
      unet: unetConfigToDiffusers(model.unet.cfg),
      vae: vaeConfigToDiffusers(model.vae.cfg),
      text_encoder: clipConfigToTransformers(model.textEncoder.cfg),
      scheduler: model.schedulerConfig,
      prediction: model.prediction,
    };
    const merged = specs.map((s, i) => ({ ...s, file: basename(s.file), modules: loras[i].modules.size }));
    const cast = castAll(ldm, dtype);
    try {
      saveSafetensors(out, cast, { format: 'pt', [CONFIG_METADATA_KEY]: JSON.stringify(cfg), [MERGED_LORAS_METADATA_KEY]: JSON.stringify(merged) });
      return { output: out, tensors: cast.size, loras: specs.map((s, i) => ({ ...s, modules: loras[i].modules.size })), seconds: (Date.now() - t0) / 1000 };
    } finally {
      disposeAll(cast, ldm);
    }
  } finally {
    for (const l of loras) disposeLoraFile(l);
    model.dispose();
  }
}

export function describeMerge(r: MergeResult): string {
  const what = r.loras.map((l) => `${basename(l.file)} (${l.modules} modules, unet ${l.unet}, te ${l.te})`).join(', ');
  return `wrote ${r.output} (${r.tensors} tensors) with ${what} merged in ${r.seconds.toFixed(1)} s`;
}
