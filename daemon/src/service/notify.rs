//! The service manager's notification protocol (`sd_notify`): readiness,
//! status, stopping and watchdog pings, as datagrams of `KEY=value` lines
//! to the socket `NOTIFY_SOCKET` names (a path, or `@name` in the abstract
//! namespace). Without that variable nothing is sent.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where notifications go, taken from the environment once.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
    /// Half the watchdog timeout the manager set for this process, if any.
    watchdog_every: Option<Duration>,
}

/// The environment variables the protocol uses; the daemon removes them
/// once read, so that monitors and containers do not inherit them.
pub const ENV_VARS: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

impl Notifier {
    /// The notifier the environment describes, for process `pid` (the
    /// watchdog applies only to the pid `WATCHDOG_PID` names, when set).
    /// `None` when the process was not started by a service manager that
    /// listens.
    pub fn from_env(pid: u32) -> io::Result<Option<Notifier>> {
        let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        let watchdog_usec = std::env::var("WATCHDOG_USEC").ok();
        let watchdog_pid = std::env::var("WATCHDOG_PID").ok();
        let address = socket_address(socket.as_encoded_bytes())?;
        Ok(Some(Notifier {
            socket: UnixDatagram::unbound()?,
            address,
            watchdog_every: watchdog_period(watchdog_usec.as_deref(), watchdog_pid.as_deref(), pid),
        }))
    }

    /// Sends one notification (`KEY=value` lines).
    pub fn notify(&self, state: &str) -> io::Result<()> {
        self.socket.send_to_addr(state.as_bytes(), &self.address)?;
        Ok(())
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.notify(&format!("READY=1\nSTATUS={}", one_line(status)))
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, status: &str) -> io::Result<()> {
        self.notify(&format!("STOPPING=1\nSTATUS={}", one_line(status)))
    }

    /// How often to send `WATCHDOG=1`, when the manager watches this process.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog_every
    }
}

/// The socket address of `NOTIFY_SOCKET`: a path, or `@` and a name in the
/// abstract namespace.
fn socket_address(value: &[u8]) -> io::Result<SocketAddr> {
    match value.split_first() {
        Some((b'@', name)) => SocketAddr::from_abstract_name(name),
        Some((b'/', _)) => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(value)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is neither an absolute path nor an abstract name (@…)",
        )),
    }
}

/// Half the watchdog timeout, as systemd advises, when it applies to `pid`.
fn watchdog_period(usec: Option<&str>, for_pid: Option<&str>, pid: u32) -> Option<Duration> {
    if let Some(for_pid) = for_pid
        && for_pid.parse::<u32>().ok() != Some(pid)
    {
        return None;
    }
    let usec: u64 = usec?.parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

/// A status value may not hold a newline: it would start another key.
fn one_line(status: &str) -> String {
    status.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_path_or_an_abstract_name() {
        let path = socket_address(b"/run/systemd/notify").unwrap();
        assert_eq!(
            path.as_pathname().unwrap().to_str(),
            Some("/run/systemd/notify")
        );
        let abs = socket_address(b"@/org/freedesktop/systemd1/notify/123").unwrap();
        assert_eq!(
            abs.as_abstract_name(),
            Some(&b"/org/freedesktop/systemd1/notify/123"[..])
        );
        assert!(socket_address(b"relative").is_err());
        assert!(socket_address(b"").is_err());
    }

    #[test]
    fn the_watchdog_is_half_the_timeout_for_our_pid_only() {
        assert_eq!(
            watchdog_period(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_period(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_period(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_period(Some("0"), None, 7), None);
        assert_eq!(watchdog_period(Some("soon"), None, 7), None);
        assert_eq!(watchdog_period(None, None, 7), None);
    }

    /// The datagrams a real socket receives.
    #[test]
    fn ready_and_stopping_reach_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            socket: UnixDatagram::unbound().unwrap(),
            address: socket_address(path.as_os_str().as_encoded_bytes()).unwrap(),
            watchdog_every: None,
        };
        let mut buf = [0u8; 256];
        notifier.ready("serving\nnow").unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving now");
        notifier.stopping("bye").unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\nSTATUS=bye");
    }
}
