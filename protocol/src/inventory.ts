/**
 * The package inventory an agent reports (POST /api/v1/agent/inventory, scope
 * `inventory`): installed dpkg packages with their source package and source version, and
 * the sockets listening on the host with the process and the package owning its
 * executable. The first report after a start is `full`; later ones are `diff`s against the
 * sequence number the server acknowledged, so a changed package costs one line, not the
 * whole status file. A diff whose base the server does not hold is refused (CONFLICT) and
 * the agent sends a full report again.
 */
import { DEBIAN_PACKAGE_NAME } from './dpkg_status.js';

/** Most packages in one report (a large Debian host has a few thousand). */
export const MAX_INVENTORY_PACKAGES = 50_000;
/** Most listening sockets in one report. */
export const MAX_INVENTORY_SOCKETS = 4096;
/** Largest inventory request body. */
export const MAX_INVENTORY_BODY_BYTES = 16 * 1024 * 1024;

export interface InventoryPackage {
  package: string;
  version: string;
  architecture: string;
  source: string;
  source_version: string;
}

export interface ListeningSocket {
  proto: 'tcp' | 'tcp6' | 'udp' | 'udp6';
  address: string;
  port: number;
  /** The process holding the socket, when the agent could see it. */
  pid: number | null;
  exe: string | null;
  /** The dpkg package whose file list has the executable; null when none does. */
  package: string | null;
}

export interface InventoryReport {
  kind: 'full' | 'diff';
  /** This report's sequence number: one more than `base_seq` for a diff. */
  seq: number;
  /** For a diff: the sequence number the changes apply to. */
  base_seq?: number;
  /** The Debian release codename (os-release VERSION_CODENAME), e.g. bookworm. */
  release: string;
  /** full: every installed package. */
  packages?: InventoryPackage[];
  /** diff: packages added or changed (replacing the same package and architecture). */
  upserted?: InventoryPackage[];
  /** diff: packages no longer installed. */
  removed?: Array<{ package: string; architecture: string }>;
  /** Always the whole current list. */
  sockets: ListeningSocket[];
}

export interface InventoryAccepted {
  machine_id: string;
  seq: number;
  packages: number;
  findings: number;
}

const VERSION = { type: 'string', minLength: 1, maxLength: 256, pattern: '^[A-Za-z0-9.+~:-]+$' } as const;
const NAME = { type: 'string', minLength: 2, maxLength: 128, pattern: DEBIAN_PACKAGE_NAME.source } as const;
const ARCH = { type: 'string', minLength: 1, maxLength: 64, pattern: '^[a-z0-9][a-z0-9-]*$' } as const;

export const INVENTORY_PACKAGE_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['package', 'version', 'architecture', 'source', 'source_version'],
  properties: { package: NAME, version: VERSION, architecture: ARCH, source: NAME, source_version: VERSION },
} as const;

export const LISTENING_SOCKET_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['proto', 'address', 'port', 'pid', 'exe', 'package'],
  properties: {
    proto: { enum: ['tcp', 'tcp6', 'udp', 'udp6'] },
    address: { type: 'string', minLength: 1, maxLength: 64, pattern: '^[0-9a-fA-F.:]+$' },
    port: { type: 'integer', minimum: 0, maximum: 65535 },
    pid: { type: ['integer', 'null'], minimum: 1, maximum: 4194304 },
    exe: { type: ['string', 'null'], minLength: 1, maxLength: 4096, pattern: '^/[^\\u0000-\\u001f\\u007f]*$' },
    package: { anyOf: [NAME, { type: 'null' }] },
  },
} as const;

export const INVENTORY_REPORT_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['kind', 'seq', 'release', 'sockets'],
  properties: {
    kind: { enum: ['full', 'diff'] },
    seq: { type: 'integer', minimum: 1, maximum: 2147483647 },
    base_seq: { type: 'integer', minimum: 1, maximum: 2147483647 },
    release: { type: 'string', minLength: 1, maxLength: 32, pattern: '^[a-z0-9][a-z0-9.-]*$' },
    packages: { type: 'array', maxItems: MAX_INVENTORY_PACKAGES, items: INVENTORY_PACKAGE_SCHEMA },
    upserted: { type: 'array', maxItems: MAX_INVENTORY_PACKAGES, items: INVENTORY_PACKAGE_SCHEMA },
    removed: {
      type: 'array',
      maxItems: MAX_INVENTORY_PACKAGES,
      items: { type: 'object', additionalProperties: false, required: ['package', 'architecture'], properties: { package: NAME, architecture: ARCH } },
    },
    sockets: { type: 'array', maxItems: MAX_INVENTORY_SOCKETS, items: LISTENING_SOCKET_SCHEMA },
  },
} as const;

export const INVENTORY_ACCEPTED_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['machine_id', 'seq', 'packages', 'findings'],
  properties: { machine_id: { type: 'string' }, seq: { type: 'integer' }, packages: { type: 'integer' }, findings: { type: 'integer' } },
} as const;

/** The key a package is known by on a host: multi-arch hosts have one name per architecture. */
export const packageKey = (p: { package: string; architecture: string }): string => `${p.package}:${p.architecture}`;
