//! Retrying an API call as kubeadm's waits do: again after each interval until a time limit,
//! with a progress line every 10 s so that a slow cluster is not mistaken for a hung command.

use std::time::{Duration, Instant};

const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// One attempt's outcome.
#[derive(Debug)]
pub enum Attempt<T> {
    Done(T),
    /// Worth trying again; why it did not succeed.
    Retry(String),
    /// Trying again cannot help.
    Fail(String),
}

/// Why the attempts stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// The limit passed; the last attempt's reason.
    Timeout {
        waited_secs: u64,
        last: String,
    },
    Failed(String),
}

/// Runs `attempt` until it is done or fails, or `limit` has passed; progress lines start with
/// `prefix` (`[upload-config]`).
pub fn until<T>(
    prefix: &str,
    limit: Duration,
    interval: Duration,
    mut attempt: impl FnMut() -> Attempt<T>,
) -> Result<T, Stopped> {
    let start = Instant::now();
    let mut reported = start;
    loop {
        let last = match attempt() {
            Attempt::Done(value) => return Ok(value),
            Attempt::Fail(reason) => return Err(Stopped::Failed(reason)),
            Attempt::Retry(reason) => reason,
        };
        if start.elapsed() >= limit {
            let waited_secs = start.elapsed().as_secs();
            return Err(Stopped::Timeout { waited_secs, last });
        }
        if reported.elapsed() >= PROGRESS_EVERY {
            println!(
                "{prefix} still waiting after {}s: {last}",
                start.elapsed().as_secs()
            );
            reported = Instant::now();
        }
        std::thread::sleep(interval.min(limit.saturating_sub(start.elapsed())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_until_done_failed_or_out_of_time() {
        let mut n = 0;
        let done = until("[t]", Duration::from_secs(5), Duration::ZERO, || {
            n += 1;
            if n < 3 {
                Attempt::Retry(format!("try {n}"))
            } else {
                Attempt::Done(n)
            }
        });
        assert_eq!(done, Ok(3));
        let failed: Result<(), _> = until("[t]", Duration::from_secs(5), Duration::ZERO, || {
            Attempt::Fail("403".to_owned())
        });
        assert_eq!(failed, Err(Stopped::Failed("403".to_owned())));
        let late: Result<(), _> = until("[t]", Duration::ZERO, Duration::ZERO, || {
            Attempt::Retry("down".to_owned())
        });
        assert_eq!(
            late,
            Err(Stopped::Timeout {
                waited_secs: 0,
                last: "down".to_owned()
            })
        );
    }
}
