"""The live dashboard as a person sees it: headless Chromium against the real stack.

One test walks the whole story, because each step needs the one before (a browser, a worker
that has joined its group, data on the page): a wrong key is refused, the right key shows the
API's numbers, more events move them, tabs, sorting and paging show what the API says, and an
API outage shows a banner that goes away by itself. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from api.auth import Role, create_key
from api.catalog import CatalogDocument, load_catalog
from api.outcome_types import NewOutcomeType, create_type
from core.config import Settings
from core.schema import Classification
from tests.support import ApiProcess, ServiceProcess, produce, wait_until

CHROMIUM = Path("/usr/bin/chromium")
# Debian's Chromium, never a downloaded browser build; no network beyond loopback.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} is absent: install Debian's chromium package (apt-get install -y chromium)",
    ),
]

CATALOG = CatalogDocument.model_validate(
    {
        "actions": [
            {"id": "OFF-GOLD", "name": "Gold credit card", "issue": "Cross-sell", "group": "Cards"},
            {
                "id": "OFF-MORT",
                "name": "Fixed-rate mortgage",
                "issue": "Growth",
                "group": "Lending",
            },
        ],
        "channels": [
            {"id": "web", "name": "Website", "channelType": "web"},
            {"id": "email", "name": "Email", "channelType": "email"},
        ],
        "treatments": [
            {"id": f"{a}-{c}", "name": f"{a} on {c}", "actionId": a, "channelId": c}
            for a in ("OFF-GOLD", "OFF-MORT")
            for c in ("web", "email")
        ],
    }
)

# Counts per action and type. OFF-NEW is not in the catalog; OFF-GOLD passes 1,000 impressions
# so thousands separators show; batch two lifts OFF-MORT above OFF-GOLD, so rows must move.
BATCH_ONE = {
    # applied: a custom outcome type the tenant registers as positive (issue 11)
    "OFF-GOLD": {
        "impression": 1040,
        "click": 52,
        "dismiss": 31,
        "accept": 12,
        "convert": 9,
        "applied": 6,
    },
    "OFF-MORT": {"impression": 210, "click": 7, "dismiss": 12, "accept": 3, "convert": 2},
    "OFF-NEW": {"impression": 40, "click": 3, "convert": 1},
}
BATCH_TWO = {
    "OFF-MORT": {"impression": 1500, "click": 90, "dismiss": 40, "accept": 20, "convert": 11},
    "OFF-NEW": {"impression": 5, "click": 1},
}
CHANNELS = ("web", "email")
CUSTOMERS = 23  # more than one page of ten

# Numeric row fields the table shows (each groupBy has a subset of them).
NUMERIC = (
    *("impression", "click", "dismiss", "accept", "convert", "total", "ctr", "cvr"),
    *("treatmentCount", "uniqueActions"),
)


def events(batch: dict[str, dict[str, int]], tag: str, now: datetime) -> list[dict[str, str]]:
    """Contract events for ``batch``, seconds old, spread over channels and customers.

    None is older than today's UTC midnight, so "today" holds them all whenever the test runs.
    """
    midnight = datetime.combine(now.date(), datetime.min.time(), UTC)
    out: list[dict[str, str]] = []
    for action, counts in batch.items():
        for kind, n in counts.items():
            for i in range(n):
                channel = CHANNELS[i % len(CHANNELS)]
                out.append(
                    {
                        "id": f"{tag}-{action}-{kind}-{i}",
                        "timestamp": max(now - timedelta(seconds=i % 20), midnight).isoformat(),
                        "customerId": f"C-{(len(out) * 7) % CUSTOMERS:02d}",
                        "actionId": action,
                        "treatmentId": f"{action}-{channel}",
                        "channelId": channel,
                        "type": kind,
                    }
                )
    return out


def count_of(action: str) -> int:
    """Events published for ``action`` over both batches."""
    return sum(sum(batch.get(action, {}).values()) for batch in (BATCH_ONE, BATCH_TWO))


# ---- what the page shows, read from the DOM --------------------------------------------------

TABLE_JS = """() => [...document.querySelectorAll('#summary tbody tr')].map(tr => ({
    key: tr.dataset.key,
    values: Object.fromEntries([...tr.cells].map(td => [td.dataset.col, td.dataset.value])),
    texts: Object.fromEntries([...tr.cells].map(td => [td.dataset.col, td.textContent.trim()])),
}))"""


CUSTOMER_TABLES = ("#customer-summaries", "#customer-history")
# What a contact policy looks at must be on the page (the page may show more).
CUSTOMER_COLUMNS = (
    {
        "periodKey",
        "offerId",
        "channelId",
        "impressions",
        "total",
        "lastContactAt",
        "lastOutcomeKey",
    },
    {"timestamp", "type", "actionId", "channelId", "id"},
)
# Each row of a customer table as [texts of its cells, the columns they show].
CUSTOMER_TABLE_JS = """(table) => [...document.querySelectorAll(table + ' tbody tr')].map(tr => [
    [...tr.cells].map(td => td.textContent), [...tr.cells].map(td => td.dataset.col)])"""


def cell_texts(row: dict[str, Any], columns: list[str]) -> list[str]:
    """The texts the customer view must show for an API row: a missing value as an en dash."""
    return ["\N{EN DASH}" if row.get(c) is None else str(row[c]) for c in columns]


def shown(cells: dict[str, str]) -> dict[str, Any]:
    """The page's raw cell values in the shape ``expected`` gives for an API row."""
    values: dict[str, Any] = {c: float(cells[c]) for c in NUMERIC if c in cells}
    values["sentiment"] = cells["sentiment"]
    return values


