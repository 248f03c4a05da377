// Gradient checkpointing (torch.utils.checkpoint, by segments): a model marks segments of its
// forward pass with checkpoint(fn, inputs). While a CheckpointTape records, each segment runs
// without building a graph and only its inputs and outputs are kept; tape.backward() then runs
// the segments again, last first, with the graph on, and passes the gradients back through them.
// Activations inside a segment live for one segment's backward at a time: less memory for about
// one more forward pass of time.
//
// libtorch's C++ API has no checkpoint() (it is Python), and a custom autograd function would
// have to call back into JS from CUDA's backward threads. So the tape works outside autograd:
//   1. forward: each segment's outputs become leaves that require grad. Code between segments
//      (a final convolution, the loss) builds a normal graph on them.
//   2. loss.backward() fills those leaves' .grad.
//   3. tape.backward(): for each segment, last first, its inputs become fresh leaves, the segment
//      runs again with the graph on (same random state, same autocast), and backward from its
//      outputs with their gradients — the leaves' .grad plus what later segments passed back —
//      gives the parameters' gradients and its inputs' gradients. Those go to the segments that
//      made the inputs, or, for inputs from outside the tape (the text encoder's context, the
//      timestep embedding), into their own graphs: at the end, or — for a tensor computed between
//      segments, which may depend on an earlier segment's outputs — before that segment's turn
//      (Tensor.seq tells what was made after a segment ran).
// The gradients are the same as without the tape, up to float rounding in the order of sums.
import { isFloating, type Device } from './dtype.ts';
import { enableGrad, getRngState, noGrad, isGradEnabled, setRngState } from './functional.ts';
import { keep, tidy } from './scope.ts';
import { tensorClock, type Tensor } from './tensor.ts';

interface Segment {
  fn: (...xs: Tensor[]) => Tensor[];
  /** The inputs as the caller passed them (identity only: the caller's scopes may dispose them). */
  inputsOf: readonly Tensor[];
  /** Aliases of the inputs, kept. */
  inputs: Tensor[];
  /** The tensors handed to the caller (kept, leaves that require grad). May repeat one tensor. */
  outputs: Tensor[];
  rng: { cpu: Buffer; device?: { name: Device; state: Buffer } };
  /** tensorClock() when it ran: tensors made later may be computed from its outputs. */
  clock: number;
}

let recording: CheckpointTape | null = null;

/** Backward from tensors with given gradients, in one pass: d/dy Σ(y·g) = g, exactly. Call it in a scope. */
function backwardFrom(pairs: readonly (readonly [Tensor, Tensor])[]): void {
  if (pairs.length === 1) pairs[0][0].backward(pairs[0][1]);
  else pairs.map(([y, g]) => y.mul(g).sum()).reduce((a, b) => a.add(b)).backward();
}

/**
 * Runs fn(...inputs) as a checkpointed segment when a tape records and gradients are on;
 * otherwise simply runs it (in its own scope: what it made and does not return is freed). fn must
 * depend on nothing but its inputs and parameters (it runs twice), and callers must pass a
 * segment's outputs on as they were returned.
 */
export function checkpoint(fn: (...xs: Tensor[]) => Tensor[], inputs: readonly Tensor[]): Tensor[] {
  const tape = recording;
  if (tape === null || !isGradEnabled()) return tidy(() => fn(...inputs));
  return tape.record(fn, inputs);
}

/** True while a tape records (a model may then mark more of its forward pass as segments). */
export function isCheckpointing(): boolean {
  return recording !== null && isGradEnabled();
}

export class CheckpointTape {
  private segments: Segment[] = [];
  /** Which segment made a tensor the caller holds. */
  private producer = new Map<Tensor, Segment>();
  private disposed = false;

  /**
   * @param around runs the recomputation as the forward pass ran (e.g. under the same autocast).
   */
  constructor(private readonly around: <R>(fn: () => R) => R = (fn) => fn()) {}

  /** Runs fn with this tape recording the checkpoint() segments inside it. */
  run<R>(fn: () => R): R {
    if (recording !== null) throw new Error('checkpoint tapes do not nest');
    recording = this;
    try {
      return fn();
    } finally {
      recording = null;
    }
  }

  /** The number of segments recorded (for tests). */
  get size(): number {
    return this.segments.length;
  }

  record(fn: (...xs: Tensor[]) => Tensor[], inputs: readonly Tensor[]): Tensor[] {
    if (this.disposed) throw new Error('this checkpoint tape was disposed');
    const clock = tensorClock();
    const deviceName = inputs.find((x) => x.device.startsWith('cuda'))?.device;
    const rng = { cpu: getRngState(), device: deviceName ? { name: deviceName, state: getRngState(deviceName) } : undefined };
    // An input handed back as it is becomes a new tensor: the tape owns what it hands out.
    const outputs = noGrad(() => tidy(() => fn(...inputs).map((o) => (inputs.includes(o) ? o.detach() : o))));
    const seg: Segment = { fn, inputsOf: [...inputs], inputs: inputs.map((x) => keep(x.alias())), outputs, rng, clock };
    for (const o of new Set(outputs)) {
      keep(o);
      if (isFloating(o.dtype)) o.requiresGrad_(true);
      this.producer.set(o, seg);
    }
    this.segments.push(seg);
    return outputs;
  }

