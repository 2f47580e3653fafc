/** Renders the results as Markdown: the comparison table, the machine limits, and notes. */
import type { MachineFacts } from './machine.ts';
import { type LimitRow, type Results, type Row, SERVERS, median } from './results.ts';

export function fmt(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return '—';
  const a = Math.abs(n);
  if (a >= 10_000) return Math.round(n).toLocaleString('en-US');
  if (a >= 100) return n.toFixed(0);
  if (a >= 10) return n.toFixed(1);
  return n.toFixed(2);
}

function cell(r: Row, s: (typeof SERVERS)[number]): string {
  const m = median(r.values[s]);
  const failed = r.errors[s].length;
  if (m === undefined) return failed > 0 ? 'error' : '—';
  return failed > 0 ? `${fmt(m)} (${failed} failed)` : fmt(m);
}

function ratio(r: Row): string {
  const d = median(r.values.distribution);
  const b = median(r.values.berth);
  if (d === undefined || b === undefined || d === 0) return '—';
  return `${(b / d).toFixed(2)}×${r.better === 'lower' ? ' (lower is better)' : ''}`;
}

function limitCells(r: Row, results: Results): [string, string] {
  if (!r.limit) return ['', ''];
  const v = results.limitValue(r.limit.id, r.group);
  const b = median(r.values.berth);
  if (v === undefined) return [`— (${r.limit.label})`, '—'];
  return [`${fmt(v)} (${r.limit.label})`, b === undefined ? '—' : `${Math.round((b / v) * 100)}%`];
}

function escape(s: string): string {
  return s.replace(/\|/g, '\\|');
}

/** Run-to-run spread as max/min, per server (`—` with fewer than two runs). */
function spread(r: Row): string {
  const one = (xs: number[]): string => {
    if (xs.length < 2) return '—';
    const lo = Math.min(...xs);
    return lo > 0 ? `${(Math.max(...xs) / lo).toFixed(2)}` : '—';
  };
  const d = one(r.values.distribution);
  const b = one(r.values.berth);
  return d === '—' && b === '—' ? '' : `${d} / ${b}`;
}

export function comparisonTable(results: Results): string {
  const out = [
    '| scenario | unit | distribution | Berth | Berth/distribution | limit | Berth/limit | spread max/min (dist / Berth) |',
    '|---|---|--:|--:|--:|--:|--:|--:|',
  ];
  for (const r of results.rows) {
    const [limit, frac] = limitCells(r, results);
    const name = r.informational ? `_${r.scenario}_` : r.scenario;
    out.push(`| ${escape(name)} | ${r.unit} | ${cell(r, 'distribution')} | ${cell(r, 'berth')} | ${ratio(r)} | ${limit} | ${frac} | ${spread(r)} |`);
  }
  return out.join('\n');
}

function limitValue(l: LimitRow): string {
  const m = median(l.values);
  if (m === undefined) return l.error ? 'error' : '—';
  return l.error ? `${fmt(m)} (some runs failed)` : fmt(m);
}

export function limitsTable(results: Results): string {
  const out = ['| limit | value | unit | spread max/min | how |', '|---|--:|---|--:|---|'];
  for (const l of results.limits) {
    const lo = Math.min(...l.values);
    const sp = l.values.length > 1 && lo > 0 ? (Math.max(...l.values) / lo).toFixed(2) : '—';
    out.push(`| ${escape(l.label)} | ${limitValue(l)} | ${l.unit} | ${sp} | ${escape(l.how)} |`);
  }
  return out.join('\n');
}

export interface ReportHeader {
  machine: MachineFacts;
  berth: string;
  distribution: string;
  tools: Record<string, string>;
  mode: string;
  elapsedSeconds: number;
}

export function report(h: ReportHeader, results: Results, notes: string[]): string {
  const m = h.machine;
  const lines = [
    '# Berth benchmark',
    '',
    `- date: ${m.date}`,
    `- machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB RAM, ${m.kernel}`,
    `- storage: ${m.storage}`,
    `- Node ${m.node}`,
    `- Berth: ${h.berth}`,
    `- distribution: ${h.distribution}`,
    `- tools: ${Object.entries(h.tools).map(([k, v]) => `${k}: ${v}`).join('; ')}`,
    `- mode: ${h.mode}`,
    `- took ${Math.round(h.elapsedSeconds)} s. MB = 10^6 bytes; values are medians; spread is max ÷ min over the runs; ratios are Berth ÷ distribution (higher is better unless stated); the limit column is the median of the ceiling measured in turn with both registries during that scenario. Rows in _italics_ are setup timings (one run).`,
    '',
    '## Berth vs distribution',
    '',
    comparisonTable(results),
    '',
    '## Machine limits (same run; the ceilings are measured in turn with the two registries inside each scenario)',
    '',
    limitsTable(results),
    '',
  ];
  const rowNotes = results.rows.flatMap((r) => r.notes.map((n) => `${r.scenario}: ${n}`));
  const failures = results.failures();
  const all = [...rowNotes, ...notes];
  if (all.length > 0) lines.push('## Notes', '', ...all.map((n) => `- ${n}`), '');
  if (failures.length > 0) lines.push('## Failures', '', ...failures.map((f) => `- ${f.replace(/\n/g, ' ')}`), '');
  return lines.join('\n');
}
