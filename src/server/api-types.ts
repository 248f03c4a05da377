// The studio's HTTP API in types: what every /api route returns and accepts. The server builds its
// request validation and the OpenAPI document from schema.ts; these types are what the web UI
// (web/src) and tests read. Types only — no runtime code — so web/ can import them over the HTTP
// boundary without pulling in the server.

export type TechniqueKind = 'dreambooth' | 'lora' | 'embedding' | 'hypernetwork';
export type AdapterKind = 'lora' | 'embedding' | 'hypernetwork';
export type JobType = 'train' | 'generate' | 'preflight' | 'convert' | 'create-embedding' | 'create-hypernetwork';
export type JobStatus = 'queued' | 'running' | 'done' | 'failed' | 'cancelled' | 'interrupted';

/** Every error: HTTP 4xx/5xx with this body. */
export interface ApiError {
  error: string;
  /** The field or path at fault, when there is one. */
  field?: string;
}

export interface StatusInfo {
  version: string;
  data: string;
  device: string;
  /** The running job, if any (one per device at a time). */
  running: string | null;
  queued: number;
  default_model: string;
}

export interface ModelInfo {
  /** What requests name it by. */
  name: string;
  /** The A1111-style title ("name.safetensors [hash]"). */
  title: string;
  kind: string;
  family: string;
  bytes: number;
  /** true for the embedded toy model (not deletable). */
  builtin: boolean;
}

export interface AdapterInfo {
  kind: AdapterKind;
  name: string;
  file: string;
  bytes: number;
  modified: string;
}

export interface InspectInfo {
  format: string;
  kind: string;
  family: string;
  tensors: number;
  parameters: number;
  bytes: number;
  dtypes: Record<string, number>;
  metadata: Record<string, string>;
  messages: string[];
}

export interface DatasetSummary {
  name: string;
  images: number;
  captioned: number;
}

export interface DatasetImage {
  file: string;
  caption: string | null;
  width: number;
  height: number;
  bytes: number;
  /** GET this for the picture. */
  url: string;
}

export interface DatasetDetail extends DatasetSummary {
  items: DatasetImage[];
}

export interface BucketPreview {
  resolution: number;
  buckets: { width: number; height: number; images: number }[];
  text: string;
}

export interface LoraRef {
  name: string;
  /** UNet weight (and the text encoder's, unless te is given). */
  weight: number;
  te?: number;
}

export interface HypernetworkRef {
  name: string;
  weight: number;
}

export interface GenerateRequest {
  prompt: string;
  negative_prompt?: string;
  /** A model name from GET /api/models (default: the current one). */
  model?: string;
  seed?: number;
  steps?: number;
  sampler?: 'ddim' | 'euler' | 'euler_a' | 'dpmpp_2m';
  karras?: boolean;
  cfg?: number;
  width?: number;
  height?: number;
  batch?: number;
  clip_skip?: number;
  loras?: LoraRef[];
  hypernetworks?: HypernetworkRef[];
  /** img2img: a PNG or JPEG as base64 (a data: URL is fine) and how much to change it. */
  init_image?: string;
  strength?: number;
  /** A live preview every N sampling steps (GET /api/jobs/{id}/preview, 'preview' events); default 5, 0 = none. */
  preview_every?: number;
}

export interface OutputImage {
  file: string;
  url: string;
  seed: number;
  /** A1111's "parameters" text, as stored in the PNG. */
  parameters: string;
  created: string;
}

export interface GenerateResult {
  images: OutputImage[];
  seconds: number;
}

export interface TrainRequest {
  technique: TechniqueKind;
  /** A dataset name from GET /api/datasets. */
  dataset: string;
  /** The product's name (file stem) in the library. */
  name: string;
  /** Model name (default: the current one). */
  model?: string;
  /** An optional held-out dataset for the validation loss. */
  validation_dataset?: string;
  /**
   * The same settings as `sdtune train` and its --config files (camelCase or snake_case keys: steps,
   * lr, rank, batchSize, token, classPrompt, numClassImages, …). Paths are the server's business:
   * model, data, out, workDir, classData and validationData are refused here.
   */
  settings?: Record<string, unknown>;
  /** LoRA, embedding, hypernetwork: the library file (by name, of the same technique) to continue training from. */
  continue_from?: string;
  /** Replace a library file of the same name (default: refuse with 409). */
  overwrite?: boolean;
  /** Embeddings: 'pt' writes A1111's .pt, 'safetensors' (default) the kohya/diffusers layout. */
  file_format?: 'safetensors' | 'pt';
}

export interface Preflight {
  steps: number;
  trainable_parameters: number;
  /** Seconds, estimated from a timed step on this machine. */
  eta_seconds: number;
  /** Bytes the job needs in memory (model, optimizer state, activations), estimated. */
  memory_bytes: number;
  text: string;
}

export interface StepPoint {
  step: number;
  loss: number;
  lr: number;
  val_loss?: number;
  prior_drift?: number;
  /** The meter's finer curves (see StepRecord in src/training/loop.ts). */
  val_by_t?: number[];
  concept_gap?: number;
  gap_by_t?: number[];
  drift_by_t?: number[];
  sample_score?: number;
}

export interface Recommendation {
  step: number;
  verdict: 'underfit' | 'ok' | 'overfit';
  message: string;
}

export interface Snapshot {
  step: number;
  file: string;
}

export interface SampleImage {
  step: number;
  url: string;
}

export interface Job {
  id: string;
  type: JobType;
  status: JobStatus;
  created: string;
  started: string | null;
  finished: string | null;
  /** The request as accepted. */
  request: Record<string, unknown>;
  progress: { step: number; total: number; message: string; loss?: number } | null;
  /** Per type: GenerateResult, Preflight, { product: AdapterInfo | ModelInfo, … }. */
  result: unknown;
  error: string | null;
  /** What the worker warned about, in order: skipped images, unreadable captions, files that failed mid-run. */
  warnings: string[];
}

export interface JobDetail extends Job {
  records: StepPoint[];
  recommendation: Recommendation | null;
  snapshots: Snapshot[];
  samples: SampleImage[];
}

/** Server-sent events on GET /api/events (all jobs) or /api/jobs/{id}/events. */
export type JobEvent =
  | { type: 'job'; job: Job }
  | { type: 'progress'; id: string; step: number; total: number; message: string; loss?: number }
  | { type: 'record'; id: string; record: StepPoint }
  /** A new live preview of a running generation: GET /api/jobs/{id}/preview. */
  | { type: 'preview'; id: string; step: number; total: number }
  | { type: 'warning'; id: string; text: string };
