package redislock

import "github.com/redis/go-redis/v9"

// Every lock is one Redis string at its key, so that all of a lock's state
// sits in one hash slot (Redis Cluster) whatever the key looks like, and a
// script reads the state of all its keys with one MGET and writes it back
// with one MSET (one GET and one SET for a single key): a call costs the
// same few commands for 1 key or for 8.
// A free lock that nobody waits for is its fencing counter alone, in
// decimal; otherwise the value is two fixed-width fields, the queue and the
// counter:
//
//	owner  32 the 128-bit token (32 hex digits) of the holder, or 32 "-"
//	          when free
//	until  13 the server time (ms) at which the holder's lease ends, 13
//	          zeros when free
//	q         the FIFO wait queue: entries of 55 bytes, the waiter's token
//	          (32), the entry's deadline (13 digits, server ms; a waiter that
//	          stops re-checking drops out) and the waiter's lease TTL (10
//	          digits, ms)
//	fence     the fencing counter in decimal (at most 17 digits)
//
// So the length tells the state: under 46 bytes free without a queue, under
// 100 without a queue. The fencing counter is incremented by every
// acquisition and never reset by expiry, so it survives the lease.
//
// Leases are judged with the server clock (TIME), as PEXPIRE would be. A
// release hands the lock straight to the head of the queue and PUBLISHes
// "token:fence:key" on the channel of the waiter's Locker (the channel
// prefix followed by the token's first 8 characters, the Locker's id), so
// the waiter learns it holds the lock without another round trip, no other
// process is woken, and a releaser cannot barge back in.
//
// The scripts take their ARGV in one order, each only as far as it needs
// it: token, channel prefix, lease TTL (ms), queue entry validity (ms).
// Release and cancel pass the first two, renew three; acquire passes three
// to try, and all four to wait in the queue of the key that blocks it.
//
// Redis spends more around a script than in its Lua, so the common cases
// avoid what measurably costs. On Redis 7.0, in instructions per EVALSHA
// (callgrind; an empty script with one argument takes about 16k), each
// further ARGV entry costs about 2k, a redis.call 4k (GET) to 7k (TIME), a
// table reply 4k more than an integer, converting a 13-digit number to a
// string by concatenation 4k (glibc's %.14g; string.format('%d') is
// cheaper, library call included), and a library call such as string.sub
// about 1k. The acquire and release scripts start with a fast path for the
// common cases (acquire: every key missing or free without a queue;
// release: every key owned by the caller without a queue, two string.sub a
// key): for one key a GET, a SET and an integer reply, for several one MGET
// and one MSET. Neither creates the general path's functions, which Lua
// would otherwise do on every call. Keys are read and written in chunks of
// 1000 (the Lua stack bounds unpack).
//
// clock sets now to the server time in ms. TIME replies with strings, which
// arithmetic converts at every use: us converts the microseconds once.
const clock = `
local t = redis.call('TIME')
local us = t[2] + 0
local now = t[1] * 1000 + (us - us % 1000) / 1000
`

// read sets n to the number of keys and reads their values (false when
// missing) into vs: one key with GET, which costs 2k instructions less than
// an MGET of one key, then oneKey, a fast path that finds the value in v
// (and may return); more keys with MGET, 1000 at a time (the Lua stack
// bounds unpack). A key of another type (a hash left by an earlier version
// of this package) reads as missing, as MGET reads it: GET fails on it.
// Other errors stay errors.
func read(oneKey string) string {
	return `
local n = #KEYS
local vs
if n == 1 then
  local v = redis.pcall('GET', KEYS[1])
  if v and v.err then
    if string.sub(v.err, 1, 9) ~= 'WRONGTYPE' then return v end
    v = false
  end
` + oneKey + `
  vs = {v}
elseif n <= 1000 then
  vs = redis.call('MGET', unpack(KEYS))
else
  vs = {}
  for i = 1, n, 1000 do
    local part = redis.call('MGET', unpack(KEYS, i, math.min(i + 999, n)))
    for j = 1, #part do vs[i + j - 1] = part[j] end
  end
end
`
}

