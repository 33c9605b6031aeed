"""Redis route table (distributed): every node's devices, shared by all nodes.

Keys (Redis 7.0 has no per-field TTL, so liveness is per node, not per route):
- ``{prefix}routes:{uid}``: hash device -> node, expiring ``keep_routes_s`` after the last register or
  heartbeat that touched it (so a user whose nodes all died does not stay forever, yet a lookup soon after
  a node died still meets its routes and can give their users a last seen time);
- ``{prefix}alive:{node}``: exists while the node is alive (``SET ... PX ttl``, renewed by heartbeats);
- ``{prefix}nodes``: the set of nodes that heartbeated (for ``live_nodes``);
- ``{prefix}seen:{uid}``: epoch ms when the user's last device left (kept ``seen_ttl_s``).

Times come from the Redis server's clock (``TIME``), so nodes with skewed clocks agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import islice

from flare_im.backends.redis_client import RedisOwner, RedisSource
from flare_im.backends.routes.base import Routes

_NOW_MS = "local function now_ms() local t = redis.call('TIME') return t[1] * 1000 + math.floor(t[2] / 1000) end\n"

# KEYS[1]: the user's routes; ARGV: device, node, ttl ms.
_REGISTER = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
"""

# KEYS[1]: the user's routes, KEYS[2]: their last-seen key; ARGV: device, node, alive-key prefix, seen ttl ms.
_UNREGISTER = (
    _NOW_MS
    + """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
local rest = redis.call('HGETALL', KEYS[1])
local live = false
for i = 1, #rest, 2 do
  if redis.call('EXISTS', ARGV[3] .. rest[i + 1]) == 1 then live = true else redis.call('HDEL', KEYS[1], rest[i]) end
end
if not live then redis.call('SET', KEYS[2], string.format('%d', now_ms()), 'PX', ARGV[4]) end
return 1
"""
)

# KEYS[1..n]: the users' routes, KEYS[n+1..2n]: their last-seen keys; ARGV: alive-key prefix, seen ttl ms.
# Returns, per user, a flat list device, node, device, node ... of its routes on live nodes.
_LOOKUP = (
    _NOW_MS
    + """
local n = #KEYS / 2
local alive = {}
local out = {}
for i = 1, n do
  local flat = redis.call('HGETALL', KEYS[i])
  local live = {}
  for j = 1, #flat, 2 do
    local node = flat[j + 1]
    local ok = alive[node]
    if ok == nil then
      ok = redis.call('EXISTS', ARGV[1] .. node) == 1
      alive[node] = ok
    end
    if ok then
      live[#live + 1] = flat[j]
      live[#live + 1] = node
    else
      redis.call('HDEL', KEYS[i], flat[j])
    end
  end
  if #flat > 0 and #live == 0 then
    redis.call('SET', KEYS[n + i], string.format('%d', now_ms()), 'PX', ARGV[2])
  end
  out[i] = live
end
return out
"""
)

# KEYS[1]: the node's alive key, KEYS[2]: the node set, KEYS[3..]: one user's routes per route;
# ARGV: node, ttl ms, keep-routes ms, alive-key prefix, then the device of each route (ARGV[i + 2] goes
# with KEYS[i]).
_HEARTBEAT = """
local node = ARGV[1]
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
redis.call('SADD', KEYS[2], node)
for i = 3, #KEYS do
  local device = ARGV[i + 2]
  local current = redis.call('HGET', KEYS[i], device)
  if current ~= node and (not current or redis.call('EXISTS', ARGV[4] .. current) == 0) then
    redis.call('HSET', KEYS[i], device, node)
  end
  redis.call('PEXPIRE', KEYS[i], ARGV[3])
end
"""

# KEYS[1]: the node set; ARGV[1]: alive-key prefix. Returns the live nodes and forgets the dead ones.
_LIVE_NODES = """
local out = {}
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. node) == 1 then out[#out + 1] = node else redis.call('SREM', KEYS[1], node) end
end
return out
"""


