/**
 * MapSnapshot: the segmentation policy for one service, as the server publishes it and the
 * agent enforces it. The JSON Schema below is the wire contract; snapshot_check.ts checks
 * bodies against it and against what the schema cannot say (CIDRs, duplicates, capacity).
 */
import { BPF_ABI } from './bpf_abi.generated.js';

/**
 * `tcp` / `udp`: that protocol, `port` its destination (edge) or local (allow_cidr) port.
 * `icmp`: ICMP and ICMPv6, `port` the ICMP type (8 / 128 = echo request), 0 = every type.
 * `any`: tcp and udp on `port`; with port 0, every IP protocol.
 */
export type Proto = 'tcp' | 'udp' | 'icmp' | 'any';
export const PROTOS: readonly Proto[] = ['tcp', 'udp', 'icmp', 'any'];

/** Datapath records one entry becomes: `icmp` and `any` on a port take two. */
export function rulesForEntry(proto: Proto, port: number): number {
  if (proto === 'icmp') return 2;
  if (proto === 'any') return port === 0 ? 1 : 2;
  return 1;
}

export interface Edge {
  dst_cidr: string;
  proto: Proto;
  port: number;
}

export interface AllowCidr {
  cidr: string;
  proto: Proto;
  port: number;
}

export interface MapSnapshot {
  version: number;
  service_id: number;
  edges?: Edge[];
  allow_cidrs?: AllowCidr[];
  ttl_seconds: number;
  meta?: Record<string, unknown>;
}

export type Stage = 'canary' | 'enforce';
export type DatapathMode = 'observe' | 'enforce';

/** Per-service capacity of the datapath: rules after `any` and `icmp` are expanded (rulesForEntry).
 * Taken from the BPF side's AEGIS_MAX_RULES, the size its rule tries are created with. */
export const MAX_RULES_PER_SERVICE: number = BPF_ABI.AEGIS_MAX_RULES;

export const MAP_SNAPSHOT_SCHEMA = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  title: 'MapSnapshot',
  type: 'object',
  properties: {
    version: { type: 'integer', minimum: 1 },
    service_id: { type: 'integer', minimum: 0 },
    edges: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          dst_cidr: { type: 'string' },
          proto: { type: 'string', enum: ['tcp', 'udp', 'icmp', 'any'] },
          port: { type: 'integer', minimum: 0, maximum: 65535 },
        },
        required: ['dst_cidr', 'proto', 'port'],
      },
    },
    allow_cidrs: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          cidr: { type: 'string' },
          proto: { type: 'string', enum: ['tcp', 'udp', 'icmp', 'any'] },
          port: { type: 'integer', minimum: 0, maximum: 65535 },
        },
        required: ['cidr', 'proto', 'port'],
      },
    },
    ttl_seconds: { type: 'integer', minimum: 60 },
    meta: { type: 'object' },
  },
  required: ['version', 'service_id', 'ttl_seconds'],
} as const;
