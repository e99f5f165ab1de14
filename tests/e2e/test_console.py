"""The operator console in a real headless Chromium (Debian's, driven by Playwright; no
browser is downloaded) against the real API and workers as processes.

Each page's screenshot goes to ``$EMBEDSTREAM_TEST_ARTIFACTS/console`` (default
``test-artifacts/console/``, not committed)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis.asyncio as redis
from bench.corpus import generate

from embedstream.config import ConsumerSettings
from embedstream.streams.names import StreamNames
from tests.e2e.conftest import REDIS_URL, Stack
from tests.support.dead_letters import add_poison, dead_letter_all

CHROMIUM = os.environ.get("EMBEDSTREAM_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = (
    Path(
        os.environ.get(
            "EMBEDSTREAM_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"
        )
    )
    / "console"
)
WAIT_MS = 5_000

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason=f"no Chromium at {CHROMIUM} (scripts/setup.sh installs Debian's chromium)",
    ),
]

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[sync_api.Browser]:
    # launch() gives every run a fresh temporary profile (--user-data-dir)
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


def open_console(browser: sync_api.Browser, stack: Stack) -> sync_api.Page:
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # the console's own errors; a refused request (the wrong key's 401) is expected
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.goto(f"{stack.url}/console")
    page.errors = errors  # type: ignore[attr-defined]
    return page


def sign_in(page: sync_api.Page, credential: str) -> None:
    page.fill("#credential", credential)
    page.click("#sign-in button[type=submit]")


def shot(page: sync_api.Page, name: str) -> None:
    """A screenshot of the page, after checking that it shows no unrendered value."""
    text = page.inner_text("main")
    for leak in ("[object", "undefined", "NaN"):
        assert leak not in text, f"{name}: the page shows {leak!r}:\n{text}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def cell(page: sync_api.Page, names: StreamNames, stream: str, group: str, field: str) -> object:
    return page.locator(f'tr[data-group="{stream}|{group}"] td[data-field="{field}"]')


def post(stack: Stack, documents: list[dict[str, object]]) -> str:
    response = httpx.post(
        f"{stack.url}/v1/documents", json={"documents": documents}, headers=stack.headers
    )
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def wait_for_job(stack: Stack, job: str, state: str, within: float = 180) -> None:
    deadline = time.monotonic() + within
    while True:
        body = httpx.get(f"{stack.url}/v1/jobs/{job}", headers=stack.headers).json()
        if body["state"] == state:
            return
        assert time.monotonic() < deadline, (body, stack.logs())
        time.sleep(0.3)


def make_dead_letters(stack: Stack, *, poison: int) -> None:
    """What the embed stage does on a failure it gives up on (the job is marked failed,
    the command settled), by the real runtime; and ``poison`` undecodable entries."""

    async def run() -> None:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            settings = ConsumerSettings(consumer_name="flaky-embedder", block_ms=50)
            await dead_letter_all(
                client, stack.names, settings, error="model server timed out", bookkeeping=True
            )
            for n in range(poison):
                await add_poison(client, stack.names, n)
            await dead_letter_all(client, stack.names, settings)
        finally:
            await client.aclose()

    # Playwright's sync API runs an event loop in this thread: run ours in another
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result(timeout=60)


def test_console_lag_dead_letters_replay_and_jobs(stack: Stack, browser: sync_api.Browser) -> None:
    names = stack.names
    stack.start("api", "api")
    stack.wait_ready()
    page = open_console(browser, stack)

    # sign in: a wrong key is refused with the API's reason, the admin key gets in
    expect(page.locator("#sign-in")).to_be_visible()
    shot(page, "01-sign-in")
    sign_in(page, "es_0000000000000000_wrongwrongwrongwrongwrongwrong")
    expect(page.locator("#sign-in .banner.error")).to_contain_text("refused")
    sign_in(page, stack.api_key)
    expect(page.locator("#who")).to_contain_text("admin of tenant bench")
    page.goto(f"{stack.url}/console/#/streams?every=1")

    # a document whose embedding fails for good, and two poison entries: dead letters
    failed_job = post(stack, [{"id": "replay-me", "text": "a document to replay later"}])
    make_dead_letters(stack, poison=2)

    # entries added with no worker running: the embedder's lag rises
    texts = generate(30, seed=7, min_words=20, max_words=60)
    job = post(stack, [{"id": f"doc-{n:02d}", "text": t} for n, t in enumerate(texts)])
    lag = cell(page, names, names.ingest, "embedder", "lag")
    expect(lag).to_have_text("30")
    expect(page.locator("#streams-status .banner")).to_contain_text("no consumer seen")
    shot(page, "02-streams-lag")

    # real workers drain it: the lag falls to 0 and nothing stays pending
    stack.start_worker("embed", "embed-0")
    stack.start_worker("index", "index-0")
    stack.start_worker("persist", "persist-0")
    expect(lag).to_have_text("0", timeout=180_000)
    wait_for_job(stack, job, "completed")
    for stream, group in names.stage_groups():
        expect(cell(page, names, stream, group, "lag")).to_have_text("0")
        expect(cell(page, names, stream, group, "pending")).to_have_text("0")
    chart = page.locator(f'tr[data-group="{names.ingest}|embedder"] svg polyline.lag')
    expect(chart).to_have_count(1)
    shot(page, "03-streams-drained")

    # the dead letters: open the failed document's, read its error and payload
    page.goto(f"{stack.url}/console/#/dead-letters")
    rows = page.locator("#dlq-table tbody tr")
    expect(rows).to_have_count(1)  # the poison has no tenant: only an operator sees it
    rows.first.click()
    expect(page.locator("#dlq-error")).to_have_text("model server timed out")
    expect(page.locator("#dlq-payload")).to_contain_text('"document_id": "replay-me"')
    shot(page, "04-dead-letter")

    # replay it by clicking: confirmed, then followed until its groups are done
    page.click("#replay-one")
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-text")).to_contain_text("Replay 1 dead letter")
    page.click("#confirm-ok")
    expect(page.locator("#dlq-messages .banner.ok")).to_contain_text("Replayed 1 dead letter")
    expect(page.locator('#replayed td[data-state="processed"]')).to_have_count(1, timeout=60_000)
    expect(page.locator("#replayed tbody tr")).to_contain_text("embedder: done")
    expect(page.locator("#dlq-list")).to_contain_text("No dead letters match.")
    expect(page.locator("#dlq-list")).not_to_contain_text("null")
    shot(page, "05-replayed")

    # the job shows the replayed document through the index and persist stages
    page.goto(f"{stack.url}/console/#/jobs/{failed_job}")
    row = page.locator('#job-documents tr[data-document="replay-me"]')
    expect(row.locator('td[data-stage="embed"]')).to_have_text("failed")
    expect(row.locator('td[data-stage="index"]')).to_have_text("done", timeout=60_000)
    expect(row.locator('td[data-stage="persist"]')).to_have_text("done")
    shot(page, "06-job")
    assert page.errors == []  # type: ignore[attr-defined]


def test_console_operator_purges_a_filters_result_after_confirming(
    stack: Stack, browser: sync_api.Browser
) -> None:
    stack.start("api", "api")
    stack.wait_ready()
    operator = stack.create_key("ops", "operator", name="operator")
    other_admin = stack.create_key("globex", "admin", name="globex-admin")
    make_dead_letters(stack, poison=3)  # nothing to refuse but the poison

    # a tenant's admin sees none of them (they have no readable tenant)
    page = open_console(browser, stack)
    sign_in(page, other_admin)
    expect(page.locator("#who")).to_contain_text("admin of tenant globex")
    page.goto(f"{stack.url}/console/#/dead-letters")
    expect(page.locator("#dlq-list")).to_contain_text("No dead letters match.")
    page.click("#sign-out")

    sign_in(page, operator)
    expect(page.locator("#who")).to_contain_text("operator")
    page.goto(f"{stack.url}/console/#/dead-letters?grep=poison")
    expect(page.locator("#dlq-table tbody tr")).to_have_count(3)
    page.click("#purge-matching")
    expect(page.locator("#confirm-text")).to_contain_text(
        "Purge 3 dead letters matching grep=poison"
    )
    shot(page, "07-purge-confirm")
    page.click("#confirm-cancel")
    expect(page.locator("#dlq-table tbody tr")).to_have_count(3)  # cancelled: all there
    page.click("#purge-matching")
    page.click("#confirm-ok")
    expect(page.locator("#dlq-messages .banner.ok")).to_contain_text("Purged 3 dead letters")
    expect(page.locator("#dlq-list")).to_contain_text("No dead letters match.")
    assert page.errors == []  # type: ignore[attr-defined]


def test_console_search_and_document_lookup(stack: Stack, browser: sync_api.Browser) -> None:
    """The search box and the document lookup, on the search and read API (issue 14):
    skipped where this API has none."""
    start_chroma_server = getattr(stack, "start_chroma_server", None)
    if start_chroma_server is None:
        pytest.skip("this tree has no search API (POST /v1/search, GET /v1/documents/{id})")
    start_chroma_server()  # the API searches an index served by a Chroma server
    stack.start("api", "api")
    stack.start_worker("embed", "embed-0")
    stack.start_worker("index", "index-0")
    stack.start_worker("persist", "persist-0")
    stack.wait_ready()
    paths = httpx.get(f"{stack.url}/openapi.json").json()["paths"]
    if "/v1/search" not in paths:
        pytest.skip("this API has no POST /v1/search")
    job = post(
        stack,
        [
            {"id": "guide/streams.md", "text": "Consumer groups share a stream between workers."},
            {"id": "guide/rare.md", "text": "The part number ZX-4411-QUASAR is on the label."},
            {"id": "guide/cats.md", "text": "Cats sleep most of the day in the sun."},
        ],
    )
    wait_for_job(stack, job, "completed")

    page = open_console(browser, stack)
    sign_in(page, stack.api_key)
    expect(page.locator("#who")).to_contain_text("admin of tenant bench")
    page.goto(f"{stack.url}/console/#/search")
    page.fill("#search-query", "ZX-4411-QUASAR")
    page.select_option("#search-mode", "hybrid")
    page.click("#search-form button[type=submit]")
    first = page.locator("#search-table tbody tr").first
    expect(first).to_have_attribute("data-document", "guide/rare.md")
    expect(first).to_contain_text("ZX-4411-QUASAR")
    shot(page, "08-search")

    first.locator("a").click()  # the document it came from
    expect(page.locator("#document-state")).to_have_text("live")
    expect(page.locator("#document-text")).to_contain_text("ZX-4411-QUASAR")
    shot(page, "09-document")
    assert page.errors == []  # type: ignore[attr-defined]
