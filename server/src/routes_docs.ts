/**
 * The API document and its reader: `GET /openapi.json` (OpenAPI 3.1, generated from the
 * router's own registry, see http/openapi.ts) and `GET /docs`, Swagger UI served from the
 * installed swagger-ui-dist package (the same reader FastAPI serves at /docs; nothing is
 * loaded from another origin). Both are public: the document holds shapes, scopes and
 * codes that every client already knows, never a key, a customer or the server's
 * configuration. Assets are a fixed list of file names: a path names one of them or is
 * 404, so no path reaches any other file.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { AegisError } from '../../protocol/src/index.js';
import { openApiDocument } from './http/openapi.js';
import type { Reply, Request, Router } from './http/router.js';
import type { RouteDoc } from './http/route_doc.js';

/** The page's policy: its own scripts, styles, images (Swagger UI's icons are data: SVGs) and the document only. */
export const DOCS_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** Starts Swagger UI on the document; a file, not inline, so the policy needs no 'unsafe-inline'. */
const INIT_SCRIPT = `window.addEventListener('load', function () {
  window.ui = SwaggerUIBundle({
    url: '/openapi.json',
    dom_id: '#swagger-ui',
    deepLinking: true,
    queryConfigEnabled: false,
    validatorUrl: null,
    persistAuthorization: false,
    presets: [SwaggerUIBundle.presets.apis],
    layout: 'BaseLayout'
  });
});
`;

const PAGE = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Aegis server API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
<link rel="stylesheet" href="/docs/index.css">
<link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
`;

/** The files /docs may serve: name → where it comes from and its type. */
const ASSETS: Readonly<Record<string, { file?: string; text?: string; type: string }>> = {
  'swagger-ui.css': { file: 'swagger-ui.css', type: 'text/css; charset=utf-8' },
  'index.css': { file: 'index.css', type: 'text/css; charset=utf-8' },
  'swagger-ui-bundle.js': { file: 'swagger-ui-bundle.js', type: 'text/javascript; charset=utf-8' },
  'favicon-32x32.png': { file: 'favicon-32x32.png', type: 'image/png' },
  'favicon-16x16.png': { file: 'favicon-16x16.png', type: 'image/png' },
  'init.js': { text: INIT_SCRIPT, type: 'text/javascript; charset=utf-8' },
};

/** Headers of every documentation answer that is not JSON. */
const PAGE_HEADERS = {
  'content-security-policy': DOCS_CSP,
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cross-origin-resource-policy': 'same-origin',
};

/** The installed swagger-ui-dist directory, resolved like an import (fails at startup if it is missing). */
function swaggerUiDir(): string {
  return dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
}

interface Asset {
  bytes: Buffer;
  type: string;
  etag: string;
}

const etagOf = (bytes: Buffer) => `"${createHash('sha256').update(bytes).digest('base64url').slice(0, 27)}"`;

/** 304 when the client's copy is current; otherwise the bytes. */
function cached(req: Request, asset: Asset, cacheControl: string): Reply {
  const headers = { ...PAGE_HEADERS, 'content-type': asset.type, 'cache-control': cacheControl, etag: asset.etag };
  if (req.headers['if-none-match'] === asset.etag) return { status: 304, body: null, headers };
  return { status: 200, body: null, raw: asset.bytes, headers };
}

const DOCS_TAG = 'documentation';

export function addDocsRoutes(router: Router, deps: { version: string }): void {
  const dir = swaggerUiDir();
  const assets = new Map<string, Asset>();
  const assetOf = (name: string): Asset | null => {
    if (!Object.hasOwn(ASSETS, name)) return null;
    let a = assets.get(name);
    if (!a) {
      const spec = ASSETS[name]!;
      const bytes = spec.text !== undefined ? Buffer.from(spec.text) : readFileSync(join(dir, spec.file!));
      a = { bytes, type: spec.type, etag: etagOf(bytes) };
      assets.set(name, a);
    }
    return a;
  };
  const page: Asset = { bytes: Buffer.from(PAGE), type: 'text/html; charset=utf-8', etag: etagOf(Buffer.from(PAGE)) };
  // Built on first request, when every route has registered, and kept: routes do not change while serving.
  let document: Record<string, unknown> | null = null;

  const openApiDoc: RouteDoc = {
    summary: 'This API document (OpenAPI 3.1)',
    description: 'Generated from the routes the server registered and the JSON Schemas it validates requests with.',
    tag: DOCS_TAG,
    auth: { kind: 'public' },
    responses: { 200: { description: 'The OpenAPI 3.1 document.', schema: { type: 'object', required: ['openapi', 'info', 'paths'], properties: { openapi: { const: '3.1.0' } } } } },
  };
  router.add('GET', '/openapi.json', async () => ({ status: 200, body: (document ??= openApiDocument(router, { version: deps.version })), headers: { 'cache-control': 'no-cache' } }), {
    doc: openApiDoc,
  });

  const html = { description: 'The API reference page (Swagger UI).', schema: { type: 'string' }, contentType: 'text/html' };
  router.add('GET', '/docs', async (req) => cached(req, page, 'no-cache'), {
    doc: { summary: 'API reference (Swagger UI)', tag: DOCS_TAG, auth: { kind: 'public' }, responses: { 200: html, 304: { description: 'Not modified (ETag).' } } },
  });
  router.add(
    'GET',
    '/docs/:asset',
    async (req) => {
      const asset = assetOf(req.params.asset!);
      if (!asset) throw new AegisError('NOT_FOUND', 'not found');
      // Same bytes for as long as this server runs; revalidated by ETag after an hour.
      return cached(req, asset, 'public, max-age=3600');
    },
    {
      doc: {
        summary: 'A file of the API reference page',
        description: `One of: ${Object.keys(ASSETS).join(', ')}. Any other name is 404.`,
        tag: DOCS_TAG,
        auth: { kind: 'public' },
        responses: { 200: { description: 'The file, with its content type.' }, 304: { description: 'Not modified (ETag).' } },
        errors: ['NOT_FOUND'],
      },
    },
  );
}
