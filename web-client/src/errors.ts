// The errors the client rejects its promises with, where the caller needs
// more than a message.

import type { ErrorFrame } from "./protocol/index.js";

/**
 * The hub's refusal of a request (a subscription, `confirm`, `cancel`,
 * `pause`, `resume`): its `error` frame, with its `code` (`forbidden`,
 * `rate_limited`, ...).
 */
export class RefusedError extends Error {
  readonly code: ErrorFrame["code"];
  constructor(readonly frame: ErrorFrame) {
    super(frame.message);
    this.name = "RefusedError";
    this.code = frame.code;
  }
}
