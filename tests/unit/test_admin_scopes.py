"""The admin scope table and what the audit log keeps of a request body (api/admin.py, services/admin.py)."""

from __future__ import annotations

import json

from flare_im.api.admin import _redacted
from flare_im.services.admin import FULL, MODERATION, READ, covers, required_scope


def test_every_get_is_read_moderation_is_listed_and_the_rest_needs_full() -> None:
    assert required_scope("GET", "/v1/admin/keys") == READ
    assert required_scope("POST", "/v1/admin/users/{user_id}/ban") == MODERATION
    assert required_scope("DELETE", "/v1/admin/users/{user_id}/ban") == MODERATION
    assert required_scope("PUT", "/v1/admin/filter/rules/{rule_id}") == MODERATION
    assert required_scope("POST", "/v1/admin/moderation/reports/{report_id}/resolve") == MODERATION
    assert required_scope("DELETE", "/v1/admin/users/{user_id}") == FULL
    assert required_scope("POST", "/v1/admin/keys") == FULL
    assert required_scope("POST", "/v1/admin/something/new") == FULL  # never open by mistake
    assert required_scope("POST", "/v1/admin/filter") == FULL  # a prefix matches below it only
    assert covers(FULL, MODERATION)
    assert covers(MODERATION, READ)
    assert not covers(READ, MODERATION)


def test_the_audit_log_keeps_bodies_without_their_secrets() -> None:
    body = {"url": "https://x", "secret": "s3cr3t", "nested": [{"password": "pw", "note": "kept"}], "ttl_s": 60}
    kept = json.loads(_redacted(json.dumps(body).encode()))
    assert kept == {"url": "https://x", "secret": "***", "nested": [{"password": "***", "note": "kept"}], "ttl_s": 60}
    assert _redacted(b"not json") == "not json"
    assert _redacted(b"") == ""
