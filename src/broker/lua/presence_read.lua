-- Reads a channel's presence after removing expired entries (keys as in
-- presence_add.lua): the clients of nodes that stopped refreshing.
--
-- ARGV[1] 'g' = get: every entry; 's' = stats: {clients, users}
local clients, expiries, users = KEYS[1], KEYS[2], KEYS[3]
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)

local expired = redis.call('ZRANGEBYSCORE', expiries, '-inf', now)
for _, client in ipairs(expired) do
  local old = redis.call('HGET', clients, client)
  if old then
    local sep = string.find(old, ':', 1, true)
    local user = string.sub(old, sep + 1, sep + tonumber(string.sub(old, 1, sep - 1)))
    if redis.call('HINCRBY', users, user, -1) <= 0 then
      redis.call('HDEL', users, user)
    end
    redis.call('HDEL', clients, client)
  end
  redis.call('ZREM', expiries, client)
end

if ARGV[1] == 's' then
  return {redis.call('HLEN', clients), redis.call('HLEN', users)}
end
return redis.call('HVALS', clients)
