import { test } from 'node:test';
import assert from 'node:assert/strict';
import { memoize } from './memo.ts';

/** A parse that counts its calls and throws for strings starting with "!". */
function counted(): { parse: (s: string) => { s: string }; calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    parse: (s) => {
      calls.push(s);
      if (s.startsWith('!')) throw new Error(`bad ${s}`);
      return { s };
    },
  };
}

test('memoize: a string parsed once answers every later ask with the same value', () => {
  const c = counted();
  const m = memoize(c.parse, 8);
  const first = m('a');
  assert.equal(m('a'), first);
  assert.deepEqual(first, { s: 'a' });
  assert.deepEqual(c.calls, ['a']);
});

test('memoize: a parse that throws is not kept, so it throws again each time', () => {
  const c = counted();
  const m = memoize(c.parse, 8);
  assert.throws(() => m('!x'), /bad !x/);
  assert.throws(() => m('!x'), /bad !x/);
  assert.deepEqual(c.calls, ['!x', '!x']);
});

test('memoize: null is a kept answer (unlike undefined, which means not yet parsed)', () => {
  let calls = 0;
  const m = memoize((s: string) => {
    calls++;
    return s === 'none' ? null : s;
  });
  assert.equal(m('none'), null);
  assert.equal(m('none'), null);
  assert.equal(calls, 1);
});

test('memoize: strings longer than maxLength are parsed every time, never kept', () => {
  const c = counted();
  const m = memoize(c.parse, 8, 4);
  m('12345');
  m('12345');
  m('1234');
  m('1234');
  assert.deepEqual(c.calls, ['12345', '12345', '1234']);
});

test('memoize: past max entries it starts over, so it never holds more than max', () => {
  const c = counted();
  const m = memoize(c.parse, 3);
  for (const s of ['a', 'b', 'c']) m(s);
  for (const s of ['a', 'b', 'c']) m(s);
  assert.equal(c.calls.length, 3);
  m('d'); // full: cleared, then d kept
  m('d');
  m('a'); // parsed again
  assert.deepEqual(c.calls, ['a', 'b', 'c', 'd', 'a']);
});
