//! The driver's side of one running VM: its files, what it knows of how
//! the VM ended (recorded durably as it learns it), its QMP connection,
//! whose events decide that end, and its guest agent client.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use super::agent::{Agent, Connector};
use super::instance::QemuError;
use super::qmp::{EventKind, Events, Qmp, QmpError, RunState, ShutdownCause};
use crate::driver::Exit;
use crate::error_chain::error_chain;
use crate::persist::{self, Durability, Versioned};

/// How long QMP may take to answer a command the driver sends.
pub(super) const QMP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a VM ended, as far as the driver knows; written as it learns it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ExitRecord {
    pub(super) requested: Option<Requested>,
    pub(super) guest: Option<GuestEnd>,
}

impl Versioned for ExitRecord {
    const VERSION: u32 = 1;
}

/// Fuzzing: this module's state files read from `bytes`.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_state_files(bytes: &[u8]) {
    crate::persist::fuzz_round_trip::<ExitRecord>(bytes);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum Requested {
    Shutdown,
    Destroy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum GuestEnd {
    PoweredOff,
    /// It rebooted and qemu was told not to reset it (`on_reboot`
    /// other than restart).
    Rebooted,
    Panicked,
    /// qemu was told to quit by a signal from the host: systemd stopping
    /// the VM's scope (`machinectl terminate`), or someone's SIGTERM.
    HostSignal,
}

impl ExitRecord {
    pub(super) fn exit(self) -> Exit {
        match (self.requested, self.guest) {
            (Some(Requested::Destroy), _) => Exit::Destroyed,
            (Some(Requested::Shutdown), _) => Exit::Shutdown,
            (None, Some(GuestEnd::PoweredOff)) => Exit::PoweredOff,
            (None, Some(GuestEnd::Rebooted)) => Exit::Rebooted,
            (None, Some(GuestEnd::Panicked)) => Exit::Crashed,
            // qemu shut the guest down as asked, as for a shutdown of ours.
            (None, Some(GuestEnd::HostSignal)) => Exit::Shutdown,
            // qemu ended by itself, or someone killed it.
            (None, None) => Exit::Crashed,
        }
    }
}

/// A VM's files.
#[derive(Debug, Clone)]
pub(super) struct Files {
    /// Owned by the VM's uid.
    pub(super) dir: PathBuf,
    pub(super) qmp: PathBuf,
    /// The socket of the guest agent's channel (the first `<channel>`
    /// named [`super::agent::CHANNEL_NAME`]): there while qemu runs when
    /// the definition has one, which is how a restarted daemon knows.
    pub(super) agent: PathBuf,
    pub(super) pidfile: PathBuf,
    /// root's: qemu's stdout and stderr.
    pub(super) log: PathBuf,
    pub(super) exit: PathBuf,
    /// What its disk images were before it was given them.
    pub(super) disks: PathBuf,
}

impl Files {
    pub(super) fn new(run_dir: &Path, name: &str) -> Files {
        let base = run_dir.join("qemu");
        let dir = base.join(name);
        Files {
            qmp: dir.join("qmp.sock"),
            agent: dir.join("agent.sock"),
            pidfile: dir.join("qemu.pid"),
            dir,
            log: base.join(format!("{name}.log")),
            exit: base.join(format!("{name}.exit")),
            disks: base.join(format!("{name}.disks")),
        }
    }
}

/// The driver's side of one running VM: its QMP connection (made once,
/// at start or at the first need after a daemon restart), its guest
/// agent client (likewise) and what it knows of its end.
#[derive(Debug)]
pub(super) struct Link {
    pub(super) name: String,
    /// qemu's pid: its SELinux context labels the QMP connection.
    pub(super) pid: i32,
    pub(super) files: Files,
    pub(super) qmp: OnceCell<Qmp>,
    agent: OnceLock<Arc<Agent>>,
    pub(super) record: Mutex<ExitRecord>,
    /// When qemu last reported a reset of the machine.
    last_reset: Mutex<Option<Instant>>,
}

impl Link {
    pub(super) fn new(name: &str, pid: i32, files: Files, record: ExitRecord) -> Link {
        Link {
            name: name.to_owned(),
            pid,
            files,
            qmp: OnceCell::new(),
            agent: OnceLock::new(),
            record: Mutex::new(record),
            last_reset: Mutex::new(None),
        }
    }

    /// A QMP command's answer within [`QMP_TIMEOUT`].
    pub(super) async fn bounded<T>(
        &self,
        command: impl Future<Output = Result<T, QmpError>>,
    ) -> Result<T, QemuError> {
        tokio::time::timeout(QMP_TIMEOUT, command)
            .await
            .map_err(|_| QemuError::QmpTimeout {
                domain: self.name.clone(),
            })?
            .map_err(|source| QemuError::Qmp {
                domain: self.name.clone(),
                source,
            })
    }

    /// Resets the machine as its reset button does, also under
    /// `-no-reboot` (`on_reboot` other than restart), where qemu makes
    /// every reset request a shutdown: the reboot action is `reset` for
    /// the moment. SeaBIOS, finding itself initialised already, resets the
    /// machine once or twice more by itself within ~0.1 s; the action goes
    /// back to `shutdown` only once the machine has run `QUIET` without a
    /// reset (at most `SETTLE_LIMIT` after the request), so that those are
    /// not taken for the guest's own reboot.
    pub(super) async fn reset_machine(
        self: &Arc<Link>,
        reboot_is_shutdown: bool,
    ) -> Result<(), QemuError> {
        const QUIET: Duration = Duration::from_secs(1);
        const SETTLE_LIMIT: Duration = Duration::from_secs(10);
        let qmp = self.qmp().await?;
        if !reboot_is_shutdown {
            return self.bounded(qmp.system_reset()).await;
        }
        self.bounded(qmp.set_reboot_action("reset")).await?;
        let asked = Instant::now();
        let reset = self.bounded(qmp.system_reset()).await;
        if reset.is_ok() {
            loop {
                let since = self
                    .last_reset
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .filter(|at| *at >= asked)
                    .unwrap_or(asked);
                let quiet_until = since + QUIET;
                let now = Instant::now();
                if now >= quiet_until || now >= asked + SETTLE_LIMIT {
                    break;
                }
                tokio::time::sleep(quiet_until - now).await;
            }
        }
        let restored = self.bounded(qmp.set_reboot_action("shutdown")).await;
        reset.and(restored)
    }

    /// Records what the driver learnt, durably before acting on it.
    pub(super) fn note(&self, change: impl FnOnce(&mut ExitRecord)) {
        let mut record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut record);
        if let Err(error) =
            persist::write_versioned(&self.files.exit, &*record, 0o600, Durability::Durable)
        {
            tracing::warn!(domain = %self.name, error = %error_chain(&error), "cannot record how the VM ends");
        }
    }

    /// The QMP connection, made on first use; its events go to a task
    /// that acts on them.
    pub(super) async fn qmp(self: &Arc<Link>) -> Result<Qmp, QemuError> {
        let link = Arc::clone(self);
        self.qmp
            .get_or_try_init(|| async move {
                let connect = async {
                    let stream =
                        connect_as_qemu(&link.files.qmp, link.pid)
                            .await
                            .map_err(|source| QmpError::Connect {
                                path: link.files.qmp.clone(),
                                source,
                            })?;
                    Qmp::handshake(stream).await
                };
                let (qmp, events) = tokio::time::timeout(QMP_TIMEOUT, connect)
                    .await
                    .map_err(|_| QemuError::QmpTimeout {
                        domain: link.name.clone(),
                    })?
                    .map_err(|source| QemuError::Qmp {
                        domain: link.name.clone(),
                        source,
                    })?;
                tokio::spawn(Arc::clone(&link).watch(qmp.clone(), events));
                Ok(qmp)
            })
            .await
            .cloned()
    }

    /// The client of the guest agent, when the VM has its channel; it
    /// connects at its first command, as QMP does.
    pub(super) fn agent(&self) -> Option<Arc<Agent>> {
        if let Some(agent) = self.agent.get() {
            return Some(Arc::clone(agent));
        }
        // qemu made the socket as it started, if the definition has one.
        std::fs::symlink_metadata(&self.files.agent).ok()?;
        let (path, pid) = (self.files.agent.clone(), self.pid);
        let connector: Connector = Arc::new(move || {
            let path = path.clone();
            Box::pin(async move { connect_as_qemu(&path, pid).await })
        });
        let agent = self.agent.get_or_init(|| {
            Arc::new(Agent::with_connector(
                &self.name,
                &self.files.agent,
                connector,
            ))
        });
        Some(Arc::clone(agent))
    }

    /// Acts on qemu's events until it closes the connection: a guest that
    /// powered off (or rebooted under `-no-reboot`, or panicked) has its
    /// end recorded and its qemu told to quit.
    pub(super) async fn watch(self: Arc<Link>, qmp: Qmp, mut events: Events) {
        // What happened while nobody listened (a restarted daemon).
        match qmp.query_status().await {
            Ok(RunState::Shutdown) => self.guest_ended(&qmp, GuestEnd::PoweredOff).await,
            Ok(RunState::GuestPanicked) => self.guest_ended(&qmp, GuestEnd::Panicked).await,
            _ => {}
        }
        while let Some(event) = events.recv().await {
            let end = match event.kind() {
                EventKind::Shutdown {
                    guest: true,
                    reason,
                } => Some(match reason {
                    ShutdownCause::GuestReset => GuestEnd::Rebooted,
                    ShutdownCause::GuestPanic => GuestEnd::Panicked,
                    _ => GuestEnd::PoweredOff,
                }),
                EventKind::Shutdown {
                    guest: false,
                    reason: ShutdownCause::HostSignal,
                } => Some(GuestEnd::HostSignal),
                EventKind::GuestPanicked { .. } => Some(GuestEnd::Panicked),
                EventKind::Reset { guest, .. } => {
                    *self
                        .last_reset
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                    if guest {
                        tracing::info!(domain = %self.name, "the guest rebooted");
                    }
                    None
                }
                _ => None,
            };
            if let Some(end) = end {
                self.guest_ended(&qmp, end).await;
            }
        }
    }

    pub(super) async fn guest_ended(&self, qmp: &Qmp, end: GuestEnd) {
        tracing::info!(domain = %self.name, end = ?end, "the guest ended");
        self.note(|record| {
            record.guest.get_or_insert(end);
        });
        // The connection closing (qemu exiting) is the answer.
        let _ = tokio::time::timeout(QMP_TIMEOUT, qmp.quit()).await;
    }
}

