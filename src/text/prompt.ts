// AUTOMATIC1111 prompt syntax, as A1111 v1.8 processes it (sd-formats.md §8.4–§8.6, §6.2):
//   1. extra networks `<lora:name:w>` are cut out            → parseExtraNetworks
//   2. the prompt is split on AND into weighted sub-prompts  → splitAnd
//   3. prompt editing / alternation per sampling step        → promptSchedule, textAtStep
//   4. emphasis and BREAK                                    → parsePromptAttention
//   5. tokenization, textual-inversion lookup, 75-token chunks → chunkPrompt, countTokens
// Each function reproduces the named A1111 function (modules/extra_networks.py, prompt_parser.py,
// sd_hijack_clip.py, textual_inversion.py, the Lora extension); where this file deliberately
// differs, the comment says so. Python's regex semantics are kept: `\s` is str.isspace, `\w` and
// `\b` are Unicode-aware, `\d` is any decimal digit.
import { pyStrip } from './ftfy.ts';
import { BOS, CHUNK_LENGTH, COMMA, EOS, ClipTokenizer, type Padding } from './tokenizer.ts';

/** A prompt that A1111 itself would refuse (it raises); the message names the offending part. */
export class PromptError extends Error {
  override name = 'PromptError';
}

/** Python `re` whitespace for str patterns (str.isspace). */
const S = '[\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]';
/** Python `\w` for str patterns. */
const W = '[\\p{L}\\p{N}_]';

/** Value of a Unicode decimal digit (Nd digits come in complete runs 0…9, so count back to the run start). */
function digitValue(ch: string): number {
  const cp = ch.codePointAt(0)!;
  let start = cp;
  while (start > 0 && /\p{Nd}/u.test(String.fromCodePoint(start - 1))) start--;
  return (cp - start) % 10;
}

/** Python `float(s)`: surrounding whitespace, '_' between digits, inf/nan, any decimal digits. null if invalid. */
export function pyFloat(s: string): number | null {
  const t = pyStrip(s).replace(/\p{Nd}/gu, (d) => String(digitValue(d)));
  if (/^[+-]?(inf|infinity)$/i.test(t)) return t.startsWith('-') ? -Infinity : Infinity;
  if (/^[+-]?nan$/i.test(t)) return NaN;
  if (!/^[+-]?(?:\d(?:_?\d)*(?:\.(?:\d(?:_?\d)*)?)?|\.\d(?:_?\d)*)(?:[eE][+-]?\d(?:_?\d)*)?$/.test(t)) return null;
  return Number(t.replaceAll('_', ''));
}

function pyInt(s: string): number | null {
  const t = pyStrip(s).replace(/\p{Nd}/gu, (d) => String(digitValue(d)));
  return /^[+-]?\d(?:_?\d)*$/.test(t) ? Number(t.replaceAll('_', '')) : null;
}

// ---------------------------------------------------------------------------------------------
// 1. Extra networks (§8.4 step 1; modules/extra_networks.py `parse_prompt`, ExtraNetworkParams)

export interface ExtraNetworkCall {
  /** The tag's network type: 'lora', 'lyco', 'hypernet', or anything else A1111 would look up. */
  kind: string;
  /** The ':'-separated arguments as written. */
  items: string[];
  /** Items without '=' (or with more than one). */
  positional: string[];
  /** `key=value` items. */
  named: Record<string, string>;
}

export interface LoraCall {
  name: string;
  /** Text-encoder multiplier (`<lora:name:te>`; `te=` overrides; default 1). */
  te: number;
  /** UNet multiplier (third item, `unet=`; defaults to te). */
  unet: number;
  /** Dynamic rank (fourth item, `dyn=`), if given. */
  dyn?: number;
}

export interface HypernetCall {
  name: string;
  multiplier: number;
}

