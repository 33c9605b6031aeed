"""The bot of docs/integration.md §7, as printed there, against a real `flare serve`: it receives after_send
webhooks, checks their signatures and answers over REST, once per message."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from flare_im.devcluster import free_port

from .conftest import Harness

DOC = Path(__file__).resolve().parents[2] / "docs/integration.md"
SECRET = "a-long-random-secret-of-yours"


def bot_code() -> str:
    text = DOC.read_text()
    return text[text.index("<!-- bot.py") :].split("```python\n", 1)[1].split("```", 1)[0]


async def test_the_documented_bot_answers_messages(harness: Harness, tmp_path: Path) -> None:
    code = bot_code()
    assert len(code.strip().splitlines()) <= 20
    (tmp_path / "bot.py").write_text(code)
    await harness.user("alice")
    token = await harness.user("echo")
    port = free_port()
    endpoint = {"url": f"http://127.0.0.1:{port}/", "events": ["after_send"], "secret": SECRET}
    await harness.admin.request("POST", "/v1/admin/webhooks", json=endpoint, admin=True)
    env = {**os.environ, "FLARE": harness.srv.api_url, "TOKEN": token, "BOT": "echo", "SECRET": SECRET}
    bot = subprocess.Popen([sys.executable, str(tmp_path / "bot.py")], env={**env, "PORT": str(port)})  # noqa: ASYNC220
    try:
        alice = await harness.device("alice")
        await asyncio.sleep(0.3)  # the bot binds its port
        await alice.send("d:alice:echo", "hello bot")
        await alice.send("d:alice:echo", "second")
        deadline = time.monotonic() + 15
        while True:
            page = await harness.rest("alice").history("d:alice:echo")
            answers = [m["body"]["text"] for m in page["items"] if m["sender"] == "echo"]
            if len(answers) >= 2 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert sorted(answers) == ["You said: hello bot", "You said: second"]
        await asyncio.sleep(0.5)  # its own replies are events too: it must not answer them
        page = await harness.rest("alice").history("d:alice:echo")
        assert len(page["items"]) == 4
    finally:
        bot.terminate()
        bot.wait(10)
