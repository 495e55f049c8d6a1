//! Talking to the seed over pinned TLS, presenting the host's identity key: enrollment (with
//! polite retries) and progress reports.

use crate::os::Os;
use crate::tls::{self, PinOutcome, PinVerifier};
use cluster::api::{
    self, ApiError, CommandOutcome, EnrollRequest, EnrollResponse, HostCommand, Plan,
    ProgressReport, codes,
};
use cluster::pki::{CaPin, HostIdentityKey};
use cluster::spec::SeedUrl;
use rand::Rng;
use reqwest::StatusCode;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// How often a host whose identity is bound to another key asks again, so that it comes in by
/// itself once an operator has reset it.
const IDENTITY_TAKEN_RETRY: Duration = Duration::from_secs(30);
/// The longest `Retry-After` obeyed.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);

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
    #[error(
        "the plan from {seed} came without a TLS handshake that matched the pin, so the seed CA to trust is unknown: this is a bug, please report it with this log; nothing was written"
    )]
    NoSeedCa { seed: String },
    #[error(
        "the seed at {seed} says the request came without this host's identity key ({message}), yet firstboot presents it on every connection: this is a bug, please report it with this log"
    )]
    IdentityRequired { seed: String, message: String },
    #[error(transparent)]
    ClientCert(#[from] tls::ClientCertError),
    #[error("building the https client")]
    Client(#[source] reqwest::Error),
}

/// How often a host whose image the seed refused for its Kubernetes release asks again.
const VERSION_MISMATCH_RETRY: Duration = Duration::from_secs(60);

/// Codes after which asking again cannot help.
const FATAL_CODES: [&str; 10] = [
    codes::BAD_REQUEST,
    codes::BODY_TOO_LARGE,
    codes::UNAUTHORIZED,
    codes::FORBIDDEN,
    codes::TOKEN_INVALID,
    codes::TOKEN_EXPIRED,
    codes::TOKEN_USED,
    codes::BAD_CSR,
    codes::IDENTITY_CONFLICT,
    // An operator removed this host: its key is never let in again.
    codes::HOST_REMOVED,
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
    NotYet(NotYet),
}

/// Why enrollment has to ask again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotYet {
    /// The seed holds the host until an operator approves it.
    Pending {
        host_id: String,
        retry_after: Duration,
        message: String,
    },
    /// The seed lets no host install yet (its registry lacks images the cluster pulls).
    Waiting {
        retry_after: Duration,
        message: String,
    },
    /// The identity the host claims (MAC, UUID, serial) is bound to another key.
    IdentityTaken { message: String },
    /// The seed asks this address to come back later (`Retry-After`, when it said).
    RateLimited { retry_after: Option<Duration> },
    /// No answer, or one that asking again may change.
    Unanswered(String),
}

impl NotYet {
    /// How long to wait before asking again, given the backoff's (jittered) wait.
    pub fn wait(&self, backoff: Duration) -> Duration {
        match self {
            NotYet::Pending { retry_after, .. } | NotYet::Waiting { retry_after, .. } => {
                backoff.max(*retry_after)
            }
            NotYet::IdentityTaken { .. } => IDENTITY_TAKEN_RETRY,
            NotYet::RateLimited { retry_after } => {
                backoff.max(retry_after.unwrap_or_default().min(RETRY_AFTER_CAP))
            }
            NotYet::Unanswered(_) => backoff,
        }
    }
}

impl fmt::Display for NotYet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotYet::Pending {
                host_id, message, ..
            } => write!(f, "pending as {host_id}: {message}"),
            NotYet::Waiting { message, .. } => write!(f, "waiting: {message}"),
            NotYet::IdentityTaken { message } => write!(
                f,
                "the seed has this host's identity bound to another key ({message}); retrying every {} s",
                IDENTITY_TAKEN_RETRY.as_secs()
            ),
            NotYet::RateLimited { retry_after } => match retry_after {
                Some(d) => write!(
                    f,
                    "the seed asks to slow down: retrying in {} s",
                    d.min(&RETRY_AFTER_CAP).as_secs()
                ),
                None => write!(f, "the seed asks to slow down"),
            },
            NotYet::Unanswered(why) => f.write_str(why),
        }
    }
}

