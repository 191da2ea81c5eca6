//! Logging to the systemd journal through its native protocol.
//!
//! Each event is one datagram to the journal's socket, a list of fields:
//! `NAME=value\n`, or, for a value holding a newline, `NAME\n`, the value's
//! length as a little-endian u64, the value and `\n`. An entry too large
//! for a datagram goes as a sealed memfd passed with `SCM_RIGHTS`.
//!
//! Fields: `MESSAGE`, `PRIORITY` (syslog's: error 3, warn 4, info 6,
//! debug and trace 7), `SYSLOG_IDENTIFIER`, `CODE_FILE`, `CODE_LINE`,
//! `TARGET`, and each structured field of the event and of the spans
//! around it as `LXVIRT_<NAME>` (`domain = %name` is `LXVIRT_DOMAIN`).
//!
//! - [`JournalLayer`]: a `tracing_subscriber` layer, for the daemon.
//! - [`ProcessLog`]: a whole subscriber without span storage, for the
//!   per-container monitor, whose every byte of private memory counts
//!   (`tracing_subscriber`'s registry alone writes 32 KiB at creation).
//! - [`LogTarget`] and [`stderr_is_journal`]: whether to log there at all.

use std::ffi::OsStr;
use std::fmt::{self, Write as _};
use std::fs::File;
use std::io::{self, IoSlice, Write as _};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// The journal's socket for native-protocol datagrams.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// The prefix of the fields lxvirt adds.
const FIELD_PREFIX: &str = "LXVIRT_";

/// The longest field name the journal accepts.
const MAX_NAME: usize = 64;

/// Why the journal cannot be written to.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the journal at {path}")]
pub struct JournalError {
    path: PathBuf,
    #[source]
    source: io::Error,
}

/// Where the daemon's log goes (`--log-target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogTarget {
    /// The journal when stderr is connected to it, else stderr.
    #[default]
    Auto,
    Journal,
    Stderr,
}

impl LogTarget {
    /// Whether to log to the journal; `Auto` asks [`stderr_is_journal`].
    pub fn wants_journal(self) -> bool {
        match self {
            LogTarget::Auto => stderr_is_journal(),
            LogTarget::Journal => true,
            LogTarget::Stderr => false,
        }
    }
}

impl FromStr for LogTarget {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "auto" => Ok(LogTarget::Auto),
            "journal" => Ok(LogTarget::Journal),
            "stderr" => Ok(LogTarget::Stderr),
            other => Err(format!(
                "'{other}' is not a log target; use 'auto', 'journal' or 'stderr'"
            )),
        }
    }
}

/// Whether this process's stderr is a stream to the journal: systemd sets
/// `JOURNAL_STREAM` to that stream's `DEVICE:INODE`, and a process whose
/// stderr is still that file should log natively instead.
pub fn stderr_is_journal() -> bool {
    is_journal_stream(io::stderr(), std::env::var_os("JOURNAL_STREAM").as_deref())
}

/// Whether `fd` is the file `journal_stream` (`DEVICE:INODE`) names.
fn is_journal_stream(fd: impl AsFd, journal_stream: Option<&OsStr>) -> bool {
    let Some((device, inode)) = journal_stream
        .and_then(OsStr::to_str)
        .and_then(|value| value.split_once(':'))
    else {
        return false;
    };
    let (Ok(device), Ok(inode)) = (device.parse::<libc::dev_t>(), inode.parse::<libc::ino_t>())
    else {
        return false;
    };
    nix::sys::stat::fstat(fd).is_ok_and(|stat| stat.st_dev == device && stat.st_ino == inode)
}

/// A socket to the journal.
#[derive(Debug)]
pub struct Journal {
    socket: UnixDatagram,
}

