//! The lifecycle of a domain: the state clients see and the operation in
//! flight beside it ([`Status`]), and one transition table in two halves:
//! [`request`] for what clients ask (a refusal is a typed [`Refusal`]
//! naming the domain, its state and the operation) and [`report`] for what
//! drivers and the core's own tasks report back. The manager changes a
//! domain's status only through these two functions.

use std::fmt;

/// Where a domain is in its life, as users and clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    Shutoff,
    Running,
    Paused,
    /// Init died abnormally and `on_crash='preserve'` kept the remains for
    /// inspection; `Destroy` cleans up.
    Crashed,
}

impl State {
    pub const ALL: [State; 4] = [
        State::Shutoff,
        State::Running,
        State::Paused,
        State::Crashed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Shutoff => "shutoff",
            State::Running => "running",
            State::Paused => "paused",
            State::Crashed => "crashed",
        }
    }

    /// Whether the domain has processes (or preserved remains) on the host.
    pub fn is_active(self) -> bool {
        !matches!(self, State::Shutoff)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a domain is in its state (libvirt's state reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Never started since it was defined, or the reason was lost.
    Unknown,
    /// Running: started normally.
    Booted,
    /// Running: resumed after a pause.
    Unpaused,
    /// Running: found running when the daemon reconnected.
    Reconnected,
    /// Running: restarted by a reboot.
    Rebooted,
    /// Paused by a user request.
    User,
    /// Shut off: init exited after a shutdown request or on its own.
    Shutdown,
    /// Shut off: destroyed.
    Destroyed,
    /// Shut off: the start failed.
    Failed,
    /// Crashed, or shut off after a crash: init was killed by a signal.
    Crashed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unknown => "unknown",
            Reason::Booted => "booted",
            Reason::Unpaused => "unpaused",
            Reason::Reconnected => "reconnected",
            Reason::Rebooted => "rebooted",
            Reason::User => "user",
            Reason::Shutdown => "shutdown",
            Reason::Destroyed => "destroyed",
            Reason::Failed => "failed",
            Reason::Crashed => "crashed",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something a client asks of a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Start,
    Shutdown,
    Destroy,
    Reboot,
    Suspend,
    Resume,
    /// Replace the persistent definition (takes effect at the next start).
    Define,
    Undefine,
    OpenConsole,
    Enter,
    /// Copy the writable layer into a new image: the container must not
    /// change it meanwhile.
    Commit,
    /// The core's own start of an instance that rebooted (a reboot asked,
    /// or an `on_*` restart action); clients cannot ask for it.
    Restart,
    /// Attach a device to, or detach one from, the running instance.
    ChangeDevices,
    /// Restart the instance at once, without asking it: a VM's reset
    /// button (its qemu stays), a container's init killed and started again.
    Reset,
    /// Send a signal to a process inside (a paused one gets it when it
    /// runs again).
    Signal,
}

impl Operation {
    pub const ALL: [Operation; 15] = [
        Operation::Start,
        Operation::Shutdown,
        Operation::Destroy,
        Operation::Reboot,
        Operation::Suspend,
        Operation::Resume,
        Operation::Define,
        Operation::Undefine,
        Operation::OpenConsole,
        Operation::Enter,
        Operation::Commit,
        Operation::Restart,
        Operation::ChangeDevices,
        Operation::Reset,
        Operation::Signal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Start => "start",
            Operation::Shutdown => "shutdown",
            Operation::Destroy => "destroy",
            Operation::Reboot => "reboot",
            Operation::Suspend => "suspend",
            Operation::Resume => "resume",
            Operation::Define => "define",
            Operation::Undefine => "undefine",
            Operation::OpenConsole => "open a console of",
            Operation::Enter => "enter",
            Operation::Commit => "commit",
            Operation::ChangeDevices => "change the devices of",
            Operation::Restart => "restart",
            Operation::Reset => "reset",
            Operation::Signal => "send a signal into",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operation refused in the domain's current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {operation} domain '{domain}': it is {state}{hint}")]
pub struct InvalidState {
    pub domain: String,
    pub state: State,
    pub operation: Operation,
    hint: Hint,
}

impl InvalidState {
    pub fn new(domain: &str, state: State, operation: Operation) -> Self {
        InvalidState {
            domain: domain.to_owned(),
            state,
            operation,
            hint: Hint(hint(state, operation)),
        }
    }
}

/// The "what to do" part of an [`InvalidState`] message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hint(&'static str);

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, "; {}", self.0)
        }
    }
}

