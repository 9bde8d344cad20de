// firestore.rules, checked against the Firestore emulator named by FIRESTORE_EMULATOR_HOST.
// Run through run.sh, which starts the emulator. Each test reads as the rule it pins down.
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  assertFails,
  assertSucceeds,
  initializeTestEnvironment,
} from '@firebase/rules-unit-testing';
import * as F from 'firebase/firestore';
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

// The console's reads, exactly as the page makes them (web/src/queries.js).
import * as Q from '../../web/src/queries.js';

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
    await setDoc(doc(db, 'runs', RUN, 'nodes', 'review', 'steps', '000000'), { kind: 'model' });
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
    await assertSucceeds(getDocs(collection(db, 'runs', RUN, 'nodes', 'review', 'steps')));
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
    await assertFails(setDoc(doc(db, 'runs', RUN, 'nodes', 'review', 'steps', '000001'), { kind: 'tool' }));
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
    await assertFails(getDocs(collection(db, 'runs', RUN, 'nodes', 'review', 'steps')));
  });

  test("cannot list someone else's runs by querying on their uid", async () => {
    await assertFails(getDocs(query(collection(as(BOB), 'runs'), where('owner', '==', ALICE))));
  });
});

// Every read the web console makes, built by the console's own code (web/src/queries.js),
// with the listeners' one-shot equivalents (onSnapshot is checked by the same rules).
describe("the web console's queries", () => {
  const CONSOLE_RUN = 'run-console';
  const marker = { chunks: 2, prefix: 'output-0123456789abcdef' };

  beforeEach(async () => {
    await env.withSecurityRulesDisabled(async (ctx) => {
      const db = ctx.firestore();
      await setDoc(doc(db, 'runs', CONSOLE_RUN), {
        owner: ALICE, status: 'running', graph_name: 'demo', created_at: 2, graph_ref: marker,
      });
      await setDoc(doc(db, 'runs', 'run-older'), { owner: ALICE, status: 'succeeded', created_at: 1 });
      await setDoc(doc(db, 'runs', 'run-bob'), { owner: BOB, status: 'succeeded', created_at: 3 });
      for (let seq = 0; seq < 3; seq++) {
        await setDoc(doc(db, 'runs', CONSOLE_RUN, 'nodes', `n${seq}`), {
          owner: ALICE, run_id: CONSOLE_RUN, seq, status: 'running', output_ref: marker,
        });
      }
      await setDoc(doc(db, 'runs', CONSOLE_RUN, 'events', 'e1'), { node_id: 'n0', at: 1, kind: 'status' });
      // A run that grew: map `m` with two items, loop `l` with one iteration, subgraph `s`.
      for (const [id, status, seq] of [
        ['m[0]', 'succeeded', 1e17], ['m[1]', 'running', 1e17 + 1], ['l@1', 'running', 1e17 + 2],
        ['s/a', 'waiting', 1e17 + 3], ['m', 'expanded', 3], ['m[0]/x', 'running', 1e17 + 4],
      ]) {
        await setDoc(Q.nodeDoc(F, db, CONSOLE_RUN, id), {
          owner: ALICE, run_id: CONSOLE_RUN, node_id: id, seq, status, children: [id === 'm[0]/x' ? 'm[0]' : id.slice(0, 1)],
        });
      }
      await setDoc(doc(db, 'runs', CONSOLE_RUN, 'nodes', 'n0', 'steps', '000000'), {
        index: 0, kind: 'model', name: 'echo', at: 1, step_json: '{}', step_ref: null,
      });
      await setDoc(doc(db, 'runs', CONSOLE_RUN, 'nodes', 'n0', 'steps', '000001', 'chunks', `${marker.prefix}-0000`), { data: 'x' });
      for (const ref of [
        ...Q.chunkDocs(F, db, ['runs', CONSOLE_RUN], marker),
        ...Q.chunkDocs(F, db, ['runs', CONSOLE_RUN, 'nodes', 'n0'], marker),
      ]) {
        await setDoc(ref, { data: 'x' });
      }
    });
  });

  test('the owner may make every one of them', async () => {
    const db = as(ALICE);
    const page = await assertSucceeds(getDocs(Q.runsQuery(F, db, ALICE)));
    assert.deepEqual(page.docs.map((d) => d.id), [CONSOLE_RUN, 'run-older']);
    await assertSucceeds(getDocs(Q.runsQuery(F, db, ALICE, page.docs[0])));
    await assertSucceeds(getDoc(Q.runDoc(F, db, CONSOLE_RUN)));
    const window = await assertSucceeds(getDocs(Q.nodesWindowQuery(F, db, CONSOLE_RUN, 0)));
    assert.deepEqual(window.docs.map((d) => d.id).slice(0, 3), ['n0', 'n1', 'n2']);
    await assertSucceeds(getDocs(Q.nodesWindowQuery(F, db, CONSOLE_RUN, Q.NODE_WINDOW)));
    await assertSucceeds(getDoc(Q.nodeDoc(F, db, CONSOLE_RUN, 'n1')));
    await assertSucceeds(getDocs(Q.nodeEventsQuery(F, db, CONSOLE_RUN, 'n0')));
    // The window of the graph's own nodes leaves the instances out.
    const own = await assertSucceeds(getDocs(Q.nodesWindowQuery(F, db, CONSOLE_RUN, 0, 4)));
    assert.deepEqual(own.docs.map((d) => d.id), ['n0', 'n1', 'n2', 'm']);
    // A group's counts, its active instances, its pages; a node's steps and a step's chunks.
    const count = async (mark, status) =>
      (await assertSucceeds(F.getCountFromServer(Q.groupCountQuery(F, db, CONSOLE_RUN, mark === '/' ? 's' : mark === '@' ? 'l' : 'm', mark, status)))).data().count;
    assert.equal(await count('[', null), 2); // the items, not the nodes of their bodies
    assert.equal(await count('[', 'running'), 1);
    assert.equal(await count('[', 'succeeded'), 1);
    assert.equal(await count('@', null), 1);
    assert.equal(await count('/', 'waiting'), 1);
    const active = await assertSucceeds(getDocs(Q.groupActiveQuery(F, db, CONSOLE_RUN, 'm', '[')));
    assert.deepEqual(active.docs.map((d) => d.id).sort(), ['m[0]|x', 'm[1]']);
    const byId = await assertSucceeds(getDocs(Q.instancesByIdQuery(F, db, CONSOLE_RUN, ['m[0]', 'm[1]', 'm[2]'])));
    assert.deepEqual(byId.docs.map((d) => d.id).sort(), ['m[0]', 'm[1]']);
    const sub = await assertSucceeds(getDocs(Q.instancesPageQuery(F, db, CONSOLE_RUN, 's', '/')));
    assert.deepEqual(sub.docs.map((d) => d.get('node_id')), ['s/a']);
    await assertSucceeds(getDocs(Q.instancesPageQuery(F, db, CONSOLE_RUN, 's', '/', 's/a')));
    const steps = await assertSucceeds(getDocs(Q.nodeStepsQuery(F, db, CONSOLE_RUN, 'n0')));
    assert.deepEqual(steps.docs.map((d) => d.id), ['000000']);
    for (const ref of Q.chunkDocs(F, db, ['runs', CONSOLE_RUN, 'nodes', 'n0', 'steps', '000001'], { chunks: 1, prefix: marker.prefix })) {
      await assertSucceeds(getDoc(ref));
    }
    // A running run's counts and usage, from its nodes (web/src/counts.ts).
    const running = await assertSucceeds(F.getCountFromServer(Q.runNodesQuery(F, db, CONSOLE_RUN, 'running')));
    assert.equal(running.data().count, 6);
    const spent = await assertSucceeds(
      F.getAggregateFromServer(Q.runNodesQuery(F, db, CONSOLE_RUN, null), { usd: F.sum('usage.cost_usd') }),
    );
    assert.equal(spent.data().usd, 0);
    for (const ref of Q.chunkDocs(F, db, ['runs', CONSOLE_RUN], marker)) await assertSucceeds(getDoc(ref));
    for (const ref of Q.chunkDocs(F, db, ['runs', CONSOLE_RUN, 'nodes', 'n0'], marker)) {
      await assertSucceeds(getDoc(ref));
    }
  });

  test('another user is refused every one of them', async () => {
    const db = as(BOB);
    await assertFails(getDocs(Q.runsQuery(F, db, ALICE)));
    await assertFails(getDoc(Q.runDoc(F, db, CONSOLE_RUN)));
    await assertFails(getDocs(Q.nodesWindowQuery(F, db, CONSOLE_RUN, 0)));
    await assertFails(getDoc(Q.nodeDoc(F, db, CONSOLE_RUN, 'n1')));
    await assertFails(getDocs(Q.nodeEventsQuery(F, db, CONSOLE_RUN, 'n0')));
    await assertFails(getDocs(Q.nodesWindowQuery(F, db, CONSOLE_RUN, 0, 4)));
    await assertFails(F.getCountFromServer(Q.groupCountQuery(F, db, CONSOLE_RUN, 'm', '[', null)));
    await assertFails(F.getCountFromServer(Q.groupCountQuery(F, db, CONSOLE_RUN, 'm', '[', 'succeeded')));
    await assertFails(getDocs(Q.groupActiveQuery(F, db, CONSOLE_RUN, 'm', '[')));
    await assertFails(getDocs(Q.instancesByIdQuery(F, db, CONSOLE_RUN, ['m[0]'])));
    await assertFails(getDocs(Q.instancesPageQuery(F, db, CONSOLE_RUN, 's', '/')));
    await assertFails(getDocs(Q.nodeStepsQuery(F, db, CONSOLE_RUN, 'n0')));
    await assertFails(F.getCountFromServer(Q.runNodesQuery(F, db, CONSOLE_RUN, 'running')));
    await assertFails(F.getAggregateFromServer(Q.runNodesQuery(F, db, CONSOLE_RUN, null), { usd: F.sum('usage.cost_usd') }));
    for (const ref of Q.chunkDocs(F, db, ['runs', CONSOLE_RUN, 'nodes', 'n0'], marker)) {
      await assertFails(getDoc(ref));
    }
    // Their own list is allowed and holds none of Alice's runs.
    const own = await assertSucceeds(getDocs(Q.runsQuery(F, db, BOB)));
    assert.deepEqual(own.docs.map((d) => d.id), ['run-bob']);
  });

  test('an unauthenticated client is refused the list and the run', async () => {
    const db = env.unauthenticatedContext().firestore();
    await assertFails(getDocs(Q.runsQuery(F, db, ALICE)));
    await assertFails(getDoc(Q.runDoc(F, db, CONSOLE_RUN)));
    await assertFails(getDocs(Q.nodesWindowQuery(F, db, CONSOLE_RUN, 0)));
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
