// Publish: send a test event. The type picker lists the generated event
// types; the JSON editor is checked as you type against the typed payload of
// the chosen type (the protocol's own types, through the wasm module).

import { useEffect, useState } from "preact/hooks";
import { KNOWN_EVENT_TYPES, type Priority, type PublishReceipt, type PublishRequest, checkPublish, typedPayload } from "../../../dist/index.js";
import type { Api } from "../api.js";
import { prettyJson } from "../format.js";
import { WASM_URL } from "../wasm.js";

const PRIORITIES: Priority[] = ["low", "normal", "high", "critical"];

export function Publish({ api, topic: initialTopic }: { api: Api; topic?: string }) {
  const [topic, setTopic] = useState(initialTopic ?? "run:console-test");
  const [eventType, setEventType] = useState("execution.progress");
  const [priority, setPriority] = useState<Priority>("normal");
  const [key, setKey] = useState("");
  const [data, setData] = useState('{\n  "progress": 50,\n  "message": "halfway"\n}');
  const [payload, setPayload] = useState<string | undefined>("Progress");
  const [problem, setProblem] = useState<string | undefined>();
  const [result, setResult] = useState<{ receipt?: PublishReceipt; error?: string } | undefined>();

  useEffect(() => {
    let live = true;
    void typedPayload(eventType, WASM_URL).then((typed) => live && setPayload(typed?.type));
    return () => {
      live = false;
    };
  }, [eventType]);

  useEffect(() => {
    let live = true;
    void checkPublish(eventType, data, WASM_URL).then((error) => live && setProblem(error));
    return () => {
      live = false;
    };
  }, [eventType, data]);

  // What the last submit answered describes the fields as they were then.
  useEffect(() => setResult(undefined), [topic, eventType, priority, key, data]);

  const example = async () => {
    const typed = await typedPayload(eventType, WASM_URL);
    setData(prettyJson(typed?.example ?? {}));
  };

  const submit = (e: Event) => {
    e.preventDefault();
    if (problem) return;
    setResult(undefined);
    // The field as it is now: an edit in the same tick has not reached `data` yet.
    const field = (e.currentTarget as HTMLFormElement).elements.namedItem("data") as HTMLTextAreaElement | null;
    let parsed: PublishRequest["data"];
    try {
      parsed = JSON.parse(field?.value ?? data);
    } catch (error) {
      setResult({ error: `not JSON: ${(error as Error).message}` });
      return;
    }
    api
      .publish({ topic, event_type: eventType, priority, data: parsed, ...(key.trim() ? { key: key.trim() } : {}) })
      .then(
        (receipt) => setResult({ receipt }),
        (error: Error) => setResult({ error: error.message }),
      );
  };

  return (
    <section aria-labelledby="publish-title">
      <h1 id="publish-title">Publish</h1>
      <form class="publish" onSubmit={submit}>
        <label>
          Topic
          <input name="topic" value={topic} required onInput={(e) => setTopic((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          Event type
          <input
            name="event_type"
            list="event-types"
            value={eventType}
            required
            onInput={(e) => setEventType((e.target as HTMLInputElement).value)}
          />
          <datalist id="event-types">
            {KNOWN_EVENT_TYPES.map((t) => (
              <option key={t} value={t} />
            ))}
          </datalist>
        </label>
        <label>
          Priority
          <select name="priority" value={priority} onChange={(e) => setPriority((e.target as HTMLSelectElement).value as Priority)}>
            {PRIORITIES.map((p) => (
              <option key={p} value={p}>
                {p}
              </option>
            ))}
          </select>
        </label>
        <label>
          Key <span class="muted">(optional)</span>
          <input name="key" value={key} onInput={(e) => setKey((e.target as HTMLInputElement).value)} />
        </label>
        <label class="editor">
          Data{" "}
          <span class="muted">
            {payload ? (
              <>
                typed as <code>{payload}</code>
              </>
            ) : (
              "any JSON"
            )}
          </span>
          <textarea
            name="data"
            rows={10}
            spellcheck={false}
            value={data}
            aria-invalid={problem ? "true" : "false"}
            aria-describedby="data-check"
            onInput={(e) => setData((e.target as HTMLTextAreaElement).value)}
          />
        </label>
        <p id="data-check" class={problem ? "error-text" : "ok-text"} role="status">
          {problem ?? "valid"}
        </p>
        <div class="actions">
          <button type="submit" class="primary" disabled={problem !== undefined}>
            Publish
          </button>
          <button type="button" onClick={() => void example()} disabled={!payload}>
            Insert an example
          </button>
        </div>
      </form>
      {result?.receipt ? (
        <p role="status" class="ok-text" data-receipt-seq={result.receipt.seq}>
          Published on <code>{result.receipt.topic}</code> as seq {result.receipt.seq} (id <code>{result.receipt.id}</code>)
        </p>
      ) : null}
      {result?.error ? (
        <p role="alert" class="error-text" data-publish-refused>
          {result.error}
        </p>
      ) : null}
    </section>
  );
}
