// `npm run bench`: every benchmark, one JSON object per line (see bench/common.ts for the format).
// Pick some with `npm run bench -- engine formats`.
import { benchEngine } from './engine.ts';
import { benchFormats } from './formats.ts';
import { benchSd } from './sd.ts';
import { benchTrain } from './train.ts';
import { benchStudioLanes } from './studio.ts';
import { readFileSync } from 'node:fs';
import { benchToyMeter, benchToyMeterOracle, runLine, sweepSummary, type SweepResult } from './toy-meter.ts';
import type { BenchLine } from './common.ts';

const suites: Record<string, () => BenchLine[] | Promise<BenchLine[]>> = {
  engine: benchEngine,
  formats: benchFormats,
  sd: benchSd,
  train: benchTrain,
  studio: benchStudioLanes,
  // Streams its lines (the sweep takes a while); run.ts prints only the summary after it.
  'toy-meter': async () => (await benchToyMeter({ onLine: (l) => console.log(JSON.stringify(l)) })).slice(-2),
  // Re-scores a recorded sweep (SDTUNE_METER_LOG, default the committed one) with the meter as it is
  // now and refits its settings: every run's line, the summary and the calibration; no training.
  'toy-meter-fit': () => {
    const { file, summary, runs } = sweepLog();
    return [...(runs as SweepResult[]).map(runLine), ...sweepSummary(runs as SweepResult[], { scale: summary.scale, probe_count: summary.probe_count, rescored_from: file })];
  },
  // The recorded sweep's style runs replayed from their snapshots (still in out/bench-toy-meter):
  // the meter with the sample check's detector, and with the judge in its place.
  'toy-meter-oracle': async () => (await benchToyMeterOracle({ log: sweepLog().runs, onLine: (l) => console.log(JSON.stringify(l)) })).slice(-1),
};

/** A recorded sweep (SDTUNE_METER_LOG, default the committed one): its summary and its runs with their validation log. */
function sweepLog(): { file: string; summary: Record<string, unknown>; runs: SweepResult[] } {
  const file = process.env.SDTUNE_METER_LOG ?? 'docs/bench-cpu-toy-meter.jsonl';
  const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
  const runs = lines.filter((l) => l.name === 'toy-meter' && Array.isArray(l.log));
  if (runs.length === 0) throw new Error(`${file} holds no sweep runs with their validation log: record one with npm run bench -- toy-meter`);
  return { file, summary: lines.find((l) => l.name === 'toy-meter-summary') ?? {}, runs };
}

const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
for (const [name, run] of Object.entries(suites)) {
  if (wanted.length && !wanted.includes(name)) continue;
  for (const line of await run()) {
    for (const [k, v] of Object.entries(line)) if (typeof v === 'number' && k.endsWith('_ms')) line[k] = +v.toFixed(4);
    console.log(JSON.stringify(line));
  }
}
