/** Time, injectable so tests can move it; ISO strings are what the database stores. */
export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };

export function iso(d: Date): string {
  return d.toISOString();
}

export function epochSeconds(d: Date): number {
  return Math.floor(d.getTime() / 1000);
}
