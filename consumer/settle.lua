-- Settle a micro-batch in one atomic step: publish each entry's result or
-- dead letter unless this run already has an outcome for that transaction,
-- then XACK every entry. A redelivered entry therefore never yields a second
-- result, and no result exists whose entry is still pending.
--
-- KEYS[1] results stream, KEYS[2] dead-letter stream, KEYS[3] transactions stream
-- ARGV[1] consumer group, ARGV[2] marker TTL in seconds, ARGV[3] results MAXLEN (0 = none)
-- then six values per entry: kind ('r' result, 'd' dead letter, 'a' XACK
-- only, for an entry whose transaction could not even be read), entry id,
-- marker key, payload JSON, user_id, transaction_id.
-- Returns {results written, duplicates skipped, dead letters written}.
local group = ARGV[1]
local ttl = tonumber(ARGV[2])
local maxlen = tonumber(ARGV[3])
local written, duplicates, dead = 0, 0, 0
local ids = {}

for i = 4, #ARGV, 6 do
  local kind, entry, marker = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local payload, user, transaction = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  ids[#ids + 1] = entry

  if kind == 'a' then
    -- nothing to publish
  elseif redis.call('EXISTS', marker) == 1 then
    duplicates = duplicates + 1
  else
    local id
    if kind == 'r' then
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
  end
end

-- XACK takes many ids at once; unpack in slices to stay within Lua's stack.
for i = 1, #ids, 1000 do
  redis.call('XACK', KEYS[3], group, unpack(ids, i, math.min(i + 999, #ids)))
end

return {written, duplicates, dead}
