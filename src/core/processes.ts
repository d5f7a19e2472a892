// Whether a process on this machine is still running, for locks and markers that carry the
// pid of their owner: a kill -9 leaves them behind, and the pid says they are abandoned.

export function isProcessAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to another user.
    return (err as { code?: string }).code === 'EPERM';
  }
}
