//! Every active domain stopped at once, as libvirt-guests does at host
//! shutdown: shut down gracefully (in parallel, up to a limit, within one
//! time limit, then destroyed), destroyed, or left as they are. Built on
//! the manager's own shutdown and destroy commands, so each domain goes
//! through its usual transitions and events.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use super::{CoreError, DomainSummary, ManagerHandle, Reason, Seq, State};
use crate::driver::ShutdownMode;

/// What to do with the active domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostShutdownMode {
    /// Ask each to shut down; destroy what still runs at the time limit.
    Shutdown,
    /// Destroy each at once.
    Destroy,
    /// Leave them: whatever stops the host stops them.
    Keep,
}

impl HostShutdownMode {
    pub const NAMED: [(&'static str, HostShutdownMode); 3] = [
        ("shutdown", HostShutdownMode::Shutdown),
        ("destroy", HostShutdownMode::Destroy),
        ("keep", HostShutdownMode::Keep),
    ];

    pub fn from_name(name: &str) -> Option<HostShutdownMode> {
        Self::NAMED
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| *m)
    }

    pub fn as_str(self) -> &'static str {
        Self::NAMED
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("shutdown", |(n, _)| n)
    }
}

/// How to stop the domains: the daemon's settings, or a caller's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostShutdownPolicy {
    pub mode: HostShutdownMode,
    /// For all of them together; then the rest are destroyed.
    pub timeout: Duration,
    /// At most this many shutting down at a time; 0: all at once.
    pub parallel: usize,
}

impl Default for HostShutdownPolicy {
    fn default() -> Self {
        HostShutdownPolicy {
            mode: HostShutdownMode::Shutdown,
            timeout: Duration::from_secs(300),
            parallel: 0,
        }
    }
}

/// How one domain ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub name: String,
    /// `shutdown` (it stopped when asked), `destroyed` (killed: asked to,
    /// or still running at the time limit), `stopped` (a transient domain,
    /// gone with its reason), `kept`, or `failed`.
    pub result: &'static str,
    /// The error of a failure; empty otherwise.
    pub error: String,
    /// The event of its stop, for a caller that waits until it is published.
    pub seq: Option<Seq>,
}

/// Stops every active domain as `policy` says; one outcome per domain,
/// sorted by name.
pub async fn stop_all(handle: &ManagerHandle, policy: HostShutdownPolicy) -> Vec<Outcome> {
    let active: Vec<DomainSummary> = match handle.list().await {
        Ok(list) => list.into_iter().filter(|d| d.state.is_active()).collect(),
        Err(error) => {
            return vec![Outcome {
                name: String::new(),
                result: "failed",
                error: crate::error_chain::error_chain(&error),
                seq: None,
            }];
        }
    };
    let deadline = Instant::now() + policy.timeout;
    let parallel = match policy.parallel {
        0 => active.len().max(1),
        n => n,
    };
    let mut outcomes: Vec<Outcome> = futures_util::stream::iter(active)
        .map(|domain| stop_one(handle, domain, policy.mode, deadline))
        .buffer_unordered(parallel)
        .collect()
        .await;
    outcomes.sort_by(|a, b| a.name.cmp(&b.name));
    outcomes
}

async fn stop_one(
    handle: &ManagerHandle,
    domain: DomainSummary,
    mode: HostShutdownMode,
    deadline: Instant,
) -> Outcome {
    let asked = Instant::now();
    let mut grace = None;
    let result: Result<Seq, CoreError> = match mode {
        HostShutdownMode::Keep => {
            return Outcome {
                name: domain.name,
                result: "kept",
                error: String::new(),
                seq: None,
            };
        }
        HostShutdownMode::Destroy => handle.destroy(domain.uuid).await,
        // A paused domain cannot act on a request: it is destroyed.
        HostShutdownMode::Shutdown if domain.state != State::Running => {
            handle.destroy(domain.uuid).await
        }
        HostShutdownMode::Shutdown => {
            // What is left of the time limit, at least a second: the
            // domain is killed when its grace ends.
            let left = deadline
                .saturating_duration_since(asked)
                .max(Duration::from_secs(1));
            grace = Some(left);
            handle
                .shutdown(domain.uuid, left, ShutdownMode::Default)
                .await
        }
    };
    match result {
        Ok(seq) => {
            let reason = handle
                .lookup(super::Lookup::Uuid(domain.uuid))
                .await
                .map(|s| s.reason);
            // The manager kills a domain whose grace ends and still
            // records a shutdown: a stop that took the whole grace was that.
            let killed = grace.is_some_and(|grace| asked.elapsed() >= grace);
            let result = match reason {
                Ok(Reason::Shutdown) if !killed => "shutdown",
                Ok(_) => "destroyed",
                // A transient domain is gone once stopped.
                Err(_) if !killed => "stopped",
                Err(_) => "destroyed",
            };
            Outcome {
                name: domain.name,
                result,
                error: String::new(),
                seq: Some(seq),
            }
        }
        Err(error) => Outcome {
            name: domain.name,
            result: "failed",
            error: crate::error_chain::error_chain(&error),
            seq: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_have_the_names_of_the_settings() {
        for (name, mode) in HostShutdownMode::NAMED {
            assert_eq!(HostShutdownMode::from_name(name), Some(mode));
            assert_eq!(mode.as_str(), name);
        }
        assert_eq!(HostShutdownMode::from_name("suspend"), None);
    }
}
