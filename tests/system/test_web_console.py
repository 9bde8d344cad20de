"""The web console in headless Chromium (Debian's package, driven by Selenium) against the
emulator stack: every function, the Gemini stub, the Firestore emulator with
firestore.rules loaded, and the console server (emulator/console.py).

The page reads Firestore directly as the signed-in user (mock user tokens, so the rules
are enforced) and calls the api with that user's token (AGENTGRAPH_AUTH=emulator).
Nothing here reloads the page after it opened a run: the statuses arrive by listeners.
Screenshots go to build/screenshots/<this test run>/ (printed at the end of the run).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from emulator import harness
from emulator.console import WEB_DIST
from emulator.stack import Stack
from tests.system.identities import emulator_token

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

PROJECT = "console-agentgraph"
TOOLS = Path(__file__).with_name("e2e_tools.py")
REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 90.0
T = TypeVar("T")

if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
    pytest.skip(
        "Debian's chromium and chromium-driver are needed (make test installs them)",
        allow_module_level=True,
    )


# ---- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(
    emulator_stack: harness.EmulatorStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    if not (WEB_DIST / "index.html").exists():
        pytest.fail("web/dist is not built: `make web` (make test builds it first)")
    with Stack(
        emulators=emulator_stack,
        project=PROJECT,
        tools=[str(TOOLS)],
        log_dir=tmp_path_factory.mktemp("console-logs"),
        sweep_every_s=None,
        console=True,
    ) as running:
        yield running


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """build/screenshots/<run>: one folder per test run, named by when it started."""
    folder = REPO / "build" / "screenshots" / time.strftime("%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Page:
    """One browser (its own profile, so its own signed-in user) on the console."""

    def __init__(self, url: str, screenshots: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in (
            "--headless=new",
            "--no-sandbox",  # root in CI
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
        ):
            options.add_argument(argument)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.url = url
        self.screenshots = screenshots

    def sign_in(self, uid: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver.get(self.url + "/#/runs")
        self.wait(lambda: self.driver.find_elements(By.ID, "uid"), "the sign-in form")
        self.driver.find_element(By.ID, "uid").send_keys(uid + "\n")
        self.wait(lambda: self.text("#signed-in-as"), "signed in")
        # Set once; a reload would lose it, so the tests can tell none happened.
        self.driver.execute_script("window.__noReload = true")

    def go(self, hash_path: str) -> None:
        self.driver.execute_script("location.hash = arguments[0]", hash_path)

    def wait(self, read: Callable[[], T], what: str, timeout: float = WAIT_S) -> T:
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(lambda _: read())
        except Exception as exc:
            self.shot("timeout-" + "-".join(what.split()))
            raise AssertionError(f"no {what} within {timeout} s") from exc

    def find(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def text(self, css: str) -> str:
        """In one script, so a view redrawn meanwhile cannot leave a stale element."""
        script = "const e = document.querySelector(arguments[0]); return e ? e.textContent : ''"
        return str(self.driver.execute_script(script, css)).strip()

    def statuses(self) -> dict[str, str]:
        script = (
            "return Object.fromEntries([...document.querySelectorAll('g.node')]"
            ".map(g => [g.dataset.nodeId, g.dataset.status]))"
        )
        return dict(self.driver.execute_script(script))

    def click(self, css: str) -> bool:
        """Find and click in one script (a live view may redraw between a find and a
        click); False when there is nothing to click yet, for `wait`."""
        script = "const e = document.querySelector(arguments[0]); if (e) e.click(); return !!e"
        return bool(self.driver.execute_script(script, css))

    def click_node(self, node_id: str) -> None:
        self.find(f'g.node[data-node-id="{node_id}"]')[0].click()

    def not_reloaded(self) -> bool:
        return bool(self.driver.execute_script("return window.__noReload === true"))

    def shot(self, name: str) -> Path:
        path = self.screenshots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def close(self) -> None:
        self.driver.quit()


@pytest.fixture
def open_page(stack: Stack, screenshots: Path) -> Iterator[Callable[[str], Page]]:
    pages: list[Page] = []

    def open_as(uid: str) -> Page:
        assert stack.console is not None
        page = Page(stack.console.url, screenshots)
        pages.append(page)
        page.sign_in(uid)
        return page

    yield open_as
    for page in pages:
        page.close()


def api_as(stack: Stack, uid: str) -> httpx.Client:
    return httpx.Client(
        base_url=stack.api_url,
        timeout=60,
        headers={"Authorization": f"Bearer {emulator_token(uid, PROJECT)}"},
    )


def start_run(
    stack: Stack, uid: str, graph: dict[str, Any], input: dict[str, Any] | None = None
) -> str:
    with api_as(stack, uid) as client:
        response = client.post("/runs", json={"graph": graph, "input": input or {}})
    assert response.status_code == 201, response.text
    return str(response.json()["run_id"])


def sleeper(node_id: str, seconds: float, after: list[str] | None = None) -> dict[str, Any]:
    return {
        "id": node_id,
        "after": after or [],
        "tool": "e2e_sleep",
        "args": {"seconds": seconds, "value": node_id},
    }


# ---- tests ----------------------------------------------------------------------------------


def test_a_20_node_run_started_from_the_page_turns_running_then_succeeded_without_a_reload(
    stack: Stack, open_page: Callable[[str], Page]
) -> None:
    graph = {
        "name": "twenty",
        "description": "Four ranks of five sleeping tools",
        "input": {
            "type": "object",
            "properties": {"label": {"type": "string", "description": "any text"}},
            "required": ["label"],
        },
        "nodes": [
            sleeper(f"n{i:02d}", 1.5, [f"n{i - 5:02d}"] if i >= 5 else []) for i in range(20)
        ],
    }
    with api_as(stack, "ada") as client:
        stored = client.post("/graphs", json=graph)
    assert stored.status_code in (200, 201), stored.text
    page = open_page("ada")

    page.go("#/start/twenty")
    page.wait(lambda: page.find("#in-label"), "the form generated from the input schema")
    page.find("#in-label")[0].send_keys("from the browser")
    page.find("#run-form button[type=submit]")[0].click()
    page.wait(lambda: len(page.statuses()) == 20, "the graph of 20 nodes")
    running = page.wait(
        lambda: [n for n, s in page.statuses().items() if s == "running"], "a running node"
    )
    page.shot("twenty-in-progress")
    # While it runs, its counts come from aggregation queries over its nodes.
    page.wait(
        lambda: "succeeded" in (t := page.text("#run-nodes")) and "active" in t,
        "counts of a running run: some succeeded, some active",
        120,
    )
    page.wait(lambda: set(page.statuses().values()) == {"succeeded"}, "every node succeeded", 120)
    page.wait(lambda: page.text("#run-status") == "succeeded", "the run succeeded")
    # Ended, its counts are the ones its end stored on the run document.
    page.wait(lambda: page.text("#run-nodes") == "20 (succeeded 20)", "the stored counts")
    page.shot("twenty-succeeded")

    assert running
    assert page.not_reloaded()


def test_a_streaming_agents_text_grows_on_screen(
    stack: Stack, open_page: Callable[[str], Page]
) -> None:
    words = " ".join(f"word{i}" for i in range(100))
    page = open_page("grace")  # first: the stream must not be over before the page is up
    run_id = start_run(
        stack,
        "grace",
        {
            "name": "stream",
            "nodes": [
                {
                    "id": "writer",
                    "model": "gemini-2.5-flash~chunkdelay=400ms",
                    "prompt": words,
                    "stream": True,
                }
            ],
        },
    )
    page.go(f"#/runs/{run_id}")
    page.wait(lambda: page.find('g.node[data-node-id="writer"]'), "the node")
    page.click_node("writer")

    first = page.wait(lambda: page.text("#node-partial"), "streamed text")
    page.shot("streaming")
    longer = page.wait(
        lambda: (t := page.text("#node-partial")) and len(t) > len(first) and t, "more text"
    )
    page.wait(lambda: page.text("#node-status") == "succeeded", "the agent finished")

    assert longer.startswith(first)
    assert f"[gemini-2.5-flash] {words}" in page.text("#node-output")
    assert page.not_reloaded()


def test_cancel_stops_the_run(stack: Stack, open_page: Callable[[str], Page]) -> None:
    run_id = start_run(
        stack,
        "linus",
        {"name": "cancel-me", "nodes": [sleeper("slow", 30), sleeper("next", 0.1, ["slow"])]},
    )
    page = open_page("linus")
    page.go(f"#/runs/{run_id}")
    page.wait(lambda: page.statuses().get("slow") == "running", "the slow node running")
    page.wait(lambda: page.click("#cancel"), "the Cancel button")

    page.wait(lambda: page.text("#run-status") == "cancelled", "the run cancelled")
    page.wait(lambda: page.statuses().get("next") == "cancelled", "the next node cancelled")
    page.shot("cancelled")
    assert page.statuses()["slow"] in ("running", "succeeded", "cancelled")


def test_a_failed_node_shows_its_error(stack: Stack, open_page: Callable[[str], Page]) -> None:
    run_id = start_run(
        stack,
        "barbara",
        {
            "name": "fails",
            "nodes": [
                {
                    "id": "broken",
                    "model": "gemini-2.5-flash~status=400",
                    "prompt": "this will not work",
                    "retry": {"max_attempts": 1},
                }
            ],
        },
    )
    page = open_page("barbara")
    page.go(f"#/runs/{run_id}")
    page.wait(lambda: page.statuses().get("broken") == "failed", "the node failed")
    page.click_node("broken")

    error = page.wait(lambda: page.text("#node-error"), "the node's error")
    page.shot("failed-node")
    assert "400" in error or "INVALID" in error.upper() or "error" in error.lower()
    page.wait(lambda: page.text("#run-status") == "failed", "the run failed")


def test_a_second_user_sees_neither_the_first_users_runs_nor_their_documents(
    stack: Stack, open_page: Callable[[str], Page]
) -> None:
    run_id = start_run(stack, "alice", {"name": "private", "nodes": [sleeper("secret", 0.1)]})
    alice = open_page("alice")
    alice.wait(lambda: alice.find(f'tr[data-run-id="{run_id}"]'), "alice's run in her list")

    bob = open_page("bob")
    bob.wait(lambda: bob.text("[role=status]") == "No runs yet.", "bob's empty list")
    assert not bob.find(f'tr[data-run-id="{run_id}"]')
    # Not just hidden: reading her run document, as bob, is refused by the rules.
    bob.go(f"#/runs/{run_id}")
    refused = bob.wait(lambda: "permission-denied" in bob.text("#run-message"), "a refusal")
    bob.shot("second-user-refused")
    with api_as(stack, "bob") as client:
        via_api = client.get(f"/runs/{run_id}")

    assert refused
    assert via_api.status_code == 404


def test_at_phone_width_the_run_fits_the_screen_and_a_node_opens_from_the_keyboard(
    stack: Stack, open_page: Callable[[str], Page]
) -> None:
    from selenium.webdriver.common.keys import Keys

    run_id = start_run(stack, "katherine", {"name": "phone", "nodes": [sleeper("only", 0.1)]})
    page = open_page("katherine")
    page.driver.set_window_size(390, 844)
    page.go(f"#/runs/{run_id}")
    page.wait(lambda: page.statuses().get("only") == "succeeded", "the node succeeded")
    node = page.find('g.node[data-node-id="only"]')[0]
    page.driver.execute_script("arguments[0].focus()", node)
    node.send_keys(Keys.ENTER)
    page.wait(lambda: page.text("#node-panel h2") == "only", "the node's panel")
    page.wait(lambda: "succeeded" in page.text("#node-timeline"), "the node's timeline")
    page.shot("phone-width")

    width = page.driver.execute_script("return document.documentElement.clientWidth")
    overflow = page.driver.execute_script("return document.documentElement.scrollWidth")
    assert overflow <= width


def test_approve_and_reject_a_node_waiting_for_approval_from_the_page(
    stack: Stack, open_page: Callable[[str], Page]
) -> None:
    def gated(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "nodes": [
                sleeper("draft", 0.1),
                {
                    "id": "review",
                    "after": ["draft"],
                    "approval": {"message": "publish {{ nodes.draft.output }}?"},
                },
                sleeper("publish", 0.1, ["review"]),
            ],
        }

    approved = start_run(stack, "margaret", gated("approve-me"))
    rejected = start_run(stack, "margaret", gated("reject-me"))
    page = open_page("margaret")

    page.go(f"#/runs/{approved}")
    page.wait(lambda: page.statuses().get("review") == "waiting_approval", "the node waiting")
    page.click_node("review")
    page.wait(lambda: page.text("#approval-question") == "publish draft?", "the question")
    page.shot("waiting-for-approval")
    page.find("#approval-comment")[0].send_keys("looks good")
    page.wait(lambda: page.click("#approve"), "the Approve button")
    page.wait(lambda: page.statuses().get("publish") == "succeeded", "the next node ran")
    page.wait(lambda: page.text("#run-status") == "succeeded", "the run succeeded")
    assert '"decision": "approved"' in page.text("#node-output")
    assert '"comment": "looks good"' in page.text("#node-output")

    page.go(f"#/runs/{rejected}")
    page.wait(lambda: page.statuses().get("review") == "waiting_approval", "the node waiting")
    page.click_node("review")
    page.wait(lambda: page.click("#reject"), "the Reject button")
    page.wait(lambda: page.text("#run-status") == "failed", "the run failed")
    page.wait(lambda: "ApprovalRejected" in page.text("#node-error"), "the rejection")
    page.wait(lambda: page.find("#redrive"), "the Redrive button of a failed run")
    page.shot("rejected")
    assert page.not_reloaded()


# ---- runs that grow, and the tool trace of an acting agent ---------------------------------


def counts_of(page: Page, node_id: str) -> str:
    """The live counts on a group's box, e.g. "running 2, succeeded 28" ('' before any)."""
    script = (
        "const g = document.querySelector(`g.node[data-node-id='${arguments[0]}']`);"
        "return g ? (g.dataset.counts || '') : ''"
    )
    return str(page.driver.execute_script(script, node_id))


