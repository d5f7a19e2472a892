// The guard of a paged listing (the Hub's tree pages, S3's ListObjectsV2): a next page named
// before (a link or continuation token given again: A, B, A, …) or more pages than any
// listing has is a listing that never ends, so it fails instead of looping for ever.
import { BadResponseError } from '../core/errors.js';

export interface PageGuardOptions {
  /** Pages followed at most. */
  maxPages: number;
  /** The listing as messages name it ("the listing of s3://bucket/prefix"). */
  listing: string;
  /** What each page is named by, as "goes back to ___ it gave before" says it ("a page"). */
  named: string;
  /** What to do about a listing that pages wrongly. */
  hint: string;
  /** The first page's name, when it has one (a URL; the first S3 page has no token). */
  first?: string;
}

export class PageGuard {
  private readonly seen = new Set<string>();
  /** Pages read so far: the first one, and each next one followed. */
  private pages = 1;

  constructor(private readonly options: PageGuardOptions) {
    if (options.first !== undefined) this.seen.add(options.first);
  }

  /**
   * Checks the next page, named `next`, before it is asked for; throws a BadResponseError if
   * it was named before or if maxPages were read. `shown`: `next` as the message shows it
   * (none: not shown); `url`: the request whose answer named it.
   */
  follow(next: string, context: { shown?: string; url?: string } = {}): void {
    const { listing, named, hint, maxPages } = this.options;
    if (this.seen.has(next)) {
      const shown = context.shown === undefined ? '' : ` (${context.shown})`;
      throw new BadResponseError(`${listing} goes back to ${named} it gave before${shown}: it would never end`, {
        url: context.url,
        hint,
      });
    }
    if (this.pages >= maxPages) {
      throw new BadResponseError(`${listing} goes on past ${maxPages} pages: not following it further`, {
        url: context.url,
        hint,
      });
    }
    this.seen.add(next);
    this.pages++;
  }
}
