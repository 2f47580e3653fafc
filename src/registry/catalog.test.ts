/**
 * The catalog walk against a model: for random trees of nested repository names (some directories only
 * namespaces, some with uploads only), every page size and every `last` give exactly the names after `last` in
 * catalog order, and following pages lists each repository once. Also checks the listing cache across pages.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { inmemoryDriver } from '../storage/memory.ts';
import { catalogPage } from './catalog.ts';
import { type ListingCache } from './context.ts';
import { REPOSITORIES } from './paths.ts';

/** Catalog order: path components compared byte-wise, a proper prefix first. */
function catalogOrder(a: string, b: string): number {
  const x = a.split('/');
  const y = b.split('/');
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] !== y[i]) return Buffer.compare(Buffer.from(x[i]!), Buffer.from(y[i]!));
  }
  return x.length - y.length;
}

const component = fc.constantFrom('a', 'b', 'a-b', 'a.b', 'ab', 'z', 'r0', 'r1', 'r10', 'x_y');
const name = fc.array(component, { minLength: 1, maxLength: 3 }).map((c) => c.join('/'));

test('every page of the catalog is the model’s next names, for any tree, page size and last', async () => {
  await fc.assert(
    fc.asyncProperty(fc.uniqueArray(name, { minLength: 0, maxLength: 40 }), fc.uniqueArray(name, { maxLength: 5 }), fc.integer({ min: 1, max: 25 }), async (repos, uploadsOnly, n) => {
      const d = inmemoryDriver();
      for (const r of repos) await d.putContent(`${REPOSITORIES}/${r}/_manifests/tags/t/current/link`, Buffer.from('x'));
      for (const u of uploadsOnly) await d.putContent(`${REPOSITORIES}/${u}/_uploads/id/startedat`, Buffer.from('x'));
      const want = [...repos].sort(catalogOrder);
      const cache: ListingCache = new Map();
      // Following pages from the start.
      const got: string[] = [];
      let last: string | undefined;
      for (let pages = 0; ; pages++) {
        assert.ok(pages <= want.length + 1, 'pagination ends');
        const page = await catalogPage(d, n, last, cache);
        assert.ok(page.repositories.length <= n);
        got.push(...page.repositories);
        if (!page.more) break;
        assert.equal(page.repositories.length, n, 'a page before the last one is full');
        last = page.repositories.at(-1);
      }
      assert.deepEqual(got, want);
      // Any `last`, listed or not.
      for (const l of [...want.slice(0, 5), ...uploadsOnly, 'a/a', 'r1/zz']) {
        const page = await catalogPage(d, n, l, cache);
        const after = want.filter((r) => catalogOrder(r, l) > 0);
        assert.deepEqual(page.repositories, after.slice(0, n), `after ${l}`);
        assert.equal(page.more, after.length > n);
      }
    }),
    { numRuns: 150 },
  );
});

test('a listing read ahead and never needed may fail unseen; one the page needs fails the page', async () => {
  const d = inmemoryDriver();
  for (const r of ['a/x', 'a/y', 'b', 'c']) await d.putContent(`${REPOSITORIES}/${r}/_manifests/x`, Buffer.from('x'));
  // `c` is read ahead on the first page of two (a/x, a/y; `b` decides that more follow) but never needed.
  const failing = { ...d, list: async (p: string) => (p.endsWith('/c') ? Promise.reject(new Error('EIO')) : d.list(p)) };
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown): void => void unhandled.push(e);
  process.on('unhandledRejection', onUnhandled);
  try {
    assert.deepEqual(await catalogPage(failing, 2, undefined), { repositories: ['a/x', 'a/y'], more: true });
    await assert.rejects(catalogPage(failing, 3, undefined), /EIO/);
    await new Promise((r) => setTimeout(r, 20));
  } finally {
    process.off('unhandledRejection', onUnhandled);
  }
  assert.deepEqual(unhandled, []);
});
