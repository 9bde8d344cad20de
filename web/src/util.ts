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