def instances_listed(page: Page) -> list[tuple[str, str]]:
    script = (
        "return [...document.querySelectorAll('#group-items li')]"
        ".map(li => [li.querySelector('button').textContent, li.dataset.status])"
    )
    return [(label, status) for label, status in page.driver.execute_script(script)]


def test_a_30_item_map_is_one_box_whose_counts_reach_30_succeeded_and_lists_its_items(
    stack: Stack, open_page: Callable[[str], Page]
) -> None:
    page = open_page("hedy")  # first: the counts must move while the page watches
    run_id = start_run(
        stack,
        "hedy",
        {
            "name": "mapped",
            "nodes": [
                sleeper("first", 0.1),
                {
                    "id": "each",
                    "after": ["first"],
                    "map": "{{ input.numbers }}",
                    "max_concurrency": 5,
                    "tool": "e2e_sleep",
                    "args": {"seconds": 0.5, "value": "{{ item }}"},
                },
                sleeper("after", 0.1, ["each"]),
            ],
        },
        {"numbers": list(range(30))},
    )
    page.go(f"#/runs/{run_id}")
    page.wait(lambda: page.statuses().get("each") == "expanded", "the map expanded")
    page.wait(lambda: counts_of(page, "each"), "counts on the map's box")
    page.shot("map-in-progress")
    page.wait(lambda: counts_of(page, "each") == "succeeded 30", "30 items succeeded", 120)
    page.wait(lambda: page.text("#run-status") == "succeeded", "the run succeeded")

    # One box for the map: its 30 items are not drawn, and the graph's 3 nodes are.
    assert sorted(page.statuses()) == ["after", "each", "first"]
    page.click_node("each")
    page.wait(lambda: page.text("#group-counts") == "30 items: 30 succeeded", "the map's counts")
    page.find("#group-toggle")[0].click()
    listed = page.wait(
        lambda: len(instances_listed(page)) == 30 and instances_listed(page), "items"
    )
    page.driver.execute_script("document.getElementById('group').scrollIntoView()")
    page.shot("map-items")
    assert listed == [(f"each[{i}]", "succeeded") for i in range(30)]

    page.find('#group-items button[data-instance-id="each[7]"]')[0].click()
    page.wait(lambda: page.text("#node-panel h2") == "each[7]", "the item's panel")
    page.wait(lambda: page.text("#node-status") == "succeeded", "the item's status")
    page.wait(lambda: page.text("#node-output") == "7", "the item's output")
    assert page.not_reloaded()