fn hint(state: State, operation: Operation) -> &'static str {
    use Operation as O;
    use State as S;
    match (state, operation) {
        (S::Running | S::Paused, O::Start) => "it is already started",
        (S::Crashed, O::Start | O::Reboot | O::Reset) => {
            "destroy it first to clean up the crashed container"
        }
        (S::Shutoff, O::Shutdown | O::Destroy | O::Reboot | O::Reset | O::Suspend | O::Enter) => {
            "start it first"
        }
        (S::Shutoff, O::OpenConsole | O::Signal) => "start it first",
        (S::Shutoff | S::Crashed, O::ChangeDevices) => {
            "start it first, or change its definition only (--config)"
        }
        (S::Paused, O::Shutdown | O::Reboot | O::Enter) => "resume it first",
        (S::Paused, O::Suspend) => "it is already paused",
        (S::Running, O::Resume) => "it is not paused",
        (S::Running, O::Commit) => "suspend or stop it first",
        (S::Crashed, O::Commit) => "destroy it first",
        _ => "",
    }
}

/// An operation in flight beside the state: while one runs, the domain
/// refuses what would race with it ([`Refusal::Busy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InFlight {
    /// A start (or the restart after a reboot) until the driver reports.
    Start { restart: bool },
    /// A reboot was asked: the instance starts again once it has stopped.
    Reboot,
    /// A reset was asked: done when the driver reset the instance in place,
    /// or, as a reboot, once it has stopped and started again.
    Reset,
    /// The writable layer is being copied into an image.
    Commit,
    /// A device is being attached to or detached from the instance.
    Devices,
}

impl InFlight {
    pub const ALL: [InFlight; 6] = [
        InFlight::Start { restart: false },
        InFlight::Start { restart: true },
        InFlight::Reboot,
        InFlight::Reset,
        InFlight::Commit,
        InFlight::Devices,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InFlight::Start { .. } => "start",
            InFlight::Reboot => "reboot",
            InFlight::Reset => "reset",
            InFlight::Commit => "commit",
            InFlight::Devices => "device change",
        }
    }
}

/// A domain's place in the lifecycle: what clients see, and what is in
/// flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status {
    pub state: State,
    pub in_flight: Option<InFlight>,
}

impl Status {
    pub const SHUTOFF: Status = Status::idle(State::Shutoff);

    pub const fn idle(state: State) -> Status {
        Status {
            state,
            in_flight: None,
        }
    }

    /// Every status the table knows, for the full-matrix test.
    pub fn all() -> Vec<Status> {
        let mut all = Vec::new();
        for state in State::ALL {
            all.push(Status::idle(state));
            for in_flight in InFlight::ALL {
                all.push(Status {
                    state,
                    in_flight: Some(in_flight),
                });
            }
        }
        all
    }
}

/// How an instance ended, as the core decided from the driver's report
/// and the domain's `on_*` actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ending {
    /// Shut off (a transient domain goes away).
    Shutoff,
    /// `on_crash='preserve'`: the remains stay until `Destroy`.
    Preserve,
    /// Start again (a reboot, or an `on_*` restart action).
    Restart,
}

/// A driver's or a task's report about an operation in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Report {
    Launched,
    LaunchFailed,
    /// The instance is gone.
    Exited(Ending),
    Frozen,
    Thawed,
    Committed,
    /// A device change finished (done or failed).
    DevicesChanged,
    /// The driver reset the instance in place (or failed to).
    Reset,
}

impl Report {
    pub const ALL: [Report; 10] = [
        Report::Launched,
        Report::LaunchFailed,
        Report::Exited(Ending::Shutoff),
        Report::Exited(Ending::Preserve),
        Report::Exited(Ending::Restart),
        Report::Frozen,
        Report::Thawed,
        Report::Committed,
        Report::DevicesChanged,
        Report::Reset,
    ];
}