  /**
   * Backward through the recorded segments, after loss.backward() has filled their outputs'
   * gradients. Parameters' .grad accumulate as with a plain backward. Then disposes the tape.
   */
  backward(): void {
    if (this.disposed) throw new Error('this checkpoint tape was disposed');
    /** Gradients passed back to a segment's outputs by the segments that read them. */
    const passed = new Map<Tensor, Tensor>();
    /** Gradients of inputs from outside the tape, by the caller's tensor (a kept alias of it in `aliasOf`). */
    const external = new Map<Tensor, Tensor>();
    const aliasOf = new Map<Tensor, Tensor>();
    const add = (m: Map<Tensor, Tensor>, k: Tensor, g: Tensor) => {
      const had = m.get(k);
      m.set(k, had ? keep(had.add(g)) : keep(g.alias()));
      had?.dispose();
    };
    try {
      for (let i = this.segments.length - 1; i >= 0; i--) {
        const seg = this.segments[i];
        // Inputs from outside that were made after this segment ran may be computed from its
        // outputs (code between segments): their gradients go into their graphs first. All the
        // segments that read them came later, so those gradients are complete.
        this.flush(external, aliasOf, (k) => k.seq > seg.clock);
        tidy(() => {
          const outs = [...new Set(seg.outputs)];
          const grads = outs.map((o) => {
            const own = o.grad;
            const more = passed.get(o);
            return own && more ? own.add(more) : own ?? more ?? null;
          });
          if (grads.every((g) => g === null)) return;
          // The inputs as fresh leaves (those that can carry a gradient back).
          const wants = seg.inputs.map((x, j) => isFloating(x.dtype) && (this.producer.has(seg.inputsOf[j]) || x.requiresGrad));
          const leaves = seg.inputs.map((x, j) => (wants[j] ? x.detach().requiresGrad_(true) : x));
          const again = this.replay(seg, leaves);
          const firstIndex = outs.map((o) => seg.outputs.indexOf(o));
          const pairs = firstIndex.map((k, j) => [again[k], grads[j]] as const).filter((p): p is readonly [Tensor, Tensor] => p[1] !== null && p[0].requiresGrad);
          if (pairs.length === 0) return;
          backwardFrom(pairs);
          seg.inputsOf.forEach((orig, j) => {
            if (!wants[j]) return;
            const g = leaves[j].grad;
            if (g === null) return;
            if (this.producer.has(orig)) add(passed, orig, g);
            else {
              add(external, orig, g);
              if (!aliasOf.has(orig)) aliasOf.set(orig, seg.inputs[j]);
            }
          });
        });
        for (const o of new Set(seg.outputs)) {
          passed.get(o)?.dispose();
          passed.delete(o);
        }
      }
      // The rest of the inputs from outside the tape: on into the graphs that made them.
      this.flush(external, aliasOf, () => true);
    } finally {
      for (const g of [...passed.values(), ...external.values()]) g.dispose();
      this.dispose();
    }
  }

  /** Backward from the chosen inputs from outside the tape, with their gradients; forgets them. */
  private flush(external: Map<Tensor, Tensor>, aliasOf: ReadonlyMap<Tensor, Tensor>, which: (k: Tensor) => boolean): void {
    const keys = [...external.keys()].filter(which);
    if (keys.length === 0) return;
    try {
      tidy(() => {
        const pairs = keys.map((k) => [aliasOf.get(k)!, external.get(k)!] as const).filter(([x]) => x.requiresGrad);
        if (pairs.length > 0) backwardFrom(pairs);
      });
    } finally {
      for (const k of keys) {
        external.get(k)!.dispose();
        external.delete(k);
      }
    }
  }

  /** The segment again, with the graph on, from its recorded random state. */
  private replay(seg: Segment, leaves: Tensor[]): Tensor[] {
    const now = { cpu: getRngState(), device: seg.rng.device ? getRngState(seg.rng.device.name) : undefined };
    setRngState(seg.rng.cpu);
    if (seg.rng.device) setRngState(seg.rng.device.state, seg.rng.device.name);
    try {
      return enableGrad(() => this.around(() => seg.fn(...leaves)));
    } finally {
      setRngState(now.cpu);
      if (seg.rng.device && now.device) setRngState(now.device, seg.rng.device.name);
    }
  }

  /** Frees what the tape holds (backward does it too); the outputs it handed out go with it. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const seg of this.segments) {
      for (const x of seg.inputs) x.dispose();
      for (const o of new Set(seg.outputs)) o.dispose();
    }
    this.segments = [];
    this.producer.clear();
  }
}