def expected(row: dict[str, Any]) -> dict[str, Any]:
    """What the page must show for one API row: its numbers and its sentiment bar's parts."""
    values: dict[str, Any] = {c: float(row[c]) for c in NUMERIC if c in row}
    if "positive" in row:
        parts = (row["positive"], row["negative"], row["neutral"])
    else:  # the contract's formulas, which the page applies to rows that lack the fields
        positive = row["click"] + row["accept"]
        parts = (positive, row["dismiss"], max(row["impression"] - positive - row["dismiss"], 0))
    values["sentiment"] = "/".join(str(p) for p in parts)
    return values


def row_key(row: dict[str, Any]) -> str:
    return str(row.get("id", row.get("customerId")))


# Counts DOM changes in the table, chart and totals from now on.
OBSERVE_JS = """() => {
    window.mutations = 0;
    const observer = new MutationObserver((records) => { window.mutations += records.length; });
    for (const selector of ['#summary tbody', '#chart', '#kpis']) {
        observer.observe(document.querySelector(selector),
                         {subtree: true, childList: true, characterData: true, attributes: true});
    }
}"""


async def polled_since(page: Any, polls: int) -> bool:
    """True once the page has applied at least ``polls`` successful polls."""
    return int(await page.get_attribute("#status", "data-polls") or 0) >= polls


