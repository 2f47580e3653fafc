/**
 * distribution's `_state` upload token (registry/handlers/hmac.go): padded base64url of
 * HMAC-SHA256(secret, json) || json, json = {"Name","UUID","Offset","StartedAt"}.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { OciError } from '../spec/errors.ts';

export interface UploadState {
  Name: string;
  UUID: string;
  Offset: number;
  StartedAt: string;
}

export function packState(secret: string, state: UploadState): string {
  const json = Buffer.from(JSON.stringify({ Name: state.Name, UUID: state.UUID, Offset: state.Offset, StartedAt: state.StartedAt }));
  const mac = createHmac('sha256', secret).update(json).digest();
  return Buffer.concat([mac, json]).toString('base64').replace(/\+/g, '-').replace(/\//g, '_');
}

/** Verifies and decodes a token; throws `BLOB_UPLOAD_INVALID` when it is malformed or tampered with. */
export function unpackState(secret: string, token: string): UploadState {
  const bad = (reason: string): OciError => new OciError('BLOB_UPLOAD_INVALID', { reason });
  const raw = Buffer.from(token.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  if (raw.length <= 32) throw bad('upload state token too short');
  const mac = raw.subarray(0, 32);
  const json = raw.subarray(32);
  const want = createHmac('sha256', secret).update(json).digest();
  if (!timingSafeEqual(mac, want)) throw bad('upload state token signature mismatch');
  let v: unknown;
  try {
    v = JSON.parse(json.toString('utf8'));
  } catch {
    throw bad('upload state token is not JSON');
  }
  const s = v as Partial<UploadState>;
  if (typeof s.Name !== 'string' || typeof s.UUID !== 'string' || typeof s.Offset !== 'number') throw bad('upload state token incomplete');
  return { Name: s.Name, UUID: s.UUID, Offset: s.Offset, StartedAt: String(s.StartedAt ?? '') };
}
