/** The measurements: table rows (one per scenario and metric) and the machine's limits. */

export type ServerId = 'distribution' | 'berth';
export const SERVERS: readonly ServerId[] = ['distribution', 'berth'];

export interface Row {
  /** Stable id, e.g. `mono`, `manifest-get-tag-p99`. */
  id: string;
  /** The scenario group (`--only` ids). */
  group: string;
  scenario: string;
  unit: string;
  better: 'higher' | 'lower';
  /** One value per run and server. */
  values: Record<ServerId, number[]>;
  /** Failures per server (a failed run adds no value). */
  errors: Record<ServerId, string[]>;
  /** The machine limit this row is compared with (same unit). */
  limit?: { id: string; label: string };
  /** Not part of the comparison proper (setup timings). */
  informational?: boolean;
  notes: string[];
}

export interface LimitRow {
  id: string;
  label: string;
  unit: string;
  values: number[];
  /** The same values by the scenario group that was running when each was taken. */
  byGroup: Record<string, number[]>;
  how: string;
  error?: string;
}

export function median(xs: readonly number[]): number | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export class Results {
  readonly rows: Row[] = [];
  readonly limits: LimitRow[] = [];
  /** The scenario group running now (limits taken meanwhile are attributed to it). */
  group = 'limits';

  /** Records one measurement of a limit. */
  record(l: LimitRow, value: number): void {
    l.values.push(value);
    (l.byGroup[this.group] ??= []).push(value);
  }

  row(id: string, init: Omit<Row, 'id' | 'values' | 'errors' | 'notes'> & { notes?: string[] }): Row {
    let r = this.rows.find((x) => x.id === id);
    if (!r) {
      r = { id, ...init, notes: init.notes ?? [], values: { distribution: [], berth: [] }, errors: { distribution: [], berth: [] } };
      this.rows.push(r);
    }
    return r;
  }

  limit(id: string, label: string, unit: string, how: string): LimitRow {
    let l = this.limits.find((x) => x.id === id);
    if (!l) {
      l = { id, label, unit, how, values: [], byGroup: {} };
      this.limits.push(l);
    }
    return l;
  }

  /** The median of a limit: of the values taken during `group` when there are any, else of all. */
  limitValue(id: string, group?: string): number | undefined {
    const l = this.limits.find((x) => x.id === id);
    if (!l) return undefined;
    const during = group === undefined ? undefined : l.byGroup[group];
    return median(during && during.length > 0 ? during : l.values);
  }

  /** Whether anything failed. */
  failures(): string[] {
    const out: string[] = [];
    for (const r of this.rows) for (const s of SERVERS) for (const e of r.errors[s]) out.push(`${r.scenario} (${s}): ${e}`);
    for (const l of this.limits) if (l.error) out.push(`limit ${l.label}: ${l.error}`);
    return out;
  }
}
