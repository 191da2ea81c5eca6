//! `org.lxvirt.lxvirt1.Domain`: one object per domain.
//!
//! Properties are served from a summary the event adapter keeps current;
//! methods go to the core.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, OwnedObjectPath, interface};
use zbus::{OwnedFd as DbusFd, OwnedVariant as OwnedValue, Variant as Value};

use lxvirt_api::DomainSummaryRecord;
use uuid::Uuid;

use super::exported::{Exported, SharedSummary, set_property};
use super::object_manager::Registered;
use super::options::Options;
use super::{DOMAIN_INTERFACE, Shared, domain_path, error::Error};
use crate::core::manager::{
    BlkioField, BlkioParams, DeviceChange, MemoryParams, NumaParams, SchedulerParams, Tuning,
};
use crate::core::types::{AddressSource, AffectFlags, CoreError};
use crate::core::{DomainSummary, Lookup, UndefineFlags, XmlFlags};
use crate::driver::ShutdownMode;

/// Grace period of `Shutdown(0)` and `Reboot(0)`, as Docker and Podman use.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// A domain's object.
#[derive(Debug)]
pub struct DomainObject {
    uuid: Uuid,
    summary: SharedSummary<DomainSummary>,
    shared: Shared,
}

impl DomainObject {
    async fn authorize(
        &self,
        connection: &Connection,
        header: &Header<'_>,
        action: &str,
    ) -> Result<(), Error> {
        self.shared
            .authorizer
            .check(connection, header, action)
            .await
    }
}

fn grace(seconds: u32) -> Duration {
    if seconds == 0 {
        DEFAULT_GRACE
    } else {
        Duration::from_secs(u64::from(seconds))
    }
}

/// The `Pid` property of a summary.
fn pid_of(summary: &DomainSummary) -> u32 {
    summary
        .init_pid
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or(0)
}

/// A summary as `ListDomainSummaries` sends it: the values of the
/// properties below.
pub(crate) fn record_of(summary: DomainSummary) -> DomainSummaryRecord {
    DomainSummaryRecord {
        path: domain_path(summary.uuid),
        uuid: summary.uuid.to_string(),
        domain_type: summary.domain_type.as_str().to_owned(),
        state: summary.state.as_str().to_owned(),
        state_reason: summary.reason.as_str().to_owned(),
        persistent: summary.persistent,
        autostart: summary.autostart,
        pid: pid_of(&summary),
        start_time: summary.start_time.unwrap_or(0),
        user_namespace: summary.user_namespace.to_owned(),
        host_ids: summary.host_ids.unwrap_or((0, 0)),
        security_label: summary.security_label.unwrap_or_default(),
        name: summary.name,
    }
}

/// `<memtune>` parameters on the bus, in KiB as libvirt's.
const MEMORY_PARAMETERS: [&str; 3] = ["hard_limit", "soft_limit", "swap_hard_limit"];
/// `<cputune>` parameters on the bus, as libvirt's LXC driver names them.
const SCHEDULER_PARAMETERS: [&str; 3] = ["cpu_shares", "vcpu_period", "vcpu_quota"];

/// `<blkiotune>`'s per-device parameters on the bus, as libvirt names
/// them: strings `PATH,VALUE[,PATH,VALUE…]`.
const BLKIO_DEVICE_PARAMETERS: [(&str, BlkioField); 5] = [
    ("device_weight", BlkioField::Weight),
    ("device_read_bytes_sec", BlkioField::ReadBytesSec),
    ("device_write_bytes_sec", BlkioField::WriteBytesSec),
    ("device_read_iops_sec", BlkioField::ReadIopsSec),
    ("device_write_iops_sec", BlkioField::WriteIopsSec),
];

/// `/dev/sda,500,/dev/sdb,300` → the pairs.
fn device_values(key: &str, text: &str) -> Result<Vec<(PathBuf, u64)>, Error> {
    let bad = || {
        Error::InvalidArgument(format!(
            "'{key}' must be PATH,VALUE pairs separated by commas, such as /dev/sda,500"
        ))
    };
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    if text.trim().is_empty() || !parts.len().is_multiple_of(2) {
        return Err(bad());
    }
    parts
        .chunks_exact(2)
        .map(|pair| {
            let value = pair[1].parse::<u64>().map_err(|_| bad())?;
            Ok((PathBuf::from(pair[0]), value))
        })
        .collect()
}

/// A string as an `a{sv}` value.
fn text_value(text: String) -> Result<OwnedValue, Error> {
    OwnedValue::try_from(Value::from(text)).map_err(|e| Error::Failed(e.to_string()))
}

fn kib_to_bytes(key: &str, kib: Option<u64>) -> Result<Option<u64>, Error> {
    kib.map(|k| {
        k.checked_mul(1024)
            .ok_or_else(|| Error::InvalidArgument(format!("'{key}' is too large")))
    })
    .transpose()
}

impl DomainObject {
    /// Changes the domain's tuning for a caller allowed to: `tuning` is
    /// the decoded request, whose error (a bad argument) is told only to
    /// such a caller.
    async fn tune(
        &self,
        header: &Header<'_>,
        connection: &Connection,
        tuning: Result<Tuning, Error>,
        flags: u32,
    ) -> Result<(), Error> {
        self.shared
            .authorizer
            .check(connection, header, "tune domains")
            .await?;
        let seq = self
            .shared
            .handle
            .tune(self.uuid, tuning?, AffectFlags(flags))
            .await?;
        self.shared.published(seq).await;
        Ok(())
    }

