// Ctrl-C, SIGTERM and SIGHUP (the terminal or ssh session went away): the first asks the
// running operation to stop cleanly (journal saved, temporary files removed, exit 130); a
// second one exits at once.
export interface Interrupt {
  signal: AbortSignal;
  /** Called before the "stopping" line is written: erases the progress bar; true if it did. */
  beforeMessage?: () => boolean;
  dispose(): void;
}

export function onInterrupt(): Interrupt {
  const controller = new AbortController();
  const interrupt: Interrupt = {
    signal: controller.signal,
    dispose() {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
      process.off('SIGHUP', handler);
    },
  };
  function handler(sig: NodeJS.Signals): void {
    if (controller.signal.aborted) process.exit(130);
    // The terminal echoed "^C" where the cursor was: start the message on a line of its own.
    const erased = interrupt.beforeMessage?.() ?? false;
    process.stderr.write(`${!erased && process.stderr.isTTY ? '\n' : ''}loom: ${sig}: stopping\n`);
    controller.abort();
  }
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  process.on('SIGHUP', handler);
  return interrupt;
}