def test_a_loops_iterations_are_stacked_under_it_with_their_statuses(
    stack: Stack, open_page: Callable[[str], Page]
) -> None:
    run_id = start_run(
        stack,
        "alan",
        {
            "name": "looped",
            "nodes": [
                {
                    "id": "draft",
                    "loop": {"until": "output >= 3", "max_iterations": 10},
                    "tool": "e2e_value",
                    "args": {"value": "{{ loop.iteration }}"},
                },
            ],
        },
    )
    page = open_page("alan")
    page.go(f"#/runs/{run_id}")
    page.wait(lambda: page.statuses().get("draft") == "succeeded", "the loop succeeded")
    page.click_node("draft")
    iterations = page.wait(
        lambda: len(instances_listed(page)) == 3 and instances_listed(page), "3 iterations"
    )
    page.wait(lambda: page.text("#group-counts") == "3 iterations: 3 succeeded", "the counts")
    page.wait(lambda: counts_of(page, "draft") == "succeeded 3", "counts on the loop's box")
    page.driver.execute_script("document.getElementById('group').scrollIntoView()")
    page.shot("loop-iterations")
    assert iterations == [(f"iteration {k}", "succeeded") for k in (1, 2, 3)]


def test_a_subgraphs_nodes_are_grouped_under_it_and_open_like_nodes(
    stack: Stack, open_page: Callable[[str], Page]
) -> None:
    run_id = start_run(
        stack,
        "barbara",
        {
            "name": "nested",
            "nodes": [
                {
                    "id": "research",
                    "nodes": [sleeper("search", 0.1), sleeper("sum", 0.1, ["search"])],
                },
                sleeper("report", 0.1, ["research"]),
            ],
        },
    )
    page = open_page("barbara")
    page.go(f"#/runs/{run_id}")
    page.wait(lambda: page.text("#run-status") == "succeeded", "the run succeeded")
    assert sorted(page.statuses()) == ["report", "research"]
    page.wait(lambda: counts_of(page, "research") == "succeeded 2", "counts on the subgraph's box")
    page.click_node("research")
    page.wait(lambda: page.text("#group-counts") == "2 nodes: 2 succeeded", "the counts")
    page.find("#group-toggle")[0].click()
    listed = page.wait(lambda: len(instances_listed(page)) == 2 and instances_listed(page), "nodes")
    assert listed == [("research/search", "succeeded"), ("research/sum", "succeeded")]

    page.find('#group-items button[data-instance-id="research/sum"]')[0].click()
    page.wait(lambda: page.text("#node-panel h2") == "research/sum", "the instance's panel")
    page.wait(lambda: page.text("#node-output") == '"sum"', "the instance's output")
    page.wait(lambda: "succeeded" in page.text("#node-timeline"), "the instance's timeline")
    page.shot("subgraph-node")


