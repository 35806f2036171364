import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

// The app is served by the single origin (tools/cmd/devproxy at
// http://localhost:3000), so it calls /api and /ws on its own origin. For
// `npm run dev`, Vite's server forwards those to the devproxy.
const origin = process.env.RELAY_ORIGIN ?? 'http://127.0.0.1:3000';

export default defineConfig({
  plugins: [react()],
  resolve: {
    // relay-client is linked from ../clients/js, which has its own React
    // for its type checks: one React only.
    dedupe: ['react', 'react-dom'],
  },
  build: {
    target: 'es2022',
    sourcemap: true,
    // No inline scripts or styles: the CSP allows only files of this origin.
    assetsInlineLimit: 0,
  },
  server: {
    proxy: {
      '/api': origin,
      '/ws': { target: origin.replace(/^http/, 'ws'), ws: true },
    },
  },
});
