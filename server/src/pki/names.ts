/** The PKI's names, apart from authority.ts so that a command can name them without loading the X.509 code. */
export const DEFAULT_TRUST_DOMAIN = 'aegis.local';
/** The CA key's record in a database keyring. */
export const PKI_KIND = 'pki';
export const PKI_CA = 'ca';