def test_a_map_of_subgraphs_counts_its_items_and_each_item_lists_its_own_nodes(
    stack: Stack, open_page: Callable[[str], Page]
) -> None:
    run_id = start_run(
        stack,
        "grace",
        {
            "name": "mapped-subgraph",
            "nodes": [
                {
                    "id": "per",
                    "map": "{{ input.numbers }}",
                    "nodes": [sleeper("a", 0.1), sleeper("b", 0.1, ["a"])],
                },
            ],
        },
        {"numbers": [0, 1, 2]},
    )
    page = open_page("grace")
    page.go(f"#/runs/{run_id}")
    page.wait(lambda: page.text("#run-status") == "succeeded", "the run succeeded")
    # Its 3 items, not the 6 nodes of their bodies.
    page.wait(lambda: counts_of(page, "per") == "succeeded 3", "counts on the map's box")
    page.click_node("per")
    page.find("#group-toggle")[0].click()
    page.wait(lambda: len(instances_listed(page)) == 3, "the 3 items")
    page.find('#group-items button[data-instance-id="per[1]"]')[0].click()
    page.wait(lambda: page.text("#node-panel h2") == "per[1]", "the item's panel")
    page.wait(lambda: page.text("#group-counts") == "2 nodes: 2 succeeded", "the item's counts")
    page.find("#group-toggle")[0].click()
    listed = page.wait(lambda: len(instances_listed(page)) == 2 and instances_listed(page), "nodes")
    page.shot("map-of-subgraphs-item")
    assert listed == [("per[1]/a", "succeeded"), ("per[1]/b", "succeeded")]


