//! The Redis backend: one multiplexed connection per controller (redis's
//! `ConnectionManager`, which reconnects in the background), keys under a
//! prefix so that several deployments or tests share one server, TTLs as
//! `PX` milliseconds.
//!
//! A Redis outage must never stall a request: every operation is bounded by
//! `op_timeout`, and after a failure the cache answers `Unavailable` at once
//! for `break_for` (a small circuit breaker) instead of making every request
//! wait out a timeout against a host that does not answer. `ping` always
//! tries, so `/health` sees the recovery, and so does the first operation
//! after the break.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, Cmd, FromRedisValue, RedisError};
use async_trait::async_trait;

use crate::{Cache, CacheError};

/// Settings of the Redis cache.
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]` (or `rediss://`).
    pub url: String,
    /// Prepended to every key (`REDIS_KEY_PREFIX`, default `lambda:`).
    pub key_prefix: String,
    /// Upper bound on one operation, connecting included (`REDIS_TIMEOUT_MS`).
    pub op_timeout: Duration,
    /// How long operations fail fast after a failure.
    pub break_for: Duration,
}

impl RedisConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key_prefix: "lambda:".to_owned(),
            op_timeout: Duration::from_millis(250),
            break_for: Duration::from_millis(500),
        }
    }
}

impl std::fmt::Debug for RedisConfig {
    // The URL may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("key_prefix", &self.key_prefix)
            .field("op_timeout", &self.op_timeout)
            .field("break_for", &self.break_for)
            .finish_non_exhaustive()
    }
}

pub struct RedisCache {
    conn: ConnectionManager,
    prefix: String,
    op_timeout: Duration,
    break_for: Duration,
    /// Operations fail fast until this instant.
    broken_until: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl RedisCache {
    /// Checks the URL and prepares the connection, without waiting for the
    /// server: a controller starts while Redis is down, running uncached
    /// until it is back. Call inside a tokio runtime.
    pub fn new(config: &RedisConfig) -> Result<Self, CacheError> {
        let client = Client::open(config.url.as_str())
            .map_err(|e| CacheError::Unavailable(format!("REDIS_URL is not a Redis URL: {e}")))?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.op_timeout))
            .set_response_timeout(Some(config.op_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(config.op_timeout);
        let conn = ConnectionManager::new_lazy_with_config(client, manager).map_err(unavailable)?;
        Ok(Self {
            conn,
            prefix: config.key_prefix.clone(),
            op_timeout: config.op_timeout,
            break_for: config.break_for,
            broken_until: Mutex::new(None),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn broken(&self) -> bool {
        let until = *self.broken_until.lock().unwrap_or_else(PoisonError::into_inner);
        until.is_some_and(|t| Instant::now() < t)
    }

    /// Runs one command within `op_timeout`, opening the breaker on failure.
    async fn run<T: FromRedisValue>(&self, cmd: &Cmd, check_breaker: bool) -> Result<T, CacheError> {
        if check_breaker && self.broken() {
            return Err(CacheError::Unavailable("redis failed recently; skipping it for a moment".into()));
        }
        let mut conn = self.conn.clone();
        let outcome = match tokio::time::timeout(self.op_timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => {
                Err(CacheError::Unavailable(format!("redis did not answer within {:?}", self.op_timeout)))
            }
        };
        let mut broken = self.broken_until.lock().unwrap_or_else(PoisonError::into_inner);
        match &outcome {
            Err(e) => {
                if broken.is_none() {
                    tracing::warn!(error = %e, "redis unavailable; caching is off until it answers again");
                }
                *broken = Some(Instant::now() + self.break_for);
            }
            Ok(_) => {
                if broken.take().is_some() {
                    tracing::info!("redis answers again");
                }
            }
        }
        outcome
    }
}

/// GCRA (the algorithm of the in-process limiter too), atomically in Redis on
/// Redis's own clock, so every controller draws from one quota.
/// KEYS[1] = key; ARGV[1] = emission interval ms; ARGV[2] = limit.
/// Returns {allowed, remaining, retry_after_ms, reset_ms}.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local tolerance = interval * (limit - 1)
if tat - now > tolerance then
  return {0, 0, tat - now - tolerance, tat - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
return {1, math.floor((interval * limit - (new_tat - now)) / interval), 0, new_tat - now}
";

/// One rate-limit check as Redis answered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateCheck {
    pub allowed: bool,
    pub remaining: u32,
    pub retry_after: Duration,
    /// Until the full quota is available again.
    pub reset_after: Duration,
}

impl RedisCache {
    /// Counts one request under `key` against `per_minute`, shared by every
    /// controller on this Redis.
    pub async fn rate_check(&self, key: &str, per_minute: u32) -> Result<RateCheck, CacheError> {
        let per_minute = per_minute.max(1);
        let interval = (60_000 / u64::from(per_minute)).max(1);
        let mut cmd = ::redis::cmd("EVAL");
        cmd.arg(GCRA).arg(1).arg(self.key(&format!("rate:{key}"))).arg(interval).arg(per_minute);
        let (allowed, remaining, retry, reset): (i64, i64, i64, i64) = self.run(&cmd, true).await?;
        let ms = |v: i64| Duration::from_millis(u64::try_from(v).unwrap_or(0));
        Ok(RateCheck {
            allowed: allowed == 1,
            remaining: u32::try_from(remaining).unwrap_or(0),
            retry_after: ms(retry),
            reset_after: ms(reset),
        })
    }
}

fn unavailable(e: RedisError) -> CacheError {
    CacheError::Unavailable(e.to_string())
}

/// `PX` wants whole milliseconds, at least one.
fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl Cache for RedisCache {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn get(&self, key: &str) -> Result<Option<Arc<[u8]>>, CacheError> {
        let value: Option<Vec<u8>> = self.run(::redis::cmd("GET").arg(self.key(key)), true).await?;
        Ok(value.map(Arc::from))
    }

    async fn set(&self, key: &str, value: Arc<[u8]>, ttl: Duration) -> Result<(), CacheError> {
        if ttl.is_zero() {
            return Ok(());
        }
        let mut cmd = ::redis::cmd("SET");
        cmd.arg(self.key(key)).arg(&*value).arg("PX").arg(millis(ttl));
        self.run::<()>(&cmd, true).await
    }

    async fn set_if_absent(&self, key: &str, value: Arc<[u8]>, ttl: Duration) -> Result<bool, CacheError> {
        if ttl.is_zero() {
            return Ok(false);
        }
        let mut cmd = ::redis::cmd("SET");
        cmd.arg(self.key(key)).arg(&*value).arg("NX").arg("PX").arg(millis(ttl));
        let set: Option<String> = self.run(&cmd, true).await?;
        Ok(set.is_some())
    }

    async fn ping(&self) -> Result<(), CacheError> {
        let _: String = self.run(&::redis::cmd("PING"), false).await?;
        Ok(())
    }

    fn shared(&self) -> bool {
        true
    }
}
