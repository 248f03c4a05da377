// sdtune's tensor library: PyTorch's kernels and autograd (libtorch) under a typed TS API.
import { native, type RuntimeInfo } from './native.ts';

export { Tensor, Generator, Op, op, callOp, type Scalar, type Shape, type Reduction } from './tensor.ts';
export { type DType, type Device, DTYPE_BYTES, isFloating } from './dtype.ts';
export { tidy, keep, scopeDepth } from './scope.ts';
export * from './functional.ts';
export * as nn from './nn.ts';
export * as optim from './optim.ts';

/** Tensor bookkeeping: live = created and not yet disposed. */
export function memoryStats(): { live: number; created: number; leakedToGc: number; reportedBytes: number } {
  return native.stats();
}
export function runtime(): RuntimeInfo {
  return native.runtime();
}
export function setNumThreads(n: number): void {
  native.setNumThreads(n);
}
export function setBlasThreads(n: number): boolean {
  return native.setBlasThreads(n);
}
export function cudaAvailable(): boolean {
  return native.runtime().cuda;
}
/** TF32 matmuls/convs on Ampere+ GPUs (PyTorch's defaults: cuDNN true, cuBLAS false). */
export function setAllowTF32(cudnn: boolean, cublas: boolean): void {
  native.setAllowTF32(cudnn, cublas);
}
/** Waits for queued GPU work (timings). // waits for the device */
export function synchronize(): void {
  native.cudaSynchronize();
}
export const torchVersion: string = native.torchVersion;

/** Lazy access to a memory-mapped file (files over 4 GiB included); used by the formats layer. */
export { mapFile, MappedFile } from './mmap.ts';
