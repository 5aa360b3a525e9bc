import test from 'ava';
import {
  formatPlatform,
  hostPlatform,
  parsePlatform,
  platformMatches,
  selectManifest,
} from '../../src/oci/platform.js';
import type { Descriptor } from '../../src/oci/types.js';

const d = (architecture: string, variant?: string): Descriptor => ({
  mediaType: 'application/vnd.oci.image.manifest.v1+json',
  digest: `sha256:${(architecture + (variant ?? ''))
    .padEnd(64, '0')
    .replace(/[^a-f0-9]/g, 'a')
    .slice(0, 64)}`,
  size: 1,
  platform: { os: 'linux', architecture, ...(variant ? { variant } : {}) },
});

test('parse and format round-trip, with normalisation', (t) => {
  t.is(formatPlatform(parsePlatform('linux/arm/v7')), 'linux/arm/v7');
  t.is(formatPlatform(parsePlatform('linux/aarch64')), 'linux/arm64');
  t.is(formatPlatform(parsePlatform('linux/x86_64')), 'linux/amd64');
  t.is(formatPlatform(parsePlatform('linux/arm')), 'linux/arm/v7');
  t.throws(() => parsePlatform('linux'), { message: /os\/arch/ });
});

test('host platform maps Node arch names to OCI', (t) => {
  t.is(formatPlatform(hostPlatform('x64')), 'linux/amd64');
  t.is(formatPlatform(hostPlatform('arm')), 'linux/arm/v7');
  t.is(formatPlatform(hostPlatform('ppc64', true)), 'linux/ppc64le');
  t.is(formatPlatform(hostPlatform('ppc64', false)), 'linux/ppc64', 'big-endian POWER is ppc64');
  t.is(formatPlatform(hostPlatform('arm64')), 'linux/arm64');
});

test('a v7 device runs v6 images but not v8; arm64 ignores v8 variant', (t) => {
  t.true(platformMatches(parsePlatform('linux/arm/v7'), { os: 'linux', architecture: 'arm', variant: 'v6' }));
  t.false(
    platformMatches(parsePlatform('linux/arm/v6'), { os: 'linux', architecture: 'arm', variant: 'v7' }),
  );
  t.true(
    platformMatches(parsePlatform('linux/arm64'), { os: 'linux', architecture: 'arm64', variant: 'v8' }),
  );
  t.false(platformMatches(parsePlatform('linux/amd64'), { os: 'linux', architecture: 'arm64' }));
});

test('selection prefers the exact variant, then the newest compatible one', (t) => {
  const list = [d('amd64'), d('arm', 'v5'), d('arm', 'v6'), d('arm', 'v7'), d('arm64'), d('ppc64le')];
  t.is(selectManifest(list, parsePlatform('linux/arm/v7'))?.platform?.variant, 'v7');
  t.is(
    selectManifest([d('arm', 'v5'), d('arm', 'v6')], parsePlatform('linux/arm/v7'))?.platform?.variant,
    'v6',
  );
  t.is(selectManifest(list, parsePlatform('linux/ppc64le'))?.platform?.architecture, 'ppc64le');
  t.is(selectManifest([d('amd64')], parsePlatform('linux/arm64')), undefined);
});

test('linux/ppc64 is big-endian POWER, not ppc64le: never mapped onto it, never selects it', (t) => {
  t.is(formatPlatform(parsePlatform('linux/ppc64')), 'linux/ppc64');
  t.is(formatPlatform(parsePlatform('linux/ppc64el')), 'linux/ppc64le', "Debian's name for ppc64le");
  t.false(platformMatches(parsePlatform('linux/ppc64'), { os: 'linux', architecture: 'ppc64le' }));
  t.false(platformMatches(parsePlatform('linux/ppc64le'), { os: 'linux', architecture: 'ppc64' }));
  t.is(selectManifest([d('ppc64le'), d('amd64')], parsePlatform('linux/ppc64')), undefined);
  t.is(
    selectManifest([d('ppc64le'), d('ppc64')], parsePlatform('linux/ppc64'))?.platform?.architecture,
    'ppc64',
  );
});
