"""The registry store on Redis, shared by every registry node of a cluster.

Keys, all under ``prefix``: ``svc:<service>`` a hash of instance id → instance JSON; ``hb`` a
sorted set of instance ids scored by last heartbeat; ``idx`` instance id → service; ``addr``
"service host port" → instance id; ``services`` the set of services with instances;
``thresholds`` service → protection threshold; ``rev`` the revision counter; ``log`` a Stream,
the change log, whose entry ids are ``<revision>-0``; ``nodes`` / ``node_urls`` registry nodes.

Each write is one Lua script, so the state change, the revision bump and the XADD happen
together or not at all, and two nodes sweeping at once cannot announce a change twice. The
scripts read the Redis server's TIME, the one clock every node agrees on (tests inject theirs).
With Redis Cluster, give a prefix with a hash tag (``{gg:reg}:``): scripts derive key names
from the prefix, so all keys must live in one slot.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, cast

import orjson
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError
from redis.typing import KeyT, StreamIdT

from gridgate.registry.interfaces import (
    Change,
    ChangeKind,
    Changes,
    ForeignInstance,
    Instance,
    NodeInfo,
    Registration,
    ServiceSummary,
    Timings,
    UnknownInstance,
    check_service,
    check_threshold,
    protect,
)

__all__ = ["RedisRegistryStore"]

# ARGV[1] prefix, ARGV[2] injected time or "" for the server's, ARGV[3] log size; then per script.
_PRELUDE = """
local P = ARGV[1]
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
-- Whole milliseconds survive cjson's 14 significant digits, so JSON and scores agree.
now = math.floor(now * 1000 + 0.5) / 1000
local function num(x) return string.format('%.17g', x) end
local function address(doc) return doc.service .. ' ' .. doc.host .. ' ' .. doc.port end
local function emit(kind, service, id, doc)
  local rev = redis.call('INCR', P .. 'rev')
  redis.call('XADD', P .. 'log', 'MAXLEN', '~', ARGV[3], rev .. '-0',
    'kind', kind, 'service', service, 'id', id, 'instance', doc)
end
local function save(id, doc)
  local out = cjson.encode(doc)
  redis.call('HSET', P .. 'svc:' .. doc.service, id, out)
  redis.call('ZADD', P .. 'hb', num(doc.last_heartbeat), id)
  return out
end
local function drop(id, doc)
  local svc = P .. 'svc:' .. doc.service
  redis.call('HDEL', svc, id)
  redis.call('ZREM', P .. 'hb', id)
  redis.call('HDEL', P .. 'idx', id)
  redis.call('HDEL', P .. 'addr', address(doc))
  if redis.call('HLEN', svc) == 0 then redis.call('SREM', P .. 'services', doc.service) end
  emit('removed', doc.service, id, '')
end
local function load(id)
  local service = redis.call('HGET', P .. 'idx', id)
  local raw = service and redis.call('HGET', P .. 'svc:' .. service, id)
  if raw then return cjson.decode(raw) end
  return nil
end
"""

# ARGV[4] the checked registration as JSON, ARGV[5] the id to use if the address is new.
_REGISTER = """
local fields = cjson.decode(ARGV[4])
local function same(a, b)
  for k, v in pairs(a) do if b[k] ~= v then return false end end
  for k, v in pairs(b) do if a[k] ~= v then return false end end
  return true
end
local id = redis.call('HGET', P .. 'addr', address(fields))
local doc = id and load(id)
local kind
if doc then
  if doc.weight ~= fields.weight or doc.zone ~= fields.zone or doc.owner ~= fields.owner
      or not same(doc.metadata, fields.metadata) then
    kind = 'updated'
  elseif not doc.healthy then
    kind = 'healthy'
  end
  doc.weight, doc.zone, doc.owner, doc.metadata =
    fields.weight, fields.zone, fields.owner, fields.metadata
else
  kind = 'registered'
  id = ARGV[5]
  doc = fields
  doc.instance_id = id
  doc.registered_at = now
  redis.call('HSET', P .. 'idx', id, doc.service)
  redis.call('HSET', P .. 'addr', address(doc), id)
  redis.call('SADD', P .. 'services', doc.service)
