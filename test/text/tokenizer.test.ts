// The CLIP BPE tokenizer against fixtures/tokenizer (README §1): all 59 cases of test_vectors.json,
// for transformers' slow CLIPTokenizer with ftfy ('hf', what SD1 pipelines run) and openai's
// SimpleTokenizer ('openai', what open_clip and so A1111's SD2 path run). Ids must be exact.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { BOS, COMMA, ClipTokenizer, EOS, VOCAB_SIZE, frame } from '../../src/text/tokenizer.ts';
import { clipTokenizerFiles } from '../../src/text/vocab-files.ts';
import { fixture, tempDir } from '../helpers.ts';

interface Case {
  name: string;
  text: string;
  openai: { normalized_text: string; regex_pieces: string[]; bpe_tokens: string[]; ids: number[]; n_ids: number; decode: string };
  hf_slow_ftfy: { normalized_text: string; tokens: string[]; input_ids: number[]; input_ids_77: number[]; attention_mask_77: number[] };
  agree: { openai_vs_hf_ftfy: boolean; hf_ftfy_vs_hf_no_ftfy: boolean };
}

const vectors = JSON.parse(readFileSync(fixture('tokenizer', 'test_vectors.json'), 'utf8')) as {
  special_ids: { startoftext: number; endoftext: number; hf_pad_id: number; vocab_size: number; n_merges: number };
  summary: { n_cases: number; openai_vs_hf_ftfy_disagree: string[] };
  cases: Case[];
};
const cases = vectors.cases;
const hf = ClipTokenizer.default('hf');
const openai = ClipTokenizer.default('openai');
const byName = (name: string): Case => {
  const c = cases.find((x) => x.name === name);
  assert.ok(c, `fixture case ${name} missing`);
  return c;
};

test('fixture holds the 59 cases and the special ids the tokenizer uses', () => {
  assert.equal(cases.length, 59);
  assert.equal(vectors.summary.n_cases, 59);
  const s = vectors.special_ids;
  assert.deepEqual([s.startoftext, s.endoftext, s.hf_pad_id, s.vocab_size], [BOS, EOS, EOS, VOCAB_SIZE]);
  assert.equal(hf.vocabSize, VOCAB_SIZE);
  // §9.1 handy ids.
  assert.deepEqual(['!', '!</w>', '*</w>', ',</w>', 'a</w>'].map((t) => hf.tokenToId(t)), [0, 256, 265, COMMA, 320]);
  assert.equal(hf.idToToken(BOS), '<|startoftext|>');
  assert.equal(hf.idToToken(EOS), '<|endoftext|>');
});

// Each case is its own test, so a mismatch names the case and the field.
for (const c of cases) {
  test(`hf (transformers slow + ftfy): ${c.name}`, () => {
    const h = c.hf_slow_ftfy;
    assert.equal(hf.normalize(c.text), h.normalized_text, 'normalized_text');
    assert.deepEqual(hf.tokenize(c.text), h.tokens, 'BPE tokens');
    assert.deepEqual(hf.encodeWithSpecial(c.text), h.input_ids, 'input_ids');
    const framed = frame(hf.encode(c.text));
    assert.deepEqual(framed.inputIds, h.input_ids_77, 'input_ids_77');
    assert.deepEqual(framed.attentionMask, h.attention_mask_77, 'attention_mask_77');
    assert.deepEqual(hf.encodeFramed(c.text), framed, 'encodeFramed = frame(encode)');
  });
  test(`openai (SimpleTokenizer): ${c.name}`, () => {
    const o = c.openai;
    assert.equal(openai.normalize(c.text), o.normalized_text, 'normalized_text');
    assert.deepEqual(openai.pieces(c.text), o.regex_pieces, 'regex_pieces');
    assert.deepEqual(openai.tokenize(c.text), o.bpe_tokens, 'bpe_tokens');
    assert.deepEqual(openai.encode(c.text), o.ids, 'ids');
    assert.equal(o.ids.length, o.n_ids);
    // decode has openai's semantics (bytes back, UTF-8 with replacement, '</w>' → ' ').
    assert.equal(openai.decode(o.ids), o.decode, 'decode');
  });
}

