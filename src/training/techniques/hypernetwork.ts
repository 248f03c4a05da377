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

  constructor(readonly model: StableDiffusion, o: HypernetworkTrainOptions) {
    this.triggerWord = o.name;
    this.lr = o.lr ?? 1e-5;
    model.unet.requiresGrad_(false);
    model.textEncoder.requiresGrad_(false);
    model.vae.requiresGrad_(false);
    this.net = Hypernetwork.create(o.name, { ...o, sizes: o.sizes ?? contextWidths(model), sdCheckpoint: model.hash || null, sdCheckpointName: model.name, device: model.device });
    this.net.train();
    this.handle = applyHypernetworks(model.unet, [{ net: this.net, strength: 1 }]);
  }

  groups(): TrainableGroup[] {
    return [{ name: 'hypernetwork', params: this.net.namedParameters(), lr: this.lr, weightDecay: 0.01 }];
  }

  embeddings(): undefined {
    return undefined;
  }

  bypass(on: boolean): void {
    this.handle.bypass(on);
  }

  save(path: string, info: SaveInfo): void {
    this.net.step = info.step;
    this.net.save(path);
  }

  dispose(): void {
    this.handle.remove();
    this.net.dispose();
  }
}