// mget reads every key's value into vs, with no fast path.
var mget = read("")

// mset defines mset(kv), which writes the flat key-value list kv: one MSET
// up to 1000 keys.
const mset = `
local function mset(kv)
  for i = 1, #kv, 2000 do
    local j = i + 1999
    if j > #kv then j = #kv end
    redis.call('MSET', unpack(kv, i, j))
  end
end
`

// digits writes an integer in decimal: concatenation alone would switch to
// an exponent from 1e14 on.
const digits = `
local function digits(x)
  if x < 1e14 then return x end
  return string.format('%d', x)
end
`

const funcs = digits + `
local tok, ch, ttl, qttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local FREE, ZERO, W = string.rep('-', 32), string.rep('0', 13), 55
local O, U, F, Q, D = {}, {}, {}, {}, {}
for i = 1, n do
  local v = vs[i]
  if not v then
    O[i], U[i], Q[i], F[i] = '', 0, '', 0
  elseif #v < 46 then
    O[i], U[i], Q[i], F[i] = '', 0, '', tonumber(v)
  else
    local o = string.sub(v, 1, 32)
    if o == FREE then o = '' end
    local e = 45 + W * math.floor((#v - 45) / W)
    O[i], U[i], Q[i], F[i] = o, tonumber(string.sub(v, 33, 45)), string.sub(v, 46, e), tonumber(string.sub(v, e + 1))
  end
end

local function flush()
  local kv = {}
  for i = 1, n do
    if D[i] then
      kv[#kv + 1] = KEYS[i]
      if O[i] ~= '' then
        kv[#kv + 1] = O[i] .. digits(U[i]) .. Q[i] .. digits(F[i])
      elseif Q[i] ~= '' then
        kv[#kv + 1] = FREE .. ZERO .. Q[i] .. digits(F[i])
      else
        kv[#kv + 1] = digits(F[i])
      end
    end
  end
  mset(kv)
end

local function holder(i)
  if O[i] ~= '' and U[i] > now then return O[i] end
  return false
end

local function purge(i)
  local q = Q[i]
  if q == '' then return end
  local out, drop = {}, false
  for j = 1, #q, W do
    local e = string.sub(q, j, j + W - 1)
    if tonumber(string.sub(e, 33, 45)) > now then out[#out + 1] = e else drop = true end
  end
  if drop then Q[i], D[i] = table.concat(out), true end
end

local function grant(i)
  local q = Q[i]
  if q == '' then return end
  local gt = string.sub(q, 1, 32)
  F[i], O[i], U[i] = F[i] + 1, gt, now + tonumber(string.sub(q, 46, 55))
  Q[i], D[i] = string.sub(q, W + 1), true
  redis.call('PUBLISH', ch .. string.sub(gt, 1, 8), gt .. ':' .. digits(F[i]) .. ':' .. KEYS[i])
end

local function free(i)
  O[i], U[i], D[i] = '', 0, true
  purge(i)
  grant(i)
end

local function dequeue(i)
  local q = Q[i]
  for j = 1, #q, W do
    if string.sub(q, j, j + 31) == tok then
      Q[i], D[i] = string.sub(q, 1, j - 1) .. string.sub(q, j + W), true
      return
    end
  end
end

local function enqueue(i)
  local q = Q[i]
  local e = tok .. string.format('%013d%010d', now + qttl, ttl)
  D[i] = true
  for j = 1, #q, W do
    if string.sub(q, j, j + 31) == tok then
      Q[i] = string.sub(q, 1, j - 1) .. e .. string.sub(q, j + W)
      return
    end
  end
  Q[i] = q .. e
end
`

