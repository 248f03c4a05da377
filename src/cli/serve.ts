// `sdtune serve [--port 7860] [--host 127.0.0.1] [--data DIR] [--auth user:pass] [--insecure] [--device cpu|cuda] [--serial]`:
// the studio (web UI, typed API, A1111-compatible API). Ctrl-C stops it; a running training job
// saves a checkpoint first and is resumable after the next start.
import { parseArgs } from 'node:util';
import { startStudio } from '../server/server.ts';

export class ServeUsageError extends Error {}

export const SERVE_USAGE = 'sdtune serve [--port 7860] [--host 127.0.0.1] [--data DIR (default ./sdtune-data)] [--auth user:pass] [--insecure] [--device cpu|cuda] [--serial (generation waits for training: for a GPU without memory for two models)]';

export async function runServe(args: string[]): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({ args, options: { port: { type: 'string' }, host: { type: 'string' }, data: { type: 'string' }, auth: { type: 'string' }, insecure: { type: 'boolean' }, device: { type: 'string' }, serial: { type: 'boolean' } } }));
  } catch (e) {
    throw new ServeUsageError(`${(e as Error).message.split('\n')[0]}\n${SERVE_USAGE}`);
  }
  const port = values.port === undefined ? 7860 : Number(values.port);
  let s;
  try {
    s = await startStudio({ port, host: values.host, data: values.data ?? 'sdtune-data', auth: values.auth ?? process.env.SDTUNE_AUTH, insecure: values.insecure, device: values.device, serial: values.serial });
  } catch (e) {
    throw new ServeUsageError((e as Error).message);
  }
  process.stdout.write(`sdtune studio: ${s.url}  (data: ${s.studio.data.root}; Ctrl-C stops)\n`);
  let stopping = false;
  const stop = () => {
    if (stopping) process.exit(130);
    stopping = true;
    process.stdout.write('\nstopping: a running training job saves a checkpoint first (Ctrl-C again to quit at once)\n');
    s.close().then(() => process.exit(0));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  await new Promise(() => {});
}
