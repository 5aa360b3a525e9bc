import { invalidInput } from '../lib/errors.js';
import type { Descriptor, Platform } from './types.js';

export interface PlatformSpec {
  os: string;
  architecture: string;
  variant?: string | undefined;
}

/** "linux/arm/v7" → {os, architecture, variant}. */
export function parsePlatform(s: string): PlatformSpec {
  const parts = s.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => p === '')) {
    throw invalidInput(`invalid platform ${JSON.stringify(s)}: expected os/arch[/variant], e.g. linux/arm64`);
  }
  return normalizePlatform({ os: parts[0]!, architecture: parts[1]!, variant: parts[2] });
}

export function formatPlatform(p: PlatformSpec): string {
  return p.variant ? `${p.os}/${p.architecture}/${p.variant}` : `${p.os}/${p.architecture}`;
}

/**
 * Normalize like containerd's platforms package: aarch64→arm64 (v8 implied), armhf→arm/v7, x86_64→amd64,
 * ppc64el (Debian's name)→ppc64le. `ppc64` stays ppc64: it is big-endian POWER (Go's GOARCH=ppc64), another
 * architecture whose binaries do not run on a ppc64le device.
 */
export function normalizePlatform(p: PlatformSpec): PlatformSpec {
  let { architecture, variant } = p;
  switch (architecture) {
    case 'x86_64':
    case 'x86-64':
      architecture = 'amd64';
      variant = undefined;
      break;
    case 'aarch64':
      architecture = 'arm64';
      break;
    case 'armhf':
    case 'armv7l':
      architecture = 'arm';
      variant = 'v7';
      break;
    case 'armel':
      architecture = 'arm';
      variant = 'v6';
      break;
    case 'ppc64el':
    case 'powerpc64le':
      architecture = 'ppc64le';
      break;
  }
  if (architecture === 'arm64' && (variant === 'v8' || variant === '8')) variant = undefined;
  if (architecture === 'arm' && variant === undefined) variant = 'v7';
  if (architecture === 'arm' && variant && /^[0-9]$/.test(variant)) variant = `v${variant}`;
  return { os: p.os.toLowerCase(), architecture, variant };
}

/** This machine's byte order (Node says "ppc64" for both POWER flavours). */
export const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** The platform of the machine this process runs on (Node names: x64, arm64, arm, ppc64). */
export function hostPlatform(
  nodeArch: string = process.arch,
  littleEndian: boolean = LITTLE_ENDIAN,
): PlatformSpec {
  switch (nodeArch) {
    case 'x64':
      return { os: 'linux', architecture: 'amd64' };
    case 'arm64':
      return { os: 'linux', architecture: 'arm64' };
    case 'arm':
      return { os: 'linux', architecture: 'arm', variant: 'v7' };
    case 'ppc64':
      return { os: 'linux', architecture: littleEndian ? 'ppc64le' : 'ppc64' };
    default:
      return { os: 'linux', architecture: nodeArch };
  }
}

/**
 * Does an image for `have` run on a device of `want`? Same os and arch; for arm the device's variant
 * runs that variant and older ones (a v7 device runs v6 and v5 images), as containerd's matcher does.
 */
export function platformMatches(want: PlatformSpec, have: PlatformSpec | Platform): boolean {
  const h = normalizePlatform({ os: have.os, architecture: have.architecture, variant: have.variant });
  const w = normalizePlatform(want);
  if (h.os !== w.os || h.architecture !== w.architecture) return false;
  if (w.architecture === 'arm') {
    const rank = (v: string | undefined) => Number((v ?? 'v7').replace(/^v/, ''));
    return rank(h.variant) <= rank(w.variant);
  }
  if (w.architecture === 'arm64')
    return h.variant === undefined || h.variant === 'v8' || h.variant === w.variant;
  return true;
}

/** Pick the best manifest for `want` from an index: exact variant first, then the newest compatible one. */
export function selectManifest(manifests: readonly Descriptor[], want: PlatformSpec): Descriptor | undefined {
  const candidates = manifests.filter((m) => m.platform && platformMatches(want, m.platform));
  const w = normalizePlatform(want);
  const score = (d: Descriptor) => {
    const p = normalizePlatform({
      os: d.platform!.os,
      architecture: d.platform!.architecture,
      variant: d.platform!.variant,
    });
    if (p.variant === w.variant) return 100;
    return Number((p.variant ?? 'v0').replace(/^v/, '')) || 0;
  };
  candidates.sort((a, b) => score(b) - score(a));
  return candidates[0];
}
