// The Herald console: signs in when the hub asks for credentials, opens one
// HeraldClient (the web client's session core: one reconnect loop, one
// WebSocket) and shows the panel the URL names.
//
// Layout: `main.tsx` (shell, sign-in, navigation), `route.ts` (URLs),
// `api.ts` (HTTP API), `credentials.ts` (and whether the hub refuses the
// token), `operator.ts` (who the console decides as on an open hub),
// `link.ts` (the connection as shown: why it is not live, Reconnect),
// `approvals.ts` (the approval book), `hooks.ts`, `format.ts`,
// `run/model.ts` (a run from its events), `ui/` (chart, DAG), `panels/`
// (one per panel).

import "uplot/dist/uPlot.min.css";
import "./console.css";
import { render } from "preact";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { type ConnectionState, HeraldClient, webSocketUrl } from "../../dist/index.js";
import { Api, ApiError } from "./api.js";
import { ApprovalBook } from "./approvals.js";
import { type Credentials, forgetCredentials, loadCredentials, saveCredentials, tokenRefusal } from "./credentials.js";
import { useStore } from "./hooks.js";
import { Link, type LinkState } from "./link.js";
import { loadOperator, operatorProblem, saveOperator } from "./operator.js";
import { Approvals } from "./panels/approvals.js";
import { Connections } from "./panels/connections.js";
import { Overview } from "./panels/overview.js";
import { Publish } from "./panels/publish.js";
import { Run } from "./panels/run.js";
import { Runs } from "./panels/runs.js";
import { Topic } from "./panels/topic.js";
import { Topics } from "./panels/topics.js";
import { type Route, href, parseRoute } from "./route.js";
import { WASM_URL } from "./wasm.js";

type Theme = "auto" | "light" | "dark";
const THEME_KEY = "herald:console:theme";

/**
 * Resolves when the hub answers and takes connections: its console config
 * answers, and its readiness does not refuse them. A draining hub answers
 * HTTP but refuses new sockets (503), which a browser cannot tell from a
 * refused token; a proxy that does not pass `/health/ready` on leaves the
 * answer to the config.
 */
async function takesConnections(api: Api): Promise<void> {
  await api.config();
  await api.ready().catch((error: unknown) => {
    if (error instanceof ApiError && error.status === 503) throw error;
  });
}

function applyTheme(theme: Theme): void {
  if (theme === "auto") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
}

function storedTheme(): Theme {
  try {
    const theme = localStorage.getItem(THEME_KEY);
    return theme === "light" || theme === "dark" ? theme : "auto";
  } catch {
    return "auto";
  }
}

function useRoute(): Route {
  const [route, setRoute] = useState(parseRoute(location.hash));
  useEffect(() => {
    const changed = () => setRoute(parseRoute(location.hash));
    addEventListener("hashchange", changed);
    return () => removeEventListener("hashchange", changed);
  }, []);
  return route;
}

function SignIn({ needKey, needToken, error, onSubmit }: { needKey: boolean; needToken: boolean; error?: string; onSubmit: (c: Credentials) => void }) {
  const [apiKey, setApiKey] = useState("");
  const [token, setToken] = useState("");
  return (
    <main id="main" class="sign-in">
      <h1>Herald console</h1>
      <p>
        This hub asks for credentials. They stay in this tab's session storage (never in a URL) and are forgotten when
        the tab closes.
      </p>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          onSubmit({ apiKey: apiKey.trim() || undefined, token: token.trim() || undefined });
        }}
      >
        {needKey ? (
          <label>
            Admin API key <span class="muted">(a key of <code>--api-keys</code> with the <code>admin</code> scope)</span>
            <input name="api-key" type="password" autocomplete="off" required value={apiKey} onInput={(e) => setApiKey((e.target as HTMLInputElement).value)} />
          </label>
        ) : null}
        {needToken ? (
          <label>
            Admin token <span class="muted">(a JWT whose <code>topics</code> claim is <code>["*"]</code>)</span>
            <input name="token" type="password" autocomplete="off" required value={token} onInput={(e) => setToken((e.target as HTMLInputElement).value)} />
          </label>
        ) : null}
        {error ? (
          <p class="error-text" role="alert">
            {error}
          </p>
        ) : null}
        <button type="submit" class="primary">
          Sign in
        </button>
      </form>
    </main>
  );
}

