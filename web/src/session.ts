/**
 * Who is signed in, and the Firestore handle that reads as them.
 *
 * Production: Firebase Auth with the Google provider; Firestore requests carry the user's
 * ID token and the rules (firestore.rules) decide, and the api gets the same ID token.
 *
 * Emulators: no internet, so no Google sign-in. The user types a uid; Firestore is
 * connected with `mockUserToken` (the emulator enforces the same rules against it) and the
 * api gets the same unsigned token, which it accepts only in AGENTGRAPH_AUTH=emulator mode,
 * itself refused outside the emulators. A Firestore instance keeps its token for life, so
 * each user gets a Firebase app of their own; signing out reloads the page.
 */

import { type FirebaseApp, initializeApp } from "firebase/app";
import {
  GoogleAuthProvider,
  type User,
  getAuth,
  onAuthStateChanged,
  signInWithPopup,
  signOut,
} from "firebase/auth";
import { type Firestore, connectFirestoreEmulator, getFirestore } from "firebase/firestore";
import type { ConsoleConfig } from "./config";

export interface Session {
  uid: string;
  label: string;
  db: Firestore;
  /** A fresh ID token for the api's Authorization header. */
  idToken(): Promise<string>;
  signOut(): Promise<void>;
}

const EMULATOR_UID_KEY = "agentgraph.emulatorUid";

function b64url(value: object): string {
  const bytes = new TextEncoder().encode(JSON.stringify(value));
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** The unsigned token the Firebase emulators use (the same shape the SDK's mock makes). */
export function emulatorToken(projectId: string, uid: string): string {
  const now = Math.floor(Date.now() / 1000);
  const payload = {
    iss: `https://securetoken.google.com/${projectId}`,
    aud: projectId,
    iat: now,
    exp: now + 3600,
    auth_time: now,
    sub: uid,
    user_id: uid,
    firebase: { sign_in_provider: "custom", identities: {} },
  };
  return `${b64url({ alg: "none", type: "JWT" })}.${b64url(payload)}.`;
}

function emulatorSession(config: ConsoleConfig, uid: string): Session {
  const emulator = config.emulator!;
  const app = initializeApp(config.firebase, `user-${uid}`);
  const db = getFirestore(app);
  connectFirestoreEmulator(db, emulator.firestoreHost, emulator.firestorePort, {
    mockUserToken: { sub: uid, user_id: uid },
  });
  return {
    uid,
    label: `${uid} (emulator)`,
    db,
    idToken: async () => emulatorToken(config.firebase.projectId, uid),
    signOut: async () => {
      sessionStorage.removeItem(EMULATOR_UID_KEY);
      location.hash = "#/runs";
      location.reload();
    },
  };
}

function googleSession(app: FirebaseApp, user: User): Session {
  const auth = getAuth(app);
  return {
    uid: user.uid,
    label: user.email ?? user.uid,
    db: getFirestore(app),
    idToken: () => user.getIdToken(),
    signOut: () => signOut(auth),
  };
}

/**
 * Resolves with a session once someone is signed in, rendering the sign-in form into
 * `root` until then. `onChange(null)` is called when the user signs out (production).
 */
export function signIn(
  config: ConsoleConfig,
  root: HTMLElement,
  onChange: (session: Session | null) => void,
): void {
  if (config.emulator) {
    const stored = sessionStorage.getItem(EMULATOR_UID_KEY);
    if (stored) {
      onChange(emulatorSession(config, stored));
      return;
    }
    root.replaceChildren();
    const form = document.createElement("form");
    form.className = "card signin";
    form.innerHTML = `
      <h1>Sign in (emulators)</h1>
      <p>The emulators need no Google account: pick a user id. Firestore and the api
      treat you as that user, and the security rules apply.</p>
      <label for="uid">User id</label>
      <input id="uid" name="uid" required pattern="[A-Za-z0-9_-]{1,64}" autocomplete="username" />
      <button type="submit">Sign in</button>`;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const uid = (form.elements.namedItem("uid") as HTMLInputElement).value.trim();
      sessionStorage.setItem(EMULATOR_UID_KEY, uid);
      onChange(emulatorSession(config, uid));
    });
    root.append(form);
    (form.querySelector("input") as HTMLInputElement).focus();
    return;
  }
  const app = initializeApp(config.firebase);
  const auth = getAuth(app);
  onAuthStateChanged(auth, (user) => {
    if (user) {
      onChange(googleSession(app, user));
      return;
    }
    onChange(null);
    root.replaceChildren();
    const card = document.createElement("div");
    card.className = "card signin";
    card.innerHTML = `<h1>Sign in</h1><p>Sign in to see and start your runs.</p>`;
    const button = document.createElement("button");
    button.textContent = "Sign in with Google";
    button.addEventListener("click", () => {
      void signInWithPopup(auth, new GoogleAuthProvider());
    });
    card.append(button);
    root.append(card);
    button.focus();
  });
}
