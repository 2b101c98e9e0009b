//! The Lua scripts: one per operation, each the whole operation (checks, the write, its
//! effects and the `PUBLISH` of its announcement) in one atomic step on one shard.
//!
//! Every script checks before it writes: Redis does not roll back a script that fails half
//! way, so refusals (an existing key, a conflict, missing credits, a counter at its limit, a
//! lost lease) are decided first. Write scripts carry a `#!lua` shebang, which makes Redis
//! refuse them up front when it is out of memory instead of failing half way; read scripts
//! are `flags=no-writes`.
//!
//! `KEYS` are shard tags (`{<prefix>s<k>}`); a script builds every key it touches from its tag,
//! so all of them share the tag's cluster slot. The one exception is the fairness clock of a
//! single server (see `enqueue` below), which lives in shard 0 and is reached from every
//! shard's scripts: a single server has no slots to respect. Numbers that do not fit a Lua
//! double exactly (lease tokens, listing positions) stay strings; times (microseconds),
//! revisions, ranks and credits do fit.
//!
//! The key layout is the crate README's table. In short, for shard tag `T`, kind `K`, lane
//! `L` and group `G` (`<kind>:<id>` of the record an item belongs to):
//!
//! - records: `T:r:K:<id>` hash (`v` revision, `pt` key partition, `o` owner, `c` creation
//!   time as 20 ordered digits, `s` status, `pa` parent, `x` expiry µs, `rm` data removed,
//!   `b` body, `hd` has data), or a forwarding entry (`f` owner) in the id's shard; `T:d:K:<id>`
//!   data; `T:e:K:<id>` event log; `T:i:K:*` listing indexes; `T:ids:K` ids (export);
//!   `T:x` retention queue (`K:<id>` by expiry); `T:xm` what retention needs of records that
//!   Redis expires whole.
//! - queue: `T:q:L:<id>` item hash (`g` group, `gp` its partition, `t` topic, `o` owner, `p`
//!   payload, `n` seq, `s` status, `c` claims, `a` attempts, `d` due, `ca` created, `r` rank,
//!   `od` order, `w` where it waits, `k`/`kw`/`ke` lease token, worker, expiry); `T:g:L:G`
//!   pending items by seq; `T:gf:L:G` finished items by seq; `T:h:L:<topic>` ready heads by
//!   rank; `T:ht:L` topics with ready heads (score: a lower bound of their lowest rank);
//!   `T:dl:L` heads due later; `T:ls:L` leased items by lease expiry; `T:w:L` items waiting
//!   behind their group's head; `T:qi:L` every item id (export); `T:fq:L` fairness state
//!   (`c:<topic>` clock, `l:<owner>:<topic>` last rank).
//! - `T:c` counters (this shard's share); `T:lg:<account>` ledger totals and entry ids,
//!   `T:le:<account>` ledger entries by seq, `T:la` accounts with a ledger.
//!
//! An item's `w` says where it waits: `r` ready (`T:h`), `d` due later (`T:dl`), `l` leased
//! (`T:ls`), `w` behind its group's head (`T:w`), `f` finished (`T:gf`). Every pending item is
//! in exactly one of the first four, so a claim reads candidates off the front of the ready
//! sets and never walks anything else.

use std::sync::LazyLock;

use augur_core::store::{Kind, Lane, OnExpiry};
use redis::Script;

/// How many lapsed leases and due delayed items one claim moves to the ready sets per shard
/// (the rest move at the next claim).
const PROMOTE: usize = 1000;

/// Helpers every script starts with (after the generated constants).
const COMMON: &str = r#"
local function I(n) return string.format('%d', n) end
local NOW = false
-- The server's clock in microseconds, read at most once per script.
local function now_us()
  if not NOW then
    local t = redis.call('TIME')
    NOW = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  return NOW
end
local function publish(chan, lines)
  if #lines > 0 then redis.call('PUBLISH', chan, table.concat(lines, '\n')) end
end
-- `x` (µs) in milliseconds for PEXPIREAT, rounded up (as `expiry_millis` in Rust).
local function exp_ms(x) return I(math.floor((tonumber(x) + 999) / 1000)) end
local function rkey(T, kind, id) return T .. ':r:' .. kind .. ':' .. id end
local function dkey(T, kind, id) return T .. ':d:' .. kind .. ':' .. id end
local function ekey(T, kind, id) return T .. ':e:' .. kind .. ':' .. id end
local function ikey(T, lane, id) return T .. ':q:' .. lane .. ':' .. id end
local function gkey(T, lane, g) return T .. ':g:' .. lane .. ':' .. g end
local function gfkey(T, lane, g) return T .. ':gf:' .. lane .. ':' .. g end
local function split_member(m)
  local c = string.find(m, ':', 1, true)
  return string.sub(m, 1, c - 1), string.sub(m, c + 1)
end
local RF = {'v', 'pt', 'o', 'c', 's', 'pa', 'x', 'rm', 'hd', 'f'}
-- A record's indexed fields (false where absent); `f` is set on a forwarding entry.
local function read_rec(T, kind, id)
  local got = redis.call('HMGET', rkey(T, kind, id), unpack(RF))
  local f = {}
  for i, name in ipairs(RF) do f[name] = got[i] end
  return f
end
-- True if a stored record reads as present: kinds Redis expires whole are absent from their
-- expiry on (their key may outlive it by up to a millisecond).
local function live(kind, f)
  return f.v and not (DELETE_KINDS[kind] and f.x and tonumber(f.x) <= now_us())
end
-- When the record's data (and event log) expire: its expiry while retention has yet to act.
local function target(kind, x, rm)
  if x and (DELETE_KINDS[kind] or rm == '0') then return exp_ms(x) end
  return false
end
-- What retention needs of a record Redis expires whole, once its hash is gone.
local function remnant(T, m)
  local j = redis.call('HGET', T .. ':xm', m)
  if not j then return false end
  local a = cjson.decode(j)
  return {v = a[1], pt = a[2], o = a[3], c = a[4], s = a[5], pa = a[6]}
end
local function idx_names(T, kind, r)
  local p = T .. ':i:' .. kind .. ':'
  local n = {p .. 'a', p .. 'o:' .. r.o, false, false, false}
  if r.s then
    n[3] = p .. 's:' .. r.s
    n[4] = p .. 'os:' .. r.o .. ':' .. r.s
  end
  if r.pa then n[5] = p .. 'p:' .. r.pa end
  return n
end
-- Moves a record's listing index entries from `old` to `new` (either false), touching only
-- the indexes that change.
local function index(T, kind, id, old, new)
  local on = old and idx_names(T, kind, old)
  local nn = new and idx_names(T, kind, new)
  local om = old and (old.c .. ':' .. id)
  local nm = new and (new.c .. ':' .. id)
  for i = 1, 5 do
    local ok = on and on[i]
    local nk = nn and nn[i]
    if ok ~= nk or om ~= nm then
      if ok then redis.call('ZREM', ok, om) end
      if nk then redis.call('ZADD', nk, 0, nm) end
    end
  end
end

