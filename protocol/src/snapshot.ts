/**
 * MapSnapshot (seed 003): the segmentation policy for one service. The JSON Schema below
 * is the seed's, verbatim in meaning; the server validates bodies against it with ajv.
 */
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

/** Per-service capacity of the datapath: rules after `any` is expanded to tcp+udp. */
export const MAX_RULES_PER_SERVICE = 131072;

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
