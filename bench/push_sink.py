"""A fast local stand-in of APNs and FCM for benchmarks: haproxy answering over HTTP/2 and TLS.

The Python stand-ins in tests/fakes (hypercorn) check everything a provider checks, but one of them answers
only ~1,000-2,000 requests/s on a core of this machine, so a worker sending to them idles most of the time and
its cost per notification is measured in the wrong regime (a wake-up and a TLS read per answer). haproxy
answers ten times as fast from its own thread and still checks what matters to the client's cost:
- APNs: ``POST /3/device/<token>`` whose ``authorization: bearer <JWT>`` verifies with ES256 against the
  provider key's public half (haproxy's ``jwt_verify``; a token that verified is remembered, as Apple keeps a
  provider token for its hour, so the stand-in's ECDSA does not set the pace); 200 with the request's
  ``apns-id``, else 403 ``InvalidProviderToken`` as Apple answers.
- FCM: ``POST /token`` whose form ``assertion`` verifies with RS256 against the service account's public key,
  answered with an access token; ``POST /v1/projects/<p>/messages:send`` only with that token (else 401), 200
  ``{"name": ...}``.
It does not check message bodies or simulate error answers: the tests do that against tests/fakes.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from flare_im.devcluster import free_port

ACCESS_TOKEN = "ya29.flare-bench-sink"
_APNS_AUTH_LUA = """
local verified = {}
core.register_action("apns_auth", { "http-req" }, function(txn, public)
  local token = (txn.sf:req_hdr("authorization") or ""):match("^bearer (.+)$")
  local ok = 0
  if token and verified[token] then
    ok = 1
  elseif token then
    ok = txn.c:jwt_verify(token, "ES256", public) or 0
    if ok == 1 then verified[token] = true end
  end
  txn:set_var("txn.auth_ok", ok)
end, 1)
"""


def _config(kind: str, port: int, crt: Path, public: Path, lua: Path) -> str:
    head = f"""global
  nbthread 1
  maxconn 2000
  lua-load {lua}
defaults
  mode http
  timeout client 60s
  timeout connect 5s
  timeout server 60s
frontend {kind}
  bind 127.0.0.1:{port} ssl crt {crt} alpn h2
"""
    if kind == "apns":
        return (
            head
            + f"""  http-request return status 404 unless METH_POST {{ path_beg /3/device/ }}
  http-request lua.apns_auth {public}
  http-request return status 403 content-type application/json string '{{"reason":"InvalidProviderToken"}}' \
unless {{ var(txn.auth_ok) -m int 1 }}
  http-request return status 200 hdr apns-id "%[req.hdr(apns-id)]"
"""
        )
    return (
        head
        + f"""  option http-buffer-request
  acl token_call path /token
  acl assertion_ok req.body_param(assertion),jwt_verify("RS256","{public}") -m int 1
  http-request return status 400 content-type application/json string '{{"error":"invalid_grant"}}' \
if token_call !assertion_ok
  http-request return status 200 content-type application/json \
string '{{"access_token":"{ACCESS_TOKEN}","expires_in":3599,"token_type":"Bearer"}}' if token_call
  http-request return status 401 content-type application/json \
string '{{"error":{{"code":401,"status":"UNAUTHENTICATED"}}}}' \
unless {{ req.hdr(authorization) -m str "Bearer {ACCESS_TOKEN}" }}
  http-request return status 200 content-type application/json lf-string '{{"name":"projects/bench/messages/0:%rt"}}' \
if METH_POST {{ path_end /messages:send }}
  http-request return status 404
"""
    )


class HaproxySink:
    """``with HaproxySink(kind, directory, cert_file, key_file, public_pem) as url``: haproxy on a free port, on
    ``cpus`` (None: where the caller may run)."""

    def __init__(
        self, kind: str, directory: str, cert_file: str, key_file: str, public_pem: bytes, cpus: set[int] | None
    ) -> None:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        base = Path(directory)
        crt, public = base / "sink-crt.pem", base / "sink-public.pem"
        crt.write_bytes(Path(cert_file).read_bytes() + Path(key_file).read_bytes())
        public.write_bytes(public_pem)
        self.port = free_port()
        self._cpus = cpus
        config, lua = base / "sink.cfg", base / "sink-auth.lua"
        lua.write_text(_APNS_AUTH_LUA)
        config.write_text(_config(kind, self.port, crt, public, lua))
        self._command = [binary, "-db", "-f", str(config)]
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        cpus = self._cpus
        self._process = subprocess.Popen(
            self._command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                error = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"haproxy exited: {error}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return f"https://127.0.0.1:{self.port}"
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("haproxy did not listen within 10 s")

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
