//! The Lua scripts `cluster` runs in Redis, each atomic there (token-bucket leases split
//! by demand, idempotent quota reservations, the gateway heartbeat), and how a batch of
//! calls to one script is sent in one round trip.

use redis::Value;

use crate::redis_link::RedisLink;

/// Refills the bucket by `rate * elapsed` (a missing or unreadable bucket starts full),
/// records the caller's demand, and grants the least of `want`, the tokens held and the
/// caller's fair part of the rate for its interval (see [`super::cluster::TokenLease`]). Grants are
/// fractions of a token: a small rate leased often is worth less than one per lease.
/// The key is kept until the bucket would be full again and every demand has expired.
/// KEYS[1] = bucket, ARGV = rate per second, burst, want, gateway, demand, interval in
/// seconds. Returns the tokens granted, as a decimal string.
pub(super) const TOKEN_SCRIPT: &str = r"
local key = KEYS[1]
local kind = redis.call('TYPE', key).ok
if kind ~= 'hash' and kind ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. kind .. ', not a hash')
end
local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local gateway, demand, interval = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local state = redis.call('HMGET', key, 'tokens', 'ts')
local tokens, ts = tonumber(state[1]), tonumber(state[2])
if tokens == nil or ts == nil or tokens ~= tokens or ts ~= ts then
  tokens = burst
elseif now > ts then
  tokens = tokens + rate * (now - ts) / 1000000
end
if tokens > burst then tokens = burst end
if tokens < 0 then tokens = 0 end
redis.call('HSET', key, 'd:' .. gateway, string.format('%.6f', demand),
  'e:' .. gateway, string.format('%d', now + 3 * interval * 1000000))
local fields = redis.call('HGETALL', key)
local seen = {}
for i = 1, #fields, 2 do seen[fields[i]] = fields[i + 1] end
local total, peers, lives = 0, 0, 0
for field, value in pairs(seen) do
  if string.sub(field, 1, 2) == 'e:' then
    local id = string.sub(field, 3)
    local expires, d = tonumber(value), tonumber(seen['d:' .. id])
    if expires == nil or d == nil or d ~= d or d < 0 or expires < now then
      redis.call('HDEL', key, field, 'd:' .. id)
    else
      total = total + d
      peers = peers + 1
      if expires - now > lives then lives = expires - now end
    end
  end
end
local fair
if total <= rate then
  fair = demand + (rate - total) / peers
else
  fair = rate * demand / total
end
local granted = math.min(want, tokens, fair * interval)
tokens = tokens - granted
redis.call('HSET', key, 'tokens', tokens, 'ts', string.format('%d', now))
local keep = math.max(math.ceil((burst - tokens) / rate * 1000), math.ceil(lives / 1000)) + 1000
redis.call('PEXPIRE', key, string.format('%d', keep))
return string.format('%.17g', granted)
";

/// The epoch (`epoch_lua!`, spliced into the scripts that need it): `KEYS[2]` names
/// Redis's current life, `<creator>:<created ms>:<grace until ms>`, unique even when one
/// gateway writes it twice. Redis that lost its data (restarted without persistence,
/// flushed) has none: the first call to find it missing writes a new one. A caller that
/// knew an earlier one (`known`, its last-seen epoch, not empty) sees that Redis came
/// back empty: the new epoch then carries a grace (`grace_ms`) during which no quota is
/// reserved, so that every gateway has charged its use again first. A first start knows
/// none and sets no grace; if such a gateway (one that started while Redis was out)
/// wrote the new epoch, the first caller that knew the old one starts the grace then.
/// (A promoted replica or a restored snapshot keeps the epoch: not seen as a reset.)
/// Used by the heartbeat and quota scripts.
macro_rules! epoch_lua {
    () => {
        r"
local function grace_until(epoch)
  return tonumber(string.match(epoch, ':(%d+)$')) or 0
end
local function current_epoch(key, creator, known, grace_ms, now_ms)
  local epoch = redis.call('GET', key)
  local reset = known ~= '' and epoch ~= known
  if not epoch or (reset and grace_until(epoch) == 0) then
    local until_ms = 0
    if known ~= '' then until_ms = now_ms + tonumber(grace_ms) end
    local name = creator .. ':' .. string.format('%d', now_ms)
    if epoch then name = string.match(epoch, '^(.*):%d+$') end
    epoch = name .. ':' .. string.format('%d', until_ms)
    redis.call('SET', key, epoch)
  end
  return epoch
end
local function in_grace(epoch, now_ms)
  return now_ms < grace_until(epoch)
end
"
    };
}

