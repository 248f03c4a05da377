// Formats benchmark (issue: model files): a 2 GB SD1.5-shaped safetensors (fp16, every key of the
// LDM listing, random values) loaded into tensors, against reading the same file raw, warm
// cache; peak RSS against the file size. Each load runs in its own process so peaks don't mix.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import * as T from '../src/torch/index.ts';
import { saveSafetensors } from '../src/formats/safetensors.ts';
import { type BenchLine, ratio } from './common.ts';

const SHARED = process.env.SDTUNE_SHARED ?? join(import.meta.dirname, '..', '..', 'shared');

function makeFile(path: string): void {
  const listing = JSON.parse(readFileSync(join(SHARED, 'fixtures', 'full_sd15_keys', 'sd15_ldm.json'), 'utf8')) as { keys: Record<string, { shape: number[] }> };
  const g = new T.Generator(0);
  // The writer sizes every tensor before writing the header, so all of them are alive at once (2 GB).
  const entries = new Map<string, T.Tensor>();
  for (const [k, v] of Object.entries(listing.keys)) {
    entries.set(k, T.tidy(() => T.randn(v.shape, { generator: g }).mul(0.02).to('float16')));
  }
  saveSafetensors(path, entries, { format: 'pt' });
  for (const t of entries.values()) t.dispose();
}

function run(path: string, mode: string): { ms: number; peak_rss_mb: number; base_rss_mb: number } {
  const out = execFileSync(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'formats-load.ts'), path, mode], { encoding: 'utf8', env: { ...process.env, SDTUNE_QUIET: '1' } });
  return JSON.parse(out.trim().split('\n').pop()!);
}

export function benchFormats(): BenchLine[] {
  const dir = join(tmpdir(), 'sdtune-bench');
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'sd15-shaped-fp16.safetensors');
  if (!existsSync(path)) makeFile(path);
  const size = statSync(path).size;
  const mb = size / 2 ** 20;
  run(path, 'raw'); // warm the page cache
  const raw = run(path, 'raw');
  const lines: BenchLine[] = [];
  for (const mode of ['mmap', 'read']) {
    const r = run(path, mode);
    lines.push({
      name: `formats.load_sd15_fp16_${mode}`,
      sdtune_ms: r.ms,
      reference_ms: raw.ms,
      ratio: ratio(r.ms, raw.ms),
      speed_vs_raw: ratio(raw.ms, r.ms),
      file_mb: +mb.toFixed(1),
      peak_rss_mb: +r.peak_rss_mb.toFixed(1),
      rss_over_file: +((r.peak_rss_mb - r.base_rss_mb) / mb).toFixed(3),
      reference: 'raw read of the same file, 64 MiB chunks, warm cache',
    });
  }
  return lines;
}
