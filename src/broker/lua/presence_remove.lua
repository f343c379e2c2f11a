-- Removes a client's presence from a channel (keys as in presence_add.lua).
--
-- ARGV[1] client id
local clients, expiries, users = KEYS[1], KEYS[2], KEYS[3]
local client = ARGV[1]
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
return 1
