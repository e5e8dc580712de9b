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
