//! Containers as systemd sees them on a systemd host with the unified
//! cgroup hierarchy: each one in a scope of its own under `machine.slice`
//! (`Delegate=yes`: lxvirt manages the cgroups below it), registered with
//! systemd-machined so that `machinectl`, `systemd-cgls` and
//! `systemd-cgtop` show it and `machinectl terminate` stops it.
//!
//! The scope is made around the container's monitor before the container
//! exists (a scope needs a process to start with); the monitor then moves
//! itself to `SCOPE/supervisor` and puts the container in `SCOPE/payload`.
//! The container's init is the machine's leader, so `machinectl shell`
//! and `machinectl status` see the container, not its monitor.
//!
//! QEMU VMs get the same: a scope of their own, qemu in `SCOPE/payload`,
//! registered as class `vm` with qemu as leader.
//!
//! A domain's `<resource><partition>` names its slice, as libvirt maps
//! it: `/machine` is `machine.slice`, `/machine/web` is
//! `machine-web.slice` inside it.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use uuid::Uuid;
use zbus::{OwnedObjectPath, Variant as Value};

/// The unit that stops the domains at host shutdown.
pub const GUESTS_UNIT: &str = "lxvirt-guests.service";
/// The slice containers' scopes go in, as for systemd-nspawn and libvirt.
pub const MACHINE_SLICE: &str = "machine.slice";

/// How long systemd gets to start a scope.
const SCOPE_START_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest unit name systemd takes (its `UNIT_NAME_MAX` less the NUL).
const UNIT_NAME_MAX: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("cannot reach systemd on the system bus")]
    Connect(#[source] zbus::Error),
    #[error("systemd refused scope {unit}")]
    StartScope {
        unit: String,
        #[source]
        source: zbus::Error,
    },
    #[error("systemd could not start scope {unit}: job {result}")]
    ScopeJob { unit: String, result: String },
    #[error("systemd did not start scope {unit} within {SCOPE_START_TIMEOUT:?}")]
    ScopeTimeout { unit: String },
    #[error("systemd-machined refused to register machine {name}")]
    Register {
        name: String,
        #[source]
        source: zbus::Error,
    },
}

/// A `<resource><partition>` that cannot be a slice.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error(
        "<resource><partition>/</partition> would put the domain in systemd's root slice; name a partition below it, such as /machine"
    )]
    Root,
    #[error(
        "<resource><partition>{partition}</partition> makes unit {unit}, longer than the {UNIT_NAME_MAX} characters systemd takes; use a shorter partition"
    )]
    TooLong { partition: String, unit: String },
}

/// What a domain is to machined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineClass {
    Container,
    Vm,
}

impl MachineClass {
    fn as_str(self) -> &'static str {
        match self {
            MachineClass::Container => "container",
            MachineClass::Vm => "vm",
        }
    }
}

/// Where a domain runs on a systemd host: its scope, in the slice of its
/// partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// `machine-web.slice`
    pub slice: String,
    /// `machine-lxvirt\x2dNAME.scope`
    pub scope: String,
    /// The scope's cgroup below the hierarchy's root, through every slice
    /// above it: `machine.slice/machine-web.slice/SCOPE`.
    pub cgroup: PathBuf,
}