export interface ExtraNetworks {
  /** The prompt with every tag removed (nothing else is touched: spaces around a tag remain). */
  prompt: string;
  calls: ExtraNetworkCall[];
  /** `<lora:…>` and `<lyco:…>` tags, read as the Lora extension reads them. */
  loras: LoraCall[];
  hypernets: HypernetCall[];
}

const EXTRA_NET_RE = new RegExp(`<(${W}+):([^>]+)>`, 'gu');

/**
 * Cuts out `<kind:arg:arg…>` tags without reading their arguments (A1111 `extra_networks.parse_prompt`,
 * which never fails: the token counter relies on that).
 */
export function cutExtraNetworks(prompt: string): { prompt: string; calls: ExtraNetworkCall[] } {
  const calls: ExtraNetworkCall[] = [];
  const stripped = prompt.replace(EXTRA_NET_RE, (_m, kind: string, args: string) => {
    const items = args.split(':');
    const positional: string[] = [];
    const named: Record<string, string> = {};
    for (const item of items) {
      const parts = item.split('=');
      if (parts.length === 2) named[parts[0]] = parts[1];
      else positional.push(item);
    }
    calls.push({ kind, items, positional, named });
    return '';
  });
  return { prompt: stripped, calls };
}

/**
 * Cuts out `<kind:arg:arg…>` tags and reads LoRA and hypernetwork arguments. Multipliers are read
 * with Python's float() rules; a tag that A1111 would fail on when it activates the network (no
 * name, a weight that is not a number) raises PromptError.
 */
export function parseExtraNetworks(prompt: string): ExtraNetworks {
  const { prompt: stripped, calls } = cutExtraNetworks(prompt);
  const loras: LoraCall[] = [];
  const hypernets: HypernetCall[] = [];
  for (const call of calls) {
    const tag = `<${call.kind}:${call.items.join(':')}>`;
    const num = (s: string, what: string, parse: (s: string) => number | null): number => {
      const v = parse(s);
      if (v === null) throw new PromptError(`${tag}: the ${what} ${JSON.stringify(s)} is not a number`);
      return v;
    };
    if (call.kind === 'lora' || call.kind === 'lyco') {
      const p = call.positional;
      if (p.length === 0) throw new PromptError(`${tag}: a LoRA tag needs a name first, as in <lora:name:0.8>`);
      let te = p.length > 1 ? num(p[1], 'text-encoder weight', pyFloat) : 1;
      if ('te' in call.named) te = num(call.named.te, 'text-encoder weight', pyFloat);
      let unet = p.length > 2 ? num(p[2], 'UNet weight', pyFloat) : te;
      if ('unet' in call.named) unet = num(call.named.unet, 'UNet weight', pyFloat);
      let dyn = p.length > 3 ? num(p[3], 'dynamic rank', pyInt) : undefined;
      if ('dyn' in call.named) dyn = num(call.named.dyn, 'dynamic rank', pyInt);
      loras.push(dyn === undefined ? { name: p[0], te, unet } : { name: p[0], te, unet, dyn });
    } else if (call.kind === 'hypernet') {
      const multiplier = call.items.length > 1 ? num(call.items[1], 'multiplier', pyFloat) : 1;
      hypernets.push({ name: call.items[0], multiplier });
    }
  }
  return { prompt: stripped, calls, loras, hypernets };
}

// ---------------------------------------------------------------------------------------------
// 2. Composable prompts (§8.4 step 2; prompt_parser.get_multicond_prompt_list)

const AND_RE = new RegExp(`(?<!${W})AND(?!${W})`, 'u');
const WEIGHT_RE = new RegExp(`^([\\s\\S]*?)(?:${S}*:${S}*([-+]?(?:\\p{Nd}+\\.?|\\p{Nd}*\\.\\p{Nd}+)))?${S}*$`, 'u');

