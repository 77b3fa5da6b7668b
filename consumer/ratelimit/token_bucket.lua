-- A shared, adaptive token bucket in one hash, updated atomically.
--
-- KEYS[1]  the bucket hash
-- ARGV[1]  operation: acquire, release, penalize, reward or peek
-- ARGV[2]  configured rate, tokens per second
-- ARGV[3]  burst, tokens
-- ARGV[4]  cost in tokens (acquire, release)
-- ARGV[5]  decrease factor for penalize, between 0 and 1
-- ARGV[6]  floor rate, tokens per second
-- ARGV[7]  recovery, tokens per second gained per second of rewards
-- ARGV[8]  minimum microseconds between two cuts
-- ARGV[9]  key TTL in milliseconds
-- ARGV[10] role: owner or guest
-- ARGV[11] counting mode of an owner: requests or transactions
-- ARGV[12] name of the consumer an owner runs in, stored as set_by
--
-- An owner writes its configured rate, burst, counting mode and name into the
-- hash, so the latest owner's settings apply to every caller. A guest (a
-- replay) uses the stored settings and never writes them. Its cost (ARGV[4])
-- is the transactions in its batch, which the stored counting mode turns into
-- tokens. When no owner has set the bucket up, a guest is granted at once and
-- nothing is written.
--
-- Returns {granted (0 or 1), wait_ms, tokens, effective_rate, now_us, cut (0 or 1),
-- present (0 or 1), configured_rate}. present is 0 only for a guest that found no bucket.
-- Numbers other than the flags and wait_ms come back as strings, because Redis
-- truncates Lua numbers in replies to integers.
--
-- Time comes from the server's TIME, so the callers' clocks do not matter.
-- Redis 5 and later replicate a script's effects rather than the script, so
-- calling TIME before writing is allowed. Redis 7 and Valkey replicate only effects.

local key = KEYS[1]
local op = ARGV[1]
local configured = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local factor = tonumber(ARGV[5])
local floor_rate = tonumber(ARGV[6])
local recovery = tonumber(ARGV[7])
local cut_interval = tonumber(ARGV[8])
local ttl_ms = tonumber(ARGV[9])
local role = ARGV[10]
local counting = ARGV[11]
local set_by = ARGV[12]

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

-- The tokens a guest needs in the bucket before it may take its cost. A guest
-- batch that costs more than the burst takes the whole burst and leaves the
-- bucket in debt, so its transactions still count at the shared rate.
local needed = cost
if role == 'guest' then
  local shared = redis.call('HMGET', key, 'configured', 'burst', 'counting')
  local shared_rate = tonumber(shared[1])
  local shared_burst = tonumber(shared[2])
  if not shared_rate or not shared_burst then
    return {1, 0, '-1', '-1', string.format('%.0f', now), 0, 0, '-1'}
  end
  -- The guest's floor and recovery keep their ratio to its own rate.
  floor_rate = floor_rate / configured * shared_rate
  recovery = recovery / configured * shared_rate
  configured = shared_rate
  burst = shared_burst
  if shared[3] ~= 'transactions' then cost = math.min(cost, 1) end
  needed = math.min(cost, burst)
elseif role ~= 'owner' then
  return redis.error_reply('unknown token bucket role: ' .. tostring(role))
end

local state = redis.call('HMGET', key, 'tokens', 'updated_us', 'rate', 'cut_us', 'grown_us')
local tokens = tonumber(state[1]) or burst
local updated = tonumber(state[2]) or now
local rate = tonumber(state[3]) or configured
local cut_at = tonumber(state[4]) or 0
local grown_at = tonumber(state[5]) or 0

-- The latest caller's settings win, so a lowered rate or burst applies at once.
if rate > configured then rate = configured end
if rate < floor_rate then rate = floor_rate end

-- Refill for the time since the last update. A clock that stepped back
-- (for example after a failover) refills nothing instead of draining.
local elapsed = now - updated
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate / 1000000)

local granted = 1
local wait_ms = 0
local cut = 0

if op == 'acquire' then
  if tokens >= needed then
    tokens = tokens - cost
  else
    -- The denied caller gets the time until enough tokens accrue at the
    -- current rate. It reserves nothing, so a cancelled waiter owes nothing.
    granted = 0
    wait_ms = math.max(1, math.ceil((needed - tokens) * 1000 / rate))
  end
elseif op == 'release' then
  tokens = math.min(burst, tokens + cost)
elseif op == 'penalize' then
  -- One cut per interval: consumers that see the same run of 429s cut once.
  if now - cut_at >= cut_interval and rate > floor_rate then
    rate = math.max(floor_rate, rate * factor)
    cut_at = now
    cut = 1
  end
elseif op == 'reward' then
  -- Credit the time since the last reward or cut, at most one second, so a
  -- single success after a long idle spell does not restore the full rate.
  if rate < configured then
    local since = math.max(grown_at, cut_at)
    local credit = math.min(math.max(now - since, 0), 1000000)
    rate = math.min(configured, rate + recovery * credit / 1000000)
  end
  grown_at = now
elseif op ~= 'peek' then
  return redis.error_reply('unknown token bucket operation: ' .. tostring(op))
end

if op ~= 'peek' then
  redis.call('HSET', key,
    'tokens', string.format('%.17g', tokens),
    'updated_us', string.format('%.0f', now),
    'rate', string.format('%.17g', rate),
    'cut_us', string.format('%.0f', cut_at),
    'grown_us', string.format('%.0f', grown_at))
  if role == 'owner' then
    redis.call('HSET', key,
      'configured', string.format('%.17g', configured),
      'burst', string.format('%.17g', burst),
      'counting', counting,
      'set_by', set_by)
  end
  redis.call('PEXPIRE', key, ttl_ms)
end

return {granted, wait_ms, string.format('%.17g', tokens), string.format('%.17g', rate), string.format('%.0f', now), cut,
        1, string.format('%.17g', configured)}
