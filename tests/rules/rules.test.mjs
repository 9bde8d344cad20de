// firestore.rules, checked against the Firestore emulator named by FIRESTORE_EMULATOR_HOST.
// Run through run.sh, which starts the emulator. Each test reads as the rule it pins down.
import { after, before, beforeEach, describe, test } from 'node:test';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  assertFails,
  assertSucceeds,
  initializeTestEnvironment,
} from '@firebase/rules-unit-testing';
import {
  addDoc,
  collection,
  deleteDoc,
  doc,
  getDoc,
  getDocs,
  query,
  setDoc,
  setLogLevel,
  updateDoc,
  where,
} from 'firebase/firestore';

// Denied writes are the expected outcome here; keep the SDK from logging each one.
setLogLevel('silent');

const here = dirname(fileURLToPath(import.meta.url));
const rulesPath = resolve(here, '..', '..', 'firestore.rules');

const emulator = process.env.FIRESTORE_EMULATOR_HOST;
if (!emulator) {
  throw new Error(
    'FIRESTORE_EMULATOR_HOST is not set: run tests/rules/run.sh, which starts the emulator, ' +
      'or export FIRESTORE_EMULATOR_HOST=127.0.0.1:<port> of a running one.',
  );
}
const [host, port] = [emulator.slice(0, emulator.lastIndexOf(':')), Number(emulator.slice(emulator.lastIndexOf(':') + 1))];

const ALICE = 'alice';
const BOB = 'bob';
const RUN = 'run-1';

let env;

before(async () => {
  env = await initializeTestEnvironment({
    projectId: 'agentgraph-rules-test',
    firestore: { rules: readFileSync(rulesPath, 'utf8'), host, port },
  });
});

after(async () => {
  await env?.cleanup();
});

// Alice's run with one node, one chunk and one event; plus data no client may read.
beforeEach(async () => {
  await env.clearFirestore();
  await env.withSecurityRulesDisabled(async (ctx) => {
    const db = ctx.firestore();
    await setDoc(doc(db, 'runs', RUN), { owner: ALICE, status: 'running', graph_name: 'demo' });
    await setDoc(doc(db, 'runs', RUN, 'nodes', 'review'), { status: 'succeeded', attempt: 1 });
    await setDoc(doc(db, 'runs', RUN, 'nodes', 'review', 'chunks', '0'), { data: 'part' });
    await setDoc(doc(db, 'runs', RUN, 'chunks', 'input-0'), { data: 'part' });
    await setDoc(doc(db, 'runs', RUN, 'events', 'e1'), { type: 'status', status: 'running' });
    await setDoc(doc(db, 'runs', RUN, 'nodes', 'review', 'arrivals', 'extract'), { at: 1 });
    await setDoc(doc(db, 'runs', 'run-2'), { owner: BOB, status: 'pending' });
    await setDoc(doc(db, 'graphs', 'demo'), { name: 'demo' });
    await setDoc(doc(db, 'graphs', 'demo', 'versions', '1'), { spec: {} });
    await setDoc(doc(db, 'idempotency', 'k1'), { run_id: RUN });
  });
});

const as = (uid, claims = {}) => env.authenticatedContext(uid, claims).firestore();

describe('the owner of a run', () => {
  test('reads the run', async () => {
    await assertSucceeds(getDoc(doc(as(ALICE), 'runs', RUN)));
  });

  test('reads its nodes, their chunks, its own chunks and its events', async () => {
    const db = as(ALICE);
    await assertSucceeds(getDoc(doc(db, 'runs', RUN, 'chunks', 'input-0')));
    await assertSucceeds(getDoc(doc(db, 'runs', RUN, 'nodes', 'review')));
    await assertSucceeds(getDocs(collection(db, 'runs', RUN, 'nodes')));
    await assertSucceeds(getDoc(doc(db, 'runs', RUN, 'nodes', 'review', 'chunks', '0')));
    await assertSucceeds(getDocs(collection(db, 'runs', RUN, 'events')));
  });

  test('lists runs only with a query on owner == their uid', async () => {
    const db = as(ALICE);
    await assertSucceeds(getDocs(query(collection(db, 'runs'), where('owner', '==', ALICE))));
    await assertFails(getDocs(collection(db, 'runs')));
  });

  test('cannot create, update or delete the run, its nodes or its events', async () => {
    const db = as(ALICE);
    await assertFails(setDoc(doc(db, 'runs', 'new-run'), { owner: ALICE }));
    await assertFails(addDoc(collection(db, 'runs'), { owner: ALICE }));
    await assertFails(updateDoc(doc(db, 'runs', RUN), { status: 'cancelled' }));
    await assertFails(deleteDoc(doc(db, 'runs', RUN)));
    await assertFails(setDoc(doc(db, 'runs', RUN, 'nodes', 'review'), { status: 'failed' }));
    await assertFails(updateDoc(doc(db, 'runs', RUN, 'nodes', 'review'), { status: 'failed' }));
    await assertFails(deleteDoc(doc(db, 'runs', RUN, 'nodes', 'review')));
    await assertFails(setDoc(doc(db, 'runs', RUN, 'nodes', 'review', 'chunks', '1'), { data: 'x' }));
    await assertFails(addDoc(collection(db, 'runs', RUN, 'events'), { type: 'forged' }));
    await assertFails(deleteDoc(doc(db, 'runs', RUN, 'events', 'e1')));
  });

  test('cannot read the fan-in arrivals of its nodes', async () => {
    await assertFails(getDoc(doc(as(ALICE), 'runs', RUN, 'nodes', 'review', 'arrivals', 'extract')));
  });
});