test("the two modes differ exactly where the fixture says they do ('html_with_tags')", () => {
  const differ = cases.filter((c) => JSON.stringify(hf.encode(c.text)) !== JSON.stringify(openai.encode(c.text))).map((c) => c.name);
  assert.deepEqual(differ, vectors.summary.openai_vs_hf_ftfy_disagree);
  assert.deepEqual(differ, ['html_with_tags']);
  const c = byName('html_with_tags');
  // ftfy keeps '&amp;' in text that holds a '<'; openai's html.unescape does not.
  assert.equal(hf.normalize(c.text), '<b>bold &amp; html</b>');
  assert.equal(openai.normalize(c.text), '<b>bold & html</b>');
});

test('spec §9.4 test vectors (BOS and EOS included)', () => {
  const table: [string, number[]][] = [
    ['a photo of a cat', [49406, 320, 1125, 539, 320, 2368, 49407]],
    ['A photo of a CAT!', [49406, 320, 1125, 539, 320, 2368, 256, 49407]],
    ['Hello, world!', [49406, 3306, 267, 1002, 256, 49407]],
    ['masterpiece, best quality, 1girl', [49406, 12066, 267, 949, 3027, 267, 272, 1611, 49407]],
    ["it's a dog's life", [49406, 585, 568, 320, 1929, 568, 970, 49407]],
    ["don't   stop\tbelieving\n", [49406, 847, 713, 1691, 19551, 49407]],
    ['Special characters: !@#$%^&*()', [49406, 1689, 6564, 281, 0, 31, 2, 3, 4, 61, 5, 9, 8475, 49407]],
    ['café', [49406, 15304, 49407]],
    ['2025', [49406, 273, 271, 273, 276, 49407]],
    ['', [49406, 49407]],
  ];
  for (const [text, ids] of table) {
    assert.deepEqual(hf.encodeWithSpecial(text), ids, text);
    assert.deepEqual(openai.encodeWithSpecial(text), ids, text);
  }
});

test('vocab.json + merges.txt from the fixture give the same ids as the shipped .gz', () => {
  const fromJson = ClipTokenizer.fromVocabJson(fixture('tokenizer', 'vocab.json'), fixture('tokenizer', 'merges.txt'));
  const fromGz = ClipTokenizer.fromBpeGz(fixture('tokenizer', 'bpe_simple_vocab_16e6.txt.gz'));
  assert.equal(fromJson.vocabSize, VOCAB_SIZE);
  for (const c of cases) {
    assert.deepEqual(fromJson.encode(c.text), c.hf_slow_ftfy.input_ids.slice(1, -1), c.name);
    assert.deepEqual(fromGz.encode(c.text), c.hf_slow_ftfy.input_ids.slice(1, -1), c.name);
  }
  // The shipped vocabulary is the fixture's file, byte for byte.
  const shipped = readFileSync(new URL('../../src/text/vocab/bpe_simple_vocab_16e6.txt.gz', import.meta.url));
  assert.ok(shipped.equals(readFileSync(fixture('tokenizer', 'bpe_simple_vocab_16e6.txt.gz'))));
  // withNormalization shares the tables and switches the cleanup.
  const c = byName('html_with_tags');
  assert.deepEqual(fromJson.withNormalization('openai').encode(c.text), c.openai.ids);
});

test('clipTokenizerFiles() reproduces the fixture vocab.json and merges.txt', () => {
  const { vocabJson, mergesTxt } = clipTokenizerFiles();
  const want = JSON.parse(readFileSync(fixture('tokenizer', 'vocab.json'), 'utf8')) as Record<string, number>;
  const got = JSON.parse(vocabJson) as Record<string, number>;
  // Same entries in the same (id) order.
  assert.deepEqual(Object.entries(got), Object.entries(want));
  assert.equal(Object.keys(got).length, VOCAB_SIZE);
  assert.equal(mergesTxt, readFileSync(fixture('tokenizer', 'merges.txt'), 'utf8'));
  assert.equal(mergesTxt.split('\n')[0], '#version: 0.2');
});

