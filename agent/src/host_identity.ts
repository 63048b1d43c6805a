/**
 * The host's own Ed25519 key: made on first start, kept 0600 in the state dir, used to
 * sign activation, refresh and deactivation proofs. The server binds the seat to this
 * key, so a copied hardware id alone never passes for this host.
 */
import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, renameSync, statSync } from 'node:fs';
import { jwkThumbprint, publicJwkOf, type Ed25519PublicJwk } from '../../protocol/src/index.js';
import { writeFileAtomicAsync } from '../../runtime/src/atomic_file.js';
import type { Logger } from './logger.js';

export interface HostIdentity {
  privateKey: KeyObject;
  publicJwk: Ed25519PublicJwk;
  thumbprint: string;
  path: string;
  created: boolean;
}

/** Loads the host key at `path`, or makes and stores a new one (0600) when there is none or it is damaged. */
export async function loadOrCreateHostKey(path: string, log: Logger): Promise<HostIdentity> {
  if (existsSync(path)) {
    try {
      const mode = statSync(path).mode & 0o777;
      if ((mode & 0o077) !== 0) {
        log.warn('host key had loose permissions; tightened to 0600', { path, mode: mode.toString(8) });
        chmodSync(path, 0o600);
      }
      const privateKey = createPrivateKey(readFileSync(path));
      if (privateKey.asymmetricKeyType !== 'ed25519') throw new Error('not an Ed25519 key');
      const publicJwk = publicJwkOf(privateKey);
      return { privateKey, publicJwk, thumbprint: jwkThumbprint(publicJwk), path, created: false };
    } catch (e) {
      // Without its key the host cannot prove who it is; keep the damaged file for an
      // operator and start a new identity (the old seat must be freed by an admin).
      const aside = `${path}.corrupt-${Date.now()}`;
      renameSync(path, aside);
      log.error('host key unreadable; generated a new identity (an admin must deactivate the old machine to re-activate)', {
        path,
        moved_to: aside,
        error: (e as Error).message,
      });
    }
  }
  const { privateKey } = generateKeyPairSync('ed25519');
  await writeFileAtomicAsync(path, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 0o600);
  const publicJwk = publicJwkOf(privateKey);
  log.info('generated host key', { path, thumbprint: jwkThumbprint(publicJwk) });
  return { privateKey, publicJwk, thumbprint: jwkThumbprint(publicJwk), path, created: true };
}
