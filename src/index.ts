/** Berth's public entry point for embedding the server. */
export { startServer, createLogger, type RunningServer } from './server/serve.ts';
export { loadConfig, loadConfigText, ConfigError, type BerthConfig, DEFAULT_CONFIG_YAML } from './config/config.ts';
export { OciError } from './spec/errors.ts';