test('SD1 pads with EOS (49407), SD2 with 0; truncation keeps BOS + 75 + EOS', () => {
  const ids = hf.encode('a photo of a cat');
  const sd1 = frame(ids, { padding: 'sd1' });
  const sd2 = frame(ids, { padding: 'sd2' });
  const head = [49406, 320, 1125, 539, 320, 2368, 49407];
  assert.deepEqual(sd1.inputIds, [...head, ...Array<number>(70).fill(49407)]);
  assert.deepEqual(sd2.inputIds, [...head, ...Array<number>(70).fill(0)]);
  assert.deepEqual(sd1.attentionMask, sd2.attentionMask);
  assert.deepEqual(sd2.attentionMask, [...Array<number>(7).fill(1), ...Array<number>(70).fill(0)]);
  assert.deepEqual(frame(ids, { padId: 5, maxLength: 10 }).inputIds, [...head, 5, 5, 5]);
  // The over-77 fixture prompts: truncated to exactly 77 with EOS last; SD2 framing agrees on
  // the first 77 (nothing to pad) and is all ones in the mask.
  for (const name of ['long_prompt_over_77', 'long_prompt_over_150']) {
    const c = byName(name);
    const content = hf.encode(c.text);
    assert.ok(content.length > 75, `${name} has ${content.length} tokens`);
    const f1 = frame(content);
    assert.deepEqual(f1.inputIds, c.hf_slow_ftfy.input_ids_77);
    assert.deepEqual(f1.inputIds, [BOS, ...content.slice(0, 75), EOS]);
    assert.deepEqual(frame(content, { padding: 'sd2' }).inputIds, f1.inputIds);
    assert.deepEqual(f1.attentionMask, Array<number>(77).fill(1));
  }
  assert.throws(() => frame(ids, { maxLength: 1 }), /at least 2/);
});

test('corrupt or missing vocabulary files give an error that names the file', () => {
  const { dir, cleanup } = tempDir();
  try {
    const vocab = fixture('tokenizer', 'vocab.json');
    const merges = fixture('tokenizer', 'merges.txt');
    const p = (n: string) => join(dir, n);
    const mergeLines = readFileSync(merges, 'utf8').split('\n');
    writeFileSync(p('broken.json'), '{"!": 0, "\\"": 1');
    writeFileSync(p('array.json'), '[1, 2, 3]');
    writeFileSync(p('badid.json'), '{"!": "zero", "<|startoftext|>": 49406, "<|endoftext|>": 49407}');
    writeFileSync(p('nospecial.json'), '{"!": 0}');
    writeFileSync(p('short.txt'), mergeLines.slice(0, 1000).join('\n'));
    writeFileSync(p('badline.txt'), [mergeLines[0], 'i n', 'oops', ...mergeLines.slice(3)].join('\n'));
    writeFileSync(p('foreign.txt'), [mergeLines[0], 'q z', ...mergeLines.slice(2)].join('\n'));
    writeFileSync(p('notgz.gz'), 'plain text, not gzip');
    writeFileSync(p('short.gz'), gzipSync(Buffer.from('#version\ni n\n')));
    const cases: [() => unknown, string, RegExp][] = [
      [() => ClipTokenizer.fromVocabJson(p('missing.json'), merges), p('missing.json'), /not a readable vocab\.json/],
      [() => ClipTokenizer.fromVocabJson(p('broken.json'), merges), p('broken.json'), /not a readable vocab\.json/],
      [() => ClipTokenizer.fromVocabJson(p('array.json'), merges), p('array.json'), /expected a JSON object/],
      [() => ClipTokenizer.fromVocabJson(p('badid.json'), merges), p('badid.json'), /not a non-negative integer/],
      [() => ClipTokenizer.fromVocabJson(p('nospecial.json'), merges), p('nospecial.json'), /has no <\|startoftext\|>/],
      [() => ClipTokenizer.fromVocabJson(vocab, p('missing.txt')), p('missing.txt'), /not a readable merges\.txt/],
      [() => ClipTokenizer.fromVocabJson(vocab, p('short.txt')), p('short.txt'), /holds 999 merges; a CLIP merges\.txt has 48894/],
      [() => ClipTokenizer.fromVocabJson(vocab, p('badline.txt')), `${p('badline.txt')}, line 3`, /expected a merge "left right", got "oops"/],
      [() => ClipTokenizer.fromVocabJson(vocab, p('foreign.txt')), `${p('foreign.txt')}, line 2`, /makes "qz", which .* lacks/],
      [() => ClipTokenizer.fromBpeGz(p('missing.gz')), p('missing.gz'), /not a readable gzip file/],
      [() => ClipTokenizer.fromBpeGz(p('notgz.gz')), p('notgz.gz'), /not a readable gzip file/],
      [() => ClipTokenizer.fromBpeGz(p('short.gz')), p('short.gz'), /holds 1 merges; a CLIP vocabulary needs 48894/],
      [() => clipTokenizerFiles(p('missing.gz')), p('missing.gz'), /not a readable gzip file/],
    ];
    for (const [run, name, why] of cases) {
      assert.throws(run, (e: Error) => {
        assert.ok(e.message.includes(name), `message should name ${name}: ${e.message}`);
        assert.match(e.message, why);
        return true;
      });
    }
    assert.throws(() => ClipTokenizer.fromBpeGz(new Uint8Array([1, 2, 3])), /the BPE vocabulary is not a readable gzip file/);
  } finally {
    cleanup();
  }
});

