// Prompt → text-encoder conditioning, A1111's way (spec §8.6, sd_hijack_clip.py): the prompt is
// split into chunks of 75 tokens, each framed as BOS + 75 + EOS = 77 and encoded separately; the
// chunks are concatenated along the sequence. Emphasis multiplies each token's vector by its weight,
// then the chunk is rescaled to its original mean. A prompt without emphasis gives exactly the
// ids (and so the embeddings) of diffusers' tokenizer(padding="max_length", max_length=77).
import * as T from '../torch/index.ts';
import type { StableDiffusion } from '../models/load.ts';
import { BOS, EOS, CHUNK_LENGTH } from '../text/tokenizer.ts';

/** Textual-inversion vectors by the word that triggers them: [n, dim] each. */
export type PromptEmbeddings = ReadonlyMap<string, T.Tensor>;

export interface Chunk {
  /** 77 ids: BOS, 75 tokens (padded), EOS. */
  ids: number[];
  /** 77 weights (1 for BOS/EOS/padding). */
  weights: number[];
  /** Positions (in ids) whose vectors come from an embedding instead of the token table. */
  fixes: { position: number; vectors: T.Tensor }[];
}

export interface WeightedToken {
  id: number;
  weight: number;
  /** Set for the first slot of an embedding's vectors. */
  embedding?: { name: string; vectors: T.Tensor };
}

/**
 * Weighted tokens of a prompt. Emphasis, BREAK and embedding words come from the A1111 parser
 * (src/text/prompt.ts) once it is wired in; plain text tokenizes as the CLIP tokenizer does.
 */
export function weightedTokens(model: StableDiffusion, text: string, embeddings?: PromptEmbeddings): (WeightedToken | 'BREAK')[] {
  const out: (WeightedToken | 'BREAK')[] = [];
  const parts = text.split(/\bBREAK\b/);
  parts.forEach((part, i) => {
    if (i > 0) out.push('BREAK');
    let rest = part;
    if (embeddings && embeddings.size) {
      // Embedding names are whole words of the prompt (A1111 matches them on token boundaries).
      const names = [...embeddings.keys()].sort((a, b) => b.length - a.length).map((n) => n.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
      const re = new RegExp(`(?<![\\w-])(${names.join('|')})(?![\\w-])`, 'g');
      let last = 0;
      for (const m of rest.matchAll(re)) {
        for (const id of model.tokenizer.encode(rest.slice(last, m.index))) out.push({ id, weight: 1 });
        const vectors = embeddings.get(m[1])!;
        const n = vectors.size(0);
        // A1111 holds an embedding's slots with id 0; the vectors replace them after lookup.
        out.push({ id: 0, weight: 1, embedding: { name: m[1], vectors } });
        for (let k = 1; k < n; k++) out.push({ id: 0, weight: 1 });
        last = m.index! + m[0].length;
      }
      rest = rest.slice(last);
    }
    for (const id of model.tokenizer.encode(rest)) out.push({ id, weight: 1 });
  });
  return out;
}

/**
 * Splits weighted tokens into 75-token chunks (BREAK starts a new one; an embedding is not split).
 * Chunks are padded with EOS and framed BOS … EOS; SD2 then zeroes every id after the first EOS.
 */
export function chunkTokens(tokens: (WeightedToken | 'BREAK')[], padding: 'sd1' | 'sd2'): Chunk[] {
  const chunks: Chunk[] = [];
  let cur: WeightedToken[] = [];
  const flush = () => {
    const ids = [BOS];
    const weights = [1];
    const fixes: Chunk['fixes'] = [];
    cur.forEach((t, i) => {
      ids.push(t.id);
      weights.push(t.weight);
      if (t.embedding) fixes.push({ position: i + 1, vectors: t.embedding.vectors });
    });
    while (ids.length < CHUNK_LENGTH + 1) {
      ids.push(EOS);
      weights.push(1);
    }
    ids.push(EOS);
    weights.push(1);
    if (padding === 'sd2') {
      const first = ids.indexOf(EOS);
      for (let i = first + 1; i < ids.length; i++) ids[i] = 0;
    }
    chunks.push({ ids, weights, fixes });
    cur = [];
  };
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (t === 'BREAK') {
      flush();
      continue;
    }
    const n = t.embedding ? t.embedding.vectors.size(0) : 1;
    if (cur.length + n > CHUNK_LENGTH) flush();
    cur.push(t);
    for (let k = 1; k < n; k++) cur.push(tokens[++i] as WeightedToken);
  }
  if (cur.length || chunks.length === 0) flush();
  return chunks;
}

/** Encodes chunks into [1, 77·k, dim] with emphasis applied as A1111 does. */
export function encodeChunks(model: StableDiffusion, chunks: Chunk[], clipSkip = 1): T.Tensor {
  return T.tidy(() => {
    const enc = model.textEncoder;
    const dev = model.device;
    const zs = chunks.map((c) => {
      const ids = T.tensor([c.ids], { dtype: 'int64', device: dev });
      let vectors: T.Tensor | undefined;
      if (c.fixes.length) {
        // Textual inversion: replace the token vectors at the embedding's positions.
        const tok = enc.embeddings.tokens(ids);
        const rows: T.Tensor[] = [];
        let pos = 0;
        for (const f of c.fixes) {
          if (f.position > pos) rows.push(tok.slice(1, pos, f.position));
          const n = f.vectors.size(0);
          rows.push(f.vectors.to(dev).to(tok.dtype).unsqueeze(0));
          pos = f.position + n;
        }
        if (pos < 77) rows.push(tok.slice(1, pos, 77));
        vectors = T.cat(rows, 1);
      }
      const z = enc.forward(ids, { clipSkip, tokenVectors: vectors }).lastHidden;
      if (c.weights.every((w) => w === 1)) return z;
      // A1111: z *= weights; z *= original_mean / new_mean
      const before = z.mean();
      const weighted = z.mul(T.tensor(c.weights, { device: dev }).reshape(1, 77, 1));
      const after = weighted.mean();
      return weighted.mul(before.div(after));
    });
    return zs.length === 1 ? zs[0] : T.cat(zs, 1);
  });
}

/**
 * Conditioning for a prompt and its negative. Different chunk counts are evened out by repeating
 * the encoding of an empty chunk, as A1111 does, so classifier-free guidance can batch them.
 */
export function encodePrompts(model: StableDiffusion, prompt: string, negative: string, o: { clipSkip?: number; embeddings?: PromptEmbeddings; withUncond?: boolean } = {}): { cond: T.Tensor; uncond: T.Tensor | null } {
  return T.tidy(() => {
    const pad = model.padding;
    const c = chunkTokens(weightedTokens(model, prompt, o.embeddings), pad);
    if (o.withUncond === false) return { cond: encodeChunks(model, c, o.clipSkip), uncond: null };
    const u = chunkTokens(weightedTokens(model, negative, o.embeddings), pad);
    const empty = chunkTokens([], pad)[0];
    while (c.length < u.length) c.push(empty);
    while (u.length < c.length) u.push(empty);
    return { cond: encodeChunks(model, c, o.clipSkip), uncond: encodeChunks(model, u, o.clipSkip) };
  });
}