/// What a refusal (a non-2xx answer) means: wait and ask again, or stop.
fn refusal(
    seed: &SeedUrl,
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<NotYet, SeedError> {
    let Ok(e) = serde_json::from_slice::<ApiError>(body) else {
        return Ok(if status == StatusCode::TOO_MANY_REQUESTS {
            NotYet::RateLimited { retry_after }
        } else {
            NotYet::Unanswered(format!("{status} from {seed}"))
        });
    };
    match e.code.as_str() {
        codes::IDENTITY_TAKEN => Ok(NotYet::IdentityTaken { message: e.message }),
        codes::RATE_LIMITED => Ok(NotYet::RateLimited { retry_after }),
        // The seed installs nothing on this image; another image, or another cluster
        // version, may change that: keep asking, saying why.
        codes::VERSION_MISMATCH => Ok(NotYet::Waiting {
            retry_after: VERSION_MISMATCH_RETRY,
            message: e.message,
        }),
        codes::IDENTITY_REQUIRED => Err(SeedError::IdentityRequired {
            seed: seed.to_string(),
            message: e.message,
        }),
        code if FATAL_CODES.contains(&code) => Err(SeedError::Refused {
            seed: seed.to_string(),
            code: e.code,
            message: e.message,
        }),
        _ => Ok(NotYet::Unanswered(format!(
            "{status}: {}: {}",
            e.code, e.message
        ))),
    }
}

/// `Retry-After` in seconds (the seed never sends the HTTP-date form).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse().ok().map(Duration::from_secs)
}

#[derive(Debug)]
pub struct SeedClient {
    http: reqwest::blocking::Client,
    /// What the handshake of the current attempt learnt; none when it reused a connection.
    outcome: Arc<Mutex<Option<PinOutcome>>>,
    /// The seed CA (DER) of the last handshake that matched the pin: kept across attempts,
    /// since an attempt on a kept-alive connection makes no handshake.
    matched_ca: Mutex<Option<Vec<u8>>>,
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
        Ok(SeedClient {
            http,
            outcome,
            matched_ca: Mutex::new(None),
            pin,
        })
    }

    fn seed_ca_pem(&self) -> Option<String> {
        self.matched_ca
            .lock()
            .unwrap()
            .as_deref()
            .map(tls::cert_pem)
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
                return Ok(Attempt::NotYet(NotYet::Unanswered(error_chain(&e))));
            }
        };
        if let Some(PinOutcome::Matched(der)) = &*self.outcome.lock().unwrap() {
            *self.matched_ca.lock().unwrap() = Some(der.clone());
        }
        let status = resp.status();
        let wait = retry_after(resp.headers());
        let body = resp.bytes().unwrap_or_default();
        if !status.is_success() {
            return refusal(seed, status, wait, &body).map(Attempt::NotYet);
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
            }) => Ok(Attempt::NotYet(NotYet::Pending {
                host_id,
                retry_after: Duration::from_secs(u64::from(retry_after_secs)),
                message,
            })),
            Ok(EnrollResponse::Waiting {
                retry_after_secs,
                message,
                ..
            }) => Ok(Attempt::NotYet(NotYet::Waiting {
                retry_after: Duration::from_secs(u64::from(retry_after_secs)),
                message,
            })),
            Err(e) => Ok(Attempt::NotYet(NotYet::Unanswered(format!(
                "unreadable answer from {url}: {e}"
            )))),
        }
    }

    /// Enrolls, trying each seed in turn, with exponential backoff and jitter while the host is
    /// pending or no seed answers, every 30 s while its identity is bound to another key, and
    /// no sooner than a `Retry-After` (at most a minute) says. `wait` bounds the whole (None:
    /// until enrolled). `on_change` hears why the host is not enrolled yet, once per change.
    pub fn enroll(
        &self,
        os: &dyn Os,
        seeds: &[SeedUrl],
        req: &EnrollRequest,
        wait: Option<Duration>,
        mut on_change: impl FnMut(&NotYet),
    ) -> Result<Enrolled, SeedError> {
        let start = Instant::now();
        let mut backoff = BACKOFF_START;
        let mut attempts = 0u32;
        let mut told: Option<NotYet> = None;
        loop {
            let seed = &seeds[attempts as usize % seeds.len()];
            attempts += 1;
            let not_yet = match self.attempt(seed, req)? {
                Attempt::Enrolled(plan) => {
                    let seed_ca_pem = self.seed_ca_pem().ok_or_else(|| SeedError::NoSeedCa {
                        seed: seed.to_string(),
                    })?;
                    return Ok(Enrolled {
                        plan: *plan,
                        seed: seed.clone(),
                        seed_ca_pem,
                    });
                }
                Attempt::NotYet(n) => n,
            };
            tracing::debug!(seed = %seed, attempts, "not enrolled yet: {not_yet}");
            if told.as_ref() != Some(&not_yet) {
                on_change(&not_yet);
                told = Some(not_yet.clone());
            }
            if wait.is_some_and(|w| start.elapsed() >= w) {
                return Err(SeedError::GaveUp {
                    waited_secs: start.elapsed().as_secs(),
                    attempts,
                    last: not_yet.to_string(),
                });
            }
            os.sleep(not_yet.wait(jittered(backoff)));
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
            Ok(r) => {
                let status = r.status();
                match serde_json::from_slice::<ApiError>(&r.bytes().unwrap_or_default()) {
                    Ok(e) => tracing::warn!(
                        "progress report to {url} answered {status}: {}: {}",
                        e.code,
                        e.message
                    ),
                    Err(_) => tracing::warn!("progress report to {url} answered {status}"),
                }
            }
            Err(e) => tracing::warn!("progress report to {url} failed: {}", error_chain(&e)),
        }
    }
}

