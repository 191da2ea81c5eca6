//! Asking polkit whether a caller that is neither root nor in lxvirt's
//! admin group may manage domains (`org.lxvirt.lxvirt1.manage`, declared
//! in `daemon/data/polkit/org.lxvirt.lxvirt1.policy`).
//!
//! The subject is the calling process (`unix-process`: pid, start time and
//! uid, as the bus reports them), which works whether lxvirtd serves the
//! system bus or another one.

use std::collections::HashMap;

use zbus::Variant as Value;

/// The action of every call that changes something.
pub const MANAGE_ACTION: &str = "org.lxvirt.lxvirt1.manage";
/// The action of every call and property that only reads.
pub const MONITOR_ACTION: &str = "org.lxvirt.lxvirt1.monitor";

/// `CheckAuthorization` flag: polkit may ask the user (an agent prompts).
const ALLOW_USER_INTERACTION: u32 = 1;

#[zbus::proxy(
    interface = "org.freedesktop.PolicyKit1.Authority",
    default_service = "org.freedesktop.PolicyKit1",
    default_path = "/org/freedesktop/PolicyKit1/Authority"
)]
trait Authority {
    #[allow(clippy::type_complexity)]
    fn check_authorization(
        &self,
        subject: &(&str, HashMap<&str, Value<'_>>),
        action_id: &str,
        details: &HashMap<&str, &str>,
        flags: u32,
        cancellation_id: &str,
    ) -> zbus::Result<(bool, bool, HashMap<String, String>)>;
}

/// The calling process, as polkit identifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject {
    pub pid: u32,
    /// In clock ticks since boot (`/proc/PID/stat` field 22): tells a
    /// reused pid apart.
    pub start_time: u64,
    pub uid: u32,
}

/// polkit's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Allowed after authentication, which the caller did not let polkit
    /// ask for (or no agent could).
    NeedsAuthentication,
    Denied,
}

#[derive(Debug, thiserror::Error)]
pub enum PolkitError {
    #[error("cannot reach polkit")]
    Connect(#[source] zbus::Error),
    #[error("polkit could not decide on {action}")]
    Check {
        action: &'static str,
        #[source]
        source: zbus::Error,
    },
}

impl PolkitError {
    /// polkit is not installed or not running: lxvirt's own group rule
    /// decides alone.
    pub fn is_absent(&self) -> bool {
        let error = match self {
            PolkitError::Connect(e) | PolkitError::Check { source: e, .. } => e,
        };
        matches!(
            error,
            zbus::Error::FDO(e) if matches!(
                **e,
                zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_)
            )
        )
    }
}

/// polkit's authority on the system bus.
#[derive(Debug, Clone)]
pub struct Polkit {
    authority: AuthorityProxy<'static>,
}

impl Polkit {
    /// The authority on `system_bus`; nothing is sent until the first check
    /// (polkit may be started on demand).
    pub async fn new(system_bus: &zbus::Connection) -> Result<Polkit, PolkitError> {
        let authority = AuthorityProxy::builder(system_bus)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(PolkitError::Connect)?;
        Ok(Polkit { authority })
    }

    /// Whether `subject` may do `action`; `interactive` when the caller
    /// allowed interactive authorization on its call.
    pub async fn check(
        &self,
        subject: Subject,
        action: &'static str,
        interactive: bool,
    ) -> Result<Decision, PolkitError> {
        let details = HashMap::from([
            ("pid", Value::from(subject.pid)),
            ("start-time", Value::from(subject.start_time)),
            ("uid", Value::from(i32::try_from(subject.uid).unwrap_or(-1))),
        ]);
        let flags = if interactive {
            ALLOW_USER_INTERACTION
        } else {
            0
        };
        let (authorized, challenge, _) = self
            .authority
            .check_authorization(
                &("unix-process", details),
                action,
                &HashMap::new(),
                flags,
                "",
            )
            .await
            .map_err(|source| PolkitError::Check { action, source })?;
        Ok(match (authorized, challenge) {
            (true, _) => Decision::Allowed,
            (false, true) => Decision::NeedsAuthentication,
            (false, false) => Decision::Denied,
        })
    }
}
