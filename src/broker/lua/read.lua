-- Reads a channel's stream: its epoch, top offset and the publications a
-- query asks for. A read of an unknown stream creates its epoch (so the
-- epoch a client is told stays valid). Publications older than the
-- stream's ttl are dropped first; entries beyond its size (left by
-- approximate trimming) are skipped. See src/broker/redis_history.rs.
--
-- KEYS[1] meta hash, KEYS[2] stream (as in append.lua)
-- ARGV[1] epoch for a stream that does not exist yet
-- ARGV[2] how long a meta hash created by a read is kept (ms)
-- ARGV[3] limit (at most this many publications)
-- ARGV[4] since offset ('' = no since)
-- ARGV[5] since epoch
--
-- Returns {epoch, top, entries}: with a since of this epoch at or below
-- the top, the entries after it, oldest first, up to limit + 1 (one more
-- tells the caller the page was cut); otherwise the newest `limit`
-- entries, newest first. Entries are XRANGE replies.
local meta, stream = KEYS[1], KEYS[2]

local state = redis.call('HMGET', meta, 'e', 'o', 't', 'n')
local epoch = state[1]
if not epoch then
  redis.call('HSET', meta, 'e', ARGV[1], 'o', 0)
  redis.call('PEXPIRE', meta, ARGV[2])
  redis.call('DEL', stream)
  return {ARGV[1], '0', {}}
end
local top = tonumber(state[2] or '0')
local top_text = string.format('%d', top)
local ttl = tonumber(state[3] or '')
-- Offsets at or below this one are no longer retained.
local gone = math.max(top - tonumber(state[4] or '0'), 0)

if ttl then
  local now = redis.call('TIME')
  now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  while true do
    local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 100)
    local expired = {}
    local done = #oldest < 100
    for _, entry in ipairs(oldest) do
      local fields, time = entry[2], nil
      for i = 1, #fields, 2 do
        if fields[i] == 't' then time = tonumber(fields[i + 1]) end
      end
      if time and time + ttl > now then
        done = true
        break
      end
      expired[#expired + 1] = entry[1]
    end
    if #expired > 0 then
      redis.call('XDEL', stream, unpack(expired))
    end
    if done then break end
  end
end

local limit = tonumber(ARGV[3])
local since = tonumber(ARGV[4])
if since and ARGV[5] == epoch and since <= top then
  local from = '(' .. string.format('%d', math.max(since, gone)) .. '-0'
  return {epoch, top_text, redis.call('XRANGE', stream, from, '+', 'COUNT', limit + 1)}
end
if limit == 0 then
  return {epoch, top_text, {}}
end
local to = '(' .. string.format('%d', gone) .. '-0'
return {epoch, top_text, redis.call('XREVRANGE', stream, '+', to, 'COUNT', limit)}
