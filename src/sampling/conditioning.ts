// Prompt → text-encoder conditioning, A1111's way (spec §8.4–§8.6; modules/prompt_parser.py,
// sd_hijack_clip.py). The text side (extra-network tags, AND, prompt editing, emphasis, 75-token
// chunks, embedding slots) is src/text/prompt.ts; this file turns its chunks into tensors:
//   1. each 77-token chunk is encoded on its own; embedding slots get the embedding's vectors;
//   2. emphasis: z *= multipliers, then z *= original_mean / new_mean (A1111 "Original");
//   3. the chunks are concatenated along the sequence, [1, 77·k, dim].
// A prompt without emphasis gives exactly the ids (and so the embeddings) of diffusers'
// tokenizer(padding="max_length", max_length=77) — checked against diffusers' encode_prompt.
import * as T from '../torch/index.ts';
import type { ClipTokenizer, Padding } from '../text/tokenizer.ts';
import type { CLIPTextModel } from '../models/clip.ts';
import {
  PromptError,
  chunkPrompt,
  parseExtraNetworks,
  promptSchedule,
  splitAnd,
  textAtStep,
  type ExtraNetworks,
  type PromptChunk,
  type ScheduledText,
} from '../text/prompt.ts';

/** Textual-inversion vectors by the word that triggers them (the file's stem): [n, dim] each. */
export type PromptEmbeddings = ReadonlyMap<string, T.Tensor>;

/** What encoding needs of a model (a StableDiffusion has all of it). */
export interface TextConditioner {
  tokenizer: ClipTokenizer;
  textEncoder: CLIPTextModel;
  padding: Padding;
  device: string;
}

export interface EncodeOptions {
  /** A1111's clip skip (1 = last layer). */
  clipSkip?: number;
  embeddings?: PromptEmbeddings;
}

function embeddingInfo(embeddings: PromptEmbeddings | undefined): Map<string, { vectors: number }> | undefined {
  if (!embeddings || embeddings.size === 0) return undefined;
  return new Map([...embeddings].map(([name, t]) => [name, { vectors: t.size(0) }]));
}

/** One prompt line (no AND, no editing left) → its chunks, as A1111's tokenize_line makes them. */
export function promptChunks(m: TextConditioner, text: string, o: EncodeOptions = {}): PromptChunk[] {
  return chunkPrompt(m.tokenizer, text, { embeddings: embeddingInfo(o.embeddings), padding: m.padding }).chunks;
}

/** Encodes chunks into [1, 77·k, dim] with embeddings inserted and emphasis applied as A1111 does. */
export function encodeChunks(m: TextConditioner, chunks: readonly PromptChunk[], o: EncodeOptions = {}): T.Tensor {
  return T.tidy(() => {
    const enc = m.textEncoder;
    const zs = chunks.map((c) => {
      const ids = T.tensor([c.tokens], { dtype: 'int64', device: m.device });
      let vectors: T.Tensor | undefined;
      if (c.embeddings.length) {
        // Textual inversion (A1111 EmbeddingsWithFixes): the slots' token vectors are replaced.
        const tok = enc.embeddings.tokens(ids);
        const parts: T.Tensor[] = [];
        let pos = 0;
        for (const fix of c.embeddings) {
          const v = o.embeddings?.get(fix.name);
          if (!v) throw new Error(`embedding '${fix.name}' is in the prompt's chunks but was not passed to the encoder`);
          if (v.size(1) !== tok.size(2)) {
            throw new Error(`embedding '${fix.name}' has vectors of size ${v.size(1)} but this model's text encoder uses ${tok.size(2)}: it was made for another model family`);
          }
          if (fix.position > pos) parts.push(tok.slice(1, pos, fix.position));
          parts.push(v.to(m.device).to(tok.dtype).unsqueeze(0));
          pos = fix.position + fix.vectors;
        }
        if (pos < c.tokens.length) parts.push(tok.slice(1, pos, c.tokens.length));
        vectors = T.cat(parts, 1);
      }
      const z = enc.forward(ids, { clipSkip: o.clipSkip, tokenVectors: vectors }).lastHidden;
      if (c.multipliers.every((w) => w === 1)) return z;
      // A1111 (sd_emphasis.EmphasisOriginal): z *= multipliers; z *= original_mean / new_mean
      const before = z.mean();
      const weighted = z.mul(T.tensor(c.multipliers, { device: m.device }).reshape(1, c.multipliers.length, 1));
      return weighted.mul(before.div(weighted.mean()));
    });
    return zs.length === 1 ? zs[0] : T.cat(zs, 1);
  });
}

