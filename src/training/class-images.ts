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
  /** One class prompt, or one per class image (cycled): see classPromptsFor. */
  prompt: string | readonly string[];
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
  const prompts = typeof o.prompt === 'string' ? [o.prompt] : o.prompt;
  if (prompts.length === 0) throw new Error('class images: no class prompt to draw them from');
  for (let i = 0; i < missing; i++) {
    // Seeds continue from what is there, so regenerated folders are the same images.
    const n = have.length + i;
    const prompt = prompts[n % prompts.length];
    const [img] = generate(model, { prompt, seed: (o.seed ?? 0) + n, steps: o.steps ?? 20, width: o.width, height: o.height });
    const base = `class-${String(n).padStart(4, '0')}`;
    writePng(join(o.dir, `${base}.png`), img.image, { parameters: img.parameters });
    if (!existsSync(join(o.dir, `${base}.txt`))) writeFileAtomic(join(o.dir, `${base}.txt`), prompt + '\n');
    o.onProgress?.(i + 1, missing);
  }
  return readdirSync(o.dir).filter(isImage).sort().map((f) => join(o.dir, f));
}

/** In a class prompt, the instance picture's caption without the instance token (A1111's DreamBooth extension). */
export const FILEWORDS = '[filewords]';

/**
 * The class prompts of a run. A plain class prompt ("a photo of a heart") is the only one. With
 * [filewords], each instance caption gives one: the caption with the instance token taken out, put
 * where [filewords] stands ("a red sks heart on the left" → "a red heart on the left"), so each class
 * picture is the ordinary counterpart of an instance picture, described as fully. Duplicates are
 * kept once, in the captions' order.
 */
export function classPromptsFor(classPrompt: string, captions: readonly string[], token: string | undefined): string[] {
  if (!classPrompt.includes(FILEWORDS)) return [classPrompt];
  const words = token?.trim().split(/\s+/).filter(Boolean).map((w) => w.toLowerCase()) ?? [];
  const strip = (c: string) => c.split(/\s+/).filter((w) => !words.includes(w.replace(/[,.;:!?]+$/, '').toLowerCase())).join(' ').replace(/\s+([,.;:!?])/g, '$1').trim();
  const out = [...new Set(captions.map((c) => classPrompt.split(FILEWORDS).join(strip(c)).replace(/\s+/g, ' ').trim()).filter((c) => c !== ''))];
  if (out.length === 0) throw new Error(`the class prompt "${classPrompt}" uses ${FILEWORDS}, but the training pictures have no captions to fill it with: add .txt captions, or give a plain class prompt such as "a photo of a heart"`);
  return out;
}
