/** Why a vulnerability feed was refused; a refused feed contributes nothing. */
export type FeedErrorCode =
  | 'FEED_MALFORMED_JSON'
  | 'FEED_INVALID'
  | 'FEED_UNKNOWN_FORMAT'
  | 'FEED_TOO_LARGE'
  | 'FEED_UNREADABLE'
  | 'FEED_FETCH_FAILED'
  | 'FEED_ARCHIVE_REFUSED';

export class FeedError extends Error {
  constructor(
    readonly code: FeedErrorCode,
    /** The file, archive entry or URL the problem is in. */
    readonly source: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${source}: ${message} (${code})`, options);
    this.name = 'FeedError';
  }
}
