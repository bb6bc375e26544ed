"""The Lua scripts that implement every primitive atomically on the server,
and the key layout they share."""

from __future__ import annotations

from moot.backends.base import Entry

KP = "moot:"

# -- scripts -----------------------------------------------------------------
# Every script gets ARGV[1] = key prefix, ARGV[2] = channel prefix.
_COMMON = r"""
if redis.replicate_commands then redis.replicate_commands() end
local KP, CP = ARGV[1], ARGV[2]
local pttls = {}
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
local function collect(dkey, dir, out)
  local all = redis.call('HGETALL', dkey)
  for i = 1, #all, 2 do
    if string.byte(all[i]) ~= 35 and live(dkey, dir, all[i], all[i + 1]) then
      out[#out + 1] = dir .. all[i]
      out[#out + 1] = all[i + 1]
    end
  end
  return out
end
local function list(prefix, out)
  for _, m in ipairs(redis.call('ZRANGEBYLEX', KP .. 'dirs', '[' .. prefix, '(' .. prefix .. '\255')) do
    local cut = string.find(m, ' ', 1, true)
    collect(string.sub(m, cut + 1), string.sub(m, 1, cut - 1), out)
  end
  return out
end
local function bump(dkey, dir)
  local n = tonumber(redis.call('HGET', dkey, '#n'))
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  if n == nil then
    redis.call('ZADD', KP .. 'dirs', 0, dir .. ' ' .. dkey)
    n = now
  else
    n = math.max(n + 1, now)
  end
  redis.call('HSET', dkey, '#n', string.format('%d', n))
  return n
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

# KEYS[1] = directory hash; ARGV[3] = directory, ARGV[4] = leaf, ARGV[5] = owner or '', ARGV[6] = value
_CREATE = """
local dkey, dir, leaf, owner = KEYS[1], ARGV[3], ARGV[4], ARGV[5]
local payload = writer(owner)
if not payload then return redis.error_reply('MOOTSESSION') end
if read(dkey, dir, leaf) then return false end
local raw = string.format('%d', bump(dkey, dir)) .. '::' .. owner .. ':' .. ARGV[6]
redis.call('HSET', dkey, leaf, raw)
own(owner, dir .. leaf, dkey)
announce(dir, leaf, payload)
return raw
"""

# KEYS[1] = directory hash; ARGV[3] = directory, ARGV[4] = owner or '', ARGV[5] = value,
# ARGV[6] = '1' to return the live entries under the directory too
_SEQUENTIAL = """
local dkey, dir, owner = KEYS[1], ARGV[3], ARGV[4]
local payload = writer(owner)
if not payload then return redis.error_reply('MOOTSESSION') end
local n = bump(dkey, dir)
local leaf = string.format('%020d', n)
local raw = string.format('%d:%d:', n, n) .. owner .. ':' .. ARGV[5]
redis.call('HSET', dkey, leaf, raw)
own(owner, dir .. leaf, dkey)
announce(dir, leaf, payload)
local out = {dir .. leaf, raw}
if ARGV[6] == '1' then list(dir, out) end
return out
"""

# KEYS[1] = directory hash; ARGV[3] = directory, ARGV[4] = leaf, ARGV[5] = version, ARGV[6] = value
_CAS = """
local dkey, dir, leaf = KEYS[1], ARGV[3], ARGV[4]
local raw = read(dkey, dir, leaf)
if not raw then return false end
local version, seq, owner = string.match(raw, '^(%d+):(%d*):([^:]*):')
if version ~= ARGV[5] then return false end
raw = string.format('%d', bump(dkey, dir)) .. ':' .. seq .. ':' .. owner .. ':' .. ARGV[6]
redis.call('HSET', dkey, leaf, raw)
announce(dir, leaf, writer(owner))
return raw
"""

# KEYS[1] = directory hash; ARGV[3] = directory, ARGV[4] = leaf, ARGV[5] = version or ''
_DELETE = """
local dkey, dir, leaf = KEYS[1], ARGV[3], ARGV[4]
local raw = read(dkey, dir, leaf)
if not raw then return 0 end
local version, owner = string.match(raw, '^(%d+):%d*:([^:]*):')
if ARGV[5] ~= '' and version ~= ARGV[5] then return 0 end
redis.call('HDEL', dkey, leaf)
if owner ~= '' then redis.call('HDEL', KP .. 's:' .. owner, dir .. leaf) end
announce(dir, leaf, '')
return 1
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

_SCRIPTS = {"get": _GET, "list": _LIST, "create": _CREATE, "sequential": _SEQUENTIAL, "cas": _CAS,
            "delete": _DELETE, "end_session": _END_SESSION, "recheck": _RECHECK}


def split_key(key: str) -> tuple[str, str]:
    """(directory, leaf) of a key; the directory ends in ``/`` (or is empty)."""
    cut = key.rfind("/") + 1
    return key[:cut], key[cut:]


def dir_key(directory: str) -> str:
    """Name of the Redis hash holding the keys directly under ``directory``.

    Hash-tagged by the directory's first three segments, so every directory
    of one lock, group or election lives in the same Cluster slot."""
    tag = "/".join(directory.split("/")[:3]).rstrip("/")
    return f"{KP}{{{tag}}}{directory[len(tag):]}"


def _entry(key: bytes, raw: bytes) -> Entry:
    version, seq, owner, value = raw.split(b":", 3)
    return Entry(key.decode(), value, int(version), int(seq) if seq else None, owner.decode() or None)

