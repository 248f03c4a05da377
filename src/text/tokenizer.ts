// The CLIP byte-level BPE tokenizer used by every Stable Diffusion text encoder (sd-formats.md §9).
//
// Reference behaviour, chosen deliberately (§9.2 DISAGREEMENT):
//   - 'hf' (default): transformers' slow CLIPTokenizer with ftfy installed — what A1111 (SD1),
//     diffusers, kohya and ComfyUI run. Text is split on the literal special tokens first, then each
//     piece is cleaned with ftfy.fix_text, whitespace is collapsed, and it is lower-cased.
//     This is the `hf_slow_ftfy` column of fixtures/tokenizer/test_vectors.json.
//   - 'openai': openai/CLIP's SimpleTokenizer (also open_clip's, so A1111's SD2 path): ftfy, then
//     html.unescape twice. It differs from 'hf' only for text that holds both a '<' and an HTML
//     entity (ftfy leaves entities alone in text that looks like HTML; html.unescape does not),
//     as in the fixture case `html_with_tags`.
// See ftfy.ts for how closely the ftfy step is reproduced.
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { fixText, htmlUnescape, pyStrip } from './ftfy.ts';

export const BOS = 49406;
export const EOS = 49407;
/** Id of ',</w>' (§9.1): A1111's chunker breaks lines after it (§8.6). */
export const COMMA = 267;
export const VOCAB_SIZE = 49408;
/** Content tokens in one 77-token frame (BOS + 75 + EOS). */
export const CHUNK_LENGTH = 75;

const START_TOKEN = '<|startoftext|>';
const END_TOKEN = '<|endoftext|>';
/** Merges used from the vocabulary file: lines 1 … 48894 (§9.1: 49152 − 256 − 2). */
const N_MERGES = 49152 - 256 - 2;

export type Normalization = 'hf' | 'openai';
/** §9.3: SD1 and SDXL's CLIP-L pad with EOS (49407); SD2 and SDXL's bigG (OpenCLIP) pad with 0. */
export type Padding = 'sd1' | 'sd2';

export interface FrameOptions {
  /** Frame length, BOS and EOS included (77 for every SD text encoder). */
  maxLength?: number;
  padding?: Padding;
  /** Overrides the pad id implied by `padding`. */
  padId?: number;
}

export interface Framed {
  inputIds: number[];
  /** 1 for BOS, content and EOS; 0 for padding (SD itself passes no mask, §9.3). */
  attentionMask: number[];
}

/** Python `regex` whitespace (\s, the White_Space property): JS \s without U+FEFF, plus U+0085. */
const WS = '\\t\\n\\v\\f\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const WS_RUN_RE = new RegExp(`[${WS}]+`, 'g');

/** A case-insensitive literal as Python `regex` IGNORECASE sees it (simple case folding: ſ is s). */
function ci(word: string): string {
  return [...word].map((c) => (c === 's' ? '[sSſ]' : /[a-z]/.test(c) ? `[${c}${c.toUpperCase()}]` : c)).join('');
}

/**
 * §9.2 step 2, the pre-tokenizer: the Python `regex` pattern with IGNORECASE, written with the same
 * Unicode properties. Every digit is its own piece ([\p{N}]). \s is spelled out so that it means
 * what Python's means (see WS). JavaScript's `i` flag is not used: under it \p{L} also matches
 * U+0345 (which case-folds to ι), a character that Python's classes match nowhere. Checked against
 * Python `regex` on every code point assigned in Unicode 14: no differences.
 */
const PIECE_RE = new RegExp(
  [
    `<\\|${ci('startoftext')}\\|>`,
    `<\\|${ci('endoftext')}\\|>`,
    ...['s', 't', 're', 've', 'm', 'll', 'd'].map((c) => `'${ci(c)}`),
    '\\p{L}+',
    '\\p{N}',
    `[^${WS}\\p{L}\\p{N}\\u0345]+`,
  ].join('|'),
  'gu',
);

/** `whitespace_clean`: runs of whitespace become one space, then Python's strip(). */
function whitespaceClean(text: string): string {
  return pyStrip(text.replace(WS_RUN_RE, ' '));
}

/**
 * openai's bytes_to_unicode (§9.1): printable bytes keep their code point, the other 68 bytes map
 * to U+0100…, in increasing byte order. Returns the 256 characters in vocabulary order.
 */
