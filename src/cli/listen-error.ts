// What a server command says when it cannot bind its address: one ListenError (exit 7) with
// the reason in words and how to choose another address, instead of a raw EADDRINUSE.
import { ListenError } from '../core/errors.js';

export function listenError(err: unknown, listen: string, hint: string): Error {
  const code = (err as { code?: string }).code;
  if (code === 'EADDRINUSE') return new ListenError(`${listen} is already in use`, { hint, cause: err });
  if (code === 'EACCES' || code === 'EPERM')
    return new ListenError(`not allowed to listen on ${listen}`, { hint, cause: err });
  if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND')
    return new ListenError(`${listen} is not an address of this machine`, { hint, cause: err });
  return err instanceof Error ? err : new Error(String(err));
}