def test_an_acting_agents_tool_trace_shows_in_its_panel(
    stack: Stack, open_page: Callable[[str], Page]
) -> None:
    prompt = "\n".join(
        [
            "Look things up.",
            '@call 1 e2e_value {"value": {"answer": 42}}',
            '@call 1 e2e_fail {"message": "no such page"}',
            '@call 2 e2e_sleep {"seconds": 4, "value": "slept"}',
        ]
    )
    page = open_page("ada")  # first: the trace must grow while the page watches
    run_id = start_run(
        stack,
        "ada",
        {
            "name": "acting",
            "nodes": [
                {
                    "id": "agent",
                    "model": "gemini-2.5-flash",
                    "prompt": prompt,
                    "tools": ["e2e_value", "e2e_fail", "e2e_sleep"],
                }
            ],
        },
    )
    page.go(f"#/runs/{run_id}")
    page.wait(lambda: page.find('g.node[data-node-id="agent"]'), "the node")
    page.click_node("agent")
    script = (
        "return [...document.querySelectorAll('#node-steps li.step')]"
        ".map(li => [li.dataset.kind, li.textContent])"
    )
    # Live: the first turns show while the agent still runs (its last tool sleeps 4 s).
    page.wait(
        lambda: (
            page.text("#node-status") == "running" and len(page.driver.execute_script(script)) >= 4
        ),
        "steps while the agent runs",
    )
    page.wait(lambda: page.text("#node-status") == "succeeded", "the agent finished")
    steps = page.wait(
        lambda: len(found := page.driver.execute_script(script)) >= 6 and found, "6 steps"
    )
    page.driver.execute_script("document.getElementById('node-steps').scrollIntoView()")
    page.shot("tool-trace")

    kinds = [kind for kind, _ in steps]
    assert kinds == ["model", "tool", "tool", "model", "tool", "model"]
    first_turn, value, failed, second_turn, slept, last_turn = (text for _, text in steps)
    assert "model gemini-2.5-flash" in first_turn and "turn 1" in first_turn
    assert "tokens" in first_turn and "ms" in first_turn
    assert "tool e2e_value" in value and '"answer": 42' in value
    assert "tool e2e_fail · error" in failed and "no such page" in failed
    assert "turn 2" in second_turn and "tool e2e_sleep · ok" in slept
    assert "turn 3" in last_turn and '"slept"' in slept
    assert page.not_reloaded()