impl Journal {
    /// Connects to the journal's socket at `path` (normally [`SOCKET`]).
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let connect = || {
            let socket = UnixDatagram::unbound()?;
            socket.connect(path)?;
            Ok(Journal { socket })
        };
        connect().map_err(|source| JournalError {
            path: path.to_owned(),
            source,
        })
    }

    /// Sends one entry (encoded fields); one too large for a datagram goes
    /// in a sealed memfd.
    pub fn send(&self, entry: &[u8]) -> io::Result<()> {
        match self.socket.send(entry) {
            Ok(_) => Ok(()),
            Err(error) if matches!(error.raw_os_error(), Some(libc::EMSGSIZE | libc::ENOBUFS)) => {
                self.send_in_memfd(entry)
            }
            Err(error) => Err(error),
        }
    }

    fn send_in_memfd(&self, entry: &[u8]) -> io::Result<()> {
        let fd = memfd_create(
            c"lxvirt-journal-entry",
            MFdFlags::MFD_ALLOW_SEALING | MFdFlags::MFD_CLOEXEC,
        )?;
        let mut file = File::from(fd);
        file.write_all(entry)?;
        // The journal reads only a memfd that can no longer change.
        fcntl(
            &file,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK
                    | SealFlag::F_SEAL_GROW
                    | SealFlag::F_SEAL_WRITE
                    | SealFlag::F_SEAL_SEAL,
            ),
        )?;
        let fds = [file.as_raw_fd()];
        let no_data: [IoSlice<'_>; 0] = [];
        sendmsg::<()>(
            self.socket.as_raw_fd(),
            &no_data,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        Ok(())
    }
}

/// The journal's field name of a tracing field: `LXVIRT_` and the name in
/// upper case, every character but A-Z and 0-9 as `_`, at most 64 long.
pub fn field_name(key: &str) -> String {
    let key = key.strip_prefix("r#").unwrap_or(key);
    let mut name = String::with_capacity(FIELD_PREFIX.len() + key.len());
    name.push_str(FIELD_PREFIX);
    name.extend(
        key.chars()
            .map(|c| match c.to_ascii_uppercase() {
                c @ ('A'..='Z' | '0'..='9') => c,
                _ => '_',
            })
            .take(MAX_NAME - FIELD_PREFIX.len()),
    );
    name
}

/// syslog's priority of a level.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Appends one field; `name` must be a valid field name.
fn put_field(entry: &mut Vec<u8>, name: &str, value: &[u8]) {
    entry.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        entry.push(b'\n');
        entry.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        entry.push(b'=');
    }
    entry.extend_from_slice(value);
    entry.push(b'\n');
}

/// The fields of one event: its message and the structured fields around
/// it, each under its journal name; a field set again replaces the
/// earlier value (an event's field wins over its span's).
#[derive(Debug, Default)]
struct Fields {
    message: Option<String>,
    fields: Vec<(String, String)>,
}

impl Fields {
    fn set(&mut self, name: String, value: String) {
        match self.fields.iter_mut().find(|(n, _)| *n == name) {
            Some(field) => field.1 = value,
            None => self.fields.push((name, value)),
        }
    }

    fn extend(&mut self, other: &[(String, String)]) {
        for (name, value) in other {
            self.set(name.clone(), value.clone());
        }
    }

    /// The entry for the journal.
    fn encode(&self, metadata: &Metadata<'_>, identifier: &str) -> Vec<u8> {
        let mut entry = Vec::with_capacity(256);
        put_field(&mut entry, "MESSAGE", self.message().as_bytes());
        let priority = priority(*metadata.level());
        put_field(&mut entry, "PRIORITY", &[b'0' + priority]);
        put_field(&mut entry, "SYSLOG_IDENTIFIER", identifier.as_bytes());
        if let Some(file) = metadata.file() {
            put_field(&mut entry, "CODE_FILE", file.as_bytes());
        }
        if let Some(line) = metadata.line() {
            put_field(&mut entry, "CODE_LINE", line.to_string().as_bytes());
        }
        put_field(&mut entry, "TARGET", metadata.target().as_bytes());
        for (name, value) in &self.fields {
            put_field(&mut entry, name, value.as_bytes());
        }
        entry
    }

    /// The line for stderr, when the journal cannot be reached.
    fn line(&self, metadata: &Metadata<'_>, identifier: &str) -> String {
        let mut line = format!(
            "{identifier}: {} {}: {}",
            metadata.level(),
            metadata.target(),
            self.message()
        );
        for (name, value) in &self.fields {
            let key = name.strip_prefix(FIELD_PREFIX).unwrap_or(name);
            let _ = write!(line, " {}={value}", key.to_ascii_lowercase());
        }
        line.push('\n');
        line
    }

