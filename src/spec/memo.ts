/**
 * A bounded memo of a pure parse of request strings (a request path, a manifest reference). A pull repeats the
 * same few strings thousands of times a second, and their regular expressions were a measurable share of a
 * manifest GET (docs/performance.md). A parse that throws is not kept, nor one of a string longer than
 * `maxLength`; past `max` entries the memo starts over. So what it holds stays under `max × maxLength`
 * characters, and a client sending ever new strings costs one parse each, as without it.
 */
export function memoize<T>(parse: (s: string) => T, max = 4096, maxLength = 512): (s: string) => T {
  const kept = new Map<string, T>();
  return (s) => {
    let v = kept.get(s);
    if (v === undefined) {
      v = parse(s);
      if (s.length <= maxLength) {
        if (kept.size >= max) kept.clear();
        kept.set(s, v);
      }
    }
    return v;
  };
}