/// Connects to qemu's QMP socket from a socket with qemu's own SELinux
/// context (`setsockcreatecon`), as libvirt does: the kernel gives the
/// server's end of a connection the client's level, and a confined qemu
/// may not use a socket at lxvirtd's (all its categories). Without SELinux
/// (no context to read) the socket is made as usual.
pub(super) async fn connect_as_qemu(
    path: &Path,
    pid: i32,
) -> std::io::Result<tokio::net::UnixStream> {
    let path = path.to_owned();
    let stream = tokio::task::spawn_blocking(move || {
        let context = crate::sys::linux::process_label(pid).ok();
        let _creating = match context.as_deref() {
            Some(context) if !context.is_empty() => {
                Some(crate::sys::linux::SocketCreateLabel::set(context)?)
            }
            _ => None,
        };
        let stream = std::os::unix::net::UnixStream::connect(&path)?;
        stream.set_nonblocking(true)?;
        Ok::<_, std::io::Error>(stream)
    })
    .await
    .map_err(std::io::Error::other)??;
    tokio::net::UnixStream::from_std(stream)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// What the core is told, from what the driver recorded: a request
    /// wins over what the guest did meanwhile; nothing recorded is a
    /// crash.
    #[test]
    fn exit_records_decide_the_end() {
        let record = |requested, guest| ExitRecord { requested, guest };
        let cases = [
            (record(Some(Requested::Destroy), None), Exit::Destroyed),
            (
                record(Some(Requested::Shutdown), Some(GuestEnd::PoweredOff)),
                Exit::Shutdown,
            ),
            (record(None, Some(GuestEnd::PoweredOff)), Exit::PoweredOff),
            (record(None, Some(GuestEnd::Rebooted)), Exit::Rebooted),
            (record(None, Some(GuestEnd::Panicked)), Exit::Crashed),
            (record(None, Some(GuestEnd::HostSignal)), Exit::Shutdown),
            (
                record(Some(Requested::Destroy), Some(GuestEnd::HostSignal)),
                Exit::Destroyed,
            ),
            (record(None, None), Exit::Crashed),
        ];
        for (record, exit) in cases {
            assert_eq!(record.exit(), exit, "{record:?}");
        }
    }

    /// The record is a versioned file a restarted daemon reads back.
    #[test]
    fn the_exit_record_survives_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(dir.path(), "vm");
        std::fs::create_dir_all(files.exit.parent().unwrap()).unwrap();
        let link = Link::new("vm", 1, files.clone(), ExitRecord::default());
        link.note(|r| r.guest = Some(GuestEnd::Panicked));
        link.note(|r| r.requested = Some(Requested::Destroy));
        let read: ExitRecord = persist::read_versioned(&files.exit).unwrap();
        assert_eq!(
            read,
            ExitRecord {
                requested: Some(Requested::Destroy),
                guest: Some(GuestEnd::Panicked),
            }
        );
        let text = std::fs::read_to_string(&files.exit).unwrap();
        assert!(text.contains("\"panicked\""), "{text}");
    }
}
