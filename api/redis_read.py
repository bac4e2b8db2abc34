"""Reads a page of one current period from the Redis hot model (see core/keys.py for the layout)."""

from __future__ import annotations

from datetime import date

import orjson
from redis.asyncio import Redis

from api.recent import Recent
from api.summary import GroupBy, GroupCounts, Page
from core import keys
from core.mirror import MirrorState
from core.periods import Period
from core.schema import COUNTERS

# One script so the ranking and the counters come from the same instant: a batch applied
# between two separate reads could otherwise pair an old order with newer counts.
# The page comes back as one JSON string ([groups, members, values]): parsing a reply of
# hundreds of bulk strings in Python cost more than everything else in a request (py-spy,
# bench/api_load.py), one string is parsed by orjson in microseconds.
# Redis answers only when provably current (core/mirror.py): it holds the epoch Postgres
# names and at least the batches Postgres confirmed, the bucket has data for this grouping
# (the presence field in its action hash), and both keys that flag says exist are there (an
# evicted key sends the read to Postgres instead of answering a partial page).
# KEYS: ready, applied count, the bucket's presence hash, rank, counts, the bucket's custom
# types. ARGV: epoch, confirmed, presence field, first index, last index, then the counter
# names of the hash (the total is the score). Per member the reply holds the counters, then
# each custom type.
READ_PAGE_SCRIPT = f"""
if redis.call('GET', KEYS[1]) ~= ARGV[1]
   or tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[2])
   or redis.call('HEXISTS', KEYS[3], ARGV[3]) == 0
   or redis.call('EXISTS', KEYS[4]) == 0 or redis.call('EXISTS', KEYS[5]) == 0 then
  return false
end
local ranked = redis.call('ZRANGE', KEYS[4], ARGV[4], ARGV[5], 'WITHSCORES')
local types = redis.call('SMEMBERS', KEYS[6])
local members, scores, fields = {{}}, {{}}, {{}}
for i = 1, #ranked, 2 do
  local m = ranked[i]
  members[#members + 1] = m
  scores[#scores + 1] = ranked[i + 1]
  for c = 6, #ARGV do fields[#fields + 1] = ARGV[c] .. ':' .. m end
  for _, t in ipairs(types) do
    fields[#fields + 1] = '{keys.OUTCOME_FIELD_PREFIX}' .. t .. ':' .. m
  end
end
local values = {{}}
if #fields > 0 then values = redis.call('HMGET', KEYS[5], unpack(fields)) end
return cjson.encode({{redis.call('ZCARD', KEYS[4]), members, scores, values, types}})
"""


# Pages kept parsed, by request shape: while the counters do not move, polls of the same
# page get the same bytes from Redis and the same Page object back (no parsing).
PARSED_PAGES = 64


class RedisReader:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._prefix = prefix
        self._read_page = redis.register_script(READ_PAGE_SCRIPT)
        self._parsed: Recent[tuple[bytes, Page]] = Recent(PARSED_PAGES)

    async def period_page(
        self,
        proof: MirrorState,
        tenant: str,
        group_by: GroupBy,
        period: Period,
        start: date,
        limit: int,
        offset: int,
    ) -> Page | None:
        """A page in API order, or None when Redis cannot answer: not provably current
        (``proof``: what Postgres vouches for), keys evicted, or no data."""
        p, dim, per = self._prefix, group_by.value, period.value
        script_keys = [
            keys.ready_key(p),
            keys.applied_count_key(p),
            keys.presence_key(p, tenant, per, start),
            keys.rank_key(p, tenant, dim, per, start),
            keys.counts_key(p, tenant, dim, per, start),
            keys.types_key(p, tenant, dim, per, start),
        ]
        args: list[str | int] = [
            proof.epoch,
            proof.confirmed,
            keys.present_field(dim),
            offset,
            offset + limit - 1,
            *keys.HASH_COUNTERS,
        ]
        result = await self._read_page(keys=script_keys, args=args)
        if result is None:
            return None
        shape = (tenant, dim, per, start, limit, offset)
        parsed = self._parsed.get(shape)
        if parsed is not None and parsed[0] == result:
            return parsed[1]
        page = _parse(result)
        self._parsed.put(shape, (result, page))
        return page


def _parse(result: bytes) -> Page:
    """The script's JSON reply as a Page."""
    total_groups, members, scores, values, types = orjson.loads(result)
    # cjson writes an empty Lua table as {}; a missing field comes back as false (int: 0).
    counts = list(map(int, values or ()))
    types = list(types or ())
    counters = len(keys.HASH_COUNTERS)
    width = counters + len(types)
    groups = []
    for i, member in enumerate(members or ()):
        row = counts[i * width : (i + 1) * width]
        named = dict(zip(keys.HASH_COUNTERS, row[:counters], strict=True))
        named["total"] = -int(float(scores[i]))
        custom = {t: n for t, n in zip(types, row[counters:], strict=True) if n}
        groups.append(GroupCounts(member, *(named[c] for c in COUNTERS), custom=custom))
    return Page(int(total_groups), groups)
