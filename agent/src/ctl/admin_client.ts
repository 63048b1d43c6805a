/**
 * aegis-server's admin HTTP API as aegisctl uses it: customers, licenses, machines and the
 * published keys. The answer types are protocol's wire types, the ones the server builds
 * its answers from; only the list filters, which exist on the command line alone, are
 * declared here.
 */
import type {
  Customer,
  CustomerInput,
  IssuedLicense,
  IssueLicenseRequest,
  JwksDocument,
  License,
  LicenseStatus,
  LicenseType,
  LicensedTier,
  Machine,
  OfflineLicenseFile,
  Paged,
} from '../../../protocol/src/index.js';
import { ExitCode } from './exit_codes.js';
import { ApiError, CtlError, UnreachableError } from './errors.js';
import { describeErrno, sendRequest, type Target } from './http_transport.js';
import { readJson } from './json_api.js';

export interface CustomerFilters {
  q?: string;
  email?: string;
  is_active?: boolean;
  limit?: number;
  offset?: number;
}

export interface LicenseFilters {
  customer_id?: string;
  status?: LicenseStatus;
  tier?: LicensedTier;
  license_type?: LicenseType;
  limit?: number;
  offset?: number;
}

export interface AdminClientOptions {
  url: URL;
  /** Needed by every admin route; `keys` works without. */
  apiKey: string | undefined;
  timeoutMs: number;
}

function query(params: Record<string, string | number | boolean | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
}

const enc = encodeURIComponent;

/** The server answers an unknown customer_id at issue time as a 400 naming the field. */
function isUnknownCustomer(details: unknown): boolean {
  return Array.isArray(details) && details.some((d) => (d as { path?: unknown } | null)?.path === '/customer_id' && /no such customer/.test(String((d as { message?: unknown }).message)));
}

const ISSUE_FLAGS: Readonly<Record<string, string>> = {
  customer_id: '--customer',
  license_type: '--type',
  expires_at: '--expires',
  duration_days: '--days',
  max_machines: '--machines',
  allowed_major_versions: '--versions',
  features: '--features',
};

/** The hint for an error envelope from the server: what the operator can do next. */
function serverHint(code: string, status: number, details: unknown, message: string): string | undefined {
  switch (code) {
    case 'UNAUTHORIZED':
      return 'check AEGIS_API_KEY: the server does not know this key or it was revoked';
    case 'FORBIDDEN': {
      const scope = (details as { required_scope?: unknown } | null)?.required_scope;
      return `use a key with the ${typeof scope === 'string' ? scope : 'needed'} scope (aegis-server admin create-key --scopes …)`;
    }
    case 'CUSTOMER_HAS_ACTIVE_LICENSES':
      return 'revoke them first, or pass --force to delete the customer and its licenses';
    case 'RATE_LIMITED': {
      const after = (details as { retry_after?: unknown } | null)?.retry_after;
      return typeof after === 'number' ? `retry in ${after}s` : 'retry later';
    }
    case 'CONFLICT':
      return /inactive/i.test(message) ? 'reactivate it: aegisctl customers update ID --active' : undefined;
    case 'NOT_FOUND':
      return 'check the id (aegisctl customers list / aegisctl licenses list)';
    default:
      if (status >= 500) return 'see the aegis-server logs';
      return undefined;
  }
}

/** One aegis-server's admin API, with the operator's API key; errors say what to do next. */
export class AdminClient {
  private readonly target: Target;
  private readonly name: string;

  constructor(private readonly opts: AdminClientOptions) {
    this.target = { kind: 'url', url: opts.url };
    this.name = `aegis-server at ${opts.url.origin}`;
  }

  get origin(): string {
    return this.opts.url.origin;
  }

  /** `what` names the thing a path refers to ("customer 42") so a 404 says which. */
  private async call<T>(method: string, path: string, body?: unknown, auth = true, what?: string): Promise<T | null> {
    const headers: Record<string, string> = {};
    if (auth) {
      if (!this.opts.apiKey) {
        throw new CtlError(ExitCode.UNAUTHORIZED, 'no API key given', { hint: 'set AEGIS_API_KEY to an admin API key of aegis-server' });
      }
      headers['x-api-key'] = this.opts.apiKey;
    }
    const res = await sendRequest(this.target, { method, path, headers, body, timeoutMs: this.opts.timeoutMs }, ({ errno, cause }) =>
      new UnreachableError('server', `cannot reach ${this.name}: ${describeErrno(errno, this.opts.timeoutMs)}`, {
        errno,
        cause,
        hint: 'is aegis-server running? check --server or AEGIS_SERVER',
      }),
    );
    try {
      return readJson<T>('server', this.name, res, serverHint);
    } catch (e) {
      if (e instanceof ApiError && e.code === 'NOT_FOUND' && what) throw e.rephrase(`${what} not found on ${this.opts.url.origin}`);
      throw e;
    }
  }

