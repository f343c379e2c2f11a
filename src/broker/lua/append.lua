-- Appends one publication to a channel's stream and, given a pub/sub
-- channel, publishes its rendered frame: one round trip, atomic, so the
-- offset order on the pub/sub channel is the offset order of the stream.
-- See src/broker/redis_history.rs for the key layout.
--
-- KEYS[1]  meta hash: e = epoch, o = top offset, and of the last append
--          t = history ttl (ms), n = history size
-- KEYS[2]  stream of retained publications: id "<offset>-0",
--          fields d = data (JSON), t = time (ms), i = publisher info (JSON);
--          trimmed to n (approximately from n = 100 on: reads ignore
--          entries at or below top - n)
-- KEYS[3]  the idempotency key's string "<offset>:<epoch>" (only when the
--          publication has a key)
-- ARGV[1]  epoch for a stream that does not exist yet
-- ARGV[2]  publication time (ms since the Unix epoch)
-- ARGV[3]  history size (0 = keep no publication, still count offsets)
-- ARGV[4]  history ttl (ms)
-- ARGV[5]  idempotency window (ms)
-- ARGV[6]  how long the meta hash outlives the last append at least (ms)
-- ARGV[7]  data (JSON text)
-- ARGV[8]  publisher info (JSON text; '' = none)
-- ARGV[9]  pub/sub channel to publish on ('' = do not publish)
-- ARGV[10] frame head, ARGV[11] frame tail (see FrameTemplate::render)
-- ARGV[12] excluded client id ('' = none)
--
-- Returns {1, offset, epoch} once appended, {0, offset, epoch} when the
-- idempotency key was seen within its window (nothing appended).
local meta, stream, key = KEYS[1], KEYS[2], KEYS[3]

local state = redis.call('HMGET', meta, 'e', 't', 'n')
local epoch = state[1]
if not epoch then
  -- A new life of the stream: drop whatever an earlier one left.
  epoch = ARGV[1]
  redis.call('HSET', meta, 'e', epoch, 't', ARGV[4], 'n', ARGV[3])
  redis.call('DEL', stream)
  state = {epoch, ARGV[4], ARGV[3]}
end

if key then
  local seen = redis.call('GET', key)
  if seen then
    local sep = string.find(seen, ':', 1, true)
    if sep and string.sub(seen, sep + 1) == epoch then
      return {0, string.sub(seen, 1, sep - 1), epoch}
    end
  end
end

if state[2] ~= ARGV[4] or state[3] ~= ARGV[3] then
  redis.call('HSET', meta, 't', ARGV[4], 'n', ARGV[3])
end
local offset = string.format('%d', redis.call('HINCRBY', meta, 'o', 1))
local ttl = tonumber(ARGV[4])

local size = tonumber(ARGV[3])
if size > 0 and ttl > 0 then
  local xadd = {'XADD', stream, 'MAXLEN', ARGV[3], offset .. '-0', 'd', ARGV[7], 't', ARGV[2]}
  if size >= 100 then
    -- Trimming whole stream nodes only is much cheaper; at most about
    -- 100 entries too many stay, which reads skip.
    table.insert(xadd, 4, '~')
  end
  if ARGV[8] ~= '' then
    xadd[#xadd + 1] = 'i'
    xadd[#xadd + 1] = ARGV[8]
  end
  redis.call(unpack(xadd))
  redis.call('PEXPIRE', stream, ttl)
else
  redis.call('DEL', stream)
end

local window = tonumber(ARGV[5])
if key and window > 0 then
  redis.call('SET', key, offset .. ':' .. epoch, 'PX', window)
end
redis.call('PEXPIRE', meta, math.max(ttl, window, tonumber(ARGV[6])))

if ARGV[9] ~= '' then
  redis.call('PUBLISH', ARGV[9], 'p:' .. offset .. ':' .. ARGV[12] .. ':' ..
    ARGV[10] .. offset .. ',"epoch":"' .. epoch .. ARGV[11])
end
return {1, offset, epoch}
