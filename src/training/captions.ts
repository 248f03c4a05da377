// Captions for training images: deterministic randomness per (seed, epoch, sample), caption
// cleaning and decoding, kohya's tag shuffle / keep_tokens / dropout, and A1111's prompt templates
// with [name] and [filewords] (sd-formats.md §6.4). Split from dataset.ts, which re-exports it.
import { readFileSync, existsSync } from 'node:fs';
import { basename, extname, join } from 'node:path';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import type { Rng } from '../rng.ts';

export class DatasetError extends Error {
  override name = 'DatasetError';
}

// ---- captions --------------------------------------------------------------------------------

/** NFC, no control or zero-width characters, whitespace collapsed; lines joined as tags. */
export function cleanCaption(text: string): string {
  return text
    .normalize('NFC')
    .replace(/[\u200b\ufeff]/g, '')
    // eslint-disable-next-line no-control-regex
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/g, '')
    .split(/\r\n|\r|\n/)
    .map((l) => l.replace(/\s+/g, ' ').replace(/^[\s,]+|[\s,]+$/g, ''))
    .filter((l) => l !== '')
    .join(', ');
}

/** Text from bytes: UTF-8 (with or without BOM), UTF-16 with BOM, else Windows-1252 (with a note). */
export function decodeText(buf: Buffer): { text: string; note: string | null } {
  if (buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf) return { text: buf.toString('utf8', 3), note: null };
  if (buf[0] === 0xff && buf[1] === 0xfe) return { text: buf.toString('utf16le', 2), note: null };
  if (buf[0] === 0xfe && buf[1] === 0xff) return { text: Buffer.from(buf.subarray(2, 2 + ((buf.length - 2) & ~1))).swap16().toString('utf16le'), note: null };
  try {
    return { text: new TextDecoder('utf-8', { fatal: true }).decode(buf), note: null };
  } catch {
    return { text: new TextDecoder('windows-1252').decode(buf), note: 'is not UTF-8 text; it was read as Windows-1252 (save it as UTF-8 to be sure accents come out right)' };
  }
}

/** A caption file's text, cleaned (cleanCaption). */
export function decodeCaption(buf: Buffer): { text: string; note: string | null } {
  const { text, note } = decodeText(buf);
  return { text: cleanCaption(text), note };
}

/** A1111's caption for an image without a .txt: the file stem without leading digits and dashes. */
export function captionFromFileName(file: string): string {
  const stem = basename(file, extname(file));
  return cleanCaption(stem.replace(/^[-\d]+\s*/, ''));
}

/** How instance captions vary per sample. Class images always keep their caption (prior preservation). */
export interface CaptionOptions {
  /** Template lines (loadTemplate); one is picked per sample. Without, the caption is used as is. */
  template?: readonly string[];
  /** What [name] becomes: the embedding or hypernetwork name. */
  name?: string;
  /** Shuffle the comma-separated tags after the first keepTokens (kohya shuffle_caption). */
  shuffle?: boolean;
  /** Tags kept in place at the front (kohya keep_tokens). */
  keepTokens?: number;
  /** Probability of dropping each shuffled tag (kohya caption_tag_dropout_rate). */
  tagDropout?: number;
  /** Probability of training on an empty caption (kohya caption_dropout_rate). */
  captionDropout?: number;
  /** Every Nth epoch (1-based, as kohya counts) trains on empty captions. */
  captionDropoutEveryNEpochs?: number;
  /** Tag separator; default ','. Tags are re-joined with ', '. */
  separator?: string;
}

/** kohya's tag step: keep the first keepTokens, shuffle the rest, drop some. */
export function processTags(caption: string, o: CaptionOptions, rng: Rng): string {
  const keep = o.keepTokens ?? 0;
  const drop = o.tagDropout ?? 0;
  if (!o.shuffle && drop <= 0) return caption;
  const tags = caption.split(o.separator ?? ',').map((t) => t.trim()).filter((t) => t !== '');
  const fixed = tags.slice(0, keep);
  let flex = tags.slice(keep);
  if (o.shuffle) rng.shuffle(flex);
  if (drop > 0) flex = flex.filter(() => rng.next() >= drop);
  return [...fixed, ...flex].join(', ');
}

/** Fills [name] and [filewords]; tidies the commas an empty [filewords] leaves behind. */
export function fillTemplate(line: string, name: string, filewords: string): string {
  const s = line.replaceAll('[name]', name).replaceAll('[filewords]', filewords);
  return s
    .split(',')
    .map((p) => p.replace(/\s+/g, ' ').trim())
    .filter((p) => p !== '')
    .join(', ');
}

/**
 * The caption a sample trains on, in kohya's order: the dropout decision, then the tag step; a
 * template (A1111) then wraps the result as [filewords]. epoch is 0-based.
 */
export function buildCaption(caption: string, o: CaptionOptions, rng: Rng, epoch = 0): string {
  const line = o.template && o.template.length > 0 ? rng.pick(o.template) : null;
  const every = o.captionDropoutEveryNEpochs ?? 0;
  const dropped = ((o.captionDropout ?? 0) > 0 && rng.next() < o.captionDropout!) || (every > 0 && (epoch + 1) % every === 0);
  if (dropped) return '';
  const tags = processTags(caption, o, rng);
  return line === null ? tags : fillTemplate(line, o.name ?? '', tags);
}

export const TEMPLATE_NAMES = ['none', 'filewords', 'style', 'style_filewords', 'subject', 'subject_filewords', 'hypernetwork'] as const;
export type TemplateName = (typeof TEMPLATE_NAMES)[number];
const TEMPLATE_DIR = fileURLToPath(new URL('./templates/', import.meta.url));

/** Template lines from a shipped name (TEMPLATE_NAMES) or a .txt file of one template per line. */
export function loadTemplate(nameOrFile: string): string[] {
  const file = (TEMPLATE_NAMES as readonly string[]).includes(nameOrFile) ? join(TEMPLATE_DIR, nameOrFile + '.txt') : nameOrFile;
  if (!existsSync(file)) {
    throw new DatasetError(`there is no template "${nameOrFile}": use one of ${TEMPLATE_NAMES.join(', ')}, or the path of a .txt file with one template per line`);
  }
  const lines = decodeText(readFileSync(file)).text.split(/\r\n|\r|\n/).map((l) => l.normalize('NFC').trim()).filter((l) => l !== '');
  if (lines.length === 0) throw new DatasetError(`the template file ${file} is empty: write one template per line, using [name] and [filewords]`);
  return lines;
}

