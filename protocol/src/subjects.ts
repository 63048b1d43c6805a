/** NATS subject names (ARCHITECTURE.md "Distribution over NATS"). */
const TOKEN = /^[A-Za-z0-9_-]{1,128}$/;

function token(name: string, value: string | number): string {
  const s = String(value);
  if (!TOKEN.test(s)) throw new Error(`invalid NATS subject token for ${name}: ${JSON.stringify(s)}`);
  return s;
}

export const SEG_MAPS_STREAM = 'AEGIS_SEG_MAPS';
export const SEG_MAPS_WILDCARD = 'aegis.seg.maps.>';
export const ALL_HOSTS = '_all';

export const subjects = {
  license: (fleet: string) => `aegis.license.${token('fleet', fleet)}`,
  segMap: (host: string, serviceId: number) => `aegis.seg.maps.${token('host', host)}.${token('service_id', serviceId)}`,
  segMapAll: (serviceId: number) => `aegis.seg.maps.${ALL_HOSTS}.${token('service_id', serviceId)}`,
  agentStatus: (host: string) => `aegis.agent.${token('host', host)}.status`,
  agentAck: (host: string) => `aegis.agent.${token('host', host)}.ack`,
  agentFlows: (host: string) => `aegis.agent.${token('host', host)}.flows`,
} as const;
