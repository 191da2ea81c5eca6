//! A client of QEMU's guest agent (`qemu-ga`), on the daemon's tokio.
//!
//! The agent runs in the guest and reads a virtio-serial port named
//! [`CHANNEL_NAME`]; qemu connects that port to a unix socket in the VM's
//! run directory (a `<channel type='unix'>` with that target name), which
//! this client opens. The protocol is QMP's JSON without the greeting, the
//! events or the ids:
//!
//! ```text
//!   Agent::execute ── lock (one command at a time per VM) ──┐
//!     connect if there is no connection                      │ channel
//!     0xFF {"execute":"guest-sync-delimited","arguments":{"id":N}}  ──▶  qemu-ga
//!     … stale bytes … 0xFF {"return": N}                     ◀──
//!     {"execute": CMD, "arguments": {…}}                     ──▶
//!     {"return": …} | {"error": {"class", "desc"}}           ◀──
//! ```
//!
//! - The socket stays connected while the guest's agent comes and goes
//!   (reboots, restarts), and whatever the agent wrote for an earlier
//!   client or for a command that timed out may still wait in it. So
//!   every command starts with `guest-sync-delimited`, as libvirt's
//!   client starts with `guest-sync`: the 0xFF byte sent first makes the
//!   agent drop any half-read request; its answer starts with a 0xFF byte,
//!   before which everything is discarded, and carries the random id
//!   sent. Only then is the command sent, and the next line is its answer.
//! - Commands are serialized per VM by a tokio mutex: the agent answers
//!   in order and has no ids of its own to match answers by.
//! - Every command is bounded by a timeout (the agent may not run at all:
//!   qemu accepts the connection whatever the guest does), after which
//!   the connection is dropped; so is it on end of file or a broken
//!   answer. The next command connects again and resyncs.
//! - `guest-shutdown` answers only when it fails (its `success-response`
//!   is false). libvirt waits for qemu's SHUTDOWN or RESET event instead
//!   of an answer; this client takes silence for the timeout, or the
//!   connection closing, as success ([`Agent::shutdown`]), and the
//!   driver's QMP events report the guest's end as for any shutdown.
//!
//! SELinux: the socket is qemu's (`svirt_image_t`, in the VM's directory
//! beside the QMP socket) and lxvirtd connects to it as to QMP, from a
//! socket with qemu's context; the policy's QMP rules cover it.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::driver::{GuestInterface, InterfaceCounters};

/// The name of the virtio-serial port qemu-ga opens in the guest: a
/// `<channel>` whose target has this name is the agent's.
pub const CHANNEL_NAME: &str = "org.qemu.guest_agent.0";

/// How long the agent has to answer a command, its resync included
/// (libvirt waits 5 s for `guest-sync`).
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Longest line read from the agent: qemu-ga keeps at most 16 MiB of a
/// command's output, 22 MiB in base64.
pub const MAX_LINE: usize = 32 << 20;

/// What can go wrong talking to a guest agent; each names the domain.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("domain '{domain}': cannot connect to its guest agent channel {}", path.display())]
    Connect {
        domain: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the guest agent of domain '{domain}' does not answer (waited {} s); is qemu-ga running in the guest?",
        after.as_secs_f32()
    )]
    Timeout { domain: String, after: Duration },
    #[error("domain '{domain}': its guest agent channel closed (the VM stopped?)")]
    Closed { domain: String },
    #[error("domain '{domain}': cannot talk to its guest agent")]
    Io {
        domain: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "domain '{domain}': its guest agent sent something that is not its protocol ({reason})"
    )]
    Protocol { domain: String, reason: String },
    #[error("domain '{domain}': guest agent command '{command}' failed: {desc} ({class})")]
    Command {
        domain: String,
        command: String,
        /// QAPI's error class (`GenericError`, `CommandNotFound`, …).
        class: String,
        desc: String,
    },
    #[error(
        "domain '{domain}': guest agent command '{command}' returned an unexpected value: {reason}"
    )]
    Reply {
        domain: String,
        command: String,
        reason: String,
    },
}

