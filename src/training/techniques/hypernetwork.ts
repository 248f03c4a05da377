// Hypernetworks (§7): small MLPs, one (k, v) pair per context width, that transform the context
// fed to to_k and to_v of every attention layer of the frozen UNet. Trained as A1111 trains them
// (multiplier 1, AdamW with weight decay 0.01, LR 1e-5 by default); saved as A1111's `.pt`.
import type { StableDiffusion } from '../../models/load.ts';
import { Attention } from '../../models/attention.ts';
import { Hypernetwork, applyHypernetworks, type CreateHypernetworkOptions, type HypernetworkHandle } from '../../adapters/hypernetwork.ts';
import type { SaveInfo, Technique, TrainableGroup } from '../technique.ts';

export interface HypernetworkTrainOptions extends Omit<CreateHypernetworkOptions, 'sdCheckpoint' | 'sdCheckpointName'> {
  name: string;
  lr?: number;
  /** Continue from this A1111 hypernetwork .pt: its structure, weights and step count. */
  initFrom?: string;
}

/** Every context width the model's attention layers see: block widths (attn1) and the text width (attn2). */
export function contextWidths(model: StableDiffusion): number[] {
  const widths = new Set<number>();
  for (const [, m] of model.unet.namedModules()) {
    if (m instanceof Attention) {
      const k = m.getModule('to_k') as unknown as { inFeatures?: number; weight?: { shape: number[] } };
      const w = k.weight?.shape[1] ?? k.inFeatures;
      if (w) widths.add(w);
    }
  }
  return [...widths].sort((a, b) => b - a);
}

export class HypernetworkTechnique implements Technique {
  readonly kind = 'hypernetwork';
  readonly needsTextGrad = false;
  readonly extension = '.pt';
  readonly triggerWord: string;
  readonly net: Hypernetwork;
  private readonly handle: HypernetworkHandle;
  private readonly lr: number;
  readonly continued?: string;
  /** Steps trained before this run (the file's `step`); the saved step counts on from it. */
  private readonly initialStep: number = 0;
  /** The model's context widths, read before the UNet is patched. */
  private readonly widths: number[];

  constructor(readonly model: StableDiffusion, o: HypernetworkTrainOptions) {
    this.triggerWord = o.name;
    this.lr = o.lr ?? 1e-5;
    model.unet.requiresGrad_(false);
    model.textEncoder.requiresGrad_(false);
    model.vae.requiresGrad_(false);
    const widths = (this.widths = contextWidths(model));
    if (o.initFrom) {
      this.net = Hypernetwork.fromFile(o.initFrom, { device: model.device, dtype: 'float32' });
      const used = this.net.sizes.filter((w) => widths.includes(w));
      if (used.length === 0) {
        this.net.dispose();
        throw new Error(`${o.initFrom}: its modules are for context widths ${this.net.sizes.join(', ')}, and this model's attention layers see ${widths.join(', ')}, so it would train nothing; continue it on the model it was made for, or create a new hypernetwork`);
      }
      this.initialStep = this.net.step;
      // A1111 names a hypernetwork after its file; the trained one is saved under the run's name.
      this.net.name = o.name;
      this.net.sdCheckpoint = model.hash || null;
      this.net.sdCheckpointName = model.name;
      const st = this.net.settings;
      const unused = this.net.sizes.filter((w) => !widths.includes(w));
      this.continued = `continuing the hypernetwork ${o.initFrom.replace(/^.*[\\/]/, '')}: layer structure [${st.layerStructure.join(', ')}], ${String(st.activation)}, trained ${this.initialStep} steps before${unused.length ? `; its modules for widths ${unused.join(', ')} are kept but not trained (this model has no such layers)` : ''}; the structure settings are the file's`;
    } else {
      this.net = Hypernetwork.create(o.name, { ...o, sizes: o.sizes ?? widths, sdCheckpoint: model.hash || null, sdCheckpointName: model.name, device: model.device });
    }
    this.net.train();
    this.handle = applyHypernetworks(model.unet, [{ net: this.net, strength: 1 }]);
  }

  groups(): TrainableGroup[] {
    // A file's modules for widths this model lacks get no gradient: they are kept, not trained.
    const params = this.net.namedParameters().filter(([k]) => this.widths.includes(Number(k.split('.')[0])));
    return [{ name: 'hypernetwork', params, lr: this.lr, weightDecay: 0.01 }];
  }

  embeddings(): undefined {
    return undefined;
  }

  bypass(on: boolean): void {
    this.handle.bypass(on);
  }

  save(path: string, info: SaveInfo): void {
    this.net.step = this.initialStep + info.step;
    this.net.save(path);
  }

  dispose(): void {
    this.handle.remove();
    this.net.dispose();
  }
}