class Dashboard:
    """The page and the API side by side: what one shows, the other must say."""

    def __init__(self, page: Any, client: httpx.AsyncClient) -> None:
        self.page = page
        self.client = client
        self.last_api: dict[str, Any] = {}
        self.last_page: list[Any] = []

    async def api(self, path: str = "interaction-summary", **params: Any) -> dict[str, Any]:
        response = await self.client.get(f"/api/v1/{path}", params=params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def table(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self.page.evaluate(TABLE_JS)
        return rows

    async def matches_api(self, **params: Any) -> bool:
        """True when the table shows exactly the API's page for ``params``, in the API's order."""
        body = await self.api(**params)
        self.last_api = body
        want = [(row_key(r), expected(r)) for r in body["summary"]]
        self.last_page = [(r["key"], shown(r["values"])) for r in await self.table()]
        return self.last_page == want

    async def wait_matches(self, what: str, timeout: float = 20.0, **params: Any) -> dict[str, Any]:
        """Wait until the page shows the API's answer to ``params``; return that answer."""
        await wait_until(
            lambda: self.matches_api(**params),
            timeout,
            0.25,
            lambda: f"{what}: page {self.last_page} != API {self.last_api.get('summary')}",
        )
        return self.last_api

    async def customer_matches(self, customer: str, period: str, total: int | None) -> bool:
        """True when the customer view shows exactly the API's summaries and history (and the
        API's summary rows add up to ``total`` events, when given)."""
        summaries = await self.api(
            "interaction-summaries", customerId=customer, periodType=period, limit=200
        )
        history = await self.api("interaction-history", customerId=customer, limit=20)
        self.last_api = {"summaries": summaries["data"], "history": history["data"]}
        self.last_page = [await self.page.evaluate(CUSTOMER_TABLE_JS, t) for t in CUSTOMER_TABLES]
        want = [
            [cell_texts(row, cols) for row in rows]
            for rows, cols in zip(
                (summaries["data"], history["data"]), self.last_page_columns(), strict=True
            )
        ]
        shows = [set(cols) for cols in self.last_page_columns()]
        counted = sum(r["total"] for r in summaries["data"])
        return (
            bool(summaries["total"])
            and total in (None, counted)
            and all(need <= got for need, got in zip(CUSTOMER_COLUMNS, shows, strict=True))
            and [[r for r, _ in t] for t in self.last_page] == want
        )

    def last_page_columns(self) -> list[list[str]]:
        return [(t[0][1] if t else []) for t in self.last_page]

    async def wait_customer(
        self, customer: str, period: str, total: int | None = None
    ) -> list[dict[str, Any]]:
        """Wait until the customer view shows the API's answers; return the summary rows."""
        await wait_until(
            lambda: self.customer_matches(customer, period, total),
            20,
            0.25,
            lambda: f"customer {customer} {period}: page {self.last_page} != API {self.last_api}",
        )
        rows: list[dict[str, Any]] = self.last_api["summaries"]
        return rows

    async def text(self, selector: str) -> str:
        value: str = await self.page.locator(selector).inner_text()
        return value.strip()

    async def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        await self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


async def test_dashboard_shows_the_apis_numbers_and_follows_new_events(
    settings: Settings,
    pool: asyncpg.Pool,
    browser: Any,
    start_worker: Callable[[Settings], ServiceProcess],
    start_api: Callable[[Settings], Awaitable[ApiProcess]],
) -> None:
    started = time.monotonic()
    start_worker(settings)
    api = await start_api(settings)
    await load_catalog(pool, CATALOG)
    key = await create_key(pool, Role.VIEWER)
    applied = NewOutcomeType(key="applied", name="Applied", classification=Classification.POSITIVE)
    await create_type(pool, "default", applied)
    first = events(BATCH_ONE, "one", datetime.now(UTC))
    await produce(settings, first)

    context = await browser.new_context(
        viewport={"width": 1400, "height": 900}, locale="en-US", timezone_id="UTC"
    )
    page = await context.new_page()
    foreign: list[str] = []  # the page must load nothing from anywhere but the API server
    page.on("request", lambda r: None if r.url.startswith(api.url) else foreign.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    async with httpx.AsyncClient(
        base_url=api.url, headers={"Authorization": f"Bearer {key}"}, timeout=10
    ) as client:
        ui = Dashboard(page, client)

        async def api_counted(n: int) -> bool:
            body = await ui.api(days=1)
            return bool(sum(r["total"] for r in body["summary"]) == n)

        await wait_until(
            lambda: api_counted(len(first)), 120, 0.2, "the API never counted batch one"
        )

        # No key yet: the page asks for one. A wrong key is refused with the API's reason.
        await page.goto(f"{api.url}/dashboard")
        await page.locator("#key-dialog[open]").wait_for()
        await page.fill("#key-input", "isk_this-key-does-not-exist-anywhere")
        await page.click("#key-submit")
        await page.locator("#key-message.problem").wait_for()
        assert "401" in await ui.text("#key-message")
        assert await page.get_attribute("#status", "data-state") == "auth"
        assert await page.locator("#key-dialog[open]").count() == 1
        await ui.screenshot("dashboard-wrong-key.png")

        # The right key: the table shows exactly the API's rows and numbers.
        await page.fill("#key-input", key)
        await page.click("#key-submit")
        await ui.wait_matches("the page never showed the API's action summary")
        # Kept for the tab's session only: "remember" was not ticked.
        assert await page.evaluate("sessionStorage.getItem('interaction-summary.apiKey')") == key
        assert await page.evaluate("localStorage.getItem('interaction-summary.apiKey')") is None
        rows = {r["key"]: r["texts"] for r in await ui.table()}
        assert list(rows) == ["OFF-GOLD", "OFF-MORT", "OFF-NEW"]
        gold = next(r for r in ui.last_api["summary"] if r["id"] == "OFF-GOLD")
        assert rows["OFF-GOLD"]["impression"] == "1,040"  # thousands separator
        assert rows["OFF-GOLD"]["total"] == f"{gold['total']:,}"
        assert rows["OFF-GOLD"]["ctr"] == f"{gold['ctr']:.2f}%" == "5.00%"
        assert rows["OFF-GOLD"]["cvr"] == f"{gold['cvr']:.2f}%" == "0.87%"
        assert rows["OFF-GOLD"]["name"] == "Gold credit cardOFF-GOLD"  # name over id
        assert rows["OFF-NEW"]["name"] == "OFF-NEW"  # unknown to the catalog: the id alone
        # The custom type: a column of its own, in the sentiment bar as the registry says, and
        # listed with its classification beside the system types; its column can be hidden.
        assert rows["OFF-GOLD"]["outcome:applied"] == "6"
        assert rows["OFF-NEW"]["outcome:applied"] == "0"
        assert (gold["positive"], gold["negative"]) == (52 + 12 + 6, 31)
        listed = await page.eval_on_selector_all(
            "#outcome-type-list li",
            "lis => lis.map(li => [li.dataset.type, li.querySelector('.cls').textContent])",
        )
        assert listed == [["impression", "neutral"], ["click", "positive"], ["dismiss", "negative"],
                          ["accept", "positive"], ["convert", "neutral"], ["applied", "positive"]]  # fmt: skip
        column = "#summary thead th[data-col='outcome:applied']"
        await page.uncheck("#outcome-type-list li[data-type=applied] input")
        assert await page.locator(column).count() == 0
        await page.check("#outcome-type-list li[data-type=applied] input")
        assert await page.locator(column).count() == 1
        await ui.wait_matches("the page lost the API's rows after showing a column again")
        status = await ui.text("#status")
        assert re.fullmatch(r"updated \d\d:\d\d:\d\d · source: (redis|postgres|history)", status)
        assert await page.get_attribute("#status", "data-state") == "live"

        async def same_source() -> bool:
            # Which store answers may change from one request to the next (all give the
            # same numbers), so wait for a moment when page and API name the same one.
            source = (await ui.api())["source"]
            return (await ui.text("#status")).endswith(f"source: {source}")

        await wait_until(same_source, 15, 0.2, "the page never named the API's source")

        # Polls that bring no new numbers change nothing on the page but the clock: no flicker.
        await page.evaluate(OBSERVE_JS)
        polls = int(await page.get_attribute("#status", "data-polls") or 0)
        await wait_until(lambda: polled_since(page, polls + 2), 15, 0.1, "the page stopped polling")
        assert await page.evaluate("window.mutations") == 0
        await wait_until(lambda: ui.matches_api(), 5, 0.1, "the API changed under a still page")

        # The chart and its totals: one bar per day of this month so far, today's as the API says.
        today = datetime.now(UTC).date()
        days = today.day
        series = (await ui.api("interaction-timeseries", days=days))["series"]
        chart = await page.eval_on_selector_all(
            "#chart g.day", "gs => gs.map(g => [g.dataset.date, Number(g.dataset.total)])"
        )
        assert chart == [[d["date"], d["total"]] for d in series]
        assert chart[-1] == [today.isoformat(), len(first)]
        assert await page.get_attribute("[data-kpi=total]", "data-value") == str(len(first))
        await ui.screenshot("dashboard.png")

        # More events: the same rows update in place and the order follows the totals.
        gold_row = await page.evaluate_handle("document.querySelector('tr[data-key=\"OFF-GOLD\"]')")
        second = events(BATCH_TWO, "two", datetime.now(UTC))
        await produce(settings, second)
        await wait_until(
            lambda: api_counted(len(first) + len(second)), 60, 0.2, "batch two never counted"
        )
        body = await ui.wait_matches("the page never showed the numbers after batch two")
        assert [r["key"] for r in await ui.table()] == ["OFF-MORT", "OFF-GOLD", "OFF-NEW"]
        assert [r["id"] for r in body["summary"]] == ["OFF-MORT", "OFF-GOLD", "OFF-NEW"]
        mort = next(r for r in await ui.table() if r["key"] == "OFF-MORT")
        assert mort["texts"]["total"] == f"{count_of('OFF-MORT'):,}" == "1,895"
        assert await page.evaluate(
            "row => row === document.querySelector('tr[data-key=\"OFF-GOLD\"]')", gold_row
        ), "the row element was replaced, not updated in place"
        assert await page.get_attribute("[data-kpi=total]", "data-value") == str(
            len(first) + len(second)
        )
        await ui.screenshot("dashboard.png")

        # Another tab, and sorting by a column (both directions) over every group.
        await page.click("#tab-channel")
        await ui.wait_matches("channels never showed", groupBy="channel", limit=25)
        await page.click("th[data-col=ctr] button")
        await page.click("th[data-col=ctr] button")
        assert await page.get_attribute("th[data-col=ctr]", "aria-sort") == "ascending"
        ctrs = [float(r["values"]["ctr"]) for r in await ui.table()]
        assert ctrs == sorted(ctrs) and len(ctrs) == 2

        # Paging through customers, ten at a time, in the API's order.
        await page.click("#tab-customer")
        await page.select_option("#page-size", "10")
        await ui.wait_matches("customers page one", groupBy="customer", limit=10)
        assert await ui.text("#page-info") == f"1\N{EN DASH}10 of {CUSTOMERS} customers"
        await page.click("#next")
        await ui.wait_matches("customers page two", groupBy="customer", limit=10, offset=10)
        assert await ui.text("#page-info") == f"11\N{EN DASH}20 of {CUSTOMERS} customers"

        # The customer view: one customer's summaries and last interactions, as the API gives
        # them, following new events of that customer by itself.
        customer = "C-03"
        await page.fill("#customer-input", customer)
        await page.select_option("#customer-period", "daily")
        await page.click("#customer-lookup")
        await ui.wait_customer(customer, "daily")
        third = [
            {
                **e,
                "id": f"three-{i}",
                "customerId": customer,
                "timestamp": datetime.now(UTC).isoformat(),
            }
            for i, e in enumerate(second[:3])
        ]
        await produce(settings, third)
        # Today's rows of the customer add up to every event of theirs, the new ones included.
        today_total = sum(e["customerId"] == customer for e in first + second + third)
        await ui.wait_customer(customer, "daily", total=today_total)
        await page.select_option("#customer-period", "alltime")
        assert len(await ui.wait_customer(customer, "alltime")) >= 1
        await ui.screenshot("dashboard-customer.png")

        # The API goes away: a banner says so; it comes back: the page recovers by itself.
        api.stop()
        banner = page.locator("#banner[data-kind=down]")
        await banner.wait_for(timeout=15_000)
        assert "API unreachable, retrying" in await banner.inner_text()
        assert await page.get_attribute("#status", "data-state") == "down"
        await ui.screenshot("dashboard-offline.png")
        api.start()
        await api.wait_healthy()
        down_until = time.monotonic()
        await page.locator("#status[data-state=live]").wait_for(timeout=40_000)
        recovery = time.monotonic() - down_until
        assert await page.locator("#banner").is_hidden()
        await ui.wait_matches("customers after recovery", groupBy="customer", limit=10, offset=10)

        # The key was kept for that tab only: a new tab asks again. Ticking "remember" keeps it
        # in this browser (localStorage), so the next tab connects by itself.
        second_tab = await context.new_page()
        await second_tab.goto(f"{api.url}/dashboard")
        await second_tab.locator("#key-dialog[open]").wait_for()
        await second_tab.fill("#key-input", key)
        await second_tab.check("#key-remember")
        await second_tab.click("#key-submit")
        await second_tab.locator("#status[data-state=live]").wait_for(timeout=20_000)
        assert (
            await second_tab.evaluate("localStorage.getItem('interaction-summary.apiKey')") == key
        )
        third_tab = await context.new_page()
        await third_tab.goto(f"{api.url}/dashboard")
        await third_tab.locator("#status[data-state=live]").wait_for(timeout=20_000)
        assert await third_tab.locator("#key-dialog[open]").count() == 0

    assert not errors, f"JavaScript errors on the page: {errors}"
    assert not foreign, f"the page fetched from outside its server: {foreign}"
    await context.close()
    print(f"dashboard e2e: {time.monotonic() - started:.1f}s, recovery {recovery:.1f}s")
