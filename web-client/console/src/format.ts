// How numbers, times and JSON read on the console.

// Made once: `toLocaleTimeString` with options builds a formatter per call,
// which a live tail of 500 rows re-rendered per burst cannot afford.
const TIME = new Intl.DateTimeFormat([], { hour: "numeric", minute: "numeric", second: "numeric", hour12: false });
const DATE_TIME = new Intl.DateTimeFormat([], {
  year: "numeric",
  month: "numeric",
  day: "numeric",
  hour: "numeric",
  minute: "numeric",
  second: "numeric",
  hour12: false,
});

export function time(ms: number): string {
  return TIME.format(ms);
}

export function dateTime(ms: number): string {
  return DATE_TIME.format(ms);
}

/** `1.2 s`, `3 m 05 s`, `2 h 10 m`. */
export function duration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} m ${String(Math.floor(s % 60)).padStart(2, "0")} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} m`;
}

export function ago(ms: number, now: number): string {
  return `${duration(now - ms)} ago`;
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

export function number(n: number, digits = 1): string {
  return Number.isInteger(n) ? n.toLocaleString() : n.toFixed(digits);
}

export function json(value: unknown): string {
  return JSON.stringify(value);
}

export function prettyJson(value: unknown): string {
  return JSON.stringify(value, null, 2);
}
