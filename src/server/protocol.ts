// What the server and a job's worker process say to each other over IPC. The server resolves every
// name to a path inside the data folder before a task reaches a worker; a worker never sees a
// request.
import type { TrainConfig } from '../training/config.ts';
import type { GenerateJob } from '../sampling/run.ts';
import type { StepPoint } from './api-types.ts';

export type WorkerTask =
  | { kind: 'train'; config: TrainConfig; resume: boolean; device: string }
  | { kind: 'preflight'; config: TrainConfig; device: string; scratch: string }
  | { kind: 'generate'; job: GenerateJob; outDir: string; prefix: string; /** img2img: base64 PNG/JPEG/WebP, decoded in the worker. */ initImage?: string; /** Live preview every N sampling steps (0 = none). */ previewEvery?: number }
  | { kind: 'convert'; input: string; output: string; to?: string; dtype?: string; /** LoRAs: module names come from this checkpoint. */ model?: string }
  | { kind: 'create-embedding'; model: string; name: string; vectors: number; initText: string; out: string; device: string }
  | { kind: 'create-hypernetwork'; name: string; sizes: number[]; layerStructure: number[]; activation: string; layerNorm: boolean; dropoutStructure?: number[]; weightInit: string; out: string };

/** `threads`: libtorch's intra-op threads from now on (the CPU shared with a job in the other lane, or not). */
export type ToWorker = { type: 'start'; task: WorkerTask } | { type: 'stop' } | { type: 'threads'; n: number };

export type FromWorker =
  | { type: 'progress'; step: number; total: number; message: string; loss?: number }
  | { type: 'record'; record: StepPoint }
  /** A live preview of a generation (the batch side by side), as PNG bytes. */
  | { type: 'preview'; step: number; total: number; png: Uint8Array }
  /** A warning for the user (a skipped image, an unreadable caption): kept with the job. */
  | { type: 'message'; text: string }
  | { type: 'done'; result: unknown }
  | { type: 'error'; message: string };
