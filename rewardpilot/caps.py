"""Cap state and valuation overrides in Redis, read once per micro-batch.

Spend under caps lives in one hash per user and run, ``keys.cap_spend(user,
run)``, with a field per (card, tally, period), for example
``amex-gold|us-supermarkets|2026`` or ``citi-custom-cash|top:gas|2026-11``,
holding whole cents. ``load_spend`` reads a batch's fields with one HMGET per
user, all in one pipeline (one round trip). The engine then adds each
purchase to the loaded ``SpendState`` and lists the increments in
``Recommendation.spend_updates``.

Those increments must reach Redis in the same atomic step as the result:

* A redelivered transaction must never count twice, so the increments are
  applied only when the script creates the result marker.
* Two consumers working on one user at once must never both spend the same
  remaining room under a cap. So the script first compares every field the
  recommendation read with the value the consumer loaded. On any difference
  it applies nothing and returns a conflict, and the consumer reloads and
  recommends that transaction again.

``SETTLE_SPEND_LUA`` does both for one transaction (``settle_spend``). The
consumer's settle script (``consumer/settle.lua``) runs the same steps for
every result of a micro-batch before its XADD.
``apply_spend_updates`` is the plain pipeline of HINCRBY, without either
guard. NOTE: fields of past periods are never deleted; a user adds a few
fields a month.

Per-user valuation overrides live in ``keys.valuations(user)``, a hash of
program name to cents per point.
"""

from __future__ import annotations

from enum import Enum
from typing import Iterable, Mapping, Sequence

import redis
import redis.asyncio as aioredis

from rewardpilot.engine.state import SpendState
from rewardpilot.engine.valuations import ValuationTable, parse_cents
from rewardpilot.streams import LIVE_RUN, StreamKeys
from rewardpilot.wallets import check_user_id

SpendUpdates = Sequence[tuple[str, int]]

# KEYS[1] is the transaction's marker key and KEYS[2] the user's spend hash.
# ARGV[1] is the marker TTL in seconds (0 keeps it forever), ARGV[2] the number
# of checked fields n, then come n pairs (field, cents loaded) and the pairs
# (field, cents to add). Returns 1 when applied, 0 on a conflict (nothing
# changed) and -1 when the marker exists.
SETTLE_SPEND_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return -1
end
local checks = tonumber(ARGV[2])
local i = 3
for _ = 1, checks do
  local current = tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '0')
  if current ~= tonumber(ARGV[i + 1]) then
    return 0
  end
  i = i + 2
end
while i <= #ARGV do
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
local ttl = tonumber(ARGV[1])
if ttl > 0 then
  redis.call('SET', KEYS[1], '1', 'EX', ttl)
else
  redis.call('SET', KEYS[1], '1')
end
return 1
"""


class SettleOutcome(Enum):
    APPLIED = 1
    CONFLICT = 0
    DUPLICATE = -1


async def load_spend(
    aclient: aioredis.Redis, keys: StreamKeys, fields_by_user: Mapping[str, Iterable[str]], *,
    run: str = LIVE_RUN,
) -> SpendState:
    """Load the named spend fields of every user in one round trip; missing fields count as 0."""
    state = SpendState()
    wanted = {user: list(dict.fromkeys(fields)) for user, fields in fields_by_user.items()}
    wanted = {user: fields for user, fields in wanted.items() if fields}
    if not wanted:
        return state
    pipe = aclient.pipeline(transaction=False)
    for user, fields in wanted.items():
        pipe.hmget(keys.cap_spend(user, run), fields)
    replies = await pipe.execute()
    for (user, fields), values in zip(wanted.items(), replies):
        spend = state.user(user).spend
        for name, value in zip(fields, values):
            if value is not None:
                spend[name] = int(value)
    return state


async def apply_spend_updates(
    aclient: aioredis.Redis, keys: StreamKeys, updates_by_user: Mapping[str, SpendUpdates]
) -> None:
    """HINCRBY every (field, cents) increment, per user, in one pipeline.

    This is not idempotent: applying the same updates twice counts them
    twice. The settle script is where they belong (see the module docstring).
    """
    pipe = aclient.pipeline(transaction=True)
    count = 0
    for user, updates in updates_by_user.items():
        for name, cents in updates:
            pipe.hincrby(keys.cap_spend(user), name, int(cents))
            count += 1
    if count:
        await pipe.execute()


async def settle_spend(
    aclient: aioredis.Redis, keys: StreamKeys, user_id: str, marker: str,
    loaded: Mapping[str, int], updates: SpendUpdates, *, marker_ttl_seconds: int = 0,
) -> SettleOutcome:
    """Apply one transaction's spend updates atomically, once, and only if ``loaded`` is still current.

    ``loaded`` is every field the recommendation read, with the cents loaded
    before it (``SpendState.spent`` before ``recommend``). ``marker`` is the
    key recording that this transaction was applied.
    """
    args: list[object] = [int(marker_ttl_seconds), len(loaded)]
    for name, cents in loaded.items():
        args += [name, int(cents)]
    for name, cents in updates:
        args += [name, int(cents)]
    reply = await aclient.eval(SETTLE_SPEND_LUA, 2, marker, keys.cap_spend(user_id), *args)
    return SettleOutcome(int(reply))


def read_spend(client: redis.Redis, keys: StreamKeys, user_id: str, run: str = LIVE_RUN) -> dict[str, int]:
    """Read every spend field of one user in one run, in cents."""
    raw = client.hgetall(keys.cap_spend(check_user_id(user_id), run))
    return {_text(name): int(value) for name, value in raw.items()}


async def fetch_valuations(
    aclient: aioredis.Redis, keys: StreamKeys, user_ids: Iterable[str]
) -> dict[str, dict[str, str]]:
    """Valuation overrides (program -> cents per point) for a batch of users in one round trip."""
    users = list(dict.fromkeys(user_ids))
    if not users:
        return {}
    pipe = aclient.pipeline(transaction=False)
    for user in users:
        pipe.hgetall(keys.valuations(user))
    replies = await pipe.execute()
    return {
        user: {_text(program): _text(cents) for program, cents in reply.items()}
        for user, reply in zip(users, replies)
    }


def set_valuation(
    client: redis.Redis, keys: StreamKeys, user_id: str, program: str, cents: object, table: ValuationTable
) -> str:
    """Store a user's cents per point for one program; return the value stored.

    Raises ValueError naming the known programs for an unknown program, and
    for a value that is not a number of cents between 0 and 100, and
    ``FixedValuationError`` (a ValueError) for cash back.
    """
    from rewardpilot.user_terms import CASH_BACK_PROGRAM, check_settable_program

    user = check_user_id(user_id)
    check_settable_program(program)
    if program not in table.programs:
        known = ", ".join(sorted(name for name in table.programs if name != CASH_BACK_PROGRAM))
        raise ValueError(f"no valuation program {program!r}; known programs: {known}")
    value = format(parse_cents(program, cents), "f")
    client.hset(keys.valuations(user), program, value)
    return value


def unset_valuation(client: redis.Redis, keys: StreamKeys, user_id: str, program: str) -> bool:
    """Remove a user's stored value for one program, so the default applies again; return whether one was stored."""
    return bool(client.hdel(keys.valuations(check_user_id(user_id)), program))


def get_valuations(client: redis.Redis, keys: StreamKeys, user_id: str) -> dict[str, str]:
    """Read a user's valuation overrides, program -> cents per point."""
    raw = client.hgetall(keys.valuations(check_user_id(user_id)))
    return {_text(program): _text(cents) for program, cents in raw.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
