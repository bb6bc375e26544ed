"""The Lua scripts that implement every primitive atomically on the server,
and the key layout they share."""

from __future__ import annotations

import re

from moot.backends.base import Entry

#: The default key prefix (the ``prefix`` option): every key and pub/sub
#: channel the backend uses starts with it, so an ACL user limited to
#: ``~<prefix>*`` and ``&<prefix>*`` can use moot there and nowhere else.
KP = "moot:"

#: What a ``prefix`` may be made of: no glob characters (the ACL patterns
#: ``~<prefix>*`` and ``&<prefix>*`` then match exactly the backend's names),
#: no braces (the Cluster hash tag comes after it), no spaces.
PREFIX_CHARS = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")

# -- scripts -----------------------------------------------------------------
# Every script gets ARGV[1] = key prefix, ARGV[2] = channel prefix. Besides
# KEYS[1] a script touches only keys it names as KP .. something (the session
# hashes, KP .. 'dirs') or reads from KP .. 'dirs' (directory hashes, named
# by dir_key() with the same prefix), and publishes only on CP .. something:
# all inside the prefix, so ACL key and channel patterns on it hold in scripts
# too (Redis 7 checks every command a script runs against them).
# scan() reads a directory hash's live entries. Checking that each owner's
# session exists (PTTL) is most of the cost of a large directory, so once it
# has checked NOTE_FROM live entries or more it leaves a note in field
# '#a' = '<#n>:<ms>': at counter #n, every owner's session exists until ms
# (the server clock; the soonest expiry less 10 ms). While #n is the same (no
# entry created or rewritten since: a removal only drops entries) and the
# clock is before ms, every entry is live without a look at its owner: a
# session key ends only by expiring (its TTL only grows while it lives) or by
# end_session, which removes its entries. Older clients ignore the note and
# bump #n as they write, which voids it. Only on Redis 7 or newer (NOTES),
# which sends replicas absolute expiry times: an older one sends PEXPIRE as
# is, so a replica's clock decides when its copy of a session expires.
_COMMON = r"""
-- before Redis 7 (no REDIS_VERSION_NUM): replicate effects, not the script (it reads TIME); a no-op
-- that still costs 2 us a call on 7, which only replicates effects. One TIME per script (time()).
if redis.REDIS_VERSION_NUM == nil and redis.replicate_commands then redis.replicate_commands() end
local KP, CP = ARGV[1], ARGV[2]
local NOTE_FROM = 32
local NOTES = redis.REDIS_VERSION_NUM ~= nil
local pttls = {}
local time_now
local function pttl_of(owner)
  local t = pttls[owner]
  if t == nil then
    t = redis.call('PTTL', KP .. 's:' .. owner)
    pttls[owner] = t
  end
  return t
end
local function owner_of(raw)
  return string.match(raw, '^%d+:%d*:([^:]*):')
end
local function announce(dir, leaf, payload)
  redis.call('PUBLISH', CP .. dir .. leaf, payload)
  redis.call('PUBLISH', CP .. dir, payload)
end
local function live(dkey, dir, leaf, raw)
  local owner = owner_of(raw)
  if owner == '' or pttl_of(owner) ~= -2 then return true end
  redis.call('HDEL', dkey, leaf)
  announce(dir, leaf, '')
  return false
end
local function read(dkey, dir, leaf)
  local raw = redis.call('HGET', dkey, leaf)
  if raw and live(dkey, dir, leaf, raw) then return raw end
  return false
end
local function time()
  if time_now == nil then time_now = redis.call('TIME') end
  return time_now
end
local function clock()
  local t = time()
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function scan(dkey, dir, all, keep)
  local n, note = nil, nil
  for i = 1, #all, 2 do
    if string.byte(all[i]) == 35 then
      if all[i] == '#n' then n = all[i + 1] elseif all[i] == '#a' then note = all[i + 1] end
    end
  end
  local counter, valid = string.match(note or '', '^(%d+):(%d+)$')
  if NOTES and n ~= nil and counter == n and clock() < tonumber(valid) then
    for i = 1, #all, 2 do
      if string.byte(all[i]) ~= 35 then keep(all[i], all[i + 1]) end
    end
    return
  end
  local now, soonest, count = clock(), nil, 0
  for i = 1, #all, 2 do
    if string.byte(all[i]) ~= 35 and live(dkey, dir, all[i], all[i + 1]) then
      keep(all[i], all[i + 1])
      count = count + 1
      local owner = owner_of(all[i + 1])
      if owner ~= '' then
        local left = pttl_of(owner)
        if left < 0 then soonest = -1 elseif soonest == nil or (soonest >= 0 and left < soonest) then soonest = left end
      end
    end
  end
  if NOTES and n ~= nil and count >= NOTE_FROM and soonest ~= nil and soonest > 10 then
    redis.call('HSET', dkey, '#a', n .. ':' .. string.format('%d', now + soonest - 10))
  end
end
local function collect(dkey, dir, out)
  scan(dkey, dir, redis.call('HGETALL', dkey), function(leaf, raw)
    out[#out + 1] = dir .. leaf
    out[#out + 1] = raw
  end)
  return out
end
local function list(prefix, out)
  for _, m in ipairs(redis.call('ZRANGEBYLEX', KP .. 'dirs', '[' .. prefix, '(' .. prefix .. '\255')) do
    local cut = string.find(m, ' ', 1, true)
    collect(string.sub(m, cut + 1), string.sub(m, 1, cut - 1), out)
  end
  return out
end
local function advance(dkey, dir, old)
  -- the directory's next number after its counter `old` (false: a new directory, entered in the
  -- index); the caller stores it as '#n' in the same HSET as the entry it writes
  local t = time()
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  if not old then
    redis.call('ZADD', KP .. 'dirs', 0, dir .. ' ' .. dkey)
    return now
  end
  return math.max(tonumber(old) + 1, now)
end
local function bump(dkey, dir)
  return advance(dkey, dir, redis.call('HGET', dkey, '#n'))
end
local function writer(owner)
  if owner == '' then return '' end
  local t = pttl_of(owner)
  if t == -2 then return false end
  return owner .. ':' .. t
end
local function own(owner, key, dkey)
  if owner ~= '' then redis.call('HSET', KP .. 's:' .. owner, key, dkey) end
end
"""