end
doc.healthy = true
doc.last_heartbeat = now
local out = save(id, doc)
if kind then emit(kind, doc.service, id, out) end
return out
"""

# ARGV[4] instance id, ARGV[5] the caller's business system or "" for any. Another
# system's instance is answered as {0, doc} and left as it is.
_HEARTBEAT = """
local doc = load(ARGV[4])
if not doc then return false end
if ARGV[5] ~= '' and doc.owner ~= ARGV[5] then return {0, cjson.encode(doc)} end
local was_healthy = doc.healthy
doc.healthy = true
doc.last_heartbeat = now
local out = save(ARGV[4], doc)
if not was_healthy then emit('healthy', doc.service, ARGV[4], out) end
return out
"""

# ARGV[4] instance id.
_DEREGISTER = """
local doc = load(ARGV[4])
if not doc then return 0 end
drop(ARGV[4], doc)
return 1
"""

# ARGV[4] unhealthy_after_s, ARGV[5] remove_after_s.
_SWEEP = """
local unhealthy_after, remove_after = tonumber(ARGV[4]), tonumber(ARGV[5])
-- A second of slack in the range; the exact test is the same subtraction the memory store does.
local due = redis.call('ZRANGEBYSCORE', P .. 'hb', '-inf', num(now - unhealthy_after + 1),
  'WITHSCORES')
local changed = 0
for i = 1, #due, 2 do
  local id = due[i]
  local silent_for = now - tonumber(due[i + 1])
  if silent_for > unhealthy_after then
    local doc = load(id)
    if not doc then
      redis.call('ZREM', P .. 'hb', id)  -- a leftover without an instance: nothing to announce
    elseif silent_for > remove_after then
      drop(id, doc)
      changed = changed + 1
    elseif doc.healthy then
      doc.healthy = false
      emit('unhealthy', doc.service, id, save(id, doc))
      changed = changed + 1
    end
  end
end
return changed
"""

# ARGV[4] node id, ARGV[5] its URL.
_REGISTER_NODE = """
redis.call('ZADD', P .. 'nodes', num(now), ARGV[4])
redis.call('HSET', P .. 'node_urls', ARGV[4], ARGV[5])
return 1
"""

# ARGV[4] remove_after_s. Returns node id, URL, last seen (as text: Lua numbers become integers).
_NODES = """
local cutoff = now - tonumber(ARGV[4])
local gone = redis.call('ZRANGEBYSCORE', P .. 'nodes', '-inf', '(' .. num(cutoff))
for _, node in ipairs(gone) do
  redis.call('ZREM', P .. 'nodes', node)
  redis.call('HDEL', P .. 'node_urls', node)
end
local live = redis.call('ZRANGE', P .. 'nodes', 0, -1, 'WITHSCORES')
local out = {}
for i = 1, #live, 2 do
  table.insert(out, live[i])
  table.insert(out, redis.call('HGET', P .. 'node_urls', live[i]) or '')
  table.insert(out, live[i + 1])