const NAV: Array<{ label: string; route: Route; panels: Route["panel"][] }> = [
  { label: "Overview", route: { panel: "overview" }, panels: ["overview"] },
  { label: "Topics", route: { panel: "topics" }, panels: ["topics", "topic"] },
  { label: "Runs", route: { panel: "runs" }, panels: ["runs", "run"] },
  { label: "Approvals", route: { panel: "approvals", view: "inbox" }, panels: ["approvals"] },
  { label: "Connections", route: { panel: "connections" }, panels: ["connections"] },
  { label: "Publish", route: { panel: "publish" }, panels: ["publish"] },
];

function stateLabel(state: ConnectionState): string {
  switch (state.state) {
    case "open":
      return "live";
    case "connecting":
      return "connecting…";
    case "reconnecting":
      return state.code === undefined ? `reconnecting (attempt ${state.attempt})` : `reconnecting (attempt ${state.attempt}, closed with ${state.code})`;
    case "closed":
      return state.reason === "terminal" ? `closed by the hub (${state.code})` : state.reason === "attempts_exhausted" ? "gave up reconnecting" : "disconnected";
  }
}

/** The connection in the header: its state, why it is not live (as a tooltip and for screen readers), and Reconnect. */
function LinkStatus({ link, state }: { link: Link; state: LinkState }) {
  return (
    <>
      <span class={`conn conn-${state.connection.state}`} data-connection-state={state.connection.state} role="status" title={state.why}>
        {state.byItself ? "disconnected here" : state.connection.state === "open" && !state.live ? "connected…" : stateLabel(state.connection)}
        {state.why && state.downSince !== undefined ? <span class="sr-only">: {state.why}</span> : null}
      </span>
      {state.canReconnect ? (
        <button type="button" onClick={() => link.reconnect()} data-reconnect>
          {state.connection.state === "closed" ? "Reconnect" : "Reconnect now"}
        </button>
      ) : null}
    </>
  );
}

/**
 * On an open hub: who this console decides as (its connection's user, so an
 * approval's `decided_by`), with Change. A new name is kept for this browser
 * and the page reloads to connect as it.
 */
function DecidingAs({ operator }: { operator: string }) {
  const [editing, setEditing] = useState(false);
  const [draft, setDraft] = useState(operator);
  const [error, setError] = useState<string | undefined>();
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => {
    if (editing) input.current?.focus();
  }, [editing]);
  const name = draft.trim();
  const problem = operatorProblem(name);
  if (!editing) {
    return (
      <span class="deciding-as" data-deciding-as={operator} title="This console's user on the hub: its decisions on approvals are recorded as made by it">
        Deciding as <b>{operator}</b>
        <button
          type="button"
          onClick={() => {
            setDraft(operator);
            setError(undefined);
            setEditing(true);
          }}
          aria-label={`Deciding as ${operator}: change`}
        >
          Change
        </button>
      </span>
    );
  }
  return (
    <form
      class="deciding-as"
      onSubmit={(e) => {
        e.preventDefault();
        if (problem) return;
        if (name === operator) {
          setEditing(false);
        } else if (saveOperator(name)) {
          // Reconnects as the new user: a fresh page opens a fresh connection.
          location.reload();
        } else {
          setError("this browser does not let the console keep the name (storage is disabled)");
        }
      }}
    >
      <label>
        Decide as
        <input
          name="operator"
          autocomplete="username"
          spellcheck={false}
          required
          value={draft}
          aria-invalid={problem ? "true" : undefined}
          aria-describedby="operator-help"
          onInput={(e) => {
            setDraft((e.target as HTMLInputElement).value);
            setError(undefined);
          }}
          ref={input}
        />
      </label>
      <button type="submit" class="primary" disabled={problem !== undefined}>
        Save
      </button>
      <button type="button" onClick={() => setEditing(false)}>
        Cancel
      </button>
      <span id="operator-help" class={problem || error ? "error-text small" : "muted small"} role={problem || error ? "alert" : undefined}>
        {problem ?? error ?? "Kept in this browser: the console reconnects as this user, and its other tabs take it when they reload."}
      </span>
    </form>
  );
}

