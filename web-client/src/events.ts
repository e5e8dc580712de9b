// Typed events: an event whose `data` is typed by its `event_type`, through
// the generated `PayloadMap`.

import type { Event, EventType, PayloadMap } from "./protocol/index.js";

/** An event whose `data` is typed by its `event_type` (`unknown` for other types). */
export type HeraldEvent<T extends string = EventType> = Omit<Event, "event_type" | "data"> & {
  event_type: T;
  data: T extends keyof PayloadMap ? PayloadMap[T] : unknown;
};

/** Narrows an event from a `"*"` or pattern handler to one event type. */
export function isEvent<T extends keyof PayloadMap>(
  event: HeraldEvent<string>,
  type: T,
): event is HeraldEvent<T> {
  return event.event_type === type;
}

/** Whether an event type matches `pattern`: the type itself, `"domain.*"` or `"*"`. */
export function typeMatches(pattern: string, type: string): boolean {
  if (pattern === "*" || pattern === type) return true;
  return pattern.endsWith(".*") && type.startsWith(pattern.slice(0, -1));
}