/** Splits on the word AND; a part may end in `:weight` (default 1). The text keeps its spaces. */
export function splitAnd(prompt: string): { text: string; weight: number }[] {
  return prompt.split(AND_RE).map((part) => {
    const m = WEIGHT_RE.exec(part);
    if (m === null) return { text: part, weight: 1 };
    return { text: m[1], weight: m[2] === undefined ? 1 : pyFloat(m[2])! };
  });
}

// ---------------------------------------------------------------------------------------------
// 3. Prompt editing and alternation (§8.4 step 3; prompt_parser.get_learned_conditioning_prompt_schedules)
//
// A1111 parses with a lark Earley grammar:
//   start: (prompt | /[][():]/)*            — stray brackets and colons are allowed at the top level
//   prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
//   emphasized: "(" prompt ")" | "(" prompt ":" prompt ")" | "[" prompt "]"
//   scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
//   alternate: "[" prompt ("|" [prompt])+ "]"
//   plain: /([^\\\[\]():|]|\\.)+/
// This is a hand-written parser for the same language. Where the grammar is ambiguous (a bracket
// that could be a construct or stray characters), lark's resolution recognises the construct; so
// does this parser. Checked against lark on random prompts (test/text/prompt.test.ts has cases).
// A prompt the grammar rejects — a '|' outside [a|b], a '\' at the very end or before a newline —
// is used verbatim for every step, as A1111 does.

type SchedNode =
  | { t: 'text'; s: string }
  | { t: 'sched'; before: SchedNode[] | null; after: SchedNode[]; num: string; when: number }
  | { t: 'alt'; options: SchedNode[][] };