/// The placement of domain `name` in `partition` (absolute, normalized,
/// as the parser leaves it): each component escaped as systemd escapes
/// unit names, joined with `-` (which nests the slices).
pub fn placement(name: &str, partition: &Path) -> Result<Placement, PartitionError> {
    let parts: Vec<String> = partition
        .components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(escape_unit_name(&part.to_string_lossy())),
            _ => None,
        })
        .collect();
    if parts.is_empty() {
        return Err(PartitionError::Root);
    }
    let mut cgroup = PathBuf::new();
    for depth in 1..=parts.len() {
        cgroup.push(format!("{}.slice", parts[..depth].join("-")));
    }
    let slice = format!("{}.slice", parts.join("-"));
    let scope = scope_name(name);
    for unit in [&slice, &scope] {
        if unit.len() > UNIT_NAME_MAX {
            return Err(PartitionError::TooLong {
                partition: partition.display().to_string(),
                unit: unit.clone(),
            });
        }
    }
    cgroup.push(&scope);
    Ok(Placement {
        slice,
        scope,
        cgroup,
    })
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait SystemdManager {
    fn subscribe(&self) -> zbus::Result<()>;

    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[(&str, Value<'_>)],
        aux: &[(&str, &[(&str, Value<'_>)])],
    ) -> zbus::Result<OwnedObjectPath>;

    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
}

#[zbus::proxy(
    interface = "org.freedesktop.machine1.Manager",
    default_service = "org.freedesktop.machine1",
    default_path = "/org/freedesktop/machine1"
)]
trait MachineManager {
    #[allow(clippy::too_many_arguments)]
    fn register_machine_with_network(
        &self,
        name: &str,
        id: &[u8],
        service: &str,
        class: &str,
        leader: u32,
        root_directory: &str,
        ifindices: &[i32],
    ) -> zbus::Result<OwnedObjectPath>;
}

/// Whether this host runs systemd as its service manager (what
/// `sd_booted()` checks).
pub fn booted() -> bool {
    std::path::Path::new("/run/systemd/system").is_dir()
}

/// systemd and machined on the system bus.
#[derive(Debug, Clone)]
pub struct SystemdHost {
    systemd: SystemdManagerProxy<'static>,
    machines: MachineManagerProxy<'static>,
}

impl SystemdHost {
    /// systemd and machined on `system_bus`; subscribes to systemd's job
    /// signals.
    pub async fn connect(system_bus: &zbus::Connection) -> Result<SystemdHost, SystemdError> {
        let connection = system_bus;
        let systemd = SystemdManagerProxy::builder(connection)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(SystemdError::Connect)?;
        systemd.subscribe().await.map_err(SystemdError::Connect)?;
        let machines = MachineManagerProxy::builder(connection)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(SystemdError::Connect)?;
        Ok(SystemdHost { systemd, machines })
    }

    /// Starts the scope of `placement`, delegated to lxvirt, around
    /// process `pid`; returns once systemd has put `pid` in it.
    pub async fn start_scope(
        &self,
        placement: &Placement,
        pid: u32,
        description: &str,
    ) -> Result<(), SystemdError> {
        let unit = placement.scope.as_str();
        let mut removed = self.systemd.receive_job_removed().await.map_err(|source| {
            SystemdError::StartScope {
                unit: unit.to_owned(),
                source,
            }
        })?;
        let properties = [
            ("Description", Value::from(description)),
            ("Slice", Value::from(placement.slice.as_str())),
            ("Delegate", Value::from(true)),
            ("PIDs", Value::from(vec![pid])),
            // lxvirt sets pids.max per container below the scope.
            ("TasksMax", Value::from(u64::MAX)),
            // A scope that failed is not kept around under its name.
            ("CollectMode", Value::from("inactive-or-failed")),
            // Stopped after lxvirt-guests.service (stop order is the
            // reverse of start order), whose stop shuts the domains down
            // as the administrator configured: systemd's own stop of the
            // scope must not race it.
            ("Before", Value::from(vec![GUESTS_UNIT])),
        ];
        let job = self
            .systemd
            .start_transient_unit(unit, "fail", &properties, &[])
            .await
            .map_err(|source| SystemdError::StartScope {
                unit: unit.to_owned(),
                source,
            })?;
        let finished = async {
            while let Some(signal) = removed.next().await {
                let Ok(args) = signal.args() else { continue };
                if args.job == job {
                    return Some(args.result);
                }
            }
            None
        };
        match tokio::time::timeout(SCOPE_START_TIMEOUT, finished).await {
            Ok(Some(result)) if result == "done" => Ok(()),
            Ok(Some(result)) => Err(SystemdError::ScopeJob {
                unit: unit.to_owned(),
                result,
            }),
            Ok(None) | Err(_) => Err(SystemdError::ScopeTimeout {
                unit: unit.to_owned(),
            }),
        }
    }

    /// Registers a running domain with systemd-machined: `leader` is a
    /// container's init or a VM's qemu, in the scope started for it;
    /// `ifindices` are its interfaces' host ends (veths, taps).
    pub async fn register_machine(&self, machine: &Machine<'_>) -> Result<(), SystemdError> {
        let Machine {
            name,
            uuid,
            class,
            leader,
            root_directory,
            ifindices,
        } = *machine;
        self.machines
            .register_machine_with_network(
                name,
                uuid.as_bytes(),
                "lxvirt",
                class.as_str(),
                leader,
                root_directory,
                ifindices,
            )
            .await
            .map(drop)
            .map_err(|source| SystemdError::Register {
                name: name.to_owned(),
                source,
            })
    }
}

/// A running domain as machined is told of it.
#[derive(Debug, Clone, Copy)]
pub struct Machine<'a> {
    pub name: &'a str,
    pub uuid: Uuid,
    pub class: MachineClass,
    pub leader: u32,
    /// A container's root directory; empty when it has none to show.
    pub root_directory: &'a str,
    pub ifindices: &'a [i32],
}

/// The interface indices of the host-side `names` that exist (a name
/// that is gone is left out: machined only shows them).
pub fn ifindices<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<i32> {
    names
        .into_iter()
        .filter_map(|name| {
            let path = Path::new("/sys/class/net").join(name).join("ifindex");
            std::fs::read_to_string(path).ok()?.trim().parse().ok()
        })
        .collect()
}

/// The scope of domain `name`: `machine-lxvirt\x2dNAME.scope`, the name
/// escaped as systemd escapes unit names.
pub fn scope_name(name: &str) -> String {
    format!(
        "machine-{}.scope",
        escape_unit_name(&format!("lxvirt-{name}"))
    )
}

/// systemd's unit-name escaping (`systemd-escape`): ASCII letters, digits,
/// `:`, `_` and `.` (but not a leading `.`) stay; every other byte is
/// `\xNN`.
fn escape_unit_name(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for (i, byte) in text.bytes().enumerate() {
        let plain =
            byte.is_ascii_alphanumeric() || byte == b':' || byte == b'_' || (byte == b'.' && i > 0);
        if plain {
            escaped.push(char::from(byte));
        } else {
            escaped.push_str(&format!("\\x{byte:02x}"));
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_names_are_escaped_as_systemd_does() {
        assert_eq!(scope_name("web"), "machine-lxvirt\\x2dweb.scope");
        assert_eq!(
            scope_name("db-1.prod"),
            "machine-lxvirt\\x2ddb\\x2d1.prod.scope"
        );
        assert_eq!(escape_unit_name(".hidden"), "\\x2ehidden");
        assert_eq!(escape_unit_name("a b/é"), "a\\x20b\\x2f\\xc3\\xa9");
    }

    #[test]
    fn partitions_map_to_nested_slices() {
        let default = placement("web", Path::new("/machine")).unwrap();
        assert_eq!(default.slice, MACHINE_SLICE);
        assert_eq!(default.scope, "machine-lxvirt\\x2dweb.scope");
        assert_eq!(
            default.cgroup,
            Path::new("machine.slice/machine-lxvirt\\x2dweb.scope")
        );
        let nested = placement("db", Path::new("/machine/prod/eu-west")).unwrap();
        assert_eq!(nested.slice, "machine-prod-eu\\x2dwest.slice");
        assert_eq!(
            nested.cgroup,
            Path::new(
                "machine.slice/machine-prod.slice/machine-prod-eu\\x2dwest.slice/machine-lxvirt\\x2ddb.scope"
            )
        );
        let other = placement("x", Path::new("/tenants")).unwrap();
        assert_eq!(other.slice, "tenants.slice");
        assert!(matches!(
            placement("x", Path::new("/")),
            Err(PartitionError::Root)
        ));
        let long = format!("/machine/{}", "p".repeat(250));
        let error = placement("x", Path::new(&long)).unwrap_err();
        assert!(error.to_string().contains("longer than the 255"), "{error}");
    }
}
