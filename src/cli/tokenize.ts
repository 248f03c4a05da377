// `sdtune tokenize TEXT [--json] [--sd2]`: the CLIP token ids of a prompt and the "used/limit"
// count A1111 shows above its prompt box (sd-formats.md §8.6, §9).
//
// Two views of the same text, on purpose:
//   - `ids` tokenize the raw text, BOS and EOS included, untruncated and unpadded: what diffusers
//     and kohya feed the text encoder (their 77-token frame is the first 76 of these plus EOS).
//   - `count` is A1111's counter (countTokens): extra-network tags cut out, emphasis syntax
//     removed, AND parts and prompt-editing texts counted separately, 75-token chunks.
// SD1 uses transformers' CLIPTokenizer ('hf'); --sd2 uses open_clip's ('openai' cleanup), as
// A1111 does for OpenCLIP. The ids differ only for text that mixes a '<' with HTML entities.
import { ClipTokenizer } from '../text/tokenizer.ts';
import { countTokens } from '../text/prompt.ts';

export interface TokenizeReport {
  /** Raw-text ids: BOS, content, EOS. */
  ids: number[];
  /** BPE symbols aligned with `ids` ('<|startoftext|>', 'photo</w>', …). */
  symbols: string[];
  /** Tokens as A1111's counter counts them. */
  count: number;
  /** The next multiple of 75 (75 per chunk). */
  limit: number;
  model: 'sd1' | 'sd2';
}

export function tokenizePrompt(text: string, opts: { sd2?: boolean } = {}): TokenizeReport {
  const tokenizer = ClipTokenizer.default(opts.sd2 ? 'openai' : 'hf');
  const ids = tokenizer.encodeWithSpecial(text);
  const { tokens, limit } = countTokens(text, { tokenizer });
  return {
    ids,
    symbols: ids.map((id) => tokenizer.idToToken(id) ?? String(id)),
    count: tokens,
    limit,
    model: opts.sd2 ? 'sd2' : 'sd1',
  };
}

/** The plain-text form: the ids on one line, then the count as A1111 shows it ("12/75"). */
export function formatTokenize(r: TokenizeReport): string {
  return `${r.ids.join(' ')}\n${r.count}/${r.limit}  (${r.ids.length - 2} ids between BOS and EOS, ${r.model})\n`;
}
