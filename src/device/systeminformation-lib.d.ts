// systeminformation's per-area modules (lib/cpu.js…) have no typings of their own; their functions are
// the ones its index re-exports (typed in 'systeminformation'), picked by name in info.ts.
declare module 'systeminformation/lib/*' {
  const area: Record<string, unknown>;
  export default area;
}