const PLAIN_RE = /(?:[^\\[\]():|]|\\[^\n])+/y;
const WS_RE = new RegExp(`${S}+`, 'y');
/** lark's SIGNED_NUMBER, alternatives in lark's order. */
const NUMBER_RE = /[+-]?(?:\d+[eE][+-]?\d+|(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+)/y;

class ScheduleParser {
  constructor(private readonly src: string) {}

  private match(re: RegExp, at: number): string | null {
    re.lastIndex = at;
    const m = re.exec(this.src);
    return m === null ? null : m[0];
  }

  /** A `prompt`: the longest run of items from `at`. Never fails (it may be empty). */
  prompt(at: number): { nodes: SchedNode[]; end: number } {
    const nodes: SchedNode[] = [];
    let i = at;
    while (i < this.src.length) {
      const c = this.src[i];
      if (c === '[' || c === '(') {
        const item = this.bracket(i);
        if (item === null) break;
        nodes.push(...item.nodes);
        i = item.end;
        continue;
      }
      const plain = this.match(PLAIN_RE, i);
      if (plain === null) break;
      nodes.push({ t: 'text', s: plain });
      i += plain.length;
    }
    return { nodes, end: i };
  }

  /** `[WHITESPACE] NUMBER [WHITESPACE] "]"` from `at`: the number and the end, or null. */
  private when(at: number): { num: string; end: number } | null {
    let i = at;
    i += this.match(WS_RE, i)?.length ?? 0;
    const num = this.match(NUMBER_RE, i);
    if (num === null) return null;
    i += num.length;
    i += this.match(WS_RE, i)?.length ?? 0;
    return this.src[i] === ']' ? { num, end: i + 1 } : null;
  }

  /** A complete emphasized, scheduled or alternate construct at `at`, or null. */
  bracket(at: number): { nodes: SchedNode[]; end: number } | null {
    const open = this.src[at];
    const first = this.prompt(at + 1);
    let j = first.end;
    const next = this.src[j];
    if (open === '(') {
      if (next === ')') return { nodes: [text('('), ...first.nodes, text(')')], end: j + 1 };
      if (next !== ':') return null;
      const second = this.prompt(j + 1);
      if (this.src[second.end] !== ')') return null;
      return { nodes: [text('('), ...first.nodes, text(':'), ...second.nodes, text(')')], end: second.end + 1 };
    }
    if (next === ']') return { nodes: [text('['), ...first.nodes, text(']')], end: j + 1 };
    if (next === '|') {
      const options = [first.nodes];
      while (this.src[j] === '|') {
        const opt = this.prompt(j + 1);
        options.push(opt.nodes);
        j = opt.end;
      }
      return this.src[j] === ']' ? { nodes: [{ t: 'alt', options }], end: j + 1 } : null;
    }
    if (next !== ':') return null;
    // [to:when] — or [from:to:when]; the two cannot both fit (a prompt holds no ':').
    const short = this.when(j + 1);
    if (short !== null) return { nodes: [{ t: 'sched', before: null, after: first.nodes, num: short.num, when: 0 }], end: short.end };
    const second = this.prompt(j + 1);
    if (this.src[second.end] !== ':') return null;
    const long = this.when(second.end + 1);
    if (long === null) return null;
    return { nodes: [{ t: 'sched', before: first.nodes, after: second.nodes, num: long.num, when: 0 }], end: long.end };
  }

  /** `start`: prompts and stray '[', ']', '(', ')', ':' characters; null if the text does not parse. */
  start(): SchedNode[] | null {
    const nodes: SchedNode[] = [];
    let i = 0;
    while (i < this.src.length) {
      const p = this.prompt(i);
      nodes.push(...p.nodes);
      i = p.end;
      if (i >= this.src.length) break;
      if (!'[]():'.includes(this.src[i])) return null;
      nodes.push(text(this.src[i++]));
    }
    return nodes;
  }
}

function text(s: string): SchedNode {
  return { t: 'text', s };
}

export interface ScheduledText {
  /** The last sampling step (A1111 numbering) at which `text` applies. */
  endAtStep: number;
  text: string;
}

export interface ScheduleOptions {
  /** Hires-fix steps: then integers count from the end of the first pass and fractions run 1…2. */
  hiresSteps?: number;
  /** A1111's "use old prompt editing timelines" option: any number below 1 is a fraction. */
  oldScheduling?: boolean;
}

/**
 * Which text applies up to which step (A1111 doctests, steps = 10):
 * `a [b:3]` → [{3,'a '}, {10,'a b'}]; `[fe|]male` alternates; unparseable text comes back whole.
 */
export function promptSchedule(prompt: string, steps: number, opts: ScheduleOptions = {}): ScheduledText[] {
  if (!Number.isInteger(steps) || steps < 1) throw new RangeError(`steps must be a positive integer, got ${steps}`);
  const old = opts.oldScheduling === true || opts.hiresSteps === undefined;
  const intOffset = old ? 0 : steps;
  const fltOffset = old ? 0 : 1;
  const total = old ? steps : opts.hiresSteps!;
  const tree = new ScheduleParser(prompt).start();
  if (tree === null) return [{ endAtStep: total, text: prompt }];

  // CollectSteps: every switch point, plus every step when something alternates.
  const points = new Set<number>([total]);
  const visit = (nodes: SchedNode[]): void => {
    for (const n of nodes) {
      if (n.t === 'sched') {
        let v = Number(n.num);
        if (opts.oldScheduling === true) v = v < 1 ? v * total : v;
        else v = n.num.includes('.') ? (v - fltOffset) * total : v - intOffset;
        n.when = Math.min(total, Math.trunc(v));
        if (n.when >= 1) points.add(n.when);
        if (n.before) visit(n.before);
        visit(n.after);
      } else if (n.t === 'alt') {
        for (let s = 1; s <= total; s++) points.add(s);
        n.options.forEach(visit);
      }
    }
  };
  visit(tree);

  const render = (nodes: SchedNode[], step: number): string => {
    let out = '';
    for (const n of nodes) {
      if (n.t === 'text') out += n.s;
      else if (n.t === 'sched') out += step <= n.when ? (n.before ? render(n.before, step) : '') : render(n.after, step);
      else {
        const k = n.options.length;
        out += render(n.options[(((step - 1) % k) + k) % k], step);
      }
    }
    return out;
  };
  return [...points].sort((a, b) => a - b).map((s) => ({ endAtStep: s, text: render(tree, s) }));
}

/**
 * The text in force at sampler step `step`, which A1111 counts from 0: the first entry whose
 * endAtStep ≥ step (`reconstruct_cond_batch`; past the end it falls back to the first entry).
 */
export function textAtStep(schedule: readonly ScheduledText[], step: number): string {
  for (const entry of schedule) if (step <= entry.endAtStep) return entry.text;
  return schedule[0].text;
}

// ---------------------------------------------------------------------------------------------
// 4. Emphasis (§8.5; prompt_parser.parse_prompt_attention)

const ATTENTION_RE = new RegExp(
  [
    '\\\\\\(', '\\\\\\)', '\\\\\\[', '\\\\\\]', '\\\\\\\\', '\\\\',
    '\\(', '\\[',
    `:${S}*([+-]?[.\\p{Nd}]+)${S}*\\)`,
    '\\)', '\\]', '[^\\\\()\\[\\]:]+', ':',
  ].join('|'),
  'gu',
);
const BREAK_RE = new RegExp(`${S}*(?<!${W})BREAK(?!${W})${S}*`, 'u');
const ROUND = 1.1;
const SQUARE = 1 / 1.1;

/**
 * `(x)` ×1.1, `[x]` ÷1.1, `(x:1.3)` ×1.3, nesting multiplies, `\(` `\)` `\[` `\]` `\\` are literal,
 * unclosed brackets run to the end, BREAK outside brackets becomes ['BREAK', -1], and neighbours
 * with equal weights merge. Exactly A1111's output, float for float.
 */
export function parsePromptAttention(text: string): [string, number][] {
  const res: [string, number][] = [];
  const round: number[] = [];
  const square: number[] = [];
  const multiplyRange = (start: number, m: number): void => {
    for (let p = start; p < res.length; p++) res[p][1] *= m;
  };
  for (const m of text.matchAll(ATTENTION_RE)) {
    const tok = m[0];
    const weight = m[1];
    if (tok.startsWith('\\')) res.push([tok.slice(1), 1.0]);
    else if (tok === '(') round.push(res.length);
    else if (tok === '[') square.push(res.length);
    else if (weight !== undefined && round.length > 0) {
      const w = pyFloat(weight);
      if (w === null) throw new PromptError(`the emphasis weight ${JSON.stringify(weight)} in ${JSON.stringify(tok)} is not a number`);
      multiplyRange(round.pop()!, w);
    } else if (tok === ')' && round.length > 0) multiplyRange(round.pop()!, ROUND);
    else if (tok === ']' && square.length > 0) multiplyRange(square.pop()!, SQUARE);
    else {
      tok.split(BREAK_RE).forEach((part, i) => {
        if (i > 0) res.push(['BREAK', -1]);
        res.push([part, 1.0]);
      });
    }
  }
  for (const pos of round) multiplyRange(pos, ROUND);
  for (const pos of square) multiplyRange(pos, SQUARE);
  if (res.length === 0) res.push(['', 1.0]);
  for (let i = 0; i + 1 < res.length; ) {
    if (res[i][1] === res[i + 1][1]) {
      res[i][0] += res[i + 1][0];
      res.splice(i + 1, 1);
    } else i++;
  }
  return res;
}

// ---------------------------------------------------------------------------------------------
// 5. Chunking (§8.6, §6.2; sd_hijack_clip.FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line)

/** What the chunker needs to know of a textual-inversion embedding: how many token slots it fills. */
export interface EmbeddingInfo {
  vectors: number;
}

export interface ChunkEmbedding {
  name: string;
  /** Index among the chunk's 75 content tokens (A1111's PromptChunkFix.offset). */
  offset: number;
  /** Index in the 77-token frame (offset + 1, after BOS): rows position … position+vectors-1. */
  position: number;
  vectors: number;
}

export interface PromptChunk {
  /** 77 ids: BOS, 75 content or padding, EOS. Embedding slots hold id 0 ('!'), as in A1111. */
  tokens: number[];
  /** 77 emphasis multipliers (1 for BOS, EOS and padding). */
  multipliers: number[];
  embeddings: ChunkEmbedding[];
}

export interface ChunkOptions {
  /** Textual-inversion embeddings by trigger word (the file stem); matched on token ids. */
  embeddings?: ReadonlyMap<string, EmbeddingInfo>;
  /** A1111 "comma padding backtrack" (default 20; 0 turns it off). */
  commaBacktrack?: number;
  /** 'sd2' replaces everything after the first EOS with 0, as A1111 does for OpenCLIP. */
  padding?: Padding;
  /** false = A1111's emphasis "None": the line is one segment of weight 1 (BREAK is then plain text). */
  emphasis?: boolean;
}

export interface ChunkedPrompt {
  chunks: PromptChunk[];
  /** Tokens used, as A1111 counts them: 75 per full chunk plus the content of the last. */
  tokenCount: number;
}

interface Candidate {
  ids: number[];
  name: string;
  vectors: number;
}

/** EmbeddingDatabase.ids_lookup: candidates by first id, longest token sequence first. */
function embeddingLookup(tokenizer: ClipTokenizer, embeddings: ReadonlyMap<string, EmbeddingInfo>): Map<number, Candidate[]> {
  const lookup = new Map<number, Candidate[]>();
  for (const [name, info] of embeddings) {
    const vectors = Math.trunc(info.vectors);
    if (!(vectors >= 1 && vectors <= CHUNK_LENGTH)) {
      throw new PromptError(`embedding '${name}' has ${info.vectors} vectors; a 75-token chunk holds 1 to ${CHUNK_LENGTH}`);
    }
    const ids = tokenizer.encode(name);
    if (ids.length === 0) continue; // a name that tokenizes to nothing can never be written in a prompt
    const list = lookup.get(ids[0]) ?? [];
    list.push({ ids, name, vectors });
    list.sort((a, b) => b.ids.length - a.ids.length); // stable: equal lengths keep registration order
    lookup.set(ids[0], list);
  }
  return lookup;
}

/**
 * Splits one prompt line into 77-token chunks with per-token emphasis weights, as A1111's
 * tokenize_line does: segments from parsePromptAttention are tokenized separately; BREAK closes
 * the chunk; a full chunk whose last comma is within `commaBacktrack` tokens of its end moves the
 * tokens after that comma to the next chunk; an embedding that does not fit starts a new chunk.
 *
 * One deliberate difference: when the comma rule moves tokens, A1111 leaves the embedding "fixes"
 * of the moved tokens in the old chunk (where they then point at padding) and so loses those
 * embeddings; here they move with their tokens.
 */
export function chunkPrompt(tokenizer: ClipTokenizer, text: string, opts: ChunkOptions = {}): ChunkedPrompt {
  const backtrack = opts.commaBacktrack ?? 20;
  const parsed: [string, number][] = opts.emphasis === false ? [[text, 1.0]] : parsePromptAttention(text);
  const lookup = opts.embeddings ? embeddingLookup(tokenizer, opts.embeddings) : new Map<number, Candidate[]>();

  const chunks: PromptChunk[] = [];
  let tokens: number[] = [];
  let mults: number[] = [];
  let fixes: { offset: number; name: string; vectors: number }[] = [];
  let tokenCount = 0;
  let lastComma = -1;

  const nextChunk = (isLast = false): void => {
    tokenCount += isLast ? tokens.length : CHUNK_LENGTH;
    while (tokens.length < CHUNK_LENGTH) {
      tokens.push(EOS);
      mults.push(1.0);
    }
    const ids = [BOS, ...tokens, EOS];
    if (opts.padding === 'sd2') ids.fill(0, ids.indexOf(EOS) + 1);
    chunks.push({
      tokens: ids,
      multipliers: [1.0, ...mults, 1.0],
      embeddings: fixes.map((f) => ({ name: f.name, offset: f.offset, position: f.offset + 1, vectors: f.vectors })),
    });
    lastComma = -1;
    tokens = [];
    mults = [];
    fixes = [];
  };

  for (const [segment, weight] of parsed) {
    if (segment === 'BREAK' && weight === -1) {
      nextChunk();
      continue;
    }
    const ids = tokenizer.encode(segment);
    let position = 0;
    while (position < ids.length) {
      const token = ids[position];
      if (token === COMMA) {
        lastComma = tokens.length;
      } else if (backtrack !== 0 && tokens.length === CHUNK_LENGTH && lastComma !== -1 && tokens.length - lastComma <= backtrack) {
        const at = lastComma + 1;
        const movedTokens = tokens.slice(at);
        const movedMults = mults.slice(at);
        const movedFixes = fixes.filter((f) => f.offset >= at).map((f) => ({ ...f, offset: f.offset - at }));
        tokens = tokens.slice(0, at);
        mults = mults.slice(0, at);
        fixes = fixes.filter((f) => f.offset < at);
        nextChunk();
        tokens = movedTokens;
        mults = movedMults;
        fixes = movedFixes;
      }
      if (tokens.length === CHUNK_LENGTH) nextChunk();

      const found = lookup.get(token)?.find((c) => c.ids.every((id, k) => ids[position + k] === id));
      if (found === undefined) {
        tokens.push(token);
        mults.push(weight);
        position++;
        continue;
      }
      if (tokens.length + found.vectors > CHUNK_LENGTH) nextChunk();
      fixes.push({ offset: tokens.length, name: found.name, vectors: found.vectors });
      for (let k = 0; k < found.vectors; k++) {
        tokens.push(0);
        mults.push(weight);
      }
      position += found.ids.length;
    }
  }
  if (tokens.length > 0 || chunks.length === 0) nextChunk(true);
  return { chunks, tokenCount };
}

export interface TokenCountOptions {
  /** Default: ClipTokenizer.default() (SD1, as A1111's counter uses the model's own tokenizer). */
  tokenizer?: ClipTokenizer;
  /** Sampling steps for prompt editing (the counter takes the longest text of the schedule). */
  steps?: number;
  embeddings?: ReadonlyMap<string, EmbeddingInfo>;
  /** Negative prompts are not split on AND. */
  negative?: boolean;
}

/**
 * The "used/limit" counter A1111 shows above the prompt box (ui.update_token_counter): extra
 * networks cut out, AND parts and every scheduled text counted, the largest kept. `limit` is the
 * next multiple of 75.
 */
export function countTokens(text: string, opts: TokenCountOptions = {}): { tokens: number; limit: number } {
  const tokenizer = opts.tokenizer ?? ClipTokenizer.default();
  const steps = opts.steps ?? 20;
  // A1111 wraps these steps in a try that falls back to the raw text; none of the ports below
  // throws on any prompt (tag arguments are not read, unparseable editing syntax is kept verbatim).
  const stripped = cutExtraNetworks(text).prompt;
  const flat = opts.negative ? [stripped] : splitAnd(stripped).map((p) => p.text);
  const texts = flat.flatMap((p) => promptSchedule(p, steps).map((s) => s.text));
  let tokens = 0;
  for (const t of texts) tokens = Math.max(tokens, chunkPrompt(tokenizer, t, { embeddings: opts.embeddings }).tokenCount);
  return { tokens, limit: Math.ceil(Math.max(tokens, 1) / CHUNK_LENGTH) * CHUNK_LENGTH };
}
