/**
 * The traffic loop of the datapath's test children (traffic_client.ts, and the test
 * harness's echo_peer.ts): one attempt per target in turn, round after round, until the
 * stop file appears or the deadline passes; the ready file is written after the first
 * round. Per target: attempts that succeeded, failed, and the failures by error.
 */
import { existsSync, writeFileSync } from 'node:fs';

export interface LoopCounts {
  ok: number;
  failed: number;
  errors: Record<string, number>;
}

export interface LoopOptions {
  stopFile: string | undefined;
  readyFile: string | undefined;
  /** Date.now() past which the loop ends even without the stop file. */
  deadline: number;
}

export async function roundRobin<T>(targets: readonly T[], attempt: (t: T) => Promise<{ ok: boolean; error?: string }>, o: LoopOptions): Promise<{ rounds: number; counts: LoopCounts[] }> {
  const counts: LoopCounts[] = targets.map(() => ({ ok: 0, failed: 0, errors: {} }));
  let rounds = 0;
  while (!(o.stopFile !== undefined && existsSync(o.stopFile)) && Date.now() < o.deadline) {
    for (let i = 0; i < targets.length; i++) {
      const r = await attempt(targets[i]!);
      const c = counts[i]!;
      if (r.ok) c.ok++;
      else {
        c.failed++;
        c.errors[r.error ?? '?'] = (c.errors[r.error ?? '?'] ?? 0) + 1;
      }
    }
    if (++rounds === 1 && o.readyFile) writeFileSync(o.readyFile, 'ready');
  }
  return { rounds, counts };
}
