//! The Lua scripts: one per write operation, each the whole operation (checks, the write,
//! its effects and the `PUBLISH` of its announcement) in one atomic step on one shard.
//!
//! Every script checks before it writes: Redis does not roll back a script that fails half
//! way, so refusals (a conflict, a lost lease, an unknown effect) are decided first. Write
//! scripts carry a `#!lua` shebang, which makes Redis refuse them up front when it is out of
//! memory instead of failing half way; read scripts are `flags=no-writes`.
//!
//! Keys are built inside the scripts from a shard's hash tag (`ARGV` names it, and `KEYS[1]`
//! is a key of the same tag, which routes the call in a cluster). All keys of a call share
//! that tag, so they live in one slot. Numbers that do not fit a Lua double exactly (lease
//! tokens) stay strings; times (microseconds) and revisions do fit.
//!
//! The layout (see the crate's README) in short, for shard tag `T`:
//! `T:p:<id>` prediction hash (`rev`, `body`, `rm`, `own`, `st`, `ck`, `exp`), `T:d:<id>` its
//! input/output/logs (with `PEXPIREAT`), `T:pk:<id>` the idempotency keys that point at it,
//! `T:f:<id>` fenced key reservations, `T:j:<id>` its job (`q`, `a`, `r`, `t`, `w`), `T:q`
//! jobs by `visible_at`, `T:ls` leased jobs by lease expiry, `T:jl` job ids, `T:x`
//! predictions by `expires_at`, `T:i:*` listing indexes, `T:k:<owner> <key>` idempotency key
//! records, `T:kx` their expiry, `T:kl` their names, `T:c` counters; the webhook outbox:
//! `T:o:<id>` pending messages (and the `seq` counter), `T:of:<id>` finished messages (with
//! the data's `PEXPIREAT`), `T:op:<id>` pending seqs, `T:oh` prediction ids by the
//! `visible_at` of their head message; `T:e:<id>` the event log (with the data's
//! `PEXPIREAT`).

use std::sync::LazyLock;

use redis::Script;

/// Helpers every script starts with.
const COMMON: &str = r#"
local function I(n) return string.format('%d', n) end
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function publish(chan, lines)
  if #lines > 0 then redis.call('PUBLISH', chan, table.concat(lines, '\n')) end
end
local function index_keys(T, own, st)
  return {T .. ':i:all', T .. ':i:o:' .. own, T .. ':i:s:' .. st, T .. ':i:os:' .. own .. ':' .. st}
end
-- false, or {rev, body, rm, data or false}
local function read(T, id)
  local f = redis.call('HMGET', T .. ':p:' .. id, 'rev', 'body', 'rm')
  if not f[1] then return false end
  return {f[1], f[2], f[3], redis.call('GET', T .. ':d:' .. id)}
end
-- A record's eight arguments from ARGV[p]: body, data ('' = none), rm, own, st, ck,
-- exp ('' = none), exp_ms.
local function record_at(p)
  return {body = ARGV[p], data = ARGV[p + 1], rm = ARGV[p + 2], own = ARGV[p + 3],
          st = ARGV[p + 4], ck = ARGV[p + 5], exp = ARGV[p + 6], exp_ms = ARGV[p + 7]}
end
-- The event log and the finished webhook messages hold the prediction's data, so they
-- expire with it: at `ms` (PEXPIREAT), or never (`ms` false).
local function follow_ms(T, id, ms)
  for _, k in ipairs({T .. ':e:' .. id, T .. ':of:' .. id}) do
    if ms then redis.call('PEXPIREAT', k, ms) else redis.call('PERSIST', k) end
  end
end
-- `exp` (µs) in milliseconds, rounded up (as `expiry_millis` in Rust).
local function exp_ms(exp)
  return I(math.floor((tonumber(exp) + 999) / 1000))
end
-- What follow_ms follows for a record with expiry `exp` (µs, '' or false: none) and removal
-- flag `rm`: the expiry in milliseconds while it holds data, else false.
local function follow_target(exp, rm)
  if exp and exp ~= '' and rm == '0' then return exp_ms(exp) end
  return false
end
-- After a write: re-follow if the target changed (`was` before, `now` after); otherwise only a
-- log that `appended` events may be new and needs the expiry it lacks.
local function follow_change(T, id, was, now, appended)
  if was ~= now then
    follow_ms(T, id, now)
  elseif appended and now then
    redis.call('PEXPIREAT', T .. ':e:' .. id, now)
  end
end
-- follow_ms from the stored record: `expires_at` while its data is not removed.
local function follow_data(T, id)
  local f = redis.call('HMGET', T .. ':p:' .. id, 'exp', 'rm')
  if f[1] and f[1] ~= '' and f[2] == '0' then
    follow_ms(T, id, exp_ms(f[1]))
  else
    follow_ms(T, id, false)
  end
end
-- Whether the prediction's data is gone (or going): no record, removed, or past expires_at
-- (which Redis frees by itself). Finished messages are not kept then.
local function data_gone(T, id, now)
  local f = redis.call('HMGET', T .. ':p:' .. id, 'rev', 'exp', 'rm')
  if not f[1] or f[3] == '1' then return true end
  return f[2] ~= '' and f[2] ~= false and tonumber(f[2]) <= now