function byteCharsInVocabOrder(): { order: number[]; byteToChar: string[] } {
  const order: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) order.push(b);
  for (let b = 0xa1; b <= 0xac; b++) order.push(b);
  for (let b = 0xae; b <= 0xff; b++) order.push(b);
  const byteToChar = new Array<string>(256);
  for (const b of order) byteToChar[b] = String.fromCharCode(b);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (byteToChar[b] === undefined) {
      byteToChar[b] = String.fromCharCode(256 + n++);
      order.push(b);
    }
  }
  return { order, byteToChar };
}

const BYTES = byteCharsInVocabOrder();
const CHAR_TO_BYTE = new Map<string, number>(BYTES.byteToChar.map((c, b) => [c, b]));
const UTF8 = new TextEncoder();
const UTF8_LENIENT = new TextDecoder('utf-8', { fatal: false });

/** The tables a tokenizer needs; shared between normalisation modes. */
interface Tables {
  encoder: Map<string, number>;
  decoder: string[];
  /** "left right" → merge rank. */
  ranks: Map<string, number>;
  /** piece (byte characters) → its BPE symbols. */
  cache: Map<string, string[]>;
}

export class ClipTokenizer {
  private static defaults = new Map<Normalization, ClipTokenizer>();
  private static defaultTables: Tables | undefined;

  private constructor(
    private readonly tables: Tables,
    readonly normalization: Normalization,
  ) {}

  /**
   * The tokenizer over the vocabulary shipped in src/text/vocab (openai's bpe_simple_vocab_16e6,
   * MIT licence beside it). Loaded once per process; the two modes share the tables and BPE cache.
   */
  static default(normalization: Normalization = 'hf'): ClipTokenizer {
    let tok = ClipTokenizer.defaults.get(normalization);
    if (tok === undefined) {
      if (ClipTokenizer.defaultTables === undefined) {
        const path = fileURLToPath(new URL('./vocab/bpe_simple_vocab_16e6.txt.gz', import.meta.url));
        ClipTokenizer.defaultTables = ClipTokenizer.fromBpeGz(path).tables;
      }
      tok = new ClipTokenizer(ClipTokenizer.defaultTables, normalization);
      ClipTokenizer.defaults.set(normalization, tok);
    }
    return tok;
  }

  /** openai's gzipped merges file (a path or its bytes); the vocabulary is derived as in §9.1. */
  static fromBpeGz(source: string | URL | Uint8Array, normalization: Normalization = 'hf'): ClipTokenizer {
    const what = source instanceof Uint8Array ? 'the BPE vocabulary' : displayPath(source);
    let text: string;
    try {
      text = gunzipSync(source instanceof Uint8Array ? source : readFileSync(source)).toString('utf8');
    } catch (e) {
      throw new Error(`${what} is not a readable gzip file (${(e as Error).message}); expected openai's bpe_simple_vocab_16e6.txt.gz`);
    }
    const lines = text.split('\n').slice(1, N_MERGES + 1);
    // A truncated file ends early (often in an empty last line): say so, rather than blame a line.
    while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
    if (lines.length !== N_MERGES) {
      throw new Error(`${what} holds ${lines.length} merges; a CLIP vocabulary needs ${N_MERGES} (is the file truncated?)`);
    }
    const merges = lines.map((l, i) => splitMerge(l, i + 2, what));
    const vocab: string[] = BYTES.order.map((b) => BYTES.byteToChar[b]);
    for (const b of BYTES.order) vocab.push(BYTES.byteToChar[b] + '</w>');
    for (const [l, r] of merges) vocab.push(l + r);
    vocab.push(START_TOKEN, END_TOKEN);
    return new ClipTokenizer(makeTables(new Map(vocab.map((t, i) => [t, i])), merges), normalization);
  }

