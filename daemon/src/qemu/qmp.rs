//! A client of the QEMU Machine Protocol (QMP), on the daemon's tokio.
//!
//! QMP is JSON over a stream socket, one message a line. QEMU greets
//! first (`{"QMP": {"version": …}}`); the client answers with
//! `qmp_capabilities`, after which QEMU takes commands
//! (`{"execute": NAME, "arguments": {…}, "id": N}`) and answers each with
//! `{"return": …, "id": N}` or `{"error": {"class", "desc"}, "id": N}`,
//! sending events (`{"event": NAME, "data": {…}, "timestamp": {…}}`) at
//! any time in between.
//!
//! ```text
//!   Qmp (Clone) ──execute──▶ writer task ──lines──▶ ┐
//!        ▲                                          │ QEMU's -qmp socket
//!        └── oneshot by id ── reader task ◀─lines── ┘
//!                                  └──events──▶ Events
//! ```
//!
//! - Every command carries an id of its own; one reader task hands each
//!   reply to the command with that id, so commands from several tasks
//!   may be in flight at once and events may come between them. (QEMU
//!   runs commands one after another as long as out-of-band execution,
//!   which this client does not ask for, is off; matching by id does not
//!   rely on that.)
//! - Lines go out through one writer task, so a caller that gives up
//!   half way (a dropped future) never leaves half a line on the socket;
//!   its id is forgotten and a late reply to it is dropped.
//! - When QEMU closes the socket (it exits, or resets the connection as
//!   it does on `quit`), every waiting and every later command fails with
//!   [`QmpError::Closed`] and the [`Events`] end. A line that is not a
//!   JSON object, or longer than [`MAX_LINE`], ends the connection the
//!   same way with [`QmpError::Protocol`]: QEMU never sends one, so the
//!   stream cannot be trusted after it.
//! - There is no timeout inside: a command waits for its reply as long as
//!   QEMU lives, and some take long by design (a migration, a savevm).
//!   The caller bounds what it must (`tokio::time::timeout` around
//!   [`Qmp::connect`] or [`Qmp::execute`]; dropping the future is safe).
//!   The same holds for the greeting: QEMU serves one QMP client a
//!   socket, and a second one connects but is never greeted.
//! - Events queue without bound until read: QEMU sends few (it throttles
//!   the chatty ones, such as `RTC_CHANGE`), and dropping a `SHUTDOWN`
//!   because the core was busy would lose a lifecycle event. Dropping
//!   every [`Qmp`] clone ends the connection and the events.
//!
//! Why a client of our own rather than the `qapi` crate: the driver needs
//! a dozen commands and six events, not all of QAPI. `qapi` (0.15) puts
//! its async tokio support behind features of its own (`async-tokio-net`,
//! `async-tokio-spawn`, …; none are on by default), and its QMP types
//! (`qapi-qmp`) are generated at build time by `qapi-codegen` from a copy
//! of QEMU's schema that the crate carries, so they follow that copy
//! rather than the QEMU a host runs; every command and event of QEMU
//! would be compiled into the daemon. Here one module on the daemon's
//! own tokio, serde_json and thiserror does it, adds no dependency,
//! routes events to the core as plain values, and is tested against a
//! fake peer and a real QEMU below. Descriptor passing (`getfd`) is not
//! needed yet.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Longest line read from QEMU. Its largest answers (`query-qmp-schema`,
/// a few hundred KiB) fit many times over.
pub const MAX_LINE: usize = 8 * 1024 * 1024;

/// What can go wrong talking QMP.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to the QMP socket {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read QEMU's QMP greeting")]
    Greeting(#[source] io::Error),
    /// The connection is gone: QEMU exited or closed its monitor.
    #[error("the QMP connection to QEMU is closed; QEMU exited or closed its monitor")]
    Closed,
    /// QEMU sent something that is not QMP; the connection is closed.
    #[error("QEMU sent a message that is not QMP ({reason}); the connection is closed")]
    Protocol { reason: String },
    /// QEMU answered the command with an error.
    #[error("QMP command '{command}' failed: {desc} ({class})")]
    Command {
        command: String,
        /// QAPI's error class (`GenericError`, `DeviceNotActive`, …).
        class: String,
        desc: String,
    },
    /// QEMU answered, but not with what a typed helper expects.
    #[error("QMP command '{command}' returned an unexpected value: {reason}")]
    Reply { command: String, reason: String },
}

/// QEMU's version, from its greeting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct QemuVersion {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
    /// The distribution's package version (`Debian 1:7.2+dfsg-7`), or
    /// empty.
    #[serde(skip)]
    pub package: String,
}

impl fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// QEMU's run state (QAPI `RunState`), as `query-status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    Debug,
    Inmigrate,
    InternalError,
    IoError,
    Paused,
    Postmigrate,
    /// Started with `-S`, waiting for `cont`.
    Prelaunch,
    FinishMigrate,
    RestoreVm,
    Running,
    SaveVm,
    /// The guest shut down and QEMU runs on (`-no-shutdown`).
    Shutdown,
    /// Suspended to RAM (ACPI S3).
    Suspended,
    Watchdog,
    GuestPanicked,
    Colo,
    /// A state this client does not know (a newer QEMU's).
    #[serde(untagged)]
    Other(String),
}

/// Why QEMU shut down or reset (QAPI `ShutdownCause`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShutdownCause {
    #[default]
    None,
    HostError,
    /// `quit` on the monitor.
    HostQmpQuit,
    HostQmpSystemReset,
    /// QEMU got SIGTERM, SIGINT or SIGHUP.
    HostSignal,
    HostUi,
    /// The guest powered itself off.
    GuestShutdown,
    /// The guest rebooted.
    GuestReset,
    GuestPanic,
    SubsystemReset,
    SnapshotLoad,
    /// A cause this client does not know (a newer QEMU's).
    #[serde(untagged)]
    Other(String),
}

/// When QEMU sent an event (host wall clock).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Timestamp {
    pub seconds: i64,
    pub microseconds: i64,
}

/// An event QEMU sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `SHUTDOWN`, `STOP`, …
    pub name: String,
    /// The event's data; `Null` when it has none.
    pub data: Value,
    pub timestamp: Timestamp,
}