class RedisRouteTable:
    def __init__(
        self,
        client: RedisSource,
        prefix: str = "flare:",
        *,
        ttl_s: float = 30.0,
        keep_routes_s: float | None = None,
        seen_ttl_s: float = 30 * 86400,
        max_users_per_script: int = 1000,
    ) -> None:
        """``ttl_s``: how long a heartbeat keeps a node alive (heartbeat well within it);
        ``keep_routes_s``: how long a user's routes outlive their last refresh (default ``10 * ttl_s``);
        ``seen_ttl_s``: how long a last seen time is kept; ``max_users_per_script``: users (or routes) one
        Lua call handles, so a big lookup or heartbeat does not hold Redis for long (the calls still go in
        one round trip)."""
        self._owner = RedisOwner(client)
        redis = self._owner.redis
        self._register = redis.register_script(_REGISTER)
        self._unregister = redis.register_script(_UNREGISTER)
        self._lookup = redis.register_script(_LOOKUP)
        self._heartbeat = redis.register_script(_HEARTBEAT)
        self._live_nodes = redis.register_script(_LIVE_NODES)
        self._routes = f"{prefix}routes:"
        self._alive = f"{prefix}alive:"
        self._nodes = f"{prefix}nodes"
        self._seen = f"{prefix}seen:"
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._keep_ms = max(self._ttl_ms, round((10 * ttl_s if keep_routes_s is None else keep_routes_s) * 1000))
        self._seen_ttl_ms = max(1, round(seen_ttl_s * 1000))
        self._chunk = max_users_per_script

    async def aclose(self) -> None:
        await self._owner.aclose()

    async def register(self, uid: str, device: str, node: str) -> None:
        await self._register(keys=[self._routes + uid], args=[device, node, self._keep_ms])

    async def unregister(self, uid: str, device: str, node: str) -> None:
        await self._unregister(
            keys=[self._routes + uid, self._seen + uid], args=[device, node, self._alive, self._seen_ttl_ms]
        )

    async def lookup(self, uids: Sequence[str]) -> Routes:
        if not uids:
            return {}
        args: list[str | int] = [self._alive, self._seen_ttl_ms]
        pipe = self._owner.redis.pipeline(transaction=False)
        for start in range(0, len(uids), self._chunk):
            chunk = uids[start : start + self._chunk]
            keys = [self._routes + uid for uid in chunk] + [self._seen + uid for uid in chunk]
            await self._lookup(keys=keys, args=args, client=pipe)
        found: Routes = {}
        i = 0
        for replies in await pipe.execute():
            for flat in replies:
                if flat:
                    found[uids[i]] = {flat[j].decode(): flat[j + 1].decode() for j in range(0, len(flat), 2)}
                i += 1
        return found

    async def heartbeat(self, node: str, routes: Iterable[tuple[str, str]]) -> None:
        head = [self._alive + node, self._nodes]
        args_head: list[str | int] = [node, self._ttl_ms, self._keep_ms, self._alive]
        pipe = self._owner.redis.pipeline(transaction=False)
        pending = iter(routes)
        chunk = list(islice(pending, self._chunk))
        while True:  # the first call marks the node alive even with no route
            keys = head + [self._routes + uid for uid, _ in chunk]
            await self._heartbeat(keys=keys, args=args_head + [device for _, device in chunk], client=pipe)
            chunk = list(islice(pending, self._chunk))
            if not chunk:
                break
        await pipe.execute()

    async def last_seen(self, uids: Sequence[str]) -> dict[str, int]:
        if not uids:
            return {}
        values = await self._owner.redis.mget([self._seen + uid for uid in uids])
        return {uid: int(v) for uid, v in zip(uids, values, strict=True) if v is not None}

    async def live_nodes(self) -> set[str]:
        nodes = await self._live_nodes(keys=[self._nodes], args=[self._alive])
        return {n.decode() for n in nodes}