test('odd unicode, control characters, emoji and 1,000-token inputs tokenize without throwing', () => {
  const odd = [
    '\u0000\u0001\u0007\u001b[0m\u007f\u0085\u009c',
    '\ud83d', // a lone surrogate
    '\udc00abc\ud800',
    '🐱'.repeat(300),
    '👨\u200d👩\u200d👧\u200d👦🏳️\u200d🌈🇺🇳',
    '\ufeff\u200b\u2028\u2029\u00ad',
    'e\u0301\u0301\u0301\u0301',
    '\u{10ffff}\u{e0001}\u{f0000}',
    '<|endoftext|><|startoftext|><|ENDOFTEXT|>',
    '&#0; &#x110000; &amp &nbsp; &#xD800;',
  ];
  for (const s of odd) {
    for (const tok of [hf, openai]) {
      const ids = tok.encode(s);
      assert.ok(ids.every((id) => Number.isInteger(id) && id >= 0 && id < VOCAB_SIZE), JSON.stringify(s));
      assert.equal(typeof tok.decode(ids), 'string');
      assert.equal(frame(ids).inputIds.length, 77);
    }
  }
  // Emoji are byte-level BPE: one cat emoji is always the same ids, however many there are.
  const cat = hf.encode('🐱');
  assert.deepEqual(hf.encode('🐱 🐱'), [...cat, ...cat]);
  // 1,000 words: 1,000 ids, untruncated; framing truncates to 77.
  const words = Array.from({ length: 1000 }, (_, i) => ['cat', 'dog', 'house', 'tree'][i % 4]).join(' ');
  const ids = hf.encode(words);
  assert.equal(ids.length, 1000);
  assert.deepEqual(ids.slice(0, 4), [2368, 1929, 1212, 2677]);
  assert.equal(frame(ids).inputIds.length, 77);
  assert.equal(frame(ids).inputIds[76], EOS);
  // A single 5,000-character word and a line of 1,000 control characters.
  assert.ok(hf.encode('a'.repeat(5000)).length > 0);
  assert.deepEqual(hf.encode('\u0007'.repeat(1000)), []);
  assert.equal(hf.decode([999999, -1]), '', 'unknown ids are skipped');
});
