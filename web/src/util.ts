/** Small DOM and formatting helpers shared by the views. */

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: (Node | string | null | undefined)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

export function when(epochSeconds: number | null | undefined): string {
  if (!epochSeconds) return "–";
  return new Date(epochSeconds * 1000).toLocaleString();
}

export function usd(value: number | null | undefined): string {
  const v = value ?? 0;
  return v === 0 ? "$0" : v < 0.01 ? `$${v.toFixed(6)}` : `$${v.toFixed(4)}`;
}

export function pretty(jsonText: string | null | undefined): string {
  if (jsonText == null) return "–";
  try {
    return JSON.stringify(JSON.parse(jsonText), null, 2);
  } catch {
    return jsonText;
  }
}

/** Unsubscribe functions of the current view, all called when the view changes. */
export class Listeners {
  private stops: (() => void)[] = [];
  add(stop: () => void): void {
    this.stops.push(stop);
  }
  stopAll(): void {
    for (const stop of this.stops.splice(0)) stop();
  }
}

/**
 * Runs `work` on `request()` at most once every `everyMs`: requests made while it runs,
 * or sooner than that after it started, are coalesced into one later run. (Counting a
 * run's nodes is a few aggregation queries: a burst of changes must not send a burst.)
 */
export class Throttled {
  private last = 0;
  private busy = false;
  private again = false;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;

  constructor(
    private readonly everyMs: number,
    private readonly work: () => Promise<unknown>,
  ) {}

  request(): void {
    if (this.stopped) return;
    if (this.busy) {
      this.again = true;
      return;
    }
    const wait = this.last + this.everyMs - Date.now();
    if (wait > 0) {
      this.timer ??= setTimeout(() => {
        this.timer = null;
        this.request();
      }, wait);
      return;
    }
    this.busy = true;
    this.last = Date.now();
    this.work()
      .catch(() => undefined)
      .finally(() => {
        this.busy = false;
        if (this.again) {
          this.again = false;
          this.request();
        }
      });
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