-- The queue.
local function unplace(T, lane, id, w, topic, od)
  if w == 'r' then redis.call('ZREM', T .. ':h:' .. lane .. ':' .. topic, od .. ':' .. id)
  elseif w == 'd' then redis.call('ZREM', T .. ':dl:' .. lane, id)
  elseif w == 'l' then redis.call('ZREM', T .. ':ls:' .. lane, id)
  elseif w == 'w' then redis.call('SREM', T .. ':w:' .. lane, id) end
end
-- Puts a pending, unleased item where it waits; returns its `w`. Only a group's head is a
-- claim candidate: ready if due, else in the delayed set until a claim finds it due.
local function place(T, lane, id, topic, rank, od, due, head)
  if not head then
    redis.call('SADD', T .. ':w:' .. lane, id)
    return 'w'
  end
  if tonumber(due) <= now_us() then
    redis.call('ZADD', T .. ':h:' .. lane .. ':' .. topic, rank, od .. ':' .. id)
    redis.call('ZADD', T .. ':ht:' .. lane, 'LT', rank, topic)
    return 'r'
  end
  redis.call('ZADD', T .. ':dl:' .. lane, due, id)
  return 'd'
end
-- After a group's items changed: its head becomes a candidate if it was waiting.
local function refresh_head(T, lane, g)
  local head = redis.call('ZRANGE', gkey(T, lane, g), 0, 0)[1]
  if not head then return end
  local ik = ikey(T, lane, head)
  local f = redis.call('HMGET', ik, 'w', 't', 'r', 'od', 'd')
  if f[1] == 'w' then
    redis.call('SREM', T .. ':w:' .. lane, head)
    redis.call('HSET', ik, 'w', place(T, lane, head, f[2], f[3], f[4], f[5], true))
  end
end
-- A former head that an older item displaced waits again (a leased one keeps its lease).
local function demote(T, lane, id)
  local ik = ikey(T, lane, id)
  local f = redis.call('HMGET', ik, 'w', 't', 'od')
  if f[1] == 'r' or f[1] == 'd' then
    unplace(T, lane, id, f[1], f[2], f[3])
    redis.call('SADD', T .. ':w:' .. lane, id)
    redis.call('HSET', ik, 'w', 'w')
  end
end
-- {g, s, w, t, od, n} of an item, or false.
local function item_head(T, lane, id)
  local f = redis.call('HMGET', ikey(T, lane, id), 'g', 's', 'w', 't', 'od', 'n')
  if not f[1] then return false end
  return {g = f[1], s = f[2], w = f[3], t = f[4], od = f[5], n = f[6]}
end
local function item_remove(T, lane, id, f)
  unplace(T, lane, id, f.w, f.t, f.od)
  redis.call('DEL', ikey(T, lane, id))
  redis.call('ZREM', T .. ':qi:' .. lane, id)
  if f.s == 'p' then
    redis.call('ZREM', gkey(T, lane, f.g), id)
    if f.w ~= 'w' then refresh_head(T, lane, f.g) end
  else
    redis.call('ZREM', gfkey(T, lane, f.g), id)
  end
end
-- Removes a group's finished items, and its pending ones too if `pending`.
local function drop_group(T, lane, g, pending)
  if pending then
    local gk = gkey(T, lane, g)
    for _, id in ipairs(redis.call('ZRANGE', gk, 0, -1)) do
      local f = redis.call('HMGET', ikey(T, lane, id), 'w', 't', 'od')
      unplace(T, lane, id, f[1], f[2], f[3])
      redis.call('DEL', ikey(T, lane, id))
      redis.call('ZREM', T .. ':qi:' .. lane, id)
    end
    redis.call('DEL', gk)
  end
  local fk = gfkey(T, lane, g)
  for _, id in ipairs(redis.call('ZRANGE', fk, 0, -1)) do
    redis.call('DEL', ikey(T, lane, id))
    redis.call('ZREM', T .. ':qi:' .. lane, id)
  end
  redis.call('DEL', fk)
end
-- True if the record `g` (`<kind>:<id>`) still holds its data: a finished item of a lane
-- that keeps them is kept only then.
local function holds_data(T, g)
  local f = redis.call('HMGET', T .. ':r:' .. g, 'v', 'rm', 'x')
  return f[1] and f[2] ~= '1' and not (f[3] and tonumber(f[3]) <= now_us())
end
-- The next seq of a group (one past the largest it holds, pending or finished), and whether
-- it has no pending item.
local function next_seq(T, lane, g)
  local seq, empty = 0, true
  for i, k in ipairs({gkey(T, lane, g), gfkey(T, lane, g)}) do
    local last = redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')
    if #last > 0 then
      if tonumber(last[2]) > seq then seq = tonumber(last[2]) end
      if i == 1 then empty = false end
    end
    if not KEEPS[lane] then break end
  end
  return seq + 1, empty
