// What names a node to its fleet, checked the same way by the agent and by a fetch that
// takes part in the fleet: its id, its zone and the control plane's URL. A bad one is a usage
// error at once, not a fetch that silently skips its peers.
import { DEFAULTS } from '../core/defaults.js';
import { UsageError } from '../core/errors.js';
import { NODE_ID } from '../core/validate.js';

const ZONE = /^[A-Za-z0-9._-]{1,64}$/;

export function checkNodeId(nodeId: string): string {
  if (!NODE_ID.test(nodeId))
    throw new UsageError(`node id "${nodeId}" is not valid`, {
      hint: 'use 1-128 letters, digits and . _ : - (--node-id, LOOM_NODE_ID)',
    });
  return nodeId;
}

export function checkZone(zone: string | undefined): string | undefined {
  if (zone !== undefined && !ZONE.test(zone))
    throw new UsageError(`zone "${zone}" may contain only letters, digits and . _ - (64 at most)`);
  return zone;
}

/** An example control-plane URL for messages: on the port `loom control-plane` listens on by default. */
export const CONTROL_PLANE_EXAMPLE = `http://10.0.0.5:${DEFAULTS.controlPlane.listen.split(':').pop()!}`;

/**
 * An http(s) URL given to `flag` (a flag, or the variable it came from), without trailing
 * slashes. `example` is shown when it is not a URL: an agent's address by default.
 */
export function checkHttpUrl(
  value: string,
  flag: string,
  example = `http://10.0.0.5:${DEFAULTS.agent.listen.split(':').pop()!}`,
): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new UsageError(`${flag} "${value}" is not a URL`, { hint: `e.g. ${example}` });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new UsageError(`${flag} "${value}" must be an http or https URL`);
  return value.replace(/\/+$/, '');
}

/** Whether an answer refuses this node's credentials (a wrong or missing token). */
export function isRefusal(status: number | undefined): boolean {
  return status === 401 || status === 403;
}

/**
 * The control plane's refusal of this node's token (a status isRefusal accepts), as the agent
 * and `loom fetch` say it: its code (403 forbidden, 401 unauthorized), why, and what to do.
 */
export function tokenRefusal(
  status: number,
  message: string,
  nodeId: string,
  tokenGiven: boolean,
): { code: 'LOOM_ERR_FORBIDDEN' | 'LOOM_ERR_UNAUTHORIZED'; reason: string; hint: string } {
  return {
    code: status === 403 ? 'LOOM_ERR_FORBIDDEN' : 'LOOM_ERR_UNAUTHORIZED',
    reason: `the control plane refused this node's token (HTTP ${status}: ${message})`,
    hint: tokenHint(nodeId, tokenGiven),
  };
}

/**
 * What to do when the control plane refuses this node's token (401/403): which flag or
 * variable to give, and which token it must hold. Said by the agent and by `loom fetch`.
 */
function tokenHint(nodeId: string, tokenGiven: boolean): string {
  const token = `node ${nodeId}'s token (hex HMAC-SHA256 of the cluster secret and "loom-node:${nodeId}") or the admin token`;
  return tokenGiven
    ? `check that --token-file (or LOOM_TOKEN) holds ${token}, and that --node-id (or LOOM_NODE_ID) is the node it was made for`
    : `give --token-file FILE (or LOOM_TOKEN) with ${token}`;
}
