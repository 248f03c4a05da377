// A file memory-mapped natively (copy-on-write), for reading tensors without a full read and past
// Node's 4 GiB Buffer limit. Tensors made from it keep the mapping alive on their own.
import { native, type MappingHandle } from './native.ts';
import { DTYPE_CODE, type DType } from './dtype.ts';
import { Tensor } from './tensor.ts';

export class MappedFile {
  private h: MappingHandle | null;
  readonly size: number;
  constructor(readonly path: string) {
    this.h = native.mmapOpen(path);
    this.size = native.mmapSize(this.h);
  }
  private get handle(): MappingHandle {
    if (this.h === null) throw new Error(`${this.path}: mapping used after close()`);
    return this.h;
  }
  /** A copy of bytes [offset, offset+length). */
  read(offset: number, length: number): Buffer {
    return native.mmapRead(this.handle, offset, length);
  }
  /** A CPU tensor over bytes at offset (zero copy when aligned). */
  tensor(offset: number, dtype: DType, shape: readonly number[]): Tensor {
    return new Tensor(native.mmapTensor(this.handle, offset, DTYPE_CODE[dtype], shape));
  }
  /** Releases this handle; tensors already made stay valid. */
  close(): void {
    if (this.h !== null) native.mmapClose(this.h);
    this.h = null;
  }
}

export function mapFile(path: string): MappedFile {
  return new MappedFile(path);
}
