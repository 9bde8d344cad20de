/**
 * Where the console finds Firebase and the api: `config.json` beside index.html, written by
 * whoever serves the page (the emulator stack, or infra/deploy.sh for Firebase Hosting), so
 * one build runs everywhere and no project id or URL is baked into the bundle.
 */

export interface ConsoleConfig {
  /** Firebase web config (apiKey, authDomain, projectId, appId...). */
  firebase: { projectId: string; apiKey?: string; authDomain?: string; appId?: string };
  /** The api function's URL, without a trailing slash. */
  apiUrl: string;
  /** Present on the emulators: Firestore's host and port; sign-in then uses mock tokens. */
  emulator?: { firestoreHost: string; firestorePort: number } | null;
}

export async function loadConfig(): Promise<ConsoleConfig> {
  const response = await fetch("./config.json", { cache: "no-store" });
  if (!response.ok) {
    throw new Error(`config.json answered ${response.status}: the server must provide it`);
  }
  const config = (await response.json()) as ConsoleConfig;
  config.apiUrl = config.apiUrl.replace(/\/+$/, "");
  return config;
}
