/**
 * SoftHSM (Debian's softhsm2) for tests: one configuration per test process, pointing at a
 * temporary token directory (SOFTHSM2_CONF, read when the module initialises, so it is set
 * in this process's environment before any keyring opens), and tokens initialised there
 * with `softhsm2-util --init-token --free`.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { missingCommand, run } from './capabilities.js';

export const SOFTHSM_MODULE = '/usr/lib/softhsm/libsofthsm2.so';

/** Why SoftHSM cannot be used here, or null. */
export function missingSoftHsm(): string | null {
  if (!existsSync(SOFTHSM_MODULE)) return `${SOFTHSM_MODULE} is not installed (apt-get install softhsm2; scripts/setup)`;
  return missingCommand('softhsm2-util');
}

export interface SoftHsm {
  dir: string;
  /** The SOFTHSM2_CONF file. */
  conf: string;
  module: string;
  /** Initialises a token; answers its label and a 0600 file holding its user PIN. */
  initToken(label: string, pin?: string): { label: string; pinFile: string; soPin: string };
  /** A 0600 PIN file holding `pin`. */
  pinFile(pin: string): string;
  /** The server environment of the PKCS#11 keyring on token `label`. */
  env(label: string, pinFile: string): Record<string, string>;
  close(): void;
}

let counter = 0;

/** Creates the token directory and sets SOFTHSM2_CONF for this process (and its children). */
export function startSoftHsm(): SoftHsm {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-softhsm-'));
  const tokens = join(dir, 'tokens');
  mkdirSync(tokens, { mode: 0o700 });
  const conf = join(dir, 'softhsm2.conf');
  writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
  process.env.SOFTHSM2_CONF = conf;
  const pinFile = (pin: string): string => {
    const path = join(dir, `pin-${counter++}`);
    writeFileSync(path, pin + '\n', { mode: 0o600 });
    chmodSync(path, 0o600);
    return path;
  };
  return {
    dir,
    conf,
    module: SOFTHSM_MODULE,
    initToken(label, pin = '5678-' + label) {
      const soPin = '1234-' + label;
      run('softhsm2-util', ['--init-token', '--free', '--label', label, '--so-pin', soPin, '--pin', pin], { env: { ...process.env, SOFTHSM2_CONF: conf } });
      return { label, pinFile: pinFile(pin), soPin };
    },
    pinFile,
    env: (label, pin) => ({ AEGIS_PKCS11_MODULE: SOFTHSM_MODULE, AEGIS_PKCS11_TOKEN_LABEL: label, AEGIS_PKCS11_PIN_FILE: pin, SOFTHSM2_CONF: conf }),
    close: () => rmSync(dir, { recursive: true, force: true }),
  };
}