/// The events the driver acts on, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// QEMU is shutting down: it exits next, unless run with
    /// `-no-shutdown`. `guest` says the guest asked for it.
    Shutdown { guest: bool, reason: ShutdownCause },
    /// `system_powerdown` was asked: the guest is told to power off.
    Powerdown,
    /// The machine was reset.
    Reset { guest: bool, reason: ShutdownCause },
    /// The guest's CPUs stopped.
    Stop,
    /// The guest's CPUs run again.
    Resume,
    /// The guest reported a panic; `action` is what QEMU does about it
    /// (`pause`, `poweroff`, `run`).
    GuestPanicked { action: String },
    /// Any other event: see its name and data.
    Other,
}

/// The data of `SHUTDOWN` and `RESET`.
#[derive(Debug, Default, Deserialize)]
struct CauseData {
    #[serde(default)]
    guest: bool,
    #[serde(default)]
    reason: ShutdownCause,
}

/// The data of `GUEST_PANICKED`.
#[derive(Debug, Default, Deserialize)]
struct PanicData {
    #[serde(default)]
    action: String,
}

impl Event {
    /// The event decoded; data that does not decode reads as its defaults
    /// (an event is news, not an answer: it is not refused).
    pub fn kind(&self) -> EventKind {
        match self.name.as_str() {
            "SHUTDOWN" => {
                let CauseData { guest, reason } = self.decode_data();
                EventKind::Shutdown { guest, reason }
            }
            "POWERDOWN" => EventKind::Powerdown,
            "RESET" => {
                let CauseData { guest, reason } = self.decode_data();
                EventKind::Reset { guest, reason }
            }
            "STOP" => EventKind::Stop,
            "RESUME" => EventKind::Resume,
            "GUEST_PANICKED" => EventKind::GuestPanicked {
                action: self.decode_data::<PanicData>().action,
            },
            _ => EventKind::Other,
        }
    }

    fn decode_data<T: DeserializeOwned + Default>(&self) -> T {
        T::deserialize(&self.data).unwrap_or_default()
    }
}

/// A character device (`query-chardev`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Chardev {
    /// Its id (`serial0`, `charserial0`).
    pub label: String,
    /// What it is connected to: `pty:/dev/pts/3`, `unix:PATH,server=on`, …
    pub filename: String,
    /// A device has it open.
    #[serde(rename = "frontend-open", default)]
    pub frontend_open: bool,
}

impl Chardev {
    /// The pty a `pty` chardev made (a serial console's).
    pub fn pty_path(&self) -> Option<&Path> {
        self.filename.strip_prefix("pty:").map(Path::new)
    }
}

/// The balloon's view of the guest's memory (`query-balloon`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct BalloonInfo {
    /// Memory the guest has now, bytes.
    pub actual: u64,
}

/// Counters of one block device (`query-blockstats`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BlockStats {
    /// The drive's id; empty for a `-blockdev` without a `-drive`, which
    /// `qdev` or `node_name` names.
    #[serde(default)]
    pub device: String,
    #[serde(rename = "node-name", default)]
    pub node_name: Option<String>,
    /// The device model's QOM path or id.
    #[serde(default)]
    pub qdev: Option<String>,
    pub stats: BlockCounters,
}

/// Traffic of one block device since QEMU started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct BlockCounters {
    pub rd_bytes: u64,
    pub wr_bytes: u64,
    pub rd_operations: u64,
    pub wr_operations: u64,
    #[serde(default)]
    pub flush_operations: u64,
}

/// A block device as `query-block` shows it: a device model and the
/// node graph it reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BlockInfo {
    /// The device model's id or QOM path (a `-blockdev` has no drive id).
    #[serde(default)]
    pub qdev: Option<String>,
    /// The medium; `None` for an empty drive.
    #[serde(default)]
    pub inserted: Option<BlockInserted>,
}

/// The medium of a block device (`query-block`'s `inserted`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BlockInserted {
    /// The top node the device reads.
    #[serde(rename = "node-name", default)]
    pub node_name: Option<String>,
    /// Read-only.
    pub ro: bool,
    pub image: ImageInfo,
}

/// One image of a chain, its backing image under it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ImageInfo {
    pub filename: String,
    /// `raw`, `qcow2`, …
    pub format: String,
    #[serde(rename = "backing-image", default)]
    pub backing_image: Option<Box<ImageInfo>>,
}

/// The VNC server (`query-vnc`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VncInfo {
    pub enabled: bool,
    /// `ipv4`, `ipv6`, `unix`, …
    #[serde(default)]
    pub family: Option<String>,
    /// The address, or a unix socket's path.
    #[serde(default)]
    pub host: Option<String>,
}

/// A property of a QOM object (`qom-list`); a device's children are
/// `child<TYPE>` properties named by their id.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct QomProperty {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// The events of one connection, in the order QEMU sent them. `recv`
/// yields `None` once the connection is closed and all were read.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl Events {
    /// The next event; `None` when the connection is closed. Cancel-safe:
    /// an event is not lost when a `select!` takes another branch.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

/// A QMP connection. Clones share it; commands from several tasks may be
/// in flight at once.
#[derive(Debug, Clone)]
pub struct Qmp {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    version: QemuVersion,
    state: Arc<Mutex<State>>,
    /// Whole lines, for the writer task.
    outgoing: mpsc::UnboundedSender<Vec<u8>>,
    next_id: AtomicU64,
    reader: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Nobody can send a command any more: stop reading, which ends
        // the events. The writer task ends with the channel, closing
        // our half of the socket.
        self.reader.abort();
    }
}

/// Why a connection ended.
#[derive(Debug, Clone)]
enum End {
    Closed,
    Protocol(String),
}

impl From<End> for QmpError {
    fn from(end: End) -> QmpError {
        match end {
            End::Closed => QmpError::Closed,
            End::Protocol(reason) => QmpError::Protocol { reason },
        }
    }
}

/// What a waiting command gets.
#[derive(Debug)]
enum Answer {
    Return(Value),
    Error { class: String, desc: String },
    Ended(End),
}

/// The commands waiting for a reply, shared by the client and its tasks.
#[derive(Debug, Default)]
struct State {
    waiting: HashMap<u64, oneshot::Sender<Answer>>,
    /// Set once, when the connection ends.
    ended: Option<End>,
}

