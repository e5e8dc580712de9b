// Preact hooks over the web client: a subscription that lives as long as the
// component, a value that follows a store, a clock for countdowns, a
// loader for HTTP answers, and a throttle.

import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import type { HeraldClient, SubscribeOptions, Subscription } from "../../dist/index.js";

/** Subscribes while the component is mounted (and again when `key` changes); `setup` adds handlers and may return what to stop when it ends. */
export function useSubscription(
  client: HeraldClient,
  topics: string[] | undefined,
  options: SubscribeOptions,
  setup: (subscription: Subscription) => void | (() => void),
  key: unknown[] = [],
): void {
  useEffect(() => {
    if (!topics) return undefined;
    const subscription = client.subscribe(topics, options);
    const stop = setup(subscription);
    return () => {
      stop?.();
      void subscription.unsubscribe();
    };
  }, [client, topics?.join(","), ...key]);
}

/**
 * A re-render at most once per animation frame, however often the returned
 * function is called in between: a burst of events costs a render per
 * frame, not one per event.
 */
export function useFrameRender(): () => void {
  const [, setVersion] = useState(0);
  const pending = useRef(false);
  return useCallback(() => {
    if (pending.current) return;
    pending.current = true;
    requestAnimationFrame(() => {
      pending.current = false;
      setVersion((v) => v + 1);
    });
  }, []);
}

/** The current time, updated every `intervalMs`. */
export function useNow(intervalMs = 1000): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), intervalMs);
    return () => clearInterval(timer);
  }, [intervalMs]);
  return now;
}

/** Something that changes and says so. */
export interface Store<T> {
  get(): T;
  listen(listener: () => void): () => void;
}

/** The store's value, re-rendering on change. */
export function useStore<T>(store: Store<T>): T {
  const [, setVersion] = useState(0);
  useEffect(() => store.listen(() => setVersion((v) => v + 1)), [store]);
  return store.get();
}

export type Loaded<T> = { value?: T; error?: string; loading: boolean };

/**
 * Calls `load` now and every `refreshMs` (0: once) while mounted; keeps the
 * last value while reloading.
 */
export function useLoad<T>(load: () => Promise<T>, key: unknown[], refreshMs = 0): [Loaded<T>, () => void] {
  const [state, setState] = useState<Loaded<T>>({ loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    const run = () =>
      load().then(
        (value) => live && setState({ value, loading: false }),
        (error: Error) => live && setState((s) => ({ value: s.value, error: error.message, loading: false })),
      );
    void run();
    const timer = refreshMs > 0 ? setInterval(run, refreshMs) : undefined;
    return () => {
      live = false;
      if (timer) clearInterval(timer);
    };
  }, [...key, tick]);
  return [state, () => setTick((t) => t + 1)];
}

/**
 * `action` at most once per `intervalMs`, however often the returned function
 * is called: the first call runs it now, calls within the interval run it
 * once at the interval's end (so the last call is never lost).
 */
export function useThrottle(action: () => void, intervalMs: number): () => void {
  const latest = useRef(action);
  latest.current = action;
  const state = useRef<{ last: number; timer?: ReturnType<typeof setTimeout> }>({ last: Number.NEGATIVE_INFINITY });
  useEffect(() => () => clearTimeout(state.current.timer), []);
  return useCallback(() => {
    const throttle = state.current;
    if (throttle.timer !== undefined) return;
    const fire = () => {
      throttle.timer = undefined;
      throttle.last = Date.now();
      latest.current();
    };
    const wait = throttle.last + intervalMs - Date.now();
    if (wait <= 0) fire();
    else throttle.timer = setTimeout(fire, wait);
  }, [intervalMs]);
}
