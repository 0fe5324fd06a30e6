package redislock

import "strconv"

// Every lock is one Redis string at its key, so that all of a lock's state
// sits in one hash slot (Redis Cluster) whatever the key looks like. The
// lease is the key's expiry (PX), so Redis itself ends a lease whose holder
// stopped renewing it, and the common paths need no clock. The value is
//
//	free    the fencing token the next acquisition gets, in decimal (under
//	        32 bytes)
//	held    the holder's 128-bit token (32 hex digits; an unfenced
//	        Locker's starts with "u" instead), then its fencing token in
//	        decimal
//	queued  as held, then "|", the FIFO wait queue, "|" and the channel
//	        prefix of the waiters' Lockers
//
// An unfenced Locker (Options.Unfenced, or Redlock) issues no fencing
// tokens: its tokens start with "u", and a key that was missing is taken
// with the fencing token 0, by a plain SET … NX (conn.plainAcquire) for one
// key, and by the acquire script, which reads no clock for such a token,
// for several. A release or a withdrawal deletes a key held with fence 0,
// so that the next unfenced acquisition finds it missing and takes it with
// a plain SET again. A hand-off from fence 0 gives an unfenced waiter 0
// again and any other waiter a token from the server clock, as for a
// missing key, so fencing tokens never go back. A key that keeps a fencing
// counter keeps it whoever holds it.
//
// Values this version does not write read as missing, so that keys left
// by earlier versions (which judged leases by the server clock and kept
// counters from 1) are replaced, not misread: a free value under 16 digits
// (every token since 2001 has 16), a value that does not parse, and a held
// value on a key without expiry (this version keeps or sets one at every
// write).
//
// A queue entry is 55 bytes: the waiter's token (32), the entry's deadline
// (13 digits, server ms; a waiter that stops re-checking drops out) and the
// waiter's lease TTL (10 digits, ms). A queue exists only while the key is
// held: a release hands the lock straight to the head of the queue (the key
// gets the waiter's TTL) and PUBLISHes "token:fence:key" on the channel of
// the waiter's Locker (the channel prefix followed by the token's first 8
// characters, the Locker's id), so the waiter learns it holds the lock
// without another round trip, no other process is woken, and a releaser
// cannot barge back in.
//
// Fencing tokens. A release writes the next token, so the free value keeps
// the counter; it keeps the key's expiry too (KEEPTTL), so a lock nobody
// takes again vanishes when its last lease would have ended, and Redis
// keeps no key for a lock that is not in use. A missing key (never used,
// expired, or lost with a restarted server) starts from the server clock
// in microseconds (TIME). That start is above every token of the key's
// earlier life: that life issued one token per acquisition, fewer than one
// per microsecond (a Redis serves far fewer), and ended at least a lease
// (30ms or more) before. So tokens keep growing across expiries and across
// restarts of a server without persistence, as long as the server's clock
// does not step back by more than a lease across an expiry (the clock Redis
// uses for key expiry too).
//
// The scripts take their ARGV in one order, each only as far as it needs
// it: token, then acquire: lease TTL (ms), and to wait in the queue of the
// key that blocks it, the queue entry validity (ms) and the channel prefix;
// release: the next fencing token (one key, optional; with it, the token is
// followed by the holder's fence, the key's whole value while held); renew:
// lease TTL.
//
// Redis spends more around a script than in its Lua, so the common cases
// avoid what measurably costs. On Redis 7.0, in instructions (callgrind; an
// EVALSHA of an empty script with one key and two arguments takes about 16k,
// an FCALL of it 13.4k, a GET command 5k), each further ARGV entry costs
// about 1.3k to 2k, a redis.call 3k (GET) to 6k (TIME), a table reply 4k
// more than an integer, converting a number to a string 2k to 4k (%.14g,
// string.format), and a library call such as string.sub about 1k. So the fast paths convert no number, read no
// clock and call few commands: acquiring a free key is a GET and a SET (PX),
// replying the stored token as it is (a string: its conversion to an integer
// reply costs the server more than the client's two allocations); releasing
// it is one SET with GET and KEEPTTL, writing the next token that the client
// sends, and comparing what it replaced with the holder's value, which the
// client sends too (equal Lua strings are one string: cutting the token out
// first cost 1.7k more). Several keys take one MGET and a SET each. Keys are read in chunks
// of 1000 (the Lua stack bounds unpack).
//
// Where the server has the conditional SET (IFEQ: Redis 8.4, Valkey 8.1),
// a one-key lock taken without waiting is released by SET key next KEEPTTL
// IFEQ value GET instead of this script (see conn.condRelease): about 6k
// instructions against the script's 18k. The rest of this comment is about
// servers without it.
//
// The release stays a script. A plain APPEND of a release note ("#", token,
// next token), which the acquire script would honour when the token is the
// holder's, needs no script, but APPEND replies only the new length, which
// cannot tell the holder's own value from another holder's of the same
// length (Redis lost the key within the lease: failover, eviction, a
// deletion), so Release would report such a lost lock as released. Reading
// the value back (GET in the same round trip) makes it exact and costs the
// server 53k instructions per cycle against the script's 65k (as cached
// scripts; 60k since they run as functions and the release compares whole
// values), but the cycle measured no faster: the third command and its
// client work cost what the server saved (medians of BenchmarkInterleaved's
// ratio to the faster peer: script 1.031x over 30 runs, APPEND alone 0.986x
// over 20, APPEND and GET 1.020x over 10).

