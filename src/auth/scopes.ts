/**
 * What each request needs (distribution's access records) and the scope strings of the Docker token spec:
 * `repository:<name>:pull,push`, `registry:catalog:*`. GET/HEAD need `pull`; POST/PUT/PATCH `pull,push`;
 * DELETE `delete`; a mount also `pull` on `from`; the catalog `registry:catalog:*`.
 */
import type { RouteId } from '../spec/routes.ts';

export interface ResourceActions {
  type: string;
  name: string;
  actions: string[];
}

/** Parses space-separated scopes; the name may itself contain `:` (type is the first field, actions the last). */
export function parseScopes(scopes: string | string[]): ResourceActions[] {
  const out: ResourceActions[] = [];
  for (const s of (Array.isArray(scopes) ? scopes : [scopes]).flatMap((x) => x.split(' ')).filter(Boolean)) {
    const first = s.indexOf(':');
    const last = s.lastIndexOf(':');
    if (first < 0 || last === first) continue;
    const actions = s.slice(last + 1).split(',').filter(Boolean);
    if (actions.length === 0) continue;
    out.push({ type: s.slice(0, first), name: s.slice(first + 1, last), actions: [...new Set(actions)] });
  }
  return out;
}

export function formatScope(r: ResourceActions): string {
  return `${r.type}:${r.name}:${r.actions.join(',')}`;
}

/** The access a request needs; an empty list means "any authenticated client" (`GET /v2/`). */
export function requiredAccess(route: RouteId, method: string, name: string | undefined, mountFrom?: string): ResourceActions[] {
  if (route === 'base') return [];
  if (route === 'catalog') return [{ type: 'registry', name: 'catalog', actions: ['*'] }];
  const actions = method === 'GET' || method === 'HEAD' ? ['pull'] : method === 'DELETE' ? ['delete'] : ['pull', 'push'];
  const out: ResourceActions[] = [{ type: 'repository', name: name!, actions }];
  if (route === 'upload-start' && mountFrom !== undefined && mountFrom !== name) out.push({ type: 'repository', name: mountFrom, actions: ['pull'] });
  return out;
}

/** Whether `granted` covers every action of `required` (`*` grants everything). */
export function covers(granted: ResourceActions[], required: ResourceActions[]): boolean {
  return required.every((r) =>
    r.actions.every((a) => granted.some((g) => g.type === r.type && g.name === r.name && (g.actions.includes(a) || g.actions.includes('*')))),
  );
}
