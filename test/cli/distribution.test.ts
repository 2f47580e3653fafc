/** The CLI client commands against Debian's docker-registry (distribution 2.8: no referrers API, no tag delete). */
import { after, before, describe } from 'node:test';
import { startDistribution, type RunningRegistry } from '../helpers/servers.ts';
import { clientScenario } from './scenario.ts';

describe('berth CLI against distribution 2.8', () => {
  let reg: RunningRegistry;
  before(async () => {
    reg = await startDistribution();
  });
  after(() => reg.stop());
  clientScenario(() => ({ host: reg.host, referrersApi: false, tagDelete: false }));
});
