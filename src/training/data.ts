// The bridge from a Dataset (asynchronous: images decode with sharp) to the loop's TrainData
// (synchronous batches): before each epoch, prepare() decodes that epoch's images into memory
// (5–50 images for the users we serve; with fixed crops an image decodes once for the whole run);
// batch() then assembles tensors. Class images get the prior-loss weight.
import * as T from '../torch/index.ts';
import type { BatchPlan, Dataset } from './dataset.ts';
import { TrainingError, type TrainBatch, type TrainData } from './loop.ts';

export interface DataOptions {
  priorLossWeight?: number;
  /** Images for the validation loss (a separate folder); default: up to 4 training images. */
  validation?: Dataset;
  onMessage?: (m: string) => void;
}

interface Pixels {
  pixels: T.Tensor;
  mask: T.Tensor | null;
}

export class DatasetTrainData implements TrainData {
  private readonly decoded = new Map<string, Pixels | Error>();
  private plans = new Map<number, BatchPlan[]>();
  private valBatches: { plan: BatchPlan; ds: Dataset }[] = [];

  constructor(
    readonly ds: Dataset,
    private readonly o: DataOptions = {},
  ) {}

  get batchesPerEpoch(): number {
    return this.ds.stepsPerEpoch;
  }

  private plan(epoch: number): BatchPlan[] {
    let p = this.plans.get(epoch);
    if (!p) {
      p = this.ds.epochPlan(epoch);
      this.plans.clear(); // one epoch at a time
      this.plans.set(epoch, p);
    }
    return p;
  }

  private async load(ds: Dataset, plans: BatchPlan[]): Promise<void> {
    for (const b of plans) {
      for (const item of b.items) {
        if (this.decoded.has(item.cacheKey)) continue;
        try {
          const px = await ds.loadItem(item);
          this.decoded.set(item.cacheKey, { pixels: T.keep(px.pixels), mask: px.mask ? T.keep(px.mask) : null });
        } catch (e) {
          this.decoded.set(item.cacheKey, e as Error);
          this.o.onMessage?.(`${item.sample.name}: cannot read this image any more (${(e as Error).message}); it is left out`);
        }
      }
    }
  }

  async prepare(epoch: number): Promise<void> {
    const plans = this.plan(epoch);
    // Random crops change every epoch: drop the previous epoch's pixels.
    if (this.ds.options.randomCrop) {
      const keep = new Set(plans.flatMap((b) => b.items.map((i) => i.cacheKey)));
      for (const [k, v] of this.decoded) if (!keep.has(k)) this.free(k, v);
    }
    await this.load(this.ds, plans);
    if (epoch === 0 || this.valBatches.length === 0) await this.prepareValidation();
  }

  private async prepareValidation(): Promise<void> {
    if (this.valBatches.length) return;
    const ds = this.o.validation ?? this.ds;
    const plans = ds.epochPlan(0);
    const picked: { plan: BatchPlan; ds: Dataset }[] = [];
    let n = 0;
    for (const p of plans) {
      if (this.o.validation === undefined && n >= 4) break;
      const items = p.items.filter((i) => !i.sample.isClass);
      if (!items.length) continue;
      picked.push({ plan: { ...p, items }, ds });
      n += items.length;
    }
    await this.load(ds, picked.map((p) => p.plan));
    this.valBatches = picked;
  }

  private free(k: string, v: Pixels | Error): void {
    if (!(v instanceof Error)) {
      v.pixels.dispose();
      v.mask?.dispose();
    }
    this.decoded.delete(k);
  }

  private assemble(plan: BatchPlan): TrainBatch {
    const items = plan.items.filter((i) => !(this.decoded.get(i.cacheKey) instanceof Error));
    if (items.length === 0) throw new TrainingError(`every image of batch ${plan.index} of epoch ${plan.epoch} failed to load (${plan.items.map((i) => i.sample.name).join(', ')})`);
    return T.tidy(() => {
      const got = items.map((i) => {
        const d = this.decoded.get(i.cacheKey);
        if (d === undefined) throw new TrainingError(`internal: ${i.sample.name} was not decoded before its batch`);
        return d as Pixels;
      });
      const pixels = T.stack(got.map((g) => g.pixels), 0);
      const anyMask = got.some((g) => g.mask !== null);
      const masks = anyMask ? T.stack(got.map((g) => g.mask ?? T.ones([1, g.pixels.size(1), g.pixels.size(2)])), 0) : null;
      const w = this.o.priorLossWeight ?? 1;
      return {
        pixels,
        masks,
        captions: items.map((i) => i.caption),
        weights: items.map((i) => (i.sample.isClass ? w : 1)),
        keys: items.map((i) => (this.ds.options.randomCrop ? null : i.cacheKey)),
      };
    });
  }

  batch(epoch: number, index: number): TrainBatch {
    return this.assemble(this.plan(epoch)[index]);
  }

  validation(): TrainBatch[] {
    return this.valBatches.map((v) => this.assemble(v.plan));
  }

  dispose(): void {
    for (const [k, v] of [...this.decoded]) this.free(k, v);
  }
}
