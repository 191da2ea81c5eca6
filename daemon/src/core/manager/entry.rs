//! A domain as the manager holds it: its definition, the live copy of a
//! running instance, its runtime facts and the requests waiting on it.

use super::*;

/// A running instance.
#[derive(Debug)]
pub(super) struct Runtime {
    pub(super) init_pid: i32,
    pub(super) monitor_pid: i32,
    pub(super) monitor_start_time: u64,
    pub(super) started_at: u64,
    pub(super) cgroup_path: PathBuf,
    pub(super) memory_limit: Option<u64>,
}

/// A domain as the manager holds it.
#[derive(Debug)]
pub(super) struct Entry {
    /// The persistent definition (for a transient domain: the one it was created from).
    pub(super) def: DomainDef,
    /// The definition the running instance uses, when it differs from `def`.
    pub(super) live: Option<DomainDef>,
    pub(super) persistent: bool,
    pub(super) autostart: bool,
    pub(super) state: State,
    pub(super) reason: Reason,
    pub(super) runtime: Option<Runtime>,
    /// A start in flight (only one at a time).
    pub(super) starting: bool,
    /// Bumped at each start, so reports about an older instance are ignored.
    pub(super) generation: u64,
    /// Replied when the running instance stops.
    pub(super) stop_waiters: Vec<Reply<Seq>>,
    /// Replied when the domain runs again after a reboot.
    pub(super) start_waiters: Vec<Reply<Seq>>,
    /// Start again once the instance stops (a requested reboot).
    pub(super) restart_after_exit: bool,
    /// A commit of the writable layer in flight: start and resume wait.
    pub(super) committing: bool,
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
            state: State::Shutoff,
            reason: Reason::Unknown,
            runtime: None,
            starting: false,
            generation: 0,
            stop_waiters: Vec::new(),
            start_waiters: Vec::new(),
            restart_after_exit: false,
            committing: false,
            keep_writable: false,
        }
    }

    pub(super) fn summary(&self, default_userns: UsernsMode) -> DomainSummary {
        let active = matches!(self.state, State::Running | State::Paused);
        let ids_def = if active { self.live_def() } else { &self.def };
        DomainSummary {
            uuid: self.def.uuid,
            name: self.def.name.to_string(),
            domain_type: self.def.domain_type,
            persistent: self.persistent,
            autostart: self.autostart,
            state: self.state,
            reason: self.reason,
            init_pid: self.runtime.as_ref().map(|r| r.init_pid),
            start_time: self.runtime.as_ref().map(|r| r.started_at),
            security_label: match self.state {
                State::Running | State::Paused => {
                    security::process_label(self.live_def()).map(str::to_owned)
                }
                _ => None,
            },
            user_namespace: if ids_def.idmap.is_some() {
                "idmap"
            } else {
                ids_def.userns.map_or(default_userns, |u| u.mode).as_str()
            },
            host_ids: ids_def.userns.and_then(|u| u.allocated).filter(|_| active),
        }
    }

    pub(super) fn name(&self) -> &str {
        self.def.name.as_str()
    }

    /// The definition of the running instance.
    pub(super) fn live_def(&self) -> &DomainDef {
        self.live.as_ref().unwrap_or(&self.def)
    }

    pub(super) fn check(&self, operation: Operation) -> Result<State, CoreError> {
        if self.starting {
            return Err(CoreError::Busy {
                domain: self.name().to_owned(),
                operation: "start",
            });
        }
        if self.committing {
            // Nothing may run in the container while its layer is copied.
            return Err(CoreError::Busy {
                domain: self.name().to_owned(),
                operation: "commit",
            });
        }
        Ok(lifecycle::check(self.name(), self.state, operation)?)
    }
}
