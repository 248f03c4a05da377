// Builds the studio's single page into web/dist, which the server serves at `/`. Relative asset
// paths so the page also works when the server mounts it under a prefix.
import { defineConfig } from 'vite';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));

export default defineConfig({
  root: here,
  base: './',
  build: {
    outDir: fileURLToPath(new URL('./dist', import.meta.url)),
    emptyOutDir: true,
    target: 'es2022',
  },
  server: {
    // `npx vite --config web/vite.config.ts` during development: forward the API to a running
    // server (or web/dev/mock-server.mjs).
    proxy: { '/api': 'http://127.0.0.1:7860' },
  },
});
