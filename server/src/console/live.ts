/**
 * Live updates for the operator console: `GET /console/api/events` holds a server-sent
 * events stream per open page that says WHAT changed (a topic: licenses, machines,
 * agents, acks, segmentation, alerts, decisions, audit, customers), never the data, so a
 * page refetches through the /api/v1 routes with its session and the key's scopes and
 * customer limit decide what it sees. A stream of a key limited to one customer hears
 * only of that customer's changes. Changes are coalesced (one `change` event per
 * `coalesceMs` naming every topic since), which also lets a writer's transaction commit
 * before the page reads.
 *
 * Bounds: at most `perSession` streams per session and `total` in all (429 past either);
 * every stream ends when its session does (sign-out, expiry, a revoked key) with a final
 * `end` event naming why; a heartbeat comment every `heartbeatMs` keeps proxies from
 * closing an idle stream and rechecks the session.
 */
import type { StreamSink } from '../http/router.js';

export const LIVE_TOPICS = ['licenses', 'machines', 'agents', 'acks', 'segmentation', 'alerts', 'decisions', 'audit', 'customers', 'flows'] as const;
export type LiveTopic = (typeof LIVE_TOPICS)[number];

export interface LiveSettings {
  /** Streams one session may hold at once (AEGIS_CONSOLE_STREAMS_PER_SESSION, default 4). */
  perSession: number;
  /** Streams held at once over every session (AEGIS_CONSOLE_STREAMS_MAX, default 200). */
  total: number;
  /** A heartbeat (and session recheck) this often (AEGIS_CONSOLE_STREAM_HEARTBEAT_MS, default 15 s). */
  heartbeatMs: number;
  /** Changes within this window go out as one event (AEGIS_CONSOLE_STREAM_COALESCE_MS, default 250 ms). */
  coalesceMs: number;
}

interface LiveStream {
  sessionKey: string;
  tenant: string | null;
  sink: StreamSink;
  pending: Set<LiveTopic>;
  flush: ReturnType<typeof setTimeout> | null;
  heartbeat: ReturnType<typeof setInterval>;
  ended: boolean;
}

/** Which topics an audited event type touches (its prefix), besides `audit` itself. */
export function topicsOfAudit(eventType: string): LiveTopic[] {
  const t: LiveTopic[] = ['audit'];
  const prefix = eventType.split('.')[0];
  if (prefix === 'license' || prefix === 'offline') t.push('licenses', 'machines');
  else if (prefix === 'machine' || prefix === 'activation' || prefix === 'heartbeat') t.push('machines', 'licenses', 'agents');
  else if (prefix === 'seg') t.push('segmentation');
  else if (prefix === 'alert' || prefix === 'rules') t.push('alerts');
  else if (prefix === 'decision' || prefix === 'decisions') t.push('decisions', 'alerts');
  else if (prefix === 'customer') t.push('customers');
  return t;
}

export class LiveHub {
  private readonly streams = new Set<LiveStream>();

  constructor(
    readonly settings: LiveSettings,
    /** Whether a session is still open (checked at each heartbeat). */
    private readonly sessionLive: (sessionKey: string) => Promise<boolean>,
  ) {}

  /** Streams held now (all, or of one session). */
  count(sessionKey?: string): number {
    if (sessionKey === undefined) return this.streams.size;
    let n = 0;
    for (const s of this.streams) if (s.sessionKey === sessionKey) n++;
    return n;
  }

  /** Why a new stream of `sessionKey` may not open now, or null. */
  refusal(sessionKey: string): string | null {
    if (this.count(sessionKey) >= this.settings.perSession) return `this session already holds ${this.settings.perSession} live streams (close a console tab)`;
    if (this.streams.size >= this.settings.total) return `the server holds its ${this.settings.total} live streams; the console falls back to polling`;
    return null;
  }

  /** Starts a stream on `sink` (the caller checked refusal() first). */
  open(sessionKey: string, tenant: string | null, sink: StreamSink): void {
    const s: LiveStream = {
      sessionKey,
      tenant,
      sink,
      pending: new Set(),
      flush: null,
      ended: false,
      heartbeat: setInterval(() => void this.beat(s), this.settings.heartbeatMs),
    };
    s.heartbeat.unref?.();
    this.streams.add(s);
    sink.onClose(() => this.forget(s));
    // The retry hint is for the browser's EventSource reconnect; `ready` tells the page it is live.
    sink.write(`retry: 3000\nevent: ready\ndata: ${JSON.stringify({ topics: LIVE_TOPICS, heartbeat_ms: this.settings.heartbeatMs })}\n\n`);
  }

  private async beat(s: LiveStream): Promise<void> {
    if (s.ended) return;
    let live = false;
    try {
      live = await this.sessionLive(s.sessionKey);
    } catch {
      live = false;
    }
    if (!live) return this.end(s, 'session_ended');
    s.sink.write(': heartbeat\n\n');
  }

  /** Something of `customerId` (null: of no one customer, or of every one) changed. */
  publish(topics: readonly LiveTopic[], customerId: string | null): void {
    for (const s of this.streams) {
      // A limited key hears only of its own customer; an event of no customer says nothing about one.
      if (s.tenant !== null && customerId !== null && customerId !== s.tenant) continue;
      if (s.tenant !== null && customerId === null && !topics.every((t) => t === 'audit' || t === 'segmentation')) continue;
      for (const t of topics) s.pending.add(t);
      if (s.flush === null) s.flush = setTimeout(() => this.send(s), this.settings.coalesceMs);
    }
  }

  private send(s: LiveStream): void {
    s.flush = null;
    if (s.ended || s.pending.size === 0) return;
    const topics = [...s.pending].sort();
    s.pending.clear();
    s.sink.write(`event: change\ndata: ${JSON.stringify({ topics })}\n\n`);
  }

  /** Ends every stream of a session (it ended: sign-out, expiry, revoked key). */
  endSession(sessionKey: string, why = 'session_ended'): void {
    for (const s of [...this.streams]) if (s.sessionKey === sessionKey) this.end(s, why);
  }

  private end(s: LiveStream, why: string): void {
    if (s.ended) return;
    s.sink.write(`event: end\ndata: ${JSON.stringify({ reason: why })}\n\n`);
    this.forget(s);
    s.sink.end();
  }

  private forget(s: LiveStream): void {
    s.ended = true;
    clearInterval(s.heartbeat);
    if (s.flush) clearTimeout(s.flush);
    this.streams.delete(s);
  }

  /** Ends every stream (server shutdown). */
  close(): void {
    for (const s of [...this.streams]) this.end(s, 'server_closing');
  }
}
