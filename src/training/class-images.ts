// DreamBooth's class images (§8.2): pictures of the class ("a photo of a heart") made by the
// frozen base model before training, so the prior-preservation loss can hold the class in place.
// They are cached in a folder: a second run (or a resumed one) generates only what is missing.
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { writeFileAtomic } from '../formats/atomic.ts';
import { join } from 'node:path';
import { writePng } from '../formats/png.ts';
import type { StableDiffusion } from '../models/load.ts';
import { generate } from '../sampling/pipeline.ts';

export interface ClassImageOptions {
  prompt: string;
  count: number;
  dir: string;
  seed?: number;
  steps?: number;
  width?: number;
  height?: number;
  onProgress?: (done: number, total: number) => void;
}

/** Makes sure `dir` holds `count` class images; returns every image file of the folder, sorted. */
export function ensureClassImages(model: StableDiffusion, o: ClassImageOptions): string[] {
  mkdirSync(o.dir, { recursive: true });
  const isImage = (f: string) => /\.(png|jpe?g|webp)$/i.test(f) && !f.startsWith('.');
  const have = readdirSync(o.dir).filter(isImage);
  const missing = Math.max(0, o.count - have.length);
  for (let i = 0; i < missing; i++) {
    // Seeds continue from what is there, so regenerated folders are the same images.
    const n = have.length + i;
    const [img] = generate(model, { prompt: o.prompt, seed: (o.seed ?? 0) + n, steps: o.steps ?? 20, width: o.width, height: o.height });
    const base = `class-${String(n).padStart(4, '0')}`;
    writePng(join(o.dir, `${base}.png`), img.image, { parameters: img.parameters });
    if (!existsSync(join(o.dir, `${base}.txt`))) writeFileAtomic(join(o.dir, `${base}.txt`), o.prompt + '\n');
    o.onProgress?.(i + 1, missing);
  }
  return readdirSync(o.dir).filter(isImage).sort().map((f) => join(o.dir, f));
}
