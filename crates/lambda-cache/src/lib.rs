//! The cache: a [`Cache`] trait with an in-process backend (moka, the
//! default) and a Redis backend (`REDIS_URL`) that a fleet of controllers
//! shares. Values are opaque bytes (serialised results, sessions).
#![forbid(unsafe_code)]

mod redis;
#[cfg(feature = "testing")]
pub mod testing;

pub use crate::redis::{RateCheck, RedisCache, RedisConfig};

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache unavailable: {0}")]
    Unavailable(String),
}

/// A shared key/value cache with per-entry TTL. Callers treat every error as
/// a miss: a cache outage never fails a request.
#[async_trait]
pub trait Cache: Send + Sync {
    /// `"memory"` or `"redis"`.
    fn backend(&self) -> &'static str;
    async fn get(&self, key: &str) -> Result<Option<Arc<[u8]>>, CacheError>;
    async fn set(&self, key: &str, value: Arc<[u8]>, ttl: Duration) -> Result<(), CacheError>;
    /// Sets `key` only if it holds nothing; true when this call set it. The
    /// first caller wins, across every controller that shares the cache.
    async fn set_if_absent(&self, key: &str, value: Arc<[u8]>, ttl: Duration) -> Result<bool, CacheError>;
    async fn ping(&self) -> Result<(), CacheError>;
    /// Whether other controllers see what this cache holds (Redis), or only
    /// this process does (memory).
    fn shared(&self) -> bool {
        false
    }
}

/// In-process cache bounded by total bytes, each entry with its own TTL.
pub struct MemoryCache {
    inner: moka::future::Cache<String, (Arc<[u8]>, Duration)>,
}

struct PerEntryTtl;

impl Expiry<String, (Arc<[u8]>, Duration)> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &(Arc<[u8]>, Duration),
        _now: Instant,
    ) -> Option<Duration> {
        Some(value.1)
    }
    fn expire_after_update(
        &self,
        _key: &String,
        value: &(Arc<[u8]>, Duration),
        _now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.1)
    }
}

impl MemoryCache {
    /// `max_bytes` bounds the sum of key and value sizes.
    pub fn new(max_bytes: u64) -> Self {
        let inner = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &String, v: &(Arc<[u8]>, Duration)| {
                u32::try_from(k.len() + v.0.len()).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .build();
        Self { inner }
    }
}

#[async_trait]
impl Cache for MemoryCache {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &str) -> Result<Option<Arc<[u8]>>, CacheError> {
        Ok(self.inner.get(key).await.map(|(v, _)| v))
    }

    async fn set(&self, key: &str, value: Arc<[u8]>, ttl: Duration) -> Result<(), CacheError> {
        if !ttl.is_zero() {
            self.inner.insert(key.to_owned(), (value, ttl)).await;
        }
        Ok(())
    }

    async fn set_if_absent(&self, key: &str, value: Arc<[u8]>, ttl: Duration) -> Result<bool, CacheError> {
        if ttl.is_zero() {
            return Ok(false);
        }
        let entry = self.inner.entry_by_ref(key).or_insert_with(async { (value, ttl) }).await;
        Ok(entry.is_fresh())
    }

    async fn ping(&self) -> Result<(), CacheError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stores_and_expires() -> Result<(), CacheError> {
        let cache = MemoryCache::new(1 << 20);
        assert_eq!(cache.get("k").await?, None);
        cache.set("k", Arc::from(&b"v"[..]), Duration::from_secs(60)).await?;
        assert_eq!(cache.get("k").await?.as_deref(), Some(&b"v"[..]));
        cache.set("short", Arc::from(&b"x"[..]), Duration::from_millis(50)).await?;
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(cache.get("short").await?, None);
        cache.set("zero", Arc::from(&b"x"[..]), Duration::ZERO).await?;
        assert_eq!(cache.get("zero").await?, None);
        Ok(())
    }

    #[tokio::test]
    async fn set_if_absent_has_one_winner() -> Result<(), CacheError> {
        let cache = MemoryCache::new(1 << 20);
        let ttl = Duration::from_secs(60);
        assert!(cache.set_if_absent("claim", Arc::from(&b"a"[..]), ttl).await?);
        assert!(!cache.set_if_absent("claim", Arc::from(&b"b"[..]), ttl).await?);
        assert_eq!(cache.get("claim").await?.as_deref(), Some(&b"a"[..]));
        assert!(!cache.shared());
        Ok(())
    }
}
