// A one-line progress bar on stderr (step, rate, ETA), redrawn in place on a terminal and printed
// every 10% otherwise, so logs of CI and job workers stay short.
export class ProgressBar {
  private readonly started = Date.now();
  private lastPct = -1;

  constructor(
    private readonly label: string,
    private readonly out: NodeJS.WriteStream = process.stderr,
  ) {}

  update(done: number, total: number, extra = ''): void {
    const secs = (Date.now() - this.started) / 1000;
    const rate = done / Math.max(secs, 1e-9);
    const eta = rate > 0 ? (total - done) / rate : 0;
    const pct = Math.floor((100 * done) / total);
    const width = 24;
    const fill = Math.round((width * done) / total);
    const line = `${this.label} [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${done}/${total} ${rate >= 1 ? `${rate.toFixed(2)} it/s` : `${(1 / Math.max(rate, 1e-9)).toFixed(2)} s/it`} ETA ${formatSeconds(eta)}${extra ? ' ' + extra : ''}`;
    if (this.out.isTTY) {
      this.out.write(`\r${line}\x1b[K${done === total ? '\n' : ''}`);
    } else if (Math.floor(pct / 10) !== Math.floor(this.lastPct / 10) || done === total) {
      this.out.write(line + '\n');
    }
    this.lastPct = pct;
  }
}

export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const m = Math.floor(s / 60);
  const sec = Math.round(s % 60);
  return m > 0 ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}
