// `npm run bench`: every benchmark, one JSON object per line (see bench/common.ts for the format).
// Pick some with `npm run bench -- engine formats`.
import { benchEngine } from './engine.ts';
import { benchFormats } from './formats.ts';
import { benchSd } from './sd.ts';
import { benchTrain } from './train.ts';
import { benchToyMeter } from './toy-meter.ts';
import type { BenchLine } from './common.ts';

const suites: Record<string, () => BenchLine[] | Promise<BenchLine[]>> = {
  engine: benchEngine,
  formats: benchFormats,
  sd: benchSd,
  train: benchTrain,
  // Streams its lines (the sweep takes a while); run.ts prints only the summary after it.
  'toy-meter': async () => (await benchToyMeter({ onLine: (l) => console.log(JSON.stringify(l)) })).slice(-1),
};

const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
for (const [name, run] of Object.entries(suites)) {
  if (wanted.length && !wanted.includes(name)) continue;
  for (const line of await run()) {
    for (const [k, v] of Object.entries(line)) if (typeof v === 'number' && k.endsWith('_ms')) line[k] = +v.toFixed(4);
    console.log(JSON.stringify(line));
  }
}