  /**
   * Hugging Face's vocab.json + merges.txt (the same data, §9.1). The two files are checked against
   * each other, so a truncated or mismatched pair fails here, naming the file, instead of giving
   * wrong ids later.
   */
  static fromVocabJson(vocabPath: string | URL, mergesPath: string | URL, normalization: Normalization = 'hf'): ClipTokenizer {
    const vocabName = displayPath(vocabPath);
    const mergesName = displayPath(mergesPath);
    let vocab: unknown;
    try {
      vocab = JSON.parse(readFileSync(vocabPath, 'utf8'));
    } catch (e) {
      throw new Error(`${vocabName} is not a readable vocab.json (${(e as Error).message}); expected the tokenizer's token → id map`);
    }
    if (typeof vocab !== 'object' || vocab === null || Array.isArray(vocab)) {
      throw new Error(`${vocabName} is not a CLIP vocab.json: expected a JSON object of token → id`);
    }
    const encoder = new Map<string, number>();
    for (const [tok, id] of Object.entries(vocab)) {
      if (!Number.isInteger(id) || (id as number) < 0) {
        throw new Error(`${vocabName} is not a CLIP vocab.json: the id of ${JSON.stringify(tok)} is ${JSON.stringify(id)}, not a non-negative integer`);
      }
      encoder.set(tok, id as number);
    }
    for (const t of [START_TOKEN, END_TOKEN]) {
      if (!encoder.has(t)) throw new Error(`${vocabName} has no ${t}; it is not a CLIP vocabulary`);
    }
    let text: string;
    try {
      text = readFileSync(mergesPath, 'utf8');
    } catch (e) {
      throw new Error(`${mergesName} is not a readable merges.txt (${(e as Error).message})`);
    }
    // As transformers does: skip the "#version" line and keep the first 48894 merges.
    const lines = text.trim().split('\n').slice(1, N_MERGES + 1);
    if (lines.length !== N_MERGES) {
      throw new Error(`${mergesName} holds ${lines.length} merges; a CLIP merges.txt has ${N_MERGES} (is the file truncated?)`);
    }
    const merges = lines.map((l, i) => splitMerge(l, i + 2, mergesName));
    // Every merge result must be a token, or encode() would meet a symbol it cannot map.
    merges.forEach(([l, r], i) => {
      if (!encoder.has(l + r)) {
        throw new Error(`${mergesName}, line ${i + 2}: the merge "${l} ${r}" makes "${l + r}", which ${vocabName} lacks; the two files do not belong together`);
      }
    });
    return new ClipTokenizer(makeTables(encoder, merges), normalization);
  }

  /** The same vocabulary and cache with another normalisation. */
  withNormalization(normalization: Normalization): ClipTokenizer {
    return normalization === this.normalization ? this : new ClipTokenizer(this.tables, normalization);
  }

  get vocabSize(): number {
    return this.tables.decoder.length;
  }

  tokenToId(token: string): number | undefined {
    return this.tables.encoder.get(token);
  }

  idToToken(id: number): string | undefined {
    return this.tables.decoder[id];
  }

  /** §9.2 step 1 for one run of text without special tokens. */
  private clean(text: string): string {
    if (this.normalization === 'openai') {
      return whitespaceClean(pyStrip(htmlUnescape(htmlUnescape(fixText(text))))).toLowerCase();
    }
    return whitespaceClean(fixText(text)).toLowerCase();
  }

  /**
   * The cleaned text in runs: the literal special tokens (which transformers splits off before
   * cleaning anything) and the text between them. The openai tokenizer cleans the whole string.
   */
  private runs(text: string): string[] {
    if (this.normalization === 'openai') return [this.clean(text)];
    const out: string[] = [];
    for (const part of text.split(/(<\|startoftext\|>|<\|endoftext\|>)/)) {
      if (part === START_TOKEN || part === END_TOKEN) out.push(part);
      else if (part !== '') out.push(this.clean(part));
    }
    return out;
  }

  /** Text as the tokenizer sees it after §9.2 step 1 (the fixtures' `normalized_text`). */
  normalize(text: string): string {
    return this.runs(text).join('');
  }

  /** §9.2 step 2: the regex pieces, before byte mapping and BPE. */
  pieces(text: string): string[] {
    const out: string[] = [];
    for (const run of this.runs(text)) for (const m of run.matchAll(PIECE_RE)) out.push(m[0]);
    return out;
  }

  /** BPE symbols ('photo</w>', 'ðŁĳ', …) for the text, without BOS/EOS. */
  tokenize(text: string): string[] {
    const out: string[] = [];
    for (const piece of this.pieces(text)) {
      for (const sym of this.bpe(piece)) out.push(sym);
    }
    return out;
  }

  /** Token ids without BOS/EOS, untruncated (openai `encode`; HF with add_special_tokens=False). */
  encode(text: string): number[] {
    const { encoder } = this.tables;
    const ids: number[] = [];
    for (const sym of this.tokenize(text)) {
      const id = encoder.get(sym);
      // Every byte character and every merge is in the vocabulary (§9.1), so this cannot miss
      // with a genuine CLIP vocabulary.
      if (id === undefined) throw new Error(`BPE produced '${sym}', which the vocabulary lacks; the vocabulary files do not match`);
      ids.push(id);
    }
    return ids;
  }

  /** `[BOS] + encode(text) + [EOS]`, untruncated (HF `input_ids`). */
  encodeWithSpecial(text: string): number[] {
    return [BOS, ...this.encode(text), EOS];
  }

