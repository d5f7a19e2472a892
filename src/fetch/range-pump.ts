// Writes one response body at its offsets in the part file until its task's (possibly
// shrinking) end, and checks its length. `task.pos` runs ahead of the disk by what is
// queued; after a failure it falls back to the last byte written, where a retry resumes.
// A stream body's buffers are copied into slabs; a direct body (the raw HTTP client) is read
// straight into them.
import { BadResponseError } from '../core/errors.js';
import type { BodySink, DirectBody, RangeBody, StreamBody } from '../sources/source.js';
import type { PartFile } from './part-file.js';
import type { RangeTask } from './scheduler.js';
import type { SlabPool } from './slab-pool.js';
import { SlabSink } from './slab-sink.js';
import { SlabWriter } from './slab-writer.js';

export interface PumpTarget {
  part: PartFile;
  slabs: SlabPool;
  /** The source's label, for errors. */
  label: string;
  /** Bytes [at, at + length) are on disk. */
  onWritten(at: number, length: number): void;
  /** The first bytes of this attempt arrived (the retry budget resets). */
  onProgress(): void;
  /**
   * Called as the response's remaining bytes shrink, with the task; the worker may open its
   * next request when the rest will take about one round trip.
   */
  onAdvance?(task: RangeTask): void;
}

export async function pump(body: RangeBody, task: RangeTask, target: PumpTarget): Promise<void> {
  const declaredEnd = body.end ?? Infinity;
  try {
    if ('stream' in body) await pumpStream(body, task, target, declaredEnd);
    else await pumpDirect(body, task, target);
  } finally {
    task.stalled();
  }
  const expectedEnd = Math.min(task.end, declaredEnd);
  if (expectedEnd !== Infinity && task.pos < expectedEnd) {
    throw new BadResponseError(`${target.label} closed the response at byte ${task.pos}, before byte ${expectedEnd}`);
  }
}

async function pumpStream(body: StreamBody, task: RangeTask, target: PumpTarget, declaredEnd: number): Promise<void> {
  const writer = new SlabWriter(target.part, target.slabs, task.pos, target.onWritten);
  let progressed = false;
  try {
    for await (const buffer of body.stream as AsyncIterable<Buffer>) {
      const limit = Math.min(task.end, declaredEnd);
      const take = Math.min(buffer.length, limit - task.pos);
      if (take > 0) {
        task.flowing();
        task.pos += take;
        if (!progressed) {
          progressed = true;
          target.onProgress();
        }
        await writer.push(take === buffer.length ? buffer : buffer.subarray(0, take));
        target.onAdvance?.(task);
      }
      if (take < buffer.length) {
        if (task.end < declaredEnd) break; // the back half went to another worker
        throw new BadResponseError(`${target.label} sent more bytes than the ${declaredEnd - body.start} it declared`);
      }
      if (task.pos >= task.end && task.end < declaredEnd) break;
    }
    await writer.flush();
  } catch (err) {
    task.pos = await writer.settle();
    throw err;
  }
}

/**
 * The source reads exactly the declared length (its Content-Length, checked against the
 * Content-Range) into regions of the slabs; the sink stops it where the task now ends.
 */
async function pumpDirect(body: DirectBody, task: RangeTask, target: PumpTarget): Promise<void> {
  const slabs = new SlabSink(target.part, target.slabs, task.pos, () => Math.min(task.end, body.end), target.onWritten);
  let progressed = false;
  const sink: BodySink = {
    region: () => slabs.region(),
    commit(length) {
      task.flowing();
      // The sink drops what lies past the task's end (it moved in after the read began).
      task.pos += Math.max(0, Math.min(length, Math.min(task.end, body.end) - task.pos));
      if (!progressed) {
        progressed = true;
        target.onProgress();
      }
      const more = slabs.commit(length);
      target.onAdvance?.(task);
      return more;
    },
    ready: () => slabs.ready(),
  };
  try {
    await body.readInto(sink);
    await slabs.flush();
  } catch (err) {
    task.pos = await slabs.settle();
    throw err;
  }
}
