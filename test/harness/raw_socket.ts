/**
 * Raw client connections (node:net) for attack tests that must control every byte and its
 * timing: slow headers, trickled bodies, idle connections held open.
 */
import { connect, type Socket } from 'node:net';

export interface RawConnection {
  socket: Socket;
  /** Everything the server has sent so far. */
  received(): string;
  /** Resolves when the connection ends (closed by either side), with milliseconds since it opened. */
  closed: Promise<number>;
  /** Writes the chunks one after another, `everyMs` apart, until they run out or the connection closes. */
  trickle(chunks: string[], everyMs: number): void;
}

/** Opens a TCP connection to `http(s)://host:port`, or to a Unix socket given as a path. */
export function openRaw(target: string): Promise<RawConnection> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    let out = '';
    let connected = false;
    const socket = target.startsWith('/') ? connect(target) : connect(Number(new URL(target).port), new URL(target).hostname);
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => (out += d));
    const closed = new Promise<number>((done) => socket.once('close', () => done(Date.now() - started)));
    socket.on('error', (e) => {
      if (!connected) reject(e);
    });
    socket.once('connect', () => {
      connected = true;
      resolve({
        socket,
        received: () => out,
        closed,
        trickle(chunks, everyMs) {
          let i = 0;
          const timer = setInterval(() => {
            if (socket.destroyed || i >= chunks.length) {
              clearInterval(timer);
              return;
            }
            socket.write(chunks[i++]!);
          }, everyMs);
          socket.once('close', () => clearInterval(timer));
        },
      });
    });
  });
}

/** The value of `p`, or null if it does not settle within `ms`. */
export function within<T>(p: Promise<T>, ms: number): Promise<T | null> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), ms);
    void p.then((v) => {
      clearTimeout(timer);
      resolve(v);
    });
  });
}

/** One plain HTTP/1.1 request on a fresh connection (`Connection: close`), answered or not within `ms`. */
export async function rawRequest(target: string, head: string, ms: number): Promise<{ status: number | null; text: string }> {
  const c = await openRaw(target);
  c.socket.write(head);
  await within(c.closed, ms);
  c.socket.destroy();
  const text = c.received();
  const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
  return { status: m ? Number(m[1]) : null, text };
}