  /**
   * openai's decode: byte characters back to bytes, UTF-8 with replacement, and '</w>' → ' '.
   * Unknown ids are skipped.
   */
  decode(ids: readonly number[]): string {
    const { decoder } = this.tables;
    let s = '';
    for (const id of ids) s += decoder[id] ?? '';
    const bytes: number[] = [];
    for (const ch of s) {
      const b = CHAR_TO_BYTE.get(ch);
      if (b !== undefined) bytes.push(b);
    }
    return UTF8_LENIENT.decode(new Uint8Array(bytes)).replaceAll('</w>', ' ');
  }

  /** §9.3 framing of content ids; see the exported `frame`. */
  frame(ids: readonly number[], opts: FrameOptions = {}): Framed {
    return frame(ids, opts);
  }

  /** Convenience: `frame(encode(text))`, which is how diffusers and kohya tokenize a prompt. */
  encodeFramed(text: string, opts: FrameOptions = {}): Framed {
    return frame(this.encode(text), opts);
  }

  /**
   * §9.2 step 4 (openai `bpe`): start from the piece's byte characters with '</w>' on the last,
   * then repeatedly merge every occurrence of the lowest-ranked adjacent pair. Cached per piece.
   */
  private bpe(piece: string): string[] {
    const { cache, ranks } = this.tables;
    const hit = cache.get(piece);
    if (hit !== undefined) return hit;
    let word: string[] = [];
    for (const b of UTF8.encode(piece)) word.push(BYTES.byteToChar[b]);
    word[word.length - 1] += '</w>';
    while (word.length > 1) {
      let best = Infinity;
      let first = '';
      let second = '';
      for (let i = 0; i + 1 < word.length; i++) {
        const r = ranks.get(word[i] + ' ' + word[i + 1]);
        if (r !== undefined && r < best) {
          best = r;
          first = word[i];
          second = word[i + 1];
        }
      }
      if (best === Infinity) break;
      const merged: string[] = [];
      for (let i = 0; i < word.length; ) {
        if (i + 1 < word.length && word[i] === first && word[i + 1] === second) {
          merged.push(first + second);
          i += 2;
        } else {
          merged.push(word[i++]);
        }
      }
      word = merged;
    }
    // Keep the cache bounded: an adversarial stream of distinct long words must not grow it forever.
    if (cache.size > 200_000) cache.clear();
    cache.set(piece, word);
    return word;
  }
}

/** A path for a message: file URLs as paths. */
function displayPath(p: string | URL): string {
  return p instanceof URL && p.protocol === 'file:' ? fileURLToPath(p) : String(p);
}

function splitMerge(line: string, lineNo: number, file: string): [string, string] {
  const parts = line.split(' ');
  if (parts.length !== 2 || parts[0] === '' || parts[1] === '') {
    throw new Error(`${file}, line ${lineNo}: expected a merge "left right", got ${JSON.stringify(line.slice(0, 60))}`);
  }
  return [parts[0], parts[1]];
}

function makeTables(encoder: Map<string, number>, merges: [string, string][]): Tables {
  const decoder: string[] = [];
  for (const [tok, id] of encoder) decoder[id] = tok;
  const ranks = new Map<string, number>();
  merges.forEach(([l, r], i) => {
    if (!ranks.has(l + ' ' + r)) ranks.set(l + ' ' + r, i);
  });
  // The special tokens are pre-seeded in the BPE cache, as in both references, so an inline
  // "<|endoftext|>" piece maps straight to its id.
  const cache = new Map<string, string[]>([
    [START_TOKEN, [START_TOKEN]],
    [END_TOKEN, [END_TOKEN]],
  ]);
  return { encoder, decoder, ranks, cache };
}

/**
 * §9.3: `[BOS] + ids[:maxLength-2] + [EOS]`, padded to maxLength. Truncation keeps the first
 * content tokens, so the frame always ends its content with EOS. SD1 pads with EOS (49407),
 * SD2 with 0; the pad goes after the frame's EOS (open_clip `tokenize`).
 */
export function frame(ids: readonly number[], opts: FrameOptions = {}): Framed {
  const maxLength = opts.maxLength ?? 77;
  if (!Number.isInteger(maxLength) || maxLength < 2) {
    throw new Error(`frame length must be an integer of at least 2 (room for BOS and EOS), got ${maxLength}`);
  }
  const padId = opts.padId ?? ((opts.padding ?? 'sd1') === 'sd2' ? 0 : EOS);
  const content = ids.slice(0, maxLength - 2);
  const inputIds = [BOS, ...content, EOS];
  const attentionMask = inputIds.map(() => 1);
  while (inputIds.length < maxLength) {
    inputIds.push(padId);
    attentionMask.push(0);
  }
  return { inputIds, attentionMask };
}
