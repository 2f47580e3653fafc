/**
 * How much CPU the rest of the machine used while the benchmark ran: busy time from /proc/stat minus the
 * CPU time of the harness and all its descendants (live ones from /proc/<pid>/stat, exited ones through
 * their parents' cutime/cstime). A shared or noisy machine shows up here (and as steal time in a VM).
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { descendants } from './servers.ts';

/** Clock ticks per second of /proc times (USER_HZ; 100 on Linux everywhere in practice). */
const HZ = 100;

export interface CpuSnapshot {
  at: number;
  /** user + nice + system of all CPUs, in ticks (interrupt time excluded: loopback traffic lands there). */
  busy: number;
  steal: number;
  /** CPU of this process tree, in ticks. */
  ours: number;
}

function procTicks(pid: number | 'self'): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields after the command: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14)
    return Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  } catch {
    return 0;
  }
}

export function cpuSnapshot(): CpuSnapshot {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , , , steal = 0] = v;
  let ours = procTicks('self');
  for (const pid of descendants(process.pid)) ours += procTicks(pid);
  return { at: Date.now(), busy: user + nice + system, steal, ours };
}

export interface CpuUse {
  seconds: number;
  /** CPU-seconds used by processes outside the benchmark. */
  foreign: number;
  /** Share of the machine's capacity (all CPUs) used by them, 0–1. */
  foreignShare: number;
  stealShare: number;
}

export function cpuBetween(a: CpuSnapshot, b: CpuSnapshot): CpuUse {
  const seconds = (b.at - a.at) / 1000;
  const capacity = Math.max(seconds * availableParallelism(), 1e-9);
  const foreign = Math.max(0, (b.busy - a.busy - (b.ours - a.ours)) / HZ);
  return { seconds, foreign, foreignShare: foreign / capacity, stealShare: (b.steal - a.steal) / HZ / capacity };
}
