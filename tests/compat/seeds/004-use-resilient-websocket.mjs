// Seed 004 (cmbagent) describes `cmbagent-ui/hooks/useResilientWebSocket.ts`
// without printing it; this is a faithful minimal one written from its
// description ("Auto-Reconnection UI Hook"), without React: the same options
// and the same returned object, so the document's "Frontend Integration"
// snippet runs unchanged against it.
//
// - Connects to `${NEXT_PUBLIC_WS_URL}/ws/${runId}` (the base URL is the
//   deployment's, as cmbagent's UI reads it from its environment).
// - Automatic reconnection with exponential backoff:
//   delay = min(initialReconnectDelay * 2^attempt, maxReconnectDelay),
//   up to maxReconnectAttempts.
// - Heartbeat (ping/pong) every heartbeatInterval.
// - Preserves the last message's timestamp and requests the events missed
//   since it on reconnection (`?since=`), and the state (`request_state`).
// - Tracks the connection state; manual disconnect and reconnect.

const DEFAULTS = {
  maxReconnectAttempts: 999,
  initialReconnectDelay: 1000,
  maxReconnectDelay: 30000,
  heartbeatInterval: 30000,
};

export function useResilientWebSocket(options) {
  const config = { ...DEFAULTS, ...options };
  const base = process.env.NEXT_PUBLIC_WS_URL ?? "ws://localhost:8000";
  const state = { connected: false };
  let socket = null;
  let attempt = 0;
  let heartbeat = null;
  let retry = null;
  let manual = false;
  let lastTimestamp = null;
  let hadConnection = false;

  const stopHeartbeat = () => {
    if (heartbeat !== null) clearInterval(heartbeat);
    heartbeat = null;
  };

  const connect = () => {
    const since = lastTimestamp === null ? "" : `?since=${lastTimestamp}`;
    socket = new WebSocket(`${base}/ws/${config.runId}${since}`);
    socket.onopen = () => {
      attempt = 0;
      state.connected = true;
      config.onConnectionChange?.(true);
      heartbeat = setInterval(() => sendMessage({ type: "ping" }), config.heartbeatInterval);
      if (hadConnection) sendMessage({ type: "request_state" });
      hadConnection = true;
    };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      // Heartbeats and pongs are the link's, not the run's: only events
      // move the cursor.
      if (message.event_type !== "heartbeat" && message.event_type !== "pong" && message.timestamp != null) {
        lastTimestamp = message.timestamp;
      }
      config.onMessage?.(message);
    };
    socket.onclose = () => {
      stopHeartbeat();
      if (state.connected) {
        state.connected = false;
        config.onConnectionChange?.(false);
      }
      if (manual || attempt >= config.maxReconnectAttempts) return;
      const delay = Math.min(config.initialReconnectDelay * 2 ** attempt, config.maxReconnectDelay);
      attempt += 1;
      retry = setTimeout(connect, delay);
    };
  };

  const sendMessage = (message) => {
    if (socket?.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(message));
      return true;
    }
    return false;
  };

  const disconnect = () => {
    manual = true;
    if (retry !== null) clearTimeout(retry);
    stopHeartbeat();
    socket?.close(1000);
  };

  const reconnect = () => {
    if (socket !== null) {
      socket.onclose = null;
      socket.close(1000);
    }
    stopHeartbeat();
    manual = false;
    attempt = 0;
    connect();
  };

  connect();
  return {
    get connected() {
      return state.connected;
    },
    sendMessage,
    disconnect,
    reconnect,
  };
}
