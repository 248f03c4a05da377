// What a model file is (behind `sdtune inspect PATH [--json]` and the studio's Library): format, kind, family, prediction type,
// tensors, parameters, dtypes, metadata, and for adapters which base modules they touch.
// Safetensors are read header-only; pickles are read lazily (no tensor data is loaded).
import { existsSync, readFileSync, statSync, openSync, readSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { readSafetensorsHeader } from '../formats/safetensors.ts';
import { loadTorchFile } from '../formats/torchfile.ts';
import { TorchDict, TorchObject, TorchTensorRef, TorchTuple } from '../formats/pickle.ts';
import { decodePng } from '../formats/png.ts';
import { detectKind, detectObject, type Detection } from '../formats/layouts/index.ts';

export interface InspectReport {
  path: string;
  format: 'safetensors' | 'pytorch' | 'diffusers-folder' | 'png';
  kind: string;
  family: string;
  prediction: string;
  tensors: number;
  parameters: number;
  bytes: number;
  dtypes: Record<string, number>;
  metadata: Record<string, string>;
  /** Sentences about the file: completeness, EMA, unsupported keys, … */
  messages: string[];
  /** Adapters: which base modules they change. */
  touches?: { unet: number; textEncoder: number; examples: string[]; ranks?: number[]; locon?: boolean };
  components?: Record<string, { tensors: number; parameters: number }>;
  /** Embeddings: vectors per token and their width (SDXL: clip_l + clip_g widths added, as A1111 reports). */
  embedding?: { vectors: number; width: number };
}

type Shapes = Map<string, number[]>;

const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

function magic(path: string): Buffer {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(16);
    const n = readSync(fd, b, 0, 16, 0);
    return b.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

function fromDetection(base: Omit<InspectReport, 'kind' | 'family' | 'prediction' | 'messages'>, d: Detection, shapes: Shapes): InspectReport {
  const r: InspectReport = {
    ...base,
    kind: d.kind,
    family: d.family.family,
    prediction: d.family.prediction,
    messages: [...d.messages],
  };
  if (d.kind === 'embedding') {
    const mats = [...shapes.values()].filter((x) => x.length === 2);
    if (mats.length) r.embedding = { vectors: mats[0][0], width: mats.reduce((w, x) => w + x[1], 0) };
  }
  if (d.details.lora) {
    const l = d.details.lora;
    const examples = [...shapes.keys()].filter((k) => /lora_down|lora_A/.test(k)).slice(0, 4).map((k) => k.replace(/\.(lora_down|lora_A)(\.default)?\.weight$/, ''));
    r.touches = { unet: l.unetModules, textEncoder: l.textEncoderModules, examples, ranks: l.ranks, locon: l.locon };
  }
  return r;
}

function inspectSafetensors(path: string): InspectReport {
  const h = readSafetensorsHeader(path);
  const shapes: Shapes = new Map();
  const dtypes: Record<string, number> = {};
  let parameters = 0;
  for (const e of h.entries) {
    shapes.set(e.key, [...e.shape]);
    dtypes[e.dtype] = (dtypes[e.dtype] ?? 0) + 1;
    parameters += numel(e.shape);
  }
  const d = detectKind(shapes, { metadata: h.metadata });
  return fromDetection({ path, format: 'safetensors', tensors: h.entries.length, parameters, bytes: h.fileSize, dtypes, metadata: { ...h.metadata } }, d, shapes);
}

function inspectPickle(path: string): InspectReport {
  const tree = loadTorchFile(path);
  const shapes: Shapes = new Map();
  const dtypes: Record<string, number> = {};
  let parameters = 0;
  let count = 0;
  // Tensors anywhere in the tree count; a state dict's keys name them.
  const walk = (v: unknown, prefix: string, depth: number) => {
    if (depth > 8) return;
    if (v instanceof TorchTensorRef) {
      count++;
      parameters += numel(v.shape);
      dtypes[v.dtype] = (dtypes[v.dtype] ?? 0) + 1;
      if (prefix) shapes.set(prefix, [...v.shape]);
    } else if (v instanceof Map) {
      for (const [k, x] of v) walk(x, prefix ? `${prefix}.${String(k)}` : String(k), depth + 1);
    } else if (Array.isArray(v) || v instanceof TorchTuple) {
      (Array.isArray(v) ? v : v.items).forEach((x, i) => walk(x, `${prefix}.${i}`, depth + 1));
    } else if (v instanceof TorchObject) {
      walk(v.state, prefix, depth + 1);
    }
  };
  let sd: unknown = tree;
  const metadata: Record<string, string> = {};
  let globalStep: number | undefined;
  if (tree instanceof TorchDict) {
    const inner = tree.get('state_dict');
    if (inner instanceof TorchDict) sd = inner;
    // A1111 embeddings say when and on what they were trained.
    for (const k of ['step', 'sd_checkpoint', 'sd_checkpoint_name', 'name']) {
      const v = tree.get(k);
      if (typeof v === 'string' || typeof v === 'number') metadata[k] = String(v);
    }
    const gs = tree.get('global_step');
    if (typeof gs === 'number') {
      globalStep = gs;
      metadata.global_step = String(gs);
    }
  }
  walk(sd, '', 0);
  const obj = detectObject(tree);
  const d = obj.kind === 'embedding' || obj.kind === 'hypernetwork' ? obj : detectKind(shapes, { globalStep });
  return fromDetection({ path, format: 'pytorch', tensors: count, parameters, bytes: statSync(path).size, dtypes, metadata }, d, shapes);
}

function inspectFolder(dir: string): InspectReport {
  if (!existsSync(join(dir, 'model_index.json'))) throw new Error(`${dir}: a folder, but not a diffusers pipeline (no model_index.json)`);
  const comps: Record<string, { tensors: number; parameters: number }> = {};
  const dtypes: Record<string, number> = {};
  let tensors = 0;
  let parameters = 0;
  let bytes = 0;
  const messages: string[] = [];
  for (const [c, file] of [['unet', 'diffusion_pytorch_model'], ['vae', 'diffusion_pytorch_model'], ['text_encoder', 'model']]) {
    const st = join(dir, c, `${file}.safetensors`);
    if (!existsSync(st)) {
      messages.push(existsSync(join(dir, c)) ? `${c}/ has no ${file}.safetensors (a .bin is read by generate, not inspected here).` : `No ${c}/ folder.`);
      continue;
    }
    const h = readSafetensorsHeader(st);
    let p = 0;
    for (const e of h.entries) {
      p += numel(e.shape);
      dtypes[e.dtype] = (dtypes[e.dtype] ?? 0) + 1;
    }
    comps[c] = { tensors: h.entries.length, parameters: p };
    tensors += h.entries.length;
    parameters += p;
    bytes += h.fileSize;
  }
  let family = 'unknown';
  let prediction = 'unknown';
  try {
    const u = JSON.parse(readFileSync(join(dir, 'unet', 'config.json'), 'utf8')) as Record<string, unknown>;
    family = u.cross_attention_dim === 1024 ? 'sd2' : u.cross_attention_dim === 2048 ? 'sdxl' : 'sd1';
    const s = JSON.parse(readFileSync(join(dir, 'scheduler', 'scheduler_config.json'), 'utf8')) as Record<string, unknown>;
    prediction = s.prediction_type === 'v_prediction' ? 'v' : 'epsilon';
  } catch {
    messages.push('Could not read unet/config.json or scheduler/scheduler_config.json.');
  }
  return { path: dir, format: 'diffusers-folder', kind: 'checkpoint', family, prediction, tensors, parameters, bytes, dtypes, metadata: {}, messages, components: comps };
}

export function inspectPath(path: string): InspectReport {
  if (!existsSync(path)) throw new Error(`${path}: no such file or folder`);
  if (statSync(path).isDirectory()) return inspectFolder(path);
  const m = magic(path);
  if (m.length >= 8 && m.subarray(1, 4).toString('latin1') === 'PNG') {
    const img = decodePng(readFileSync(path), path);
    return { path, format: 'png', kind: 'image', family: 'n/a', prediction: 'n/a', tensors: 0, parameters: 0, bytes: statSync(path).size, dtypes: {}, metadata: img.text, messages: [`${img.width}×${img.height} image${img.text.parameters ? ' with generation parameters' : ''}.`] };
  }
  if (m.length >= 2 && m[0] === 0x50 && m[1] === 0x4b) return inspectPickle(path); // zip: torch.save
  if (m.length >= 2 && m[0] === 0x80) return inspectPickle(path); // legacy pickle: refused or read safely there
  return inspectSafetensors(path);
}

function human(n: number): string {
  if (n >= 1e9) return (n / 1e9).toFixed(2) + ' B';
  if (n >= 1e6) return (n / 1e6).toFixed(2) + ' M';
  if (n >= 1e3) return (n / 1e3).toFixed(1) + ' k';
  return String(n);
}

function bytesHuman(n: number): string {
  return n >= 2 ** 30 ? (n / 2 ** 30).toFixed(2) + ' GiB' : n >= 2 ** 20 ? (n / 2 ** 20).toFixed(1) + ' MiB' : (n / 1024).toFixed(1) + ' KiB';
}

export function formatInspect(r: InspectReport): string {
  const lines = [
    `${r.path}`,
    `  format      ${r.format}`,
    `  kind        ${r.kind}`,
    `  family      ${r.family}${r.prediction !== 'unknown' && r.prediction !== 'n/a' ? ` (${r.prediction} prediction)` : ''}`,
    `  tensors     ${r.tensors}  (${human(r.parameters)} parameters, ${bytesHuman(r.bytes)})`,
    `  dtypes      ${Object.entries(r.dtypes).map(([d, n]) => `${d}×${n}`).join(', ') || '—'}`,
  ];
  if (r.components) for (const [c, v] of Object.entries(r.components)) lines.push(`  ${c.padEnd(12)}${v.tensors} tensors, ${human(v.parameters)} parameters`);
  if (r.touches) {
    lines.push(`  touches     ${r.touches.unet} UNet module(s), ${r.touches.textEncoder} text-encoder module(s)${r.touches.ranks?.length ? `, rank ${[...new Set(r.touches.ranks)].join('/')}` : ''}${r.touches.locon ? ', conv layers (LoCon)' : ''}`);
    for (const e of r.touches.examples) lines.push(`              ${e}`);
  }
  const meta = Object.entries(r.metadata);
  if (meta.length) {
    lines.push('  metadata');
    for (const [k, v] of meta.slice(0, 40)) lines.push(`    ${k}: ${v.length > 100 ? v.slice(0, 100) + '…' : v}`.replace(/\n/g, ' ⏎ '));
    if (meta.length > 40) lines.push(`    … ${meta.length - 40} more`);
  }
  for (const m of r.messages) lines.push(`  note: ${m}`);
  return lines.join('\n');
}
