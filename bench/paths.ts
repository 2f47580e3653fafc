/** Locations of the project and of the benchmark sources. */
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
export const PROJECT_ROOT = resolve(BENCH_DIR, '..');