    fn message(&self) -> &str {
        self.message.as_deref().unwrap_or_default()
    }
}

/// Records tracing fields into [`Fields`]; `message` is the message only
/// when recording an event.
struct Collect<'a> {
    fields: &'a mut Fields,
    event: bool,
}

impl Collect<'_> {
    fn put(&mut self, field: &Field, value: String) {
        if self.event && field.name() == "message" {
            self.fields.message = Some(value);
        } else {
            self.fields.set(field_name(field.name()), value);
        }
    }
}

impl Visit for Collect<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

/// Sends entries, and writes them to stderr while the journal refuses
/// them (saying so once each time it starts refusing).
#[derive(Debug)]
struct Sender {
    journal: Journal,
    identifier: String,
    /// Fields of every entry.
    fixed: Vec<(String, String)>,
    refusing: AtomicBool,
}

impl Sender {
    fn new(journal: Journal, identifier: &str) -> Sender {
        Sender {
            journal,
            identifier: identifier.to_owned(),
            fixed: Vec::new(),
            refusing: AtomicBool::new(false),
        }
    }

    fn deliver(&self, metadata: &Metadata<'_>, fields: &Fields) {
        match self
            .journal
            .send(&fields.encode(metadata, &self.identifier))
        {
            Ok(()) => self.refusing.store(false, Ordering::Relaxed),
            Err(error) => {
                let mut stderr = io::stderr().lock();
                if !self.refusing.swap(true, Ordering::Relaxed) {
                    let _ = writeln!(
                        stderr,
                        "{}: cannot write to the journal ({error}); logging to stderr",
                        self.identifier
                    );
                }
                let _ = stderr.write_all(fields.line(metadata, &self.identifier).as_bytes());
            }
        }
    }

    fn fields(&self) -> Fields {
        Fields {
            message: None,
            fields: self.fixed.clone(),
        }
    }
}

/// A layer writing every event to the journal, with the fields of its
/// spans.
#[derive(Debug)]
pub struct JournalLayer {
    sender: Sender,
}

/// The fields of a span, kept in its extensions.
struct SpanFields(Fields);

impl JournalLayer {
    /// Entries with `SYSLOG_IDENTIFIER=identifier`.
    pub fn new(journal: Journal, identifier: &str) -> JournalLayer {
        JournalLayer {
            sender: Sender::new(journal, identifier),
        }
    }
}

