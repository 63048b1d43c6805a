/**
 * The agent's metrics, loaded on the first scrape: prom-client (and what it pulls in) is
 * a tenth of the agent's start, and most agents are never scraped. Every family is filled
 * by a collect callback at scrape time, so nothing is lost by creating them then; only
 * the default process metrics' histograms (event loop lag, GC) start at the first scrape.
 */
import type { AgentMetrics, AgentMetricsDeps } from './agent_metrics.js';
import type { MetricsSource } from './metrics_listener.js';

/** prom-client's Registry.PROMETHEUS_CONTENT_TYPE, the default registry's content type. */
const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export class LazyAgentMetrics implements MetricsSource {
  #loading: Promise<AgentMetrics> | null = null;
  #metrics: AgentMetrics | null = null;

  constructor(private readonly deps: AgentMetricsDeps) {}

  /** Read after a scrape (both callers do), when the registry is loaded. */
  get contentType(): string {
    return this.#metrics?.contentType ?? PROMETHEUS_CONTENT_TYPE;
  }

  async scrape(): Promise<string> {
    this.#loading ??= import('./agent_metrics.js').then(({ AgentMetrics }) => (this.#metrics = new AgentMetrics(this.deps)));
    return (await this.#loading).scrape();
  }
}
