/**
 * Disk: a free-space check before any update step (so an update is refused whole instead of failing half
 * way) and the mark-and-sweep plan of what storage GC may delete. Pure: the numbers come from the ports.
 */
import { BerthError } from '../lib/errors.js';

export interface ImageNeed {
  image: string;
  /** bytes of blobs not yet in the content store */
  downloadBytes: number;
  /** estimate of what unpacking adds to the snapshotter (uncompressed layer sizes not yet unpacked) */
  unpackBytes: number;
}

export interface SpaceCheck {
  ok: boolean;
  neededBytes: number;
  availableBytes: number;
  error?: BerthError;
}

const mib = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;

/**
 * Everything the target still needs must fit, with `reserveBytes` left over (the database, logs and the
 * outbox need room to keep working). One check for the whole target, not per image, so two images that
 * each fit but not together are refused before either is fetched.
 */
export function checkSpace(
  needs: readonly ImageNeed[],
  availableBytes: number,
  reserveBytes: number,
): SpaceCheck {
  const neededBytes = needs.reduce((n, x) => n + x.downloadBytes + x.unpackBytes, 0);
  if (neededBytes === 0 || neededBytes + reserveBytes <= availableBytes)
    return { ok: true, neededBytes, availableBytes };
  const detail = needs
    .filter((x) => x.downloadBytes + x.unpackBytes > 0)
    .map((x) => `${x.image}: ${mib(x.downloadBytes)} to fetch + ${mib(x.unpackBytes)} to unpack`)
    .join(', ');
  return {
    ok: false,
    neededBytes,
    availableBytes,
    error: new BerthError(
      'NoSpace',
      `not enough disk space for the update: need ${mib(neededBytes)} plus ${mib(reserveBytes)} reserve, ` +
        `${mib(availableBytes)} available (${detail})`,
      { details: { neededBytes, availableBytes, reserveBytes } },
    ),
  };
}

/** What storage holds, as seen by GC: images and what each references. */
export interface StoredImage {
  image: string;
  /** manifest, config and layer blobs (and the index, if any) */
  blobs: readonly string[];
  /** ChainIDs of the image's committed layer snapshots */
  snapshots: readonly string[];
}

export interface GcPlan {
  images: string[];
  blobs: string[];
  snapshots: string[];
}

/**
 * Mark from the kept images (current target, previous target, images of existing containers, leases) and
 * sweep the rest. Snapshots used as parents by kept ones are kept through their ChainIDs (every kept image
 * lists its whole chain), and active snapshots of containers are the snapshotter's business, not listed here.
 */
export function planGc(
  stored: readonly StoredImage[],
  presentBlobs: readonly string[],
  presentSnapshots: readonly string[],
  keepImages: ReadonlySet<string>,
  leasedBlobs: ReadonlySet<string> = new Set(),
): GcPlan {
  const keptBlobs = new Set(leasedBlobs);
  const keptSnapshots = new Set<string>();
  const images: string[] = [];
  for (const s of stored) {
    if (keepImages.has(s.image)) {
      for (const b of s.blobs) keptBlobs.add(b);
      for (const sn of s.snapshots) keptSnapshots.add(sn);
    } else images.push(s.image);
  }
  return {
    images: images.sort(),
    blobs: presentBlobs.filter((b) => !keptBlobs.has(b)).sort(),
    snapshots: presentSnapshots.filter((s) => !keptSnapshots.has(s)).sort(),
  };
}
