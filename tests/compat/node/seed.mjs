// Runs a seed document's own client code (tests/compat/seeds/) against a
// real hub: the code is read as printed, its base URL is replaced by the
// hub's dialect URL (nothing else changes), and it runs in a fresh V8
// context whose globals are what its page would have had (`WebSocket`,
// `console`, timers, and the names the snippet leaves to its page, such as
// `confirm` or `handleStateEvent`). Every timer it starts and every socket it
// opens is recorded, so the test ends them all.

import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import vm from "node:vm";

export const SEEDS = join(dirname(fileURLToPath(import.meta.url)), "..", "seeds");

/** The seed file `name`, with each `[from, to]` replacement applied once (each must be there). */
export function seedSource(name, replacements = []) {
  let source = readFileSync(join(SEEDS, name), "utf8");
  for (const [from, to] of replacements) {
    if (!source.includes(from)) throw new Error(`${name} does not contain ${from}`);
    source = source.replace(from, to);
  }
  return source;
}

/** `ws://HOST:PORT` of a hub started by the harness. */
export function wsBase(hub) {
  return hub.url.replace(/^http:/, "ws:");
}

/**
 * A context for seed code: a recording `console`, timers the test can fire
 * (`timers.fire()` runs every interval callback once, as if its period had
 * passed: the seeds' 30 s heartbeats are not waited for), `WebSocket`s that
 * are remembered with what they send, and `extra` globals.
 */
export function seedContext(extra = {}) {
  const logs = [];
  const intervals = new Map();
  const timeouts = new Set();
  const sockets = [];
  const sent = [];
  class RecordedWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      sockets.push(this);
    }

    send(data) {
      sent.push(data);
      super.send(data);
    }
  }
  const context = {
    console: {
      log: (...args) => logs.push(args),
      error: (...args) => logs.push(["error", ...args]),
    },
    WebSocket: RecordedWebSocket,
    JSON,
    Date,
    Math,
    setInterval: (callback, ms) => {
      const handle = setInterval(callback, ms);
      intervals.set(handle, callback);
      return handle;
    },
    clearInterval: (handle) => {
      intervals.delete(handle);
      clearInterval(handle);
    },
    setTimeout: (callback, ms) => {
      const handle = setTimeout(() => {
        timeouts.delete(handle);
        callback();
      }, ms);
      timeouts.add(handle);
      return handle;
    },
    clearTimeout: (handle) => {
      timeouts.delete(handle);
      clearTimeout(handle);
    },
    ...extra,
  };
  vm.createContext(context);
  return {
    context,
    logs,
    sockets,
    /** What the code sent, as it sent it. */
    sent,
    timers: {
      fire: () => {
        for (const callback of intervals.values()) callback();
      },
    },
    /** Runs code in the context; returns its completion value. */
    run: (source) => vm.runInContext(source, context, { timeout: 1_000 }),
    /**
     * Runs code as an ES module in the context (node --experimental-vm-modules),
     * its `import`s answered from `imports` (specifier → exports object).
     */
    runModule: async (source, imports) => {
      const module = new vm.SourceTextModule(source, { context });
      await module.link((specifier) => {
        const exports = imports[specifier];
        if (!exports) throw new Error(`the test provides no module ${specifier}`);
        const names = Object.keys(exports);
        return new vm.SyntheticModule(
          names,
          function () {
            for (const name of names) this.setExport(name, exports[name]);
          },
          { context },
        );
      });
      await module.evaluate();
      return module;
    },
    /** Closes every socket and clears every timer the code started. */
    end: () => {
      for (const handle of intervals.keys()) clearInterval(handle);
      for (const handle of timeouts) clearTimeout(handle);
      intervals.clear();
      timeouts.clear();
      for (const socket of sockets) socket.close();
    },
  };
}

/** Resolves with the first `console.log` call `predicate` accepts (bounded). */
export function logged(seed, predicate, what, ms = 10_000) {
  return waitFor(() => seed.logs.find(predicate), what, ms);
}

/** Polls `probe` (sync or async) every 20 ms until it returns something truthy (bounded). */
export async function waitFor(probe, what, ms = 10_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const found = await probe();
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
