/**
 * MapSnapshot: the segmentation policy for one service, as the server publishes it and the
 * agent enforces it. The JSON Schema below is the wire contract; snapshot_check.ts checks
 * bodies against it and against what the schema cannot say (CIDRs, duplicates, capacity).
 */
import { BPF_ABI } from './bpf_abi.generated.js';

export type Proto = 'tcp' | 'udp' | 'any';
export const PROTOS: readonly Proto[] = ['tcp', 'udp', 'any'];

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

/** Per-service capacity of the datapath: rules after `any` is expanded to tcp+udp.
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
          proto: { type: 'string', enum: ['tcp', 'udp', 'any'] },
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
          proto: { type: 'string', enum: ['tcp', 'udp', 'any'] },
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
