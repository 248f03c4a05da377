// Loads the N-API addon (native/) and describes its functions. Everything else in src/torch goes
// through this file; nothing above src/torch touches the addon directly.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Opaque handles owned by the addon. */
export type Handle = { readonly __brand: 'TensorHandle' };
export type OpHandle = { readonly __brand: 'OpHandle' };
export type GeneratorHandle = { readonly __brand: 'GeneratorHandle' };
export type MappingHandle = { readonly __brand: 'MappingHandle' };
export type InferenceGuard = { readonly __brand: 'InferenceGuard' };

export interface RuntimeInfo {
  torchVersion: string;
  numThreads: number;
  blasThreads: number;
  blas: string;
  cuda: boolean;
  cudaDevices: number;
  mps: boolean;
  parallelInfo: string;
}

export interface NativeAddon {
  dispose(...h: unknown[]): void;
  isDisposed(h: Handle): boolean;
  fromBuffer(buf: ArrayBufferView, dtype: number, shape: readonly number[], zeroCopy: boolean): Handle;
  toBuffer(h: Handle): Buffer;
  shape(h: Handle): number[];
  strides(h: Handle): number[];
  dim(h: Handle): number;
  numel(h: Handle): number;
  dtype(h: Handle): number;
  device(h: Handle): string;
  describe(h: Handle): string;
  isContiguous(h: Handle): boolean;
  sameTensor(a: Handle, b: Handle): boolean;
  alias(h: Handle): Handle;
  requiresGrad(h: Handle): boolean;
  setRequiresGrad(h: Handle, b: boolean): void;
  grad(h: Handle): Handle | null;
  setGrad(h: Handle, g: Handle | null): void;
  isLeaf(h: Handle): boolean;
  backward(h: Handle, grad: Handle | null, retainGraph?: boolean, createGraph?: boolean): void;
  isGradEnabled(): boolean;
  setGradEnabled(b: boolean): boolean;
  enterInference(): InferenceGuard;
  exitInference(g: InferenceGuard): void;
  isInferenceMode(): boolean;
  isInferenceTensor(h: Handle): boolean;
  manualSeed(seed: number | bigint): void;
  newGenerator(seed: number | bigint, device?: string): GeneratorHandle;
  generatorState(g: GeneratorHandle | string | null): Buffer;
  setGeneratorState(g: GeneratorHandle | string | null, state: Buffer): void;
  stats(): { live: number; created: number; leakedToGc: number; reportedBytes: number };
  torchVersion: string;
  findOp(name: string, overload?: string): OpHandle | null;
  opSchema(op: OpHandle): string;
  callOp(op: OpHandle, args: unknown[], mode?: number): unknown;
  setNumThreads(n: number): void;
  setBlasThreads(n: number): boolean;
  runtime(): RuntimeInfo;
  setAllowTF32(cudnn: boolean, cublas: boolean): void;
  cudaSynchronize(): void;
  setAutocast(enabled: boolean, dtype: number): { enabled: boolean; dtype: number };
  autocastExit(enabled: boolean, dtype: number): void;
  mmapOpen(path: string): MappingHandle;
  mmapSize(m: MappingHandle): number;
  mmapRead(m: MappingHandle, offset: number | bigint, length: number | bigint): Buffer;
  mmapTensor(m: MappingHandle, offset: number | bigint, dtype: number, shape: readonly number[]): Handle;
  mmapClose(m: MappingHandle): void;
}

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const addonPath = join(root, 'build', 'Release', 'sdtune_native.node');

function load(): NativeAddon {
  if (!existsSync(addonPath)) {
    throw new Error(
      `sdtune's native addon is not built (${addonPath} is missing). Run \`npm run setup\`, ` +
        'which installs libtorch (Debian: apt-get install -y libtorch-dev libopenblas0) and builds it.',
    );
  }
  const require = createRequire(import.meta.url);
  try {
    return require(addonPath) as NativeAddon;
  } catch (e) {
    const msg = (e as Error).message;
    if (/lib(torch|c10)[^:]*\.so/.test(msg)) {
      throw new Error(
        `libtorch could not be loaded (${msg.split('\n')[0]}). Install it with ` +
          '`sudo apt-get install -y libtorch-dev libopenblas0`, or point LIBTORCH at a libtorch folder and run `npm run build:native`.',
      );
    }
    throw e;
  }
}

export const native: NativeAddon = load();
