package redislock

import "github.com/redis/go-redis/v9"

// Every lock is one Redis hash at its key, so that all of a lock's state sits
// in one hash slot (Redis Cluster) whatever the key looks like:
//
//	owner  the 128-bit token (32 hex digits) of the holder, or "" when free
//	until  the server time (ms) at which the holder's lease ends
//	fence  the fencing counter: incremented by every acquisition, never reset
//	       by expiry, so it survives the lease
//	q      the FIFO wait queue: fixed-width entries of the waiter's token (32),
//	       the entry's deadline (13 digits, server ms; a waiter that stops
//	       re-checking drops out) and the waiter's lease TTL (10 digits, ms)
//
// Leases are judged with the server clock (TIME), as PEXPIRE would be. A
// release hands the lock straight to the head of the queue and PUBLISHes
// "token:fence:key" on the backend's channel, so the waiter learns it holds
// the lock without another round trip, and a releaser cannot barge back in.
//
// Every script takes the same ARGV: token, lease TTL (ms), mode ("0" try,
// "1" wait in the queue), queue entry validity (ms), channel.
//
// The acquire and release scripts start with a fast path for the common
// case (acquire: every key free and nobody queued; release: every key owned
// by the caller and nobody queued) that returns before the prelude: it does
// what the general path would do, with fewer commands and without creating
// the prelude's functions, which Lua would otherwise do on every call.
const clock = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

const args = `
local tok, ttl, mode, qttl, ch = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), ARGV[5]
`

const prelude = args + clock + funcs

const funcs = `
local W = 55

local function holder(k)
  local v = redis.call('HMGET', k, 'owner', 'until')
  if v[1] and v[1] ~= '' and tonumber(v[2]) > now then return v[1], tonumber(v[2]) - now end
  return false, 0
end

local function purge(k, q)
  if not q then return '' end
  local out, drop = {}, false
  for i = 1, #q, W do
    local e = string.sub(q, i, i + W - 1)
    if tonumber(string.sub(e, 33, 45)) > now then out[#out + 1] = e else drop = true end
  end
  if drop then
    q = table.concat(out)
    if q == '' then redis.call('HDEL', k, 'q') else redis.call('HSET', k, 'q', q) end
  end
  return q
end

local function grant(k, q)
  if q == '' then return end
  local gt = string.sub(q, 1, 32)
  local gttl = tonumber(string.sub(q, 46, 55))
  local rest = string.sub(q, W + 1)
  local f = redis.call('HINCRBY', k, 'fence', 1)
  redis.call('HSET', k, 'owner', gt, 'until', now + gttl)
  if rest == '' then redis.call('HDEL', k, 'q') else redis.call('HSET', k, 'q', rest) end
  redis.call('PUBLISH', ch, gt .. ':' .. f .. ':' .. k)
end

local function free(k, q)
  redis.call('HSET', k, 'owner', '', 'until', '0')
  grant(k, purge(k, q))
end

local function dequeue(k)
  local q = redis.call('HGET', k, 'q')
  if not q then return end
  for i = 1, #q, W do
    if string.sub(q, i, i + 31) == tok then
      q = string.sub(q, 1, i - 1) .. string.sub(q, i + W)
      if q == '' then redis.call('HDEL', k, 'q') else redis.call('HSET', k, 'q', q) end
      return
    end
  end
end

local function enqueue(k)
  local q = redis.call('HGET', k, 'q') or ''
  local e = tok .. string.format('%013d%010d', now + qttl, ttl)
  for i = 1, #q, W do
    if string.sub(q, i, i + 31) == tok then
      redis.call('HSET', k, 'q', string.sub(q, 1, i - 1) .. e .. string.sub(q, i + W))
      return
    end
  end
  redis.call('HSET', k, 'q', q .. e)
end
`

