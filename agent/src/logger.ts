/** Agent logs: JSON lines on stdout for journald, or text for a person (--log-format text). */
import winston from 'winston';

export type Logger = winston.Logger;

export function createAgentLogger(level: string, format: 'json' | 'text'): Logger {
  return winston.createLogger({
    level,
    format:
      format === 'text'
        ? winston.format.combine(
            winston.format.timestamp(),
            winston.format.printf(({ timestamp, level: l, message, ...rest }) => {
              const extra = Object.keys(rest).length > 0 ? ` ${JSON.stringify(rest)}` : '';
              return `${String(timestamp)} ${l.padEnd(5)} ${String(message)}${extra}`;
            }),
          )
        : winston.format.combine(winston.format.timestamp(), winston.format.json()),
    transports: [new winston.transports.Console()],
  });
}
