"""The web client at /app, in a real browser against a real `flare serve`.

Debian's chromium driven by Playwright (never a downloaded browser), every host but 127.0.0.1 unresolvable. Each
user is a browser context of its own (its own storage: one signed-in user); a second tab of the same context is a
second device of that user. Each test saves screenshots to its tmp path and a copy to /tmp/flare-web-<name>.png for
people to look at. The server's HTTP side of /app (headers, caching, errors) and the committed build are checked in
test_web_client_build.py.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, async_playwright, expect
from tests.services import require

from flare_im.devcluster import free_port

from .conftest import ServerProcess
from .test_web_client_build import ensure_node_modules

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
WAIT_MS = 15_000
PASSWORD = "correct horse battery"

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    chromium = require("chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


class Person:
    """One user in one browser context; ``page`` is its first tab."""

    def __init__(self, context: BrowserContext, page: Page, user: str) -> None:
        self.context, self.page, self.user = context, page, user
        self.errors: list[str] = []
        watch(page, self.errors)


def watch(page: Page, errors: list[str]) -> None:
    """Collects the page's uncaught errors and console errors, but those the tests cause on purpose: requests
    failing while the context is offline, and the 404 of GET /v1/push/vapid on a server without Web Push."""

    def console(m: ConsoleMessage) -> None:
        expected = "ERR_INTERNET_DISCONNECTED" in m.text or "WebSocket" in m.text
        if m.type == "error" and not expected and not m.location.get("url", "").endswith("/v1/push/vapid"):
            errors.append(f"console: {m.text} at {m.location}")

    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("console", console)


async def register(server: ServerProcess, user: str) -> None:
    async with httpx.AsyncClient(base_url=server.api_url) as http:
        reply = await http.post(
            "/v1/auth/register", json={"username": user, "password": PASSWORD, "display_name": user.title()}
        )
        assert reply.status_code == 201, reply.text


async def sign_in(
    browser: Browser,
    server: ServerProcess,
    user: str,
    *,
    sign_up: bool = False,
    width: int = 1100,
    locale: str = "en-US",
) -> Person:
    """A new context signed in as ``user``: through the sign-up form, or the sign-in form for a registered user."""
    context = await browser.new_context(viewport={"width": width, "height": 760}, locale=locale)
    page = await context.new_page()
    person = Person(context, page, user)
    await page.goto(f"{server.api_url}/app/")
    if sign_up:
        await page.get_by_role("button", name="No account? Create one").click()
        await page.locator("input[name=display_name]").fill(user.title())
    await page.locator("input[name=username]").fill(user)
    await page.locator("input[name=password]").fill(PASSWORD)
    await page.locator("form button[type=submit]").click()
    await expect(page.locator("nav.sidebar")).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator(".banner")).to_have_count(0, timeout=WAIT_MS)  # connected
    return person


def conv_item(page: Page, conv: str) -> object:
    return page.locator(f'li.conv[data-conv="{conv}"]')


async def open_conv(page: Page, conv: str) -> None:
    await page.locator(f'li.conv[data-conv="{conv}"]').click()
    await expect(page.locator("section.chat textarea")).to_be_visible()


async def send(page: Page, text: str) -> None:
    box = page.locator("section.chat textarea")
    await box.fill(text)
    await box.press("Enter")
    await expect(box).to_have_value("")


def bubbles(page: Page) -> object:
    return page.locator("li.msg:not(.pending) .bubble .text")


async def shot(page: Page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    await page.screenshot(path=str(path))
    shutil.copy(path, f"/tmp/flare-web-{name}.png")
    return path


async def start_direct(page: Page, peer: str) -> None:
    await page.get_by_role("button", name="New chat").click()
    await page.locator("input[name=user]").fill(peer)
    await page.locator("dialog, [role=dialog]").get_by_role("button", name="Start").click()
    await expect(page.locator("section.chat textarea")).to_be_focused()


async def test_two_users_chat_both_ways(browser: Browser, server: ServerProcess, tmp_path: Path) -> None:
    await register(server, "bob")
    alice = await sign_in(browser, server, "alice", sign_up=True)
    bob = await sign_in(browser, server, "bob")
    conv = "d:alice:bob"

    await start_direct(alice.page, "bob")
    await expect(alice.page.locator(".chat-head .subtitle")).to_have_text("online", timeout=WAIT_MS)  # presence
    await send(alice.page, "hi bob 👋")
    await expect(bubbles(alice.page)).to_have_text(["hi bob 👋"], timeout=WAIT_MS)

    # Bob's list gets the new conversation with one unread message; opening it reads it.
    item = bob.page.locator(f'li.conv[data-conv="{conv}"]')
    await expect(item.locator(".badge")).to_have_text("1", timeout=WAIT_MS)
    await expect(item.locator(".conv-preview")).to_have_text("hi bob 👋")
    await open_conv(bob.page, conv)
    await expect(bubbles(bob.page)).to_have_text(["hi bob 👋"])
    await expect(item.locator(".badge")).to_have_count(0)
    # Alice's message is marked read once bob has it open.
    await expect(alice.page.locator("li.msg.mine .marks")).to_have_attribute("data-mark", "read", timeout=WAIT_MS)

    # Typing shows on the other side, then the reply arrives.
    await bob.page.locator("section.chat textarea").press_sequentially("hel")
    await expect(alice.page.locator(".chat-head .subtitle")).to_have_text("Bob is typing…", timeout=WAIT_MS)
    await send(bob.page, "hello alice, the emoji made it 😀")
    await expect(bubbles(alice.page)).to_have_text(["hi bob 👋", "hello alice, the emoji made it 😀"], timeout=WAIT_MS)
    await expect(alice.page.locator(".chat-head .subtitle")).to_have_text("online", timeout=WAIT_MS)

    # A reply with a quote, and a reaction, both ways.
    last = alice.page.locator("li.msg").last
    await last.hover()
    await last.get_by_role("button", name="Reply").click()
    await send(alice.page, "quoted!")
    await expect(bob.page.locator("li.msg").last.locator("blockquote")).to_contain_text("hello alice", timeout=WAIT_MS)
    first = bob.page.locator("li.msg").first
    await first.hover()
    await first.get_by_role("button", name="React").click()
    await first.get_by_role("button", name="🎉").click()
    await expect(alice.page.locator("li.msg").first.locator(".reaction")).to_have_text("🎉 1", timeout=WAIT_MS)

    await shot(alice.page, tmp_path, "chat-alice")

    # Forward: bob copies alice's first message (into this same conversation, the only one they share).
    first = bob.page.locator("li.msg").first
    await first.hover()
    await first.get_by_role("button", name="Forward").click()
    await bob.page.get_by_role("dialog").get_by_role("button", name="Alice").click()
    copy = alice.page.locator("li.msg").last
    await expect(copy.locator(".forwarded")).to_have_text("Forwarded from Alice", timeout=WAIT_MS)
    await expect(copy.locator(".text")).to_have_text("hi bob 👋")
    await shot(bob.page, tmp_path, "chat-bob")
    assert alice.errors == []
    assert bob.errors == []


async def test_offline_then_catch_up_in_order(browser: Browser, server: ServerProcess, tmp_path: Path) -> None:
    await register(server, "alice")
    await register(server, "bob")
    alice = await sign_in(browser, server, "alice")
    bob = await sign_in(browser, server, "bob")
    conv = "d:alice:bob"
    await start_direct(alice.page, "bob")
    await send(alice.page, "before")
    await open_conv(bob.page, conv)
    await expect(bubbles(bob.page)).to_have_text(["before"], timeout=WAIT_MS)

    await bob.context.set_offline(True)
    await expect(bob.page.locator(".banner")).to_be_visible(timeout=WAIT_MS)
    texts = [f"while you were away {i}" for i in range(1, 8)]
    for text in texts:
        await send(alice.page, text)
    await expect(bubbles(alice.page)).to_have_text(["before", *texts], timeout=WAIT_MS)
    await shot(bob.page, tmp_path, "offline-bob")
    await expect(bubbles(bob.page)).to_have_text(["before"])  # nothing arrived while offline

    await bob.context.set_offline(False)
    await expect(bob.page.locator(".banner")).to_have_count(0, timeout=WAIT_MS)
    await expect(bubbles(bob.page)).to_have_text(["before", *texts], timeout=WAIT_MS)
    seqs = [int(s) for s in await bob.page.locator("li.msg").evaluate_all("els => els.map(e => e.dataset.seq)")]
    assert seqs == sorted(set(seqs)), seqs
    assert len(seqs) == 8, seqs
    # Bob had the conversation open: catching up read it, and alice sees that.
    await expect(alice.page.locator("li.msg.mine .marks").last).to_have_attribute("data-mark", "read", timeout=WAIT_MS)
    await shot(bob.page, tmp_path, "caught-up-bob")
    assert alice.errors == []
    assert bob.errors == []


async def test_two_tabs_reading_in_one_clears_the_other(
    browser: Browser, server: ServerProcess, tmp_path: Path
) -> None:
    await register(server, "alice")
    await register(server, "bob")
    alice = await sign_in(browser, server, "alice")
    bob = await sign_in(browser, server, "bob")
    tab2 = await bob.context.new_page()  # the same browser profile: signed in, a device of its own
    watch(tab2, bob.errors)
    await tab2.goto(f"{server.api_url}/app/")
    await expect(tab2.locator("nav.sidebar")).to_be_visible(timeout=WAIT_MS)
    await expect(tab2.locator(".banner")).to_have_count(0, timeout=WAIT_MS)
    device1 = await bob.page.evaluate("sessionStorage.getItem('flare-device')")
    device2 = await tab2.evaluate("sessionStorage.getItem('flare-device')")
    assert device1
    assert device2
    assert device1 != device2

    conv = "d:alice:bob"
    await start_direct(alice.page, "bob")
    for text in ("one", "two", "three"):
        await send(alice.page, text)
    for page in (bob.page, tab2):
        await expect(page.locator(f'li.conv[data-conv="{conv}"] .badge')).to_have_text("3", timeout=WAIT_MS)
    await shot(tab2, tmp_path, "tabs-before")
    await open_conv(bob.page, conv)
    await expect(bubbles(bob.page)).to_have_text(["one", "two", "three"], timeout=WAIT_MS)
    await expect(tab2.locator(f'li.conv[data-conv="{conv}"] .badge')).to_have_count(0, timeout=WAIT_MS)
    # Still cleared after the tab reloads (the read position is the server's).
    await tab2.reload()
    await expect(tab2.locator(f'li.conv[data-conv="{conv}"]')).to_be_visible(timeout=WAIT_MS)
    await expect(tab2.locator(f'li.conv[data-conv="{conv}"] .badge')).to_have_count(0)
    await shot(tab2, tmp_path, "tabs-after")

    # A draft typed in one tab shows in the list of the other.
    await send(bob.page, "")  # nothing is sent for an empty box
    await bob.page.locator("section.chat textarea").fill("half a thought")
    await expect(tab2.locator(f'li.conv[data-conv="{conv}"] .conv-preview')).to_contain_text(
        "half a thought", timeout=WAIT_MS
    )
    assert alice.errors == []
    assert bob.errors == []


async def test_edit_and_recall_show_on_the_other_side(browser: Browser, server: ServerProcess, tmp_path: Path) -> None:
    await register(server, "alice")
    await register(server, "bob")
    alice = await sign_in(browser, server, "alice")
    bob = await sign_in(browser, server, "bob")
    conv = "d:alice:bob"
    await start_direct(alice.page, "bob")
    await send(alice.page, "lunch at 12?")
    await send(alice.page, "oops, wrong chat")
    await open_conv(bob.page, conv)
    await expect(bubbles(bob.page)).to_have_text(["lunch at 12?", "oops, wrong chat"], timeout=WAIT_MS)

    # Edit: Arrow-up in the empty box edits the last own text message; the hover menu edits any.
    first = alice.page.locator("li.msg").first
    await first.hover()
    await first.get_by_role("button", name="Edit").click()
    box = alice.page.locator("section.chat textarea")
    await expect(box).to_have_value("lunch at 12?")
    await box.fill("lunch at 12:30?")
    await box.press("Enter")
    await expect(bob.page.locator("li.msg").first.locator(".text")).to_have_text("lunch at 12:30?", timeout=WAIT_MS)
    await expect(bob.page.locator("li.msg").first.locator(".edited")).to_be_visible()

    second = alice.page.locator("li.msg").nth(1)
    await second.hover()
    await second.get_by_role("button", name="Recall").click()
    await expect(bob.page.locator("li.msg").nth(1)).to_have_class("msg gone", timeout=WAIT_MS)
    await expect(bob.page.locator("li.msg").nth(1)).to_contain_text("This message was recalled")
    await expect(alice.page.locator("li.msg").nth(1)).to_contain_text("This message was recalled")
    await shot(bob.page, tmp_path, "edit-recall-bob")

    # Both survive a reload: they are the server's history, not local state.
    await bob.page.reload()
    await open_conv(bob.page, conv)
    await expect(bob.page.locator("li.msg .text")).to_have_text(
        ["lunch at 12:30?", "This message was recalled"], timeout=WAIT_MS
    )
    assert alice.errors == []
    assert bob.errors == []


async def test_group_created_and_a_third_user_sees_it(browser: Browser, server: ServerProcess, tmp_path: Path) -> None:
    for user in ("alice", "bob", "carol"):
        await register(server, user)
    alice = await sign_in(browser, server, "alice")
    bob = await sign_in(browser, server, "bob")
    carol = await sign_in(browser, server, "carol", width=390, locale="zh-CN")  # phone width, in Chinese

    await alice.page.get_by_role("button", name="New group").click()
    await alice.page.locator("input[name=name]").fill("Lunch crew")
    await alice.page.locator("input[name=members]").fill("bob, carol")
    await alice.page.get_by_role("dialog").get_by_role("button", name="Create").click()
    await expect(alice.page.locator(".chat-head h2")).to_have_text("Lunch crew", timeout=WAIT_MS)
    await send(alice.page, "@carol pizza or noodles?")

    group = carol.page.locator("li.conv", has_text="Lunch crew")
    await expect(group).to_be_visible(timeout=WAIT_MS)
    await expect(group.locator(".mention")).to_be_visible()
    await expect(carol.page.get_by_role("button", name="发起聊天")).to_be_visible()  # Chinese strings
    await shot(carol.page, tmp_path, "group-list-carol")
    await group.click()
    await expect(carol.page.locator("nav.sidebar")).to_be_hidden()  # phone width: the chat alone
    await expect(carol.page.locator("li.system:not(.start)").first).to_contain_text(
        "Alice 创建了群组“Lunch crew”", timeout=WAIT_MS
    )
    await expect(carol.page.locator("li.msg .text")).to_have_text(["@carol pizza or noodles?"], timeout=WAIT_MS)
    await send(carol.page, "面条")
    await expect(bubbles(alice.page)).to_have_text(["@carol pizza or noodles?", "面条"], timeout=WAIT_MS)
    await shot(carol.page, tmp_path, "group-chat-carol")

    # "Read by": carol has read alice's message, bob has not opened the group yet.
    mine = alice.page.locator("li.msg.mine").first
    await mine.hover()
    await mine.get_by_role("button", name="Read by").click()
    dialog = alice.page.get_by_role("dialog")
    await expect(dialog.locator(".read-list li")).to_have_text(["Carol"], timeout=WAIT_MS)
    await expect(dialog.locator(".unread-list li")).to_have_text(["Bob"])
    await dialog.get_by_role("button", name="Close").click()

    # Members: alice removes carol; carol's chat says so and the composer goes with the membership.
    await alice.page.get_by_role("button", name="Group info").click()
    dialog = alice.page.get_by_role("dialog")
    await expect(dialog.locator("li[data-user]")).to_have_count(3, timeout=WAIT_MS)
    await dialog.get_by_role("button", name="Remove carol").click()
    await expect(dialog.locator("li[data-user]")).to_have_count(2, timeout=WAIT_MS)
    await shot(alice.page, tmp_path, "group-members-alice")
    await dialog.get_by_role("button", name="Close").click()
    await expect(carol.page.locator("li.system").last).to_contain_text("Alice 移除了 Carol", timeout=WAIT_MS)
    await expect(carol.page.locator("section.chat textarea")).to_have_count(0, timeout=WAIT_MS)  # no longer a member
    await expect(bob.page.locator("li.conv", has_text="Lunch crew")).to_be_visible(timeout=WAIT_MS)
    assert alice.errors == []
    assert bob.errors == []
    assert carol.errors == []


async def test_dark_theme_and_language_switch(browser: Browser, server: ServerProcess, tmp_path: Path) -> None:
    await register(server, "alice")
    alice = await sign_in(browser, server, "alice")
    page = alice.page
    await page.get_by_role("button", name="Settings").click()
    # The profile's display name, as others see it.
    await page.locator("input[name=my_name]").fill("Alice Liddell")
    await page.get_by_role("dialog").get_by_role("button", name="Save").click()
    await expect(page.get_by_role("dialog").get_by_text("Signed in as Alice Liddell (@alice)")).to_be_visible()
    async with httpx.AsyncClient(base_url=server.api_url) as http:
        profiles = (await http.get("/v1/users", params={"ids": "alice"}, headers=await bearer(server, "alice"))).json()
    assert profiles["items"][0]["display_name"] == "Alice Liddell"
    await page.get_by_label("Dark").check()
    assert await page.evaluate("document.documentElement.dataset.theme") == "dark"
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(15, 17, 21)", background
    await expect(page.get_by_text("This server does not send Web Push notifications")).to_be_visible()
    await page.get_by_label("中文").check()
    await expect(page.get_by_role("dialog").get_by_role("heading", name="设置")).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(page.get_by_role("dialog")).to_have_count(0)
    # Both choices are kept across a reload.
    await page.reload()
    await expect(page.get_by_role("button", name="设置")).to_be_visible(timeout=WAIT_MS)
    assert await page.evaluate("document.documentElement.dataset.theme") == "dark"
    assert await page.evaluate("document.documentElement.lang") == "zh-CN"
    await shot(page, tmp_path, "dark-zh")
    assert alice.errors == []


async def bearer(server: ServerProcess, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {await login_token(server, user)}"}


async def login_token(server: ServerProcess, user: str) -> str:
    async with httpx.AsyncClient(base_url=server.api_url) as http:
        reply = await http.post("/v1/auth/login", json={"username": user, "password": PASSWORD})
        assert reply.status_code == 200, reply.text
        token: str = reply.json()["access_token"]
        return token


async def test_history_loads_as_you_scroll_and_search_jumps_to_a_message(
    browser: Browser, server: ServerProcess, tmp_path: Path
) -> None:
    await register(server, "alice")
    await register(server, "bob")
    conv = "d:alice:bob"
    token = await login_token(server, "bob")
    async with httpx.AsyncClient(base_url=server.api_url, headers={"Authorization": f"Bearer {token}"}) as http:
        for i in range(1, 101):
            text = "the old noodle recipe" if i == 5 else f"message number {i}"
            body = {"cmid": f"m{i}", "body": {"text": text}}
            reply = await http.post(f"/v1/conversations/{conv}/messages", json=body)
            assert reply.status_code in (200, 201), reply.text
    alice = await sign_in(browser, server, "alice")
    page = alice.page
    await expect(page.locator(f'li.conv[data-conv="{conv}"] .badge')).to_have_text("99+", timeout=WAIT_MS)
    await open_conv(page, conv)
    messages = page.locator("li.msg")
    await expect(messages.last).to_contain_text("message number 100", timeout=WAIT_MS)
    # The conversation's last message may show before the newest page arrives: wait for the page.
    await page.wait_for_function("document.querySelectorAll('li.msg').length >= 30", timeout=WAIT_MS)
    shown = await messages.count()
    assert 30 <= shown < 100, shown  # the newest page, not the whole history
    # Scrolling to the top pulls the page before it, and keeps the view where it was.
    await page.locator(".messages").evaluate("el => { el.scrollTop = 0; }")
    await expect(messages).not_to_have_count(shown, timeout=WAIT_MS)
    assert await messages.count() > shown

    # Search (GET /v1/search) finds the 5th message; opening the result loads history down to it.
    await page.get_by_role("button", name="Search messages").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_role("searchbox").fill("noodle recipe")
    result = dialog.locator(".results li")
    await expect(result).to_have_count(1, timeout=WAIT_MS)
    await expect(result.locator("mark")).to_have_text(["noodle", "recipe"])
    await shot(page, tmp_path, "search-alice")
    await result.locator("button").click()
    found = page.locator("li.msg.found")
    await expect(found).to_contain_text("the old noodle recipe", timeout=WAIT_MS)
    await expect(found).to_be_in_viewport()
    await expect(page.locator('li.msg[data-seq="1"]')).to_have_count(1)  # history is contiguous down to it
    assert alice.errors == []


async def test_two_tabs_share_one_token_refresh(browser: Browser, tmp_path: Path) -> None:
    """Access tokens that expire within the refresh margin at once: both tabs refresh, one asks the server and
    the other takes the pair it got. Were the used refresh token presented twice, the server would revoke the
    session, and the reload at the end would land on the sign-in form."""
    server = ServerProcess(tmp_path / "data", env_overrides={"FLARE_ACCESS_TOKEN_TTL_S": "62"})
    server.start()
    try:
        await register(server, "alice")
        await register(server, "bob")
        bob = await sign_in(browser, server, "bob")
        tab2 = await bob.context.new_page()
        watch(tab2, bob.errors)
        await tab2.goto(f"{server.api_url}/app/")
        await expect(tab2.locator(".banner")).to_have_count(0, timeout=WAIT_MS)
        before = await bob.page.evaluate("JSON.parse(localStorage.getItem('flare-tokens')).refreshToken")
        await asyncio.sleep(3)  # both tabs' access tokens now expire within the 60 s margin
        await start_direct(bob.page, "alice")  # a bearer call (GET /v1/users): this tab refreshes
        await start_direct(tab2, "alice")  # and this one takes the new pair
        after = await tab2.evaluate("JSON.parse(localStorage.getItem('flare-tokens')).refreshToken")
        assert after != before
        await send(tab2, "still signed in")
        await expect(bubbles(bob.page)).to_have_text(["still signed in"], timeout=WAIT_MS)
        await tab2.reload()
        await expect(tab2.locator("nav.sidebar")).to_be_visible(timeout=WAIT_MS)
        await expect(tab2.locator(".banner")).to_have_count(0, timeout=WAIT_MS)
        assert bob.errors == []
    finally:
        server.stop()


async def test_notifications_register_the_service_worker(browser: Browser, tmp_path: Path) -> None:
    """With Web Push on, Settings offers notifications: turning them on registers /app/sw.js (scope /app/) under
    the page's policy and subscribes with the server's VAPID key. Headless Chromium has no push service to
    subscribe to, so the test checks the worker and that the subscription was attempted with the key."""
    server = ServerProcess(tmp_path / "data", env_overrides={"FLARE_WEBPUSH_SUBJECT": "mailto:ops@flare.example"})
    server.start()
    try:
        await register(server, "alice")
        alice = await sign_in(browser, server, "alice")
        await alice.context.grant_permissions(["notifications"])
        page = alice.page
        await page.get_by_role("button", name="Settings").click()
        await page.get_by_role("button", name="Turn on notifications").click()
        status = page.get_by_role("dialog").get_by_role("status")
        await expect(status).to_be_visible(timeout=WAIT_MS)
        registration = await page.evaluate(
            "navigator.serviceWorker.getRegistration()"
            ".then(r => r && [r.scope, (r.active || r.installing || r.waiting).scriptURL])"
        )
        assert registration == [f"{server.api_url}/app/", f"{server.api_url}/app/sw.js"], registration
        # A Playwright context is incognito, where Chromium has no Push API: the subscription is refused, and the
        # app says so instead of failing silently (Chromium logs why).
        assert (await status.text_content() or "").strip()
        await shot(page, tmp_path, "notifications")
        assert [e for e in alice.errors if "Push API in incognito mode" not in e] == []
    finally:
        server.stop()


def png_bytes(width: int, height: int) -> bytes:
    from io import BytesIO

    from PIL import Image

    out = BytesIO()
    Image.new("RGB", (width, height), (220, 80, 40)).save(out, format="PNG")
    return out.getvalue()


async def test_images_and_files_by_picker_drop_and_paste(
    browser: Browser, server: ServerProcess, tmp_path: Path
) -> None:
    await register(server, "alice")
    await register(server, "bob")
    alice = await sign_in(browser, server, "alice")
    bob = await sign_in(browser, server, "bob")
    conv = "d:alice:bob"
    await start_direct(alice.page, "bob")
    await send(alice.page, "photos coming")

    # The attach button's file picker: an image and a text file.
    notes = b"lunch: 12:30\nplace: the noodle bar\n"
    await alice.page.locator("input[name=attach]").set_input_files(
        [
            {"name": "red.png", "mimeType": "image/png", "buffer": png_bytes(1280, 960)},
            {"name": "notes.txt", "mimeType": "text/plain", "buffer": notes},
        ]
    )
    await open_conv(bob.page, conv)
    image = bob.page.locator("li.msg img.image")
    await expect(image).to_have_count(1, timeout=WAIT_MS)
    await expect(image).to_have_attribute("src", re.compile(r"/v1/media/[^/]+/content\?v=thumb&"))
    await bob.page.wait_for_function("() => document.querySelector('li.msg img.image')?.naturalWidth > 0")
    natural = await image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert natural == [320, 240], natural  # the server's thumbnail, not the 1280x960 original
    # Under it, the image's blurhash as a placeholder: a uniform image decodes to its own colour.
    await expect(image).to_have_css("background-image", re.compile(r'^url\("data:image/png;base64,'))
    rgb = await image.evaluate(
        """async (img) => {
            const url = getComputedStyle(img).backgroundImage.slice(5, -2);
            const picture = new Image();
            picture.src = url;
            await picture.decode();
            const canvas = document.createElement('canvas');
            canvas.width = picture.width;
            canvas.height = picture.height;
            const g = canvas.getContext('2d');
            g.drawImage(picture, 0, 0);
            return [...g.getImageData(16, 12, 1, 1).data.slice(0, 3)];
        }"""
    )
    assert all(abs(got - want) <= 3 for got, want in zip(rgb, (220, 80, 40), strict=True)), rgb
    file_button = bob.page.locator("li.msg button.file", has_text="notes.txt")
    await expect(file_button).to_be_visible(timeout=WAIT_MS)
    async with bob.page.expect_download() as download_info:
        await file_button.click()
    download = await download_info.value
    assert Path(await download.path()).read_bytes() == notes

    # Dropped on the chat, and pasted into the message box.
    dropped = await alice.page.evaluate_handle(
        """() => {
            const d = new DataTransfer();
            d.items.add(new File(['from a drop'], 'dropped.txt', {type: 'text/plain'}));
            return d;
        }"""
    )
    await alice.page.locator("section.chat").dispatch_event("drop", {"dataTransfer": dropped})
    await alice.page.evaluate(
        """() => {
            const d = new DataTransfer();
            d.items.add(new File(['from the clipboard'], 'pasted.txt', {type: 'text/plain'}));
            document.querySelector('section.chat textarea').dispatchEvent(
                new ClipboardEvent('paste', {clipboardData: d, bubbles: true, cancelable: true}));
        }"""
    )
    # In the order they were picked, dropped and pasted (one upload at a time).
    files = bob.page.locator("li.msg button.file")
    await expect(files).to_have_count(3, timeout=WAIT_MS)
    await expect(files).to_contain_text(["notes.txt", "dropped.txt", "pasted.txt"])
    await expect(bob.page.locator("li.msg").nth(1).locator("img.image")).to_have_count(1)  # red.png came first
    await expect(alice.page.locator("section.chat textarea")).to_have_value("")  # a pasted file is not typed
    await expect(alice.page.locator("li.pending")).to_have_count(0, timeout=WAIT_MS)
    await shot(bob.page, tmp_path, "media-bob")
    assert alice.errors == []
    assert bob.errors == []


async def test_keyboard_only(browser: Browser, server: ServerProcess, tmp_path: Path) -> None:
    """The list, the chat, an edit and the dialogs, with the keyboard alone."""
    for user in ("alice", "bob", "carol"):
        await register(server, user)
    for user in ("bob", "carol"):
        token = await login_token(server, user)
        async with httpx.AsyncClient(base_url=server.api_url, headers={"Authorization": f"Bearer {token}"}) as http:
            body = {"cmid": "hello", "body": {"text": f"hello from {user}"}}
            reply = await http.post(f"/v1/conversations/d:alice:{user}/messages", json=body)
            assert reply.status_code in (200, 201), reply.text
    alice = await sign_in(browser, server, "alice")
    page = alice.page
    await page.locator("input.filter").focus()
    await page.keyboard.press("Tab")  # into the list: one tab stop, on its first option
    first = page.locator("li.conv").first
    await expect(first).to_be_focused()
    await expect(first).to_have_attribute("data-conv", "d:alice:carol")  # the most recent first
    await page.keyboard.press("ArrowDown")
    await expect(page.locator('li.conv[data-conv="d:alice:bob"]')).to_be_focused()
    await page.keyboard.press("Enter")
    box = page.locator("section.chat textarea")
    await expect(box).to_be_focused()  # opening a conversation puts the cursor in its message box
    await expect(page.locator("li.msg .text")).to_have_text(["hello from bob"], timeout=WAIT_MS)
    await page.keyboard.type("typed, never clicked")
    await page.keyboard.press("Enter")
    stored = page.locator("li.msg.mine:not(.pending) .text")  # stored, not only written to the outbox
    await expect(stored).to_have_text(["typed, never clicked"], timeout=WAIT_MS)
    await page.keyboard.press("ArrowUp")  # the empty box edits the last own message
    await expect(page.locator(".composing")).to_contain_text("Editing message")
    await expect(box).to_have_value("typed, never clicked")
    await page.keyboard.press("Escape")
    await expect(page.locator(".composing")).to_have_count(0)
    await expect(box).to_have_value("")
    await page.keyboard.press("Alt+ArrowDown")  # the next in the list: bob's is now the most recent, carol's next
    await expect(page.locator(".chat-head h2")).to_have_text("Carol")
    # A dialog takes the focus, Escape closes it and gives the focus back.
    settings = page.get_by_role("button", name="Settings")
    await settings.focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("dialog")).to_be_visible()
    await expect(page.get_by_role("dialog").get_by_role("button", name="Close")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(page.get_by_role("dialog")).to_have_count(0)
    await expect(settings).to_be_focused()
    assert alice.errors == []


async def axe_violations(page: Page, axe: Path) -> list[str]:
    """axe-core's serious and critical WCAG 2.1 A/AA findings on the page as it is now."""
    await page.add_script_tag(path=str(axe))
    found = await page.evaluate(
        """async () => (await axe.run(document, {runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}))
            .violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
            .map(v => v.id + ': ' + v.help + ' -> ' + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', '))"""
    )
    return list(found)