// read sets n to the number of keys and, unless vs is set already, reads
// their values (false when missing) into vs: one key with GET, which costs
// 2k instructions less than an MGET of one key, then oneKey, a fast path
// that finds the value in v (and may return); more keys with MGET. A key of
// another type (a hash left by an earlier version of this package) reads as
// missing, as MGET reads it: GET fails on it. Other errors stay errors.
func read(oneKey string) string {
	return `
local n = #KEYS
if vs then
elseif n == 1 then
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
var mget = `local vs` + read("")

// digits writes an integer in decimal: concatenation alone would switch to
// an exponent from 1e14 on.
const digits = `
local function digits(x)
  if x < 1e14 then return x end
  return string.format('%d', x)
end
`

// funcs parses every key's value into O (owner, empty when free or missing),
// F (the owner's fencing token; when free, the next one; nil when missing),
// Q (the queue) and C (the channel prefix of a queue), and defines the
// general paths' operations, which mark what they change in P: the lease in
// ms a key gets (PX), 'keep' to keep its expiry, or 'del' to delete it.
// time() returns the server time in ms (for queue deadlines) and in µs (a
// missing key's first token), reading the clock on first use. It needs
// digits defined before it.
var funcs = `
local tok, ttl, qttl, ch = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local W = 55
local O, F, Q, C, P = {}, {}, {}, {}, {}
for i = 1, n do
  local v = vs[i]
  O[i], Q[i], C[i] = '', '', ''
  if v and #v < 32 then
    if #v >= 16 then F[i] = tonumber(v) end
  elseif v then
    local b = string.find(v, '|', 33, true)
    local e = b and string.find(v, '|', b + 1, true)
    if e then
      F[i], Q[i], C[i] = tonumber(string.sub(v, 33, b - 1)), string.sub(v, b + 1, e - 1), string.sub(v, e + 1)
    elseif not b then
      F[i] = tonumber(string.sub(v, 33))
    end
    if F[i] then O[i] = string.sub(v, 1, 32) else Q[i] = '' end
  end
end

local clock
local function time()
  if not clock then
    local t = redis.call('TIME')
    local us = t[2] + 0
    clock = {t[1] * 1000 + (us - us % 1000) / 1000, t[1] * 1000000 + us}
  end
  return clock
end

-- next returns the fencing token the next holder of free key i gets: an
-- unfenced token ('u') gets 0 where another would read the clock.
local function next(i)
  if F[i] then return F[i] end
  if ` + isUnfenced("tok") + ` then return 0 end
  return time()[2]
end

local function flush()
  for i = 1, n do
    local p = P[i]
    if p == 'del' then
      redis.call('DEL', KEYS[i])
    elseif p then
      if O[i] == '' then
        redis.call('SET', KEYS[i], digits(F[i]), 'KEEPTTL')
      else
        local v = O[i] .. digits(F[i])
        if Q[i] ~= '' then v = v .. '|' .. Q[i] .. '|' .. C[i] end
        if p == 'keep' then
          redis.call('SET', KEYS[i], v, 'KEEPTTL')
        else
          redis.call('SET', KEYS[i], v, 'PX', p)
        end
      end
    end
  end
end

local function purge(i)
  local q = Q[i]
  if q == '' then return end
  local now = time()[1]
  local out, drop = {}, false
  for j = 1, #q, W do
    local e = string.sub(q, j, j + W - 1)
    if tonumber(string.sub(e, 33, 45)) > now then out[#out + 1] = e else drop = true end
  end
  if drop then Q[i], P[i] = table.concat(out), P[i] or 'keep' end
end

-- free gives up held key i: to the head of its queue, or free.
local function free(i)
  purge(i)
  local q = Q[i]
  if q == '' then
    if F[i] == 0 then -- an unfenced holder's: no counter to keep
      O[i], P[i] = '', 'del'
    else
      O[i], F[i], P[i] = '', F[i] + 1, 'keep'
    end
    return
  end
  local gt = string.sub(q, 1, 32)
  local f = F[i] + 1
  if f == 1 then -- from a fence of 0: 0 again for an unfenced waiter, else as a missing key
    if ` + isUnfenced("gt") + ` then f = 0 else f = time()[2] end
  end
  F[i], O[i], P[i], Q[i] = f, gt, tonumber(string.sub(q, 46, 55)), string.sub(q, W + 1)
  redis.call('PUBLISH', C[i] .. string.sub(gt, 1, 8), gt .. ':' .. digits(F[i]) .. ':' .. KEYS[i])
end

local function dequeue(i)
  local q = Q[i]
  for j = 1, #q, W do
    if string.sub(q, j, j + 31) == tok then
      Q[i], P[i] = string.sub(q, 1, j - 1) .. string.sub(q, j + W), P[i] or 'keep'
      return
    end
  end
end

local function enqueue(i)
  local q = Q[i]
  local e = tok .. string.format('%013d%010d', time()[1] + qttl, ttl)
  P[i], C[i] = P[i] or 'keep', ch
  for j = 1, #q, W do
    if string.sub(q, j, j + 31) == tok then
      Q[i] = string.sub(q, 1, j - 1) .. e .. string.sub(q, j + W)
      return
    end
  end
  Q[i] = q .. e
end
`

// isUnfenced is the Lua test of whether token tok (an expression) is an
// unfenced Locker's: its first byte is unfencedMark's, in parentheses so
// that it can follow not. string.byte costs the server less than cutting
// out a one-byte string to compare.
func isUnfenced(tok string) string {
	return "(string.byte(" + tok + ") == " + strconv.Itoa(int(unfencedMark[0])) + ")"
}

// clockToken sets first to a missing key's first fencing token: the server
// clock in µs, in decimal; 0 for an unfenced token ('u').
var clockToken = `
local first = '0'
if not ` + isUnfenced("ARGV[1]") + ` then
  local t = redis.call('TIME')
  first = string.format('%d', t[1] * 1000000 + t[2])
end`

// acquireScript takes every key (sorted) or none. It returns, for one key,
// its fence; for several, {1, fence...}; or {0, i, ms} when it fails: key i
// blocks, for at most ms more unless renewed. A fence is an integer or a
// decimal string. On failure the caller keeps only keys below the blocking
// one that were handed to it earlier (ordered hold-and-wait; each attempt
// renews their lease), gives up every key above it (handing them on), and
// with a queue entry validity (ARGV[3]) holds a place in the queue of the
// blocking key only.
//
// The fast path takes the keys when each is missing or free: a free key
// has no queue, so nobody waits before the caller.
var acquireScript = newScript(`local vs` + read(`
  if not v or #v < 32 then
    if not v or #v < 16 then`+clockToken+`
      v = first
    end
    redis.call('SET', KEYS[1], ARGV[1] .. v, 'PX', ARGV[2])
    return v
  end`) + `
if n > 1 then
  local fast, base = true, nil
  for i = 1, n do
    local v = vs[i]
    if v and #v >= 32 then
      fast = false
      break
    end
  end
  if fast then
    local res = {1}
    for i = 1, n do
      local v = vs[i]
      if not v or #v < 16 then
        if not base then` + clockToken + `
          base = first
        end
        v = base
      end
      res[i + 1] = v
      redis.call('SET', KEYS[i], ARGV[1] .. v, 'PX', ARGV[2])
    end
    return res
  end
end
` + digits + funcs + `
local block, rem = 0, 0
for i = 1, n do
  if O[i] ~= '' and O[i] ~= tok then
    rem = redis.call('PTTL', KEYS[i])
    if rem >= 0 then
      block = i
      break
    end
    -- No expiry: not written by this version, which keeps or sets one at
    -- every write. It reads as missing.
    O[i], F[i], Q[i] = '', nil, ''
  end
end
if block == 0 then
  local res = {1}
  for i = 1, n do
    if O[i] ~= tok then
      F[i], O[i] = next(i), tok
    end
    P[i] = ttl
    res[i + 1] = digits(F[i])
  end
  flush()
  if n == 1 then return res[2] end
  return res
end
for i = 1, n do
  if O[i] == tok then
    if i < block then P[i] = ttl else free(i) end
  end
  if i ~= block then dequeue(i) end
end
if qttl then enqueue(block) end
flush()
return {0, block, rem}
`)

// releaseScript frees each key the token still owns and hands it to its
// head waiter. It returns 1 when it freed every key, else 1 or 0 per key (a
// key whose lease ran out is gone, and was not held).
//
// Its fast path, for one key with the next fence in ARGV[2], writes that
// fence with one SET (GET returns what it replaced; KEEPTTL keeps the
// expiry) and is done if it replaced the caller's own value, which ARGV[1]
// then is: the key was held by the caller without a queue. Otherwise it
// puts back what it replaced, or the general path writes the key. For one
// key of an unfenced Locker, ARGV[1] is the value a plain SET wrote (the
// token, then fence 0: 33 bytes), and a GET that finds it is followed by a
// DEL, as in redsync's release; any other value goes to the general path.
// Without the next fence (several keys, or an unfenced Locker), keys the
// token owns without a queue take one read (GET or MGET) and a SET each,
// the script computing the next fences, or a DEL each for a fence of 0.
var releaseScript = newScript(`
local vs, dirty
if #KEYS == 1 and ARGV[2] then
  local v = redis.pcall('SET', KEYS[1], ARGV[2], 'KEEPTTL', 'GET')
  if v == ARGV[1] then return 1 end
  if not v then
    redis.call('DEL', KEYS[1])
    return 0
  elseif not v.err then
    if string.sub(v, 1, 32) ~= string.sub(ARGV[1], 1, 32) then
      redis.call('SET', KEYS[1], v, 'KEEPTTL')
      return 0
    end
    vs, dirty = {v}, true
  elseif string.sub(v.err, 1, 9) ~= 'WRONGTYPE' then
    return v
  end
elseif #KEYS == 1 and #ARGV[1] == 33 then
  local v = redis.pcall('GET', KEYS[1])
  if v == ARGV[1] then
    redis.call('DEL', KEYS[1])
    return 1
  end
  if not (v and v.err) then vs = {v} end
end
` + read("") + digits + `
ARGV[1] = string.sub(ARGV[1], 1, 32)
do
  local tok = ARGV[1]
  local fast = true
  for i = 1, n do
    local v = vs[i]
    if not v or #v < 32 or #v > 48 or string.sub(v, 1, 32) ~= tok then
      fast = false
      break
    end
  end
  if fast then
    for i = 1, n do
      local f = tonumber(string.sub(vs[i], 33))
      if f == 0 then
        redis.call('DEL', KEYS[i])
      else
        redis.call('SET', KEYS[i], digits(f + 1), 'KEEPTTL')
      end
    end
    return 1
  end
end
` + funcs + `
if dirty then P[1] = 'keep' end
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
var renewScript = newScript(mget + `
for i = 1, n do
  local v = vs[i]
  if not v or #v < 32 or string.sub(v, 1, 32) ~= ARGV[1] then return i end
end
for i = 1, n do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
return 0
`)

// cancelScript withdraws a waiter: it leaves every queue and gives up any key
// that was handed to it meanwhile.
var cancelScript = newScript(mget + digits + funcs + `
for i = 1, n do
  dequeue(i)
  if O[i] == tok then free(i) end
end
flush()
return 0
`)

// functions is the library of every script (see functions.go).
var functions = newLibrary(map[string]*script{
	"acquire": acquireScript,
	"release": releaseScript,
	"renew":   renewScript,
	"cancel":  cancelScript,
	"inspect": inspectScript,
})
