/**
 * Runs one self-update step sequence on a state dir and SIGKILLs itself right after the named step, for
 * test/integration/self-update-switch.test.ts (a power cut or kill -9 there):
 *
 *   node --import tsx self-update-kill.ts switch <stateDir> <step>   the agent's switch to 0.2.0
 *   node --import tsx self-update-kill.ts launch <stateDir> <step>   the launcher (trial, commit, rollback)
 *
 * Steps are the hooks of SelfUpdater.switchTo (SwitchStep) and of the Launcher (LauncherStep).
 */
import * as path from 'node:path';
import { Mutex } from '../../src/agent/mutex.js';
import { systemClock } from '../../src/agent/ports.js';
import { AgentDir } from '../../src/agent/self-update/files.js';
import { SelfUpdater } from '../../src/agent/self-update/updater.js';
import { ContentStore } from '../../src/content/store.js';
import { agentArch } from '../../src/core/self-update.js';
import { openDatabase } from '../../src/db/database.js';
import { silentLogger } from '../../src/lib/logger.js';
import { generateFleetKey, loadPublicKey } from '../../src/transport/signing.js';
import { testLauncher } from './self-update.js';

const [mode, stateDir, killAt] = process.argv.slice(2) as [string, string, string];
const dir = new AgentDir(stateDir, agentArch(process.arch)!);
const die = (step: string) => {
  if (step === killAt) process.kill(process.pid, 'SIGKILL');
};

if (mode === 'switch') {
  const db = openDatabase(path.join(stateDir, 'berth.db'), { integrityCheck: false });
  const updater = new SelfUpdater({
    dir,
    arch: dir.arch,
    running: '0.1.0',
    fleet: 'test',
    publicKey: loadPublicKey(generateFleetKey().publicKeyPem),
    fetchBlob: async () => undefined,
    online: () => true,
    store: new ContentStore(path.join(stateDir, 'content')),
    db,
    log: silentLogger(),
    clock: systemClock,
    mutex: new Mutex(),
    configFormat: 1,
    reserveBytes: 0,
    trialDeadlineMs: 20_000,
    settled: () => true,
    onUpdate: () => undefined,
    restart: () => undefined,
    afterSwitchStep: die,
  });
  await updater.switchTo('0.2.0');
  process.exit(0);
} else if (mode === 'launch') {
  const { launcher } = testLauncher(dir, { trialBoots: 3, afterStep: die });
  process.exit(await launcher.run());
} else {
  throw new Error(`unknown mode ${mode}`);
}