end
-- The position of an event, `<revision, 20 digits><index, 10 digits>`: byte order is
-- `(revision, index)` order.
local function event_pos(rev, index)
  return string.format('%020d%010d', tonumber(rev), index)
end
-- Removes message `s` from outbox hash `k`; returns its {message, attempts, delivery id}.
local function msg_take(k, s)
  local f = redis.call('HMGET', k, 'm:' .. s, 'a:' .. s, 'd:' .. s)
  redis.call('HDEL', k, 'm:' .. s, 'a:' .. s, 'd:' .. s, 'n:' .. s, 's:' .. s, 't:' .. s,
             'w:' .. s, 'l:' .. s)
  if f[3] and redis.call('HGET', k, 'i:' .. f[3]) == s then redis.call('HDEL', k, 'i:' .. f[3]) end
  return f
end
-- Writes message `s` into outbox hash `k`.
local function msg_put(k, s, msg, attempts, did)
  redis.call('HSET', k, 'm:' .. s, msg, 'd:' .. s, did, 'i:' .. did, s)
  if attempts and attempts ~= '' then redis.call('HSET', k, 'a:' .. s, attempts) end
end
-- Re-scores the prediction in the shard's heads set `T:oh`: its oldest pending message is
-- visible at its next attempt, or at the end of its live lease; no pending message, no entry.
local function head_sync(T, id, now)
  local h = redis.call('ZRANGE', T .. ':op:' .. id, 0, 0)[1]
  if not h then
    redis.call('ZREM', T .. ':oh', id)
    return
  end
  local f = redis.call('HMGET', T .. ':o:' .. id, 'n:' .. h, 'l:' .. h)
  local at = tonumber(f[1]) or now
  local l = tonumber(f[2])
  if l and l > now and l > at then at = l end
  redis.call('ZADD', T .. ':oh', I(at), id)
end
-- Removes a prediction's outbox and event log.
local function outbox_remove(T, id)
  redis.call('DEL', T .. ':o:' .. id, T .. ':of:' .. id, T .. ':op:' .. id, T .. ':e:' .. id)
  redis.call('ZREM', T .. ':oh', id)