  private async callBody<T>(method: string, path: string, body?: unknown, auth = true, what?: string): Promise<T> {
    const v = await this.call<T>(method, path, body, auth, what);
    if (v === null) throw new CtlError(ExitCode.FAILURE, `${this.name} answered ${method} ${path.split('?')[0]} without a body`);
    return v;
  }

  listCustomers(f: CustomerFilters): Promise<Paged<Customer>> {
    return this.callBody('GET', `/api/v1/customers${query({ q: f.q, email: f.email, is_active: f.is_active, limit: f.limit, offset: f.offset })}`);
  }
  createCustomer(input: CustomerInput): Promise<Customer> {
    return this.callBody('POST', '/api/v1/customers', input);
  }
  getCustomer(id: string): Promise<Customer> {
    return this.callBody('GET', `/api/v1/customers/${enc(id)}`, undefined, true, `customer ${id}`);
  }
  updateCustomer(id: string, patch: Partial<CustomerInput>): Promise<Customer> {
    return this.callBody('PATCH', `/api/v1/customers/${enc(id)}`, patch, true, `customer ${id}`);
  }
  async deleteCustomer(id: string, force: boolean): Promise<void> {
    try {
      await this.call('DELETE', `/api/v1/customers/${enc(id)}${query({ force: force || undefined })}`, undefined, true, `customer ${id}`);
    } catch (e) {
      if (e instanceof ApiError && e.code === 'CUSTOMER_HAS_ACTIVE_LICENSES') {
        const ids = (e.details as { active_license_ids?: unknown } | null)?.active_license_ids;
        const list = Array.isArray(ids) ? `: ${ids.join(', ')}` : '';
        throw e.rephrase(`customer ${id} has active licenses${list}`);
      }
      throw e;
    }
  }

  async issueLicense(input: IssueLicenseRequest): Promise<IssuedLicense> {
    try {
      return await this.callBody<IssuedLicense>('POST', '/api/v1/licenses', input);
    } catch (e) {
      if (e instanceof ApiError && isUnknownCustomer(e.details)) {
        throw new CtlError(ExitCode.NOT_FOUND, `customer ${input.customer_id} not found on ${this.opts.url.origin}`, {
          hint: 'check the id (aegisctl customers list)',
          cause: e,
        });
      }
      // Name the flags a person typed, not the API's fields.
      if (e instanceof ApiError && e.exitCode === ExitCode.USAGE) {
        let m = e.message;
        for (const [field, flag] of Object.entries(ISSUE_FLAGS)) m = m.replace(new RegExp(`\\b${field}\\b`, 'g'), flag);
        throw e.rephrase(m, e.hint ?? 'see aegisctl licenses issue --help');
      }
      throw e;
    }
  }
  listLicenses(f: LicenseFilters): Promise<Paged<License>> {
    return this.callBody(
      'GET',
      `/api/v1/licenses${query({ customer_id: f.customer_id, status: f.status, tier: f.tier, license_type: f.license_type, limit: f.limit, offset: f.offset })}`,
    );
  }
  getLicense(id: string): Promise<License> {
    return this.callBody('GET', `/api/v1/licenses/${enc(id)}`, undefined, true, `license ${id}`);
  }
  async licenseMachines(id: string): Promise<Machine[]> {
    return (await this.callBody<{ items: Machine[] }>('GET', `/api/v1/licenses/${enc(id)}/machines`, undefined, true, `license ${id}`)).items;
  }
  revokeLicense(id: string, reason: string): Promise<License> {
    return this.callBody('DELETE', `/api/v1/licenses/${enc(id)}/revoke`, { reason }, true, `license ${id}`);
  }

  /** An offline activation request file → the machine-bound license file for the host. */
  offlineActivate(request: unknown): Promise<OfflineLicenseFile> {
    return this.callBody('POST', '/api/v1/machines/offline-activations', request);
  }
  /** An offline release file → the deactivated machine. */
  offlineDeactivate(release: unknown): Promise<Machine> {
    return this.callBody('POST', '/api/v1/machines/offline-deactivations', release);
  }

  jwks(): Promise<JwksDocument> {
    return this.callBody('GET', '/.well-known/jwks.json', undefined, false);
  }
}
