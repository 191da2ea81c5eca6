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

    /// Starts `unit`, a scope in `machine.slice` delegated to lxvirt,
    /// around process `pid`; returns once systemd has put `pid` in it.
    pub async fn start_scope(
        &self,
        unit: &str,
        pid: u32,
        description: &str,
    ) -> Result<(), SystemdError> {
        let mut removed = self.systemd.receive_job_removed().await.map_err(|source| {
            SystemdError::StartScope {
                unit: unit.to_owned(),
                source,
            }
        })?;
        let properties = [
            ("Description", Value::from(description)),
            ("Slice", Value::from(MACHINE_SLICE)),
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

    /// Registers a running container with systemd-machined: `leader` is
    /// its init, in the scope started for it.
    pub async fn register_machine(
        &self,
        name: &str,
        uuid: Uuid,
        leader: u32,
        root_directory: &str,
    ) -> Result<(), SystemdError> {
        self.machines
            .register_machine_with_network(
                name,
                uuid.as_bytes(),
                "lxvirt",
                "container",
                leader,
                root_directory,
                &[],
            )
            .await
            .map(drop)
            .map_err(|source| SystemdError::Register {
                name: name.to_owned(),
                source,
            })
    }
}

/// The scope of container `name`: `machine-lxvirt\x2dNAME.scope`, the name
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
}
