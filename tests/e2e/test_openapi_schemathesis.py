"""The OpenAPI document is true: schemathesis, with every check, over every operation of a real `flare serve`.

The document is loaded from the live server's ``/openapi.json``. Each operation gets explicit examples, the
coverage phase (boundaries, missing and wrong values, unsupported methods, missing credentials) and
Hypothesis-generated requests, and every response is checked: no 5xx, every status and body as documented,
invalid requests refused, valid ones not refused for a reason the document does not state, credentials not
ignored. Each operation gets the whole run with its own credential: the user's and unauthenticated ones with a
user's access token, the admin's with the admin key. Each kind is also fuzzed lightly (one example) with the other
credential, which it answers 401, and that answer is checked too.

Two operations destroy credentials: ``POST /v1/auth/logout`` (which with ``everywhere`` revokes every token of
the user) and ``POST /v1/admin/users/{user_id}/revoke``. They are left out of both runs and run last, in a test
of their own with a user made for it, so the other runs keep a working token.

Deterministic: a fixed seed and Hypothesis derandomized (the examples follow from the document), with a fixed
number of examples per operation. A run stops at its first failure. The coverage phase's cases (some 5800) all run;
the fuzzing and stateful phases take MAX_EXAMPLES each, so the file runs in 4 minutes on 2 busy CPUs (schemathesis
spends about 0.2 s of CPU drawing a request whose fields have patterns).
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import re2
import schemathesis
from schemathesis import engine
from schemathesis.engine import events
from schemathesis.generation import GenerationMode

from flare_im.services.content_filter import compile_regex

from .conftest import ServerProcess

# Examples per operation in the fuzzing and stateful phases (the coverage phase's cases follow from the schema). 3
# keeps the file within its time budget (4 minutes on 2 busy CPUs); FLARE_SCHEMATHESIS_EXAMPLES asks for more.
MAX_EXAMPLES = int(os.environ.get("FLARE_SCHEMATHESIS_EXAMPLES", "3"))
DESTROYERS = ["/v1/auth/logout", "/v1/admin/users/{user_id}/revoke"]
# The smallest files each media kind accepts (POST /v1/media sniffs the content): a 1x1 PNG, a WAV of 1 ms of
# silence, the start of a WebM.
MEDIA_SAMPLES = {
    "image": bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415478"
        "9c63f8ffff3f0005fe02fea7356a810000000049454e44ae426082"
    ),
    "voice": b"RIFF\x2c\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x40\x1f\x00\x00\x80\x3e\x00\x00"
    b"\x02\x00\x10\x00data\x10\x00\x00\x00" + bytes(16),
    "video": bytes.fromhex("1a45dfa39f4286810142f7810142f2810442f381084282847765626d4287810442858102") + bytes(64),
}

# Statuses schemathesis takes as the right answer to a request the document says is valid, or invalid. Besides its
# defaults: a valid request may still name a seq beyond the conversation (416) or a message recalled (410), which
# depends on the server's state, as a 404 or a 409 does; any request may be over the body limit (413), which
# counts bytes, not items or characters (16 KiB before credentials are checked, protocol.md §11). A media download
# answers with a redirect (302) to its signed URL.
# FLARE_SCHEMATHESIS_MAX_FAILURES > 1 collects more than the first failure, to investigate.
CONFIG = """
seed = 1
max-failures = {max_failures}
# Regexes of text fields (no control characters, not only spaces) draw slowly; the examples are few anyway.
suppress-health-check = ["too_slow", "filter_too_much"]

[generation]
max-examples = {examples}
deterministic = true
[checks.positive_data_acceptance]
expected-statuses = ["2XX", 302, 401, 403, 404, 409, 410, 413, 416, 429]

