/**
 * sd_notify for the agent daemon, straight over $NOTIFY_SOCKET (no libsystemd).
 * Outside systemd (no NOTIFY_SOCKET) every call is a no-op that resolves to false.
 */
import { loadAddon } from './addon.js';
import { InvalidArgumentError, NotifyError } from './errors.js';

export interface NotifyState {
  ready?: boolean;
  stopping?: boolean;
  watchdog?: boolean;
  reloading?: boolean;
  status?: string;
}

/** The datagram systemd expects: one KEY=VALUE per line. */
export function formatNotifyState(state: NotifyState): string {
  const lines: string[] = [];
  if (state.ready) lines.push('READY=1');
  if (state.reloading) lines.push('RELOADING=1');
  if (state.stopping) lines.push('STOPPING=1');
  if (state.watchdog) lines.push('WATCHDOG=1');
  if (state.status !== undefined) {
    if (typeof state.status !== 'string' || state.status.includes('\n')) {
      throw new InvalidArgumentError('status must be a single line of text');
    }
    lines.push(`STATUS=${state.status}`);
  }
  if (lines.length === 0) throw new InvalidArgumentError('nothing to notify');
  return lines.join('\n') + '\n';
}

/** Sends the state to systemd. Resolves true when sent, false when not under systemd. */
export async function sdNotify(state: NotifyState, socketPath = process.env.NOTIFY_SOCKET ?? ''): Promise<boolean> {
  const text = formatNotifyState(state);
  if (socketPath === '') return false;
  try {
    return await loadAddon().notify(socketPath, text);
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    throw new NotifyError(`sd_notify failed: ${msg}`, { cause: e });
  }
}
