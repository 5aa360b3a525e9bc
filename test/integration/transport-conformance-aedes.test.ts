import test from 'ava';
import { type EmbeddedBroker, startEmbeddedBroker } from '../../src/fleet/broker.js';
import { transportSuite } from '../conformance/transport-suite.js';
import { FLEET, testLog } from '../helpers/fleet-harness.js';

/**
 * The transport conformance suite through the embedded broker (aedes, MQTT 3.1.1 only, what `fleet serve`
 * runs without --broker); a restart closes it and starts a fresh one on the same port (its sessions and
 * retained messages gone, as after a real restart). A lab broker (anonymous clients allowed): the suite is
 * about the transfer; who may connect is the enrollment's (fleet-security, fleet-enroll tests).
 */
const lab = () => ({
  log: testLog(),
  auth: { fleet: FLEET, allowAnonymous: true, authenticate: () => undefined },
});
transportSuite(test, 'aedes', async (t) => {
  let broker: EmbeddedBroker = await startEmbeddedBroker({ port: 0, ...lab() });
  const port = broker.port;
  t.teardown(() => broker.close());
  return {
    url: broker.url,
    mqtt5: false,
    restart: async (downMs = 0) => {
      await broker.close();
      await new Promise((r) => setTimeout(r, downMs));
      broker = await startEmbeddedBroker({ port, ...lab() });
    },
  };
});