/** Shown for an address the console cannot read, with the shell still working around it. */
function Malformed({ address }: { address: string }) {
  return (
    <section aria-labelledby="malformed-title">
      <h1 id="malformed-title">Not a console address</h1>
      <p class="error-text" role="alert">
        This address is malformed (a bad <code>%</code> escape): <code>{address}</code>
      </p>
      <p>
        <a href={href({ panel: "overview" })}>Go to the overview</a>
      </p>
    </section>
  );
}

function Console({
  api,
  credentials,
  onSignOut,
  onTokenRefused,
}: {
  api: Api;
  credentials: Credentials;
  onSignOut?: () => void;
  onTokenRefused: (message: string) => void;
}) {
  const route = useRoute();
  // Open hubs take the user from the URL: decisions made here read as this name.
  // With a token, the token's user decides.
  const operator = useMemo(() => (credentials.token ? undefined : loadOperator()), []);
  const client = useMemo(
    () =>
      new HeraldClient(location.origin, {
        token: credentials.token,
        userId: operator,
        wasmUrl: WASM_URL,
        initialReconnectDelay: 250,
        maxReconnectDelay: 5000,
        heartbeatInterval: 15_000,
      }),
    [],
  );
  const link = useMemo(() => new Link(client, operator), []);
  const linkState = useStore(link);
  const approvals = useMemo(() => new ApprovalBook(api, client), []);
  const book = useStore(approvals);
  const [theme, setTheme] = useState<Theme>(storedTheme());
  const [session, setSession] = useState<string | undefined>();

  useEffect(() => {
    // A failed attempt (a reconnect that follows no open connection) with a
    // token may be the hub refusing it, with 401 before the upgrade (a bad
    // token, or the same expired one after close 4001): the client retries
    // that forever, so the console asks the hub and goes back to sign-in.
    let previous = client.state.state;
    let checking = false;
    const token = credentials.token;
    const off = client.onState((s) => {
      setSession(client.sessionId);
      const failed = s.state === "reconnecting" && previous !== "open";
      previous = s.state;
      if (!failed || !token || checking) return;
      checking = true;
      void tokenRefusal(webSocketUrl(location.origin), token, () => takesConnections(api)).then((refusal) => {
        checking = false;
        if (refusal) onTokenRefused(refusal);
      });
    });
    const offNotice = client.onNotice((n) => n.kind === "welcome" && setSession(n.welcome.session_id));
    void client.connect().catch(() => undefined);
    return () => {
      off();
      offNotice();
      link.dispose();
      client.dispose();
    };
  }, []);

  useEffect(() => {
    applyTheme(theme);
    try {
      localStorage.setItem(THEME_KEY, theme);
    } catch {
      // The choice lasts until reload.
    }
  }, [theme]);

  useEffect(() => {
    document.getElementById("main")?.focus({ preventScroll: true });
  }, [route.panel]);

  const nextTheme: Record<Theme, Theme> = { auto: "light", light: "dark", dark: "auto" };
  let panel;
  switch (route.panel) {
    case "overview":
      panel = <Overview client={client} api={api} />;
      break;
    case "topics":
      panel = <Topics api={api} />;
      break;
    case "topic":
      panel = <Topic key={route.topic} client={client} api={api} topic={route.topic} />;
      break;
    case "runs":
      panel = <Runs api={api} />;
      break;
    case "run":
      panel = <Run key={route.topic} client={client} api={api} approvals={approvals} topic={route.topic} />;
      break;
    case "approvals":
      panel = <Approvals client={client} approvals={approvals} link={link} view={route.view} />;
      break;
    case "connections":
      panel = <Connections api={api} link={link} ownSession={session} />;
      break;
    case "publish":
      panel = <Publish api={api} topic={route.topic} />;
      break;
    case "malformed":
      panel = <Malformed address={route.address} />;
      break;
  }
  return (
    <>
      <a class="skip" href="#main" onClick={(e) => (e.preventDefault(), document.getElementById("main")?.focus())}>
        Skip to the panel
      </a>
      <header class="top">
        <a class="brand" href={href({ panel: "overview" })}>
          Herald
        </a>
        <nav aria-label="Panels">
          {NAV.map((item) => (
            <a key={item.label} href={href(item.route)} aria-current={item.panels.includes(route.panel) ? "page" : undefined}>
              {item.label}
              {item.label === "Approvals" && book.pending.length > 0 ? (
                <span class="badge" data-pending={book.pending.length} aria-label={`${book.pending.length} pending`}>
                  {book.pending.length}
                </span>
              ) : null}
            </a>
          ))}
        </nav>
        <div class="status">
          {operator !== undefined ? <DecidingAs operator={operator} /> : null}
          <LinkStatus link={link} state={linkState} />
          <button type="button" onClick={() => setTheme(nextTheme[theme])} aria-label={`Theme: ${theme}; switch to ${nextTheme[theme]}`}>
            {theme === "auto" ? "◐ auto" : theme === "light" ? "☀ light" : "☾ dark"}
          </button>
          {onSignOut ? (
            <button type="button" onClick={onSignOut}>
              Sign out
            </button>
          ) : null}
        </div>
      </header>
      <main id="main" tabIndex={-1} data-panel={route.panel}>
        {panel}
      </main>
    </>
  );
}

