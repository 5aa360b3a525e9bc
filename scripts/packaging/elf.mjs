// Just enough ELF to check and repair what postject does to an executable: the section table, and the
// dynamic symbol table as readelf prints it.
import { closeSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { run } from './common.mjs';

/** @returns {Map<string, { offset: number, size: number, type: number }>} sections by name */
export function readSections(file) {
  const buf = readFileSync(file);
  if (buf.readUInt32BE(0) !== 0x7f454c46) throw new Error(`${file} is not an ELF file`);
  const is64 = buf[4] === 2;
  const le = buf[5] === 1;
  const u16 = (o) => (le ? buf.readUInt16LE(o) : buf.readUInt16BE(o));
  const u32 = (o) => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const uword = (o) => (is64 ? Number(le ? buf.readBigUInt64LE(o) : buf.readBigUInt64BE(o)) : u32(o));
  const shoff = uword(is64 ? 0x28 : 0x20);
  const shentsize = u16(is64 ? 0x3a : 0x2e);
  const shnum = u16(is64 ? 0x3c : 0x30);
  const shstrndx = u16(is64 ? 0x3e : 0x32);
  const header = (i) => {
    const o = shoff + i * shentsize;
    return is64
      ? { name: u32(o), type: u32(o + 4), offset: uword(o + 0x18), size: uword(o + 0x20) }
      : { name: u32(o), type: u32(o + 4), offset: u32(o + 0x10), size: u32(o + 0x14) };
  };
  const strtab = header(shstrndx);
  const sections = new Map();
  for (let i = 0; i < shnum; i++) {
    const h = header(i);
    const start = strtab.offset + h.name;
    const name = buf.subarray(start, buf.indexOf(0, start)).toString();
    if (name) sections.set(name, { offset: h.offset, size: h.size, type: h.type });
  }
  return sections;
}

/** The dynamic symbols as `readelf --dyn-syms -W` lists them (the guard against a mangled symbol table). */
export async function dynSyms(file, readelf = 'readelf') {
  const out = await run(readelf, ['--dyn-syms', '-W', file]);
  return out
    .split('\n')
    .filter((l) => /^\s*\d+:/.test(l))
    .map((l) => l.trim().replace(/\s+/g, ' '));
}

/**
 * Sections the dynamic linker reads to resolve symbols (the executable's own, and an addon's references to
 * them), with the relocations that index the symbol table.
 */
export const DYNAMIC_SECTIONS = [
  '.gnu.hash',
  '.hash',
  '.dynsym',
  '.dynstr',
  '.gnu.version',
  '.gnu.version_r',
  '.gnu.version_d',
  '.rel.dyn',
  '.rel.plt',
  '.rela.dyn',
  '.rela.plt',
  '.dynamic',
];

/**
 * Copy the pristine bytes of the dynamic-linking sections from `base` back into `injected`. postject
 * (1.0.0-alpha.6, through LIEF) rebuilds them although it only adds a note: on ppc64le with an all-zero
 * bloom filter (no addon can then resolve `node_module_register`), on armv7 with the symbols reordered and
 * the relocations renumbered. It moves none of them, so the original bytes go back at the same offsets and
 * the executable links exactly like the official node binary.
 * @returns {string[]} the sections restored
 */
export function restoreDynamicSections(base, injected) {
  const before = readSections(base);
  const after = readSections(injected);
  const restored = [];
  const src = openSync(base, 'r');
  const dst = openSync(injected, 'r+');
  try {
    for (const name of DYNAMIC_SECTIONS) {
      const a = before.get(name);
      const b = after.get(name);
      if (!a && !b) continue;
      if (!a || !b || a.offset !== b.offset || a.size !== b.size) {
        throw new Error(
          `${injected}: section ${name} moved or changed size during injection ` +
            `(${JSON.stringify(a)} -> ${JSON.stringify(b)}); cannot restore it`,
        );
      }
      const bytes = Buffer.alloc(a.size);
      readSync(src, bytes, 0, a.size, a.offset);
      writeSync(dst, bytes, 0, a.size, b.offset);
      restored.push(name);
    }
  } finally {
    closeSync(src);
    closeSync(dst);
  }
  return restored;
}

/** Throw unless the executable's dynamic symbols are what the base binary had. */
export async function assertDynSymsUnchanged(base, injected) {
  const [a, b] = await Promise.all([dynSyms(base), dynSyms(injected)]);
  if (a.length === 0) throw new Error(`${base}: readelf found no dynamic symbols`);
  const differ = a.length !== b.length || a.some((l, i) => l !== b[i]);
  if (differ) {
    const firstBad = a.findIndex((l, i) => l !== b[i]);
    throw new Error(
      `${injected}: dynamic symbols differ from ${base} after injection (${a.length} vs ${b.length}; ` +
        `first difference at #${firstBad}: ${JSON.stringify(a[firstBad])} vs ${JSON.stringify(b[firstBad])})`,
    );
  }
  return a.length;
}