/// How the connection failed, before the domain is put in.
#[derive(Debug)]
enum Fail {
    Io(io::Error),
    Closed,
    Protocol(String),
    Command { class: String, desc: String },
}

impl From<io::Error> for Fail {
    fn from(error: io::Error) -> Fail {
        Fail::Io(error)
    }
}

/// A future that opens a new stream to the agent.
pub type Connecting = Pin<Box<dyn Future<Output = io::Result<UnixStream>> + Send>>;

/// Opens a new stream to the agent (the driver's connects from a socket
/// with qemu's context; tests hand out socket pairs).
pub type Connector = Arc<dyn Fn() -> Connecting + Send + Sync>;

/// What `guest-shutdown` asks the guest to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    Powerdown,
    Reboot,
    Halt,
}

impl ShutdownMode {
    fn as_str(self) -> &'static str {
        match self {
            ShutdownMode::Powerdown => "powerdown",
            ShutdownMode::Reboot => "reboot",
            ShutdownMode::Halt => "halt",
        }
    }
}

/// What `guest-info` says of the agent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AgentInfo {
    pub version: String,
    #[serde(rename = "supported_commands", default)]
    pub commands: Vec<AgentCommand>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AgentCommand {
    pub name: String,
    pub enabled: bool,
}

/// A command for `guest-exec`: `argv[0]` is looked up in the agent's
/// `PATH`; `env` replaces the agent's environment when not empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecCommand {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    /// Written to the command's stdin, which is then closed (no stdin
    /// when empty).
    pub input: Vec<u8>,
    /// Keep its stdout and stderr for [`ExecStatus`].
    pub capture_output: bool,
}

/// What `guest-exec-status` says of a command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecStatus {
    pub exited: bool,
    pub exit_code: Option<i32>,
    /// The signal that killed it.
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The agent kept only the first 16 MiB.
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawExecStatus {
    exited: bool,
    exitcode: Option<i32>,
    signal: Option<i32>,
    out_data: Option<String>,
    err_data: Option<String>,
    #[serde(default)]
    out_truncated: bool,
    #[serde(default)]
    err_truncated: bool,
}