    /// The definition the flags name, for a caller allowed to read: the
    /// running instance's (0 when it runs, 1) or the persistent one (2, or
    /// 0 when it does not run).
    async fn tuned_def(
        &self,
        header: &Header<'_>,
        connection: &Connection,
        flags: u32,
    ) -> Result<crate::domain::DomainDef, Error> {
        self.shared.may_read(connection, Some(header)).await?;
        let xml_flags = if flags & AffectFlags::CONFIG != 0 {
            XmlFlags(XmlFlags::INACTIVE)
        } else {
            XmlFlags(0)
        };
        let xml = self.shared.handle.get_xml(self.uuid, xml_flags).await?;
        crate::domain::DomainDef::from_xml(&xml)
            .map_err(|e| Error::Failed(format!("the domain's own XML does not read back: {e}")))
    }

    async fn change_device(
        &self,
        header: &Header<'_>,
        connection: &Connection,
        change: DeviceChange,
        xml: String,
        flags: u32,
    ) -> Result<(), Error> {
        let work = async {
            let seq = self
                .shared
                .handle
                .change_device(self.uuid, change, xml, AffectFlags(flags))
                .await?;
            Ok(((), seq))
        };
        (self.shared)
            .mutate(connection, header, "change devices", work)
            .await
    }
}

impl Exported for DomainObject {
    type Summary = DomainSummary;
    const INTERFACE: &'static str = DOMAIN_INTERFACE;

    fn path(uuid: Uuid) -> OwnedObjectPath {
        domain_path(uuid)
    }

    fn uuid_of(summary: &DomainSummary) -> Uuid {
        summary.uuid
    }

    fn new(summary: DomainSummary, shared: Shared) -> Self {
        DomainObject {
            uuid: summary.uuid,
            summary: SharedSummary::new(summary),
            shared,
        }
    }

    fn shared_summary(&self) -> SharedSummary<DomainSummary> {
        self.summary.clone()
    }

    fn registered(summary: SharedSummary<DomainSummary>) -> Registered {
        Registered::Domain(summary)
    }

    fn properties(s: &DomainSummary) -> Vec<(&'static str, Value<'_>)> {
        vec![
            ("Name", s.name.as_str().into()),
            ("UUID", s.uuid.to_string().into()),
            ("Type", s.domain_type.as_str().into()),
            ("Persistent", s.persistent.into()),
            ("Autostart", s.autostart.into()),
            ("State", s.state.as_str().into()),
            ("StateReason", s.reason.as_str().into()),
            ("Pid", pid_of(s).into()),
            ("StartTime", s.start_time.unwrap_or(0).into()),
            (
                "SecurityLabel",
                s.security_label.as_deref().unwrap_or("").into(),
            ),
            ("UserNamespace", s.user_namespace.into()),
            ("HostIds", s.host_ids.unwrap_or((0, 0)).into()),
        ]
    }

    fn lifecycle<'a>(
        emitter: &'a SignalEmitter<'a>,
        event: &'a str,
        detail: &'a str,
    ) -> impl std::future::Future<Output = zbus::Result<()>> + Send + 'a {
        DomainObject::lifecycle(emitter, event, detail)
    }
}

/// A change of a domain's state, asked of its object or of the manager
/// by the domain's name.
pub(super) enum StateChange {
    Start,
    Shutdown { grace_seconds: u32, mode: String },
    Destroy,
    Reboot { grace_seconds: u32, mode: String },
    Reset,
    Suspend,
    Resume,
}

impl StateChange {
    /// What the caller asks, for a refusal: "uid 1000 may not start domains".
    fn action(&self) -> &'static str {
        match self {
            StateChange::Start => "start domains",
            StateChange::Shutdown { .. } => "shut down domains",
            StateChange::Destroy => "destroy domains",
            StateChange::Reboot { .. } => "reboot domains",
            StateChange::Reset => "reset domains",
            StateChange::Suspend => "suspend domains",
            StateChange::Resume => "resume domains",
        }
    }
}

/// Who may make `change` is checked first (a refusal says nothing of the
/// domain); `domain` then names the domain, and the change returns once
/// its events are published.
pub(super) async fn change_state(
    shared: &Shared,
    connection: &Connection,
    header: &Header<'_>,
    domain: impl Into<DomainRef>,
    change: StateChange,
) -> Result<(), Error> {
    shared
        .authorizer
        .check(connection, header, change.action())
        .await?;
    let uuid = match domain.into() {
        DomainRef::Uuid(uuid) => uuid,
        DomainRef::Name(name) => shared.handle.lookup(Lookup::Name(name)).await?.uuid,
    };
    let handle = &shared.handle;
    let changed = match change {
        StateChange::Start => handle.start(uuid).await,
        StateChange::Shutdown {
            grace_seconds,
            mode,
        } => {
            let mode = shutdown_mode(&mode)?;
            handle.shutdown(uuid, grace(grace_seconds), mode).await
        }
        StateChange::Destroy => handle.destroy(uuid).await,
        StateChange::Reboot {
            grace_seconds,
            mode,
        } => {
            let mode = shutdown_mode(&mode)?;
            handle.reboot(uuid, grace(grace_seconds), mode).await
        }
        StateChange::Reset => handle.reset(uuid).await,
        StateChange::Suspend => handle.suspend(uuid).await,
        StateChange::Resume => handle.resume(uuid).await,
    };
    // A refusal too waits for what the core published before it (a failed
    // start leaves the domain `shutoff (failed)`): a caller reading the
    // state after the error sees it.
    let seq = changed
        .as_ref()
        .copied()
        .unwrap_or_else(|_| handle.last_event());
    shared.published(seq).await;
    changed.map(|_| ()).map_err(Error::from)
}

