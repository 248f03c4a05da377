// Layout converters: other tools' key layouts ↔ sdtune's one naming (diffusers'), sd-formats.md §4–§7.
export * from './types.ts';
export * from './family.ts';
export * from './ldm.ts';
export * from './keysets.ts';
export * from './detect.ts';
export * from './lora.ts';
export * from './kohya-metadata.ts';
export * from './embedding.ts';
export * from './hypernetwork.ts';