describe('another signed-in user', () => {
  test('is denied the run', async () => {
    await assertFails(getDoc(doc(as(BOB), 'runs', RUN)));
  });

  test('is denied its nodes, chunks and events', async () => {
    const db = as(BOB);
    await assertFails(getDoc(doc(db, 'runs', RUN, 'chunks', 'input-0')));
    await assertFails(getDoc(doc(db, 'runs', RUN, 'nodes', 'review')));
    await assertFails(getDocs(collection(db, 'runs', RUN, 'nodes')));
    await assertFails(getDoc(doc(db, 'runs', RUN, 'nodes', 'review', 'chunks', '0')));
    await assertFails(getDocs(collection(db, 'runs', RUN, 'events')));
  });

  test("cannot list someone else's runs by querying on their uid", async () => {
    await assertFails(getDocs(query(collection(as(BOB), 'runs'), where('owner', '==', ALICE))));
  });
});

describe('an unauthenticated client', () => {
  test('is denied runs, nodes and events', async () => {
    const db = env.unauthenticatedContext().firestore();
    await assertFails(getDoc(doc(db, 'runs', RUN)));
    await assertFails(getDocs(collection(db, 'runs')));
    await assertFails(getDoc(doc(db, 'runs', RUN, 'nodes', 'review')));
    await assertFails(getDocs(collection(db, 'runs', RUN, 'events')));
  });

  test('cannot write anything', async () => {
    const db = env.unauthenticatedContext().firestore();
    await assertFails(setDoc(doc(db, 'runs', 'anon'), { owner: 'anon' }));
    await assertFails(setDoc(doc(db, 'graphs', 'anon'), { name: 'anon' }));
  });
});

describe('an admin (custom claim admin == true)', () => {
  test("reads other users' runs, nodes, chunks and events", async () => {
    const db = as('root', { admin: true });
    await assertSucceeds(getDoc(doc(db, 'runs', RUN)));
    await assertSucceeds(getDocs(collection(db, 'runs')));
    await assertSucceeds(getDoc(doc(db, 'runs', RUN, 'nodes', 'review')));
    await assertSucceeds(getDoc(doc(db, 'runs', RUN, 'nodes', 'review', 'chunks', '0')));
    await assertSucceeds(getDocs(collection(db, 'runs', RUN, 'events')));
  });

  test('cannot write either', async () => {
    const db = as('root', { admin: true });
    await assertFails(updateDoc(doc(db, 'runs', RUN), { status: 'cancelled' }));
    await assertFails(deleteDoc(doc(db, 'runs', RUN, 'nodes', 'review')));
    await assertFails(setDoc(doc(db, 'graphs', 'demo'), { name: 'changed' }));
  });

  test('a claim admin == false grants nothing extra', async () => {
    await assertFails(getDoc(doc(as(BOB, { admin: false }), 'runs', RUN)));
  });
});

describe('data no client may read', () => {
  for (const [label, path] of [
    ['graphs', ['graphs', 'demo']],
    ['graph versions', ['graphs', 'demo', 'versions', '1']],
    ['idempotency keys', ['idempotency', 'k1']],
    ['arrivals', ['runs', RUN, 'nodes', 'review', 'arrivals', 'extract']],
  ]) {
    test(`${label} are denied to a signed-in user, even the run's owner`, async () => {
      await assertFails(getDoc(doc(as(ALICE), ...path)));
    });
  }

  test('graphs stay server-side even for an admin (admin reads runs, not internals)', async () => {
    await assertFails(getDoc(doc(as('root', { admin: true }), 'graphs', 'demo')));
  });
});
