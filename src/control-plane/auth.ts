// Bearer-token checks for the control plane, compared in constant time so a caller cannot
// learn the token a byte at a time from response timings.
import { createHash, timingSafeEqual } from 'node:crypto';
import { UnauthorizedError } from '../core/errors.js';

export class TokenCheck {
  private readonly expected: Buffer;

  constructor(token: string) {
    this.expected = createHash('sha256').update(token).digest();
  }

  /** Throws UnauthorizedError unless `header` is `Bearer <token>`. */
  verify(header: string | undefined): void {
    const presented = header?.startsWith('Bearer ') ? header.slice('Bearer '.length) : undefined;
    // Hashing first gives equal lengths, which timingSafeEqual needs, whatever was sent.
    const actual = createHash('sha256')
      .update(presented ?? '')
      .digest();
    if (presented === undefined || !timingSafeEqual(actual, this.expected)) {
      throw new UnauthorizedError('missing or wrong bearer token', {
        hint: 'send Authorization: Bearer <token> (the control plane was started with --token-file)',
      });
    }
  }
}
