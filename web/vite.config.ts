// Vite builds the console into dist/ (served by Firebase Hosting, or by the emulator stack).
// config.json is not bundled: the server next to dist/ answers it (see src/config.ts).
import { defineConfig } from "vite";

export default defineConfig({
  base: "./",
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false, chunkSizeWarningLimit: 1500 },
});
