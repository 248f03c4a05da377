// `npm run demo` as it runs (about 3.5 minutes here): the toy model learns the subject (DreamBooth, textual inversion) and
// the outline style (LoRA, hypernetwork) through the same training jobs as `sdtune train`; each
// technique shows its concept more often than the base model does, and the report, its charts and
// report.json are written and read back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runDemo, type DemoReport } from '../../src/toy/demo.ts';
import { decodePng } from '../../src/formats/png.ts';
import { tempDir } from '../helpers.ts';

test('the demo teaches every technique its concept and writes the report', { timeout: 900_000 }, async () => {
  const { dir, cleanup } = tempDir();
  try {
    const lines: string[] = [];
    const r = await runDemo({ out: dir, log: (l) => lines.push(l) });
    for (const t of r.techniques) console.log(`# ${t.technique}: concept ${t.concept_fidelity.toFixed(2)} (base ${t.concept === 'subject' ? r.base.subject_rate : r.base.style_rate}), prompt ${t.prompt_fidelity.toFixed(2)}, preservation ${t.prior_preservation.toFixed(2)}, ${t.seconds.toFixed(1)} s`);
    assert.deepEqual(r.techniques.map((t) => t.technique), ['dreambooth', 'embedding', 'lora', 'hypernetwork']);
    for (const t of r.techniques) {
      const base = t.concept === 'subject' ? r.base.subject_rate : r.base.style_rate;
      assert.ok(t.concept_fidelity >= base + 0.1, `${t.technique} should show the ${t.concept} more often than the base: ${t.concept_fidelity} vs ${base}`);
      assert.ok(t.prior_preservation > 0 && t.prior_preservation <= 1, `${t.technique} preservation ${t.prior_preservation}`);
      assert.ok(t.trainable_parameters > 0 && t.file_bytes > 0 && t.seconds > 0);
      assert.ok(existsSync(t.file), t.file);
    }
    // The products' sizes tell the techniques apart: a whole model ≫ LoRA ≫ embedding.
    const size = Object.fromEntries(r.techniques.map((t) => [t.technique, t.file_bytes]));
    assert.ok(size.dreambooth > 10 * size.lora && size.lora > 10 * size.embedding, JSON.stringify(size));
    const params = Object.fromEntries(r.techniques.map((t) => [t.technique, t.trainable_parameters]));
    assert.equal(params.embedding, 64, 'one vector of the toy text encoder\'s width');
    // report.json: one entry per technique with the fields the issue names.
    const json = JSON.parse(readFileSync(join(dir, 'report.json'), 'utf8')) as DemoReport;
    assert.equal(json.techniques.length, 4);
    for (const t of json.techniques) for (const k of ['technique', 'concept_fidelity', 'prior_preservation', 'trainable_parameters', 'seconds', 'file_bytes']) assert.ok(k in t, `report.json lacks ${k}`);
    const lora = json.techniques.find((t) => t.technique === 'lora')!;
    assert.deepEqual(lora.style_strength!.map((s) => s.weight), [0, 0.25, 0.5, 0.75, 1]);
    assert.ok(lora.style_strength![4].value > lora.style_strength![0].value, 'the style grows with the LoRA weight');
    assert.equal(lora.style_strength![0].value, r.base.style_rate, 'LoRA weight 0 is the base model');
    // The report and every picture it shows.
    const md = readFileSync(join(dir, 'report.md'), 'utf8');
    const html = readFileSync(join(dir, 'report.html'), 'utf8');
    assert.match(html, /<table>/);
    const pics = [...md.matchAll(/!\[[^\]]*\]\(([^)]+)\)/g)].map((m) => m[1]);
    assert.ok(pics.length >= 10, `${pics.length} pictures in the report`);
    for (const p of pics) {
      const png = decodePng(readFileSync(join(dir, p)));
      assert.ok(png.width >= 100 && png.height >= 60, `${p} is ${png.width}×${png.height}`);
      assert.ok(html.includes(`src="${p}"`), `the HTML shows ${p}`);
    }
    assert.match(lines.join('\n'), /report: .*report\.html/);
  } finally {
    cleanup();
  }
});
