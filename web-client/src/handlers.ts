// Handler lists, as the client and its subscriptions keep them: a throwing
// handler is reported (never stops the others), and removal is by identity.

export type Handler<T> = (value: T) => void;

/** Reports an error thrown by an application handler without stopping the caller. */
export function report(error: unknown): void {
  const global = globalThis as { reportError?: (error: unknown) => void };
  if (global.reportError) global.reportError(error);
  else
    queueMicrotask(() => {
      throw error;
    });
}

/** Calls `handler`, reporting what it throws. */
export function call<T>(handler: Handler<T>, value: T): void {
  try {
    handler(value);
  } catch (error) {
    report(error);
  }
}

/** Adds `handler` to `list`; returns the function that removes it. */
export function add<T>(list: Array<Handler<T>>, handler: Handler<T>): () => void {
  list.push(handler);
  return () => remove(list, handler);
}

export function remove<T>(list: T[], item: T): void {
  const index = list.indexOf(item);
  if (index >= 0) list.splice(index, 1);
}