// acquireScript takes every key (sorted) or none. It returns {1, fence...}
// on success, or {0, i, ms}: key i blocks, for at most ms more unless
// renewed. A free key with waiters goes to the head waiter, not to the
// caller. On failure the caller keeps only keys below the blocking one that
// were handed to it earlier (ordered hold-and-wait), gives up every key above
// it (handing them on), and in wait mode holds a place in the queue of the
// blocking key only.
//
// The fast path takes the keys when each is free (no owner, or a lapsed
// lease of another token) and has no queue; the general path then finds
// the keys' state read already in vs.
var acquireScript = redis.NewScript(clock + `
local n = #KEYS
local vs = {}
do
  local tok, ttl = ARGV[1], tonumber(ARGV[2])
  local fast = true
  for i = 1, n do
    local v = redis.call('HMGET', KEYS[i], 'owner', 'until', 'q')
    vs[i] = v
    if v[3] or v[1] == tok or (v[1] and v[1] ~= '' and tonumber(v[2]) > now) then
      fast = false
      break
    end
  end
  if fast then
    local res = {1}
    for i = 1, n do
      res[i + 1] = tostring(redis.call('HINCRBY', KEYS[i], 'fence', 1))
      redis.call('HSET', KEYS[i], 'owner', tok, 'until', now + ttl)
    end
    return res
  end
end
` + args + funcs + `
local block, rem = 0, 0
local own, qs = {}, {}
for i = 1, n do
  local k = KEYS[i]
  local v = vs[i] or redis.call('HMGET', k, 'owner', 'until', 'q')
  if v[1] == tok then
    own[i] = true
  elseif v[1] and v[1] ~= '' and tonumber(v[2]) > now then
    block, rem = i, tonumber(v[2]) - now
    break
  else
    local q = purge(k, v[3])
    qs[i] = q
    if q ~= '' and string.sub(q, 1, 32) ~= tok then
      grant(k, q)
      block, rem = i, tonumber(string.sub(q, 46, 55))
      break
    end
  end
end
if block == 0 then
  local res = {1}
  for i = 1, n do
    local k = KEYS[i]
    if own[i] then
      redis.call('HSET', k, 'until', now + ttl)
      res[#res + 1] = redis.call('HGET', k, 'fence')
    else
      local q = qs[i]
      if q ~= '' then
        -- we are the head of the queue
        if #q == W then redis.call('HDEL', k, 'q') else redis.call('HSET', k, 'q', string.sub(q, W + 1)) end
      end
      res[#res + 1] = tostring(redis.call('HINCRBY', k, 'fence', 1))
      redis.call('HSET', k, 'owner', tok, 'until', now + ttl)
    end
  end
  return res
end
for i = 1, n do
  local k = KEYS[i]
  if i > block then
    local v = redis.call('HMGET', k, 'owner', 'q')
    if v[1] == tok then free(k, v[2]) end
  end
  if i ~= block then dequeue(k) end
end
if mode == '1' then enqueue(KEYS[block]) end
return {0, block, rem}
`)

// releaseScript frees each key the token owns (even past its lease, as
// nobody took it) and hands it to its head waiter. It returns 1 or 0 per key.
// Its fast path, when the token owns every key and nobody queues, needs no
// clock.
var releaseScript = redis.NewScript(`
do
  local tok, n = ARGV[1], #KEYS
  local fast = true
  for i = 1, n do
    local v = redis.call('HMGET', KEYS[i], 'owner', 'q')
    if v[1] ~= tok or v[2] then
      fast = false
      break
    end
  end
  if fast then
    local res = {}
    for i = 1, n do
      redis.call('HSET', KEYS[i], 'owner', '', 'until', '0')
      res[i] = 1
    end
    return res
  end
end
` + prelude + `
local res = {}
for i = 1, #KEYS do
  local k = KEYS[i]
  local v = redis.call('HMGET', k, 'owner', 'q')
  if v[1] == tok then free(k, v[2]) res[i] = 1 else res[i] = 0 end
end
return res
`)

// renewScript extends the lease of every key if the token still holds all of
// them. It returns 0, or the index of the first key it no longer holds.
var renewScript = redis.NewScript(prelude + `
for i = 1, #KEYS do
  if holder(KEYS[i]) ~= tok then return i end
end
for i = 1, #KEYS do redis.call('HSET', KEYS[i], 'until', now + ttl) end
return 0
`)

// cancelScript withdraws a waiter: it leaves every queue and gives up any key
// that was handed to it meanwhile.
var cancelScript = redis.NewScript(prelude + `
for i = 1, #KEYS do
  local k = KEYS[i]
  dequeue(k)
  local v = redis.call('HMGET', k, 'owner', 'q')
  if v[1] == tok then free(k, v[2]) end
end
return 0
`)
