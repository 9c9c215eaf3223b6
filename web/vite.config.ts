import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vite'
import react from '@vitejs/plugin-react'

// `npm run dev` proxies the API and the live WebSocket to a running `atelier serve`
// (ATELIER_URL, default http://127.0.0.1:8080). The production build is plain files in dist/,
// served by `atelier serve --web-dir web/dist`; nothing is loaded from anywhere else.
const target = process.env.ATELIER_URL || 'http://127.0.0.1:8080'

export default defineConfig({
  base: '/',
  plugins: [react()],
  // The typed API client is a package of this repository (clients/typescript), used from source.
  resolve: {
    alias: {
      '@atelier/client': fileURLToPath(new URL('../clients/typescript/src/index.ts', import.meta.url)),
    },
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: true,
    chunkSizeWarningLimit: 1500,
  },
  server: {
    proxy: {
      '/api': { target, changeOrigin: false },
      '/ws': { target: target.replace(/^http/, 'ws'), ws: true },
    },
  },
})
