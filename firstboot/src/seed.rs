//! Talking to the seed over pinned TLS, presenting the host's identity key: enrollment (with
//! polite retries) and progress reports.

use crate::os::Os;
use crate::tls::{self, PinOutcome, PinVerifier};
use cluster::api::{self, ApiError, EnrollRequest, EnrollResponse, Plan, ProgressReport};
use cluster::pki::{CaPin, HostIdentityKey};
use cluster::spec::SeedUrl;
use rand::Rng;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(
        "the seed at {seed} did not present a certificate with the pinned key {pin} (its chain has {seen}); check launcher.pin= / `pin` against `launcher-seed pin` on the seed"
    )]
    PinMismatch {
        seed: String,
        pin: String,
        seen: String,
    },
    #[error("the seed at {seed} refused the enrollment: {code}: {message}")]
    Refused {
        seed: String,
        code: String,
        message: String,
    },
    #[error(
        "the plan from {seed} does not match its digest (tampered or truncated in transit); nothing was written"
    )]
    BadPlan { seed: String },
    #[error(
        "no enrollment after {waited_secs} s ({attempts} attempts; last: {last}); check that the seed is reachable or approve the host with `launcher-seed hosts approve`"
    )]
    GaveUp {
        waited_secs: u64,
        attempts: u32,
        last: String,
    },
    #[error(transparent)]
    ClientCert(#[from] tls::ClientCertError),
    #[error("building the https client")]
    Client(#[source] reqwest::Error),
}

/// Codes after which asking again cannot help.
const FATAL_CODES: [&str; 9] = [
    api::codes::BAD_REQUEST,
    api::codes::BODY_TOO_LARGE,
    api::codes::UNAUTHORIZED,
    api::codes::FORBIDDEN,
    api::codes::TOKEN_INVALID,
    api::codes::TOKEN_EXPIRED,
    api::codes::TOKEN_USED,
    api::codes::BAD_CSR,
    api::codes::IDENTITY_CONFLICT,
];

/// What enrollment gave: the plan, which seed gave it and the seed CA that matched the pin.
#[derive(Debug)]
pub struct Enrolled {
    pub plan: Plan,
    pub seed: SeedUrl,
    pub seed_ca_pem: String,
}

/// One answer to one attempt.
enum Attempt {
    Enrolled(Box<Plan>),
    Pending {
        host_id: String,
        retry_after: Duration,
        message: String,
    },
    Retry(String),
}

#[derive(Debug)]
pub struct SeedClient {
    http: reqwest::blocking::Client,
    outcome: Arc<Mutex<Option<PinOutcome>>>,
    pin: CaPin,
}

impl SeedClient {
    /// A client trusting only `pin` and presenting `identity` on every connection.
    pub fn new(pin: CaPin, identity: &HostIdentityKey) -> Result<SeedClient, SeedError> {
        let verifier = Arc::new(PinVerifier::new(pin));
        let outcome = verifier.outcome();
        let http = reqwest::blocking::Client::builder()
            .use_preconfigured_tls(tls::client_config(verifier, identity)?)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(SeedError::Client)?;
        Ok(SeedClient { http, outcome, pin })
    }

    fn seed_ca_pem(&self) -> Option<String> {
        match &*self.outcome.lock().unwrap() {
            Some(PinOutcome::Matched(der)) => Some(tls::cert_pem(der)),
            _ => None,
        }
    }

    fn attempt(&self, seed: &SeedUrl, req: &EnrollRequest) -> Result<Attempt, SeedError> {
        *self.outcome.lock().unwrap() = None;
        let url = format!("{seed}{}/enroll", api::PREFIX);
        let resp = match self.http.post(&url).json(req).send() {
            Ok(r) => r,
            Err(e) => {
                if let Some(PinOutcome::Mismatch(seen)) = &*self.outcome.lock().unwrap() {
                    return Err(SeedError::PinMismatch {
                        seed: seed.to_string(),
                        pin: self.pin.to_string(),
                        seen: seen.join(", "),
                    });
                }
                return Ok(Attempt::Retry(error_chain(&e)));
            }
        };
        let status = resp.status();
        let body = resp.bytes().unwrap_or_default();
        if !status.is_success() {
            return match serde_json::from_slice::<ApiError>(&body) {
                Ok(e) if FATAL_CODES.contains(&e.code.as_str()) => Err(SeedError::Refused {
                    seed: seed.to_string(),
                    code: e.code,
                    message: e.message,
                }),
                Ok(e) => Ok(Attempt::Retry(format!(
                    "{status}: {}: {}",
                    e.code, e.message
                ))),
                Err(_) => Ok(Attempt::Retry(format!("{status} from {url}"))),
            };
        }
        match serde_json::from_slice::<EnrollResponse>(&body) {
            Ok(EnrollResponse::Enrolled(plan)) if plan.verify() => Ok(Attempt::Enrolled(plan)),
            Ok(EnrollResponse::Enrolled(_)) => Err(SeedError::BadPlan {
                seed: seed.to_string(),
            }),
            Ok(EnrollResponse::Pending {
                host_id,
                retry_after_secs,
                message,
            }) => Ok(Attempt::Pending {
                host_id,
                retry_after: Duration::from_secs(u64::from(retry_after_secs)),
                message,
            }),
            Err(e) => Ok(Attempt::Retry(format!("unreadable answer from {url}: {e}"))),
        }
    }

    /// Enrolls, trying each seed in turn, with exponential backoff and jitter while the host is
    /// pending or no seed answers. `wait` bounds the whole (None: until enrolled).
    pub fn enroll(
        &self,
        os: &dyn Os,
        seeds: &[SeedUrl],
        req: &EnrollRequest,
        wait: Option<Duration>,
        mut on_pending: impl FnMut(&str, &str),
    ) -> Result<Enrolled, SeedError> {
        let start = Instant::now();
        let mut backoff = BACKOFF_START;
        let mut attempts = 0u32;
        loop {
            let seed = &seeds[attempts as usize % seeds.len()];
            attempts += 1;
            let (last, floor) = match self.attempt(seed, req)? {
                Attempt::Enrolled(plan) => {
                    let seed_ca_pem = self.seed_ca_pem().unwrap_or_default();
                    return Ok(Enrolled {
                        plan: *plan,
                        seed: seed.clone(),
                        seed_ca_pem,
                    });
                }
                Attempt::Pending {
                    host_id,
                    retry_after,
                    message,
                } => {
                    on_pending(&host_id, &message);
                    (format!("pending as {host_id}: {message}"), retry_after)
                }
                Attempt::Retry(why) => (why, Duration::ZERO),
            };
            tracing::info!(seed = %seed, attempts, "not enrolled yet: {last}");
            if wait.is_some_and(|w| start.elapsed() >= w) {
                return Err(SeedError::GaveUp {
                    waited_secs: start.elapsed().as_secs(),
                    attempts,
                    last,
                });
            }
            os.sleep(jittered(backoff).max(floor));
            backoff = (backoff * 2).min(BACKOFF_CAP);
        }
    }

    /// Sends one progress report; failures are logged, never fatal, and never wait long.
    pub fn report(&self, seed: &SeedUrl, host_id: &str, report: &ProgressReport) {
        let url = format!("{seed}{}/hosts/{host_id}/progress", api::PREFIX);
        let sent = self
            .http
            .post(&url)
            .timeout(PROGRESS_TIMEOUT)
            .json(report)
            .send();
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!("progress report to {url} answered {}", r.status()),
            Err(e) => tracing::warn!("progress report to {url} failed: {}", error_chain(&e)),
        }
    }
}

/// A wait between half and all of `d` ("equal jitter"), so hosts powered on together spread out.
pub fn jittered(d: Duration) -> Duration {
    let half = d / 2;
    half + rand::thread_rng().gen_range(Duration::ZERO..=half)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_between_half_and_all_of_the_backoff() {
        for _ in 0..100 {
            let j = jittered(Duration::from_secs(8));
            assert!(
                j >= Duration::from_secs(4) && j <= Duration::from_secs(8),
                "{j:?}"
            );
        }
    }
}