/// Why the table refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    InvalidState(#[from] InvalidState),
    #[error(
        "domain '{domain}': another operation ({in_flight}) is in progress; try again when it is done"
    )]
    Busy {
        domain: String,
        in_flight: &'static str,
    },
}

/// The transition table of client operations: the status `operation`
/// leads to at once (its end comes as a [`Report`]), or a refusal.
/// `Restart` is the core's own: the start after a reboot.
pub fn request(name: &str, status: Status, operation: Operation) -> Result<Status, Refusal> {
    use InFlight as F;
    use Operation as O;
    use State as S;
    let busy = |in_flight: InFlight| Refusal::Busy {
        domain: name.to_owned(),
        in_flight: in_flight.as_str(),
    };
    let state = status.state;
    let in_flight = match (status.in_flight, operation) {
        // Definitions may change under anything; the instance keeps its own.
        (_, O::Define) => status.in_flight,
        // The commit reads the writable layer an undefine would remove.
        (Some(F::Commit), O::Undefine) => return Err(busy(F::Commit)),
        (_, O::Undefine) => status.in_flight,
        (Some(f @ (F::Start { .. } | F::Commit)), _) => return Err(busy(f)),
        // A shutdown or destroy asked during a reboot wins over it.
        (Some(F::Reboot), O::Shutdown | O::Destroy) => None,
        (Some(F::Reboot), O::Reboot | O::OpenConsole | O::Enter | O::Signal) => Some(F::Reboot),
        (Some(F::Reboot), _) => return Err(busy(F::Reboot)),
        // As for a reboot: a stop wins over a reset.
        (Some(F::Reset), O::Shutdown | O::Destroy) => None,
        (Some(F::Reset), O::OpenConsole | O::Enter | O::Signal) => Some(F::Reset),
        (Some(F::Reset), _) => return Err(busy(F::Reset)),
        // A stop wins over a device change: the device goes with the instance.
        (Some(F::Devices), O::Shutdown | O::Destroy) => None,
        (Some(F::Devices), O::OpenConsole | O::Enter | O::Signal) => Some(F::Devices),
        (Some(F::Devices), _) => return Err(busy(F::Devices)),
        (None, O::ChangeDevices) => Some(F::Devices),
        (None, O::Start) => Some(F::Start { restart: false }),
        (None, O::Restart) => Some(F::Start { restart: true }),
        (None, O::Reboot) => Some(F::Reboot),
        (None, O::Reset) => Some(F::Reset),
        (None, O::Commit) => Some(F::Commit),
        (None, _) => None,
    };
    let allowed = match (state, operation) {
        (S::Shutoff, O::Start | O::Restart) => true,
        (S::Running, O::Shutdown | O::Reboot | O::Suspend | O::Enter) => true,
        (S::Running | S::Paused | S::Crashed, O::Destroy) => true,
        // The reset button works on a paused machine too.
        (S::Running | S::Paused, O::Reset) => true,
        (S::Paused, O::Resume) => true,
        (_, O::Define | O::Undefine) => true,
        (S::Running | S::Paused, O::OpenConsole | O::ChangeDevices | O::Signal) => true,
        // The layer is copied while nothing in the container can change it.
        (S::Shutoff | S::Paused, O::Commit) => true,
        _ => false,
    };
    if !allowed {
        return Err(InvalidState::new(name, state, operation).into());
    }
    // Crashed remains need no process to end: destroy is done at once.
    let state = match (state, operation) {
        (S::Crashed, O::Destroy) => S::Shutoff,
        _ => state,
    };
    Ok(Status { state, in_flight })
}