/** Encodes one prompt line: [1, 77·k, dim]. */
export function encodeText(m: TextConditioner, text: string, o: EncodeOptions = {}): T.Tensor {
  return encodeChunks(m, promptChunks(m, text, o), o);
}

/** One sub-prompt of `a AND b:0.5`, with its prompt-editing schedule. */
export interface CondPart {
  weight: number;
  schedule: ScheduledText[];
}

/**
 * A prompt and negative prompt, ready for the sampler: every text that some step uses, encoded
 * once, all padded to the same chunk count (A1111 pads the shorter with encodings of the empty
 * prompt) so that classifier-free guidance batches them. Owns its tensors: dispose() when done.
 */
export class Conditioning {
  private constructor(
    /** Positive sub-prompts (AND) with their weights and schedules. */
    readonly parts: readonly CondPart[],
    readonly negative: readonly ScheduledText[],
    /** Encoded text by its string. */
    private readonly encoded: Map<string, T.Tensor>,
    /** The LoRA and hypernetwork tags that were cut out of the prompts. */
    readonly extraNetworks: ExtraNetworks,
  ) {}

  /**
   * Parses (extra networks → AND → prompt editing over `steps`) and encodes. The negative prompt's
   * extra-network tags are cut out too (A1111 applies only the positive prompt's networks).
   */
  static build(m: TextConditioner, prompt: string, negative: string, steps: number, o: EncodeOptions = {}): Conditioning {
    const nets = parseExtraNetworks(prompt);
    const negText = parseExtraNetworks(negative).prompt;
    const parts = splitAnd(nets.prompt).map((p) => ({ weight: p.weight, schedule: promptSchedule(p.text, steps) }));
    const neg = promptSchedule(negText, steps);
    const texts = new Set<string>([...parts.flatMap((p) => p.schedule.map((s) => s.text)), ...neg.map((s) => s.text)]);
    const encoded = new Map<string, T.Tensor>();
    try {
      T.tidy(() => {
        const chunks = new Map([...texts].map((t) => [t, promptChunks(m, t, o)] as const));
        const most = Math.max(...[...chunks.values()].map((c) => c.length));
        const empty = most > 1 ? promptChunks(m, '', o)[0] : undefined;
        for (const [t, c] of chunks) {
          const padded = [...c];
          while (padded.length < most) padded.push(empty!);
          encoded.set(t, T.keep(encodeChunks(m, padded, o)));
        }
      });
    } catch (e) {
      for (const t of encoded.values()) t.dispose();
      throw e;
    }
    return new Conditioning(parts, neg, encoded, nets);
  }

  /** [1, L, dim] for the positive sub-prompt `part` at sampler step `step` (0-based). */
  cond(part: number, step: number): T.Tensor {
    return this.encoded.get(textAtStep(this.parts[part].schedule, step))!;
  }

  uncond(step: number): T.Tensor {
    return this.encoded.get(textAtStep(this.negative, step))!;
  }

  /** Whether the conditioning changes between steps (prompt editing or alternation). */
  get scheduled(): boolean {
    return this.parts.some((p) => p.schedule.length > 1) || this.negative.length > 1;
  }

  dispose(): void {
    for (const t of this.encoded.values()) t.dispose();
    this.encoded.clear();
  }
}

export { PromptError };
