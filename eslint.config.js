// ESLint flat config: typescript-eslint's recommended rules plus the import layering of docs/architecture.md.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** Folders each layer must not import from (spec <- storage <- registry <- server <- cli; spec <- auth <- server). */
const layers = {
  'src/spec/**': ['storage', 'registry', 'server', 'cli', 'config', 'client', 'auth', 'copy'],
  'src/storage/**': ['registry', 'server', 'cli', 'config', 'client', 'auth', 'testing', 'copy'],
  'src/registry/**': ['server', 'cli', 'config', 'client', 'auth', 'testing', 'copy'],
  'src/config/**': ['storage', 'registry', 'server', 'cli', 'client', 'auth', 'copy'],
  'src/auth/**': ['storage', 'registry', 'server', 'cli', 'config', 'client', 'copy'],
  'src/server/**': ['cli', 'client', 'testing', 'copy'],
  // The public client library: OCI knowledge from spec, nothing of the server side.
  'src/client/**': ['storage', 'registry', 'server', 'cli', 'config', 'auth', 'testing', 'copy'],
  // Image transports (OCI layouts, docker archives) and the copy engine: spec, and client for registries.
  'src/copy/**': ['storage', 'registry', 'server', 'cli', 'config', 'auth'],
  // startTestRegistry(): may use server, config and client.
  'src/testing/**': ['cli'],
};

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'bench/results/**', 'data/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: 'readonly', Buffer: 'readonly', console: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', URL: 'readonly', URLSearchParams: 'readonly', fetch: 'readonly', AbortController: 'readonly', AbortSignal: 'readonly', TextEncoder: 'readonly', TextDecoder: 'readonly', NodeJS: 'readonly', setImmediate: 'readonly', Response: 'readonly', Headers: 'readonly' } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'error',
    },
  },
  {
    files: ['src/**/*.ts'],
    ignores: ['src/cli/**'],
    rules: { 'no-console': 'error' },
  },
  ...Object.entries(layers).map(([files, banned]) => ({
    files: [files],
    rules: {
      'no-restricted-imports': ['error', { patterns: banned.map((b) => ({ group: [`**/${b}/*`], message: `this layer must not import from src/${b} (see docs/architecture.md)` })) }],
    },
  })),
);