impl State {
    /// Ends the connection: every waiting command fails with `why`, and
    /// so does every later one (with the first reason given).
    fn end(&mut self, why: End) {
        let why = self.ended.get_or_insert(why).clone();
        for (_, waiter) in self.waiting.drain() {
            // A waiter that gave up has nothing to be told.
            let _ = waiter.send(Answer::Ended(why.clone()));
        }
    }
}

/// The state stays consistent across a panic (a map and a flag), so a
/// poisoned lock is used as it is.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Forgets a command's id when its caller stops waiting.
struct Forget<'a> {
    state: &'a Mutex<State>,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.state).waiting.remove(&self.id);
    }
}

impl Qmp {
    /// Connects to QEMU's QMP socket at `path`: reads the greeting,
    /// negotiates capabilities, and returns the client and its events.
    /// Waits as long as QEMU takes to greet (see the module doc).
    pub async fn connect(path: &Path) -> Result<(Qmp, Events), QmpError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| QmpError::Connect {
                path: path.to_owned(),
                source,
            })?;
        Qmp::handshake(stream).await
    }

    /// [`Qmp::connect`] on a socket already connected to QEMU (one end of
    /// a pair whose other end QEMU got as a descriptor).
    pub async fn handshake(stream: UnixStream) -> Result<(Qmp, Events), QmpError> {
        let (read, write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let mut line = Vec::new();
        match read_line(&mut reader, &mut line).await {
            Ok(true) => {}
            Ok(false) => return Err(QmpError::Closed),
            Err(ReadError::Io(error)) => return Err(QmpError::Greeting(error)),
            Err(ReadError::End(end)) => return Err(end.into()),
        }
        let version = parse_greeting(&line)?;
        tracing::debug!(qemu = %version, "QMP greeting");

        let state = Arc::new(Mutex::new(State::default()));
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(write, outgoing_rx, Arc::clone(&state)));
        let reader = tokio::spawn(read_loop(reader, Arc::clone(&state), events_tx));
        let qmp = Qmp {
            inner: Arc::new(Inner {
                version,
                state,
                outgoing,
                next_id: AtomicU64::new(0),
                reader,
            }),
        };
        qmp.execute("qmp_capabilities", None).await?;
        Ok((qmp, Events { rx: events_rx }))
    }

    /// The version QEMU gave in its greeting.
    pub fn version(&self) -> &QemuVersion {
        &self.inner.version
    }

    /// Runs `command` and returns what QEMU returned. Waits as long as
    /// QEMU takes: bound it with a timeout where needed (dropping the
    /// future is safe).
    pub async fn execute(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut request = serde_json::json!({ "execute": command, "id": id });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut line = request.to_string().into_bytes();
        line.push(b'\n');

        let (tx, rx) = oneshot::channel();
        {
            // Registered before the line goes out: the reply may come
            // before this task runs again.
            let mut state = lock(&self.inner.state);
            if let Some(end) = &state.ended {
                return Err(end.clone().into());
            }
            state.waiting.insert(id, tx);
        }
        let _forget = Forget {
            state: &self.inner.state,
            id,
        };
        if self.inner.outgoing.send(line).is_err() {
            // The writer task ended, after ending the connection.
            return Err(self.ended());
        }
        tracing::trace!(command, id, "QMP command sent");
        match rx.await {
            Ok(Answer::Return(value)) => Ok(value),
            Ok(Answer::Error { class, desc }) => Err(QmpError::Command {
                command: command.to_owned(),
                class,
                desc,
            }),
            Ok(Answer::Ended(end)) => Err(end.into()),
            // Dropped unanswered: the reader task is gone.
            Err(_) => Err(self.ended()),
        }
    }

    /// Why the connection ended (`Closed` if it does not say).
    fn ended(&self) -> QmpError {
        lock(&self.inner.state)
            .ended
            .clone()
            .unwrap_or(End::Closed)
            .into()
    }

    /// Runs `command` and decodes what it returned.
    async fn call<T: DeserializeOwned>(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<T, QmpError> {
        let value = self.execute(command, arguments).await?;
        T::deserialize(value).map_err(|error| QmpError::Reply {
            command: command.to_owned(),
            reason: error.to_string(),
        })
    }

    /// Runs `command`, which returns nothing of interest.
    async fn run(&self, command: &str) -> Result<(), QmpError> {
        self.execute(command, None).await.map(drop)
    }

    /// The guest's run state.
    pub async fn query_status(&self) -> Result<RunState, QmpError> {
        #[derive(Deserialize)]
        struct StatusInfo {
            status: RunState,
        }
        let info: StatusInfo = self.call("query-status", None).await?;
        Ok(info.status)
    }

    /// Starts or resumes the guest's CPUs (`RESUME` follows).
    pub async fn cont(&self) -> Result<(), QmpError> {
        self.run("cont").await
    }

    /// Pauses the guest's CPUs (`STOP` follows).
    pub async fn stop(&self) -> Result<(), QmpError> {
        self.run("stop").await
    }

    /// Presses the power button (ACPI): a guest that listens shuts down;
    /// `POWERDOWN` follows either way.
    pub async fn system_powerdown(&self) -> Result<(), QmpError> {
        self.run("system_powerdown").await
    }

    /// Resets the machine (`RESET` follows).
    pub async fn system_reset(&self) -> Result<(), QmpError> {
        self.run("system_reset").await
    }

    /// What QEMU does when the machine is reset: `reset` it, or
    /// `shutdown` (as `-no-reboot` says).
    pub async fn set_reboot_action(&self, action: &str) -> Result<(), QmpError> {
        self.execute("set-action", Some(serde_json::json!({ "reboot": action })))
            .await
            .map(drop)
    }

    /// Makes QEMU exit. QEMU may close the socket before its reply
    /// arrives, so a closed connection counts as done.
    pub async fn quit(&self) -> Result<(), QmpError> {
        match self.run("quit").await {
            Err(QmpError::Closed) => Ok(()),
            result => result,
        }
    }

    /// The character devices (a serial console's pty among them).
    pub async fn query_chardev(&self) -> Result<Vec<Chardev>, QmpError> {
        self.call("query-chardev", None).await
    }

    /// The balloon's view of guest memory; `None` when the guest has no
    /// balloon device.
    pub async fn query_balloon(&self) -> Result<Option<BalloonInfo>, QmpError> {
        match self.call("query-balloon", None).await {
            Ok(info) => Ok(Some(info)),
            Err(QmpError::Command { class, .. }) if class == "DeviceNotActive" => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Asks the guest's balloon to leave it `bytes` of memory.
    pub async fn balloon(&self, bytes: u64) -> Result<(), QmpError> {
        self.execute("balloon", Some(serde_json::json!({ "value": bytes })))
            .await
            .map(drop)
    }

    /// Sets the link of the NIC (or netdev) `id` up or down, as the guest
    /// sees its carrier.
    pub async fn set_link(&self, id: &str, up: bool) -> Result<(), QmpError> {
        self.execute(
            "set_link",
            Some(serde_json::json!({ "name": id, "up": up })),
        )
        .await
        .map(drop)
    }

    /// Counters of every block device.
    pub async fn query_blockstats(&self) -> Result<Vec<BlockStats>, QmpError> {
        self.call("query-blockstats", None).await
    }

    /// The block devices and what they read.
    pub async fn query_block(&self) -> Result<Vec<BlockInfo>, QmpError> {
        self.call("query-block", None).await
    }

    /// The VNC server's state and address.
    pub async fn query_vnc(&self) -> Result<VncInfo, QmpError> {
        self.call("query-vnc", None).await
    }

    /// The properties of the QOM object at `path` (such as
    /// `/machine/peripheral`, whose children are the devices with an id).
    pub async fn qom_list(&self, path: &str) -> Result<Vec<QomProperty>, QmpError> {
        self.call("qom-list", Some(serde_json::json!({ "path": path })))
            .await
    }

    /// Runs a human monitor (HMP) command and returns its output. For
    /// what QMP lacks; its output is for people, not a stable format.
    pub async fn human_monitor_command(&self, command_line: &str) -> Result<String, QmpError> {
        let arguments = serde_json::json!({ "command-line": command_line });
        self.call("human-monitor-command", Some(arguments)).await
    }
}

/// Why a line could not be read.
#[derive(Debug)]
enum ReadError {
    Io(io::Error),
    End(End),
}

/// Reads one line into `line`, without its newline: false at the end of
/// the stream (a last line without a newline is cut short, and dropped).
async fn read_line(
    reader: &mut BufReader<OwnedReadHalf>,
    line: &mut Vec<u8>,
) -> Result<bool, ReadError> {
    line.clear();
    // One byte over the limit tells a long line from one just at it.
    let limit = MAX_LINE as u64 + 1;
    (&mut *reader)
        .take(limit)
        .read_until(b'\n', line)
        .await
        .map_err(ReadError::Io)?;
    if line.pop() == Some(b'\n') {
        return Ok(true);
    }
    if line.len() >= MAX_LINE {
        return Err(ReadError::End(End::Protocol(format!(
            "a line longer than {MAX_LINE} bytes"
        ))));
    }
    Ok(false)
}

/// QEMU's version from its greeting line.
fn parse_greeting(line: &[u8]) -> Result<QemuVersion, QmpError> {
    #[derive(Deserialize)]
    struct Greeting {
        #[serde(rename = "QMP")]
        qmp: GreetingBody,
    }
    #[derive(Deserialize)]
    struct GreetingBody {
        version: VersionInfo,
    }
    #[derive(Deserialize)]
    struct VersionInfo {
        qemu: QemuVersion,
        #[serde(default)]
        package: String,
    }
    let greeting: Greeting = serde_json::from_slice(line).map_err(|error| QmpError::Protocol {
        reason: format!("the first message is not a QMP greeting: {error}"),
    })?;
    let VersionInfo { mut qemu, package } = greeting.qmp.version;
    qemu.package = package.trim().to_owned();
    Ok(qemu)
}

/// A message from QEMU after the greeting.
#[derive(Debug)]
enum Message {
    Reply {
        id: u64,
        answer: Answer,
    },
    Event(Event),
    /// Not for this client; why, for the log.
    Ignored(&'static str),
}

/// Decodes one line; an error is a line that is not a JSON object.
fn parse_message(line: &[u8]) -> Result<Message, End> {
    let mut object = match serde_json::from_slice(line) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return Err(End::Protocol("a message that is not a JSON object".into())),
        Err(error) => return Err(End::Protocol(format!("a line that is not JSON: {error}"))),
    };
    if let Some(name) = object.remove("event") {
        let Value::String(name) = name else {
            return Ok(Message::Ignored("an event without a name"));
        };
        let timestamp = object
            .remove("timestamp")
            .and_then(|t| Timestamp::deserialize(t).ok())
            .unwrap_or_default();
        let data = object.remove("data").unwrap_or(Value::Null);
        return Ok(Message::Event(Event {
            name,
            data,
            timestamp,
        }));
    }
    let answer = if let Some(value) = object.remove("return") {
        Answer::Return(value)
    } else if let Some(error) = object.remove("error") {
        #[derive(Deserialize)]
        struct ErrorBody {
            #[serde(default)]
            class: String,
            #[serde(default)]
            desc: String,
        }
        match ErrorBody::deserialize(&error) {
            Ok(ErrorBody { class, desc }) => Answer::Error { class, desc },
            Err(_) => Answer::Error {
                class: String::new(),
                desc: error.to_string(),
            },
        }
    } else if object.contains_key("QMP") {
        return Ok(Message::Ignored("a second greeting"));
    } else {
        return Ok(Message::Ignored("neither a reply nor an event"));
    };
    // Ours are numbers; a reply without one answers a line QEMU could not
    // parse, which this client does not send.
    match object.get("id").and_then(Value::as_u64) {
        Some(id) => Ok(Message::Reply { id, answer }),
        None => Ok(Message::Ignored("a reply without an id of ours")),
    }
}

/// Hands replies to their commands and events to [`Events`] until the
/// connection ends, then fails whatever still waits.
async fn read_loop(
    mut reader: BufReader<OwnedReadHalf>,
    state: Arc<Mutex<State>>,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut line = Vec::new();
    let end = loop {
        match read_line(&mut reader, &mut line).await {
            Ok(true) => {}
            Ok(false) => break End::Closed,
            // QEMU resets the connection as it exits on `quit`: closed,
            // like an end of stream.
            Err(ReadError::Io(error)) => {
                tracing::debug!(%error, "QMP connection read failed");
                break End::Closed;
            }
            Err(ReadError::End(end)) => break end,
        }
        match parse_message(&line) {
            Ok(Message::Reply { id, answer }) => {
                let waiter = lock(&state).waiting.remove(&id);
                match waiter {
                    // A caller that stopped waiting dropped its receiver.
                    Some(waiter) => {
                        let _ = waiter.send(answer);
                    }
                    None => tracing::debug!(id, "QMP reply nobody waits for"),
                }
            }
            Ok(Message::Event(event)) => {
                tracing::trace!(event = %event.name, "QMP event");
                // Nobody listening is no error.
                let _ = events.send(event);
            }
            Ok(Message::Ignored(why)) => tracing::debug!(why, "QMP message ignored"),
            Err(end) => break end,
        }
    };
    tracing::debug!(?end, "QMP connection ended");
    lock(&state).end(end);
    // Dropping `events` here ends the event stream, after the waiters
    // learned why.
}

/// Writes the lines of commands, each whole, until every client is
/// dropped or the socket fails.
async fn write_loop(
    mut writer: OwnedWriteHalf,
    mut outgoing: mpsc::UnboundedReceiver<Vec<u8>>,
    state: Arc<Mutex<State>>,
) {
    while let Some(line) = outgoing.recv().await {
        if let Err(error) = writer.write_all(&line).await {
            tracing::debug!(%error, "QMP connection write failed");
            lock(&state).end(End::Closed);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::time::Duration;

    use serde_json::json;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixStream;
    use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

    use super::{
        BalloonInfo, BlockCounters, Event, EventKind, Events, MAX_LINE, Message, Qmp, QmpError,
        RunState, ShutdownCause, Timestamp, lock, parse_message,
    };

    const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}"#;

    /// Fails the test instead of hanging it.
    async fn within<T>(future: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), future)
            .await
            .expect("timed out")
    }

    /// The QEMU end of a socket pair, speaking QMP by hand.
    struct Peer {
        reader: BufReader<OwnedReadHalf>,
        writer: OwnedWriteHalf,
    }

    impl Peer {
        fn new(stream: UnixStream) -> Peer {
            let (read, writer) = stream.into_split();
            Peer {
                reader: BufReader::new(read),
                writer,
            }
        }

        async fn send_line(&mut self, line: &str) {
            self.writer
                .write_all(format!("{line}\n").as_bytes())
                .await
                .unwrap();
        }

        async fn send(&mut self, message: serde_json::Value) {
            self.send_line(&message.to_string()).await;
        }

        /// The next command, which must be `command`.
        async fn expect(&mut self, command: &str) -> serde_json::Value {
            let mut line = String::new();
            within(self.reader.read_line(&mut line)).await.unwrap();
            let message: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(message["execute"], command, "{line}");
            message
        }

        /// Reads `command` and returns `value` to it; its arguments.
        async fn answer(&mut self, command: &str, value: serde_json::Value) -> serde_json::Value {
            let request = self.expect(command).await;
            self.send(json!({ "return": value, "id": request["id"] }))
                .await;
            request["arguments"].clone()
        }

        async fn fail(&mut self, command: &str, class: &str, desc: &str) {
            let request = self.expect(command).await;
            let error = json!({ "class": class, "desc": desc });
            self.send(json!({ "id": request["id"], "error": error }))
                .await;
        }

        fn event(name: &str, data: Option<serde_json::Value>) -> serde_json::Value {
            let mut event = json!({
                "event": name,
                "timestamp": { "seconds": 1_796_384_275, "microseconds": 128_577 },
            });
            if let Some(data) = data {
                event["data"] = data;
            }
            event
        }
    }

    /// A client connected to a peer that greeted it and took its
    /// capabilities.
    async fn connected() -> (Qmp, Events, Peer) {
        let (client, server) = UnixStream::pair().unwrap();
        let mut peer = Peer::new(server);
        let serve = async {
            peer.send_line(GREETING).await;
            let arguments = peer.answer("qmp_capabilities", json!({})).await;
            assert!(arguments.is_null(), "{arguments}");
        };
        let (connected, ()) = within(async { tokio::join!(Qmp::handshake(client), serve) }).await;
        let (qmp, events) = connected.unwrap();
        (qmp, events, peer)
    }

    /// Runs `command` on a task of its own, as another user of the
    /// connection would.
    fn spawn_execute(
        qmp: &Qmp,
        command: &'static str,
    ) -> tokio::task::JoinHandle<Result<serde_json::Value, QmpError>> {
        let qmp = qmp.clone();
        tokio::spawn(async move { qmp.execute(command, None).await })
    }

    #[tokio::test]
    async fn handshake_keeps_the_version_and_negotiates_capabilities() {
        let (qmp, _events, _peer) = connected().await;
        let version = qmp.version();
        assert_eq!((version.major, version.minor, version.micro), (7, 2, 22));
        assert_eq!(version.package, "Debian 1:7.2+dfsg-7+deb12u18+b3");
        assert_eq!(version.to_string(), "7.2.22");
    }

    #[tokio::test]
    async fn handshake_fails_without_a_greeting_or_capabilities() {
        // Something that is not QEMU speaks first.
        let (client, server) = UnixStream::pair().unwrap();
        let mut peer = Peer::new(server);
        peer.send_line(r#"{"return": {}}"#).await;
        let error = within(Qmp::handshake(client)).await.unwrap_err();
        assert!(matches!(error, QmpError::Protocol { .. }), "{error:?}");

        // QEMU goes away before it greets.
        let (client, server) = UnixStream::pair().unwrap();
        drop(server);
        let error = within(Qmp::handshake(client)).await.unwrap_err();
        assert!(matches!(error, QmpError::Closed), "{error:?}");

        // QEMU refuses the capabilities.
        let (client, server) = UnixStream::pair().unwrap();
        let mut peer = Peer::new(server);
        let serve = async {
            peer.send_line(GREETING).await;
            peer.fail("qmp_capabilities", "GenericError", "no").await;
        };
        let (result, ()) = within(async { tokio::join!(Qmp::handshake(client), serve) }).await;
        let error = result.unwrap_err();
        assert!(
            matches!(&error, QmpError::Command { command, .. } if command == "qmp_capabilities"),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn connect_names_the_socket_it_cannot_reach() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.sock");
        let error = Qmp::connect(&path).await.unwrap_err();
        assert!(error.to_string().contains("absent.sock"), "{error}");
    }

    #[tokio::test]
    async fn replies_out_of_order_reach_their_commands_across_tasks() {
        let (qmp, mut events, mut peer) = connected().await;
        let status = spawn_execute(&qmp, "query-status");
        let chardev = spawn_execute(&qmp, "query-chardev");
        // Both in flight, in whichever order the tasks ran.
        let mut ids = std::collections::HashMap::new();
        for _ in 0..2 {
            let mut line = String::new();
            within(peer.reader.read_line(&mut line)).await.unwrap();
            let request: serde_json::Value = serde_json::from_str(&line).unwrap();
            ids.insert(
                request["execute"].as_str().unwrap().to_owned(),
                request["id"].clone(),
            );
        }
        assert_ne!(ids["query-status"], ids["query-chardev"]);
        // The later answer first, with an event between the two.
        peer.send(json!({ "return": ["chardevs"], "id": ids["query-chardev"] }))
            .await;
        peer.send(Peer::event("STOP", None)).await;
        peer.send(json!({ "id": ids["query-status"], "return": {"status": "paused"} }))
            .await;
        assert_eq!(
            within(status).await.unwrap().unwrap(),
            json!({"status": "paused"})
        );
        assert_eq!(within(chardev).await.unwrap().unwrap(), json!(["chardevs"]));
        assert_eq!(within(events.recv()).await.unwrap().kind(), EventKind::Stop);
    }

    #[tokio::test]
    async fn events_between_replies_arrive_in_order() {
        let (qmp, mut events, mut peer) = connected().await;
        let serve = async {
            let request = peer.expect("cont").await;
            peer.send(Peer::event("RESUME", None)).await;
            let data = json!({ "guest": true, "reason": "guest-shutdown" });
            peer.send(Peer::event("SHUTDOWN", Some(data))).await;
            peer.send(json!({ "return": {}, "id": request["id"] }))
                .await;
            peer.send(Peer::event("POWERDOWN", None)).await;
        };
        let (result, ()) = within(async { tokio::join!(qmp.cont(), serve) }).await;
        result.unwrap();
        let resume = within(events.recv()).await.unwrap();
        assert_eq!(resume.name, "RESUME");
        assert_eq!(resume.data, serde_json::Value::Null);
        assert_eq!(
            resume.timestamp,
            Timestamp {
                seconds: 1_796_384_275,
                microseconds: 128_577
            }
        );
        let kinds = [
            within(events.recv()).await.unwrap().kind(),
            within(events.recv()).await.unwrap().kind(),
        ];
        assert_eq!(
            kinds,
            [
                EventKind::Shutdown {
                    guest: true,
                    reason: ShutdownCause::GuestShutdown
                },
                EventKind::Powerdown
            ]
        );
    }

    #[tokio::test]
    async fn an_error_reply_is_a_command_error_and_the_connection_goes_on() {
        let (qmp, _events, mut peer) = connected().await;
        let serve = peer.fail(
            "frobnicate",
            "CommandNotFound",
            "The command frobnicate has not been found",
        );
        let (result, ()) =
            within(async { tokio::join!(qmp.execute("frobnicate", None), serve) }).await;
        match result.unwrap_err() {
            QmpError::Command {
                command,
                class,
                desc,
            } => {
                assert_eq!(command, "frobnicate");
                assert_eq!(class, "CommandNotFound");
                assert_eq!(desc, "The command frobnicate has not been found");
            }
            error => panic!("{error:?}"),
        }
        let serve = peer.answer("stop", json!({}));
        let (result, _) = within(async { tokio::join!(qmp.stop(), serve) }).await;
        result.unwrap();
    }

    #[tokio::test]
    async fn the_peer_closing_fails_commands_in_flight_and_ends_events() {
        let (qmp, mut events, mut peer) = connected().await;
        let first = spawn_execute(&qmp, "query-status");
        let second = spawn_execute(&qmp, "query-status");
        peer.expect("query-status").await;
        peer.expect("query-status").await;
        peer.send(Peer::event("STOP", None)).await;
        drop(peer);
        for waiting in [first, second] {
            let error = within(waiting).await.unwrap().unwrap_err();
            assert!(matches!(error, QmpError::Closed), "{error:?}");
        }
        // The event sent before the close is still delivered, then none.
        assert_eq!(within(events.recv()).await.unwrap().name, "STOP");
        assert!(within(events.recv()).await.is_none());
        let error = within(qmp.query_status()).await.unwrap_err();
        assert!(matches!(error, QmpError::Closed), "{error:?}");
    }

    #[tokio::test]
    async fn a_malformed_line_fails_commands_without_a_panic() {
        let (qmp, mut events, mut peer) = connected().await;
        let serve = async {
            peer.expect("query-status").await;
            peer.send_line(r#"{"return": {"status": "#).await;
        };
        let (result, ()) = within(async { tokio::join!(qmp.query_status(), serve) }).await;
        let error = result.unwrap_err();
        assert!(matches!(error, QmpError::Protocol { .. }), "{error:?}");
        assert!(within(events.recv()).await.is_none());
        // Later commands learn why, too.
        let error = within(qmp.stop()).await.unwrap_err();
        assert!(matches!(error, QmpError::Protocol { .. }), "{error:?}");
    }

    #[tokio::test]
    async fn a_line_over_the_limit_ends_the_connection() {
        let (qmp, mut events, mut peer) = connected().await;
        let serve = async {
            peer.expect("query-status").await;
            // Never ends: the client stops reading at the limit.
            let long = vec![b' '; MAX_LINE + 1];
            let _ = peer.writer.write_all(&long).await;
        };
        let (result, ()) = within(async { tokio::join!(qmp.query_status(), serve) }).await;
        match result.unwrap_err() {
            QmpError::Protocol { reason } => assert!(reason.contains("longer than"), "{reason}"),
            error => panic!("{error:?}"),
        }
        assert!(within(events.recv()).await.is_none());
    }

    #[tokio::test]
    async fn dropping_every_client_closes_the_socket_and_ends_events() {
        let (qmp, mut events, mut peer) = connected().await;
        let other = qmp.clone();
        drop(qmp);
        // A clone keeps the connection.
        let serve = peer.answer("stop", json!({}));
        let (result, _) = within(async { tokio::join!(other.stop(), serve) }).await;
        result.unwrap();
        drop(other);
        assert!(within(events.recv()).await.is_none());
        let mut line = String::new();
        let read = within(peer.reader.read_line(&mut line)).await.unwrap();
        assert_eq!(read, 0, "QEMU's end sees the client go: {line}");
    }

    #[tokio::test]
    async fn a_command_given_up_is_forgotten_and_its_late_reply_dropped() {
        let (qmp, _events, mut peer) = connected().await;
        let given_up =
            tokio::time::timeout(Duration::from_millis(50), qmp.execute("query-status", None))
                .await;
        assert!(given_up.is_err());
        assert!(lock(&qmp.inner.state).waiting.is_empty());
        let late = peer.expect("query-status").await;
        peer.send(json!({ "return": {"status": "running"}, "id": late["id"] }))
            .await;
        let serve = peer.answer("query-status", json!({"status": "paused"}));
        let (result, _) = within(async { tokio::join!(qmp.query_status(), serve) }).await;
        assert_eq!(result.unwrap(), RunState::Paused);
    }

    #[tokio::test]
    async fn typed_helpers_send_their_commands_and_decode_replies() {
        let (qmp, _events, mut peer) = connected().await;
        for (wire, state) in [
            ("prelaunch", RunState::Prelaunch),
            ("running", RunState::Running),
            ("guest-panicked", RunState::GuestPanicked),
            ("internal-error", RunState::InternalError),
            ("frobbing", RunState::Other("frobbing".into())),
        ] {
            let reply = json!({"status": wire, "running": false, "singlestep": false});
            let serve = peer.answer("query-status", reply);
            let (result, _) = within(async { tokio::join!(qmp.query_status(), serve) }).await;
            assert_eq!(result.unwrap(), state);
        }

        let chardevs = json!([
            {"frontend-open": true, "filename": "unix:/run/q.sock,server=on", "label": "compat_monitor0"},
            {"frontend-open": false, "filename": "pty:/dev/pts/7", "label": "serial0"},
        ]);
        let serve = peer.answer("query-chardev", chardevs);
        let (result, _) = within(async { tokio::join!(qmp.query_chardev(), serve) }).await;
        let chardevs = result.unwrap();
        assert_eq!(chardevs[0].pty_path(), None);
        assert_eq!(chardevs[1].label, "serial0");
        assert_eq!(
            chardevs[1].pty_path(),
            Some(std::path::Path::new("/dev/pts/7"))
        );

        let serve = peer.answer("query-balloon", json!({"actual": 67_108_864}));
        let (result, _) = within(async { tokio::join!(qmp.query_balloon(), serve) }).await;
        assert_eq!(result.unwrap(), Some(BalloonInfo { actual: 67_108_864 }));
        let serve = peer.fail(
            "query-balloon",
            "DeviceNotActive",
            "No balloon device has been activated",
        );
        let (result, ()) = within(async { tokio::join!(qmp.query_balloon(), serve) }).await;
        assert_eq!(result.unwrap(), None);

        let serve = peer.answer("set_link", json!({}));
        let (result, arguments) =
            within(async { tokio::join!(qmp.set_link("net1", false), serve) }).await;
        result.unwrap();
        assert_eq!(arguments, json!({"name": "net1", "up": false}));

        let stats = json!([{
            "device": "", "node-name": "disk0", "qdev": "/machine/peripheral/vda/virtio-backend",
            "stats": {"rd_bytes": 512, "wr_bytes": 1024, "rd_operations": 1, "wr_operations": 2,
                      "flush_operations": 3, "rd_total_time_ns": 10}
        }]);
        let serve = peer.answer("query-blockstats", stats);
        let (result, _) = within(async { tokio::join!(qmp.query_blockstats(), serve) }).await;
        let stats = result.unwrap();
        assert_eq!(stats[0].node_name.as_deref(), Some("disk0"));
        assert_eq!(
            stats[0].stats,
            BlockCounters {
                rd_bytes: 512,
                wr_bytes: 1024,
                rd_operations: 1,
                wr_operations: 2,
                flush_operations: 3,
            }
        );

        let serve = peer.answer("human-monitor-command", json!("VM status: paused\r\n"));
        let (result, arguments) =
            within(async { tokio::join!(qmp.human_monitor_command("info status"), serve) }).await;
        assert_eq!(result.unwrap(), "VM status: paused\r\n");
        assert_eq!(arguments, json!({"command-line": "info status"}));

        // A reply of the wrong shape is an error of its own.
        let serve = peer.answer("query-status", json!([]));
        let (result, _) = within(async { tokio::join!(qmp.query_status(), serve) }).await;
        let error = result.unwrap_err();
        assert!(
            matches!(&error, QmpError::Reply { command, .. } if command == "query-status"),
            "{error:?}"
        );

        for (command, run) in [
            ("cont", qmp.cont().await_boxed()),
            ("stop", qmp.stop().await_boxed()),
            ("system_powerdown", qmp.system_powerdown().await_boxed()),
            ("system_reset", qmp.system_reset().await_boxed()),
        ] {
            let serve = peer.answer(command, json!({}));
            let (result, _) = within(async { tokio::join!(run, serve) }).await;
            result.unwrap();
        }

        // QEMU may exit before its reply to quit goes out.
        let serve = async {
            peer.expect("quit").await;
            drop(peer);
        };
        let (result, ()) = within(async { tokio::join!(qmp.quit(), serve) }).await;
        result.unwrap();
    }

    /// A QEMU the test started, killed and reaped on every path.
    struct QemuChild(std::process::Child);

    impl Drop for QemuChild {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// The next event of `kind`, skipping others.
    async fn next_of_kind(events: &mut Events, kind: EventKind) -> Event {
        within(async {
            loop {
                let event = events.recv().await.expect("events ended");
                if event.kind() == kind {
                    return event;
                }
            }
        })
        .await
    }

    #[tokio::test]
    async fn real_qemu_starts_runs_pauses_and_quits() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp.sock");
        let spawned = std::process::Command::new("qemu-system-x86_64")
            .args(["-S", "-nodefaults", "-display", "none"])
            .args(["-machine", "q35,accel=tcg", "-m", "64", "-serial", "pty"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", socket.display()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("qemu.log")).unwrap())
            .spawn();
        let mut child = match spawned {
            Ok(child) => QemuChild(child),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "qemu-system-x86_64 is needed in CI for the QMP test: install qemu-system-x86"
                );
                println!("skipped: qemu-system-x86_64 is not installed");
                return;
            }
            Err(error) => panic!("cannot start qemu-system-x86_64: {error}"),
        };

        // QEMU makes the socket as it starts.
        let (qmp, mut events) = within(async {
            loop {
                match Qmp::connect(&socket).await {
                    Ok(connected) => return connected,
                    Err(QmpError::Connect { .. }) => {
                        if let Some(status) = child.0.try_wait().unwrap() {
                            let log = std::fs::read_to_string(dir.path().join("qemu.log"));
                            panic!("qemu-system-x86_64 exited ({status}) before its QMP socket was there: {log:?}");
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(error) => panic!("{error}"),
                }
            }
        })
        .await;
        assert!(qmp.version().major >= 7, "{}", qmp.version());

        assert_eq!(
            within(qmp.query_status()).await.unwrap(),
            RunState::Prelaunch
        );
        within(qmp.cont()).await.unwrap();
        next_of_kind(&mut events, EventKind::Resume).await;
        assert_eq!(within(qmp.query_status()).await.unwrap(), RunState::Running);
        within(qmp.stop()).await.unwrap();
        next_of_kind(&mut events, EventKind::Stop).await;
        assert_eq!(within(qmp.query_status()).await.unwrap(), RunState::Paused);

        let chardevs = within(qmp.query_chardev()).await.unwrap();
        let serial = chardevs.iter().find(|c| c.label == "serial0").unwrap();
        let pty = serial.pty_path().unwrap();
        assert!(pty.starts_with("/dev/pts"), "{}", pty.display());
        assert!(within(qmp.query_blockstats()).await.unwrap().is_empty());
        assert_eq!(within(qmp.query_balloon()).await.unwrap(), None);
        let info = within(qmp.human_monitor_command("info status"))
            .await
            .unwrap();
        assert!(info.contains("paused"), "{info}");
        let error = within(qmp.execute("frobnicate", None)).await.unwrap_err();
        assert!(
            matches!(&error, QmpError::Command { class, .. } if class == "CommandNotFound"),
            "{error:?}"
        );

        // No guest OS listens to ACPI: the event comes, the machine stays.
        within(qmp.system_powerdown()).await.unwrap();
        next_of_kind(&mut events, EventKind::Powerdown).await;
        within(qmp.quit()).await.unwrap();
        let shutdown = EventKind::Shutdown {
            guest: false,
            reason: ShutdownCause::HostQmpQuit,
        };
        next_of_kind(&mut events, shutdown).await;
        assert!(within(events.recv()).await.is_none());
        let error = within(qmp.query_status()).await.unwrap_err();
        assert!(matches!(error, QmpError::Closed), "{error:?}");
        let status = within(async {
            loop {
                if let Some(status) = child.0.try_wait().unwrap() {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(status.success(), "{status}");
    }

    /// Boxes a helper's future so helpers of different types share a
    /// list.
    trait AwaitBoxed<'a> {
        fn await_boxed(
            self,
        ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), QmpError>> + Send + 'a>>;
    }

    impl<'a, F: Future<Output = Result<(), QmpError>> + Send + 'a> AwaitBoxed<'a> for F {
        fn await_boxed(
            self,
        ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), QmpError>> + Send + 'a>> {
            Box::pin(self)
        }
    }

    fn event(line: &str) -> Event {
        match parse_message(line.as_bytes()) {
            Ok(Message::Event(event)) => event,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn events_decode_to_their_kinds() {
        let cases = [
            (
                r#"{"event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}"#,
                EventKind::Shutdown {
                    guest: false,
                    reason: ShutdownCause::HostQmpQuit,
                },
            ),
            (
                r#"{"event": "SHUTDOWN", "data": {"guest": true, "reason": "a-new-cause"}}"#,
                EventKind::Shutdown {
                    guest: true,
                    reason: ShutdownCause::Other("a-new-cause".into()),
                },
            ),
            // An old QEMU's SHUTDOWN, without data.
            (
                r#"{"event": "SHUTDOWN"}"#,
                EventKind::Shutdown {
                    guest: false,
                    reason: ShutdownCause::None,
                },
            ),
            (
                r#"{"event": "RESET", "data": {"guest": true, "reason": "guest-reset"}}"#,
                EventKind::Reset {
                    guest: true,
                    reason: ShutdownCause::GuestReset,
                },
            ),
            (
                r#"{"event": "GUEST_PANICKED", "data": {"action": "pause", "info": {"type": "hyper-v"}}}"#,
                EventKind::GuestPanicked {
                    action: "pause".into(),
                },
            ),
            (r#"{"event": "POWERDOWN"}"#, EventKind::Powerdown),
            (r#"{"event": "STOP"}"#, EventKind::Stop),
            (r#"{"event": "RESUME"}"#, EventKind::Resume),
            (
                r#"{"event": "RTC_CHANGE", "data": {"offset": 3}}"#,
                EventKind::Other,
            ),
        ];
        for (line, kind) in cases {
            assert_eq!(event(line).kind(), kind, "{line}");
        }
        let rtc = event(r#"{"event": "RTC_CHANGE", "data": {"offset": 3}}"#);
        assert_eq!(rtc.data, json!({"offset": 3}));
        assert_eq!(rtc.timestamp, Timestamp::default());
    }

    #[test]
    fn lines_that_are_not_for_this_client_are_ignored_and_garbage_refused() {
        for line in [
            r#"{"error": {"class": "GenericError", "desc": "JSON parse error"}}"#,
            r#"{"return": {}, "id": "someone else's"}"#,
            GREETING,
            r#"{"hello": 1}"#,
            r#"{"event": 7}"#,
        ] {
            assert!(
                matches!(parse_message(line.as_bytes()), Ok(Message::Ignored(_))),
                "{line}"
            );
        }
        for line in ["[1, 2]", "{\"return\"", "\u{0}", ""] {
            assert!(parse_message(line.as_bytes()).is_err(), "{line}");
        }
    }
}