# KEYS[1] = directory hash; ARGV[3] = directory, ARGV[4] = leaf
_GET = "return read(KEYS[1], ARGV[3], ARGV[4])"

# ARGV[3] = prefix
_LIST = "return list(ARGV[3], {})"

# The leaves of the live entries directly under a directory, without their
# values (dead ones are removed, as list() removes them), in one string:
# each leaf after a '/', which no leaf contains ('' if there are none).
# KEYS[1] = directory hash; ARGV[3] = directory
_NAMES = """
local out = {''}
scan(KEYS[1], ARGV[3], redis.call('HGETALL', KEYS[1]), function(leaf) out[#out + 1] = leaf end)
if #out == 1 then return '' end
return table.concat(out, '/')
"""

# KEYS[1] = directory hash; ARGV[3] = directory, ARGV[4] = leaf, ARGV[5] = owner or '', ARGV[6] = value
_CREATE = """
local dkey, dir, leaf, owner = KEYS[1], ARGV[3], ARGV[4], ARGV[5]
local payload = writer(owner)
if not payload then return redis.error_reply('MOOTSESSION') end
if read(dkey, dir, leaf) then return false end
local counter = string.format('%d', bump(dkey, dir))
local raw = counter .. '::' .. owner .. ':' .. ARGV[6]
redis.call('HSET', dkey, '#n', counter, leaf, raw)
own(owner, dir .. leaf, dkey)
announce(dir, leaf, payload)
return raw
"""

# KEYS[1] = directory hash; ARGV[3] = directory, ARGV[4] = owner or '', ARGV[5] = value,
# ARGV[6] = '1' to return the live entries directly under the directory too (the new one
# included). Then the directory is read once, before the write: its counter and its entries
# come from one HGETALL, and the new entry and counter are put into that reply before it is
# scanned, as if it had been read after the write.
_SEQUENTIAL = """
local dkey, dir, owner = KEYS[1], ARGV[3], ARGV[4]
local payload = writer(owner)
if not payload then return redis.error_reply('MOOTSESSION') end
local all, at = nil, nil
if ARGV[6] == '1' then
  all = redis.call('HGETALL', dkey)
  for i = 1, #all, 2 do
    if all[i] == '#n' then at = i + 1 break end
  end
end
local n
if all then n = advance(dkey, dir, at and all[at]) else n = bump(dkey, dir) end
local counter, leaf = string.format('%d', n), string.format('%020d', n)
local raw = counter .. ':' .. counter .. ':' .. owner .. ':' .. ARGV[5]
redis.call('HSET', dkey, '#n', counter, leaf, raw)
own(owner, dir .. leaf, dkey)
announce(dir, leaf, payload)
local out = {dir .. leaf, raw}
if all then
  if at then all[at] = counter else all[#all + 1] = '#n'; all[#all + 1] = counter end
  all[#all + 1] = leaf
  all[#all + 1] = raw
  scan(dkey, dir, all, function(l, v)
    out[#out + 1] = dir .. l
    out[#out + 1] = v
  end)
end
return out
"""

# KEYS[1] = directory hash; ARGV[3] = directory, ARGV[4] = leaf, ARGV[5] = version, ARGV[6] = value
_CAS = """
local dkey, dir, leaf = KEYS[1], ARGV[3], ARGV[4]
local raw = read(dkey, dir, leaf)
if not raw then return false end
local version, seq, owner = string.match(raw, '^(%d+):(%d*):([^:]*):')
if version ~= ARGV[5] then return false end
local counter = string.format('%d', bump(dkey, dir))
raw = counter .. ':' .. seq .. ':' .. owner .. ':' .. ARGV[6]
redis.call('HSET', dkey, '#n', counter, leaf, raw)
announce(dir, leaf, writer(owner))
return raw
"""

