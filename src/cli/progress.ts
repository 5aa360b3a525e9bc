import { humanSize } from './output.js';

/**
 * A one-line progress bar on a TTY (stderr), redrawn at most every 100 ms; silent when stderr is not
 * a terminal, so logs and pipes stay clean.
 */
export class ProgressBar {
  private last = 0;
  private readonly start = Date.now();
  private readonly tty: boolean;

  constructor(
    private readonly label: string,
    private readonly out: NodeJS.WriteStream = process.stderr,
  ) {
    this.tty = Boolean(out.isTTY);
  }

  update(done: number, total: number, what = ''): void {
    if (!this.tty) return;
    const now = Date.now();
    if (now - this.last < 100 && done < total) return;
    this.last = now;
    const width = 30;
    const frac = total > 0 ? Math.min(1, done / total) : 1;
    const fill = Math.round(frac * width);
    const rate = done / Math.max(0.001, (now - this.start) / 1000);
    const line = `${this.label} [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${(frac * 100).toFixed(0).padStart(3)}% ${humanSize(done)}/${humanSize(total)} ${humanSize(rate)}/s ${what}`;
    this.out.write(
      `\r${line.slice(0, (this.out.columns ?? 120) - 1).padEnd(Math.min(119, (this.out.columns ?? 120) - 1))}`,
    );
  }

  finish(): void {
    if (this.tty) this.out.write('\n');
  }
}
