//! Rate limits of the contract: per user when authenticated, per client
//! address otherwise; 429 `RATE_LIMITED` with `Retry-After` and the
//! `X-RateLimit-*` headers. Active unless auth is `off`.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use lambda_core::{ErrorCode, LambdaError};

use crate::auth::Caller;
use crate::{ApiError, AppState};

/// Requests per minute; 0 disables a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub execute_authenticated: u32,
    pub execute_anonymous: u32,
    pub functions_authenticated: u32,
    pub functions_anonymous: u32,
}

impl Default for RateLimits {
    /// The contract's defaults.
    fn default() -> Self {
        Self {
            execute_authenticated: 100,
            execute_anonymous: 10,
            functions_authenticated: 60,
            functions_anonymous: 60,
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the full quota is available again.
    pub reset_seconds: u64,
    /// Seconds until the next request would be allowed (when refused).
    pub retry_after_seconds: u64,
}

/// Where counts live: in the process, or in Redis so that all controllers share them.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Counts one request under `key` against `per_minute`.
    async fn check(&self, key: &str, per_minute: NonZeroU32) -> Result<Decision, String>;
}

type Keyed =
    governor::RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// GCRA limiters (governor) per quota, keyed by caller.
#[derive(Default)]
pub struct MemoryRateLimiter {
    limiters: Mutex<HashMap<u32, Arc<Keyed>>>,
    checks: AtomicU64,
}

/// How often idle keys are dropped, in checks.
const SHRINK_EVERY: u64 = 10_000;

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn check(&self, key: &str, per_minute: NonZeroU32) -> Result<Decision, String> {
        let limiter = {
            let mut map = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(per_minute.get())
                .or_insert_with(|| {
                    Arc::new(
                        governor::RateLimiter::keyed(governor::Quota::per_minute(per_minute))
                            .with_middleware::<StateInformationMiddleware>(),
                    )
                })
                .clone()
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SHRINK_EVERY == SHRINK_EVERY - 1 {
            limiter.retain_recent();
        }
        let interval = Duration::from_secs(60) / per_minute.get();
        let limit = per_minute.get();
        Ok(match limiter.check_key(&key.to_owned()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let reset = interval * (limit - remaining);
                Decision {
                    allowed: true,
                    limit,
                    remaining,
                    reset_seconds: ceil_secs(reset),
                    retry_after_seconds: 0,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let reset = interval * limit;
                Decision {
                    allowed: false,
                    limit,
                    remaining: 0,
                    reset_seconds: ceil_secs(reset),
                    retry_after_seconds: ceil_secs(wait).max(1),
                }
            }
        })
    }
}

/// Limits shared by every controller on one Redis. While Redis is down the
/// limits fall back to this process's own counts rather than to none.
pub struct RedisRateLimiter {
    redis: Arc<lambda_cache::RedisCache>,
    fallback: MemoryRateLimiter,
}

impl RedisRateLimiter {
    pub fn new(redis: Arc<lambda_cache::RedisCache>) -> Self {
        Self { redis, fallback: MemoryRateLimiter::default() }
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, key: &str, per_minute: NonZeroU32) -> Result<Decision, String> {
        match self.redis.rate_check(key, per_minute.get()).await {
            Ok(c) => Ok(Decision {
                allowed: c.allowed,
                limit: per_minute.get(),
                remaining: c.remaining,
                reset_seconds: ceil_secs(c.reset_after),
                retry_after_seconds: if c.allowed { 0 } else { ceil_secs(c.retry_after).max(1) },
            }),
            Err(e) => {
                tracing::debug!(error = %e, "redis rate limiter unavailable; counting in process");
                self.fallback.check(key, per_minute).await
            }
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Which quota a route draws from.
#[derive(Debug, Clone, Copy)]
pub enum Class {
    Execute,
    Functions,
}

fn quota(limits: &RateLimits, class: Class, authenticated: bool) -> u32 {
    match (class, authenticated) {
        (Class::Execute, true) => limits.execute_authenticated,
        (Class::Execute, false) => limits.execute_anonymous,
        (Class::Functions, true) => limits.functions_authenticated,
        (Class::Functions, false) => limits.functions_anonymous,
    }
}

fn headers(h: &mut HeaderMap, d: &Decision) {
    for (name, value) in [
        ("x-ratelimit-limit", d.limit as u64),
        ("x-ratelimit-remaining", d.remaining as u64),
        ("x-ratelimit-reset", d.reset_seconds),
    ] {
        h.insert(name, HeaderValue::from(value));
    }
}

/// The quota a route draws from, by its route pattern.
pub(crate) fn class_of(route: &str) -> Option<Class> {
    if route.starts_with("/api/v1/execute/") {
        Some(Class::Execute)
    } else if route.starts_with("/api/v1/functions") {
        Some(Class::Functions)
    } else {
        None
    }
}

pub(crate) async fn limit(state: AppState, class: Class, request: Request, next: Next) -> Response {
    let Some(caller) = request.extensions().get::<Caller>().cloned() else { return next.run(request).await };
    let Some(per_minute) =
        NonZeroU32::new(quota(&state.config().rate_limits, class, caller.is_authenticated()))
            .filter(|_| caller.is_enforced())
    else {
        return next.run(request).await;
    };
    let key = match (&caller.user_id, class) {
        (Some(user), Class::Execute) => format!("execute:user:{user}"),
        (None, Class::Execute) => format!("execute:addr:{}", caller.addr),
        (Some(user), Class::Functions) => format!("functions:user:{user}"),
        (None, Class::Functions) => format!("functions:addr:{}", caller.addr),
    };
    let decision = match state.rate_limiter().check(&key, per_minute).await {
        Ok(d) => d,
        Err(e) => {
            // A limiter outage (Redis down) must not stop the service.
            tracing::warn!(error = %e, "rate limiter unavailable; request allowed");
            return next.run(request).await;
        }
    };
    if !decision.allowed {
        let error = LambdaError::new(
            ErrorCode::RateLimited,
            format!(
                "rate limit of {} requests per minute exceeded; retry in {} s",
                decision.limit, decision.retry_after_seconds
            ),
        )
        .with("limit", decision.limit)
        .with("retry_after_seconds", decision.retry_after_seconds);
        let request_id = crate::auth::session_id_of(&request);
        let mut response = ApiError { error, request_id }.into_response();
        headers(response.headers_mut(), &decision);
        response.headers_mut().insert("retry-after", HeaderValue::from(decision.retry_after_seconds));
        return response;
    }
    let mut response = next.run(request).await;
    headers(response.headers_mut(), &decision);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_past_the_quota_per_key() -> Result<(), String> {
        let limiter = MemoryRateLimiter::default();
        let three = NonZeroU32::new(3).ok_or("3")?;
        let mut remaining = Vec::new();
        for _ in 0..3 {
            let d = limiter.check("a", three).await?;
            assert!(d.allowed);
            remaining.push(d.remaining);
        }
        assert_eq!(remaining, vec![2, 1, 0]);
        let refused = limiter.check("a", three).await?;
        assert!(!refused.allowed);
        assert!((1..=20).contains(&refused.retry_after_seconds), "{refused:?}");
        assert!(limiter.check("b", three).await?.allowed, "another key has its own quota");
        Ok(())
    }
}
