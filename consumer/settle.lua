-- Settle a micro-batch in one atomic step: apply each result's spend under
-- caps and publish its result or dead letter unless this run already has an
-- outcome for that transaction, then XACK every settled entry. A redelivered
-- entry therefore never yields a second result nor counts twice under a cap,
-- and no result exists whose entry is still pending.
--
-- KEYS[1] results stream, KEYS[2] dead-letter stream, KEYS[3] transactions stream
-- ARGV[1] consumer group, ARGV[2] marker TTL in seconds, ARGV[3] results MAXLEN
-- (0 = none), ARGV[4] cap hash TTL in seconds (0 = none, for the live run)
-- Then come nine values per entry, followed by its field pairs:
--   kind: 'r' result, 'd' dead letter, or 'a' XACK only (for an entry whose
--     transaction could not even be read);
--   entry id, marker key, payload JSON, user_id, transaction_id;
--   cap hash key, check count c, update count u (both 0 unless a result);
--   c pairs (hash field, cents the recommendation read);
--   u pairs (hash field, cents to add).
-- Returns {results written, duplicates skipped, dead letters written,
-- {entry ids in conflict}}.
--
-- A result is in conflict when a checked field no longer has the cents the
-- consumer loaded, because another consumer spent under the same cap in between. A
-- conflict changes nothing and its entry is not acknowledged; the consumer
-- loads the spend again and recommends that transaction once more. Every
-- later result of the same user in this batch is held back as a conflict as
-- well, so a user's results keep their order. Entries run in the order
-- given, so an earlier result's increments are applied before a later
-- result of the same user is checked.
local group = ARGV[1]
local ttl = tonumber(ARGV[2])
local maxlen = tonumber(ARGV[3])
local cap_ttl = tonumber(ARGV[4])
local written, duplicates, dead = 0, 0, 0
local ids = {}
local conflicts = {}
local held_back = {}

local function stale(caps, first, count)
  for j = first, first + 2 * (count - 1), 2 do
    local current = tonumber(redis.call('HGET', caps, ARGV[j]) or '0')
    if current ~= tonumber(ARGV[j + 1]) then
      return true
    end
  end
  return false
end

local i = 5
while i <= #ARGV do
  local kind, entry, marker = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local payload, user, transaction = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local caps = ARGV[i + 6]
  local checks, updates = tonumber(ARGV[i + 7]), tonumber(ARGV[i + 8])
  local first_check = i + 9
  local first_update = first_check + 2 * checks
  i = first_update + 2 * updates

  if kind == 'a' then
    ids[#ids + 1] = entry
  elseif redis.call('EXISTS', marker) == 1 then
    duplicates = duplicates + 1
    ids[#ids + 1] = entry
  elseif kind == 'r' and (held_back[user] or stale(caps, first_check, checks)) then
    held_back[user] = true
    conflicts[#conflicts + 1] = entry
  else
    local id
    if kind == 'r' then
      for j = first_update, first_update + 2 * (updates - 1), 2 do
        redis.call('HINCRBY', caps, ARGV[j], ARGV[j + 1])
      end
      if updates > 0 and cap_ttl > 0 then
        redis.call('EXPIRE', caps, cap_ttl)
      end
      if maxlen > 0 then
        id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*',
          'data', payload, 'user_id', user, 'transaction_id', transaction)
      else
        id = redis.call('XADD', KEYS[1], '*',
          'data', payload, 'user_id', user, 'transaction_id', transaction)
      end
      written = written + 1
    else
      id = redis.call('XADD', KEYS[2], '*',
        'data', payload, 'user_id', user, 'transaction_id', transaction)
      dead = dead + 1
    end
    redis.call('SET', marker, id, 'EX', ttl)
    ids[#ids + 1] = entry
  end
end

-- XACK takes many ids at once; unpack in slices to stay within Lua's stack.
for j = 1, #ids, 1000 do
  redis.call('XACK', KEYS[3], group, unpack(ids, j, math.min(j + 999, #ids)))
end

return {written, duplicates, dead, conflicts}
