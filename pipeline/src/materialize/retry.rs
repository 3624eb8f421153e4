//! When and how often a failed call to Postgres or Redis is tried again.

use std::time::Duration;

use ideaflow_sinks::postgres::PostgresError;
use ideaflow_sinks::redis_sink::RedisError;

/// Waits between tries: 0.25 s, doubling, at most 10 s.
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);
    const LONGEST: Duration = Duration::from_secs(10);

    pub fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    /// Logs `what` failed with `error`, then waits before the next try.
    pub fn wait_after(&mut self, what: &str, error: &anyhow::Error) {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::LONGEST);
        tracing::warn!(
            error = format!("{error:#}"),
            retry_in_ms = wait.as_millis() as u64,
            "{what}; trying again"
        );
        std::thread::sleep(wait);
    }
}

/// Whether another try may succeed (the sink's own judgement, under any
/// context added since): the server or the connection went away, or the
/// transaction was aborted to break a deadlock. Not a refused statement or
/// an error the server answered: those would come back.
pub fn is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<PostgresError>()
            .is_some_and(PostgresError::is_transient)
            || cause
                .downcast_ref::<RedisError>()
                .is_some_and(RedisError::is_transient)
    })
}