function App() {
  const [credentials, setCredentials] = useState<Credentials>(loadCredentials());
  const [config, setConfig] = useState<{ needKey: boolean; needToken: boolean } | undefined>();
  const [signedIn, setSignedIn] = useState(false);
  const [error, setError] = useState<string | undefined>();
  const api = useMemo(
    () =>
      new Api(credentials, (message) => {
        // A key the hub no longer accepts (revoked, or a restart with other keys).
        forgetCredentials();
        setError(`the hub no longer accepts this key: ${message}`);
        setSignedIn(false);
      }),
    [credentials],
  );

  useEffect(() => {
    api.config().then(
      (c) => setConfig({ needKey: c.api_key_required, needToken: c.token_required }),
      (e: Error) => setError(`cannot reach the hub: ${e.message}`),
    );
  }, []);

  useEffect(() => {
    if (!config) return;
    const missing = (config.needKey && !credentials.apiKey) || (config.needToken && !credentials.token);
    if (missing) return;
    // The key is checked with a call that needs `admin`; a bad token shows as a connection the hub refuses.
    api.status().then(
      () => {
        setError(undefined);
        setSignedIn(true);
      },
      (e: Error) => {
        setError(e instanceof ApiError && (e.status === 401 || e.status === 403) ? `the hub refused the key: ${e.message}` : e.message);
        forgetCredentials();
        setSignedIn(false);
      },
    );
  }, [config, credentials]);

  if (!config) {
    return <main id="main">{error ? <p class="error-text">{error}</p> : <p class="boot">Connecting to the hub…</p>}</main>;
  }
  if (!signedIn) {
    return (
      <SignIn
        needKey={config.needKey}
        needToken={config.needToken}
        error={error}
        onSubmit={(c) => {
          saveCredentials(c);
          setCredentials(c);
        }}
      />
    );
  }
  const needsCredentials = config.needKey || config.needToken;
  return (
    <Console
      api={api}
      credentials={credentials}
      onTokenRefused={(message) => {
        forgetCredentials();
        setError(message);
        setSignedIn(false);
      }}
      onSignOut={
        needsCredentials
          ? () => {
              forgetCredentials();
              location.reload();
            }
          : undefined
      }
    />
  );
}

applyTheme(storedTheme());
const root = document.getElementById("app");
if (root) {
  root.replaceChildren();
  render(<App />, root);
}