/// The transition table of reports: the status a report leads to, or
/// `None` when it cannot happen in `status` (a stale report, ignored).
pub fn report(status: Status, report: Report) -> Option<Status> {
    use InFlight as F;
    use State as S;
    let kept = |in_flight: Option<InFlight>| in_flight.filter(|f| *f == F::Commit);
    match (status.state, status.in_flight, report) {
        (S::Shutoff, Some(F::Start { .. }), Report::Launched) => Some(Status::idle(S::Running)),
        (S::Shutoff, Some(F::Start { .. }), Report::LaunchFailed) => Some(Status::SHUTOFF),
        (S::Running | S::Paused, in_flight, Report::Exited(ending)) => Some(Status {
            state: match ending {
                Ending::Shutoff | Ending::Restart => S::Shutoff,
                Ending::Preserve => S::Crashed,
            },
            // A commit of a paused domain goes on; a reboot is done.
            in_flight: kept(in_flight),
        }),
        (S::Running, None, Report::Frozen) => Some(Status::idle(S::Paused)),
        (S::Paused, None, Report::Thawed) => Some(Status::idle(S::Running)),
        (state, Some(F::Commit), Report::Committed) => Some(Status::idle(state)),
        (state @ (S::Running | S::Paused), Some(F::Devices), Report::DevicesChanged) => {
            Some(Status::idle(state))
        }
        (state @ (S::Running | S::Paused), Some(F::Reset), Report::Reset) => {
            Some(Status::idle(state))
        }
        _ => None,
    }
}

