import { BerthError, type ErrorCode } from '../lib/errors.js';

/**
 * The language of native/storage (`berth-storage`, called through StorageHelper in storage-helper.ts): it
 * exits with the errno of what failed, mapped here onto berth's codes, and takes mknod/xattr records of
 * layer unpacking on stdin, encoded here.
 */
const ERRNO_CODES: Record<number, ErrorCode> = {
  1: 'PermissionDenied', // EPERM
  2: 'NotFound', // ENOENT
  13: 'PermissionDenied', // EACCES
  16: 'Conflict', // EBUSY
  17: 'Conflict', // EEXIST
  20: 'InvalidInput', // ENOTDIR: a symlink or file where a parent directory was required
  22: 'InvalidInput', // EINVAL
  25: 'Unsupported', // ENOTTY: not a btrfs filesystem
  28: 'NoSpace', // ENOSPC
  30: 'PermissionDenied', // EROFS
  39: 'Conflict', // ENOTEMPTY
  38: 'Unsupported', // ENOSYS: openat2 missing (kernel < 5.6)
  40: 'InvalidInput', // ELOOP: a symlink where a directory was required
  74: 'Corrupt', // EBADMSG: a layer that is not a valid tar
  95: 'Unsupported', // EOPNOTSUPP
  122: 'NoSpace', // EDQUOT
};

/** berth's error code for an exit status of berth-storage (an errno). */
export function storageErrorCode(exitCode: number): ErrorCode {
  return ERRNO_CODES[exitCode] ?? 'Internal';
}

/** One record of `berth-storage apply-specials` (see native/storage/special.c). */
export type SpecialRecord =
  | {
      op: 'mknod';
      rel: string;
      /** full st_mode: S_IFCHR / S_IFBLK / S_IFIFO | permission bits */
      mode: number;
      major: number;
      minor: number;
      uid: number;
      gid: number;
      mtimeSec: number;
    }
  | { op: 'xattr'; rel: string; name: string; value: Buffer };

/** Encode records (NUL-terminated fields) — pure, so the framing is unit-tested. */
export function encodeSpecials(records: readonly SpecialRecord[]): Buffer {
  const parts: Buffer[] = [];
  const field = (s: string) => {
    if (s.includes('\0')) throw new BerthError('InvalidInput', `NUL byte in ${JSON.stringify(s)}`);
    parts.push(Buffer.from(s, 'utf8'), Buffer.from([0]));
  };
  for (const r of records) {
    field(r.op);
    field(r.rel);
    if (r.op === 'mknod') {
      for (const n of [r.mode.toString(8), r.major, r.minor, r.uid, r.gid, Math.floor(r.mtimeSec), 0])
        field(String(n));
    } else {
      field(r.name);
      field(r.value.toString('hex'));
    }
  }
  return Buffer.concat(parts);
}
