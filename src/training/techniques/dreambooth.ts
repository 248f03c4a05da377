// DreamBooth (§8.2 "prior preservation"): every UNet weight (and optionally the text encoder's)
// is trained on "[rare word] [class]" captions; class images, weighted by prior_loss_weight in the
// loss, keep the class from collapsing into the subject. The product is a whole model: an LDM
// single-file .safetensors (what A1111, Forge and ComfyUI load) or, for a path without an
// extension, a diffusers folder. The model is changed in place: dispose() cannot undo it.
import type { StableDiffusion } from '../../models/load.ts';
import { saveDiffusersFolder, saveSingleFile, type SaveDtype } from '../../models/save.ts';
import type { SaveInfo, Technique, TrainableGroup } from '../technique.ts';

export interface DreamBoothOptions {
  /** The rare word that names the subject (e.g. "sks"). */
  token: string;
  lr?: number;
  trainTextEncoder?: boolean;
  textEncoderLr?: number;
  /** Save dtype of the product (fp16 halves the file). */
  saveDtype?: SaveDtype;
}

export class DreamBoothTechnique implements Technique {
  readonly kind = 'dreambooth';
  readonly triggerWord: string;
  readonly needsTextGrad: boolean;
  readonly extension = '.safetensors';

  constructor(readonly model: StableDiffusion, private readonly o: DreamBoothOptions) {
    this.triggerWord = o.token;
    this.needsTextGrad = o.trainTextEncoder === true;
    model.vae.requiresGrad_(false);
    model.unet.requiresGrad_(true);
    model.textEncoder.requiresGrad_(this.needsTextGrad);
  }

  groups(): TrainableGroup[] {
    const g: TrainableGroup[] = [{ name: 'unet', params: [...this.model.unet.namedParameters()].map(([n, p]) => [`unet.${n}`, p]), lr: this.o.lr ?? 5e-6, weightDecay: 1e-2 }];
    if (this.needsTextGrad) {
      g.push({ name: 'text_encoder', params: [...this.model.textEncoder.namedParameters()].map(([n, p]) => [`text_encoder.${n}`, p]), lr: this.o.textEncoderLr ?? this.o.lr ?? 5e-6, weightDecay: 1e-2 });
    }
    return g;
  }

  embeddings(): undefined {
    return undefined;
  }

  save(path: string, info: SaveInfo): void {
    const metadata = {
      'modelspec.sai_model_spec': '1.0.1',
      'modelspec.title': `${info.baseName} + ${this.triggerWord}`,
      'modelspec.trigger_phrase': this.triggerWord,
      'sdtune.technique': 'dreambooth',
      'sdtune.base_model': info.baseName,
      'sdtune.base_model_hash': info.baseHash,
      'sdtune.step': String(info.step),
    };
    if (/\.safetensors$/i.test(path)) saveSingleFile(this.model, path, { dtype: this.o.saveDtype, metadata });
    else saveDiffusersFolder(this.model, path, { dtype: this.o.saveDtype });
  }

  dispose(): void {
    this.model.unet.requiresGrad_(false);
    this.model.textEncoder.requiresGrad_(false);
  }
}