/// Asks the table whether `operation` is allowed on domain `name` in
/// `state`, with nothing in flight.
pub fn check(name: &str, state: State, operation: Operation) -> Result<State, InvalidState> {
    match request(name, Status::idle(state), operation) {
        Ok(status) => Ok(status.state),
        Err(Refusal::InvalidState(error)) => Err(error),
        // Nothing is in flight, so nothing can be busy.
        Err(Refusal::Busy { .. }) => Err(InvalidState::new(name, state, operation)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InFlight as F;
    use Operation as O;
    use State as S;

    fn st(state: State, in_flight: Option<InFlight>) -> Status {
        Status { state, in_flight }
    }

    const START: Option<InFlight> = Some(F::Start { restart: false });
    const RESTART: Option<InFlight> = Some(F::Start { restart: true });

    /// The expected outcome of a request: the next status, invalid state,
    /// or busy with what is in flight.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Want {
        To(State, Option<InFlight>),
        Invalid,
        Busy,
    }
    use Want::{Busy, Invalid, To};

    /// What the table must say for an idle domain, every state against
    /// every operation, written out.
    fn idle_row(state: State) -> [Want; 15] {
        // start shutdown destroy reboot suspend resume define undefine console enter commit restart devices reset signal
        match state {
            S::Shutoff => [
                To(S::Shutoff, START),
                Invalid,
                Invalid,
                Invalid,
                Invalid,
                Invalid,
                To(S::Shutoff, None),
                To(S::Shutoff, None),
                Invalid,
                Invalid,
                To(S::Shutoff, Some(F::Commit)),
                To(S::Shutoff, RESTART),
                Invalid,
                Invalid,
                Invalid,
            ],
            S::Running => [
                Invalid,
                To(S::Running, None),
                To(S::Running, None),
                To(S::Running, Some(F::Reboot)),
                To(S::Running, None),
                Invalid,
                To(S::Running, None),
                To(S::Running, None),
                To(S::Running, None),
                To(S::Running, None),
                Invalid,
                Invalid,
                To(S::Running, Some(F::Devices)),
                To(S::Running, Some(F::Reset)),
                To(S::Running, None),
            ],
            S::Paused => [
                Invalid,
                Invalid,
                To(S::Paused, None),
                Invalid,
                Invalid,
                To(S::Paused, None),
                To(S::Paused, None),
                To(S::Paused, None),
                To(S::Paused, None),
                Invalid,
                To(S::Paused, Some(F::Commit)),
                Invalid,
                To(S::Paused, Some(F::Devices)),
                To(S::Paused, Some(F::Reset)),
                To(S::Paused, None),
            ],
            S::Crashed => [
                Invalid,
                Invalid,
                To(S::Shutoff, None),
                Invalid,
                Invalid,
                Invalid,
                To(S::Crashed, None),
                To(S::Crashed, None),
                Invalid,
                Invalid,
                Invalid,
                Invalid,
                Invalid,
                Invalid,
                Invalid,
            ],
        }
    }

    /// With an operation in flight: define always passes and keeps it;
    /// undefine passes unless a commit runs; a start or commit makes
    /// everything else busy; a reboot lets shutdown and destroy win over
    /// it, allows another reboot, consoles and enter, and nothing else; a
    /// reset the same, without another reset.
    fn want(status: Status, op: Operation) -> Want {
        let idle = idle_row(status.state)[O::ALL.iter().position(|o| *o == op).unwrap()];
        let keep = |w: Want, in_flight| match w {
            To(state, _) => To(state, in_flight),
            other => other,
        };
        match (status.in_flight, op) {
            (None, _) => idle,
            (f, O::Define) => keep(idle, f),
            (Some(F::Commit), O::Undefine) => Busy,
            (f, O::Undefine) => keep(idle, f),
            (Some(F::Start { .. } | F::Commit), _) => Busy,
            (Some(F::Reboot), O::Shutdown | O::Destroy) => keep(idle, None),
            (Some(F::Reboot), O::Reboot | O::OpenConsole | O::Enter | O::Signal) => {
                keep(idle, Some(F::Reboot))
            }
            (Some(F::Reboot), _) => Busy,
            (Some(F::Reset), O::Shutdown | O::Destroy) => keep(idle, None),
            (Some(F::Reset), O::OpenConsole | O::Enter | O::Signal) => keep(idle, Some(F::Reset)),
            (Some(F::Reset), _) => Busy,
            (Some(F::Devices), O::Shutdown | O::Destroy) => keep(idle, None),
            (Some(F::Devices), O::OpenConsole | O::Enter | O::Signal) => {
                keep(idle, Some(F::Devices))
            }
            (Some(F::Devices), _) => Busy,
        }
    }

    /// The whole request matrix: every status against every operation.
    #[test]
    fn request_matrix() {
        let mut checked = 0;
        for status in Status::all() {
            for op in O::ALL {
                let got = request("d", status, op);
                match want(status, op) {
                    To(state, in_flight) => {
                        assert_eq!(got, Ok(st(state, in_flight)), "{status:?} × {op:?}")
                    }
                    Invalid => match got {
                        Err(Refusal::InvalidState(e)) => {
                            assert_eq!((e.state, e.operation), (status.state, op));
                            assert!(e.to_string().contains("'d'"));
                        }
                        other => panic!("{status:?} × {op:?}: want invalid state, got {other:?}"),
                    },
                    Busy => match got {
                        Err(Refusal::Busy { domain, in_flight }) => {
                            assert_eq!(domain, "d");
                            assert_eq!(Some(in_flight), status.in_flight.map(InFlight::as_str));
                        }
                        other => panic!("{status:?} × {op:?}: want busy, got {other:?}"),
                    },
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 28 * 15);
    }

    /// The whole report matrix: every status against every report.
    #[test]
    fn report_matrix() {
        use Ending as E;
        use Report as R;
        for status in Status::all() {
            for r in R::ALL {
                let want = match (status.state, status.in_flight, r) {
                    (S::Shutoff, Some(F::Start { .. }), R::Launched) => Some(st(S::Running, None)),
                    (S::Shutoff, Some(F::Start { .. }), R::LaunchFailed) => {
                        Some(st(S::Shutoff, None))
                    }
                    (S::Running | S::Paused, f, R::Exited(e)) => Some(st(
                        if e == E::Preserve {
                            S::Crashed
                        } else {
                            S::Shutoff
                        },
                        f.filter(|f| *f == F::Commit),
                    )),
                    (S::Running, None, R::Frozen) => Some(st(S::Paused, None)),
                    (S::Paused, None, R::Thawed) => Some(st(S::Running, None)),
                    (s, Some(F::Commit), R::Committed) => Some(st(s, None)),
                    (s @ (S::Running | S::Paused), Some(F::Devices), R::DevicesChanged) => {
                        Some(st(s, None))
                    }
                    (s @ (S::Running | S::Paused), Some(F::Reset), R::Reset) => Some(st(s, None)),
                    _ => None,
                };
                assert_eq!(report(status, r), want, "{status:?} × {r:?}");
            }
        }
    }

    #[test]
    fn refusals_say_what_to_do() {
        let err = check("web", S::Running, O::Start).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot start domain 'web': it is running; it is already started"
        );
        let err = check("web", S::Shutoff, O::Destroy).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot destroy domain 'web': it is shutoff; start it first"
        );
        let busy = request("web", st(S::Shutoff, START), O::Destroy).unwrap_err();
        assert_eq!(
            busy.to_string(),
            "domain 'web': another operation (start) is in progress; try again when it is done"
        );
    }
}
