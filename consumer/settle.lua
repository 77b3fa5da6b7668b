-- Settle a micro-batch in one atomic step: apply each result's spend under
-- caps and publish its result or dead letter unless this run already has an
-- outcome for that transaction, then XACK every settled entry. A redelivered
-- entry therefore never yields a second result nor counts twice under a cap,
-- and no result exists whose entry is still pending.
--
-- KEYS[1] results stream, KEYS[2] dead-letter stream, KEYS[3] transactions stream
-- ARGV[1] consumer group, ARGV[2] marker TTL in seconds (0 = none, for a replay
-- outside a job, whose results stream never expires either), ARGV[3] results
-- MAXLEN (0 = none), ARGV[4] cap hash TTL in seconds (0 = none, for the live
-- run and for a replay outside a job),
-- ARGV[5] marker key prefix, ARGV[6] cap hash key prefix, ARGV[7] result
-- count R, ARGV[8] dead-letter count D, ARGV[9] a job's stream TTL in
-- seconds (0 = none): a results or dead-letter stream that this call wrote
-- to and that has no expiry gets it (EXPIRE NX, Redis 7.0 and later), in the
-- same atomic step, so a consumer killed after a settle leaves none behind
-- without one. Three sections follow.
--   R results. Each is an entry id, payload JSON, user_id, transaction_id,
--     check count c and update count u. Then come c pairs (hash field, cents
--     the recommendation read) and u pairs (hash field, cents to add).
--   D dead letters. Each is an entry id, payload JSON, user_id and
--     transaction_id, or "entry:<entry id>" when the transaction could not
--     be read.
--   The rest: entry ids to XACK only (entries skipped without an outcome).
-- A marker key is the marker prefix followed by the transaction_id, and its
-- value is the id of the transactions stream entry that was settled. A
-- user's cap hash is the cap prefix followed by the user_id.
-- Returns {results written, duplicates skipped, dead letters written,
-- {entry ids in conflict}, {skipped entry id, marker value, ...}}. The last
-- list pairs each entry skipped as a duplicate with the entry id in its marker,
-- the entry the run settled first for that transaction_id. It is
-- empty unless the batch has duplicates, so the usual reply stays as short.
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
local marker_prefix, cap_prefix = ARGV[5], ARGV[6]
local result_count, dead_count = tonumber(ARGV[7]), tonumber(ARGV[8])
local stream_ttl = tonumber(ARGV[9])
local written, duplicates, dead = 0, 0, 0
local ids = {}
local conflicts = {}
local held_back = {}
local skipped = {}

local function stale(caps, first, count)
  for j = first, first + 2 * (count - 1), 2 do
    local current = tonumber(redis.call('HGET', caps, ARGV[j]) or '0')
    if current ~= tonumber(ARGV[j + 1]) then
      return true
    end
  end
  return false
end

-- Add a result or dead letter. When XADD fails (a key of the wrong type, out
-- of memory), the marker set just before it is deleted and the script stops
-- with XADD's error, so no marker exists without its entry.
local function xadd(stream, trim, payload, user, transaction, marker)
  local id
  if trim and maxlen > 0 then
    id = redis.pcall('XADD', stream, 'MAXLEN', '~', maxlen, '*',
      'data', payload, 'user_id', user, 'transaction_id', transaction)
  else
    id = redis.pcall('XADD', stream, '*',
      'data', payload, 'user_id', user, 'transaction_id', transaction)
  end
  if type(id) == 'table' and id.err then
    redis.call('DEL', marker)
    error(id)
  end
  return id
end

-- Set a marker to the settled entry id, with the marker TTL unless that is 0.
-- With only_new, SET NX leaves an existing marker alone and the call returns
-- false.
-- Four plain calls, because building an argument table for each result costs
-- the server more on this path, which runs once per result.
local function set_marker(marker, entry, only_new)
  if ttl == 0 then
    if only_new then
      return redis.call('SET', marker, entry, 'NX')
    end
    return redis.call('SET', marker, entry)
  end
  if only_new then
    return redis.call('SET', marker, entry, 'NX', 'EX', ttl)
  end
  return redis.call('SET', marker, entry, 'EX', ttl)
end

-- Count an entry skipped because its marker exists, and record the entry id
-- in the marker. The GET runs for duplicates only, never for a new entry.
local function skip(entry, marker)
  duplicates = duplicates + 1
  skipped[#skipped + 1] = entry
  skipped[#skipped + 1] = redis.call('GET', marker) or ''
end

-- Set the marker with SET NX and add the entry only when the marker is new.
-- Returns whether the entry was added.
local function add_once(stream, trim, entry, payload, user, transaction, marker)
  if not set_marker(marker, entry, true) then
    return false
  end
  xadd(stream, trim, payload, user, transaction, marker)
  return true
end

local i = 10
for _ = 1, result_count do
  local entry, payload, user, transaction = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local checks, updates = tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
  local first_check = i + 6
  local first_update = first_check + 2 * checks
  i = first_update + 2 * updates
  local marker = marker_prefix .. transaction

  if checks == 0 and updates == 0 and not held_back[user] then
    -- No cap state to check or change, so SET NX checks and sets the marker in one call.
    if add_once(KEYS[1], true, entry, payload, user, transaction, marker) then
      written = written + 1
    else
      skip(entry, marker)
    end
    ids[#ids + 1] = entry
  elseif redis.call('EXISTS', marker) == 1 then
    skip(entry, marker)
    ids[#ids + 1] = entry
  elseif held_back[user] or (checks > 0 and stale(cap_prefix .. user, first_check, checks)) then
    held_back[user] = true
    conflicts[#conflicts + 1] = entry
  else
    -- The result first, so a failed XADD leaves neither a marker nor any spend.
    set_marker(marker, entry, false)
    xadd(KEYS[1], true, payload, user, transaction, marker)
    local caps = cap_prefix .. user
    for j = first_update, first_update + 2 * (updates - 1), 2 do
      redis.call('HINCRBY', caps, ARGV[j], ARGV[j + 1])
    end
    if updates > 0 and cap_ttl > 0 then
      redis.call('EXPIRE', caps, cap_ttl)
    end
    written = written + 1
    ids[#ids + 1] = entry
  end
end

for _ = 1, dead_count do
  local entry, payload, user, transaction = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  i = i + 4
  local marker = marker_prefix .. transaction
  if add_once(KEYS[2], false, entry, payload, user, transaction, marker) then
    dead = dead + 1
  else
    skip(entry, marker)
  end
  ids[#ids + 1] = entry
end

for j = i, #ARGV do
  ids[#ids + 1] = ARGV[j]
end

if stream_ttl > 0 and written > 0 then
  redis.call('EXPIRE', KEYS[1], stream_ttl, 'NX')
end
if stream_ttl > 0 and dead > 0 then
  redis.call('EXPIRE', KEYS[2], stream_ttl, 'NX')
end

-- XACK takes many ids at once; unpack in slices to stay within Lua's stack.
for j = 1, #ids, 1000 do
  redis.call('XACK', KEYS[3], group, unpack(ids, j, math.min(j + 999, #ids)))
end

return {written, duplicates, dead, conflicts, skipped}