end
-- Stores a record in place of whatever had its id, keeping indexes and expiry right. Returns
-- the follow targets before and after (see follow_change, which the caller runs once the
-- write's events are in). The expiry index `T:x` holds exactly the records that hold data
-- and have an expiry, so it is touched only when that changes, unless `force` (imports,
-- which may meet anything).
local function put(T, id, rev, r, force)
  local pk = T .. ':p:' .. id
  local dk = T .. ':d:' .. id
  local old = redis.call('HMGET', pk, 'own', 'st', 'ck', 'exp', 'rm')
  local newk = index_keys(T, r.own, r.st)
  local oldk = false
  if old[3] then oldk = index_keys(T, old[1], old[2]) end
  for i = 1, 4 do
    if not oldk or oldk[i] ~= newk[i] or old[3] ~= r.ck then
      if oldk then redis.call('ZREM', oldk[i], old[3]) end
      redis.call('ZADD', newk[i], 0, r.ck)
    end
  end
  redis.call('HSET', pk, 'rev', rev, 'body', r.body, 'rm', r.rm, 'own', r.own, 'st', r.st,
             'ck', r.ck, 'exp', r.exp)
  local expiring = r.exp ~= '' and r.rm == '0'
  if r.data ~= '' then
    redis.call('SET', dk, r.data)
    if expiring then redis.call('PEXPIREAT', dk, r.exp_ms) end
  else
    redis.call('DEL', dk)
  end
  local was = old[3] and follow_target(old[4], old[5])
  local target = false
  if expiring then
    target = exp_ms(r.exp)
    if force or not was or old[4] ~= r.exp then redis.call('ZADD', T .. ':x', r.exp, id) end
  elseif force or was then
    redis.call('ZREM', T .. ':x', id)
  end
  return was, target
end
local function job_remove(T, id)
  redis.call('DEL', T .. ':j:' .. id)
  redis.call('ZREM', T .. ':q', id)
  redis.call('ZREM', T .. ':ls', id)
  redis.call('ZREM', T .. ':jl', id)
end
-- Replaces a prediction's job; token and worker are false for an unleased job.
local function job_put(T, id, queue, attempts, run_at, visible_at, token, worker)
  local jk = T .. ':j:' .. id
  redis.call('DEL', jk)
  if token then
    redis.call('HSET', jk, 'q', queue, 'a', attempts, 'r', run_at, 't', token, 'w', worker)
    redis.call('ZADD', T .. ':ls', visible_at, id)
  else
    redis.call('HSET', jk, 'q', queue, 'a', attempts, 'r', run_at)
    redis.call('ZREM', T .. ':ls', id)
  end
  redis.call('ZADD', T .. ':q', visible_at, id)
  redis.call('ZADD', T .. ':jl', 0, id)
end
-- Effects from ARGV[p]: a count, then each kind and its arguments:
-- E queue run_at | C queue worker token expires_at | X | N name delta |
-- D delivery_id message | V count event...
local EFFECT_ARGS = {E = 2, C = 4, X = 0, N = 2, D = 2}
-- How many arguments follow the effect kind at ARGV[p], or false.
local function effect_arity(p)
  if ARGV[p] == 'V' then
    local c = tonumber(ARGV[p + 1])
    return c and c >= 0 and 1 + c
  end
  return EFFECT_ARGS[ARGV[p]]
end
local function check_effects(p)
  local n = tonumber(ARGV[p])
  if not n then return false end
  p = p + 1
  for _ = 1, n do
    local k = effect_arity(p)
    if not k or #ARGV < p + k then return false end
    p = p + 1 + k
  end
  return true
end
-- Applies checked effects of a write that made revision `rev`, after `put`. Returns whether a
-- job became claimable and whether events were appended. `now` (µs) is read from the clock
-- if false and an effect needs it.
local function apply_effects(T, id, p, now, rev)
  local n = tonumber(ARGV[p])
  p = p + 1
  local work, events, index = false, false, 0
  for _ = 1, n do
    local kind = ARGV[p]
    local arity = effect_arity(p)
    if kind == 'E' then
      job_put(T, id, ARGV[p + 1], 0, ARGV[p + 2], ARGV[p + 2], false, false)
      work = true
    elseif kind == 'C' then
      now = now or now_us()
      job_put(T, id, ARGV[p + 1], 1, I(now), ARGV[p + 4], ARGV[p + 3], ARGV[p + 2])
    elseif kind == 'X' then
      job_remove(T, id)
    elseif kind == 'N' then
      redis.call('HINCRBY', T .. ':c', ARGV[p + 1], ARGV[p + 2])
    elseif kind == 'D' then
      now = now or now_us()
      local ok = T .. ':o:' .. id
      local s = I(redis.call('HINCRBY', ok, 'seq', 1))
      msg_put(ok, s, ARGV[p + 2], false, ARGV[p + 1])
      redis.call('HSET', ok, 'n:' .. s, I(now))
      redis.call('ZADD', T .. ':op:' .. id, s, s)
      head_sync(T, id, now)
    elseif kind == 'V' then
      local ek = T .. ':e:' .. id
      for j = 1, arity - 1 do
        redis.call('ZADD', ek, 0, event_pos(rev, index) .. ' ' .. ARGV[p + 1 + j])
        index = index + 1
      end
      events = true
    end
    p = p + 1 + arity
  end
  return work, events
end
"#;

/// Reads a prediction. KEYS: `T:p:<id>`. ARGV: T, id.
/// Returns nil, or `{{rev, body, rm, data}, now}`.
const GET: &str = r#"
local r = read(ARGV[1], ARGV[2])
if not r then return false end
return {r, I(now_us())}
"#;

/// Reads several predictions of one shard. KEYS: `T:p:<first id>`. ARGV: T, ids...
/// Returns `{now, record or nil, ...}`.
const GET_MANY: &str = r#"
local out = {I(now_us())}
for i = 2, #ARGV do out[#out + 1] = read(ARGV[1], ARGV[i]) end
return out
"#;

/// Inserts a prediction unless its id exists. KEYS: `T:p:<id>`.
/// ARGV: T, channel, id, key name ('' = none), reservation nonce, record (8), effects.
/// Returns `{'exists', record, now, bound}`, `{'fenced'}`, `{'inserted'}` or `{'bad_effects'}`.
const CREATE: &str = r#"
local T, id, kname, nonce = ARGV[1], ARGV[3], ARGV[4], ARGV[5]
if not check_effects(14) then return {'bad_effects'} end
local now = now_us()
local existing = read(T, id)
if existing then
  local bound = 0
  if kname ~= '' then bound = redis.call('SISMEMBER', T .. ':pk:' .. id, kname) end
  return {'exists', existing, I(now), bound}
end
if kname ~= '' and redis.call('SISMEMBER', T .. ':f:' .. id, nonce) == 1 then
  return {'fenced'}
end
local was, target = put(T, id, '1', record_at(6), false)
if kname ~= '' then redis.call('SADD', T .. ':pk:' .. id, kname) end
local lines = {'p ' .. id .. ' 1'}
local work, appended = apply_effects(T, id, 14, now, '1')
-- A stale log or outbox of an earlier record with this id cannot be left: delete removes them.
follow_change(T, id, was, target, appended)
if work then lines[#lines + 1] = 'w' end
publish(ARGV[2], lines)
return {'inserted'}
"#;

/// Compare-and-set. KEYS: `T:p:<id>`. ARGV: T, channel, id, expected revision, record (8),
/// effects. Returns `{'ok', rev}`, `{'conflict', rev}`, `{'notfound'}` or `{'bad_effects'}`.
const UPDATE: &str = r#"
local T, id = ARGV[1], ARGV[3]
if not check_effects(13) then return {'bad_effects'} end
local rev = redis.call('HGET', T .. ':p:' .. id, 'rev')
if not rev then return {'notfound'} end
if rev ~= ARGV[4] then return {'conflict', rev} end
local new = I(tonumber(rev) + 1)
local was, target = put(T, id, new, record_at(5), false)
local lines = {'p ' .. id .. ' ' .. new}
local work, appended = apply_effects(T, id, 13, false, new)
follow_change(T, id, was, target, appended)
if work then lines[#lines + 1] = 'w' end
publish(ARGV[2], lines)
return {'ok', new}
"#;

/// Deletes a prediction, its job, its webhook outbox and its event log. KEYS: `T:p:<id>`.
/// ARGV: T, channel, id.
/// Returns the names of the idempotency keys that pointed at it (the caller removes them
/// from their own shards).
const DELETE: &str = r#"
local T, id = ARGV[1], ARGV[3]
local pk = T .. ':p:' .. id
local f = redis.call('HMGET', pk, 'rev', 'own', 'st', 'ck')
if f[1] then
  for _, k in ipairs(index_keys(T, f[2], f[3])) do redis.call('ZREM', k, f[4]) end
  redis.call('ZREM', T .. ':x', id)
  redis.call('DEL', pk, T .. ':d:' .. id)
end
job_remove(T, id)
outbox_remove(T, id)
local sk = T .. ':pk:' .. id
local names = redis.call('SMEMBERS', sk)
redis.call('DEL', sk)
if f[1] then publish(ARGV[2], {'p ' .. id .. ' ' .. I(tonumber(f[1]) + 1)}) end
return names
"#;

/// Tombstones due predictions (those still in the expiry index at or before `now`), and
/// removes what held their data: the event log and the finished webhook messages (pending
/// ones stay and still go out). KEYS: `T:x`. ARGV: T, channel, now, ids... Returns the ids
/// tombstoned.
const EXPIRE: &str = r#"
local T, now = ARGV[1], tonumber(ARGV[3])
local done, lines = {}, {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local s = redis.call('ZSCORE', T .. ':x', id)
  if s and tonumber(s) <= now then
    redis.call('ZREM', T .. ':x', id)
    local pk = T .. ':p:' .. id
    if redis.call('EXISTS', pk) == 1 then
      local rev = redis.call('HINCRBY', pk, 'rev', 1)
      redis.call('HSET', pk, 'rm', '1')
      redis.call('DEL', T .. ':d:' .. id, T .. ':e:' .. id, T .. ':of:' .. id)
      -- Without pending messages the outbox holds only its counter.
      if redis.call('EXISTS', T .. ':op:' .. id) == 0 then redis.call('DEL', T .. ':o:' .. id) end
      done[#done + 1] = id
      lines[#lines + 1] = 'p ' .. id .. ' ' .. I(rev)
    end
  end
end
publish(ARGV[2], lines)
return done
"#;

/// Forgets up to `max` idempotency keys expired at `now`. KEYS: `T:kx`. ARGV: T, now, max.
/// Returns how many.
const EXPIRE_KEYS: &str = r#"
local T = ARGV[1]
local names = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, name in ipairs(names) do
  redis.call('DEL', T .. ':k:' .. name)
  redis.call('ZREM', T .. ':kx', name)
  redis.call('ZREM', T .. ':kl', name)
end
return #names
"#;

/// Writes a key record. Shared by reservations, take-overs and imports.
const KEY_WRITE: &str = r#"
local function key_write(k, T, name, pid, fp, exp, exp_ms, st, since, nonce)
  redis.call('DEL', k)
  redis.call('HSET', k, 'pid', pid, 'fp', fp, 'exp', exp, 'st', st, 'since', since, 'n', nonce)
  redis.call('PEXPIREAT', k, exp_ms)
  redis.call('ZADD', T .. ':kx', exp, name)
  redis.call('ZADD', T .. ':kl', 0, name)
end
"#;

/// Reserves an idempotency key for a prediction. KEYS: `T:k:<name>`.
/// ARGV: T, name, prediction id, fingerprint, exp, exp_ms, nonce.
/// Returns `{'reserved', nonce}`, `{'existing', pid, fp, exp}` (a confirmed key) or
/// `{'pending', pid, fp, exp, since, nonce}` (another request's reservation).
const RESERVE_KEY: &str = r#"
local k = KEYS[1]
local now = now_us()
local r = redis.call('HMGET', k, 'pid', 'fp', 'exp', 'st', 'since', 'n')
if r[1] and tonumber(r[3]) > now then
  if r[4] == 'c' then return {'existing', r[1], r[2], r[3]} end
  if r[1] == ARGV[3] then return {'reserved', r[6]} end
  return {'pending', r[1], r[2], r[3], r[5], r[6]}
end
key_write(k, ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], 'p', I(now), ARGV[7])
return {'reserved', ARGV[7]}
"#;

/// Replaces another request's abandoned reservation by ours. KEYS: `T:k:<name>`.
/// ARGV: T, name, their pid, their nonce, pid, fingerprint, exp, exp_ms, nonce.
/// Returns 1 if replaced, 0 if the record changed meanwhile.
const TAKE_OVER_KEY: &str = r#"
local k = KEYS[1]
local r = redis.call('HMGET', k, 'pid', 'st', 'n')
if r[1] ~= ARGV[3] or r[2] ~= 'p' or r[3] ~= ARGV[4] then return 0 end
key_write(k, ARGV[1], ARGV[2], ARGV[5], ARGV[6], ARGV[7], ARGV[8], 'p', I(now_us()), ARGV[9])
return 1
"#;

/// Marks a reservation confirmed (its prediction exists). KEYS: `T:k:<name>`.
/// ARGV: pid, nonce.
const CONFIRM_KEY: &str = r#"
local r = redis.call('HMGET', KEYS[1], 'pid', 'st', 'n')
if r[1] == ARGV[1] and r[2] == 'p' and r[3] == ARGV[2] then
  redis.call('HSET', KEYS[1], 'st', 'c')
  return 1
end
return 0
"#;

/// Drops a reservation whose prediction was not created. KEYS: `T:k:<name>`.
/// ARGV: T, name, pid, nonce.
const ABORT_KEY: &str = r#"
local r = redis.call('HMGET', KEYS[1], 'pid', 'st', 'n')
if r[1] == ARGV[3] and r[2] == 'p' and r[3] == ARGV[4] then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', ARGV[1] .. ':kx', ARGV[2])
  redis.call('ZREM', ARGV[1] .. ':kl', ARGV[2])
  return 1
end
return 0
"#;

/// Removes a key record if it still points at `pid`. KEYS: `T:k:<name>`. ARGV: T, name, pid.
const UNBIND_KEY: &str = r#"
if redis.call('HGET', KEYS[1], 'pid') == ARGV[3] then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', ARGV[1] .. ':kx', ARGV[2])
  redis.call('ZREM', ARGV[1] .. ':kl', ARGV[2])
  return 1
end
return 0
"#;

/// Decides another request's pending reservation, on the shard of its prediction.
/// KEYS: `T:p:<pid>`. ARGV: T, pid, key name, nonce, since, grace (µs), fence expiry (ms).
/// Returns 'bound' (its prediction exists, created with the key), 'wait' (still within
/// its grace period) or 'fenced' (that reservation can never create its prediction now).
const RESOLVE_KEY: &str = r#"
local T, id = ARGV[1], ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('SISMEMBER', T .. ':pk:' .. id, ARGV[3]) == 1 then return 'bound' end
elseif tonumber(ARGV[5]) + tonumber(ARGV[6]) > now_us() then
  return 'wait'
end
local fk = T .. ':f:' .. id
redis.call('SADD', fk, ARGV[4])
redis.call('PEXPIREAT', fk, ARGV[7])
return 'fenced'
"#;

/// Claims jobs. KEYS: the queues of the shards named (one in a cluster).
/// ARGV: mode ('peek' or 'take'), n, lease (µs), worker, #excluded, excluded queues...,
/// #tags, tags..., then n lease tokens (take).
/// Collects up to n claimable jobs per shard (oldest `visible_at` first, skipping excluded
/// queues), orders them by `(visible_at, id)` across shards, and either returns the first n
/// as `{visible_at, id, ...}` (peek) or leases them: `{expires_at, {id, queue, attempts,
/// run_at, token}, ...}` (take).
const CLAIM: &str = r#"
local mode, n, lease, worker = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local nexcl = tonumber(ARGV[5])
local excl = {}
for i = 1, nexcl do excl[ARGV[5 + i]] = true end
local p = 6 + nexcl
local nt = tonumber(ARGV[p])
local tok = p + nt + 1
local now = now_us()
local cands = {}
for t = 1, nt do
  local T = ARGV[p + t]
  local got, off = 0, 0
  while got < n do
    local batch = redis.call('ZRANGEBYSCORE', T .. ':q', '-inf', I(now), 'WITHSCORES', 'LIMIT', off, 256)
    for i = 1, #batch, 2 do
      local id = batch[i]
      if nexcl == 0 or not excl[redis.call('HGET', T .. ':j:' .. id, 'q')] then
        cands[#cands + 1] = {tonumber(batch[i + 1]), id, T}
        got = got + 1
        if got >= n then break end
      end
    end
    if #batch < 512 then break end
    off = off + 256
  end
end
if nt > 1 then
  table.sort(cands, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
end
local m = math.min(n, #cands)
if mode == 'peek' then
  local out = {}
  for i = 1, m do
    out[#out + 1] = I(cands[i][1])
    out[#out + 1] = cands[i][2]
  end
  return out
end
local exp = I(now + lease)
local out = {exp}
for i = 1, m do
  local T, id = cands[i][3], cands[i][2]
  local jk = T .. ':j:' .. id
  local a = redis.call('HINCRBY', jk, 'a', 1)
  local token = ARGV[tok + i - 1]
  redis.call('HSET', jk, 't', token, 'w', worker)
  redis.call('ZADD', T .. ':q', exp, id)
  redis.call('ZADD', T .. ':ls', exp, id)
  local f = redis.call('HMGET', jk, 'q', 'r')
  out[#out + 1] = {id, f[1], a, f[2], token}
end
return out
"#;

/// Extends a live lease. KEYS: `T:j:<id>`. ARGV: T, id, token, extend (µs).
/// Returns the new expiry, or nil if the lease is lost.
const RENEW: &str = r#"
local T, id = ARGV[1], ARGV[2]
local now = now_us()
local s = redis.call('ZSCORE', T .. ':q', id)
if redis.call('HGET', KEYS[1], 't') ~= ARGV[3] or not s or tonumber(s) <= now then return false end
local exp = I(now + tonumber(ARGV[4]))
redis.call('ZADD', T .. ':q', exp, id)
redis.call('ZADD', T .. ':ls', exp, id)
return exp
"#;

/// Ends a live lease, making the job claimable from `run_at` (retry, or release with the
/// attempt refunded). KEYS: `T:j:<id>`. ARGV: T, channel, id, token, run_at, refund (0/1).
/// Returns 1, or 0 if the lease is lost.
const REQUEUE: &str = r#"
local T, id = ARGV[1], ARGV[3]
local s = redis.call('ZSCORE', T .. ':q', id)
if redis.call('HGET', KEYS[1], 't') ~= ARGV[4] or not s or tonumber(s) <= now_us() then return 0 end
redis.call('HDEL', KEYS[1], 't', 'w')
redis.call('HSET', KEYS[1], 'r', ARGV[5])
if ARGV[6] == '1' then
  local a = tonumber(redis.call('HGET', KEYS[1], 'a'))
  if a > 0 then redis.call('HSET', KEYS[1], 'a', I(a - 1)) end
end
redis.call('ZADD', T .. ':q', ARGV[5], id)
redis.call('ZREM', T .. ':ls', id)
publish(ARGV[2], {'w'})
return 1
"#;

/// Removes a job. KEYS: `T:j:<id>`. ARGV: T, id.
const COMPLETE: &str = r#"
job_remove(ARGV[1], ARGV[2])
return 1
"#;

/// Job counts over the shards named. KEYS: their queues. ARGV: tags...
/// Returns `{ready, leased, delayed}`.
const STATS: &str = r#"
local now = I(now_us())
local ready, leased, total = 0, 0, 0
for i = 1, #ARGV do
  local T = ARGV[i]
  total = total + redis.call('ZCARD', T .. ':q')
  ready = ready + redis.call('ZCOUNT', T .. ':q', '-inf', now)
  leased = leased + redis.call('ZCOUNT', T .. ':ls', '(' .. now, '+inf')
end
return {ready, leased, total - ready - leased}
"#;

/// Jobs of one shard in id order. KEYS: `T:jl`. ARGV: T, after ('' = from the start), limit.
/// Returns `{{id, queue, attempts, run_at}, ...}`.
const LIST_JOBS: &str = r#"
local T = ARGV[1]
local min = '-'
if ARGV[2] ~= '' then min = '(' .. ARGV[2] end
local ids = redis.call('ZRANGEBYLEX', KEYS[1], min, '+', 'LIMIT', 0, ARGV[3])
local out = {}
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', T .. ':j:' .. id, 'q', 'a', 'r')
  out[#out + 1] = {id, f[1] or '', f[2] or '', f[3] or ''}
end
return out
"#;

/// Idempotency keys of one shard in name order, skipping records Redis already expired.
/// KEYS: `T:kl`. ARGV: T, after ('' = from the start), limit.
/// Returns `{{name, pid, fp, exp}, ...}`.
const LIST_KEYS: &str = r#"
local T, limit = ARGV[1], tonumber(ARGV[3])
local min = '-'
if ARGV[2] ~= '' then min = '(' .. ARGV[2] end
local out = {}
while #out < limit do
  local names = redis.call('ZRANGEBYLEX', KEYS[1], min, '+', 'LIMIT', 0, limit)
  for _, name in ipairs(names) do
    local f = redis.call('HMGET', T .. ':k:' .. name, 'pid', 'fp', 'exp')
    if f[1] then
      out[#out + 1] = {name, f[1], f[2], f[3]}
      if #out >= limit then break end
    end
    min = '(' .. name
  end
  if #names < limit then break end
end
return out
"#;

/// Imports a prediction at its revision. KEYS: `T:p:<id>`. ARGV: T, id, revision, record (8).
const IMPORT_PREDICTION: &str = r#"
local _, target = put(ARGV[1], ARGV[2], ARGV[3], record_at(4), true)
follow_ms(ARGV[1], ARGV[2], target)
return 1
"#;

/// Imports an unleased job. KEYS: `T:j:<id>`. ARGV: T, id, queue, attempts, run_at.
const IMPORT_JOB: &str = r#"
job_put(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[5], false, false)
return 1
"#;

/// Imports a confirmed idempotency key. KEYS: `T:k:<name>`.
/// ARGV: T, name, pid, fingerprint, exp, exp_ms.
const IMPORT_KEY: &str = r#"
key_write(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], 'c', '', '')
return 1
"#;

/// Claims webhook messages: for each prediction in a shard's heads set `T:oh` whose score
/// (`visible_at`) has passed, its oldest pending message. KEYS: the heads sets of the shards
/// named (one in a cluster). ARGV: mode ('peek' or 'take'), n, lease (µs), worker, #tags,
/// tags..., then n lease tokens (take). Orders the candidates by `(visible_at, id)` across
/// shards and either returns the first n as `{visible_at, id, ...}` (peek) or leases them:
/// `{expires_at, {id, seq, message, attempts, next_attempt_at, token}, ...}` (take).
const CLAIM_DELIVERIES: &str = r#"
local mode, n, lease, worker = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local nt = tonumber(ARGV[5])
local tok = 6 + nt
local now = now_us()
local cands = {}
for t = 1, nt do
  local T = ARGV[5 + t]
  local batch = redis.call('ZRANGEBYSCORE', T .. ':oh', '-inf', I(now), 'WITHSCORES', 'LIMIT', 0, n)
  for i = 1, #batch, 2 do cands[#cands + 1] = {tonumber(batch[i + 1]), batch[i], T} end
end
if nt > 1 then
  table.sort(cands, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
end
local m = math.min(n, #cands)
if mode == 'peek' then
  local out = {}
  for i = 1, m do
    out[#out + 1] = I(cands[i][1])
    out[#out + 1] = cands[i][2]
  end
  return out
end
local exp = I(now + lease)
local out = {exp}
for i = 1, m do
  local T, id = cands[i][3], cands[i][2]
  local s = redis.call('ZRANGE', T .. ':op:' .. id, 0, 0)[1]
  if s then
    local ok = T .. ':o:' .. id
    local token = ARGV[tok + i - 1]
    redis.call('HSET', ok, 't:' .. s, token, 'w:' .. s, worker, 'l:' .. s, exp)
    redis.call('ZADD', T .. ':oh', exp, id)
    local f = redis.call('HMGET', ok, 'm:' .. s, 'a:' .. s, 'n:' .. s)
    out[#out + 1] = {id, s, f[1], f[2] or '', f[3] or '', token}
  else
    redis.call('ZREM', T .. ':oh', id)
  end
end
return out
"#;

/// Ends a message's pending life: it leaves the pending hash and, if `keep`, goes to the
/// finished hash `T:of:<id>` with `status` and `attempts` (its own if false).
const MSG_FINISH: &str = r#"
local function msg_finish(T, id, s, status, attempts, keep)
  local f = msg_take(T .. ':o:' .. id, s)
  redis.call('ZREM', T .. ':op:' .. id, s)
  if keep and f[1] then
    local fk = T .. ':of:' .. id
    msg_put(fk, s, f[1], attempts or f[2], f[3])
    redis.call('HSET', fk, 's:' .. s, status)
  end
end
"#;

/// Records an attempt at a leased message and applies its outcome. KEYS: `T:o:<id>`.
/// ARGV: T, id, seq, token, attempt (JSON), outcome ('d' delivered, 'r' retry, 'f' give up,
/// 'F' give up with the later pending messages), retry_at (µs, for 'r').
/// Returns 1, or 0 if the lease is lost.
const FINISH_DELIVERY: &str = r#"
local T, id, s, out = ARGV[1], ARGV[2], ARGV[3], ARGV[6]
local ok = KEYS[1]
local now = now_us()
local f = redis.call('HMGET', ok, 't:' .. s, 'l:' .. s, 'a:' .. s)
if f[1] ~= ARGV[4] or not f[2] or tonumber(f[2]) <= now then return 0 end
local a = '[' .. ARGV[5] .. ']'
if f[3] then a = string.sub(f[3], 1, -2) .. ',' .. ARGV[5] .. ']' end
if out == 'r' then
  redis.call('HDEL', ok, 't:' .. s, 'w:' .. s, 'l:' .. s)
  redis.call('HSET', ok, 'a:' .. s, a, 'n:' .. s, ARGV[7])
else
  -- Once the prediction's data is gone, finished messages (which hold it) are not kept.
  local keep = not data_gone(T, id, now)
  local status = 'failed'
  if out == 'd' then status = 'delivered' end
  msg_finish(T, id, s, status, a, keep)
  if out == 'F' then
    for _, later in ipairs(redis.call('ZRANGEBYSCORE', T .. ':op:' .. id, '(' .. s, '+inf')) do
      msg_finish(T, id, later, 'failed', false, keep)
    end
  end
  if keep then
    follow_data(T, id)
  else
    redis.call('DEL', T .. ':of:' .. id)
    if redis.call('EXISTS', T .. ':op:' .. id) == 0 then redis.call('DEL', ok) end
  end
end
head_sync(T, id, now)
return 1
"#;

/// Makes a message pending again and due now, keeping its seq and attempts.
/// KEYS: `T:o:<id>`. ARGV: T, id, delivery id. Returns 1, or 0 if there is no such message.
const REDELIVER: &str = r#"
local T, id, did = ARGV[1], ARGV[2], ARGV[3]
local ok, fk = KEYS[1], T .. ':of:' .. id
local now = now_us()
local s = redis.call('HGET', ok, 'i:' .. did)
if s then
  redis.call('HDEL', ok, 't:' .. s, 'w:' .. s, 'l:' .. s)
else
  s = redis.call('HGET', fk, 'i:' .. did)
  if not s then return 0 end
  local f = msg_take(fk, s)
  msg_put(ok, s, f[1], f[2], f[3])
  redis.call('ZADD', T .. ':op:' .. id, s, s)
end
redis.call('HSET', ok, 'n:' .. s, I(now))
head_sync(T, id, now)
return 1
"#;

/// A prediction's outbox. KEYS: `T:o:<id>`. ARGV: T, id.
/// Returns `{pending hash, finished hash}` as field/value lists. The finished messages are
/// left out once the record is past its `expires_at` (Redis frees them by itself then).
const LIST_DELIVERIES: &str = r#"
local T, id = ARGV[1], ARGV[2]
local f = redis.call('HMGET', T .. ':p:' .. id, 'exp', 'rm')
local finished = {}
if not (f[1] and f[1] ~= '' and f[2] == '0' and tonumber(f[1]) <= now_us()) then
  finished = redis.call('HGETALL', T .. ':of:' .. id)
end
return {redis.call('HGETALL', KEYS[1]), finished}
"#;

/// A prediction's events from a position on. KEYS: `T:e:<id>`. ARGV: T, id, min (a
/// `ZRANGEBYLEX` bound), limit. Returns the members `<position> <event JSON>`; none once the
/// record is past its `expires_at` (Redis frees them by itself then).
const READ_EVENTS: &str = r#"
local f = redis.call('HMGET', ARGV[1] .. ':p:' .. ARGV[2], 'exp', 'rm')
if f[1] and f[1] ~= '' and f[2] == '0' and tonumber(f[1]) <= now_us() then return {} end
return redis.call('ZRANGEBYLEX', KEYS[1], ARGV[3], '+', 'LIMIT', 0, ARGV[4])
"#;

/// Imports a webhook message with its history, unleased, replacing the message with its id
/// (and any other at its seq). KEYS: `T:o:<id>`. ARGV: T, id, delivery id, seq, status,
/// message, attempts ('' = none), next_attempt_at ('' = none).
const IMPORT_DELIVERY: &str = r#"
local T, id, did, s, status = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local ok, fk, pk = KEYS[1], T .. ':of:' .. id, T .. ':op:' .. id
for _, k in ipairs({ok, fk}) do
  local old = redis.call('HGET', k, 'i:' .. did)
  if old then msg_take(k, old) redis.call('ZREM', pk, old) end
  if redis.call('HEXISTS', k, 'm:' .. s) == 1 then msg_take(k, s) redis.call('ZREM', pk, s) end
end
if tonumber(s) > tonumber(redis.call('HGET', ok, 'seq') or '0') then
  redis.call('HSET', ok, 'seq', s)
end
local k = ok
if status ~= 'pending' then k = fk end
msg_put(k, s, ARGV[6], ARGV[7], did)
if ARGV[8] ~= '' then redis.call('HSET', k, 'n:' .. s, ARGV[8]) end
if status == 'pending' then
  redis.call('ZADD', pk, s, s)
else
  redis.call('HSET', fk, 's:' .. s, status)
  follow_data(T, id)
end
head_sync(T, id, now_us())
return 1
"#;

/// Imports an event, replacing the one at its position. KEYS: `T:e:<id>`.
/// ARGV: T, id, position, event JSON.
const IMPORT_EVENT: &str = r#"
local pos = ARGV[3]
redis.call('ZREMRANGEBYLEX', KEYS[1], '[' .. pos .. ' ', '(' .. pos .. '!')
redis.call('ZADD', KEYS[1], 0, pos .. ' ' .. ARGV[4])
follow_data(ARGV[1], ARGV[2])
return 1
"#;

/// Every script, compiled once (the SHA1 each is invoked by).
pub(crate) struct Scripts {
    pub(crate) get: Script,
    pub(crate) get_many: Script,
    pub(crate) create: Script,
    pub(crate) update: Script,
    pub(crate) delete: Script,
    pub(crate) expire: Script,
    pub(crate) expire_keys: Script,
    pub(crate) reserve_key: Script,
    pub(crate) take_over_key: Script,
    pub(crate) confirm_key: Script,
    pub(crate) abort_key: Script,
    pub(crate) unbind_key: Script,
    pub(crate) resolve_key: Script,
    pub(crate) claim: Script,
    pub(crate) renew: Script,
    pub(crate) requeue: Script,
    pub(crate) complete: Script,
    pub(crate) stats: Script,
    pub(crate) list_jobs: Script,
    pub(crate) list_keys: Script,
    pub(crate) import_prediction: Script,
    pub(crate) import_job: Script,
    pub(crate) import_key: Script,
    pub(crate) claim_deliveries: Script,
    pub(crate) finish_delivery: Script,
    pub(crate) redeliver: Script,
    pub(crate) list_deliveries: Script,
    pub(crate) read_events: Script,
    pub(crate) import_delivery: Script,
    pub(crate) import_event: Script,
}

fn write_script(body: &str) -> Script {
    Script::new(&format!("#!lua\n{COMMON}{KEY_WRITE}{body}"))
}

fn read_script(body: &str) -> Script {
    Script::new(&format!("#!lua flags=no-writes\n{COMMON}{body}"))
}

/// The scripts, built on first use.
pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    get: read_script(GET),
    get_many: read_script(GET_MANY),
    create: write_script(CREATE),
    update: write_script(UPDATE),
    delete: write_script(DELETE),
    expire: write_script(EXPIRE),
    expire_keys: write_script(EXPIRE_KEYS),
    reserve_key: write_script(RESERVE_KEY),
    take_over_key: write_script(TAKE_OVER_KEY),
    confirm_key: write_script(CONFIRM_KEY),
    abort_key: write_script(ABORT_KEY),
    unbind_key: write_script(UNBIND_KEY),
    resolve_key: write_script(RESOLVE_KEY),
    claim: write_script(CLAIM),
    renew: write_script(RENEW),
    requeue: write_script(REQUEUE),
    complete: write_script(COMPLETE),
    stats: read_script(STATS),
    list_jobs: read_script(LIST_JOBS),
    list_keys: read_script(LIST_KEYS),
    import_prediction: write_script(IMPORT_PREDICTION),
    import_job: write_script(IMPORT_JOB),
    import_key: write_script(IMPORT_KEY),
    claim_deliveries: write_script(CLAIM_DELIVERIES),
    finish_delivery: write_script(&format!("{MSG_FINISH}{FINISH_DELIVERY}")),
    redeliver: write_script(REDELIVER),
    list_deliveries: read_script(LIST_DELIVERIES),
    read_events: read_script(READ_EVENTS),
    import_delivery: write_script(IMPORT_DELIVERY),
    import_event: write_script(IMPORT_EVENT),
});
