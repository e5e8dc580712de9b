// The admin credentials the user typed in, kept in sessionStorage (gone
// when the tab closes) and never put in a URL: the API key goes in
// `Authorization: Bearer`, the JWT in the WebSocket subprotocol.

export interface Credentials {
  /** An API key with the `admin` scope (for the HTTP API). */
  apiKey?: string;
  /** A JWT whose `topics` claim is `["*"]` (for the WebSocket). */
  token?: string;
}

const KEY = "herald:console:credentials";

export function loadCredentials(): Credentials {
  try {
    const saved = sessionStorage.getItem(KEY);
    return saved ? (JSON.parse(saved) as Credentials) : {};
  } catch {
    return {};
  }
}

export function saveCredentials(credentials: Credentials): void {
  try {
    sessionStorage.setItem(KEY, JSON.stringify(credentials));
  } catch {
    // Storage disabled: the credentials last until the page reloads.
  }
}

export function forgetCredentials(): void {
  try {
    sessionStorage.removeItem(KEY);
  } catch {
    // Nothing was stored.
  }
}

/** The token's `exp` claim (seconds), if it has one; the signature is the hub's to check. */
function expiry(token: string): number | undefined {
  try {
    const part = token.split(".")[1] ?? "";
    const claims = JSON.parse(atob(part.replace(/-/g, "+").replace(/_/g, "/"))) as { exp?: unknown };
    return typeof claims.exp === "number" ? claims.exp : undefined;
  } catch {
    return undefined;
  }
}

/** Whether a WebSocket to `url` offering `token` opens (bounded: a socket still connecting after `timeoutMs` counts as not). */
function opens(url: string, token: string, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    let socket: WebSocket;
    try {
      socket = new WebSocket(url, ["herald.v1", `bearer.${token}`]);
    } catch {
      resolve(false);
      return;
    }
    const done = (opened: boolean) => {
      clearTimeout(timer);
      socket.onopen = socket.onerror = socket.onclose = null;
      if (opened) socket.close(1000);
      resolve(opened);
    };
    const timer = setTimeout(() => {
      socket.close();
      done(false);
    }, timeoutMs);
    socket.onopen = () => done(true);
    socket.onerror = () => done(false);
    socket.onclose = () => done(false);
  });
}

/**
 * Why the hub refuses `token`, or `undefined` if it does not (or cannot be
 * asked). A browser is not shown the HTTP 401 that refuses an upgrade, only
 * a failed socket, like a hub that is down or draining: so the hub is asked
 * over HTTP whether it takes connections (`reachable`) before and after a
 * socket of its own, and a token is refused only when the hub said so both
 * times and the socket still failed.
 */
export async function tokenRefusal(url: string, token: string, reachable: () => Promise<unknown>): Promise<string | undefined> {
  const answers = () => reachable().then(
    () => true,
    () => false,
  );
  if (!(await answers())) return undefined;
  if (await opens(url, token, 10_000)) return undefined;
  if (!(await answers())) return undefined;
  const exp = expiry(token);
  if (exp !== undefined && exp * 1000 <= Date.now()) {
    return `the hub refused the token: it expired at ${new Date(exp * 1000).toLocaleString()}; sign in with a fresh one`;
  }
  return "the hub refused the token (a bad signature, another hub's key, or not yet valid); sign in with a valid one";
}
