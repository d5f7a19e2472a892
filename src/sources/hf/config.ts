// Where the Hub is and who we are to it, read the way the Hub's own clients read it:
// HF_ENDPOINT; the token from --token, HF_TOKEN, the file HF_TOKEN_PATH names, or the file
// the `hf` CLI writes ($HF_HOME/token); HF_HUB_OFFLINE.
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { DEFAULTS } from '../../core/defaults.js';
import { checkHeaderText, envFlag } from '../../core/validate.js';

export const DEFAULT_ENDPOINT = DEFAULTS.hub.endpoint;

export function hubEndpoint(env: NodeJS.ProcessEnv = process.env): string {
  const value = env.HF_ENDPOINT?.trim();
  return (value || DEFAULT_ENDPOINT).replace(/\/+$/, '');
}

/** HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface. */
export function hfHome(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HOME) return env.HF_HOME;
  const xdg = env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(xdg, 'huggingface');
}

function readToken(file: string): string | undefined {
  try {
    const token = readFileSync(file, 'utf8').trim();
    return token || undefined;
  } catch {
    return undefined;
  }
}

/** The token to send to the Hub, or undefined for anonymous access. */
export function hubToken(flag?: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (flag?.trim()) return checkHeaderText(flag.trim(), '--token');
  const variable = env.HF_TOKEN !== undefined ? 'HF_TOKEN' : 'HUGGING_FACE_HUB_TOKEN';
  const fromEnv = env[variable]?.trim();
  if (fromEnv) return checkHeaderText(fromEnv, variable);
  const file = env.HF_TOKEN_PATH || join(hfHome(env), 'token');
  const fromFile = readToken(file);
  return fromFile === undefined ? undefined : checkHeaderText(fromFile, `the token in ${file}`);
}

/** HF_HUB_OFFLINE=1 (or true/yes/on): no request to the Hub at all. */
export function hubOffline(env: NodeJS.ProcessEnv = process.env): boolean {
  return envFlag(env.HF_HUB_OFFLINE);
}
