/**
 * Access rules of the built-in token server, a YAML file:
 *
 *   groups:
 *     devs: [alice, bob]
 *   rules:
 *     - repository: "public/**"        # glob: * within one path component, ** across them
 *       anonymous: [pull]              # everyone, logged in or not
 *     - repository: "team/*"
 *       users: { alice: [pull, push, delete] }
 *       groups: { devs: [pull, push] }
 *       authenticated: [pull]          # any user who logged in
 *   catalog: { users: [alice], groups: [], authenticated: false }
 *
 * The first rule whose pattern matches the repository decides; a repository no rule matches gets nothing.
 * A token holds the intersection of what was asked for and what the rule grants.
 */
import { readFileSync, statSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import type { ResourceActions } from './scopes.ts';

const ACTIONS = ['pull', 'push', 'delete', '*'];

interface Rule {
  pattern: string;
  re: RegExp;
  anonymous: string[];
  authenticated: string[];
  users: Map<string, string[]>;
  groups: Map<string, string[]>;
}

export class RulesError extends Error {}

function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*' && glob[i + 1] === '*') {
      re += '.*';
      i++;
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

export class AccessRules {
  private constructor(
    private readonly rules: Rule[],
    private readonly memberOf: Map<string, string[]>,
    private readonly catalog: { users: Set<string>; groups: Set<string>; authenticated: boolean },
  ) {}

  /** Parses and validates a rules document; every problem is reported with where it is. */
  static parse(text: string, source = 'rules'): AccessRules {
    let doc: unknown;
    try {
      doc = parseYaml(text);
    } catch (e) {
      throw new RulesError(`${source}: not valid YAML: ${(e as Error).message}`);
    }
    const problems: string[] = [];
    const obj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
    if (!obj(doc)) throw new RulesError(`${source}: expected a mapping with "rules" (and optional "groups", "catalog")`);
    for (const k of Object.keys(doc)) if (!['rules', 'groups', 'catalog'].includes(k)) problems.push(`${k}: unknown key (expected rules, groups, catalog)`);
    const strings = (v: unknown, where: string): string[] => {
      if (v === undefined || v === null) return [];
      if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) {
        problems.push(`${where}: expected a list of strings`);
        return [];
      }
      return v;
    };
    const actions = (v: unknown, where: string): string[] => {
      const list = strings(v, where);
      for (const a of list) if (!ACTIONS.includes(a)) problems.push(`${where}: unknown action "${a}" (expected pull, push, delete or *)`);
      return list;
    };
    const memberOf = new Map<string, string[]>();
    if (doc.groups !== undefined) {
      if (!obj(doc.groups)) problems.push('groups: expected a mapping of group name to a list of users');
      else
        for (const [g, members] of Object.entries(doc.groups)) {
          for (const u of strings(members, `groups.${g}`)) memberOf.set(u, [...(memberOf.get(u) ?? []), g]);
        }
    }
    const rules: Rule[] = [];
    if (!Array.isArray(doc.rules)) problems.push('rules: expected a list of rules');
    else
      doc.rules.forEach((r: unknown, i: number) => {
        const at = `rules[${i}]`;
        if (!obj(r)) {
          problems.push(`${at}: expected a mapping`);
          return;
        }
        for (const k of Object.keys(r)) if (!['repository', 'anonymous', 'authenticated', 'users', 'groups'].includes(k)) problems.push(`${at}.${k}: unknown key`);
        if (typeof r.repository !== 'string' || !r.repository) {
          problems.push(`${at}.repository: expected a glob pattern such as "team/*"`);
          return;
        }
        const byName = (v: unknown, where: string): Map<string, string[]> => {
          const m = new Map<string, string[]>();
          if (v === undefined || v === null) return m;
          if (!obj(v)) problems.push(`${where}: expected a mapping of name to a list of actions`);
          else for (const [n, a] of Object.entries(v)) m.set(n, actions(a, `${where}.${n}`));
          return m;
        };
        rules.push({
          pattern: r.repository,
          re: globToRegExp(r.repository),
          anonymous: actions(r.anonymous, `${at}.anonymous`),
          authenticated: actions(r.authenticated, `${at}.authenticated`),
          users: byName(r.users, `${at}.users`),
          groups: byName(r.groups, `${at}.groups`),
        });
      });
    const cat = { users: new Set<string>(), groups: new Set<string>(), authenticated: false };
    if (doc.catalog !== undefined) {
      if (!obj(doc.catalog)) problems.push('catalog: expected a mapping with users, groups, authenticated');
      else {
        for (const u of strings(doc.catalog.users, 'catalog.users')) cat.users.add(u);
        for (const g of strings(doc.catalog.groups, 'catalog.groups')) cat.groups.add(g);
        if (doc.catalog.authenticated !== undefined && typeof doc.catalog.authenticated !== 'boolean') problems.push('catalog.authenticated: expected true or false');
        cat.authenticated = doc.catalog.authenticated === true;
      }
    }
    if (problems.length > 0) throw new RulesError(`${source}: ${problems.join('; ')}`);
    return new AccessRules(rules, memberOf, cat);
  }

  /** Actions `user` (undefined: anonymous) may take on a repository. */
  actionsFor(user: string | undefined, repository: string): string[] {
    const rule = this.rules.find((r) => r.re.test(repository));
    if (!rule) return [];
    const out = new Set(rule.anonymous);
    if (user !== undefined) {
      for (const a of rule.authenticated) out.add(a);
      for (const a of rule.users.get(user) ?? []) out.add(a);
      for (const g of this.memberOf.get(user) ?? []) for (const a of rule.groups.get(g) ?? []) out.add(a);
    }
    return out.has('*') ? ['pull', 'push', 'delete'] : [...out];
  }

  /** The part of `requested` that `user` is allowed: the intersection, per resource. */
  grant(user: string | undefined, requested: ResourceActions[]): ResourceActions[] {
    const out: ResourceActions[] = [];
    for (const r of requested) {
      let allowed: string[] = [];
      if (r.type === 'repository') allowed = this.actionsFor(user, r.name);
      else if (r.type === 'registry' && r.name === 'catalog' && user !== undefined) {
        const ok = this.catalog.authenticated || this.catalog.users.has(user) || (this.memberOf.get(user) ?? []).some((g) => this.catalog.groups.has(g));
        allowed = ok ? ['*'] : [];
      }
      const actions = r.actions.includes('*') && r.type === 'repository' ? allowed : r.actions.filter((a) => allowed.includes(a) || allowed.includes('*'));
      if (actions.length > 0) out.push({ type: r.type, name: r.name, actions });
    }
    return out;
  }
}

/** A rules file re-read when it changes; a change that does not parse keeps the last good rules. */
export class RulesFile {
  private rules: AccessRules;
  private stamp: string;
  constructor(
    readonly path: string,
    private readonly onError: (message: string) => void,
  ) {
    this.stamp = stampOf(path);
    this.rules = AccessRules.parse(readFileSync(path, 'utf8'), path);
  }
  get(): AccessRules {
    let stamp: string;
    try {
      stamp = stampOf(this.path);
    } catch (e) {
      this.onError(`access rules ${this.path}: ${(e as Error).message}; keeping the last good rules`);
      return this.rules;
    }
    if (stamp !== this.stamp) {
      this.stamp = stamp;
      try {
        this.rules = AccessRules.parse(readFileSync(this.path, 'utf8'), this.path);
      } catch (e) {
        this.onError(`${(e as Error).message}; keeping the last good rules`);
      }
    }
    return this.rules;
  }
}

function stampOf(path: string): string {
  const st = statSync(path);
  return `${st.mtimeMs}:${st.size}:${st.ino}`;
}
