// The HF tokenizer files (vocab.json, merges.txt) derived from OpenAI's bpe_simple_vocab_16e6,
// exactly as CLIP's SimpleTokenizer builds its vocabulary (spec §9.1), so sdtune can write a
// complete diffusers folder (tokenizer/) from the vocabulary it ships.
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';

/** GPT-2's reversible byte → printable character map, in its canonical order. */
export function bytesToUnicode(): Map<number, string> {
  const bs: number[] = [];
  for (let b = '!'.charCodeAt(0); b <= '~'.charCodeAt(0); b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  return new Map(bs.map((b, i) => [b, String.fromCodePoint(cs[i])]));
}

/** vocab.json (token → id, in id order) and merges.txt text for the shipped vocabulary. */
export function clipTokenizerFiles(bpeGz: string | URL = new URL('./vocab/bpe_simple_vocab_16e6.txt.gz', import.meta.url)): { vocabJson: string; mergesTxt: string } {
  let lines: string[];
  try {
    lines = gunzipSync(readFileSync(bpeGz)).toString('utf8').split('\n');
  } catch (e) {
    const name = bpeGz instanceof URL && bpeGz.protocol === 'file:' ? fileURLToPath(bpeGz) : String(bpeGz);
    throw new Error(`${name} is not a readable gzip file (${(e as Error).message}); expected openai's bpe_simple_vocab_16e6.txt.gz`);
  }
  // SimpleTokenizer: merges = lines[1 : 49152-256-2+1]
  const merges = lines.slice(1, 49152 - 256 - 2 + 1);
  const base = [...bytesToUnicode().values()];
  const vocab = [...base, ...base.map((v) => v + '</w>'), ...merges.map((m) => m.split(' ').join('')), '<|startoftext|>', '<|endoftext|>'];
  const obj: Record<string, number> = {};
  vocab.forEach((t, i) => {
    obj[t] = i;
  });
  return { vocabJson: JSON.stringify(obj), mergesTxt: '#version: 0.2\n' + merges.join('\n') + '\n' };
}
