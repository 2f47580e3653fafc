/**
 * The route table of the OCI distribution API, shared by server and client. Paths are matched on the raw
 * (undecoded) path: every legal name, tag and digest character is unreserved, so anything encoded is invalid.
 */
export type RouteId = 'base' | 'catalog' | 'tags' | 'manifest' | 'blob' | 'upload-start' | 'upload' | 'referrers';

export interface RouteMatch {
  id: RouteId;
  /** Raw repository name, not yet validated. */
  name?: string;
  /** Raw tag/digest/upload id, not yet validated. */
  ref?: string;
}

interface Route {
  id: RouteId;
  re: RegExp;
  /** Endpoint ids from the spec, for documentation and test names. */
  endpoints: string[];
  methods: readonly string[];
}

export const ROUTES: readonly Route[] = [
  { id: 'base', re: /^\/v2\/?$/, endpoints: ['end-1'], methods: ['GET', 'HEAD'] },
  { id: 'catalog', re: /^\/v2\/_catalog$/, endpoints: [], methods: ['GET', 'HEAD'] },
  { id: 'tags', re: /^\/v2\/(.+)\/tags\/list$/, endpoints: ['end-8a', 'end-8b'], methods: ['GET', 'HEAD'] },
  { id: 'manifest', re: /^\/v2\/(.+)\/manifests\/([^/]+)$/, endpoints: ['end-3', 'end-7', 'end-9'], methods: ['GET', 'HEAD', 'PUT', 'DELETE'] },
  { id: 'upload-start', re: /^\/v2\/(.+)\/blobs\/uploads\/?$/, endpoints: ['end-4a', 'end-4b', 'end-11'], methods: ['POST'] },
  { id: 'upload', re: /^\/v2\/(.+)\/blobs\/uploads\/([^/]+)$/, endpoints: ['end-5', 'end-6', 'end-13'], methods: ['GET', 'PATCH', 'PUT', 'DELETE'] },
  { id: 'blob', re: /^\/v2\/(.+)\/blobs\/([^/]+)$/, endpoints: ['end-2', 'end-10'], methods: ['GET', 'HEAD', 'DELETE'] },
  { id: 'referrers', re: /^\/v2\/(.+)\/referrers\/([^/]+)$/, endpoints: ['end-12a', 'end-12b'], methods: ['GET', 'HEAD'] },
];

export function matchRoute(path: string): (RouteMatch & { methods: readonly string[] }) | undefined {
  for (const r of ROUTES) {
    const m = r.re.exec(path);
    if (!m) continue;
    const out: RouteMatch & { methods: readonly string[] } = { id: r.id, methods: r.methods };
    if (m[1] !== undefined) out.name = m[1];
    if (m[2] !== undefined) out.ref = m[2];
    return out;
  }
  return undefined;
}