/// KEYS[1] = quota, KEYS[2] = the epoch, ARGV = limit, want, the holder's own use, ttl in
/// seconds, holder, the holder's last-seen epoch, the grace in ms. Returns {granted, used,
/// held, epoch}; nothing is granted (use is still charged) during an epoch's grace.
pub(super) const QUOTA_SCRIPT: &str = concat!(
    r"
local key = KEYS[1]
local kind = redis.call('TYPE', key).ok
if kind ~= 'hash' and kind ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. kind .. ', not a hash')
end
",
    epoch_lua!(),
    r"
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local epoch = current_epoch(KEYS[2], ARGV[5], ARGV[6], ARGV[7], now_ms)
local limit, want, own = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if in_grace(epoch, now_ms) then want = 0 end
local field = 'h:' .. ARGV[5]
local state = redis.call('HMGET', key, 'used', field)
local function count(raw)
  if not raw then return 0 end
  local n = tonumber(raw)
  if n == nil or n ~= n or n < 0 or n > 2^53 or n ~= math.floor(n) then return nil end
  return n
end
local used, held = count(state[1]), count(state[2])
if used == nil or held == nil then
  return redis.error_reply('ERR ' .. key .. ' does not hold counts of units')
end
local force = math.max(0, own - held)
used = used + force
local granted = math.min(want, math.max(0, limit - used))
used = used + granted
held = held + force + granted
redis.call('HSET', key, 'used', string.format('%d', used), field, string.format('%d', held))
redis.call('EXPIRE', key, ARGV[4])
return {granted, used, held, epoch}
"
);

/// KEYS[1] = the gateway set, KEYS[2] = the epoch, ARGV = gateway id, ttl in ms, the
/// caller's holder id, its last-seen epoch, the grace in ms. Returns {live count, epoch}.
pub(super) const HEARTBEAT_SCRIPT: &str = concat!(
    r"
local key = KEYS[1]
local kind = redis.call('TYPE', key).ok
if kind ~= 'zset' and kind ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. kind .. ', not a zset')
end
",
    epoch_lua!(),
    r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local epoch = current_epoch(KEYS[2], ARGV[3], ARGV[4], ARGV[5], now)
redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', now))
redis.call('ZADD', key, string.format('%d', now + tonumber(ARGV[2])), ARGV[1])
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
local keep = tonumber(last[2]) - now
if keep > 0 then redis.call('PEXPIRE', key, string.format('%d', keep)) end
return {redis.call('ZCARD', key), epoch}
"
);

/// KEYS[1] = an epoch (on a Redis Cluster, one per group of quota keys: see `cluster`),
/// ARGV = the caller's holder id, its last-seen epoch of it, the grace in ms. Returns the
/// epoch, written first if missing, as the heartbeat and quota scripts do.
pub(super) const EPOCH_SCRIPT: &str = concat!(
    epoch_lua!(),
    r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
return current_epoch(KEYS[1], ARGV[1], ARGV[2], ARGV[3], now)
"
);

/// A script and the SHA1 Redis knows it by, once learnt from `SCRIPT LOAD`.
pub(super) struct Script {
    src: &'static str,
    sha: Option<String>,
}

impl Script {
    pub(super) const fn new(src: &'static str) -> Script {
        Script { src, sha: None }
    }
}

/// One script call of a batch: the Redis key, a second key if the script takes one,
/// and the arguments after them.
pub(super) struct Call {
    pub key: String,
    pub also: Option<String>,
    pub args: Vec<String>,
}

