// Who this console decides as on an open hub (no token): the user its
// WebSocket connects as (`?user_id=`), so the hub records it as an
// approval's `decided_by` and counts the connection toward that user's
// limit. Kept in localStorage (per browser, across reloads); "console"
// until an operator names themselves. With a token, the token's user
// decides and none of this applies.

/** The name a console decides as until its operator gives another. */
export const DEFAULT_OPERATOR = "console";

/** The longest user id the hub can address (a topic id: `MAX_ID_LEN` in herald-protocol's topic.rs). */
export const OPERATOR_MAX_LEN = 128;

const KEY = "herald:console:operator";

/**
 * What a user id may hold: the hub takes any non-empty `user_id`, but only
 * one that makes the topic `user:{id}` (`[A-Za-z0-9_.@-]{1,128}`) receives
 * its approvals and messages, and only such an id can be asked to approve.
 */
const ALLOWED = /^[A-Za-z0-9_.@-]+$/;

/** Why `name` (already trimmed) cannot be a user id, or `undefined` if it can. */
export function operatorProblem(name: string): string | undefined {
  if (name === "") return "a name is needed";
  if (name.length > OPERATOR_MAX_LEN) return `at most ${OPERATOR_MAX_LEN} characters (this has ${name.length})`;
  if (!ALLOWED.test(name)) {
    const bad = [...name].find((c) => !ALLOWED.test(c)) ?? "";
    const shown = bad.trim() === "" ? "a space" : `"${bad}"`;
    return `${shown} cannot be in a user id: use letters A–Z and a–z, digits, and _ . @ -`;
  }
  return undefined;
}

/** The name this browser decides as: the one kept, if it is still a user id, else DEFAULT_OPERATOR. */
export function loadOperator(): string {
  try {
    const kept = localStorage.getItem(KEY)?.trim();
    return kept !== undefined && operatorProblem(kept) === undefined ? kept : DEFAULT_OPERATOR;
  } catch {
    return DEFAULT_OPERATOR;
  }
}

/** Keeps `name` (a valid user id) for this browser; false when the browser does not let it be kept. */
export function saveOperator(name: string): boolean {
  try {
    if (name === DEFAULT_OPERATOR) localStorage.removeItem(KEY);
    else localStorage.setItem(KEY, name);
    return true;
  } catch {
    return false;
  }
}
