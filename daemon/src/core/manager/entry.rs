//! A domain as the manager holds it: its definition, the live copy of a
//! running instance, its place in the lifecycle, its runtime facts and
//! the requests waiting on it.

use crate::core::lifecycle::{self, InFlight, Operation, Reason, Report, State, Status};
use crate::core::tenants::{Tenant, Tenants};
use crate::core::types::{CoreError, DomainSummary, Seq};
use crate::domain::{ApiAccess, DomainDef, DomainType, UsernsMode};
use crate::driver::Runtime;
use crate::security;

use super::Reply;

/// A domain as the manager holds it.
#[derive(Debug)]
pub(super) struct Entry {
    /// The persistent definition (for a transient domain: the one it was created from).
    pub(super) def: DomainDef,
    /// The definition the running instance uses, when it differs from `def`.
    /// Boxed: most domains have none, and a definition is ~2 KiB.
    pub(super) live: Option<Box<DomainDef>>,
    pub(super) persistent: bool,
    pub(super) autostart: bool,
    /// Changed only through the lifecycle table ([`Entry::request`],
    /// [`Entry::report`]).
    status: Status,
    pub(super) reason: Reason,
    /// Changed only with [`Entry::set_runtime`] and [`Entry::clear_runtime`].
    pub(super) runtime: Option<Runtime>,
    /// The running container's pid namespace, as recorded in the tenants.
    pid_namespace: Option<u64>,
    /// Bumped at each start, so reports about an older instance are ignored.
    pub(super) generation: u64,
    /// Replied when the running instance stops.
    pub(super) stop_waiters: Vec<Reply<Seq>>,
    /// Replied when the domain has started (again, after a reboot).
    pub(super) start_waiters: Vec<Reply<Seq>>,
    /// Keep the writable layer when the (transient) domain goes away: it
    /// was undefined with `UndefineFlags::KEEP_WRITABLE_LAYER` while active.
    pub(super) keep_writable: bool,
}

impl Entry {
    pub(super) fn new(def: DomainDef, persistent: bool, autostart: bool) -> Entry {
        Entry {
            def,
            live: None,
            persistent,
            autostart,
            status: Status::SHUTOFF,
            reason: Reason::Unknown,
            runtime: None,
            pid_namespace: None,
            generation: 0,
            stop_waiters: Vec::new(),
            start_waiters: Vec::new(),
            keep_writable: false,
        }
    }

    pub(super) fn summary(&self, default_userns: UsernsMode) -> DomainSummary {
        let active = matches!(self.state(), State::Running | State::Paused);
        let ids_def = if active { self.live_def() } else { &self.def };
        DomainSummary {
            uuid: self.def.uuid,
            name: self.def.name.to_string(),
            domain_type: self.def.domain_type,
            persistent: self.persistent,
            autostart: self.autostart,
            state: self.state(),
            reason: self.reason,
            init_pid: self.runtime.as_ref().map(|r| r.init_pid),
            start_time: self.runtime.as_ref().map(|r| r.started_at),
            security_label: if active {
                security::process_label(self.live_def()).map(str::to_owned)
            } else {
                None
            },
            user_namespace: if ids_def.idmap.is_some() {
                "idmap"
            } else {
                ids_def.userns.map_or(default_userns, |u| u.mode).as_str()
            },
            host_ids: ids_def.userns.and_then(|u| u.allocated).filter(|_| active),
        }
    }

    /// Records the running instance; a container's pid namespace goes into
    /// `tenants`, so that calls from inside it are recognised.
    pub(super) fn set_runtime(&mut self, runtime: Runtime, tenants: &Tenants) {
        self.clear_runtime(tenants);
        if self.def.domain_type == DomainType::Lxc {
            match container_namespace(runtime.init_pid) {
                Ok(Some(namespace)) => {
                    tenants.insert(
                        namespace,
                        Tenant {
                            uuid: self.def.uuid,
                            name: self.name().to_owned(),
                            access: self.live_def().api_access.unwrap_or(ApiAccess::NoAccess),
                        },
                    );
                    self.pid_namespace = Some(namespace);
                }
                Ok(None) => {}
                // Its init is gone already: the exit that follows clears it.
                Err(error) => {
                    tracing::debug!(domain = %self.name(), pid = runtime.init_pid, error = %error, "cannot read the pid namespace of a container's init");
                }
            }
        }
        self.runtime = Some(runtime);
    }

    /// The instance is gone.
    pub(super) fn clear_runtime(&mut self, tenants: &Tenants) {
        self.runtime = None;
        if let Some(namespace) = self.pid_namespace.take() {
            tenants.remove(namespace, self.def.uuid);
        }
    }

    pub(super) fn name(&self) -> &str {
        self.def.name.as_str()
    }

    /// The definition of the running instance.
    pub(super) fn live_def(&self) -> &DomainDef {
        self.live.as_deref().unwrap_or(&self.def)
    }

    pub(super) fn status(&self) -> Status {
        self.status
    }

    pub(super) fn state(&self) -> State {
        self.status.state
    }

    /// A start (or restart) is in flight.
    pub(super) fn starting(&self) -> bool {
        matches!(self.status.in_flight, Some(InFlight::Start { .. }))
    }

    /// Asks the table for `operation` without applying it.
    pub(super) fn check(&self, operation: Operation) -> Result<Status, CoreError> {
        Ok(lifecycle::request(self.name(), self.status, operation)?)
    }

    /// Asks the table for `operation` and applies the status it gives.
    pub(super) fn request(&mut self, operation: Operation) -> Result<(), CoreError> {
        self.status = self.check(operation)?;
        Ok(())
    }

    /// Applies a report through the table; `false` when the table says it
    /// cannot happen now (a stale report), and nothing changed.
    pub(super) fn report(&mut self, report: Report) -> bool {
        match lifecycle::report(self.status, report) {
            Some(status) => {
                self.status = status;
                true
            }
            None => {
                tracing::debug!(domain = %self.name(), status = ?self.status, report = ?report, "ignored a stale report");
                false
            }
        }
    }

    /// Sets the status of an instance found running after a restart of
    /// the daemon, where the table has no history to go by.
    pub(super) fn recovered(&mut self, state: State) {
        self.status = Status::idle(state);
    }
}

/// The pid namespace a container's init runs in; `None` when it is the
/// daemon's own (a pid that is not a container's).
fn container_namespace(init_pid: i32) -> std::io::Result<Option<u64>> {
    use crate::sys::process::{own_pid_namespace, pid_namespace};
    let pid =
        u32::try_from(init_pid).map_err(|_| std::io::Error::from_raw_os_error(libc::ESRCH))?;
    let namespace = pid_namespace(pid)?;
    Ok((namespace != own_pid_namespace()?).then_some(namespace))
}