impl SeedClient {
    /// Asks `seed` for the commands host `host_id` has not answered, the seed holding the
    /// request up to `wait` while there are none.
    pub fn commands(
        &self,
        seed: &SeedUrl,
        host_id: &str,
        wait: Duration,
    ) -> Result<Vec<Result<HostCommand, Unknown>>, String> {
        let url = format!(
            "{seed}{}/hosts/{host_id}/commands?wait={}",
            api::PREFIX,
            wait.as_secs()
        );
        let resp = self
            .http
            .get(&url)
            .timeout(wait + REQUEST_TIMEOUT)
            .send()
            .map_err(|e| self.failed(&url, &e))?;
        let body = answered(&url, resp)?;
        // Read one by one, so that a command this agent does not know (from a newer seed)
        // is answered as such rather than making the whole batch unreadable.
        #[derive(serde::Deserialize)]
        struct Batch {
            commands: Vec<serde_json::Value>,
        }
        let batch: Batch = serde_json::from_slice(&body)
            .map_err(|e| format!("unreadable answer from {url}: {e}"))?;
        Ok(batch.commands.into_iter().map(read_command).collect())
    }

    /// Tells `seed` what command `command` of host `host_id` came to.
    pub fn answer(
        &self,
        seed: &SeedUrl,
        host_id: &str,
        command: &str,
        outcome: &CommandOutcome,
    ) -> Result<(), String> {
        let url = format!("{seed}{}/hosts/{host_id}/commands/{command}", api::PREFIX);
        let resp = self
            .http
            .post(&url)
            .json(outcome)
            .send()
            .map_err(|e| self.failed(&url, &e))?;
        answered(&url, resp).map(|_| ())
    }

    /// Why a request to `url` got no answer, naming a pin mismatch when that was it.
    fn failed(&self, url: &str, e: &reqwest::Error) -> String {
        match &*self.outcome.lock().unwrap() {
            Some(PinOutcome::Mismatch(seen)) => format!(
                "{url}: the seed did not present the pinned key {} (its chain has {})",
                self.pin,
                seen.join(", ")
            ),
            _ => format!("{url}: {}", error_chain(e)),
        }
    }
}

/// A command this agent cannot read: its id and what it was called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    pub id: String,
    pub kind: String,
}

/// One command of a batch, or what this agent could read of one it does not know.
pub fn read_command(value: serde_json::Value) -> Result<HostCommand, Unknown> {
    let id = value["id"].as_str().unwrap_or_default().to_string();
    let kind = cluster::text::printable(&value["kind"].to_string());
    serde_json::from_value::<HostCommand>(value).map_err(|_| Unknown { id, kind })
}

