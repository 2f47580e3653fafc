/** Facts about the machine the benchmark ran on. */
import { readFileSync, realpathSync } from 'node:fs';
import { availableParallelism, cpus, release, totalmem, type as osType } from 'node:os';

export interface MachineFacts {
  date: string;
  node: string;
  cpu: string;
  cores: number;
  memoryGiB: number;
  kernel: string;
  /** File system type and device of the storage directory. */
  storage: string;
}

function mountOf(dir: string): string {
  try {
    const real = realpathSync(dir);
    let best = { point: '', text: 'unknown' };
    for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
      const [dev, point, fstype] = line.split(' ');
      if (!dev || !point || !fstype) continue;
      const p = point.replace(/\\040/g, ' ');
      if ((real === p || real.startsWith(p.endsWith('/') ? p : `${p}/`)) && p.length >= best.point.length) {
        best = { point: p, text: `${fstype} on ${dev} (mounted at ${p})` };
      }
    }
    return `${dir}: ${best.text}`;
  } catch {
    return `${dir}: unknown`;
  }
}

export function machineFacts(storageDir: string): MachineFacts {
  const c = cpus();
  return {
    date: new Date().toISOString(),
    node: process.version,
    cpu: c[0]?.model.trim() ?? 'unknown',
    cores: availableParallelism(),
    memoryGiB: Math.round((totalmem() / 1024 ** 3) * 10) / 10,
    kernel: `${osType()} ${release()}`,
    storage: mountOf(storageDir),
  };
}