/// Runs `script` once per call in one pipeline and returns one reply per call.
///
/// Uses EVALSHA once the script's SHA1 is known. Until then (and after a NOSCRIPT reply:
/// Redis restarted or its script cache was flushed) the pipeline starts with `SCRIPT LOAD`
/// to learn it and sends the script itself with EVAL. Only the calls answered NOSCRIPT
/// are sent again, so no lease is ever applied twice. On a Redis Cluster every call is an
/// EVAL of the script itself: scripts are loaded per node, and the crate routes a
/// pipeline's commands by key, which `SCRIPT LOAD` and `EVALSHA` do not allow.
pub(super) fn eval_batch(
    link: &mut RedisLink,
    script: &mut Script,
    calls: &[Call],
) -> Result<Vec<Value>, String> {
    let mut replies: Vec<Option<Value>> = vec![None; calls.len()];
    let mut todo: Vec<usize> = (0..calls.len()).collect();
    // The second round sends the script itself, which cannot be answered NOSCRIPT.
    for _ in 0..2 {
        if todo.is_empty() {
            break;
        }
        let sha = script.sha.clone().filter(|_| !link.is_cluster());
        let mut pipe = redis::pipe();
        if sha.is_none() && !link.is_cluster() {
            pipe.cmd("SCRIPT").arg("LOAD").arg(script.src);
        }
        for &i in &todo {
            match &sha {
                Some(sha) => pipe.cmd("EVALSHA").arg(sha),
                None => pipe.cmd("EVAL").arg(script.src),
            };
            let call = &calls[i];
            pipe.arg(1 + usize::from(call.also.is_some()))
                .arg(&call.key);
            if let Some(also) = &call.also {
                pipe.arg(also);
            }
            pipe.arg(&call.args);
        }
        let mut answers = link
            .pipeline_replies(&pipe)
            .map_err(|e| unavailable(link, "script call", &e))?
            .into_iter();
        if sha.is_none() && !link.is_cluster() {
            script.sha = answers.next().and_then(parse_sha);
        }
        if answers.len() != todo.len() {
            return Err(format!(
                "redis at {}: {} replies to {} script calls",
                link.addr(),
                answers.len(),
                todo.len()
            ));
        }
        let mut again = Vec::new();
        for (i, answer) in todo.iter().copied().zip(answers) {
            match answer {
                Value::ServerError(e) if e.code() == "NOSCRIPT" => again.push(i),
                Value::ServerError(e) => return Err(server_error(link, &calls[i].key, e.into())),
                answer => replies[i] = Some(answer),
            }
        }
        if !again.is_empty() {
            script.sha = None;
        }
        todo = again;
    }
    replies
        .into_iter()
        .zip(calls)
        .map(|(reply, call)| {
            reply.ok_or_else(|| {
                format!(
                    "redis at {}: {}: script still unknown after loading it",
                    link.addr(),
                    call.key
                )
            })
        })
        .collect()
}

fn parse_sha(reply: Value) -> Option<String> {
    let sha = match reply {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok()?,
        Value::SimpleString(s) => s,
        _ => return None,
    };
    (sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit())).then_some(sha)
}

pub(super) fn unavailable(link: &RedisLink, what: &str, e: &redis::RedisError) -> String {
    format!("redis at {}: {what} failed: {e}", link.addr())
}

/// An error reply to one call. The scripts' own errors already name the key
/// (`WRONGTYPE rg:q:x holds a hash, not a string`); Redis's may not.
pub(super) fn server_error(link: &RedisLink, redis_key: &str, e: redis::RedisError) -> String {
    let code = e.code().unwrap_or("ERR");
    let detail = e.detail().unwrap_or("");
    let mut message = format!("redis at {}: {code} {detail}", link.addr());
    if !detail.contains(redis_key) {
        message.push_str(&format!(" ({redis_key})"));
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha_replies_are_checked() {
        let sha = "a".repeat(40);
        assert_eq!(
            parse_sha(Value::BulkString(sha.clone().into_bytes())),
            Some(sha)
        );
        assert_eq!(parse_sha(Value::BulkString(b"abc".to_vec())), None);
        assert_eq!(
            parse_sha(Value::BulkString("z".repeat(40).into_bytes())),
            None
        );
        assert_eq!(parse_sha(Value::Nil), None);
    }
}
