//! The Redis cache against the machine's Redis (a key prefix per test), and
//! against a private redis-server that the test takes down and brings back.

use std::sync::Arc;
use std::time::Duration;

use lambda_cache::testing::{PrivateRedis, redis_url, unique_prefix};
use lambda_cache::{Cache, CacheError, RedisCache, RedisConfig};

fn config(url: String) -> RedisConfig {
    RedisConfig { key_prefix: unique_prefix(), ..RedisConfig::new(url) }
}

fn bytes(s: &str) -> Arc<[u8]> {
    Arc::from(s.as_bytes())
}

/// Polls until `check` holds; the generous limit only guards against hangs.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let give_up = std::time::Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(std::time::Instant::now() < give_up, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn stores_reads_and_expires_under_its_prefix() -> Result<(), CacheError> {
    let config = config(redis_url());
    let cache = RedisCache::new(&config)?;
    cache.ping().await.expect("the machine's Redis is required (LAMBDA_TEST_REDIS_URL)");
    assert_eq!((cache.backend(), cache.shared()), ("redis", true));
    assert_eq!(cache.get("k").await?, None);
    cache.set("k", bytes("v"), Duration::from_secs(60)).await?;
    assert_eq!(cache.get("k").await?.as_deref(), Some(&b"v"[..]));

    // The key lives under the prefix, with the TTL given.
    let client = redis::Client::open(redis_url()).expect("url");
    let mut raw = client.get_multiplexed_async_connection().await.expect("raw connection");
    let full = format!("{}k", config.key_prefix);
    let pttl: i64 = redis::cmd("PTTL").arg(&full).query_async(&mut raw).await.expect("pttl");
    assert!(pttl > 50_000 && pttl <= 60_000, "{pttl}");

    cache.set("short", bytes("x"), Duration::from_millis(50)).await?;
    eventually("the short entry to expire", async || cache.get("short").await.ok() == Some(None)).await;
    cache.set("zero", bytes("x"), Duration::ZERO).await?;
    assert_eq!(cache.get("zero").await?, None);
    let _: () = redis::cmd("DEL").arg(&full).query_async(&mut raw).await.expect("cleanup");
    Ok(())
}

#[tokio::test]
async fn two_controllers_share_entries_and_one_wins_a_claim() -> Result<(), CacheError> {
    let config = config(redis_url());
    let (a, b) = (RedisCache::new(&config)?, RedisCache::new(&config)?);
    a.set("result", bytes("42"), Duration::from_secs(30)).await?;
    assert_eq!(b.get("result").await?.as_deref(), Some(&b"42"[..]));
    let ttl = Duration::from_secs(30);
    let (x, y) =
        tokio::join!(a.set_if_absent("claim", bytes("a"), ttl), b.set_if_absent("claim", bytes("b"), ttl));
    assert!(x? ^ y?, "exactly one claim wins");
    // Another prefix is another namespace.
    let other = RedisCache::new(&RedisConfig { key_prefix: unique_prefix(), ..config.clone() })?;
    assert_eq!(other.get("result").await?, None);
    Ok(())
}

#[tokio::test]
async fn an_outage_fails_fast_and_the_cache_recovers_by_itself() -> Result<(), CacheError> {
    let mut server = PrivateRedis::start();
    let cache = RedisCache::new(&config(server.url()))?;
    cache.set("k", bytes("v"), Duration::from_secs(60)).await?;

    server.stop();
    assert!(cache.ping().await.is_err());
    assert!(matches!(cache.get("k").await, Err(CacheError::Unavailable(_))));
    assert!(matches!(
        cache.set("k", bytes("w"), Duration::from_secs(60)).await,
        Err(CacheError::Unavailable(_))
    ));

    server.resume();
    eventually("redis to answer again", async || cache.ping().await.is_ok()).await;
    // The private server keeps nothing on disk: the restarted one is empty.
    eventually("writes to work again", async || {
        cache.set("k", bytes("w"), Duration::from_secs(60)).await.is_ok()
    })
    .await;
    assert_eq!(cache.get("k").await?.as_deref(), Some(&b"w"[..]));
    Ok(())
}

#[tokio::test]
async fn a_controller_starts_while_redis_is_down() -> Result<(), CacheError> {
    let mut server = PrivateRedis::start();
    server.stop();
    let cache = RedisCache::new(&config(server.url()))?;
    assert!(cache.get("k").await.is_err());
    server.resume();
    eventually("redis to answer", async || cache.ping().await.is_ok()).await;
    cache.set("k", bytes("v"), Duration::from_secs(60)).await?;
    assert_eq!(cache.get("k").await?.as_deref(), Some(&b"v"[..]));
    Ok(())
}

#[tokio::test]
async fn a_bad_url_is_refused_at_once() {
    assert!(RedisCache::new(&RedisConfig::new("http://nope")).is_err());
}

#[tokio::test]
async fn rate_checks_share_one_quota_across_controllers() -> Result<(), CacheError> {
    let config = config(redis_url());
    let (a, b) = (RedisCache::new(&config)?, RedisCache::new(&config)?);
    let mut remaining = Vec::new();
    for cache in [&a, &b, &a, &b] {
        let check = cache.rate_check("user:alice", 4).await?;
        assert!(check.allowed, "{check:?}");
        remaining.push(check.remaining);
    }
    assert_eq!(remaining, vec![3, 2, 1, 0]);
    let refused = b.rate_check("user:alice", 4).await?;
    assert!(!refused.allowed);
    assert!(
        refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_secs(15),
        "{refused:?}"
    );
    assert!(refused.reset_after <= Duration::from_secs(60), "{refused:?}");
    assert!(a.rate_check("user:bob", 4).await?.allowed, "another key has its own quota");
    Ok(())
}
