// Test harness: real `herald` processes, a tiny static server for web-client/,
// and headless Chromium through playwright-core. Every wait is bounded; every
// process and server is stopped by `stopAll()`.

import { execFileSync, spawn } from "node:child_process";
import { createServer } from "node:http";
import { createServer as createTcpServer } from "node:net";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { extname, join, normalize, resolve, sep } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const WEB_CLIENT = resolve(fileURLToPath(new URL("..", import.meta.url)));
// The hub binary: `HERALD_BIN` (`cargo xtask ci` passes the one it built), or
// the debug build in the directory Cargo builds into (`cargo metadata` knows
// it, `CARGO_TARGET_DIR` included) after `cargo build -p herald`.
const HERALD = process.env.HERALD_BIN || join(cargoTargetDir(), "debug", "herald");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

const cleanups = [];

/** The `target_directory` of `cargo metadata` for the workspace. */
function cargoTargetDir() {
  const metadata = execFileSync(
    process.env.CARGO ?? "cargo",
    ["metadata", "--format-version", "1", "--no-deps"],
    { cwd: WEB_CLIENT, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] },
  );
  return JSON.parse(metadata).target_directory;
}

/** Runs every registered clean-up, last first. */
export async function stopAll() {
  while (cleanups.length > 0) {
    const cleanup = cleanups.pop();
    try {
      await cleanup();
    } catch (error) {
      console.error("clean-up failed:", error);
    }
  }
}

/** A fresh temporary directory, removed by `stopAll()`. */
export function tempDir(prefix) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Rejects after `ms` with `what` unless `promise` settles first. */
export function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Starts `herald serve --bind 127.0.0.1:PORT` (0: any) with `args` and waits
 * for its `listening on http://HOST:PORT` line.
 */
export async function startHub({ port = 0, args = [] } = {}) {
  const child = spawn(HERALD, ["serve", "--bind", `127.0.0.1:${port}`, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" },
  });
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const stderr = [];
  child.stderr.on("data", (chunk) => {
    stderr.push(chunk);
    if (process.env.HERALD_TEST_LOG) process.stderr.write(chunk);
  });
  const hub = { child, exited, url: undefined, port: undefined };
  cleanups.push(() => stopHub(hub));
  const lines = createInterface({ input: child.stdout });
  const first = await within(
    15_000,
    "herald to print its address",
    new Promise((resolve, reject) => {
      lines.once("line", resolve);
      child.once("exit", (code) =>
        reject(new Error(`herald exited (${code}) before listening: ${Buffer.concat(stderr).toString()}`)),
      );
    }),
  );
  lines.on("line", () => {}); // Keep draining stdout.
  const match = /^listening on (http:\/\/[^\s]+):(\d+)$/.exec(first.trim());
  if (!match) throw new Error(`unexpected first line from herald: ${first}`);
  hub.url = `${match[1]}:${match[2]}`;
  hub.port = Number(match[2]);
  return hub;
}

/** A loopback port free right now (the OS picks it; closed before use). */
async function freePort() {
  const server = createTcpServer();
  await new Promise((resolve, reject) => server.once("error", reject).listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/**
 * Starts `redis-server` (`REDIS_SERVER`, or the one on PATH) on a free
 * loopback port without persistence and waits until it answers; stopped by
 * `stopAll()`. Resolves to `{ url, child }`, `url` being what `--store` takes.
 */
export async function startRedis() {
  const port = await freePort();
  const dir = tempDir("herald-redis-");
  const child = spawn(
    process.env.REDIS_SERVER ?? "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await within(10_000, "redis-server to exit", exited);
    }
  });
  const output = [];
  child.stdout.on("data", (chunk) => output.push(chunk));
  await within(
    10_000,
    "redis-server to accept connections",
    new Promise((resolve, reject) => {
      child.stdout.on("data", () => {
        if (Buffer.concat(output).toString().includes("Ready to accept connections")) resolve();
      });
      child.once("error", reject);
      child.once("exit", (code) => reject(new Error(`redis-server exited (${code}): ${Buffer.concat(output).toString()}`)));
    }),
  );
  return { url: `redis://127.0.0.1:${port}`, child };
}

/** SIGKILL (or `signal`), then waits for the exit. */
export async function stopHub(hub, signal = "SIGKILL") {
  if (hub.child.exitCode !== null || hub.child.signalCode !== null) return;
  // A stopped process must be continued for SIGTERM; SIGKILL works either way.
  hub.child.kill(signal);
  await within(10_000, "herald to exit", hub.exited);
}

/** Serves `root` on 127.0.0.1:0 (GET only, no directory listings). */
export async function serveStatic(root = WEB_CLIENT) {
  const types = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".wasm": "application/wasm",
    ".css": "text/css",
    ".json": "application/json",
  };
  const server = createServer((request, response) => {
    const path = decodeURIComponent(new URL(request.url, "http://x").pathname);
    const file = normalize(join(root, path));
    if (!file.startsWith(root + sep) || !statSync(file, { throwIfNoEntry: false })?.isFile()) {
      response.writeHead(404).end("not found");
      return;
    }
    response.writeHead(200, {
      "content-type": types[extname(file)] ?? "application/octet-stream",
      "cache-control": "no-store",
    });
    response.end(readFileSync(file));
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(
    () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return `http://127.0.0.1:${server.address().port}`;
}

/** Headless Chromium with a fresh profile; closed by `stopAll()`. */
export async function launchBrowser() {
  const context = await chromium.launchPersistentContext(tempDir("herald-chromium-"), {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  cleanups.push(() => context.close());
  return context;
}

/** Opens the example page against `hub` with extra query parameters. */
export async function openExample(context, site, hub, params = {}) {
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(error));
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(new Error(message.text()));
  });
  const query = new URLSearchParams({ hub: hub.url, ...params });
  await page.goto(`${site}/examples/index.html?${query}`);
  page.errors = errors;
  return page;
}

/** Waits (bounded) until `predicate(heraldDemo, arg)` is truthy in the page. */
export async function waitForDemo(page, what, predicate, arg, timeout = 15_000) {
  try {
    const handle = await page.waitForFunction(
      ([source, arg]) => {
        const demo = window.heraldDemo;
        // eslint-disable-next-line no-new-func
        return demo && new Function("demo", "arg", `return (${source})(demo, arg);`)(demo, arg);
      },
      [predicate.toString(), arg],
      { timeout, polling: 50 },
    );
    return await handle.jsonValue();
  } catch (error) {
    const demo = await page.evaluate(() => {
      const { client: _client, ...rest } = window.heraldDemo ?? {};
      return JSON.stringify(rest).slice(0, 4000);
    });
    throw new Error(`${what}: ${error.message}\npage state: ${demo}\npage errors: ${page.errors?.join("; ")}`);
  }
}

/** `POST /api/v1/events`; throws on a non-2xx answer or a network error. */
export async function publish(hub, event) {
  const response = await fetch(`${hub.url}/api/v1/events`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(event),
    signal: AbortSignal.timeout(2_000),
  });
  if (!response.ok) throw new Error(`publish: ${response.status} ${await response.text()}`);
  return response.json();
}

export async function postJson(hub, path, body) {
  const response = await fetch(`${hub.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5_000),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`POST ${path}: ${response.status} ${text}`);
  return JSON.parse(text);
}

export async function getJson(hub, path, timeout = 5_000) {
  const response = await fetch(`${hub.url}${path}`, { signal: AbortSignal.timeout(timeout) });
  const text = await response.text();
  if (!response.ok) throw new Error(`GET ${path}: ${response.status} ${text}`);
  return JSON.parse(text);
}