# KEYS[1] = directory hash; ARGV[3] = directory, ARGV[4] = leaf, ARGV[5] = version or ''.
# An owner's session hash indexes the owner's entries for as long as it exists, so removing the key
# from it also tells whether the owner lives; no PTTL. An entry whose owner is gone is absent, as
# for live(): it is removed and announced, and the answer is 0.
_DELETE = """
local dkey, dir, leaf = KEYS[1], ARGV[3], ARGV[4]
local raw = redis.call('HGET', dkey, leaf)
if not raw then return 0 end
local version, owner = string.match(raw, '^(%d+):%d*:([^:]*):')
local session = KP .. 's:' .. owner
if ARGV[5] ~= '' and version ~= ARGV[5] then
  if owner ~= '' and redis.call('PTTL', session) == -2 then
    redis.call('HDEL', dkey, leaf)
    announce(dir, leaf, '')
  end
  return 0
end
local alive = owner == '' or redis.call('HDEL', session, dir .. leaf) == 1
redis.call('HDEL', dkey, leaf)
announce(dir, leaf, '')
if alive then return 1 end
return 0
"""

# KEYS[1] = session hash; ARGV[3] = session id
_END_SESSION = """
local index = redis.call('HGETALL', KEYS[1])
if #index == 0 then return 0 end
redis.call('DEL', KEYS[1])
for i = 1, #index, 2 do
  local key, dkey = index[i], index[i + 1]
  if string.byte(key) ~= 35 then
    local dir, leaf = string.match(key, '^(.*/)(.*)$')
    if not dir then dir, leaf = '', key end
    local raw = redis.call('HGET', dkey, leaf)
    if raw and owner_of(raw) == ARGV[3] then
      redis.call('HDEL', dkey, leaf)
      announce(dir, leaf, '')
    end
  end
end
redis.call('PUBLISH', CP .. 's:' .. ARGV[3], '')
return 1
"""

# Re-check of a watched key (ARGV[4] = leaf) or directory (ARGV[4] = ''): removes
# dead entries and returns the PTTL (ms) of the first session other than
# ARGV[5] to expire among the owners of the live ones, -1 if none.
# KEYS[1] = directory hash; ARGV[3] = directory
_RECHECK = """
local dkey, dir, leaf = KEYS[1], ARGV[3], ARGV[4]
local fields
if leaf == '' then
  fields = redis.call('HGETALL', dkey)
else
  local raw = redis.call('HGET', dkey, leaf)
  fields = raw and {leaf, raw} or {}
end
local soonest = -1
for i = 1, #fields, 2 do
  if string.byte(fields[i]) ~= 35 and live(dkey, dir, fields[i], fields[i + 1]) then
    local owner = owner_of(fields[i + 1])
    if owner ~= '' and owner ~= ARGV[5] then
      local t = pttl_of(owner)
      if t >= 0 and (soonest < 0 or t < soonest) then soonest = t end
    end
  end
end
return soonest
"""

_BODIES = {"get": _GET, "list": _LIST, "names": _NAMES, "create": _CREATE, "sequential": _SEQUENTIAL, "cas": _CAS,
           "delete": _DELETE, "end_session": _END_SESSION, "recheck": _RECHECK}


_HEADER, *_PARTS = re.split(r"(?m)^local function (\w+)\(", _COMMON)
#: (name, definition) of each helper of :data:`_COMMON`, in their order there.
_HELPERS = [(name, f"local function {name}({rest}") for name, rest in zip(_PARTS[::2], _PARTS[1::2], strict=True)]


def _compose(body: str) -> str:
    """``body`` after the header of :data:`_COMMON` and only the helpers it
    calls, directly or through another helper. Redis runs a script's whole
    text on every call, so each helper defined and not used costs time: all
    of them, about 2.5 us a call on Redis 7."""
    needed, text = set(), body
    for name, code in reversed(_HELPERS):  # a helper calls only helpers defined before it
        if re.search(rf"\b{name}\(", text):
            needed.add(name)
            text += code
    return _HEADER + "".join(code for name, code in _HELPERS if name in needed) + body


#: Every script's full text, by name.
SCRIPTS = {name: _compose(body) for name, body in _BODIES.items()}


def split_key(key: str) -> tuple[str, str]:
    """(directory, leaf) of a key; the directory ends in ``/`` (or is empty)."""
    cut = key.rfind("/") + 1
    return key[:cut], key[cut:]


def dir_key(directory: str, prefix: str = KP) -> str:
    """Name of the Redis hash holding the keys directly under ``directory``
    (for the key prefix ``prefix``).

    Hash-tagged by the directory's first three segments, so every directory
    of one lock, group or election lives in the same Cluster slot."""
    tag = "/".join(directory.split("/")[:3]).rstrip("/")
    return f"{prefix}{{{tag}}}{directory[len(tag):]}"


def _entry(key: bytes, raw: bytes) -> Entry:
    version, seq, owner, value = raw.split(b":", 3)
    return Entry(key.decode(), value, int(version), int(seq) if seq else None, owner.decode() or None)