end
-- Start-time fair queuing: an item's rank is one past the larger of its account's last rank
-- and the lane and topic's clock (the highest rank claimed), in the fairness hash of `CT`
-- (shard 0 on a single server, the item's own shard in a cluster). A claimed item raises
-- the clock to its rank at once.
local function rank_of(CT, lane, owner, topic, claimed)
  local fq = CT .. ':fq:' .. lane
  local cf, lf = 'c:' .. topic, 'l:' .. owner .. ':' .. topic
  local v = redis.call('HMGET', fq, cf, lf)
  local clock = tonumber(v[1]) or 0
  local rank = math.max(clock, tonumber(v[2]) or 0) + 1
  if claimed then
    redis.call('HSET', fq, lf, I(rank), cf, I(rank))
  else
    redis.call('HSET', fq, lf, I(rank))
  end
  return rank
end
-- Enqueue order, the tie-break between equal ranks: a time (µs) and a counter.
local ORDER = 0
local function next_order(t)
  ORDER = ORDER + 1
  return string.format('%016d%04d', tonumber(t), ORDER)
end
"#;

/// Record writes, shared by the write and import scripts.
const RECORDS: &str = r#"
-- Stores a record in place of `old` (its read fields, or false if there is none), keeping
-- indexes, retention and native expiry right. Returns the data's expiry before and after
-- (for the event log, which the caller follows once the write's events are in).
local function put(T, kind, id, rev, r, old)
  local k = rkey(T, kind, id)
  index(T, kind, id, old, r)
  local h = {'v', rev, 'pt', r.pt, 'o', r.o, 'c', r.c, 'rm', r.rm, 'b', r.b, 'hd', r.hd and '1' or '0'}
  local gone = {}
  for _, name in ipairs({'s', 'pa', 'x'}) do
    if r[name] then
      h[#h + 1] = name
      h[#h + 1] = r[name]
    elseif old and old[name] then
      gone[#gone + 1] = name
    end
  end
  redis.call('HSET', k, unpack(h))
  if #gone > 0 then redis.call('HDEL', k, unpack(gone)) end
  local del = DELETE_KINDS[kind]
  local tgt = target(kind, r.x, r.rm)
  local was = old and target(kind, old.x, old.rm) or false
  local dk = dkey(T, kind, id)
  if r.hd then
    redis.call('SET', dk, r.data)
    if tgt then redis.call('PEXPIREAT', dk, tgt) end
  elseif old and old.hd == '1' then
    redis.call('DEL', dk)
  end
  if del then
    if tgt then redis.call('PEXPIREAT', k, tgt) elseif was then redis.call('PERSIST', k) end
  end
  local m = kind .. ':' .. id
  local pend = r.x and (del or r.rm == '0')
  local opend = old and old.x and (del or old.rm == '0')
  if pend then
    if not opend or old.x ~= r.x then redis.call('ZADD', T .. ':x', r.x, m) end
  elseif opend then
    redis.call('ZREM', T .. ':x', m)
  end
  if del then
    if r.x then
      redis.call('HSET', T .. ':xm', m, cjson.encode({rev, r.pt, r.o, r.c, r.s, r.pa}))
    elseif opend then
      redis.call('HDEL', T .. ':xm', m)
    end
  end
  if not old then redis.call('ZADD', T .. ':ids:' .. kind, 0, id) end
  return was, tgt
end
-- Removes a record (`old`: its fields, from its hash or its remnant) with its data, event
-- log, indexes and queue items.
local function remove_record(T, kind, id, old)
  index(T, kind, id, old, false)
  redis.call('DEL', rkey(T, kind, id), dkey(T, kind, id), ekey(T, kind, id))
  local m = kind .. ':' .. id
  redis.call('ZREM', T .. ':x', m)
  if DELETE_KINDS[kind] then redis.call('HDEL', T .. ':xm', m) end
  redis.call('ZREM', T .. ':ids:' .. kind, id)
  for _, lane in ipairs(LANES) do drop_group(T, lane, m, true) end
end
-- Record arguments from ARGV[p] (eight): c, status, parent ('' = none, else '+' and the
-- text), expiry µs ('' = none), rm, body, hd, data. Returns them and the next position.
local function record_at(p, owner, pt)
  local function opt(s) if s == '' then return false end return string.sub(s, 2) end
  return {pt = pt, o = owner, c = ARGV[p], s = opt(ARGV[p + 1]), pa = opt(ARGV[p + 2]),
          x = ARGV[p + 3] ~= '' and ARGV[p + 3] or false, rm = ARGV[p + 4], b = ARGV[p + 5],
          hd = ARGV[p + 6] == '1', data = ARGV[p + 7]}, p + 8
end
local function record_line(kind, pt, rev, id)
  return 'k ' .. kind .. ' ' .. pt .. ' ' .. rev .. ' ' .. id
end
-- Event log expiry after a write: re-followed when the data's expiry changed, and set on a
-- log the write may have started.
local function follow(T, kind, id, was, now, appended)
  local ek = ekey(T, kind, id)
  if was ~= now then
    if now then redis.call('PEXPIREAT', ek, now) else redis.call('PERSIST', ek) end
  elseif appended and now then
    redis.call('PEXPIREAT', ek, now)
  end
end
"#;

/// Commits a write. KEYS: the shard's tag `T`. ARGV: CT (fairness clock tag), channel,
/// account, the writer's clock (µs: when its items were queued), #ops, ops, #effects,
/// effects.
///
/// An op: type (`I`nsert, `U`pdate, `D`elete), kind, id, partition, refused (`1` if its
/// forwarding entry was refused: it is `Exists`), then for I/U the expected revision (`''`
/// for I) and the eight record arguments (`record_at`).
///
/// An effect: `Q` lane, id, group kind, group id, group partition, topic, payload, run_at,
/// replace, claimed, worker, token, lease expiry | `C` lane, id | `N` name, delta, limit
/// (`''` = none) | `V` stream kind, stream id, #members, members (`<position> <JSON>`) | `L`
/// entry id, delta, held, the entry's JSON.
///
/// Returns `{'ok', skipped entry ids...}`, or the first refusal: `{'exists', op}`,
/// `{'notfound', op}`, `{'conflict', op, revision}`, `{'credits', available, needed}`,
/// `{'limit', counter, limit}`.
const WRITE: &str = r#"
local T, CT, CHAN, ACCT, WNOW = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local p = 6
local ops = {}
for i = 1, tonumber(ARGV[5]) do
  local o = {t = ARGV[p], kind = ARGV[p + 1], id = ARGV[p + 2], pt = ARGV[p + 3],
             refused = ARGV[p + 4] == '1'}
  p = p + 5
  if o.t ~= 'D' then
    o.expected = ARGV[p]
    o.r, p = record_at(p + 1, ACCT, o.pt)
  end
  o.m = o.kind .. ':' .. o.id
  ops[i] = o
end
local neffects = tonumber(ARGV[p])
p = p + 1
local effects = {}
for i = 1, neffects do
  local e = {t = ARGV[p]}
  if e.t == 'Q' then
    e.lane, e.id, e.gkind, e.gid = ARGV[p + 1], ARGV[p + 2], ARGV[p + 3], ARGV[p + 4]
    e.gpart, e.topic, e.payload, e.run_at = ARGV[p + 5], ARGV[p + 6], ARGV[p + 7], ARGV[p + 8]
    e.replace, e.claimed = ARGV[p + 9] == '1', ARGV[p + 10] == '1'
    e.worker, e.token, e.exp = ARGV[p + 11], ARGV[p + 12], ARGV[p + 13]
    p = p + 14
  elseif e.t == 'C' then
    e.lane, e.id = ARGV[p + 1], ARGV[p + 2]
    p = p + 3
  elseif e.t == 'N' then
    e.name, e.delta, e.limit = ARGV[p + 1], tonumber(ARGV[p + 2]), tonumber(ARGV[p + 3])
    p = p + 4
  elseif e.t == 'V' then
    e.kind, e.id, e.n = ARGV[p + 1], ARGV[p + 2], tonumber(ARGV[p + 3])
    e.first = p + 4
    p = p + 4 + e.n
  elseif e.t == 'L' then
    e.id, e.delta, e.held, e.json = ARGV[p + 1], tonumber(ARGV[p + 2]), tonumber(ARGV[p + 3]), ARGV[p + 4]
    p = p + 5
  else
    return redis.error_reply('unknown effect ' .. tostring(e.t))
  end
  effects[i] = e
end

-- Checks, in order, against the state before the write.
local reads = {}
for i, o in ipairs(ops) do
  if o.t ~= 'D' then
    local f = reads[o.m]
    if not f then
      f = read_rec(T, o.kind, o.id)
      reads[o.m] = f
    end
    if o.t == 'I' then
      if o.refused or f.f or live(o.kind, f) then return {'exists', i} end
    else
      -- Another account's record is as good as absent: a write never reaches into it.
      if f.f or not live(o.kind, f) or f.o ~= ACCT then return {'notfound', i} end
      if f.v ~= o.expected then return {'conflict', i, f.v} end
    end
  end
end
-- Ledger entries: skip those posted before (or earlier in this write); refuse the write if
-- what the account can spend would go below zero.
local lg = T .. ':lg:' .. ACCT
local posts = {}
for _, e in ipairs(effects) do
  if e.t == 'L' then posts[#posts + 1] = e end
end
local totals
if #posts > 0 then
  local fields = {'b', 'r', 'n'}
  for _, e in ipairs(posts) do fields[#fields + 1] = 'i:' .. e.id end
  local got = redis.call('HMGET', lg, unpack(fields))
  totals = {b = tonumber(got[1]) or 0, r = tonumber(got[2]) or 0, n = tonumber(got[3]) or 0}
  local b, r = totals.b, totals.r
  local needed, seen = 0, {}
  for j, e in ipairs(posts) do
    if got[3 + j] or seen[e.id] then
      e.skip = true
    else
      seen[e.id] = true
      b = b + e.delta
      r = r + e.held
      local ad = e.delta - e.held
      if ad < 0 then
        needed = needed - ad
        if b - r < 0 then return {'credits', I(totals.b - totals.r), I(needed)} end
      end
    end
  end
end
-- Limited counters: this shard holds the whole value (only its account's writes change it).
local counts = {}
for _, e in ipairs(effects) do
  if e.t == 'N' and e.limit then
    if counts[e.name] == nil then
      counts[e.name] = tonumber(redis.call('HGET', T .. ':c', e.name)) or 0
    end
    counts[e.name] = counts[e.name] + e.delta
    if e.delta > 0 and counts[e.name] > e.limit then return {'limit', e.name, I(e.limit)} end
  end
end

-- Apply the operations.
local lines = {}
local follows = {}
local touched = {}
for _, o in ipairs(ops) do
  local f = reads[o.m]
  if touched[o.m] or not f then f = read_rec(T, o.kind, o.id) end
  touched[o.m] = true
  local fl = follows[o.m]
  if o.t == 'D' then
    local old = (f.v and f) or (DELETE_KINDS[o.kind] and remnant(T, o.m))
    -- Another account's record is left alone.
    if old and old.o ~= ACCT then old = false end
    if old then
      remove_record(T, o.kind, o.id, old)
      lines[#lines + 1] = record_line(o.kind, old.pt, I(tonumber(old.v) + 1), o.id)
    end
    follows[o.m] = nil
  else
    local old = f.v and f or false
    if o.t == 'I' then
      -- A record that reads as absent (expired) is replaced whole.
      local gone = old or (DELETE_KINDS[o.kind] and remnant(T, o.m))
      if gone then remove_record(T, o.kind, o.id, gone) end
      old = false
    end
    local rev = o.t == 'I' and '1' or I(tonumber(o.expected) + 1)
    local was, now = put(T, o.kind, o.id, rev, o.r, old)
    if fl then was = fl.was end
    follows[o.m] = {kind = o.kind, id = o.id, was = was, now = now}
    lines[#lines + 1] = record_line(o.kind, o.pt, rev, o.id)
  end
end

-- Apply the effects, in order.
local work, skipped = {}, {}
local ledger_members, ledger_fields = {}, {}
for _, e in ipairs(effects) do
  if e.t == 'Q' then
    local ik = ikey(T, e.lane, e.id)
    local old = item_head(T, e.lane, e.id)
    local g = e.gkind .. ':' .. e.gid
    local go = true
    if old and not e.replace then go = false end
    if go then
      -- Seqs rise past a replaced item, as they do in the memory store.
      local seq, head = next_seq(T, e.lane, g)
      local gk = gkey(T, e.lane, g)
      if old then
        item_remove(T, e.lane, e.id, old)
        if old.g == g then head = redis.call('ZRANGE', gk, 0, 0)[1] == nil end
      end
      local rank = rank_of(CT, e.lane, ACCT, e.topic, e.claimed)
      local od = next_order(WNOW)
      local h = {'g', g, 'gp', e.gpart, 't', e.topic, 'o', ACCT, 'p', e.payload, 'n', I(seq),
                 's', 'p', 'd', e.run_at, 'ca', WNOW, 'r', I(rank), 'od', od}
      local w
      if e.claimed then
        w = 'l'
        for _, v in ipairs({'c', '1', 'k', e.token, 'kw', e.worker, 'ke', e.exp}) do h[#h + 1] = v end
        redis.call('ZADD', T .. ':ls:' .. e.lane, e.exp, e.id)
      else
        h[#h + 1] = 'c'
        h[#h + 1] = '0'
        w = place(T, e.lane, e.id, e.topic, I(rank), od, e.run_at, head)
      end
      h[#h + 1] = 'w'
      h[#h + 1] = w
      redis.call('HSET', ik, unpack(h))
      redis.call('ZADD', gk, seq, e.id)
      redis.call('ZADD', T .. ':qi:' .. e.lane, 0, e.id)
    end
    if not e.claimed then work[e.lane] = true end
  elseif e.t == 'C' then
    local old = item_head(T, e.lane, e.id)
    if old then item_remove(T, e.lane, e.id, old) end
  elseif e.t == 'N' then
    redis.call('HINCRBY', T .. ':c', e.name, e.delta)
  elseif e.t == 'V' then
    local args = {}
    for j = 0, e.n - 1 do
      args[#args + 1] = 0
      args[#args + 1] = ARGV[e.first + j]
    end
    if #args > 0 then redis.call('ZADD', ekey(T, e.kind, e.id), unpack(args)) end
    local fl = follows[e.kind .. ':' .. e.id]
    if fl then fl.appended = true end
  elseif e.t == 'L' then
    if e.skip then
      skipped[#skipped + 1] = e.id
    else
      totals.n = totals.n + 1
      totals.b = totals.b + e.delta
      totals.r = totals.r + e.held
      local seq = I(totals.n)
      ledger_members[#ledger_members + 1] = seq
      ledger_members[#ledger_members + 1] = seq .. '|' .. I(totals.b) .. '|' .. I(totals.r) .. '|' .. e.json
      for _, v in ipairs({'i:' .. e.id, seq, 's:' .. seq, e.id}) do ledger_fields[#ledger_fields + 1] = v end
    end
  end
end
if #ledger_members > 0 then
  redis.call('ZADD', T .. ':le:' .. ACCT, unpack(ledger_members))
  redis.call('HSET', lg, 'b', I(totals.b), 'r', I(totals.r), 'n', I(totals.n), unpack(ledger_fields))
  if totals.n == #ledger_members / 2 then redis.call('ZADD', T .. ':la', 0, ACCT) end
end
for _, fl in pairs(follows) do follow(T, fl.kind, fl.id, fl.was, fl.now, fl.appended) end
for _, lane in ipairs(LANES) do
  if work[lane] then lines[#lines + 1] = 'w ' .. lane end
end
publish(CHAN, lines)
local out = {'ok'}
for _, id in ipairs(skipped) do out[#out + 1] = id end
return out
"#;

/// Claims an id for a record that lives in another shard (a client-chosen id outside its
/// owner's partition): writes a forwarding entry in the id's shard, unless another owner's
/// record or entry holds the id. KEYS: the id's shard tag. ARGV: kind, id, owner.
/// Returns 1, or 0 if the id is taken.
const FORWARD: &str = r#"
local T, kind, id, owner = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local f = read_rec(T, kind, id)
if f.f then
  if f.f == owner then return 1 end
  return 0
end
if f.v then
  if live(kind, f) then return 0 end
  remove_record(T, kind, id, f)
end
redis.call('HSET', rkey(T, kind, id), 'f', owner)
return 1
"#;

/// Reading records: a record as a reply, `{kind, id, partition, revision, owner, c, status,
/// parent, expiry, rm, body, data}` (false where absent), as a reader sees it now: a kind
/// Redis expires whole is absent from its expiry on; past its expiry, another kind reads as
/// its tombstone (its data expired natively), at the same revision, until `expire` moves it
/// on. `filter` (or nil) sees the fields before the data is read.
const READ: &str = r#"
local function rec_reply(T, kind, id, filter)
  local k = rkey(T, kind, id)
  local f = redis.call('HMGET', k, 'v', 'pt', 'o', 'c', 's', 'pa', 'x', 'rm', 'b', 'hd')
  if not f[1] then return false end
  local rm, data = f[8], false
  if f[7] and tonumber(f[7]) <= now_us() then
    if DELETE_KINDS[kind] then return false end
    rm = '1'
  end
  if filter and not filter(f) then return false end
  if rm == '0' and f[10] == '1' then data = redis.call('GET', dkey(T, kind, id)) end
  return {kind, id, f[2], f[1], f[3], f[4], f[5], f[6], f[7], rm, f[9], data}
end
"#;

/// Reads a record. KEYS: a shard tag. ARGV: kind, id, follow (`1`: answer a forwarding entry).
/// Returns `{'rec', record}`, `{'fwd', owner}` or nil.
const GET: &str = r#"
local T, kind, id = KEYS[1], ARGV[1], ARGV[2]
local r = rec_reply(T, kind, id, nil)
if r then return {'rec', r} end
if ARGV[3] == '1' then
  local f = redis.call('HGET', rkey(T, kind, id), 'f')
  if f then return {'fwd', f} end
end
return false
"#;

/// Reads records of one kind in one shard. KEYS: the tag. ARGV: kind, ids...
/// Returns a record (or false) per id.
const GET_MANY: &str = r#"
local out = {}
for i = 2, #ARGV do out[#out + 1] = rec_reply(KEYS[1], ARGV[1], ARGV[i], nil) end
return out
"#;

/// One shard's part of a listing: walks an index newest first from `max` down to `min`
/// (`ZREVRANGEBYLEX` bounds), or with direction `b` oldest first from `min` up to `max`,
/// keeping records that pass the filters, until it has `want`, the index ends or it looked
/// at `cap` entries. KEYS: the tag. ARGV: kind, index (after `T:i:<kind>:`), max, min, want,
/// cap, owner (`''` = any), status and parent (`''` = any, else `+` and the text), direction
/// (`f` or `b`). Returns `{exhausted, last entry looked at, records}`.
const LIST: &str = r#"
local T, kind = KEYS[1], ARGV[1]
local idx = T .. ':i:' .. kind .. ':' .. ARGV[2]
local max, min, want, cap = ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local own, st, pa = ARGV[7], string.sub(ARGV[8], 2), string.sub(ARGV[9], 2)
local out, scanned, last, done = {}, 0, '', false
while #out < want and scanned < cap do
  local n = math.min(want - #out + 8, cap - scanned)
  local batch
  if ARGV[10] == 'b' then
    batch = redis.call('ZRANGEBYLEX', idx, min, max, 'LIMIT', 0, n)
  else
    batch = redis.call('ZREVRANGEBYLEX', idx, max, min, 'LIMIT', 0, n)
  end
  for _, m in ipairs(batch) do
    scanned = scanned + 1
    last = m
    local c, id = string.sub(m, 1, 20), string.sub(m, 22)
    local r = rec_reply(T, kind, id, function(f)
      return f[4] == c and (own == '' or f[3] == own) and (ARGV[8] == '' or f[5] == st)
        and (ARGV[9] == '' or f[6] == pa)
    end)
    if r then
      out[#out + 1] = r
      if #out >= want then break end
    end
  end
  if #out >= want then break end
  if #batch < n then
    done = true
    break
  end
  if ARGV[10] == 'b' then min = '(' .. last else max = '(' .. last end
end
return {done and '1' or '0', last, out}
"#;

/// Applies retention to due records of one shard. KEYS: the tag. ARGV: channel, now,
/// members (`<kind>:<id>`) of `T:x`. Returns `{kind, id, partition}` of each record acted on.
const EXPIRE: &str = r#"
local T, now = KEYS[1], tonumber(ARGV[2])
local out, lines = {}, {}
for i = 3, #ARGV do
  local m = ARGV[i]
  local s = redis.call('ZSCORE', T .. ':x', m)
  if s and tonumber(s) <= now then
    local kind, id = split_member(m)
    local f = read_rec(T, kind, id)
    redis.call('ZREM', T .. ':x', m)
    if DELETE_KINDS[kind] then
      local old = (f.v and f) or remnant(T, m)
      if old then
        remove_record(T, kind, id, old)
        out[#out + 1] = {kind, id, old.pt}
        lines[#lines + 1] = record_line(kind, old.pt, I(tonumber(old.v) + 1), id)
      end
    elseif f.v and f.rm == '0' then
      -- The tombstone: the body stays, the data goes with what holds it.
      local k = rkey(T, kind, id)
      local rev = redis.call('HINCRBY', k, 'v', 1)
      redis.call('HSET', k, 'rm', '1', 'hd', '0')
      redis.call('DEL', dkey(T, kind, id), ekey(T, kind, id))
      for _, lane in ipairs(LANES) do
        if KEEPS[lane] then drop_group(T, lane, m, false) end
      end
      out[#out + 1] = {kind, id, f.pt}
      lines[#lines + 1] = record_line(kind, f.pt, I(rev), id)
    end
  end
end
publish(ARGV[1], lines)
return out
"#;

/// Claims: the ready heads of a lane, lowest rank first. KEYS: the shards' tags (all 16 on a
/// single server, one in a cluster). ARGV: lane, mode (`peek` or `take`), n, lease (µs),
/// worker, CT (the clock tag on a single server, `''` for each shard's own), #excluded,
/// excluded topics..., then for `take`: #raise, (topic, rank)... and n lease tokens.
///
/// First, in each shard, lapsed leases and due delayed heads become ready. Then the ready
/// sets of the topics not excluded are merged by `(rank, order)`, visiting topics by the
/// lower bound of their lowest rank and stopping once no topic can improve on the best n.
/// `peek` returns `{rank, member, topic, ...}` of the best n; `take` leases them, raises the
/// clock of each topic claimed to the highest rank claimed (or given in raise), and returns
/// `{expires_at, {id, group, group partition, topic, owner, payload, seq, claims, attempts,
/// due, created, token}...}`.
const CLAIM: &str = r#"
local lane, mode, n, lease, worker, CTG = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], ARGV[6]
local p = 7
local excl = {}
local ne = tonumber(ARGV[p])
for i = 1, ne do excl[ARGV[p + i]] = true end
p = p + ne + 1
local raise, tok = {}, 0
if mode == 'take' then
  local nr = tonumber(ARGV[p])
  for i = 0, nr - 1 do raise[ARGV[p + 1 + 2 * i]] = tonumber(ARGV[p + 2 + 2 * i]) end
  tok = p + 1 + 2 * nr
end
local now = now_us()
local function promote(T)
  local ls = T .. ':ls:' .. lane
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', ls, '-inf', I(now), 'LIMIT', 0, PROMOTE)) do
    redis.call('ZREM', ls, id)
    local ik = ikey(T, lane, id)
    local f = redis.call('HMGET', ik, 'g', 't', 'r', 'od', 'd')
    if f[1] then
      local head = redis.call('ZRANGE', gkey(T, lane, f[1]), 0, 0)[1] == id
      redis.call('HSET', ik, 'w', place(T, lane, id, f[2], f[3], f[4], f[5], head))
      redis.call('HDEL', ik, 'k', 'kw', 'ke')
    end
  end
  local dl = T .. ':dl:' .. lane
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', dl, '-inf', I(now), 'LIMIT', 0, PROMOTE)) do
    redis.call('ZREM', dl, id)
    local ik = ikey(T, lane, id)
    local f = redis.call('HMGET', ik, 't', 'r', 'od')
    if f[1] then
      redis.call('ZADD', T .. ':h:' .. lane .. ':' .. f[1], f[2], f[3] .. ':' .. id)
      redis.call('ZADD', T .. ':ht:' .. lane, 'LT', f[2], f[1])
      redis.call('HSET', ik, 'w', 'r')
    end
  end
end
local function better(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  return a[2] < b[2]
end
local cands = {}
local function gather(T)
  local reg = T .. ':ht:' .. lane
  local topics = redis.call('ZRANGE', reg, 0, -1, 'WITHSCORES')
  for j = 1, #topics, 2 do
    local topic, lb = topics[j], tonumber(topics[j + 1])
    if #cands >= n and lb > cands[n][1] then break end
    if not excl[topic] then
      local got = redis.call('ZRANGE', T .. ':h:' .. lane .. ':' .. topic, 0, n - 1, 'WITHSCORES')
      if #got == 0 then
        redis.call('ZREM', reg, topic)
      else
        if tonumber(got[2]) > lb then redis.call('ZADD', reg, 'XX', got[2], topic) end
        for i = 1, #got, 2 do cands[#cands + 1] = {tonumber(got[i + 1]), got[i], topic, T} end
        table.sort(cands, better)
        for i = #cands, n + 1, -1 do cands[i] = nil end
      end
    end
  end
end
for _, T in ipairs(KEYS) do
  promote(T)
  gather(T)
end
if mode == 'peek' then
  local out = {}
  for _, c in ipairs(cands) do
    out[#out + 1] = I(c[1])
    out[#out + 1] = c[2]
    out[#out + 1] = c[3]
  end
  return out
end
local exp = I(now + lease)
local out = {exp}
local top = {}
for i, c in ipairs(cands) do
  local T, member, topic = c[4], c[2], c[3]
  local id = string.sub(member, 22)
  redis.call('ZREM', T .. ':h:' .. lane .. ':' .. topic, member)
  local ik = ikey(T, lane, id)
  local token = ARGV[tok + i - 1]
  local f = redis.call('HMGET', ik, 'g', 'gp', 'o', 'p', 'n', 'a', 'd', 'ca', 'c')
  local claims = I(tonumber(f[9]) + 1)
  redis.call('HSET', ik, 'c', claims, 'k', token, 'kw', worker, 'ke', exp, 'w', 'l')
  redis.call('ZADD', T .. ':ls:' .. lane, exp, id)
  out[#out + 1] = {id, f[1], f[2], topic, f[3], f[4], f[5], claims, f[6], f[7], f[8], token}
  local CT = CTG ~= '' and CTG or T
  top[CT] = top[CT] or {}
  if not top[CT][topic] or top[CT][topic] < c[1] then top[CT][topic] = c[1] end
end
for CT, topics in pairs(top) do
  for topic, r in pairs(raise) do
    if not topics[topic] or topics[topic] < r then topics[topic] = r end
  end
  local fq = CT .. ':fq:' .. lane
  for topic, r in pairs(topics) do
    local cur = tonumber(redis.call('HGET', fq, 'c:' .. topic)) or 0
    if cur < r then redis.call('HSET', fq, 'c:' .. topic, I(r)) end
  end
end
return out
"#;

/// Extends a live lease. KEYS: the item's shard tag. ARGV: lane, id, token, extend (µs).
/// Returns the new expiry, or nil if the lease is lost (another token, or lapsed).
const RENEW: &str = r#"
local T, lane, id = KEYS[1], ARGV[1], ARGV[2]
local ik = ikey(T, lane, id)
local f = redis.call('HMGET', ik, 'k', 'ke')
local now = now_us()
if f[1] ~= ARGV[3] or not f[2] or tonumber(f[2]) <= now then return false end
local exp = I(now + tonumber(ARGV[4]))
redis.call('HSET', ik, 'ke', exp)
redis.call('ZADD', T .. ':ls:' .. lane, exp, id)
return exp
"#;

/// Ends a live lease with an outcome. KEYS: the item's shard tag. ARGV: channel, lane, id,
/// token, outcome (`done`, `retry`, `release`, `hand_back`, `fail`, `fail_rest`), at (µs,
/// retry/release), attempt (JSON, `''` = none), keeps (`1` if the lane keeps finished items),
/// CT (the clock tag). A hand-back is a release due now that also puts the item's topic's
/// clock back below its rank. Returns 1, or 0 if the lease is lost.
const FINISH: &str = r#"
local T, lane, id, out = KEYS[1], ARGV[2], ARGV[3], ARGV[5]
local ik = ikey(T, lane, id)
local f = redis.call('HMGET', ik, 'k', 'ke', 'g', 't', 'r', 'od', 'n', 'a', 'c')
if f[1] ~= ARGV[4] or not f[2] or tonumber(f[2]) <= now_us() then return 0 end
local g = f[3]
local a = f[8]
if ARGV[7] ~= '' then
  if a then a = string.sub(a, 1, -2) .. ',' .. ARGV[7] .. ']' else a = '[' .. ARGV[7] .. ']' end
end
redis.call('ZREM', T .. ':ls:' .. lane, id)
redis.call('HDEL', ik, 'k', 'kw', 'ke')
if out == 'retry' or out == 'release' or out == 'hand_back' then
  local c = tonumber(f[9])
  if out ~= 'retry' and c > 0 then c = c - 1 end
  local due = ARGV[6]
  if out == 'hand_back' then due = I(now_us()) end
  local head = redis.call('ZRANGE', gkey(T, lane, g), 0, 0)[1] == id
  local w = place(T, lane, id, f[4], f[5], f[6], due, head)
  redis.call('HSET', ik, 'd', due, 'c', I(c), 'w', w)
  if a then redis.call('HSET', ik, 'a', a) end
  if out == 'hand_back' then
    local fq, cf = ARGV[9] .. ':fq:' .. lane, 'c:' .. f[4]
    local back = tonumber(f[5]) - 1
    if (tonumber(redis.call('HGET', fq, cf)) or 0) > back then redis.call('HSET', fq, cf, I(back)) end
  end
  publish(ARGV[1], {'w ' .. lane})
  return 1
end
local keep = ARGV[8] == '1' and holds_data(T, g)
local status = 'd'
if out ~= 'done' then status = 'f' end
local gk, fk = gkey(T, lane, g), gfkey(T, lane, g)
local gone = {{id, f[7], status, a}}
if out == 'fail_rest' then
  for _, later in ipairs(redis.call('ZRANGEBYSCORE', gk, '(' .. f[7], '+inf')) do
    local lf = redis.call('HMGET', ikey(T, lane, later), 'w', 't', 'od', 'n')
    unplace(T, lane, later, lf[1], lf[2], lf[3])
    gone[#gone + 1] = {later, lf[4], 'f', false}
  end
end
for _, it in ipairs(gone) do
  local k = ikey(T, lane, it[1])
  redis.call('ZREM', gk, it[1])
  if keep then
    redis.call('HDEL', k, 'd', 'k', 'kw', 'ke')
    redis.call('HSET', k, 's', it[3], 'w', 'f')
    if it[4] then redis.call('HSET', k, 'a', it[4]) end
    redis.call('ZADD', fk, it[2], it[1])
  else
    redis.call('DEL', k)
    redis.call('ZREM', T .. ':qi:' .. lane, it[1])
  end
end
refresh_head(T, lane, g)
return 1
"#;

/// Makes an item pending again and due now, keeping its seq, claims and attempts. KEYS: a
/// shard tag. ARGV: channel, lane, group kind, group id, item id, follow (`1`: answer a
/// forwarding entry of the group). Returns 1, 0 (no such item in the group), or
/// `{'fwd', owner}`.
const REQUEUE: &str = r#"
local T, lane, id = KEYS[1], ARGV[2], ARGV[5]
local g = ARGV[3] .. ':' .. ARGV[4]
if ARGV[6] == '1' then
  local fw = redis.call('HGET', T .. ':r:' .. g, 'f')
  if fw then return {'fwd', fw} end
end
local ik = ikey(T, lane, id)
local f = redis.call('HMGET', ik, 'g', 's', 'w', 't', 'r', 'od', 'n')
if f[1] ~= g then return 0 end
local gk = gkey(T, lane, g)
local old_head = redis.call('ZRANGE', gk, 0, 0)[1]
if f[2] == 'p' then
  unplace(T, lane, id, f[3], f[4], f[6])
else
  redis.call('ZREM', gfkey(T, lane, g), id)
  redis.call('ZADD', gk, f[7], id)
end
redis.call('HDEL', ik, 'k', 'kw', 'ke')
local now = I(now_us())
local head = redis.call('ZRANGE', gk, 0, 0)[1] == id
local w = place(T, lane, id, f[4], f[5], f[6], now, head)
redis.call('HSET', ik, 's', 'p', 'd', now, 'w', w)
if head and old_head and old_head ~= id then demote(T, lane, old_head) end
publish(ARGV[1], {'w ' .. lane})
return 1
"#;

/// An item as a reply: `{id, group, group partition, topic, owner, payload, seq, status,
/// claims, attempts, due, created}`.
const ITEM: &str = r#"
local IFULL = {'g', 'gp', 't', 'o', 'p', 'n', 's', 'c', 'a', 'd', 'ca'}
local function item_reply(T, lane, id)
  local f = redis.call('HMGET', ikey(T, lane, id), unpack(IFULL))
  if not f[1] then return false end
  return {id, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11]}
end
"#;

/// A group's items, pending then finished (the caller orders them by seq). KEYS: a shard tag.
/// ARGV: lane, group kind, group id, follow. Finished items are left out once the group's
/// record is past its expiry (its data is gone). Returns `{'items', item...}` or
/// `{'fwd', owner}`.
const ITEMS: &str = r#"
local T, lane = KEYS[1], ARGV[1]
local g = ARGV[2] .. ':' .. ARGV[3]
local rf = redis.call('HMGET', T .. ':r:' .. g, 'v', 'rm', 'x', 'f')
if rf[4] and ARGV[4] == '1' then return {'fwd', rf[4]} end
local hide = rf[1] and (rf[2] == '1' or (rf[3] and tonumber(rf[3]) <= now_us()))
local out = {'items'}
local keys = {gkey(T, lane, g)}
if not hide then keys[2] = gfkey(T, lane, g) end
for _, k in ipairs(keys) do
  for _, id in ipairs(redis.call('ZRANGE', k, 0, -1)) do
    local r = item_reply(T, lane, id)
    if r then out[#out + 1] = r end
  end
end
return out
"#;

/// Items of one lane by id. KEYS: a shard tag. ARGV: lane, ids... Returns an item (or false)
/// per id.
const ITEMS_BY_ID: &str = r#"
local out = {}
for i = 2, #ARGV do out[#out + 1] = item_reply(KEYS[1], ARGV[1], ARGV[i]) end
return out
"#;

/// Counts a lane's pending items over the shards named. KEYS: their tags. ARGV: lane.
/// Returns `{ready, leased, delayed}`.
const STATS: &str = r#"
local lane = ARGV[1]
local now = I(now_us())
local ready, leased, delayed = 0, 0, 0
for _, T in ipairs(KEYS) do
  for _, topic in ipairs(redis.call('ZRANGE', T .. ':ht:' .. lane, 0, -1)) do
    ready = ready + redis.call('ZCARD', T .. ':h:' .. lane .. ':' .. topic)
  end
  local dl, ls = T .. ':dl:' .. lane, T .. ':ls:' .. lane
  ready = ready + redis.call('ZCOUNT', dl, '-inf', now) + redis.call('ZCOUNT', ls, '-inf', now)
  delayed = delayed + redis.call('ZCOUNT', dl, '(' .. now, '+inf') + redis.call('SCARD', T .. ':w:' .. lane)
  leased = leased + redis.call('ZCOUNT', ls, '(' .. now, '+inf')
end
return {ready, leased, delayed}
"#;

/// A record's events from a position on. KEYS: a shard tag. ARGV: kind, id, min (a
/// `ZRANGEBYLEX` bound), limit, follow. Returns `{'events', members}` (none once the record's
/// data expired) or `{'fwd', owner}`.
const READ_EVENTS: &str = r#"
local T, kind, id = KEYS[1], ARGV[1], ARGV[2]
local f = redis.call('HMGET', rkey(T, kind, id), 'v', 'rm', 'x', 'f')
if f[4] and ARGV[5] == '1' then return {'fwd', f[4]} end
if f[1] and f[3] and tonumber(f[3]) <= now_us() and (DELETE_KINDS[kind] or f[2] == '0') then
  return {'events', {}}
end
return {'events', redis.call('ZRANGEBYLEX', ekey(T, kind, id), ARGV[3], '+', 'LIMIT', 0, ARGV[4])}
"#;

/// Events of several records of one kind in one shard, for export: for each id, its key's
/// partition and its members (from `min` for the first id, all for the others), at most
/// `limit` in all. KEYS: the tag. ARGV: kind, min, limit, ids... Returns `{partition,
/// members}` per id looked at (partition false for a record that is gone).
const EVENTS_OF: &str = r#"
local T, kind, left = KEYS[1], ARGV[1], tonumber(ARGV[3])
local out = {}
for i = 4, #ARGV do
  if left <= 0 then break end
  local min = '-'
  if i == 4 then min = ARGV[2] end
  local pt = redis.call('HGET', rkey(T, kind, ARGV[i]), 'pt')
  local got = {}
  if pt then
    got = redis.call('ZRANGEBYLEX', ekey(T, kind, ARGV[i]), min, '+', 'LIMIT', 0, left)
    left = left - #got
  end
  out[#out + 1] = {pt, got}
end
return out
"#;

/// Imports a record at its revision, replacing whatever has its key. KEYS: the owner's shard
/// tag. ARGV: kind, id, partition, owner, revision, then the eight record arguments.
const IMPORT_RECORD: &str = r#"
local T, kind, id = KEYS[1], ARGV[1], ARGV[2]
local old = read_rec(T, kind, id)
if old.f then
  redis.call('DEL', rkey(T, kind, id))
  old = false
elseif not old.v then
  old = false
end
local r = record_at(6, ARGV[4], ARGV[3])
local _, tgt = put(T, kind, id, ARGV[5], r, old)
follow(T, kind, id, 'import', tgt, false)
return 1
"#;

/// Imports an item, unleased, with its history, replacing the item with its id; it is ranked
/// as if queued now. KEYS: the owner's shard tag. ARGV: CT, lane, id, group kind, group id,
/// group partition, topic, owner, payload, seq, status, claims, attempts (`''` = none), due
/// (`''` = none), created.
const IMPORT_ITEM: &str = r#"
local T, CT, lane, id = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local old = item_head(T, lane, id)
if old then item_remove(T, lane, id, old) end
local g = ARGV[4] .. ':' .. ARGV[5]
local owner, topic, seq, status = ARGV[8], ARGV[7], ARGV[10], ARGV[11]
local rank = I(rank_of(CT, lane, owner, topic, false))
local od = next_order(now_us())
local ik = ikey(T, lane, id)
redis.call('HSET', ik, 'g', g, 'gp', ARGV[6], 't', topic, 'o', owner, 'p', ARGV[9], 'n', seq,
           's', status, 'c', ARGV[12], 'ca', ARGV[15], 'r', rank, 'od', od)
if ARGV[13] ~= '' then redis.call('HSET', ik, 'a', ARGV[13]) end
redis.call('ZADD', T .. ':qi:' .. lane, 0, id)
local w = 'f'
if status == 'p' then
  local due = ARGV[14]
  if due == '' then due = I(now_us()) end
  redis.call('HSET', ik, 'd', due)
  local gk = gkey(T, lane, g)
  local old_head = redis.call('ZRANGE', gk, 0, 0)[1]
  redis.call('ZADD', gk, seq, id)
  local head = redis.call('ZRANGE', gk, 0, 0)[1] == id
  w = place(T, lane, id, topic, rank, od, due, head)
  if head and old_head and old_head ~= id then demote(T, lane, old_head) end
else
  redis.call('ZADD', gfkey(T, lane, g), seq, id)
end
redis.call('HSET', ik, 'w', w)
return 1
"#;

/// Imports events at their positions, replacing those there. KEYS: the record's shard tag.
/// ARGV: kind, id, members (`<position> <JSON>`)...
const IMPORT_EVENTS: &str = r#"
local T, kind, id = KEYS[1], ARGV[1], ARGV[2]
local ek = ekey(T, kind, id)
for i = 3, #ARGV do
  local pos = string.sub(ARGV[i], 1, 30)
  redis.call('ZREMRANGEBYLEX', ek, '[' .. pos .. ' ', '(' .. pos .. '!')
  redis.call('ZADD', ek, 0, ARGV[i])
end
local f = read_rec(T, kind, id)
local tgt = f.v and target(kind, f.x, f.rm)
if tgt then redis.call('PEXPIREAT', ek, tgt) end
return 1
"#;

/// Imports ledger entries at their places; the account's totals become those after its last
/// entry. KEYS: the account's shard tag. ARGV: account, then (seq, id, member)...
const IMPORT_LEDGER: &str = r#"
local T, acct = KEYS[1], ARGV[1]
local lg, le = T .. ':lg:' .. acct, T .. ':le:' .. acct
for i = 2, #ARGV, 3 do
  local seq, id = ARGV[i], ARGV[i + 1]
  local old = redis.call('HGET', lg, 's:' .. seq)
  if old then redis.call('HDEL', lg, 'i:' .. old) end
  redis.call('ZREMRANGEBYSCORE', le, seq, seq)
  redis.call('ZADD', le, seq, ARGV[i + 2])
  redis.call('HSET', lg, 'i:' .. id, seq, 's:' .. seq, id)
end
local last = redis.call('ZRANGE', le, -1, -1, 'WITHSCORES')
local b, r = string.match(last[1], '^%-?%d+|(%-?%d+)|(%-?%d+)|')
redis.call('HSET', lg, 'b', b, 'r', r, 'n', last[2])
redis.call('ZADD', T .. ':la', 0, acct)
return 1
"#;

/// Every script, compiled once (the SHA1 each is invoked by).
pub(crate) struct Scripts {
    pub(crate) write: Script,
    pub(crate) forward: Script,
    pub(crate) get: Script,
    pub(crate) get_many: Script,
    pub(crate) list: Script,
    pub(crate) expire: Script,
    pub(crate) claim: Script,
    pub(crate) renew: Script,
    pub(crate) finish: Script,
    pub(crate) requeue: Script,
    pub(crate) items: Script,
    pub(crate) items_by_id: Script,
    pub(crate) stats: Script,
    pub(crate) read_events: Script,
    pub(crate) events_of: Script,
    pub(crate) import_record: Script,
    pub(crate) import_item: Script,
    pub(crate) import_events: Script,
    pub(crate) import_ledger: Script,
}

/// What the scripts know of kinds and lanes, generated from the contract so that a new kind
/// or lane needs no Lua: which kinds Redis expires whole, every lane, and which keep their
/// finished items.
fn constants() -> String {
    let quoted = |names: &mut dyn Iterator<Item = &str>| {
        names
            .map(|n| format!("['{n}'] = true"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let delete = quoted(
        &mut Kind::ALL
            .into_iter()
            .filter(|k| k.on_expiry() == OnExpiry::Delete)
            .map(Kind::as_str),
    );
    let keeps = quoted(
        &mut Lane::ALL
            .into_iter()
            .filter(|l| l.keeps_finished())
            .map(Lane::as_str),
    );
    let lanes = Lane::ALL
        .iter()
        .map(|l| format!("'{}'", l.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "local DELETE_KINDS = {{{delete}}}\nlocal LANES = {{{lanes}}}\nlocal KEEPS = {{{keeps}}}\n\
         local PROMOTE = {PROMOTE}\n"
    )
}

fn script(flags: &str, parts: &[&str]) -> Script {
    let mut code = format!("#!lua{flags}\n{}{COMMON}", constants());
    for part in parts {
        code.push_str(part);
    }
    Script::new(&code)
}

fn write_script(parts: &[&str]) -> Script {
    script("", parts)
}

fn read_script(parts: &[&str]) -> Script {
    script(" flags=no-writes", parts)
}

/// The scripts, built on first use.
pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    write: write_script(&[RECORDS, WRITE]),
    forward: write_script(&[RECORDS, FORWARD]),
    get: read_script(&[READ, GET]),
    get_many: read_script(&[READ, GET_MANY]),
    list: read_script(&[READ, LIST]),
    expire: write_script(&[RECORDS, EXPIRE]),
    claim: write_script(&[CLAIM]),
    renew: write_script(&[RENEW]),
    finish: write_script(&[FINISH]),
    requeue: write_script(&[REQUEUE]),
    items: read_script(&[ITEM, ITEMS]),
    items_by_id: read_script(&[ITEM, ITEMS_BY_ID]),
    stats: read_script(&[STATS]),
    read_events: read_script(&[READ_EVENTS]),
    events_of: read_script(&[EVENTS_OF]),
    import_record: write_script(&[RECORDS, IMPORT_RECORD]),
    import_item: write_script(&[IMPORT_ITEM]),
    import_events: write_script(&[IMPORT_EVENTS]),
    import_ledger: write_script(&[IMPORT_LEDGER]),
});