/// The domain a state change is for: its object's, or one named.
pub(super) enum DomainRef {
    Uuid(Uuid),
    Name(String),
}

impl From<Uuid> for DomainRef {
    fn from(uuid: Uuid) -> Self {
        DomainRef::Uuid(uuid)
    }
}

impl From<String> for DomainRef {
    fn from(name: String) -> Self {
        DomainRef::Name(name)
    }
}

/// A shutdown mode by its D-Bus name; an unknown one names the known.
fn shutdown_mode(name: &str) -> Result<ShutdownMode, Error> {
    ShutdownMode::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = ShutdownMode::NAMED.iter().map(|(n, _)| *n).collect();
        Error::InvalidArgument(format!(
            "unknown shutdown mode '{name}'; known: {}",
            known.join(", ")
        ))
    })
}

/// `console0` (or empty) is console 0, `consoleN` console N.
fn console_index(devname: &str) -> Result<u32, Error> {
    if devname.is_empty() {
        return Ok(0);
    }
    devname
        .strip_prefix("console")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "unknown console '{devname}'; use console0, console1, …"
            ))
        })
}

#[interface(name = "org.lxvirt.lxvirt1.Domain")]
impl DomainObject {
    #[zbus(property(emits_changed_signal = "const"))]
    async fn name(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> zbus::fdo::Result<String> {
        self.shared.may_read(connection, header.as_ref()).await?;
        Ok(self.summary.read(|s| s.name.clone()))
    }

    #[zbus(property(emits_changed_signal = "const"), name = "UUID")]
    async fn uuid(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> zbus::fdo::Result<String> {
        self.shared.may_read(connection, header.as_ref()).await?;
        Ok(self.uuid.to_string())
    }

    /// The driver: `lxc`, `kvm` or `qemu`.
    #[zbus(property(emits_changed_signal = "const"))]
    async fn type_(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> zbus::fdo::Result<String> {
        self.shared.may_read(connection, header.as_ref()).await?;
        Ok(self.summary.read(|s| s.domain_type.as_str().to_owned()))
    }

    #[zbus(property)]
    async fn persistent(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> zbus::fdo::Result<bool> {
        self.shared.may_read(connection, header.as_ref()).await?;
        Ok(self.summary.read(|s| s.persistent))
    }

    #[zbus(property)]
    async fn autostart(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> zbus::fdo::Result<bool> {
        self.shared.may_read(connection, header.as_ref()).await?;
        Ok(self.summary.read(|s| s.autostart))
    }

    #[zbus(property)]
    async fn set_autostart(
        &mut self,
        enabled: bool,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> zbus::fdo::Result<()> {
        let call = self.shared.handle.set_autostart(self.uuid, enabled);
        set_property(&self.shared, connection, header, "change autostart", call).await?;
        self.summary.update(|s| s.autostart = enabled);
        Ok(())
    }

    /// `shutoff`, `running`, `paused` or `crashed`.
    #[zbus(property)]
    async fn state(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> zbus::fdo::Result<String> {
        self.shared.may_read(connection, header.as_ref()).await?;
        Ok(self.summary.read(|s| s.state.as_str().to_owned()))
    }

    /// Why the domain is in its state (`booted`, `shutdown`, `destroyed`, …).
    #[zbus(property)]
    async fn state_reason(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> zbus::fdo::Result<String> {
        self.shared.may_read(connection, header.as_ref()).await?;
        Ok(self.summary.read(|s| s.reason.as_str().to_owned()))
    }

    /// Host pid of the container's init; 0 when not running.
    #[zbus(property)]
    async fn pid(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> zbus::fdo::Result<u32> {
        self.shared.may_read(connection, header.as_ref()).await?;
        Ok(self.summary.read(pid_of))
    }

    /// When the running instance started, seconds since the epoch; 0 when not running.
    #[zbus(property)]
    async fn start_time(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> zbus::fdo::Result<u64> {
        self.shared.may_read(connection, header.as_ref()).await?;
        Ok(self.summary.read(|s| s.start_time.unwrap_or(0)))
    }

    /// The SELinux process label of the running instance (init's and
    /// entered processes' context); empty when unconfined or not running.
    #[zbus(property)]
    async fn security_label(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> zbus::fdo::Result<String> {
        self.shared.may_read(connection, header.as_ref()).await?;
        Ok(self
            .summary
            .read(|s| s.security_label.clone().unwrap_or_default()))
    }

    /// How the domain's ids map: "auto" (a user namespace with host ids
    /// lxvirt allocates), "host" (no user namespace: root inside is host
    /// root) or "idmap" (the ranges of its <idmap>); the running
    /// instance's, else what its next start gets.
    #[zbus(property)]
    async fn user_namespace(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> zbus::fdo::Result<String> {
        self.shared.may_read(connection, header.as_ref()).await?;
        Ok(self.summary.read(|s| s.user_namespace.to_owned()))
    }

    /// The running instance's block of host ids: (first, count); (0, 0)
    /// when it is not running in mode "auto".
    #[zbus(property)]
    async fn host_ids(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> zbus::fdo::Result<(u32, u32)> {
        self.shared.may_read(connection, header.as_ref()).await?;
        Ok(self.summary.read(|s| s.host_ids.unwrap_or((0, 0))))
    }

    /// The domain's XML; flags: 1 = secure, 2 = inactive (the persistent definition).
    #[zbus(name = "GetXML")]
    async fn get_xml(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        flags: u32,
    ) -> Result<String, Error> {
        self.shared.may_read(connection, Some(&header)).await?;
        Ok(self
            .shared
            .handle
            .get_xml(self.uuid, XmlFlags(flags))
            .await?)
    }

    /// Starts the domain; returns once init runs.
    async fn start(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), Error> {
        change_state(
            &self.shared,
            connection,
            &header,
            self.uuid,
            StateChange::Start,
        )
        .await
    }

    /// Asks the domain to stop as `mode` says: "" or "default" (a
    /// container's init gets SIGTERM, a VM the ACPI power button),
    /// "signal" (containers), "acpi", "agent" (VMs); forcibly (SIGKILL)
    /// after `grace_seconds` (0: 10 s). Returns once it stopped.
    async fn shutdown(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        grace_seconds: u32,
        mode: String,
    ) -> Result<(), Error> {
        let change = StateChange::Shutdown {
            grace_seconds,
            mode,
        };
        change_state(&self.shared, connection, &header, self.uuid, change).await
    }

    /// SIGKILL to every process of the container; returns once it stopped.
    async fn destroy(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), Error> {
        change_state(
            &self.shared,
            connection,
            &header,
            self.uuid,
            StateChange::Destroy,
        )
        .await
    }

    /// Stops the domain as Shutdown does (the same modes) and starts it
    /// again with the same definition; returns once it runs again.
    async fn reboot(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        grace_seconds: u32,
        mode: String,
    ) -> Result<(), Error> {
        let change = StateChange::Reboot {
            grace_seconds,
            mode,
        };
        change_state(&self.shared, connection, &header, self.uuid, change).await
    }

    /// Resets the domain at once, without asking it: a VM's machine is
    /// reset in place (its qemu stays, paused if it was), a container's
    /// processes are killed and it starts again with the same definition.
    /// Returns once it runs again.
    async fn reset(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), Error> {
        change_state(
            &self.shared,
            connection,
            &header,
            self.uuid,
            StateChange::Reset,
        )
        .await
    }

    /// Freezes every process of the container.
    async fn suspend(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), Error> {
        change_state(
            &self.shared,
            connection,
            &header,
            self.uuid,
            StateChange::Suspend,
        )
        .await
    }

    /// Thaws a suspended container.
    async fn resume(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), Error> {
        change_state(
            &self.shared,
            connection,
            &header,
            self.uuid,
            StateChange::Resume,
        )
        .await
    }

    /// A stream socket relayed to console `devname` (`console0`, `console1`,
    /// …; empty for the first): bytes written are typed into the console,
    /// its output can be read. A new attach replaces the previous one.
    async fn open_console(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        devname: String,
    ) -> Result<DbusFd, Error> {
        self.authorize(connection, &header, "open consoles").await?;
        let index = console_index(&devname)?;
        let fd = self.shared.handle.open_console(self.uuid, index).await?;
        Ok(DbusFd::from(fd))
    }

    /// The console output the domain's driver keeps (a container's first
    /// console, a VM's first serial port), whether or not a console was
    /// attached: a pipe that yields what is kept, then with option `follow`
    /// (b) what comes until the domain stops or the reader closes it;
    /// option `tail` (u) keeps only the last lines of what was kept.
    async fn open_console_log(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        options: HashMap<String, OwnedValue>,
    ) -> Result<DbusFd, Error> {
        self.authorize(connection, &header, "read console logs")
            .await?;
        let options = Options::new(options, &["follow", "tail"])?;
        let options = crate::core::logs::LogOptions {
            follow: options.boolean("follow")?,
            tail: options.unsigned("tail")?.map(|n| n as usize),
        };
        let fd = crate::core::logs::open(&self.shared.handle, self.uuid, options).await?;
        Ok(DbusFd::from(fd))
    }

    /// Runs `command` inside the container, confined as its init is, with
    /// the three descriptors as its stdin, stdout and stderr. Options:
    /// `cwd` (s), `noseclabel` (b). Returns the command's host pid and a
    /// pipe that yields one JSON line with its exit status when it ends.
    /// A VM runs it through its guest agent (guest-exec; it needs the
    /// org.qemu.guest_agent.0 channel): stdin is read to its end first
    /// (at most 1 MiB, none from a terminal), the output is written when
    /// the command ended, the pid is the command's pid in the guest,
    /// `cwd` is not supported and `noseclabel` is ignored.
    #[allow(clippy::too_many_arguments)] // the D-Bus signature
    async fn enter(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        command: Vec<String>,
        env: Vec<String>,
        stdin: DbusFd,
        stdout: DbusFd,
        stderr: DbusFd,
        options: HashMap<String, OwnedValue>,
    ) -> Result<(u32, DbusFd), Error> {
        // Who may call is checked first: a refusal says nothing of the arguments.
        self.authorize(connection, &header, "enter domains").await?;
        let (cwd, noseclabel) = enter_options(options)?;
        let stdio = [stdin.into(), stdout.into(), stderr.into()];
        let entered = self
            .shared
            .handle
            .enter(self.uuid, command, env, cwd, noseclabel, Some(stdio))
            .await?;
        Ok((
            u32::try_from(entered.pid).unwrap_or(0),
            DbusFd::from(entered.exit),
        ))
    }

    /// As `Enter`, the command on a new terminal of the container's own
    /// (from its devpts), its controlling terminal: returns its host pid,
    /// the terminal's master (read its output, write its input, set its
    /// window size with TIOCSWINSZ) and the exit pipe. Not for VMs.
    async fn enter_terminal(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        command: Vec<String>,
        env: Vec<String>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<(u32, DbusFd, DbusFd), Error> {
        // Who may call is checked first: a refusal says nothing of the arguments.
        self.authorize(connection, &header, "enter domains").await?;
        let (cwd, noseclabel) = enter_options(options)?;
        let entered = self
            .shared
            .handle
            .enter(self.uuid, command, env, cwd, noseclabel, None)
            .await?;
        let terminal = entered
            .terminal
            .ok_or_else(|| Error::Failed("the driver gave no terminal".into()))?;
        Ok((
            u32::try_from(entered.pid).unwrap_or(0),
            DbusFd::from(terminal),
            DbusFd::from(entered.exit),
        ))
    }

    /// Sends a signal to a process of a running (or paused) container:
    /// `pid` as the container numbers it (1 is its init), `signal` by name
    /// or number as kill takes it (`SIGTERM`, `term`, `15`, `SIGRTMIN+3`,
    /// `0` to check the process exists). A process the container does not
    /// have is InvalidArgument; a VM is NotSupported.
    async fn send_process_signal(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        pid: i64,
        signal: &str,
    ) -> Result<(), Error> {
        self.authorize(connection, &header, "send signals into domains")
            .await?;
        let number = crate::sys::process::signal_number(signal).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "unknown signal '{signal}'; name one as kill does (SIGTERM, term, 15, SIGRTMIN+3)"
            ))
        })?;
        self.shared
            .handle
            .send_signal(self.uuid, pid, number)
            .await?;
        Ok(())
    }

    /// Resource use from the domain's cgroup: `memory.current` and
    /// `memory.limit` (bytes), `cpu.time` (ns), `pids.current`; for a VM
    /// also `balloon.current` (bytes the guest has), per disk
    /// `block.DEV.{rd,wr}.{bytes,reqs}` and per interface
    /// `net.TAP.{rx,tx}.{bytes,packets}` (the guest's view); only the
    /// figures the host provides, none when not running.
    async fn get_stats(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<HashMap<String, OwnedValue>, Error> {
        self.shared.may_read(connection, Some(&header)).await?;
        let stats = self.shared.handle.stats(self.uuid).await?;
        let mut map = HashMap::new();
        let mut put = |key: &str, value: Option<u64>| {
            if let Some(value) = value
                && let Ok(value) = OwnedValue::try_from(Value::U64(value))
            {
                map.insert(key.to_owned(), value);
            }
        };
        put("memory.current", stats.memory_bytes);
        put("memory.limit", stats.memory_limit);
        put("cpu.time", stats.cpu_time_ns);
        put("pids.current", stats.pids);
        for (key, value) in &stats.extra {
            put(key, Some(*value));
        }
        Ok(map)
    }

    /// Sets `<memtune>` values (KiB, `t`): `hard_limit`, `soft_limit`,
    /// `swap_hard_limit`; those not given stay. Flags as for
    /// `AttachDevice`: the running instance (its cgroup at once), the
    /// persistent definition, or both. All or nothing.
    async fn set_memory_parameters(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        params: HashMap<String, OwnedValue>,
        flags: u32,
    ) -> Result<(), Error> {
        let tuning = (|| -> Result<Tuning, Error> {
            let params = Options::new(params, &MEMORY_PARAMETERS)?;
            Ok(Tuning::Memory(MemoryParams {
                hard_limit: kib_to_bytes("hard_limit", params.u64("hard_limit")?)?,
                soft_limit: kib_to_bytes("soft_limit", params.u64("soft_limit")?)?,
                swap_hard_limit: kib_to_bytes("swap_hard_limit", params.u64("swap_hard_limit")?)?,
            }))
        })();
        self.tune(&header, connection, tuning, flags).await
    }

    /// The `<memtune>` values (KiB) of the running instance or of the
    /// persistent definition (flags as for `SetMemoryParameters`); a
    /// value not set is absent (no limit, but a container's hard limit,
    /// which is its `<memory>` then).
    async fn get_memory_parameters(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        flags: u32,
    ) -> Result<HashMap<String, OwnedValue>, Error> {
        let memtune = self
            .tuned_def(&header, connection, flags)
            .await?
            .memtune
            .unwrap_or_default();
        Ok([
            ("hard_limit", memtune.hard_limit),
            ("soft_limit", memtune.soft_limit),
            ("swap_hard_limit", memtune.swap_hard_limit),
        ]
        .into_iter()
        .filter_map(|(key, bytes)| Some((key.to_owned(), OwnedValue::from(bytes? / 1024))))
        .collect())
    }

    /// Sets `<cputune>` values: `cpu_shares` (`t`, 2–262144),
    /// `vcpu_period` (`t`, µs, 1000–1000000), `vcpu_quota` (`x`, µs per
    /// period, -1 unlimited); those not given stay. Flags as for
    /// `SetMemoryParameters`.
    async fn set_scheduler_parameters(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        params: HashMap<String, OwnedValue>,
        flags: u32,
    ) -> Result<(), Error> {
        let tuning = (|| -> Result<Tuning, Error> {
            let params = Options::new(params, &SCHEDULER_PARAMETERS)?;
            Ok(Tuning::Scheduler(SchedulerParams {
                shares: params.u64("cpu_shares")?,
                period: params.u64("vcpu_period")?,
                quota: params.i64("vcpu_quota")?,
            }))
        })();
        self.tune(&header, connection, tuning, flags).await
    }

    /// The `<cputune>` values of the running instance or of the
    /// persistent definition; a value not set is absent (the kernel's
    /// default).
    async fn get_scheduler_parameters(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        flags: u32,
    ) -> Result<HashMap<String, OwnedValue>, Error> {
        let cputune = self
            .tuned_def(&header, connection, flags)
            .await?
            .cputune
            .unwrap_or_default();
        let mut params = HashMap::new();
        if let Some(shares) = cputune.shares {
            params.insert("cpu_shares".to_owned(), OwnedValue::from(shares));
        }
        if let Some(period) = cputune.period {
            params.insert("vcpu_period".to_owned(), OwnedValue::from(period));
        }
        if let Some(quota) = cputune.quota {
            params.insert("vcpu_quota".to_owned(), OwnedValue::from(quota));
        }
        Ok(params)
    }

    /// Sets `<blkiotune>` values: `weight` (`u`, 100–1000) and, per device,
    /// `device_weight`, `device_read_bytes_sec`, `device_write_bytes_sec`,
    /// `device_read_iops_sec`, `device_write_iops_sec` (`s`,
    /// `PATH,VALUE[,PATH,VALUE…]`; 0 removes a value, from the definition
    /// only). Flags as for `SetMemoryParameters`.
    async fn set_blkio_parameters(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        params: HashMap<String, OwnedValue>,
        flags: u32,
    ) -> Result<(), Error> {
        let tuning = (|| -> Result<Tuning, Error> {
            let known: Vec<&str> = std::iter::once("weight")
                .chain(BLKIO_DEVICE_PARAMETERS.iter().map(|(k, _)| *k))
                .collect();
            let params = Options::new(params, &known)?;
            let weight = params
                .u64("weight")?
                .map(|w| u32::try_from(w).unwrap_or(u32::MAX));
            let mut devices = Vec::new();
            for (key, field) in BLKIO_DEVICE_PARAMETERS {
                if let Some(text) = params.string(key)? {
                    for (path, value) in device_values(key, &text)? {
                        devices.push((path, field, value));
                    }
                }
            }
            Ok(Tuning::Blkio(BlkioParams { weight, devices }))
        })();
        self.tune(&header, connection, tuning, flags).await
    }

    /// The `<blkiotune>` values, as `SetBlkioParameters` takes them; one
    /// not set is absent.
    async fn get_blkio_parameters(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        flags: u32,
    ) -> Result<HashMap<String, OwnedValue>, Error> {
        let blkio = self
            .tuned_def(&header, connection, flags)
            .await?
            .blkiotune
            .unwrap_or_default();
        let mut params = HashMap::new();
        if let Some(weight) = blkio.weight {
            params.insert("weight".to_owned(), OwnedValue::from(weight));
        }
        for (key, field) in BLKIO_DEVICE_PARAMETERS {
            let pairs: Vec<String> = blkio
                .devices
                .iter()
                .filter_map(|d| {
                    let value = match field {
                        BlkioField::Weight => d.weight.map(u64::from),
                        BlkioField::ReadBytesSec => d.read_bytes_sec,
                        BlkioField::WriteBytesSec => d.write_bytes_sec,
                        BlkioField::ReadIopsSec => d.read_iops_sec,
                        BlkioField::WriteIopsSec => d.write_iops_sec,
                    }?;
                    Some(format!("{},{value}", d.path.display()))
                })
                .collect();
            if !pairs.is_empty() {
                let joined = pairs.join(",");
                params.insert(key.to_owned(), text_value(joined)?);
            }
        }
        Ok(params)
    }

    /// Sets `<currentMemory>` (KiB): a container's memory limit at once
    /// (unless `<memtune><hard_limit>` sets one), a VM's balloon target
    /// (it needs a `<memballoon>`); at most `<memory>`. Flags as for
    /// `SetMemoryParameters`.
    async fn set_memory(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        kib: u64,
        flags: u32,
    ) -> Result<(), Error> {
        let tuning = kib_to_bytes("kib", Some(kib))
            .map(|bytes| Tuning::CurrentMemory(bytes.unwrap_or_default()));
        self.tune(&header, connection, tuning, flags).await
    }

    /// Sets `<memory>` (KiB), the maximum, in the definition only (a
    /// running instance's is refused, as libvirt does); `<currentMemory>`
    /// is lowered to it when above.
    async fn set_max_memory(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        kib: u64,
        flags: u32,
    ) -> Result<(), Error> {
        let tuning = kib_to_bytes("kib", Some(kib))
            .map(|bytes| Tuning::MaxMemory(bytes.unwrap_or_default()));
        self.tune(&header, connection, tuning, flags).await
    }

    /// Pins the domain to host CPUs (`<vcpu cpuset>`, a running
    /// instance's `cpuset.cpus` at once): a list such as `0-3,^2`; empty
    /// removes the pinning. Flags as for `SetMemoryParameters`.
    async fn pin_emulator(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        cpuset: String,
        flags: u32,
    ) -> Result<(), Error> {
        let tuning = match cpuset.as_str() {
            "" => Ok(Tuning::Cpuset(None)),
            text => crate::domain::CpuSet::parse(text)
                .map(|set| Tuning::Cpuset(Some(set)))
                .map_err(|why| Error::InvalidArgument(format!("cpuset '{text}': {why}"))),
        };
        self.tune(&header, connection, tuning, flags).await
    }

    /// The host CPUs the domain is pinned to, as `PinEmulator` takes them;
    /// empty when it is not pinned.
    async fn get_emulator_pin(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        flags: u32,
    ) -> Result<String, Error> {
        let def = self.tuned_def(&header, connection, flags).await?;
        Ok(def.vcpu.cpuset.map(|c| c.to_string()).unwrap_or_default())
    }

    /// Sets a container's task limit (`<lxvirt:pids max>`, a running
    /// instance's `pids.max` at once); 0 goes back to the daemon's
    /// `pids-max` setting. Flags as for `SetMemoryParameters`.
    async fn set_pids_limit(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        max: u64,
        flags: u32,
    ) -> Result<(), Error> {
        let tuning = if max > crate::domain::MAX_PIDS {
            Err(Error::InvalidArgument(format!(
                "a task limit of {max} cannot be applied: the kernel has at most {} pids; \
                 give 1 to {}, or 0 for the daemon's setting",
                crate::domain::MAX_PIDS,
                crate::domain::MAX_PIDS
            )))
        } else {
            Ok(Tuning::Pids((max != 0).then_some(max)))
        };
        self.tune(&header, connection, tuning, flags).await
    }

    /// The domain's own task limit; 0 when it has none (the daemon's
    /// setting applies).
    async fn get_pids_limit(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        flags: u32,
    ) -> Result<u64, Error> {
        let def = self.tuned_def(&header, connection, flags).await?;
        Ok(def.pids_max.unwrap_or(0))
    }

    /// Sets `<numatune><memory>`: `numa_nodeset` (`s`, host nodes such as
    /// `0-1`; a running instance's `cpuset.mems` at once) and `numa_mode`
    /// (`s`: strict, preferred, interleave, restrictive; the definition
    /// only: a running instance's policy cannot change). Flags as for
    /// `SetMemoryParameters`.
    async fn set_numa_parameters(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        params: HashMap<String, OwnedValue>,
        flags: u32,
    ) -> Result<(), Error> {
        let tuning = (|| -> Result<Tuning, Error> {
            let params = Options::new(params, &["numa_nodeset", "numa_mode"])?;
            let nodeset = params
                .string("numa_nodeset")?
                .map(|text| {
                    crate::domain::CpuSet::parse(&text).map_err(|why| {
                        Error::InvalidArgument(format!("numa_nodeset '{text}': {why}"))
                    })
                })
                .transpose()?;
            let mode = params
                .string("numa_mode")?
                .map(|text| {
                    crate::domain::NumaMode::parse(&text).ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "numa_mode '{text}': use strict, preferred, interleave or restrictive"
                        ))
                    })
                })
                .transpose()?;
            Ok(Tuning::Numa(NumaParams { nodeset, mode }))
        })();
        self.tune(&header, connection, tuning, flags).await
    }

    /// `numa_nodeset` and `numa_mode` as `SetNumaParameters` takes them;
    /// absent when not set.
    async fn get_numa_parameters(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        flags: u32,
    ) -> Result<HashMap<String, OwnedValue>, Error> {
        let memory = self
            .tuned_def(&header, connection, flags)
            .await?
            .numatune
            .and_then(|n| n.memory);
        let mut params = HashMap::new();
        if let Some(memory) = memory {
            params.insert(
                "numa_nodeset".to_owned(),
                text_value(memory.nodeset.to_string())?,
            );
            params.insert(
                "numa_mode".to_owned(),
                text_value(memory.mode.as_str().into())?,
            );
        }
        Ok(params)
    }

    /// Attaches a device (its XML: an `<interface>`, a block `<disk>`, a
    /// `<filesystem>` of type mount or bind, a storage or misc
    /// `<hostdev>`). Flags: 0 the running instance if the domain runs,
    /// else its definition; 1 the running instance; 2 the persistent
    /// definition; 3 both.
    async fn attach_device(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        xml: String,
        flags: u32,
    ) -> Result<(), Error> {
        self.change_device(&header, connection, DeviceChange::Attach, xml, flags)
            .await
    }

    /// Detaches a device the domain has: an `<interface>` named by its
    /// `<mac>`, else its `<target dev>`, else its type and source when
    /// only one matches; a `<disk>` by its target, a `<filesystem>` by
    /// its target directory, a `<hostdev>` by its source. Flags as for
    /// `AttachDevice`.
    async fn detach_device(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        xml: String,
        flags: u32,
    ) -> Result<(), Error> {
        self.change_device(&header, connection, DeviceChange::Detach, xml, flags)
            .await
    }

    /// Replaces a device the domain has (named as `DetachDevice` names
    /// it) with the one given. A running container can change the
    /// `<readonly/>` of a disk or filesystem; anything else needs the
    /// persistent definition only (flag 2) and a restart. Flags as for
    /// `AttachDevice`.
    async fn update_device(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        xml: String,
        flags: u32,
    ) -> Result<(), Error> {
        self.change_device(&header, connection, DeviceChange::Update, xml, flags)
            .await
    }

    /// Addresses of the running domain's interfaces: (name, MAC,
    /// [(address, prefix)]). `source` 0: the DHCP leases of its networks
    /// (host-side names); 1: as the domain sees them (names inside; a
    /// VM's from its guest agent).
    async fn get_interface_addresses(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        source: u32,
        flags: u32,
    ) -> Result<Vec<(String, String, Vec<(String, u8)>)>, Error> {
        self.shared.may_read(connection, Some(&header)).await?;
        if flags != 0 {
            return Err(CoreError::InvalidFlags(flags).into());
        }
        let source = match source {
            0 => AddressSource::Lease,
            1 => AddressSource::Agent,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown address source {other}: 0 (leases) or 1 (the container's own view)"
                )));
            }
        };
        let list = self
            .shared
            .handle
            .interface_addresses(self.uuid, source)
            .await?;
        Ok(list
            .into_iter()
            .map(|i| {
                let addresses = i
                    .addresses
                    .into_iter()
                    .map(|(a, p)| (a.to_string(), p))
                    .collect();
                (i.name, i.mac, addresses)
            })
            .collect())
    }

    /// Traffic counters of one interface (its name inside, host-side name
    /// or MAC), from the domain's side: rx bytes, packets, errors, drops,
    /// then the same for tx.
    async fn get_interface_stats(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        device: String,
    ) -> Result<(u64, u64, u64, u64, u64, u64, u64, u64), Error> {
        self.shared.may_read(connection, Some(&header)).await?;
        let c = self
            .shared
            .handle
            .interface_stats(self.uuid, device)
            .await?;
        Ok((
            c.rx_bytes,
            c.rx_packets,
            c.rx_errors,
            c.rx_dropped,
            c.tx_bytes,
            c.tx_packets,
            c.tx_errors,
            c.tx_dropped,
        ))
    }

    /// Removes the persistent definition; a running domain becomes
    /// transient. Its writable layer (image domains) goes with it, when it
    /// stops if it runs; flags: 0x10000 = keep the writable layer.
    async fn undefine(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        flags: u32,
    ) -> Result<(), Error> {
        self.authorize(connection, &header, "undefine domains")
            .await?;
        let seq = self
            .shared
            .handle
            .undefine(self.uuid, UndefineFlags(flags))
            .await?;
        self.shared.published(seq).await;
        Ok(())
    }

    /// Copies the writable layer of this domain (its root is an image;
    /// shut off or paused) into a new image named `name`, whose parent is
    /// the domain's image; the domain keeps its layer and its image. It
    /// cannot start or resume until the copy is done. `flags` must be 0.
    /// Returns the new image's id.
    async fn commit(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        name: String,
        flags: u32,
    ) -> Result<String, Error> {
        self.authorize(connection, &header, "commit domains")
            .await?;
        if flags != 0 {
            return Err(Error::InvalidArgument(format!(
                "invalid flags {flags:#x}; Commit takes none"
            )));
        }
        let report = self.shared.handle.commit(self.uuid, name).await?;
        Ok(report.id.to_string())
    }

    /// A lifecycle event: `defined` (`added`, `updated`), `undefined`
    /// (`removed`), `started` (`booted`), `rebooted`, `stopped` (`shutdown`,
    /// `destroyed`, `crashed`, `failed`), `suspended`, `resumed`, `crashed`
    /// (`preserved`).
    #[zbus(signal)]
    pub(crate) async fn lifecycle(
        emitter: &SignalEmitter<'_>,
        event: &str,
        detail: &str,
    ) -> zbus::Result<()>;
}

/// `Enter`'s and `EnterTerminal`'s options: `cwd` (s), `noseclabel` (b).
fn enter_options(options: HashMap<String, OwnedValue>) -> Result<(Option<PathBuf>, bool), Error> {
    let options = Options::new(options, &["cwd", "noseclabel"])?;
    let cwd = options.string("cwd")?.map(PathBuf::from);
    Ok((cwd, options.boolean("noseclabel")?))
}