[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]
"""
# The run of the operations of the other credential, which all answer 401: a few fuzzed requests each.
ONLY_FUZZING = """
[phases.coverage]
enabled = false
[phases.stateful]
enabled = false
"""
# An operation's credential: the security scheme it names (api/openapi.py), "" for none.
USER_OPERATIONS = {"bearer", ""}
ADMIN_OPERATIONS = {"adminKey"}


@dataclass
class Flare:
    server: ServerProcess
    user_token: str  # alice's
    destroyer_token: str  # carol's: for logout, which revokes it

    @property
    def schema_url(self) -> str:
        return f"{self.server.api_url}/openapi.json"


@pytest.fixture(scope="module")
def flare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flare]:
    srv = ServerProcess(Path(tmp_path_factory.mktemp("schemathesis")) / "data")
    srv.start()
    try:
        with httpx.Client(base_url=srv.api_url, headers={"X-Admin-Key": srv.admin_key}) as admin:
            tokens = {}
            for uid in ("alice", "bob", "carol"):
                admin.post("/v1/admin/users", json={"user_id": uid}).raise_for_status()
                reply = admin.post(f"/v1/admin/users/{uid}/tokens")
                reply.raise_for_status()
                tokens[uid] = reply.json()["access_token"]
        yield Flare(srv, user_token=tokens["alice"], destroyer_token=tokens["carol"])
    finally:
        srv.stop()


def _assigned(value: Any) -> Any:
    """``value`` with unassigned code points (Unicode category Cn) in its strings replaced by "?"."""
    if isinstance(value, str):
        return "".join("?" if unicodedata.category(ch) == "Cn" else ch for ch in value)
    if isinstance(value, list):
        return [_assigned(v) for v in value]
    if isinstance(value, dict):
        return {_assigned(k): _assigned(v) for k, v in value.items()}
    return value


def _beyond_doubles(value: Any) -> bool:
    """Whether ``value`` holds an integer beyond 2**53, where a double no longer holds every integer."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) > 2**53
    if isinstance(value, list | tuple):
        return any(_beyond_doubles(v) for v in value)
    if isinstance(value, dict):
        return any(_beyond_doubles(v) for v in value.values())
    return False