/// The body of a successful answer, or the seed's refusal as text.
fn answered(url: &str, resp: reqwest::blocking::Response) -> Result<Vec<u8>, String> {
    let status = resp.status();
    let body = resp
        .bytes()
        .map_err(|e| format!("{url}: reading the answer: {}", error_chain(&e)))?;
    if status.is_success() {
        return Ok(body.to_vec());
    }
    match serde_json::from_slice::<ApiError>(&body) {
        Ok(e) => Err(format!(
            "{url} answered {status}: {}: {}",
            e.code, e.message
        )),
        Err(_) => Err(format!("{url} answered {status}")),
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
    fn a_command_this_agent_does_not_know_is_named_not_fatal() {
        let cases = [
            (
                serde_json::json!({"id": "c-0001", "kind": "health"}),
                Ok(HostCommand {
                    id: "c-0001".into(),
                    kind: api::CommandKind::Health,
                }),
            ),
            (
                serde_json::json!({"id": "c-0002", "kind": "renew"}),
                Err(Unknown {
                    id: "c-0002".into(),
                    kind: "\"renew\"".into(),
                }),
            ),
            (
                serde_json::json!({"id": "c-0003", "kind": {"upgrade": "v1.34.0"}}),
                Err(Unknown {
                    id: "c-0003".into(),
                    kind: "{\"upgrade\":\"v1.34.0\"}".into(),
                }),
            ),
        ];
        for (value, want) in cases {
            assert_eq!(read_command(value.clone()), want, "{value}");
        }
    }

    #[test]
    fn refusals_say_whether_to_wait_and_how_long() {
        let seed: SeedUrl = "https://10.0.0.1:8443".parse().unwrap();
        let body = |code: &str| format!(r#"{{"code":"{code}","message":"m"}}"#).into_bytes();
        // Seconds to wait after an answer when the backoff says 4 s.
        let wait = |status, after: Option<u64>, body: &[u8]| {
            let not_yet = refusal(&seed, status, after.map(Duration::from_secs), body).unwrap();
            not_yet.wait(Duration::from_secs(4)).as_secs()
        };
        let (taken, rated) = (body(codes::IDENTITY_TAKEN), body(codes::RATE_LIMITED));
        let too_many = StatusCode::TOO_MANY_REQUESTS;
        assert_eq!(wait(StatusCode::CONFLICT, None, &taken), 30);
        assert_eq!(wait(too_many, Some(7), &rated), 7, "Retry-After obeyed");
        assert_eq!(
            wait(too_many, Some(2), &rated),
            4,
            "not sooner than the backoff"
        );
        assert_eq!(wait(too_many, Some(3600), &rated), 60, "at most a minute");
        assert_eq!(wait(too_many, None, &rated), 4);
        assert_eq!(wait(too_many, Some(9), b"slow down"), 9, "a 429 of a proxy");
        let busy = body(codes::BUSY);
        assert_eq!(wait(StatusCode::SERVICE_UNAVAILABLE, None, &busy), 4);
        let release = body(codes::VERSION_MISMATCH);
        assert_eq!(wait(StatusCode::CONFLICT, None, &release), 60);
        let release = refusal(&seed, StatusCode::CONFLICT, None, &release).unwrap();
        assert_eq!(release.to_string(), "waiting: m");

        let taken = refusal(&seed, StatusCode::CONFLICT, None, &taken).unwrap();
        assert_eq!(
            taken.to_string(),
            "the seed has this host's identity bound to another key (m); retrying every 30 s"
        );
        let stops = [
            (
                codes::IDENTITY_REQUIRED,
                "the seed at https://10.0.0.1:8443 says the request came without this host's identity key (m), yet firstboot presents it on every connection: this is a bug, please report it with this log",
            ),
            (
                codes::TOKEN_USED,
                "the seed at https://10.0.0.1:8443 refused the enrollment: token_used: m",
            ),
            (
                codes::HOST_REMOVED,
                "the seed at https://10.0.0.1:8443 refused the enrollment: host_removed: m",
            ),
        ];
        for (code, want) in stops {
            let err = refusal(&seed, StatusCode::FORBIDDEN, None, &body(code)).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, "12".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(12)));
        headers.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
    }

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
