// Child process of bench/formats.ts: loads a file one way and reports time and peak RSS
// (VmHWM) of this process alone. Modes: raw (read the bytes), mmap (tensors over the mapping,
// every page touched), read (each tensor read into its own memory).
import { openSync, readSync, closeSync, fstatSync, readFileSync } from 'node:fs';
import * as T from '../src/torch/index.ts';
import { SafetensorsFile, torchDtype } from '../src/formats/safetensors.ts';

const [path, mode] = process.argv.slice(2);
const hwm = () => Number(/VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))![1]) / 1024;
const base = hwm();
const t0 = performance.now();
let checksum = 0;
if (mode === 'raw') {
  // Read the file in 64 MiB pieces into one reused buffer, as a plain copy loop would.
  const fd = openSync(path, 'r');
  const size = fstatSync(fd).size;
  const chunk = Buffer.allocUnsafeSlow(64 << 20);
  for (let off = 0; off < size; off += chunk.length) {
    const n = readSync(fd, chunk, 0, Math.min(chunk.length, size - off), off);
    checksum += chunk[n - 1];
  }
  closeSync(fd);
} else {
  const f = SafetensorsFile.open(path);
  const fd = openSync(path, 'r');
  for (const e of f.entries()) {
    T.tidy(() => {
      let t: T.Tensor;
      if (mode === 'mmap') {
        t = f.get(e.key);
      } else {
        // pread straight into memory the tensor then owns (no page-cache pages in our RSS)
        const buf = Buffer.allocUnsafeSlow(e.byteLength);
        readSync(fd, buf, 0, e.byteLength, f.header.dataStart + e.dataOffsets[0]);
        t = T.fromBuffer(buf, torchDtype(e.dtype)!, e.shape, { copy: false });
      }
      // Touch every 4 KiB page (one byte each), so every page of the tensor is really in memory
      // (aten::view.dtype sees the bytes as uint8 without a copy).
      const bytes = (T.callOp('aten::view', 'dtype', t.flatten(), 0) as T.Tensor).slice(0, 0, null, 4096);
      checksum += Number(bytes.sum().item());
      T.keep(t); // keep the loaded tensors alive, as a model would
    });
  }
  closeSync(fd);
}
const ms = performance.now() - t0;
console.log(JSON.stringify({ ms, peak_rss_mb: hwm(), base_rss_mb: base, checksum }));
