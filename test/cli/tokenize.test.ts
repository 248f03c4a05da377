// `sdtune tokenize` end to end: the real CLI in a child process, its output checked against the
// tokenizer fixture (fixtures/tokenizer/test_vectors.json) and A1111's token counter.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { formatTokenize, tokenizePrompt } from '../../src/cli/tokenize.ts';
import { REPO, fixture } from '../helpers.ts';

interface Case {
  name: string;
  text: string;
  openai: { ids: number[] };
  hf_slow_ftfy: { input_ids: number[] };
}
const cases = (JSON.parse(readFileSync(fixture('tokenizer', 'test_vectors.json'), 'utf8')) as { cases: Case[] }).cases;
const byName = (name: string): Case => {
  const c = cases.find((x) => x.name === name);
  assert.ok(c, `fixture case ${name} missing`);
  return c;
};

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Starts the CLI now. Each start costs about 0.8 s of CPU (main.ts loads every subcommand), so the
 * file makes three runs, all started at once, and checks the rest through tokenizePrompt.
 */
function sdtune(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { cwd: REPO, encoding: 'utf8' }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

const runs = {
  tags: sdtune('tokenize', byName('tags_prompt').text),
  long: sdtune('tokenize', byName('long_prompt_over_77').text, '--json'),
  sd2: sdtune('tokenize', '--sd2', '--json', byName('html_with_tags').text),
};

test('tokenize TEXT prints the fixture ids and the A1111 count (e.g. 18/75)', async () => {
  const c = byName('tags_prompt');
  const r = await runs.tags;
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  assert.equal(lines.length, 2);
  assert.deepEqual(lines[0].split(' ').map(Number), c.hf_slow_ftfy.input_ids);
  assert.equal(c.hf_slow_ftfy.input_ids.length - 2, 18);
  assert.match(lines[1], /^18\/75 {2}\(18 ids between BOS and EOS, sd1\)$/);
});

test('tokenize --json prints one JSON object: untruncated ids and the chunked count', async () => {
  // 86 content tokens: more than one 77-token frame, so the ids are not truncated and the
  // counter shows the second chunk's limit.
  const c = byName('long_prompt_over_77');
  const r = await runs.long;
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { ids: number[]; symbols: string[]; count: number; limit: number; model: string };
  assert.deepEqual(out.ids, c.hf_slow_ftfy.input_ids);
  assert.equal(out.ids.length, 88);
  assert.equal(out.count, 86);
  assert.equal(out.limit, 150);
  assert.equal(out.model, 'sd1');
  assert.equal(out.symbols.length, out.ids.length);
  assert.deepEqual([out.symbols[0], out.symbols[1], out.symbols[out.symbols.length - 1]], ['<|startoftext|>', 'a</w>', '<|endoftext|>']);
});

test('tokenize --sd2 uses the open_clip cleanup; emphasis syntax is not counted', async () => {
  const html = byName('html_with_tags');
  const sd2 = JSON.parse((await runs.sd2).stdout) as { ids: number[]; count: number; model: string };
  assert.deepEqual(sd2.ids, [49406, ...html.openai.ids, 49407]);
  assert.notDeepEqual(sd2.ids, html.hf_slow_ftfy.input_ids); // the one case where the two differ
  assert.equal(sd2.model, 'sd2');
  assert.equal(sd2.count, html.openai.ids.length);
  // The raw ids include '(' ':' '1.2' …; A1111's counter sees only the words and commas.
  const w = byName('a1111_weights');
  const weights = tokenizePrompt(w.text);
  assert.deepEqual(weights.ids, w.hf_slow_ftfy.input_ids);
  assert.equal(weights.count, 12); // masterpiece , best quality , ugly , detailed eyes , very detailed
  assert.equal(weights.limit, 75);
  assert.equal(formatTokenize(weights).split('\n')[1], '12/75  (27 ids between BOS and EOS, sd1)');
});
