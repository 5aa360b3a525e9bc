import test from 'ava';
import { transportSuite } from '../conformance/transport-suite.js';
import { Mosquitto } from '../helpers/mosquitto.js';

/** The transport conformance suite through a real Mosquitto (its own process; killed with SIGKILL to restart). */
transportSuite(test, 'mosquitto', async (t) => {
  const m = await Mosquitto.start();
  t.teardown(() => m.stop());
  return { url: m.url, mqtt5: true, restart: (downMs) => m.restart(downMs) };
});