@pytest.mark.timeout(300)
async def test_accessibility_checks_pass(browser: Browser, server: ServerProcess, tmp_path: Path) -> None:
    """axe-core (a devDependency of clients/web, injected into the page: the test's context bypasses the page's
    policy for that) finds no serious or critical WCAG 2.1 AA problem on the sign-in form, the list and a chat
    with messages, a dialog, and the same in the dark theme and at phone width."""
    axe = ensure_node_modules() / "axe-core" / "axe.min.js"
    await register(server, "bob")
    context = await browser.new_context(viewport={"width": 1100, "height": 760}, locale="en-US", bypass_csp=True)
    page = await context.new_page()
    await page.goto(f"{server.api_url}/app/")
    await expect(page.locator("input[name=username]")).to_be_visible(timeout=WAIT_MS)
    problems = {"sign-in": await axe_violations(page, axe)}
    await page.locator("input[name=username]").fill("bob")
    await page.locator("input[name=password]").fill(PASSWORD)
    await page.locator("form button[type=submit]").click()
    await expect(page.locator(".banner")).to_have_count(0, timeout=WAIT_MS)
    await register(server, "alice")
    token = await login_token(server, "alice")
    async with httpx.AsyncClient(base_url=server.api_url, headers={"Authorization": f"Bearer {token}"}) as http:
        for i, text in enumerate(["hello bob", "are you there?", "lunch at 12:30?"]):
            reply = await http.post(
                "/v1/conversations/d:alice:bob/messages", json={"cmid": f"a{i}", "body": {"text": text}}
            )
            assert reply.status_code in (200, 201), reply.text
    await open_conv(page, "d:alice:bob")
    await send(page, "yes, see you there")
    await expect(page.locator("li.msg:not(.pending)")).to_have_count(4, timeout=WAIT_MS)
    problems["chat"] = await axe_violations(page, axe)
    await page.get_by_role("button", name="Settings").click()
    problems["settings"] = await axe_violations(page, axe)
    await page.get_by_label("Dark").check()
    await page.keyboard.press("Escape")
    problems["chat, dark"] = await axe_violations(page, axe)
    await page.set_viewport_size({"width": 390, "height": 760})
    problems["chat, phone"] = await axe_violations(page, axe)
    await context.close()
    failing = {where: found for where, found in problems.items() if found}
    assert not failing, "\n".join(f"{where}: {problem}" for where, found in failing.items() for problem in found)