def _whole_numbers_as_integers(value: Any) -> Any:
    """``value`` with each float that holds a whole number written as an integer (1.0 as 1), as the protocol asks
    of integers (docs/protocol.md §3): JSON Schema's ``integer`` also takes 1.0, the server's decoder does not."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, list):
        return [_whole_numbers_as_integers(v) for v in value]
    if isinstance(value, dict):
        return {k: _whole_numbers_as_integers(v) for k, v in value.items()}
    return value


def _positive(case: Any) -> bool:
    return case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE


def _valid_regex(body: Any) -> Any:
    """A filter rule's regex pattern made one RE2 compiles: that a pattern is a regular expression is stated in
    the document's words, which JSON Schema cannot check (and its ``format: regex`` is ECMA-262, not RE2), so a
    generated ``(`` would be a "valid" request the server rightly refuses with 422."""
    if isinstance(body, dict) and body.get("match") == "regex" and isinstance(body.get("pattern"), str):
        try:
            compile_regex(body["pattern"])
        except re2.error:
            body = {**body, "pattern": re2.escape(body["pattern"])}
    return body


def _credential(ctx: Any) -> str:
    """The security scheme an operation names ("" for none): every operation here names at most one."""
    security = ctx.operation.definition.raw.get("security") or [{}]
    return next(iter(security[0]), "")


def run_schemathesis(
    flare: Flare,
    headers: dict[str, str],
    *,
    only: list[str] | None = None,
    credentials: set[str] | None = None,
    light: bool = False,
) -> list[str]:
    """Every phase of ``st run`` over the live document (its examples, coverage, fuzzing, stateful links), with
    every check, as ``headers``; the failures found, one line each. ``only``: these paths (else all but the
    DESTROYERS); ``credentials``: the operations that name these security schemes; ``light``: only fuzzing, one
    example per operation (for operations that answer ``headers`` 401)."""
    examples = 1 if light else MAX_EXAMPLES
    max_failures = os.environ.get("FLARE_SCHEMATHESIS_MAX_FAILURES", "1")
    text = CONFIG.format(examples=examples, max_failures=max_failures) + (ONLY_FUZZING if light else "")
    config = schemathesis.Config.from_str(text)
    config.projects.override.headers = headers
    schema = schemathesis.openapi.from_url(flare.schema_url, config=config)
    schema = schema.include(path=only) if only else schema.exclude(path=DESTROYERS)
    if credentials is not None:
        schema = schema.include(lambda ctx: _credential(ctx) in credentials)

    # Text fields refuse unassigned code points, which their pattern does not list (api/schemas.py: they change
    # with each Unicode version, and there are 700 ranges of them). Generated bodies get none.
    @schema.hook
    def map_body(context: schemathesis.HookContext, body: Any) -> Any:
        return _valid_regex(_assigned(body))

    # The generator compares integers as doubles: with the bound 2**63 (exclusive) it takes 2**63 + 191, which
    # reads as the double 2**63, for a valid value (and 2**62 + 999 under a bound of 2**62). A "valid" case with
    # an integer beyond 2**53, where that can happen, is dropped; the bounds themselves are tested exactly in
    # test_bad_input.py and test_hostile_input.py.
    @schema.hook
    def filter_case(context: schemathesis.HookContext, case: Any) -> bool:
        parts = (case.body, case.query, case.path_parameters)
        if _positive(case) and case.path == "/v1/media:complete":
            return False  # valid only with the ETags of uploaded parts, which no generator has (test_media.py)
        return not (_positive(case) and any(_beyond_doubles(part) for part in parts))

    @schema.hook
    def map_case(context: schemathesis.HookContext, case: Any) -> Any:
        if _positive(case) and isinstance(case.body, dict | list):
            case.body = _whole_numbers_as_integers(case.body)
        if _positive(case) and case.path == "/v1/media" and isinstance(case.query, dict):
            # The content decides an upload's type, which the document cannot say: a valid upload of a kind is a
            # file of that kind.
            case.body = MEDIA_SAMPLES.get(str(case.query.get("kind")), b"any bytes")
        if _positive(case) and case.path == "/v1/media:presign" and isinstance(case.body, dict):
            case.body.pop("mime", None)  # a declared type the kind does not take is refused at once, by the settings
        return case

    failures: list[str] = []
    operations: set[str] = set()
    for event in engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            operations.add(event.recorder.label)
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.status is engine.Status.FAILURE:
                        info = check.failure_info
                        why = f"{info.failure.title}: {info.failure.message}" if info else ""
                        why += f" {info.code_sample if info else ''}"
                        failures.append(f"{event.recorder.label}: {check.name}: {why}"[:2000])
        elif isinstance(event, events.NonFatalError | events.FatalError):
            failures.append(f"{getattr(event, 'label', '')}: error: {event.info.format()}"[:2000])
    assert operations, "schemathesis ran no operation"
    return sorted(set(failures))


@pytest.mark.timeout(600)
def test_as_a_user(flare: Flare) -> None:
    """The user's operations and those without credentials in full; the admin's answer the token 401."""
    headers = {"Authorization": f"Bearer {flare.user_token}"}
    failures = run_schemathesis(flare, headers, credentials=USER_OPERATIONS)
    failures += run_schemathesis(flare, headers, credentials=ADMIN_OPERATIONS, light=True)
    assert not failures, "\n".join(failures)


@pytest.mark.timeout(600)
def test_as_the_admin(flare: Flare) -> None:
    """The admin's operations in full; the user's answer the admin key 401."""
    headers = {"X-Admin-Key": flare.server.admin_key}
    failures = run_schemathesis(flare, headers, credentials=ADMIN_OPERATIONS)
    failures += run_schemathesis(flare, headers, credentials={"bearer"}, light=True)
    assert not failures, "\n".join(failures)


@pytest.mark.timeout(600)
def test_operations_that_revoke_credentials_last(flare: Flare) -> None:
    """With carol's token (logout revokes it: later calls are 401, as documented) and the admin key."""
    headers = {"Authorization": f"Bearer {flare.destroyer_token}", "X-Admin-Key": flare.server.admin_key}
    failures = run_schemathesis(flare, headers, only=DESTROYERS)
    assert not failures, "\n".join(failures)
