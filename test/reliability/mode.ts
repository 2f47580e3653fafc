/**
 * Quick (CI) or soak mode for the reliability suites. `npm run soak` sets BERTH_SOAK=1; every suite scales its
 * rounds, clients and durations with {@link pick}, and reports its figures through {@link report}.
 */
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { PROJECT_ROOT } from '../helpers/servers.ts';

export const SOAK = process.env.BERTH_SOAK === '1';

/** The quick value in CI, the soak value under `npm run soak`. */
export function pick<T>(quick: T, soak: T): T {
  return SOAK ? soak : quick;
}

/**
 * Prints one suite's figures as a `reliability:` line (kept in CI logs) and appends it to
 * `test/reliability/results.jsonl` (ignored by git) for docs/reliability.md.
 */
export function report(suite: string, figures: Record<string, unknown>): void {
  const line = JSON.stringify({ suite, mode: SOAK ? 'soak' : 'quick', at: new Date().toISOString(), ...figures });
  console.log(`reliability: ${line}`);
  try {
    mkdirSync(join(PROJECT_ROOT, 'test/reliability'), { recursive: true });
    appendFileSync(join(PROJECT_ROOT, 'test/reliability/results.jsonl'), `${line}\n`);
  } catch {
    // Reporting must never fail a suite.
  }
}
