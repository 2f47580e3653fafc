/** The CLI client commands against Berth (a child process with filesystem storage and the referrers API). */
import { after, before, describe } from 'node:test';
import { startBerth, type RunningRegistry } from '../helpers/servers.ts';
import { clientScenario } from './scenario.ts';

describe('berth CLI against Berth', () => {
  let reg: RunningRegistry;
  before(async () => {
    reg = await startBerth();
  });
  after(() => reg.stop());
  clientScenario(() => ({ host: reg.host, referrersApi: true, tagDelete: true }));
});
