/**
 * Test images made by real tools at test time: a busybox-static rootfs packed by umoci into an OCI
 * layout with two layers (the second deletes a file — a whiteout — and adds hardlinks), converted by
 * skopeo into docker-archive and oci-archive, and a multi-arch index over per-platform manifests.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  linkSync,
  mkdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import * as path from 'node:path';

export const BUSYBOX = '/bin/busybox';
const APPLETS = [
  'sh',
  'ls',
  'cat',
  'echo',
  'sleep',
  'true',
  'false',
  'id',
  'hostname',
  'env',
  'ps',
  'mount',
  'touch',
  'rm',
  'mkdir',
  'nc',
  'wget',
  'httpd',
  'ping',
  'ip',
  'kill',
  'grep',
  'head',
  'tail',
  'wc',
  'stat',
  'dd',
];

function run(file: string, args: string[], cwd?: string): string {
  return execFileSync(file, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

/** A busybox root filesystem in `dir` (binary, applet symlinks, /etc/passwd, /etc/group, /tmp). */
export function makeBusyboxRootfs(dir: string): void {
  mkdirSync(path.join(dir, 'bin'), { recursive: true });
  for (const d of ['etc', 'tmp', 'proc', 'sys', 'dev', 'root', 'var/log'])
    mkdirSync(path.join(dir, d), { recursive: true });
  chmodSync(path.join(dir, 'tmp'), 0o1777);
  copyFileSync(BUSYBOX, path.join(dir, 'bin', 'busybox'));
  chmodSync(path.join(dir, 'bin', 'busybox'), 0o755);
  for (const a of APPLETS) symlinkSync('busybox', path.join(dir, 'bin', a));
  writeFileSync(
    path.join(dir, 'etc', 'passwd'),
    'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n',
  );
  writeFileSync(path.join(dir, 'etc', 'group'), 'root:x:0:\napp:x:1000:\nnogroup:x:65534:\n');
}

export interface TestImage {
  /** OCI image layout directory */
  layout: string;
  /** tag inside the layout */
  tag: string;
  manifestDigest: string;
}

export interface BuildOptions {
  tag?: string;
  architecture?: string;
  variant?: string;
  /** command baked into the image config */
  cmd?: string[];
  /** extra files written into the second layer: path → content */
  files?: Record<string, string>;
}

/** Two-layer busybox image in an OCI layout (layer 2 has a whiteout and hardlinks). */
export function buildBusyboxImage(workDir: string, opts: BuildOptions = {}): TestImage {
  const tag = opts.tag ?? 'latest';
  const layout = path.join(workDir, 'layout');
  const bundle = path.join(workDir, `bundle-${tag}`);
  mkdirSync(workDir, { recursive: true });
  try {
    readFileSync(path.join(layout, 'oci-layout'));
  } catch {
    run('umoci', ['init', '--layout', layout]);
  }
  run('umoci', ['new', '--image', `${layout}:${tag}`]);
  // layer 1: busybox rootfs + files that layer 2 deletes
  run('umoci', ['unpack', '--image', `${layout}:${tag}`, bundle]);
  const rootfs = path.join(bundle, 'rootfs');
  makeBusyboxRootfs(rootfs);
  writeFileSync(path.join(rootfs, 'etc', 'deleted-later.txt'), 'this file is removed by layer 2\n');
  mkdirSync(path.join(rootfs, 'data', 'old'), { recursive: true });
  writeFileSync(path.join(rootfs, 'data', 'old', 'a.txt'), 'old a\n');
  run('umoci', ['repack', '--image', `${layout}:${tag}`, bundle]);
  rmSync(bundle, { recursive: true, force: true });
  // layer 2: a whiteout, a removed directory, hardlinks, extra files
  run('umoci', ['unpack', '--image', `${layout}:${tag}`, bundle]);
  rmSync(path.join(rootfs, 'etc', 'deleted-later.txt'));
  rmSync(path.join(rootfs, 'data', 'old'), { recursive: true });
  writeFileSync(path.join(rootfs, 'data', 'new.txt'), 'layer two\n');
  linkSync(path.join(rootfs, 'data', 'new.txt'), path.join(rootfs, 'data', 'new-link.txt'));
  for (const [p, content] of Object.entries(opts.files ?? {})) {
    mkdirSync(path.dirname(path.join(rootfs, p)), { recursive: true });
    writeFileSync(path.join(rootfs, p), content);
  }
  run('umoci', ['repack', '--image', `${layout}:${tag}`, bundle]);
  rmSync(bundle, { recursive: true, force: true });
  const cfg = [
    'config',
    '--image',
    `${layout}:${tag}`,
    '--os',
    'linux',
    '--architecture',
    opts.architecture ?? 'amd64',
  ];
  for (const c of opts.cmd ?? ['/bin/sh', '-c', 'echo hello from busybox']) cfg.push('--config.cmd', c);
  cfg.push('--config.env', 'PATH=/bin', '--config.workingdir', '/');
  run('umoci', cfg);
  if (opts.variant) patchConfig(layout, tag, (c) => ({ ...c, variant: opts.variant }));
  run('umoci', ['gc', '--layout', layout]);
  return { layout, tag, manifestDigest: manifestOf(layout, tag).digest };
}

