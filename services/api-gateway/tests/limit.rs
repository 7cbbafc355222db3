//! The rate limit holds across gateway instances (buckets in the real Redis),
//! and each instance keeps limiting alone while Redis cannot answer.

use std::time::Duration;

use api_gateway::limit::RateLimiter;
use weft_testkit::{eventually, TestRedisPrefix};

async fn connected(limiter: &RateLimiter) {
    assert!(eventually(Duration::from_secs(10), || async { limiter.is_shared() }).await, "Redis not connected");
}

#[tokio::test]
async fn two_instances_share_one_bucket_per_client() {
    let prefix = TestRedisPrefix::new("ratelimit");
    let (rate, burst) = (0.5, 4.0);
    let a = RateLimiter::shared(rate, burst, "redis://127.0.0.1:6379", &prefix.0).await.unwrap();
    let b = RateLimiter::shared(rate, burst, "redis://127.0.0.1:6379", &prefix.0).await.unwrap();
    connected(&a).await;
    connected(&b).await;
    for limiter in [&a, &b, &a, &b] {
        assert_eq!(limiter.take("user:1").await, Ok(()));
    }
    let refused = b.take("user:1").await.expect_err("the fifth request, on either instance, is over the burst");
    assert!(refused > Duration::from_millis(1000) && refused <= Duration::from_millis(2000), "{refused:?}");
    assert!(a.take("user:1").await.is_err());
    assert_eq!(a.take("user:2").await, Ok(()), "clients do not share a bucket");
    // Each instance alone would still have allowed the whole burst.
    assert_eq!(a.local.take("user:1"), Ok(()));
}

#[tokio::test]
async fn without_redis_each_instance_limits_alone() {
    let dead = format!("redis://127.0.0.1:{}", weft_testkit::free_port());
    let limiter = RateLimiter::shared(0.5, 3.0, &dead, "ratelimit:").await.unwrap();
    for _ in 0..3 {
        assert_eq!(limiter.take("ip:10.0.0.1").await, Ok(()));
    }
    assert!(limiter.take("ip:10.0.0.1").await.is_err(), "the burst holds per instance");
    assert!(!limiter.is_shared());
}
