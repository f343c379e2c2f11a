-- Adds (or refreshes) a client's presence in a channel.
-- See src/presence/redis.rs for the key layout.
--
-- KEYS[1] hash client id -> "<user length>:<user><ClientInfo JSON>"
-- KEYS[2] zset client id -> expiry (ms, Redis clock)
-- KEYS[3] hash user -> number of that user's clients
-- ARGV[1] client id
-- ARGV[2] entry ("<user length>:<user><ClientInfo JSON>")
-- ARGV[3] user
-- ARGV[4] ttl (ms)
-- ARGV[5] 'r' = refresh only: extend an entry that is still there
--
-- Returns 1, or 0 when a refresh found no entry (the caller adds it again).
local clients, expiries, users = KEYS[1], KEYS[2], KEYS[3]
local client, ttl = ARGV[1], tonumber(ARGV[4])
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)

local function keep(key)
  -- Keys outlive their newest entry, then vanish on their own.
  if redis.call('PTTL', key) < 2 * ttl then
    redis.call('PEXPIRE', key, 2 * ttl)
  end
end

if ARGV[5] == 'r' then
  if not redis.call('ZSCORE', expiries, client) then
    return 0
  end
else
  local old = redis.call('HGET', clients, client)
  if old then
    local sep = string.find(old, ':', 1, true)
    local user = string.sub(old, sep + 1, sep + tonumber(string.sub(old, 1, sep - 1)))
    if redis.call('HINCRBY', users, user, -1) <= 0 then
      redis.call('HDEL', users, user)
    end
  end
  redis.call('HSET', clients, client, ARGV[2])
  redis.call('HINCRBY', users, ARGV[3], 1)
end
redis.call('ZADD', expiries, now + ttl, client)
keep(clients)
keep(expiries)
keep(users)
return 1