async def test_gateway_listed_on_every_address(browser: Browser, tmp_path: Path) -> None:
    """A server that lists its gateway as ws://0.0.0.0:<port> (bound to every address): the page's policy and the
    app both use the host the page was loaded from, so the app connects."""
    ws_port = free_port()
    server = ServerProcess(tmp_path / "data", env_overrides={"FLARE_PUBLIC_WS_URL": f"ws://0.0.0.0:{ws_port}/v1/ws"})
    server.start_on(free_port(), ws_port)
    try:
        async with httpx.AsyncClient(base_url=server.api_url) as http:
            policy = (await http.get("/app/")).headers["content-security-policy"]
        assert f"connect-src 'self' ws://127.0.0.1:{ws_port}" in policy
        await register(server, "alice")
        alice = await sign_in(browser, server, "alice")  # waits until connected
        assert alice.errors == []
    finally:
        server.stop()


async def test_pin_and_mute_follow_the_user(browser: Browser, server: ServerProcess, tmp_path: Path) -> None:
    """Pinning and muting in one tab change the other tab's list: a pinned conversation goes first, a muted one
    keeps its unread count in grey and leaves the page title's count."""
    for user in ("alice", "bob", "carol"):
        await register(server, user)

    async def say(user: str, cmid: str, text: str) -> None:
        token = await login_token(server, user)
        conv = "d:" + ":".join(sorted([user, "bob"]))
        async with httpx.AsyncClient(base_url=server.api_url, headers={"Authorization": f"Bearer {token}"}) as http:
            reply = await http.post(f"/v1/conversations/{conv}/messages", json={"cmid": cmid, "body": {"text": text}})
            assert reply.status_code in (200, 201), reply.text

    for user in ("carol", "alice"):  # alice's is the most recent
        for i in range(2):
            await say(user, f"m{i}", f"{user} says {i}")
    bob = await sign_in(browser, server, "bob")
    tab2 = await bob.context.new_page()
    watch(tab2, bob.errors)
    await tab2.goto(f"{server.api_url}/app/")
    order = tab2.locator("li.conv")
    await expect(order).to_have_count(2, timeout=WAIT_MS)
    assert await order.evaluate_all("els => els.map(e => e.dataset.conv)") == ["d:alice:bob", "d:bob:carol"]
    await expect(tab2).to_have_title("(4) Flare")

    # Pinned in the first tab: carol's goes first in the second.
    await open_conv(bob.page, "d:bob:carol")
    await bob.page.get_by_role("button", name="Pin").click()
    await expect(order.first).to_have_attribute("data-conv", "d:bob:carol", timeout=WAIT_MS)
    await expect(order.first.locator(".flag")).to_have_count(1)
    await expect(tab2).to_have_title("(2) Flare")  # carol's were read in the first tab

    # Muted in the first tab, while carol's stays open there: alice's next message is unread, in grey.
    await open_conv(bob.page, "d:alice:bob")
    await bob.page.get_by_role("button", name="Mute").click()
    await expect(bob.page.get_by_role("button", name="Unmute")).to_be_visible()
    await open_conv(bob.page, "d:bob:carol")
    await say("alice", "later", "later")
    alice_item = tab2.locator('li.conv[data-conv="d:alice:bob"]')
    await expect(alice_item.locator(".badge.muted")).to_have_text("1", timeout=WAIT_MS)
    await expect(tab2).to_have_title("Flare")  # a muted conversation does not count
    await shot(tab2, tmp_path, "pin-mute-tab2")
    assert bob.errors == []
