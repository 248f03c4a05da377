// Reads A1111's "parameters" text (as stored in every generated PNG) back into form values:
//   a prompt (one or more lines)
//   Negative prompt: … (optional, may span lines)
//   Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 32x32, Model: toy, LoRA: "style: 0.8"
// The same rules as A1111's parse_generation_parameters, so files from A1111 read the same way.
import type { GenerateRequest } from '../../src/server/api-types.ts';

export type Sampler = NonNullable<GenerateRequest['sampler']>;

export const SAMPLERS: readonly { value: Sampler; label: string }[] = [
  { value: 'ddim', label: 'DDIM' },
  { value: 'euler', label: 'Euler' },
  { value: 'euler_a', label: 'Euler a' },
  { value: 'dpmpp_2m', label: 'DPM++ 2M' },
];

export interface AdapterTag {
  kind: 'lora' | 'hypernetwork';
  name: string;
  weight: number;
}

export interface ParsedParameters {
  prompt: string;
  negative: string;
  /** The last line's "Key: value" pairs, keys as written. */
  settings: Record<string, string>;
  steps?: number;
  sampler?: Sampler;
  karras?: boolean;
  cfg?: number;
  seed?: number;
  width?: number;
  height?: number;
  model?: string;
  /** Adapters used: <lora:name:w> / <hypernet:name:w> tags (cut from `prompt`) and the LoRA / Hypernet fields. */
  tags: AdapterTag[];
}

const PARAM = /\s*(\w[\w \-/+]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)/g;
const TAG = /<(lora|hypernet):([^:>]+)(?::([^:>]*))?(?::[^>]*)?>/gi;

function settingsOf(line: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of line.matchAll(PARAM)) {
    let v = m[2].trim();
    if (v.startsWith('"') && v.endsWith('"')) {
      try {
        v = JSON.parse(v) as string;
      } catch {
        v = v.slice(1, -1);
      }
    }
    out[m[1].trim()] = v;
  }
  return out;
}

function samplerOf(label: string): { sampler?: Sampler; karras: boolean } {
  const karras = /\bkarras\b/i.test(label);
  const base = label.replace(/\s*karras\s*/i, '').trim().toLowerCase();
  const hit = SAMPLERS.find((s) => s.label.toLowerCase() === base || s.value === base);
  return { sampler: hit?.value, karras };
}

const num = (v: string | undefined): number | undefined => {
  if (v === undefined || v.trim() === '') return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? n : undefined;
};

export function parseParameters(text: string): ParsedParameters {
  const lines = text.trim().split(/\r?\n/);
  let last = lines.pop() ?? '';
  // A last line with fewer than three "Key: value" pairs is part of the prompt, as in A1111.
  if ([...last.matchAll(PARAM)].length < 3) {
    lines.push(last);
    last = '';
  }
  let prompt = '';
  let negative = '';
  let inNegative = false;
  for (let line of lines) {
    line = line.trim();
    if (line.startsWith('Negative prompt:')) {
      inNegative = true;
      line = line.slice('Negative prompt:'.length).trim();
    }
    if (inNegative) negative += (negative ? '\n' : '') + line;
    else prompt += (prompt ? '\n' : '') + line;
  }
  const tags: AdapterTag[] = [];
  prompt = prompt
    .replace(TAG, (_m, kind: string, name: string, weight: string | undefined) => {
      const w = num(weight);
      tags.push({ kind: kind.toLowerCase() === 'lora' ? 'lora' : 'hypernetwork', name: name.trim(), weight: w ?? 1 });
      return '';
    })
    .replace(/[ \t]{2,}/g, ' ')
    .replace(/\s+,/g, ',')
    .trim()
    .replace(/,$/, '')
    .trim();

  const settings = settingsOf(last);
  // sdtune (like A1111's extra-network fields) lists the adapters it applied as
  // LoRA: "name: weight, name2: weight" and Hypernet: "name: weight".
  for (const [key, kind] of [['LoRA', 'lora'], ['Hypernet', 'hypernetwork']] as const) {
    for (const part of (settings[key] ?? '').split(',')) {
      const m = /^\s*(.+?)\s*:\s*([-+\d.eE]+)\s*$/.exec(part);
      if (m && !tags.some((t) => t.kind === kind && t.name === m[1])) tags.push({ kind, name: m[1], weight: num(m[2]) ?? 1 });
    }
  }
  const out: ParsedParameters = { prompt, negative, settings, tags };
  out.steps = num(settings['Steps']);
  out.cfg = num(settings['CFG scale']);
  out.seed = num(settings['Seed']);
  if (settings['Sampler']) {
    const s = samplerOf(settings['Sampler']);
    out.sampler = s.sampler;
    out.karras = s.karras || /karras/i.test(settings['Schedule type'] ?? '');
  }
  const size = /^(\d+)\s*x\s*(\d+)$/i.exec(settings['Size'] ?? '');
  if (size) {
    out.width = Number(size[1]);
    out.height = Number(size[2]);
  }
  if (settings['Model']) out.model = settings['Model'];
  return out;
}
