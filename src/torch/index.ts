// sdtune's tensor library: PyTorch's kernels and autograd (libtorch) under a typed TS API.
import { native, type RuntimeInfo } from './native.ts';

export { Tensor, Generator, Op, op, callOp, type Scalar, type Shape, type Reduction } from './tensor.ts';
export { type DType, type Device, DTYPE_BYTES, isFloating } from './dtype.ts';
export { tidy, keep, scopeDepth } from './scope.ts';
export { checkpoint, isCheckpointing, CheckpointTape } from './checkpoint.ts';
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
/**
 * A warning when matrix products go through a slow BLAS (Debian's libtorch uses whatever
 * libblas.so.3 points to; the reference BLAS is ~37× slower than OpenBLAS), or null.
 */
export function blasWarning(blasPath: string): string | null {
  if (/openblas|mkl|blis|atlas|accelerate/i.test(blasPath) || blasPath === 'unknown') return null;
  return (
    `sdtune: matrix products use a slow BLAS (${blasPath}); training will be many times slower. ` +
    'Install OpenBLAS: sudo apt-get install -y libopenblas0 (then check: update-alternatives --display libblas.so.3-x86_64-linux-gnu)'
  );
}
let blasChecked = false;
/** Prints the slow-BLAS warning once per process (called when the library loads). */
export function checkBlas(): void {
  if (blasChecked) return;
  blasChecked = true;
  const w = blasWarning(native.runtime().blas);
  if (w && !process.env.SDTUNE_QUIET) process.stderr.write(w + '\n');
}
checkBlas();

export const torchVersion: string = native.torchVersion;

/** Lazy access to a memory-mapped file (files over 4 GiB included); used by the formats layer. */
export { mapFile, MappedFile } from './mmap.ts';