#[derive(Debug, Deserialize)]
struct ExecStarted {
    pid: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawInterface {
    name: String,
    hardware_address: Option<String>,
    #[serde(default)]
    ip_addresses: Vec<RawAddress>,
    statistics: Option<RawStatistics>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawAddress {
    ip_address: String,
    prefix: u8,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
struct RawStatistics {
    rx_bytes: u64,
    rx_packets: u64,
    rx_errs: u64,
    rx_dropped: u64,
    tx_bytes: u64,
    tx_packets: u64,
    tx_errs: u64,
    tx_dropped: u64,
}

impl From<RawInterface> for GuestInterface {
    fn from(raw: RawInterface) -> GuestInterface {
        let counters = raw.statistics.unwrap_or_default();
        GuestInterface {
            name: raw.name,
            mac: raw.hardware_address,
            addresses: raw
                .ip_addresses
                .iter()
                .filter_map(|a| Some((a.ip_address.parse::<IpAddr>().ok()?, a.prefix)))
                .collect(),
            counters: InterfaceCounters {
                rx_bytes: counters.rx_bytes,
                rx_packets: counters.rx_packets,
                rx_errors: counters.rx_errs,
                rx_dropped: counters.rx_dropped,
                tx_bytes: counters.tx_bytes,
                tx_packets: counters.tx_packets,
                tx_errors: counters.tx_errs,
                tx_dropped: counters.tx_dropped,
            },
        }
    }
}

/// What answers a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A `return` or an `error`, within the timeout.
    Reply,
    /// An `error` only; silence for the timeout, or the channel closing,
    /// is success (`guest-shutdown`).
    OnlyOnError,
}

/// A client of one VM's guest agent.
pub struct Agent {
    domain: String,
    path: PathBuf,
    connector: Connector,
    timeout: Duration,
    connection: tokio::sync::Mutex<Option<Connection>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("domain", &self.domain)
            .field("path", &self.path)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// A client of the agent behind the channel socket `path`, connecting
    /// with a plain `connect`.
    pub fn new(domain: &str, path: &Path) -> Agent {
        let target = path.to_owned();
        let connector: Connector = Arc::new(move || {
            let target = target.clone();
            Box::pin(async move { UnixStream::connect(target).await })
        });
        Agent::with_connector(domain, path, connector)
    }

    /// A client that opens its connections with `connector` (`path` is
    /// for messages).
    pub fn with_connector(domain: &str, path: &Path, connector: Connector) -> Agent {
        Agent {
            domain: domain.to_owned(),
            path: path.to_owned(),
            connector,
            timeout: TIMEOUT,
            connection: tokio::sync::Mutex::new(None),
        }
    }

    /// Another bound on each command than [`TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> Agent {
        self.timeout = timeout;
        self
    }

    /// `guest-ping`: the agent answers.
    pub async fn ping(&self) -> Result<(), AgentError> {
        self.execute("guest-ping", None).await.map(drop)
    }

    /// `guest-info`: its version and commands.
    pub async fn info(&self) -> Result<AgentInfo, AgentError> {
        self.call("guest-info", None).await
    }

    /// `guest-exec`: starts `command` in the guest; its pid there.
    pub async fn exec(&self, command: &ExecCommand) -> Result<i64, AgentError> {
        let Some((path, args)) = command.argv.split_first() else {
            return Err(self.reply_error("guest-exec", "no command given".into()));
        };
        let mut arguments = json!({ "path": path, "capture-output": command.capture_output });
        if !args.is_empty() {
            arguments["arg"] = json!(args);
        }
        if !command.env.is_empty() {
            arguments["env"] = json!(command.env);
        }
        if !command.input.is_empty() {
            arguments["input-data"] = json!(base64_encode(&command.input));
        }
        let started: ExecStarted = self.call("guest-exec", Some(arguments)).await?;
        Ok(started.pid)
    }

    /// `guest-exec-status`: whether the command `pid` ended, how, and
    /// its output when it did.
    pub async fn exec_status(&self, pid: i64) -> Result<ExecStatus, AgentError> {
        let command = "guest-exec-status";
        let raw: RawExecStatus = self.call(command, Some(json!({ "pid": pid }))).await?;
        let decode = |data: Option<String>| match data {
            None => Ok(Vec::new()),
            Some(text) => base64_decode(&text)
                .ok_or_else(|| self.reply_error(command, "output that is not base64".into())),
        };
        Ok(ExecStatus {
            exited: raw.exited,
            exit_code: raw.exitcode,
            signal: raw.signal,
            stdout: decode(raw.out_data)?,
            stderr: decode(raw.err_data)?,
            stdout_truncated: raw.out_truncated,
            stderr_truncated: raw.err_truncated,
        })
    }

    /// `guest-shutdown`: asks the guest to power off, reboot or halt. The
    /// agent answers only when that fails at once (its shutdown command
    /// failed); silence for the timeout, or the channel closing (qemu
    /// quit when the guest powered off), means the guest was told.
    pub async fn shutdown(&self, mode: ShutdownMode) -> Result<(), AgentError> {
        self.run(
            "guest-shutdown",
            Some(json!({ "mode": mode.as_str() })),
            Answer::OnlyOnError,
        )
        .await
        .map(drop)
    }

    /// `guest-network-get-interfaces`: the guest's interfaces (`lo`
    /// included), addresses and counters.
    pub async fn network_interfaces(&self) -> Result<Vec<GuestInterface>, AgentError> {
        let raw: Vec<RawInterface> = self.call("guest-network-get-interfaces", None).await?;
        Ok(raw.into_iter().map(GuestInterface::from).collect())
    }

    /// Runs `command` and returns its `return` value.
    pub async fn execute(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, AgentError> {
        self.run(command, arguments, Answer::Reply)
            .await
            .map(Option::unwrap_or_default)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<T, AgentError> {
        let value = self.execute(command, arguments).await?;
        serde_json::from_value(value).map_err(|e| self.reply_error(command, e.to_string()))
    }

    fn reply_error(&self, command: &str, reason: String) -> AgentError {
        AgentError::Reply {
            domain: self.domain.clone(),
            command: command.to_owned(),
            reason,
        }
    }

    /// One command on the (re)synced connection, within the timeout.
    async fn run(
        &self,
        command: &str,
        arguments: Option<Value>,
        answer: Answer,
    ) -> Result<Option<Value>, AgentError> {
        let mut slot = self.connection.lock().await;
        let sent = tokio::time::timeout(self.timeout, async {
            if slot.is_none() {
                *slot = Some(self.connect().await?);
            }
            let Some(connection) = slot.as_mut() else {
                return Err(self.failure(Fail::Closed));
            };
            // Within what a JSON number holds exactly, whatever parses it.
            connection.sync(rand::random::<u64>() >> 12).await?;
            connection.send(command, arguments.as_ref()).await?;
            Ok::<_, AgentError>(())
        })
        .await;
        if let Err(error) = sent.unwrap_or_else(|_| Err(self.timed_out())) {
            *slot = None;
            return Err(error);
        }
        let Some(connection) = slot.as_mut() else {
            return Err(self.failure(Fail::Closed));
        };
        let answered = tokio::time::timeout(self.timeout, connection.answer()).await;
        let result = match (answered, answer) {
            (Ok(Ok(value)), _) => Ok(Some(value)),
            (Ok(Err(Fail::Command { class, desc })), _) => Err(AgentError::Command {
                domain: self.domain.clone(),
                command: command.to_owned(),
                class,
                desc,
            }),
            (Ok(Err(Fail::Closed)) | Err(_), Answer::OnlyOnError) => Ok(None),
            (Ok(Err(fail)), _) => Err(self.failure(fail)),
            (Err(_), Answer::Reply) => Err(self.timed_out()),
        };
        // After a shutdown, or anything but an answer, start afresh.
        if answer == Answer::OnlyOnError
            || result
                .as_ref()
                .is_err_and(|e| !matches!(e, AgentError::Command { .. }))
        {
            *slot = None;
        }
        result
    }

    async fn connect(&self) -> Result<Connection, AgentError> {
        let stream = (self.connector)()
            .await
            .map_err(|source| AgentError::Connect {
                domain: self.domain.clone(),
                path: self.path.clone(),
                source,
            })?;
        tracing::debug!(domain = %self.domain, "connected to the guest agent");
        let (read, write) = stream.into_split();
        Ok(Connection {
            reader: BufReader::new(read),
            writer: write,
            domain: self.domain.clone(),
        })
    }

    fn timed_out(&self) -> AgentError {
        AgentError::Timeout {
            domain: self.domain.clone(),
            after: self.timeout,
        }
    }

    fn failure(&self, fail: Fail) -> AgentError {
        let domain = self.domain.clone();
        match fail {
            Fail::Io(source) => AgentError::Io { domain, source },
            Fail::Closed => AgentError::Closed { domain },
            Fail::Protocol(reason) => AgentError::Protocol { domain, reason },
            Fail::Command { class, desc } => AgentError::Command {
                domain,
                command: String::new(),
                class,
                desc,
            },
        }
    }
}

/// One connection to the agent.
struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    domain: String,
}

impl Connection {
    /// Brings the stream in step: everything up to the answer to a
    /// `guest-sync-delimited` with `id` is discarded.
    async fn sync(&mut self, id: u64) -> Result<(), AgentError> {
        let mut line = vec![0xFF];
        line.extend_from_slice(
            json!({ "execute": "guest-sync-delimited", "arguments": { "id": id } })
                .to_string()
                .as_bytes(),
        );
        line.push(b'\n');
        let fail = |fail: Fail| match fail {
            Fail::Io(source) => AgentError::Io {
                domain: self.domain.clone(),
                source,
            },
            _ => AgentError::Closed {
                domain: self.domain.clone(),
            },
        };
        self.writer
            .write_all(&line)
            .await
            .map_err(|e| fail(e.into()))?;
        loop {
            skip_past_sentinel(&mut self.reader).await.map_err(&fail)?;
            let line = read_line(&mut self.reader).await.map_err(&fail)?;
            // A stale answer (another id, or garbage after a stale 0xFF)
            // sends us looking for the next sentinel.
            let answer = serde_json::from_slice::<Value>(&line).ok();
            if answer
                .as_ref()
                .and_then(|a| a.get("return"))
                .and_then(Value::as_u64)
                == Some(id)
            {
                return Ok(());
            }
        }
    }

    async fn send(&mut self, command: &str, arguments: Option<&Value>) -> Result<(), AgentError> {
        let mut message = json!({ "execute": command });
        if let Some(arguments) = arguments {
            message["arguments"] = arguments.clone();
        }
        let mut line = message.to_string().into_bytes();
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .await
            .map_err(|source| AgentError::Io {
                domain: self.domain.clone(),
                source,
            })
    }

    /// The answer to the command just sent.
    async fn answer(&mut self) -> Result<Value, Fail> {
        let line = read_line(&mut self.reader).await?;
        let mut message: Value = serde_json::from_slice(&line)
            .map_err(|e| Fail::Protocol(format!("a line that is not JSON: {e}")))?;
        if let Some(value) = message.get_mut("return") {
            return Ok(value.take());
        }
        if let Some(error) = message.get("error") {
            let text = |key: &str| {
                error
                    .get(key)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            return Err(Fail::Command {
                class: text("class"),
                desc: text("desc"),
            });
        }
        Err(Fail::Protocol(
            "an answer with neither return nor error".into(),
        ))
    }
}

/// Discards input up to and including the next 0xFF byte.
async fn skip_past_sentinel(reader: &mut (impl AsyncBufRead + Unpin)) -> Result<(), Fail> {
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            return Err(Fail::Closed);
        }
        match buffer.iter().position(|&b| b == 0xFF) {
            Some(at) => {
                reader.consume(at + 1);
                return Ok(());
            }
            None => {
                let all = buffer.len();
                reader.consume(all);
            }
        }
    }
}

/// The next line, without its newline, at most [`MAX_LINE`] long.
async fn read_line(reader: &mut (impl AsyncBufRead + Unpin)) -> Result<Vec<u8>, Fail> {
    let mut line = Vec::new();
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            return Err(Fail::Closed);
        }
        let (taken, done) = match buffer.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (buffer.len(), false),
        };
        line.extend_from_slice(&buffer[..taken]);
        reader.consume(taken);
        if line.len() > MAX_LINE {
            return Err(Fail::Protocol(format!(
                "a line longer than {MAX_LINE} bytes"
            )));
        }
        if done {
            line.pop();
            return Ok(line);
        }
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, as the agent's `input-data` takes it (a
/// dozen lines rather than a dependency for it).
fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(BASE64[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The bytes of standard base64 (padding optional); `None` when it is not
/// base64.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut bits, mut count) = (0u32, 0u32);
    for &c in text {
        let value = BASE64.iter().position(|&b| b == c)? as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    // A lone sixth of a byte is no encoding.
    (count < 6).then_some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::AsyncReadExt;

    use super::*;

    /// Fails the test instead of hanging it.
    async fn within<T>(future: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), future)
            .await
            .expect("timed out")
    }

    /// Runs `call` on `agent` in a task of its own, while the test plays
    /// the guest.
    fn spawn<T: Send + 'static, F: Future<Output = T> + Send + 'static>(
        agent: &Arc<Agent>,
        call: impl FnOnce(Arc<Agent>) -> F,
    ) -> tokio::task::JoinHandle<T> {
        tokio::spawn(call(Arc::clone(agent)))
    }

    /// An agent whose connections are the client ends of socket pairs;
    /// each connection gives the test the agent's end.
    fn agent(timeout: Duration) -> (Arc<Agent>, tokio::sync::mpsc::UnboundedReceiver<FakeAgent>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let tx = Mutex::new(tx);
        let connector: Connector = Arc::new(move || {
            let (client, server) = UnixStream::pair().unwrap();
            let _ = tx.lock().unwrap().send(FakeAgent::new(server));
            Box::pin(async move { Ok(client) })
        });
        let agent = Agent::with_connector("vm", Path::new("/run/vm/agent.sock"), connector)
            .with_timeout(timeout);
        (Arc::new(agent), rx)
    }

    /// The guest's end, speaking the agent's protocol by hand.
    struct FakeAgent {
        reader: BufReader<OwnedReadHalf>,
        writer: OwnedWriteHalf,
    }

    impl FakeAgent {
        fn new(stream: UnixStream) -> FakeAgent {
            let (read, writer) = stream.into_split();
            FakeAgent {
                reader: BufReader::new(read),
                writer,
            }
        }

        async fn write(&mut self, bytes: &[u8]) {
            self.writer.write_all(bytes).await.unwrap();
        }

        /// The next request, which must be `command`.
        async fn expect(&mut self, command: &str) -> Value {
            let mut line = Vec::new();
            within(self.reader.read_until(b'\n', &mut line))
                .await
                .unwrap();
            // The resync's leading 0xFF.
            let text = line.strip_prefix(&[0xFF]).unwrap_or(&line);
            let message: Value = serde_json::from_slice(text).unwrap();
            assert_eq!(message["execute"], command, "{message}");
            message
        }

        /// Answers the resync, with `stale` before its sentinel.
        async fn sync(&mut self, stale: &[u8]) {
            let request = self.expect("guest-sync-delimited").await;
            let id = request["arguments"]["id"].as_u64().unwrap();
            self.write(stale).await;
            let mut answer = vec![0xFF];
            answer.extend_from_slice(format!("{{\"return\": {id}}}\n").as_bytes());
            self.write(&answer).await;
        }

        /// Resyncs, reads `command` and returns `value`; its arguments.
        async fn answer(&mut self, command: &str, value: Value) -> Value {
            self.sync(b"").await;
            let request = self.expect(command).await;
            self.write(format!("{}\n", json!({ "return": value })).as_bytes())
                .await;
            request["arguments"].clone()
        }
    }

    #[test]
    fn base64_round_trips() {
        let cases: [(&[u8], &str); 5] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"hi\n\xff\x00", "aGkK/wA="),
        ];
        for (data, text) in cases {
            assert_eq!(base64_encode(data), text);
            assert_eq!(base64_decode(text).unwrap(), data);
        }
        assert_eq!(base64_decode("Zm9vYg").unwrap(), b"foob");
        assert!(base64_decode("Z").is_none());
        assert!(base64_decode("Zm9v!").is_none());
    }

    /// Garbage and a stale answer before the sentinel are skipped; the
    /// command's answer comes after the resync.
    #[tokio::test]
    async fn a_resync_skips_what_came_before_the_sentinel() {
        let (agent, mut fakes) = agent(Duration::from_secs(5));
        let client = spawn(&agent, |agent| async move { agent.info().await });
        let mut fake = fakes.recv().await.unwrap();
        let request = fake.expect("guest-sync-delimited").await;
        let id = request["arguments"]["id"].as_u64().unwrap();
        // An answer for an earlier client, a stale sentinel with another
        // id, then ours.
        fake.write(b"{\"return\": {}}\ngarb\xffage\n\xff{\"return\": 1}\n")
            .await;
        let mut ours = vec![0xFF];
        ours.extend_from_slice(format!("{{\"return\": {id}}}\n").as_bytes());
        fake.write(&ours).await;
        fake.expect("guest-info").await;
        fake.write(br#"{"return": {"version": "7.2.22", "supported_commands": [{"name": "guest-exec", "enabled": true, "success-response": true}]}}"#)
            .await;
        fake.write(b"\n").await;
        let info = within(client).await.unwrap().unwrap();
        assert_eq!(info.version, "7.2.22");
        assert_eq!(
            info.commands,
            [AgentCommand {
                name: "guest-exec".into(),
                enabled: true
            }]
        );
    }

    /// An agent that does not answer gives the typed timeout, and the
    /// next command connects afresh.
    #[tokio::test]
    async fn silence_is_a_timeout_and_the_next_command_reconnects() {
        let (agent, mut fakes) = agent(Duration::from_millis(100));
        let error = agent.ping().await.unwrap_err();
        assert!(matches!(error, AgentError::Timeout { .. }), "{error:?}");
        assert!(
            error
                .to_string()
                .contains("is qemu-ga running in the guest?"),
            "{error}"
        );
        let mut silent = fakes.recv().await.unwrap();
        let client = spawn(&agent, |agent| async move { agent.ping().await });
        let mut fake = fakes.recv().await.unwrap();
        fake.answer("guest-ping", json!({})).await;
        within(client).await.unwrap().unwrap();
        // The first connection was dropped.
        let mut rest = Vec::new();
        within(silent.reader.read_to_end(&mut rest)).await.unwrap();
    }

    /// End of file fails the command; the next one reconnects.
    #[tokio::test]
    async fn end_of_file_fails_and_the_next_command_reconnects() {
        let (agent, mut fakes) = agent(Duration::from_secs(5));
        let client = spawn(&agent, |agent| async move { agent.ping().await });
        let mut fake = fakes.recv().await.unwrap();
        fake.sync(b"").await;
        fake.expect("guest-ping").await;
        drop(fake);
        let error = within(client).await.unwrap().unwrap_err();
        assert!(matches!(error, AgentError::Closed { .. }), "{error:?}");
        let client = spawn(&agent, |agent| async move { agent.ping().await });
        let mut fake = fakes.recv().await.unwrap();
        fake.answer("guest-ping", json!({})).await;
        within(client).await.unwrap().unwrap();
    }

    /// An error answer is the command's typed error; the connection stays.
    #[tokio::test]
    async fn an_error_answer_is_the_commands_error() {
        let (agent, mut fakes) = agent(Duration::from_secs(5));
        let client = spawn(&agent, |agent| async move { agent.exec_status(42).await });
        let mut fake = fakes.recv().await.unwrap();
        fake.sync(b"").await;
        fake.expect("guest-exec-status").await;
        fake.write(
            b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"Invalid parameter 'pid'\"}}\n",
        )
        .await;
        let error = within(client).await.unwrap().unwrap_err();
        match &error {
            AgentError::Command {
                command,
                class,
                desc,
                ..
            } => {
                assert_eq!(command, "guest-exec-status");
                assert_eq!(class, "GenericError");
                assert_eq!(desc, "Invalid parameter 'pid'");
            }
            other => panic!("{other:?}"),
        }
        // Same connection: the next command is read on it.
        let client = spawn(&agent, |agent| async move { agent.ping().await });
        fake.answer("guest-ping", json!({})).await;
        within(client).await.unwrap().unwrap();
    }

    /// guest-exec's arguments, and guest-exec-status decoded.
    #[tokio::test]
    async fn exec_sends_its_command_and_decodes_the_status() {
        let (agent, mut fakes) = agent(Duration::from_secs(5));
        let client = spawn(&agent, |agent| async move {
            let pid = agent
                .exec(&ExecCommand {
                    argv: vec!["/bin/cat".into(), "-".into()],
                    env: vec!["PATH=/bin".into()],
                    input: b"hi\n".to_vec(),
                    capture_output: true,
                })
                .await?;
            let status = agent.exec_status(pid).await?;
            Ok::<_, AgentError>((pid, status))
        });
        let mut fake = fakes.recv().await.unwrap();
        let arguments = fake.answer("guest-exec", json!({ "pid": 812 })).await;
        assert_eq!(
            arguments,
            json!({
                "path": "/bin/cat",
                "arg": ["-"],
                "env": ["PATH=/bin"],
                "input-data": "aGkK",
                "capture-output": true,
            })
        );
        let arguments = fake
            .answer(
                "guest-exec-status",
                json!({ "exited": true, "exitcode": 3, "out-data": "aGkK", "err-data": "", "out-truncated": true }),
            )
            .await;
        assert_eq!(arguments, json!({ "pid": 812 }));
        let (pid, status) = within(client).await.unwrap().unwrap();
        assert_eq!(pid, 812);
        assert_eq!(
            status,
            ExecStatus {
                exited: true,
                exit_code: Some(3),
                signal: None,
                stdout: b"hi\n".to_vec(),
                stderr: Vec::new(),
                stdout_truncated: true,
                stderr_truncated: false,
            }
        );
    }

    /// Interfaces with their addresses and counters.
    #[tokio::test]
    async fn interfaces_are_read_with_addresses_and_counters() {
        let (agent, mut fakes) = agent(Duration::from_secs(5));
        let client = spawn(
            &agent,
            |agent| async move { agent.network_interfaces().await },
        );
        let mut fake = fakes.recv().await.unwrap();
        fake.answer(
            "guest-network-get-interfaces",
            json!([
                { "name": "lo", "hardware-address": "00:00:00:00:00:00",
                  "ip-addresses": [{ "ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8 }] },
                { "name": "eth0", "hardware-address": "52:54:00:12:34:56",
                  "ip-addresses": [
                      { "ip-address-type": "ipv4", "ip-address": "10.0.2.15", "prefix": 24 },
                      { "ip-address-type": "ipv6", "ip-address": "fe80::5054:ff:fe12:3456", "prefix": 64 }
                  ],
                  "statistics": { "rx-bytes": 100, "rx-packets": 2, "rx-errs": 0, "rx-dropped": 1,
                                  "tx-bytes": 50, "tx-packets": 1, "tx-errs": 0, "tx-dropped": 0 } }
            ]),
        )
        .await;
        let interfaces = within(client).await.unwrap().unwrap();
        assert_eq!(interfaces.len(), 2);
        let eth0 = &interfaces[1];
        assert_eq!(eth0.name, "eth0");
        assert_eq!(eth0.mac.as_deref(), Some("52:54:00:12:34:56"));
        assert_eq!(
            eth0.addresses,
            [
                ("10.0.2.15".parse().unwrap(), 24),
                ("fe80::5054:ff:fe12:3456".parse().unwrap(), 64)
            ]
        );
        assert_eq!(eth0.counters.rx_bytes, 100);
        assert_eq!(eth0.counters.rx_dropped, 1);
        assert_eq!(eth0.counters.tx_packets, 1);
    }

    /// guest-shutdown: silence or the channel closing is success; an
    /// error answer is not.
    #[tokio::test]
    async fn shutdown_succeeds_without_an_answer_and_fails_with_one() {
        let (agent, mut fakes) = agent(Duration::from_millis(200));
        let failure = b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"child process has failed to shutdown\"}}\n";
        // The guest: is silent, closes the channel, fails.
        let cases = [
            (ShutdownMode::Reboot, "reboot", None),
            (ShutdownMode::Powerdown, "powerdown", Some(&b""[..])),
            (ShutdownMode::Halt, "halt", Some(&failure[..])),
        ];
        for (mode, name, answer) in cases {
            let client = spawn(
                &agent,
                move |agent| async move { agent.shutdown(mode).await },
            );
            let mut fake = fakes.recv().await.unwrap();
            fake.sync(b"").await;
            let request = fake.expect("guest-shutdown").await;
            assert_eq!(request["arguments"], json!({ "mode": name }));
            match answer {
                None => within(client).await.unwrap().unwrap(),
                Some(b"") => {
                    drop(fake);
                    within(client).await.unwrap().unwrap();
                }
                Some(answer) => {
                    fake.write(answer).await;
                    let error = within(client).await.unwrap().unwrap_err();
                    assert!(
                        error
                            .to_string()
                            .contains("child process has failed to shutdown"),
                        "{error}"
                    );
                }
            }
        }
    }

    /// A connection that cannot be made names the socket.
    #[tokio::test]
    async fn a_missing_socket_is_a_connect_error() {
        let dir = tempfile::tempdir().unwrap();
        let agent = Agent::new("vm", &dir.path().join("agent.sock"));
        let error = agent.ping().await.unwrap_err();
        assert!(matches!(error, AgentError::Connect { .. }), "{error:?}");
        assert!(error.to_string().contains("agent.sock"), "{error}");
    }
}