impl<S> Layer<S> for JournalLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = Fields::default();
        attributes.record(&mut Collect {
            fields: &mut fields,
            event: false,
        });
        span.extensions_mut().insert(SpanFields(fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        if let Some(SpanFields(fields)) = span.extensions_mut().get_mut::<SpanFields>() {
            values.record(&mut Collect {
                fields,
                event: false,
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = self.sender.fields();
        for span in ctx
            .event_scope(event)
            .into_iter()
            .flat_map(|s| s.from_root())
        {
            if let Some(SpanFields(outer)) = span.extensions().get::<SpanFields>() {
                fields.extend(&outer.fields);
            }
        }
        event.record(&mut Collect {
            fields: &mut fields,
            event: true,
        });
        self.sender.deliver(event.metadata(), &fields);
    }
}

/// The whole subscriber of a small process: events at `max_level` and
/// above, with fixed fields, to the journal or as lines to stderr. Spans
/// are accepted and ignored.
#[derive(Debug)]
pub struct ProcessLog {
    sink: Sink,
    max_level: Level,
}

#[derive(Debug)]
enum Sink {
    Journal(Sender),
    Stderr { identifier: String },
}

impl ProcessLog {
    /// To the journal, with `SYSLOG_IDENTIFIER=identifier`.
    pub fn journal(journal: Journal, identifier: &str, max_level: Level) -> ProcessLog {
        ProcessLog {
            sink: Sink::Journal(Sender::new(journal, identifier)),
            max_level,
        }
    }

    /// To stderr, each line starting with `identifier`.
    pub fn stderr(identifier: &str, max_level: Level) -> ProcessLog {
        ProcessLog {
            sink: Sink::Stderr {
                identifier: identifier.to_owned(),
            },
            max_level,
        }
    }

    /// Adds a field to every journal entry (`key` as a tracing field
    /// name: `domain` is `LXVIRT_DOMAIN`). Lines to stderr go without.
    pub fn with_field(mut self, key: &str, value: impl fmt::Display) -> ProcessLog {
        if let Sink::Journal(sender) = &mut self.sink {
            sender.fixed.push((field_name(key), value.to_string()));
        }
        self
    }
}

impl Subscriber for ProcessLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.max_level
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(self.max_level.into())
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = match &self.sink {
            Sink::Journal(sender) => sender.fields(),
            Sink::Stderr { .. } => Fields::default(),
        };
        event.record(&mut Collect {
            fields: &mut fields,
            event: true,
        });
        match &self.sink {
            Sink::Journal(sender) => sender.deliver(event.metadata(), &fields),
            Sink::Stderr { identifier } => {
                let line = fields.line(event.metadata(), identifier);
                let _ = io::stderr().lock().write_all(line.as_bytes());
            }
        }
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::io::{IoSliceMut, Read, Seek, SeekFrom};
    use std::os::fd::{FromRawFd, OwnedFd, RawFd};
    use std::os::unix::fs::MetadataExt;

    use nix::sys::socket::{ControlMessageOwned, recvmsg};
    use tracing_subscriber::layer::SubscriberExt;

    /// The fields of an entry, in order, with values as sent.
    fn parse(mut entry: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut fields = Vec::new();
        while !entry.is_empty() {
            let end = entry
                .iter()
                .position(|b| *b == b'\n' || *b == b'=')
                .unwrap();
            let name = String::from_utf8(entry[..end].to_vec()).unwrap();
            let value;
            if entry[end] == b'=' {
                let rest = &entry[end + 1..];
                let len = rest.iter().position(|b| *b == b'\n').unwrap();
                value = rest[..len].to_vec();
                entry = &rest[len + 1..];
            } else {
                let rest = &entry[end + 1..];
                let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
                value = rest[8..8 + len].to_vec();
                assert_eq!(rest[8 + len], b'\n', "a binary value ends with a newline");
                entry = &rest[8 + len + 1..];
            }
            fields.push((name, value));
        }
        fields
    }

    fn value<'a>(fields: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
        let mut values = fields.iter().filter(|(n, _)| n == name);
        let found = values.next().map(|(_, v)| std::str::from_utf8(v).unwrap());
        assert!(values.next().is_none(), "{name} twice in {fields:?}");
        found
    }

    /// A journal socket in a temporary directory.
    struct FakeJournal {
        _dir: tempfile::TempDir,
        path: PathBuf,
        socket: UnixDatagram,
    }

    impl FakeJournal {
        fn new() -> FakeJournal {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("socket");
            let socket = UnixDatagram::bind(&path).unwrap();
            socket.set_nonblocking(true).unwrap();
            FakeJournal {
                _dir: dir,
                path,
                socket,
            }
        }

        fn journal(&self) -> Journal {
            Journal::open(&self.path).unwrap()
        }

        /// The next entry, if one was sent (datagram or memfd).
        fn entry(&self) -> Option<Vec<(String, Vec<u8>)>> {
            let mut buffer = vec![0u8; 256 * 1024];
            let mut iov = [IoSliceMut::new(&mut buffer)];
            let mut cmsg = nix::cmsg_space!([RawFd; 1]);
            let message = match recvmsg::<()>(
                self.socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            ) {
                Ok(message) => message,
                Err(nix::errno::Errno::EAGAIN) => return None,
                Err(e) => panic!("{e}"),
            };
            let bytes = message.bytes;
            let mut fds = Vec::new();
            for cmsg in message.cmsgs().unwrap() {
                if let ControlMessageOwned::ScmRights(received) = cmsg {
                    // SAFETY: the kernel just gave us these descriptors.
                    fds.extend(
                        received
                            .into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
            match fds.pop() {
                None => Some(parse(&buffer[..bytes])),
                Some(fd) => {
                    assert_eq!(bytes, 0, "a memfd comes without data");
                    let mut file = File::from(fd);
                    let seals = fcntl(&file, FcntlArg::F_GET_SEALS).unwrap();
                    let wanted = SealFlag::F_SEAL_SHRINK
                        | SealFlag::F_SEAL_GROW
                        | SealFlag::F_SEAL_WRITE
                        | SealFlag::F_SEAL_SEAL;
                    assert_eq!(seals & wanted.bits(), wanted.bits(), "sealed");
                    // The sender's offset is ours: it is past its writes.
                    file.seek(SeekFrom::Start(0)).unwrap();
                    let mut content = Vec::new();
                    file.read_to_end(&mut content).unwrap();
                    Some(parse(&content))
                }
            }
        }
    }

    #[test]
    fn field_names_are_upper_case_prefixed_and_short() {
        assert_eq!(field_name("domain"), "LXVIRT_DOMAIN");
        assert_eq!(field_name("uuid"), "LXVIRT_UUID");
        assert_eq!(field_name("domain_type"), "LXVIRT_DOMAIN_TYPE");
        assert_eq!(field_name("log.target"), "LXVIRT_LOG_TARGET");
        assert_eq!(field_name("r#type"), "LXVIRT_TYPE");
        assert_eq!(field_name("größe-2"), "LXVIRT_GR__E_2");
        let long = field_name(&"x".repeat(100));
        assert_eq!(long.len(), 64);
        assert!(long.starts_with("LXVIRT_XXX"));
    }

    #[test]
    fn a_value_with_a_newline_takes_the_binary_form() {
        let mut entry = Vec::new();
        put_field(&mut entry, "MESSAGE", b"one line");
        assert_eq!(entry, b"MESSAGE=one line\n");
        let mut entry = Vec::new();
        put_field(&mut entry, "LXVIRT_ERROR", b"a\nb=c");
        let mut expected = b"LXVIRT_ERROR\n".to_vec();
        expected.extend_from_slice(&5u64.to_le_bytes());
        expected.extend_from_slice(b"a\nb=c\n");
        assert_eq!(entry, expected);
        assert_eq!(
            parse(&entry),
            [("LXVIRT_ERROR".to_owned(), b"a\nb=c".to_vec())]
        );
    }

    #[test]
    fn priorities_are_syslogs() {
        assert_eq!(priority(Level::ERROR), 3);
        assert_eq!(priority(Level::WARN), 4);
        assert_eq!(priority(Level::INFO), 6);
        assert_eq!(priority(Level::DEBUG), 7);
        assert_eq!(priority(Level::TRACE), 7);
    }

    #[test]
    fn log_targets_parse() {
        assert_eq!("auto".parse(), Ok(LogTarget::Auto));
        assert_eq!("journal".parse(), Ok(LogTarget::Journal));
        assert_eq!("stderr".parse(), Ok(LogTarget::Stderr));
        assert!(
            "syslog"
                .parse::<LogTarget>()
                .unwrap_err()
                .contains("'journal'")
        );
        assert!(!LogTarget::Stderr.wants_journal());
        assert!(LogTarget::Journal.wants_journal());
    }

    #[test]
    fn journal_stream_matches_the_device_and_inode_of_the_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("stream")).unwrap();
        let meta = file.metadata().unwrap();
        let (dev, ino) = (meta.dev(), meta.ino());
        let stream = |text: String| is_journal_stream(&file, Some(OsStr::new(&text)));
        assert!(stream(format!("{dev}:{ino}")));
        assert!(!stream(format!("{dev}:{}", ino + 1)));
        assert!(!stream(format!("{}:{ino}", dev + 1)));
        assert!(!stream(format!("{dev}")));
        assert!(!stream(format!("{dev}:{ino}x")));
        assert!(!stream(String::new()));
        assert!(!is_journal_stream(&file, None));
    }

    #[test]
    fn events_reach_the_socket_with_their_spans_fields() {
        let fake = FakeJournal::new();
        let subscriber =
            tracing_subscriber::registry().with(JournalLayer::new(fake.journal(), "lxvirtd"));
        let uuid = "6f1c0f58-2a4e-4c53-9d1e-3b0c8f2b9a11";
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("start", domain = "web", uuid = %uuid, step = tracing::field::Empty);
            let _entered = span.enter();
            span.record("step", "cgroup");
            tracing::warn!(attempt = 2, error = "no room\ntry later", "cannot start");
            let inner = tracing::info_span!("inner", step = "console");
            let _inner = inner.enter();
            tracing::error!(domain = "web2", "overridden");
        });
        let first = fake.entry().expect("an entry");
        assert_eq!(value(&first, "MESSAGE"), Some("cannot start"));
        assert_eq!(value(&first, "PRIORITY"), Some("4"));
        assert_eq!(value(&first, "SYSLOG_IDENTIFIER"), Some("lxvirtd"));
        assert_eq!(value(&first, "LXVIRT_DOMAIN"), Some("web"));
        assert_eq!(value(&first, "LXVIRT_UUID"), Some(uuid));
        assert_eq!(value(&first, "LXVIRT_STEP"), Some("cgroup"));
        assert_eq!(value(&first, "LXVIRT_ATTEMPT"), Some("2"));
        assert_eq!(value(&first, "LXVIRT_ERROR"), Some("no room\ntry later"));
        assert!(value(&first, "CODE_FILE").unwrap().ends_with("journal.rs"));
        assert!(value(&first, "CODE_LINE").unwrap().parse::<u32>().is_ok());
        assert_eq!(value(&first, "TARGET"), Some(module_path!()));
        // The innermost value of a field wins.
        let second = fake.entry().expect("a second entry");
        assert_eq!(value(&second, "PRIORITY"), Some("3"));
        assert_eq!(value(&second, "LXVIRT_DOMAIN"), Some("web2"));
        assert_eq!(value(&second, "LXVIRT_STEP"), Some("console"));
        assert_eq!(value(&second, "LXVIRT_UUID"), Some(uuid));
        assert!(fake.entry().is_none());
    }

    #[test]
    fn an_entry_too_large_for_a_datagram_goes_in_a_sealed_memfd() {
        let fake = FakeJournal::new();
        let subscriber =
            tracing_subscriber::registry().with(JournalLayer::new(fake.journal(), "lxvirtd"));
        let big = "x".repeat(1 << 20);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(domain = "web", "{big}");
        });
        let entry = fake.entry().expect("an entry");
        assert_eq!(value(&entry, "MESSAGE").map(str::len), Some(1 << 20));
        assert_eq!(value(&entry, "LXVIRT_DOMAIN"), Some("web"));
    }

    #[test]
    fn a_process_log_adds_its_fixed_fields_and_filters_by_level() {
        let fake = FakeJournal::new();
        let uuid = "6f1c0f58-2a4e-4c53-9d1e-3b0c8f2b9a11";
        let log = ProcessLog::journal(fake.journal(), "lxvirt-monitor", Level::INFO)
            .with_field("domain", "web")
            .with_field("uuid", uuid);
        tracing::subscriber::with_default(log, || {
            let span = tracing::info_span!("ignored", step = "x");
            let _entered = span.enter();
            tracing::debug!("not sent");
            tracing::info!(pid = 42, "container started");
        });
        let entry = fake.entry().expect("an entry");
        assert_eq!(value(&entry, "MESSAGE"), Some("container started"));
        assert_eq!(value(&entry, "PRIORITY"), Some("6"));
        assert_eq!(value(&entry, "SYSLOG_IDENTIFIER"), Some("lxvirt-monitor"));
        assert_eq!(value(&entry, "LXVIRT_DOMAIN"), Some("web"));
        assert_eq!(value(&entry, "LXVIRT_UUID"), Some(uuid));
        assert_eq!(value(&entry, "LXVIRT_PID"), Some("42"));
        assert!(fake.entry().is_none(), "the debug event was filtered");
    }

    #[test]
    fn a_missing_or_gone_journal_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("socket");
        let error = Journal::open(&missing).unwrap_err();
        assert!(
            error.to_string().contains(&*missing.to_string_lossy()),
            "{error}"
        );

        let fake = FakeJournal::new();
        let sender = Sender::new(fake.journal(), "lxvirtd");
        // Nobody listens any more: the entry goes to stderr.
        drop(fake);
        let fields = Fields {
            message: Some("to stderr".into()),
            fields: Vec::new(),
        };
        tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            let callsite = tracing::info_span!("probe");
            let metadata = callsite.metadata().unwrap();
            sender.deliver(metadata, &fields);
        });
        assert!(sender.refusing.load(Ordering::Relaxed));
    }
}
