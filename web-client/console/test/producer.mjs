// The example producer (python-client/examples/workflow.py) as a child
// process: its JSON lines are collected, and `next` waits (bounded) for one.

import { spawn } from "node:child_process";
import { resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

import { within } from "../../test/harness.mjs";

const PYTHON_CLIENT = resolve(fileURLToPath(new URL("../../../python-client", import.meta.url)));
const PYTHON = process.env.HERALD_PYTHON_BIN || resolve(PYTHON_CLIENT, ".venv/bin/python");

/** Starts the producer against `hub`; `stop()` kills it by its PID. */
export function startProducer(hub, args = []) {
  const child = spawn(PYTHON, [resolve(PYTHON_CLIENT, "examples/workflow.py"), ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, HERALD_URL: hub.url, PYTHONPATH: resolve(PYTHON_CLIENT, "src") },
  });
  const lines = [];
  const waiters = [];
  const stderr = [];
  child.stderr.on("data", (chunk) => stderr.push(chunk));
  const exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
  createInterface({ input: child.stdout }).on("line", (line) => {
    let parsed;
    try {
      parsed = JSON.parse(line);
    } catch {
      return;
    }
    lines.push(parsed);
    for (const waiter of [...waiters]) waiter();
  });
  return {
    lines,
    exited,
    /** The first line (after those already taken by `from`) that `predicate` accepts. */
    next(what, predicate, timeout = 20_000) {
      return within(
        timeout,
        `the producer to print ${what} (printed ${JSON.stringify(lines)}; stderr ${Buffer.concat(stderr).toString().slice(-2000)})`,
        new Promise((resolve) => {
          const check = () => {
            const found = lines.find(predicate);
            if (found) {
              waiters.splice(waiters.indexOf(check), 1);
              resolve(found);
            }
          };
          waiters.push(check);
          check();
        }),
      );
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await within(10_000, "the producer to exit", exited);
    },
  };
}
