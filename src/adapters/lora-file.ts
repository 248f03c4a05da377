// Reading LoRA files (kohya or PEFT; .safetensors or .pt) into the typed structure, checked
// against the model they will be applied to. Split from lora.ts, which re-exports it.
import { extname } from 'node:path';
import * as T from '../torch/index.ts';
import { type Tensor, tidy, nn } from '../torch/index.ts';
import { SafetensorsFile } from '../formats/safetensors.ts';
import { loadTorchStateDict } from '../formats/torchfile.ts';
import {
  kohyaName, loraFromKohya, loraFromPeft, rankOf, splitComponent, summarizeLoraKeys,
  type LoraComponent, type LoraFile, type LoraModule, type ModulePaths, type UnloadedKey,
} from '../formats/layouts/lora.ts';
import { pyFloat } from '../formats/layouts/kohya-metadata.ts';
import type { StateDict } from '../formats/layouts/types.ts';
import { Transformer2D } from '../models/attention.ts';
import { ClipAttention, ClipMlp, type CLIPTextModel } from '../models/clip.ts';
import { Downsample2D, ResnetBlock2D, Upsample2D, type UNet2DConditionModel } from '../models/unet.ts';

/** The parts of a Stable Diffusion model a LoRA touches (a StableDiffusion object fits). */
import { assertFits, disposeLoraFile, layerPaths, loraMismatches, listProblems, type LoraMismatch, type ModelParts } from './lora.ts';

// ---- reading files -----------------------------------------------------------------------------

/** A LoraFile read from disk, with the keys that were not loaded (only ignorable ones unless strict: false). */
export interface LoadedLora extends LoraFile {
  path: string;
  format: 'kohya' | 'peft';
  unloaded: UnloadedKey[];
}

/** `reason: key, key; reason: key` with the layouts' per-module wording made generic, so each reason shows once. */
function listByReason(items: UnloadedKey[], max = 12): string {
  const groups = new Map<string, string[]>();
  for (const u of items) {
    const m = /^no (UNet|text encoder|second text encoder|\S+) module (?:named )?'[^']*' in the model/.exec(u.reason);
    const reason = m ? `no ${m[1]} layer by that name` : u.reason;
    groups.set(reason, [...(groups.get(reason) ?? []), u.key]);
  }
  let left = max;
  const out: string[] = [];
  for (const [reason, keys] of groups) {
    const shown = keys.slice(0, Math.max(1, left));
    left -= shown.length;
    out.push(`${reason}: ${shown.join(', ')}${keys.length > shown.length ? `, … (${keys.length} in all)` : ''}`);
  }
  return out.join('; ');
}

/** A LoRA file whose keys do not all match the model. Lists the keys and why. */
export class LoraLoadError extends Error {
  constructor(
    readonly file: string,
    readonly unmatched: UnloadedKey[],
    readonly mismatched: LoraMismatch[],
    total: number,
    hint: string,
  ) {
    const parts: string[] = [];
    if (unmatched.length) parts.push(`${unmatched.length} of its ${total} keys match no module of this model: ${listByReason(unmatched)}`);
    if (mismatched.length) parts.push(`${mismatched.length} module(s) have the wrong shapes for this model: ${listProblems(mismatched.map((m) => ({ key: m.name, reason: m.reason })))}`);
    super(`${file}: ${parts.join('; ')}.${hint} Use a LoRA made for this model, or load with strict: false to skip these keys.`);
    this.name = 'LoraLoadError';
  }
}

/** Keys that are not an error to leave out (A1111 loads bundled embeddings separately). */
function ignorable(u: UnloadedKey): boolean {
  return u.key.startsWith('bundle_emb.');
}

function readStateDict(path: string): { sd: StateDict; metadata: Record<string, string> } {
  const ext = extname(path).toLowerCase();
  if (ext === '.safetensors') {
    const f = SafetensorsFile.open(path);
    try {
      const sd: StateDict = new Map();
      for (const k of f.keys()) sd.set(k, f.get(k));
      return { sd, metadata: { ...f.metadata } };
    } finally {
      f.close();
    }
  }
  if (ext === '.pt' || ext === '.ckpt' || ext === '.bin' || ext === '.pth') return { sd: loadTorchStateDict(path), metadata: {} };
  throw new Error(`${path}: not a LoRA file sdtune reads (expected .safetensors, or a torch .pt/.ckpt/.bin)`);
}

function familyOf(parts: ModelParts): string {
  const d = parts.unet?.cfg.crossAttentionDim ?? parts.textEncoder?.cfg.hiddenSize;
  return d === 768 ? 'sd1' : d === 1024 ? 'sd2' : 'unknown';
}

/**
 * Reads a kohya or diffusers/PEFT LoRA (.safetensors, or a torch .pt/.ckpt/.bin state dict) and
 * resolves its names against the model's layers (§5.4: by lookup, never by guessing where '_'
 * was '.'). Every key must land on a layer with matching shapes, else LoraLoadError names the
 * file and lists the keys; `strict: false` drops those (they are returned in `unloaded`).
 */
export function loadLoraFile(path: string, model: ModelParts, o: { strict?: boolean } = {}): LoadedLora {
  const { sd, metadata } = readStateDict(path);
  try {
    const kohya = [...sd.keys()].some((k) => /^lora_(unet|te\d?)_/.test(k));
    const paths: ModulePaths = { unet: layerPaths(model.unet), textEncoder: layerPaths(model.textEncoder) };
    const read = kohya ? loraFromKohya(sd, paths, metadata) : loraFromPeft(sd, metadata, paths);
    const lora = read.lora;
    const mismatched = loraMismatches(model, lora);
    for (const u of read.unloaded) {
      if (!model.textEncoder && /^(lora_te\d?_|text_encoder)/.test(u.key)) u.reason = 'no text encoder was given to load it into';
      if (!model.unet && /^(lora_unet_|unet\.)/.test(u.key)) u.reason = 'no UNet was given to load it into';
    }
    const unmatched = read.unloaded.filter((u) => !ignorable(u));
    if (read.lora.modules.size === 0 && unmatched.length === 0 && mismatched.length === 0) {
      throw new Error(`${path}: holds no LoRA weights (${sd.size} tensors, none named like kohya's lora_unet_…/lora_te_… or PEFT's ….lora_A.weight)`);
    }
    if ((o.strict ?? true) && (unmatched.length || mismatched.length)) {
      disposeLoraFile(lora);
      const s = summarizeLoraKeys(new Map([...sd].map(([k, t]) => [k, t.shape])), metadata);
      const mine = familyOf(model);
      const hint = s && s.family !== 'unknown' && s.family !== mine
        ? ` The file looks like an ${s.family.toUpperCase()} LoRA, going by ${s.familySource}${mine === 'unknown' ? '' : `; the model is ${mine.toUpperCase()}`}.`
        : '';
      throw new LoraLoadError(path, unmatched, mismatched, sd.size, hint);
    }
    for (const m of mismatched) {
      const mod = lora.modules.get(m.path);
      if (mod) for (const t of [mod.down, mod.up, mod.mid]) t?.dispose();
      lora.modules.delete(m.path);
      read.unloaded.push({ key: m.name, reason: m.reason });
    }
    return { ...lora, path, format: kohya ? 'kohya' : 'peft', unloaded: read.unloaded };
  } finally {
    for (const t of sd.values()) t.dispose();
  }
}
