import type { KeyObject } from 'node:crypto';
import { type CommandEnvelope, CommandEnvelopeSchema, type SignedCommand } from './messages.js';
import { canonicalJson } from './signing.js';
import { checkSignature, signatureOf, type TargetCheck } from './targets.js';

/**
 * Signed remote commands: ed25519 over `"berth-command-v1\0" + canonicalJson(command)` with the fleet key
 * (the domain tag keeps a command signature from being valid as a target's, and the other way round).
 * The device checks, besides the signature: its own fleet and id, the topic, `expiresAt` against its
 * clock, and that it has not run the id before (docs/protocol.md).
 */
const DOMAIN = 'berth-command-v1\0';

export function commandSigningBytes(command: CommandEnvelope): Buffer {
  return Buffer.from(DOMAIN + canonicalJson(command), 'utf8');
}

export function signCommand(command: CommandEnvelope, privateKey: KeyObject): SignedCommand {
  const checked = CommandEnvelopeSchema.parse(command);
  return { v: 1, command: checked, signature: signatureOf(commandSigningBytes(checked), privateKey) };
}

export function verifyCommand(signed: SignedCommand, publicKey: KeyObject): TargetCheck {
  return checkSignature(commandSigningBytes(signed.command), signed.signature, publicKey);
}
