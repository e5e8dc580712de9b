// Seed 000 (AIECS): the approval round trip in a real browser (headless
// Chromium) on the document's own page: Appendix C's script, as printed,
// in a page served over HTTP; only its URL changes. The question is shown
// in the browser's own confirm dialog, the user answers it, and the
// producer's `notify_user` is told that answer.

import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, test } from "node:test";

import { launchBrowser, startHub, stopAll, within } from "../../../web-client/test/harness.mjs";
import { seedSource, wsBase } from "./seed.mjs";

after(stopAll);

/** Serves the page: Appendix C's script pointed at `hub`. Returns its URL and a stop. */
async function servePage(hub) {
  const script = seedSource("000-aiecs-client.js", [["ws://localhost:8765", `${wsBase(hub)}/compat/aiecs`]]);
  const html = `<!doctype html><meta charset="utf-8"><title>AIECS tasks</title>\n<script>\n${script}\n</script>\n`;
  const server = createServer((_request, response) => {
    response.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    response.end(html);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/`,
    stop: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function notifyUser(hub, taskId) {
  return fetch(`${hub.url}/compat/aiecs/notify_user`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      step_result: {
        step: "model_training",
        message: "Model training failed, retry?",
        status: "failed",
        error_code: "E003",
        error_message: "GPU memory insufficient",
      },
      user_id: "user_123",
      task_id: taskId,
      step: 2,
    }),
    signal: AbortSignal.timeout(20_000),
  }).then((response) => response.json());
}

for (const [choice, proceed, feedback] of [
  ["accepts", true, "Agree to continue"],
  ["dismisses", false, "Cancel execution"],
]) {
  test(`the question is shown in the browser's dialog; the user ${choice} it and the producer is told`, async () => {
    const hub = await startHub();
    const page = await servePage(hub);
    try {
      const browser = await launchBrowser();
      const tab = await browser.newPage();
      const console = [];
      tab.on("console", (message) => console.push(message.text()));
      const shown = new Promise((resolve) => {
        tab.on("dialog", async (dialog) => {
          resolve({ type: dialog.type(), message: dialog.message() });
          if (proceed) await dialog.accept();
          else await dialog.dismiss();
        });
      });
      const opened = tab.waitForEvent("console", {
        predicate: (message) => message.text() === "WebSocket connection established",
        timeout: 15_000,
      });
      await tab.goto(page.url);
      await opened;
      const confirmation = notifyUser(hub, `task-${choice}`);
      const dialog = await within(15_000, "the question's dialog", shown);
      assert.deepEqual(dialog, { type: "confirm", message: "Model training failed, retry?" });
      const answer = await within(15_000, "the producer's answer", confirmation);
      assert.equal(answer.proceed, proceed);
      assert.equal(answer.feedback, feedback);
      assert.equal(answer.status, proceed ? "approved" : "rejected");
      assert.ok(
        console.some((line) => line.startsWith("Message received:")),
        `the page logged no message: ${console.join("\n")}`,
      );
    } finally {
      await page.stop();
    }
  });
}