interface IndexEntry {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: Record<string, string>;
}

export function readIndex(layout: string): { schemaVersion: number; manifests: IndexEntry[] } {
  return JSON.parse(readFileSync(path.join(layout, 'index.json'), 'utf8'));
}

export function writeIndex(layout: string, index: { schemaVersion: number; manifests: IndexEntry[] }): void {
  writeFileSync(path.join(layout, 'index.json'), JSON.stringify(index));
}

export function manifestOf(layout: string, tag: string): IndexEntry {
  const e = readIndex(layout).manifests.find(
    (m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag,
  );
  if (!e) throw new Error(`no tag ${tag} in ${layout}`);
  return e;
}

export function blobPath(layout: string, digest: string): string {
  return path.join(layout, 'blobs', 'sha256', digest.replace(/^sha256:/, ''));
}

/** Write bytes as a blob into a layout; returns its descriptor fields. */
export function putBlob(layout: string, bytes: Buffer | string): { digest: string; size: number } {
  const b = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes);
  const digest = `sha256:${createHash('sha256').update(b).digest('hex')}`;
  writeFileSync(blobPath(layout, digest), b);
  return { digest, size: b.length };
}

/** Rewrite a tag's config (and so its manifest) in place. */
export function patchConfig(
  layout: string,
  tag: string,
  fn: (c: Record<string, unknown>) => Record<string, unknown>,
): void {
  const idx = readIndex(layout);
  const entry = manifestOf(layout, tag);
  const manifest = JSON.parse(readFileSync(blobPath(layout, entry.digest), 'utf8'));
  const config = JSON.parse(readFileSync(blobPath(layout, manifest.config.digest), 'utf8'));
  const c = putBlob(layout, JSON.stringify(fn(config)));
  manifest.config = { ...manifest.config, ...c };
  const m = putBlob(layout, JSON.stringify(manifest));
  idx.manifests = idx.manifests.map((e) => (e === entry || e.digest === entry.digest ? { ...e, ...m } : e));
  writeIndex(layout, idx);
}

/**
 * A multi-arch image: one per platform built into the same layout, then an image index blob that lists
 * them with their platforms, tagged `tag` in index.json (per-platform tags removed).
 */
export function buildMultiArchImage(
  workDir: string,
  platforms: Array<{ architecture: string; variant?: string }>,
  tag = 'multi',
): TestImage {
  const entries: IndexEntry[] = [];
  let layout = '';
  for (const p of platforms) {
    const t = `${p.architecture}${p.variant ?? ''}`;
    const img = buildBusyboxImage(workDir, {
      tag: t,
      architecture: p.architecture,
      ...(p.variant ? { variant: p.variant } : {}),
      files: { 'etc/arch': t },
    });
    layout = img.layout;
    const e = manifestOf(layout, t);
    entries.push({
      mediaType: e.mediaType,
      digest: e.digest,
      size: e.size,
      platform: { os: 'linux', architecture: p.architecture, ...(p.variant ? { variant: p.variant } : {}) },
    });
  }
  const index = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: entries,
  };
  const b = putBlob(layout, JSON.stringify(index));
  writeIndex(layout, {
    schemaVersion: 2,
    manifests: [
      {
        mediaType: 'application/vnd.oci.image.index.v1+json',
        ...b,
        annotations: { 'org.opencontainers.image.ref.name': tag },
      },
    ],
  });
  return { layout, tag, manifestDigest: b.digest };
}

export function toDockerArchive(img: TestImage, out: string, name = 'busybox:latest'): string {
  run('skopeo', [
    '--insecure-policy',
    'copy',
    '-q',
    `oci:${img.layout}:${img.tag}`,
    `docker-archive:${out}:${name}`,
  ]);
  return out;
}

export function toOciArchive(img: TestImage, out: string, name = 'busybox:latest'): string {
  run('skopeo', [
    '--insecure-policy',
    'copy',
    '-q',
    `oci:${img.layout}:${img.tag}`,
    `oci-archive:${out}:${name}`,
  ]);
  return out;
}

/** Pack a layout directory into a tar (an oci-archive made by tar itself, for multi-arch cases). */
export function tarDir(dir: string, out: string): string {
  run('tar', ['-cf', out, '-C', dir, '.']);
  return out;
}
