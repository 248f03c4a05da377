// Where the embedded default model lives (shipped in the package, see model/README.md).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const TOY_MODEL_PATH = fileURLToPath(new URL('./model/toy-sd.safetensors', import.meta.url));

/** The toy world's judge (src/toy/judge.ts), trained on the toy model's VAE. */
export const TOY_JUDGE_PATH = fileURLToPath(new URL('./model/toy-judge.safetensors', import.meta.url));

export function toyModelAvailable(): boolean {
  return existsSync(TOY_MODEL_PATH);
}