// acquireScript takes every key (sorted) or none. It returns, for one key,
// its fence; for several, {1, fence...}; or {0, i, ms} when it fails: key i
// blocks, for at most ms more unless renewed. A free key with waiters goes
// to the head waiter, not to the caller. On failure the caller keeps only
// keys below the blocking one that were handed to it earlier (ordered
// hold-and-wait), gives up every key above it (handing them on), and with a
// queue entry validity (ARGV[4]) holds a place in the queue of the blocking
// key only.
//
// The fast path takes the keys when each is missing or free without a
// queue; the general path also takes lapsed leases and keys handed to the
// caller.
var acquireScript = redis.NewScript(clock + read(`
  if not v or #v < 46 then
    local f = (v or 0) + 1
    redis.call('SET', KEYS[1], string.format('%s%d%d', ARGV[1], now + ARGV[3], f))
    return f
  end`) + mset + `
if n > 1 then
  local fast = true
  for i = 1, n do
    local v = vs[i]
    if v and #v >= 46 then
      fast = false
      break
    end
  end
  if fast then
    local head = ARGV[1] .. (now + ARGV[3])
    local res, kv = {1}, {}
    for i = 1, n do
      local f = (vs[i] or 0) + 1
      if f >= 1e14 then f = string.format('%d', f) end
      res[i + 1] = f
      kv[2 * i - 1] = KEYS[i]
      kv[2 * i] = head .. f
    end
    mset(kv)
    return res
  end
end
` + funcs + `
local block, rem = 0, 0
local own = {}
for i = 1, n do
  if O[i] == tok then
    own[i] = true
  elseif O[i] ~= '' and U[i] > now then
    block, rem = i, U[i] - now
    break
  else
    purge(i)
    local q = Q[i]
    if q ~= '' and string.sub(q, 1, 32) ~= tok then
      grant(i)
      block, rem = i, tonumber(string.sub(q, 46, 55))
      break
    end
  end
end
if block == 0 then
  local res = {1}
  for i = 1, n do
    if not own[i] then
      -- free, and nobody queues before us
      if Q[i] ~= '' then Q[i] = string.sub(Q[i], W + 1) end
      F[i], O[i] = F[i] + 1, tok
    end
    U[i], D[i] = now + ttl, true
    res[i + 1] = digits(F[i])
  end
  flush()
  if n == 1 then return res[2] end
  return res
end
for i = 1, n do
  if i > block and O[i] == tok then free(i) end
  if i ~= block then dequeue(i) end
end
if qttl then enqueue(block) end
flush()
return {0, block, rem}
`)

// releaseScript frees each key the token owns (even past its lease, as
// nobody took it) and hands it to its head waiter. It returns 1 when it
// freed every key, else 1 or 0 per key. Its fast path, when the token owns
// every key and nobody queues, needs no clock.
var releaseScript = redis.NewScript(read(`
  if v and #v < 100 and string.sub(v, 1, 32) == ARGV[1] then
    redis.call('SET', KEYS[1], string.sub(v, 46))
    return 1
  end`) + mset + `
if n > 1 then
  local tok = ARGV[1]
  local fast = true
  for i = 1, n do
    local v = vs[i]
    if not v or #v >= 100 or string.sub(v, 1, 32) ~= tok then
      fast = false
      break
    end
  end
  if fast then
    local kv = {}
    for i = 1, n do
      kv[2 * i - 1] = KEYS[i]
      kv[2 * i] = string.sub(vs[i], 46)
    end
    mset(kv)
    return 1
  end
end
` + clock + funcs + `
local res, all = {}, true
for i = 1, n do
  if O[i] == tok then free(i) res[i] = 1 else res[i], all = 0, false end
end
flush()
if all then return 1 end
return res
`)

// renewScript extends the lease of every key if the token still holds all of
// them. It returns 0, or the index of the first key it no longer holds.
var renewScript = redis.NewScript(clock + mget + mset + funcs + `
for i = 1, n do
  if holder(i) ~= tok then return i end
end
for i = 1, n do U[i], D[i] = now + ttl, true end
flush()
return 0
`)

// cancelScript withdraws a waiter: it leaves every queue and gives up any key
// that was handed to it meanwhile.
var cancelScript = redis.NewScript(clock + mget + mset + funcs + `
for i = 1, n do
  dequeue(i)
  if O[i] == tok then free(i) end
end
flush()
return 0
`)
