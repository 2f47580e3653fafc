/**
 * htpasswd files with bcrypt entries only (as distribution): `user:$2y$...` per line. The file is re-read
 * when its modification time or size changes. Verification always runs one bcrypt comparison, also for
 * unknown users, so timing does not reveal which users exist; a verified password is remembered as a keyed
 * hash for a few minutes so that every request of a push does not pay for bcrypt again.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync, writeFileSync, renameSync, existsSync } from 'node:fs';
import bcrypt from 'bcryptjs';

const BCRYPT = /^\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}$/;
const REMEMBER_MS = 5 * 60_000;
/** A valid hash that matches no password, compared against for unknown users (made on first need: bcrypt is slow). */
let dummy: string | undefined;
const dummyHash = (): string => (dummy ??= bcrypt.hashSync(randomBytes(16).toString('hex'), 10));

export interface HtpasswdLoad {
  users: Map<string, string>;
  /** Lines that are not `user:bcrypt-hash`, with why. */
  skipped: string[];
}

export function parseHtpasswd(text: string): HtpasswdLoad {
  const users = new Map<string, string>();
  const skipped: string[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    const user = colon > 0 ? line.slice(0, colon) : '';
    const hash = colon > 0 ? line.slice(colon + 1) : '';
    if (!user) skipped.push(`line ${i + 1}: expected user:hash`);
    else if (!BCRYPT.test(hash)) skipped.push(`line ${i + 1} (${user}): only bcrypt entries are supported (htpasswd -B)`);
    else users.set(user, hash);
  });
  return { users, skipped };
}

export class Htpasswd {
  private users = new Map<string, string>();
  private stamp = '';
  private readonly key = randomBytes(32);
  private readonly remembered = new Map<string, { hash: string; mac: Buffer; until: number }>();

  constructor(
    readonly path: string,
    private readonly onSkipped: (problems: string[]) => void = () => undefined,
  ) {
    this.refresh(true);
  }

  /** Re-reads the file when it changed. A file that became unreadable keeps the last good user list. */
  private refresh(first = false): void {
    let stamp: string;
    try {
      const st = statSync(this.path);
      stamp = `${st.mtimeMs}:${st.size}:${st.ino}`;
    } catch (e) {
      if (first) throw new Error(`htpasswd file ${this.path}: ${(e as Error).message}`);
      return;
    }
    if (stamp === this.stamp) return;
    const { users, skipped } = parseHtpasswd(readFileSync(this.path, 'utf8'));
    if (skipped.length > 0) this.onSkipped(skipped);
    this.users = users;
    this.stamp = stamp;
    this.remembered.clear();
  }

  async verify(user: string, password: string): Promise<boolean> {
    this.refresh();
    const hash = this.users.get(user);
    const mac = createHmac('sha256', this.key).update(user).update('\0').update(password).digest();
    const known = this.remembered.get(user);
    if (hash && known && known.hash === hash && known.until > Date.now() && timingSafeEqual(known.mac, mac)) return true;
    const ok = await bcrypt.compare(password, hash ?? dummyHash());
    if (ok && hash) {
      if (this.remembered.size > 10_000) this.remembered.clear();
      this.remembered.set(user, { hash, mac, until: Date.now() + REMEMBER_MS });
    }
    return ok && hash !== undefined;
  }
}

/** Adds or replaces a user's bcrypt entry (cost 10, `$2y$` as `htpasswd -B` writes), atomically. */
export function htpasswdSet(path: string, user: string, password: string): void {
  if (!user || user.includes(':') || /\s/.test(user)) throw new Error('user names may not be empty or contain ":" or spaces');
  const hash = bcrypt.hashSync(password, 10).replace(/^\$2[ab]\$/, '$2y$');
  const lines = existsSync(path) ? readFileSync(path, 'utf8').split(/\r?\n/).filter((l) => l.trim() && !l.startsWith(`${user}:`)) : [];
  lines.push(`${user}:${hash}`);
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  writeFileSync(tmp, `${lines.join('\n')}\n`, { mode: 0o600 });
  renameSync(tmp, path);
}
