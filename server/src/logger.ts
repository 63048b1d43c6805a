/** winston: JSON lines in production (LOG_FORMAT=json, default), readable text for people. */
import winston from 'winston';

export type Logger = winston.Logger;

export function createLogger(opts: { level?: string; format?: string; silent?: boolean } = {}): Logger {
  const level = opts.level ?? process.env.LOG_LEVEL?.toLowerCase() ?? 'info';
  const text = (opts.format ?? process.env.LOG_FORMAT ?? 'json') === 'text';
  return winston.createLogger({
    level,
    silent: opts.silent ?? false,
    format: text
      ? winston.format.combine(
          winston.format.timestamp(),
          winston.format.printf(({ timestamp, level: l, message, ...rest }) => {
            const extra = Object.keys(rest).length > 0 ? ` ${JSON.stringify(rest)}` : '';
            return `${String(timestamp)} ${l} ${String(message)}${extra}`;
          }),
        )
      : winston.format.combine(winston.format.timestamp(), winston.format.json()),
    transports: [new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'debug'] })],
  });
}
