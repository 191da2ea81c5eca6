//! The lifecycle of a domain: one state enum, one operation enum, one
//! transition table. Every operation asks [`check`] first; a refusal is a
//! typed [`InvalidState`] error naming the domain, its state and the
//! operation.

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
}

impl Operation {
    pub const ALL: [Operation; 11] = [
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
        (S::Crashed, O::Start | O::Reboot) => "destroy it first to clean up the crashed container",
        (S::Shutoff, O::Shutdown | O::Destroy | O::Reboot | O::Suspend | O::Enter) => {
            "start it first"
        }
        (S::Shutoff, O::OpenConsole) => "start it first",
        (S::Paused, O::Shutdown | O::Reboot | O::Enter) => "resume it first",
        (S::Paused, O::Suspend) => "it is already paused",
        (S::Running, O::Resume) => "it is not paused",
        (S::Running, O::Commit) => "suspend or stop it first",
        (S::Crashed, O::Commit) => "destroy it first",
        _ => "",
    }
}

/// The transition table: the state an operation leads to, or `None` when it
/// is not allowed from `state`. Operations that do not change the state
/// (define, console, enter) map to `state` itself.
pub fn transition(state: State, operation: Operation) -> Option<State> {
    use Operation as O;
    use State as S;
    match (state, operation) {
        (S::Shutoff, O::Start) => Some(S::Running),
        (S::Running, O::Shutdown) => Some(S::Shutoff),
        (S::Running | S::Paused | S::Crashed, O::Destroy) => Some(S::Shutoff),
        (S::Running, O::Reboot) => Some(S::Running),
        (S::Running, O::Suspend) => Some(S::Paused),
        (S::Paused, O::Resume) => Some(S::Running),
        (_, O::Define) => Some(state),
        // Undefining an active domain makes it transient; it goes away when it stops.
        (_, O::Undefine) => Some(state),
        (S::Running | S::Paused, O::OpenConsole) => Some(state),
        (S::Running, O::Enter) => Some(state),
        // The layer is copied while nothing in the container can change it.
        (S::Shutoff | S::Paused, O::Commit) => Some(state),
        _ => None,
    }
}

/// Asks the table whether `operation` is allowed on domain `name` in `state`.
pub fn check(name: &str, state: State, operation: Operation) -> Result<State, InvalidState> {
    transition(state, operation).ok_or_else(|| InvalidState::new(name, state, operation))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Operation as O;
    use State as S;

    /// The whole matrix, written out: every state against every operation.
    #[test]
    fn transition_matrix() {
        let expected: [(State, [Option<State>; 11]); 4] = [
            //            start          shutdown       destroy        reboot          suspend        resume         define          undefine        console         enter           commit
            (
                S::Shutoff,
                [
                    Some(S::Running),
                    None,
                    None,
                    None,
                    None,
                    None,
                    Some(S::Shutoff),
                    Some(S::Shutoff),
                    None,
                    None,
                    Some(S::Shutoff),
                ],
            ),
            (
                S::Running,
                [
                    None,
                    Some(S::Shutoff),
                    Some(S::Shutoff),
                    Some(S::Running),
                    Some(S::Paused),
                    None,
                    Some(S::Running),
                    Some(S::Running),
                    Some(S::Running),
                    Some(S::Running),
                    None,
                ],
            ),
            (
                S::Paused,
                [
                    None,
                    None,
                    Some(S::Shutoff),
                    None,
                    None,
                    Some(S::Running),
                    Some(S::Paused),
                    Some(S::Paused),
                    Some(S::Paused),
                    None,
                    Some(S::Paused),
                ],
            ),
            (
                S::Crashed,
                [
                    None,
                    None,
                    Some(S::Shutoff),
                    None,
                    None,
                    None,
                    Some(S::Crashed),
                    Some(S::Crashed),
                    None,
                    None,
                    None,
                ],
            ),
        ];
        for (state, row) in expected {
            for (op, want) in O::ALL.into_iter().zip(row) {
                assert_eq!(transition(state, op), want, "{state} × {op:?}");
                match want {
                    Some(next) => assert_eq!(check("d", state, op), Ok(next)),
                    None => {
                        let err = check("d", state, op).unwrap_err();
                        assert_eq!((err.state, err.operation), (state, op));
                        assert!(err.to_string().contains("'d'"));
                    }
                }
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
    }
}