end
return out
"""


def _text(value: bytes | str) -> str:
    # The client may or may not have been built with decode_responses.
    return value.decode() if isinstance(value, bytes) else value


def _instance(raw: bytes | str) -> Instance:
    data = orjson.loads(raw)
    # cjson writes 1000.0 as 1000, and cannot tell an empty object from an empty array.
    data["registered_at"] = float(data["registered_at"])
    data["last_heartbeat"] = float(data["last_heartbeat"])
    data["metadata"] = dict(data["metadata"] or {})
    return Instance(**data)


def _change(entry_id: bytes | str, fields: Mapping[Any, Any]) -> Change:
    values = {_text(k): _text(v) for k, v in fields.items()}
    return Change(
        revision=int(_text(entry_id).split("-", 1)[0]),
        kind=cast(ChangeKind, values["kind"]),  # written by our scripts only
        service=values["service"],
        instance_id=values["id"],
        instance=_instance(values["instance"]) if values["instance"] else None,
    )


class RedisRegistryStore:
    """A :class:`~gridgate.registry.interfaces.RegistryStore` in Redis, for several nodes.

    A waiting watcher holds one pooled connection in XREAD BLOCK for at most ``block_s`` at a
    time, which must stay below the client's ``socket_timeout`` (redis-py's default is 5 s).
    """

    def __init__(
        self,
        redis: Redis,
        timings: Timings | None = None,
        *,
        clock: Callable[[], float] | None = None,
        prefix: str = "gg:reg:",
        log_size: int = 100_000,
        block_s: float = 1.0,
        owns_client: bool = False,
    ) -> None:
        if log_size < 1 or block_s <= 0:
            raise ValueError("log_size must be at least 1 and block_s above 0")
        self.timings = timings or Timings()
        self._redis = redis
        self._clock = clock
        self._prefix = prefix
        self._log_size = log_size
        self._block_s = block_s
        self._owns_client = owns_client
        self._register = redis.register_script(_PRELUDE + _REGISTER)
        self._heartbeat = redis.register_script(_PRELUDE + _HEARTBEAT)
        self._deregister = redis.register_script(_PRELUDE + _DEREGISTER)
        self._sweep = redis.register_script(_PRELUDE + _SWEEP)
        self._register_node = redis.register_script(_PRELUDE + _REGISTER_NODE)
        self._nodes = redis.register_script(_PRELUDE + _NODES)

    @classmethod
    def from_url(
        cls, url: str, timings: Timings | None = None, **options: Any
    ) -> RedisRegistryStore:
        """A store with its own client for ``url``, closed by :meth:`close`."""
        return cls(Redis.from_url(url), timings, owns_client=True, **options)

    def _key(self, name: str) -> str:
        return self._prefix + name

    async def _run(self, script: AsyncScript, *args: str | int | float | bytes) -> Any:
        now = "" if self._clock is None else repr(float(self._clock()))
        return await script(args=[self._prefix, now, self._log_size, *args])

    async def register(
        self,
        service: str,
        host: str,
        port: int,
        *,
        weight: int = 100,
        zone: str | None = None,
        metadata: Mapping[str, str] | None = None,
        owner: str,
    ) -> Instance:
        """Add an instance, or refresh the one already at ``service`` + ``host:port``."""
        reg = Registration.checked(
            service, host, port, weight=weight, zone=zone, metadata=metadata, owner=owner
        )
        # Registration is a dataclass of exactly the stored fields; orjson writes it as is.
        raw = await self._run(self._register, orjson.dumps(reg), uuid.uuid4().hex)
        return _instance(raw)

    async def heartbeat(self, instance_id: str, *, owner: str | None = None) -> Instance:
        """Record that the instance is alive; an unhealthy one becomes healthy again."""
        raw = await self._run(self._heartbeat, instance_id, owner or "")
        if raw is None:
            raise UnknownInstance(instance_id)
        if isinstance(raw, list):
            raise ForeignInstance(_instance(raw[1]))
        return _instance(raw)

    async def get(self, instance_id: str) -> Instance | None:
        """The instance with this id, or ``None`` if there is none."""
        service = await self._redis.hget(self._key("idx"), instance_id)
        if service is None:
            return None
        raw = await self._redis.hget(self._key(f"svc:{_text(service)}"), instance_id)
        return None if raw is None else _instance(raw)

    async def deregister(self, instance_id: str) -> None:
        """Remove the instance now (a clean shutdown)."""
        if not await self._run(self._deregister, instance_id):
            raise UnknownInstance(instance_id)

    async def instances(
        self, service: str, *, healthy_only: bool = True
    ) -> tuple[int, list[Instance]]:
        """The current revision and the instances by host and port (none for an unknown service)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(self._key("rev"))
            pipe.hvals(self._key(f"svc:{service}"))
            pipe.hget(self._key("thresholds"), service)
            revision, docs, threshold = await pipe.execute()
        chosen = protect(
            (_instance(doc) for doc in docs),
            healthy_only=healthy_only,
            threshold=float(threshold or 0),
        )
        return int(revision or 0), chosen

    async def revision(self) -> int:
        """The current revision (one GET)."""
        return int(await self._redis.get(self._key("rev")) or 0)

    async def services(self) -> list[ServiceSummary]:
        """Every service that has instances, by name."""
        names = sorted(_text(name) for name in await self._redis.smembers(self._key("services")))
        async with self._redis.pipeline(transaction=True) as pipe:
            for name in names:
                pipe.hvals(self._key(f"svc:{name}"))
            found = await pipe.execute()
        summaries = []
        for name, docs in zip(names, found, strict=True):
            members = [_instance(doc) for doc in docs]
            if members:  # gone between the two reads
                summaries.append(
                    ServiceSummary(name, len(members), sum(i.healthy for i in members))
                )
        return summaries

    async def configure_service(self, service: str, *, protect_threshold: float) -> None:
        """Set the protection threshold (0–1, default 0) of a service."""
        check_service(service)
        threshold = check_threshold(protect_threshold)
        if threshold:
            await self._redis.hset(self._key("thresholds"), service, repr(threshold))
        else:
            await self._redis.hdel(self._key("thresholds"), service)

    async def changes_since(self, revision: int, *, limit: int = 1000) -> Changes:
        """The changes after ``revision`` in order, or ``snapshot`` if the log lacks some."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(self._key("rev"))
            pipe.xrange(self._key("log"), count=1)
            pipe.xrange(self._key("log"), min=f"{max(revision, 0) + 1}-0", count=limit)
            raw_current, first, entries = await pipe.execute()
        current = int(raw_current or 0)
        if revision == current:
            return Changes(current)
        oldest = int(_text(first[0][0]).split("-", 1)[0]) if first else current + 1
        # Older than the log, or newer than this store has ever been (Redis lost its data).
        if revision < 0 or revision > current or revision + 1 < oldest:
            return Changes(current, snapshot=True)
        changes = [_change(entry_id, fields) for entry_id, fields in entries]
        if not changes:  # the log lost entries it should hold (deleted by hand)
            return Changes(current, snapshot=True)
        return Changes(changes[-1].revision, changes)

    async def wait_for_changes(self, revision: int, *, timeout_s: float) -> Changes:
        """Like :meth:`changes_since`, but wait up to ``timeout_s`` for a change if none is new."""
        result = await self.changes_since(revision)
        if result.changes or result.snapshot:
            return result
        # XREAD answers at once if an entry after ``revision`` arrived since the read above, so
        # no change slips between the two. It blocks in slices: one long block would outlast
        # the client's socket timeout; BLOCK 0 would mean forever, hence at least 1 ms.
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            block_ms = max(1, round(min(left, self._block_s) * 1000))
            after: dict[KeyT, StreamIdT] = {self._key("log"): f"{revision}-0"}
            if await self._redis.xread(after, count=1, block=block_ms):
                break
        return await self.changes_since(revision)

    async def sweep(self) -> int:
        """Mark silent instances unhealthy and remove expired ones; the number changed."""
        timings = self.timings
        changed = await self._run(
            self._sweep, repr(timings.unhealthy_after_s), repr(timings.remove_after_s)
        )
        return int(changed)

    async def register_node(self, node_id: str, url: str) -> None:
        """Announce (or keep alive) a registry node for ``remove_after_s``."""
        await self._run(self._register_node, node_id, url)

    async def nodes(self) -> list[NodeInfo]:
        """The registry nodes alive now, by id."""
        flat = [_text(v) for v in await self._run(self._nodes, repr(self.timings.remove_after_s))]
        found = [NodeInfo(flat[i], flat[i + 1], float(flat[i + 2])) for i in range(0, len(flat), 3)]
        return sorted(found, key=lambda node: node.node_id)

    async def remove_node(self, node_id: str) -> None:
        """Forget a registry node (it is shutting down)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self._key("nodes"), node_id)
            pipe.hdel(self._key("node_urls"), node_id)
            await pipe.execute()

    async def ping(self) -> bool:
        """Whether Redis answers."""
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        """Close the client if this store made it (``from_url``); a lent one stays open."""
        if self._owns_client:
            await self._redis.aclose()
