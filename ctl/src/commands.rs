//! The commands: each decodes its arguments, makes D-Bus calls through the
//! proxies of `lxvirt_api`, and prints.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;

use clap::CommandFactory;
use lxvirt_api::proxy::{DomainProxy, ManagerProxy};
use lxvirt_api::{
    BUS_NAME, DOMAIN_INTERFACE, DomainSummaryRecord, MANAGER_PATH, UndefineFlags, XmlFlags,
};
use lxvirt_domain::{Document, DocumentKind, schema, xml};
use zbus::OwnedObjectPath;

use crate::cli::{Cli, Command, Format};
use crate::output::{self, DomainRow};

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_CONNECT: u8 = 3;
pub const EXIT_INVALID_XML: u8 = 4;
pub const EXIT_NO_SUCH_DOMAIN: u8 = 5;
pub const EXIT_ACCESS_DENIED: u8 = 6;
pub const EXIT_INVALID_STATE: u8 = 7;
pub const EXIT_NO_SUCH_IMAGE: u8 = 8;
/// Bad arguments (as clap exits for its own).
pub const EXIT_USAGE: u8 = 2;
/// `apply` changed something (with `--dry-run`: would).
pub const EXIT_CHANGED: u8 = 9;

/// A command that failed: one line for the user and the exit status.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub exit_code: u8,
}

impl Failure {
    pub(crate) fn new(exit_code: u8, message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            exit_code,
        }
    }
}

impl From<zbus::Error> for Failure {
    fn from(error: zbus::Error) -> Failure {
        match &error {
            zbus::Error::MethodError(name, description, _) => {
                let message = description.clone().unwrap_or_else(|| name.to_string());
                let code = match name.as_str() {
                    "org.lxvirt.lxvirt1.Error.NoSuchDomain"
                    | "org.lxvirt.lxvirt1.Error.NoSuchNetwork" => EXIT_NO_SUCH_DOMAIN,
                    "org.lxvirt.lxvirt1.Error.InvalidXml" => EXIT_INVALID_XML,
                    "org.lxvirt.lxvirt1.Error.AccessDenied"
                    | "org.freedesktop.DBus.Error.AccessDenied" => EXIT_ACCESS_DENIED,
                    "org.lxvirt.lxvirt1.Error.InvalidState"
                    | "org.lxvirt.lxvirt1.Error.ImageInUse" => EXIT_INVALID_STATE,
                    "org.lxvirt.lxvirt1.Error.NoSuchImage" => EXIT_NO_SUCH_IMAGE,
                    "org.freedesktop.DBus.Error.ServiceUnknown"
                    | "org.freedesktop.DBus.Error.NameHasNoOwner" => {
                        return Failure::new(
                            EXIT_CONNECT,
                            "lxvirtd is not running on this bus; start it (lxvirtd, or systemctl start lxvirtd)",
                        );
                    }
                    _ => EXIT_FAILURE,
                };
                Failure::new(code, message)
            }
            zbus::Error::FDO(fdo) => match fdo.as_ref() {
                zbus::fdo::Error::AccessDenied(m) => Failure::new(EXIT_ACCESS_DENIED, m.clone()),
                zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_) => {
                    Failure::new(
                        EXIT_CONNECT,
                        "lxvirtd is not running on this bus; start it (lxvirtd, or systemctl start lxvirtd)",
                    )
                }
                other => Failure::new(EXIT_FAILURE, other.to_string()),
            },
            _ => Failure::new(EXIT_FAILURE, error.to_string()),
        }
    }
}

impl From<zbus::fdo::Error> for Failure {
    fn from(error: zbus::fdo::Error) -> Failure {
        Failure::from(zbus::Error::from(error))
    }
}

pub(crate) type Result<T> = std::result::Result<T, Failure>;

pub async fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        // Offline commands first: they need no bus.
        Command::Validate { files } => return Ok(validate(&files)),
        Command::Completions { shell } => {
            let script = crate::complete::registration(&shell.to_string())
                .map_err(|e| Failure::new(EXIT_FAILURE, e.to_string()))?;
            print_bytes(&script)?;
            return Ok(EXIT_OK);
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut page)
                .map_err(|e| Failure::new(EXIT_FAILURE, e.to_string()))?;
            print_bytes(&page)?;
            return Ok(EXIT_OK);
        }
        Command::Version => return version(cli.connect.as_deref(), cli.output).await,
        _ => {}
    }
    let private = if served_by_private_socket(&cli.command) {
        private_connection(cli.socket.as_deref(), cli.connect.as_deref()).await?
    } else {
        None
    };
    let connection = match private {
        Some(connection) => connection,
        None => connect(cli.connect.as_deref()).await?,
    };
    let manager = ManagerProxy::new(&connection).await?;
    match cli.command {
        Command::ShutdownAll {
            mode,
            timeout,
            parallel,
        } => {
            let mut options: HashMap<&str, zbus::Variant<'_>> = HashMap::new();
            if let Some(mode) = mode {
                options.insert("mode", mode.into());
            }
            if let Some(timeout) = timeout {
                options.insert("timeout", timeout.into());
            }
            if let Some(parallel) = parallel {
                options.insert("parallel", parallel.into());
            }
            let outcomes = manager.shutdown_all(options).await?;
            let failed = outcomes.iter().any(|(_, outcome, _)| outcome == "failed");
            match cli.output {
                Format::Text => {
                    for (name, outcome, error) in &outcomes {
                        match outcome.as_str() {
                            "failed" => println!("Domain '{name}': failed: {error}"),
                            "shutdown" => println!("Domain '{name}' is shut down"),
                            "destroyed" => println!("Domain '{name}' destroyed"),
                            "stopped" => println!("Domain '{name}' stopped"),
                            "kept" => println!("Domain '{name}' left running"),
                            other => println!("Domain '{name}': {other}"),
                        }
                    }
                }
                Format::Json => print_json(
                    &outcomes
                        .iter()
                        .map(|(name, outcome, error)| {
                            serde_json::json!({"name": name, "outcome": outcome, "error": error})
                        })
                        .collect::<Vec<_>>(),
                )?,
            }
            return Ok(if failed { EXIT_FAILURE } else { EXIT_OK });
        }
        Command::Edit { domain: name } => {
            return crate::edit::edit(&connection, &manager, &name).await;
        }
        Command::Apply(args) => return crate::apply::apply(&manager, &args, cli.output).await,
        Command::Event {
            domain,
            keep_going,
            timeout,
            timestamp,
        } => {
            let options = crate::events::EventOptions {
                domain,
                keep_going,
                timeout,
                timestamp,
                format: cli.output,
            };
            return crate::events::event(&connection, &manager, options).await;
        }
        Command::Define { file } => {
            let xml = read_input(&file)?;
            let path = manager.define_xml(&xml).await?;
            let name = domain(&connection, path).await?.name().await?;
            println!("Domain '{name}' defined from {}", file.display());
        }
        Command::Undefine {
            domain: name,
            keep_writable_layer,
        } => {
            let proxy = lookup(&connection, &manager, &name).await?;
            // Read the name first: the object is gone after the call.
            let name = display_name(&proxy, &name).await?;
            let flags = if keep_writable_layer {
                UndefineFlags::KEEP_WRITABLE_LAYER
            } else {
                0
            };
            proxy.undefine(flags).await?;
            println!("Domain '{name}' has been undefined");
        }
        Command::Start { domain: name } => {
            let by_name = manager.start_domain(&name);
            let name = change_state(&connection, &manager, &name, by_name, |d| async move {
                d.start().await
            })
            .await?;
            println!("Domain '{name}' started");
        }
        Command::Create { file } => {
            let xml = read_input(&file)?;
            let path = manager.create_xml(&xml).await?;
            let name = domain(&connection, path).await?.name().await?;
            println!("Domain '{name}' created from {}", file.display());
        }
        Command::Shutdown {
            domain: name,
            grace,
            mode,
        } => {
            let (grace, mode) = (grace.max(1), mode.map_or("", |m| m.as_str()));
            let by_name = manager.shutdown_domain(&name, grace, mode);
            let name = change_state(&connection, &manager, &name, by_name, |d| async move {
                d.shutdown(grace, mode).await
            })
            .await?;
            println!("Domain '{name}' is shut down");
        }
        Command::Destroy { domain: name } => {
            let by_name = manager.destroy_domain(&name);
            let name = change_state(&connection, &manager, &name, by_name, |d| async move {
                d.destroy().await
            })
            .await?;
            println!("Domain '{name}' destroyed");
        }
        Command::Reboot {
            domain: name,
            grace,
            mode,
        } => {
            let (grace, mode) = (grace.max(1), mode.map_or("", |m| m.as_str()));
            let by_name = manager.reboot_domain(&name, grace, mode);
            let name = change_state(&connection, &manager, &name, by_name, |d| async move {
                d.reboot(grace, mode).await
            })
            .await?;
            println!("Domain '{name}' rebooted");
        }
        Command::Reset { domain: name } => {
            let by_name = manager.reset_domain(&name);
            let name = change_state(&connection, &manager, &name, by_name, |d| async move {
                d.reset().await
            })
            .await?;
            println!("Domain '{name}' was reset");
        }
        Command::Suspend { domain: name } => {
            let by_name = manager.suspend_domain(&name);
            let name = change_state(&connection, &manager, &name, by_name, |d| async move {
                d.suspend().await
            })
            .await?;
            println!("Domain '{name}' suspended");
        }
        Command::Resume { domain: name } => {
            let by_name = manager.resume_domain(&name);
            let name = change_state(&connection, &manager, &name, by_name, |d| async move {
                d.resume().await
            })
            .await?;
            println!("Domain '{name}' resumed");
        }
        Command::Logs {
            domain: name,
            follow,
            tail,
        } => {
            let proxy = lookup(&connection, &manager, &name).await?;
            let mut options: HashMap<&str, zbus::Variant<'_>> = HashMap::new();
            options.insert("follow", follow.into());
            if let Some(tail) = tail {
                options.insert("tail", tail.into());
            }
            let fd: std::os::fd::OwnedFd = proxy.open_console_log(options).await?.into();
            drop(proxy);
            let mut log = std::fs::File::from(fd);
            std::io::copy(&mut log, &mut std::io::stdout().lock())
                .map_err(|e| Failure::new(EXIT_FAILURE, format!("logs: {e}")))?;
        }
        Command::Console {
            domain: name,
            devname,
        } => {
            let proxy = lookup(&connection, &manager, &name).await?;
            let fd = proxy.open_console(devname.as_deref().unwrap_or("")).await?;
            let name = display_name(&proxy, &name).await?;
            drop(proxy);
            return crate::terminal::attach(&name, fd.into())
                .map(|()| EXIT_OK)
                .map_err(|e| Failure::new(EXIT_FAILURE, format!("console: {e}")));
        }
        Command::Enter {
            domain: name,
            noseclabel,
            cwd,
            env,
            tty,
            command,
        } => {
            let proxy = lookup(&connection, &manager, &name).await?;
            let how = EnterHow {
                env,
                cwd,
                noseclabel,
                tty,
            };
            return enter(&proxy, command, how).await;
        }
        Command::Shell {
            domain: name,
            env,
            command,
        } => {
            let proxy = lookup(&connection, &manager, &name).await?;
            let command = if command.is_empty() {
                vec!["/bin/sh".to_owned(), "-l".to_owned()]
            } else {
                command
            };
            let how = EnterHow {
                env,
                cwd: None,
                noseclabel: false,
                tty: true,
            };
            return enter(&proxy, command, how).await;
        }
        Command::Memtune {
            domain: name,
            hard_limit,
            soft_limit,
            swap_hard_limit,
            affect,
        } => {
            let proxy = lookup(&connection, &manager, &name).await?;
            let values = [hard_limit, soft_limit, swap_hard_limit];
            crate::tuning::memtune(&proxy, values, affect, cli.output).await?;
        }
        Command::Schedinfo {
            domain: name,
            set,
            affect,
        } => {
            let proxy = lookup(&connection, &manager, &name).await?;
            crate::tuning::schedinfo(&proxy, &set, affect, cli.output).await?;
        }
        Command::Blkiotune {
            domain: name,
            weight,
            device_weights,
            device_read_bytes_sec,
            device_write_bytes_sec,
            device_read_iops_sec,
            device_write_iops_sec,
            affect,
        } => {
            let proxy = lookup(&connection, &manager, &name).await?;
            let devices = [
                ("device_weight", device_weights),
                ("device_read_bytes_sec", device_read_bytes_sec),
                ("device_write_bytes_sec", device_write_bytes_sec),
                ("device_read_iops_sec", device_read_iops_sec),
                ("device_write_iops_sec", device_write_iops_sec),
            ];
            crate::tuning::blkiotune(&proxy, weight, devices, affect, cli.output).await?;
        }
        Command::Numatune {
            domain: name,
            nodeset,
            mode,
            affect,
        } => {
            let proxy = lookup(&connection, &manager, &name).await?;
            crate::tuning::numatune(&proxy, nodeset, mode, affect, cli.output).await?;
        }
        Command::Setmem {
            domain: name,
            size,
            affect,
        } => {
            let proxy = lookup(&connection, &manager, &name).await?;
            crate::tuning::set_memory(&proxy, &size, affect, false).await?;
        }
        Command::Setmaxmem {
            domain: name,
            size,
            affect,
        } => {
            let proxy = lookup(&connection, &manager, &name).await?;
            crate::tuning::set_memory(&proxy, &size, affect, true).await?;
        }
        Command::Emulatorpin {
            domain: name,
            cpulist,
            affect,
        } => {
            let proxy = lookup(&connection, &manager, &name).await?;
            match cpulist.as_deref() {
                Some("none") => proxy.pin_emulator("", affect.flags()).await?,
                Some(list) => proxy.pin_emulator(list, affect.flags()).await?,
                None => {
                    let pinned = proxy.get_emulator_pin(affect.flags()).await?;
                    match cli.output {
                        Format::Json => print_json(&serde_json::json!({ "cpuset": pinned }))?,
                        Format::Text if pinned.is_empty() => println!("cpuset: (all)"),
                        Format::Text => println!("cpuset: {pinned}"),
                    }
                }
            }
        }
        Command::PidsLimit {
            domain: name,
            max,
            affect,
        } => {
            let proxy = lookup(&connection, &manager, &name).await?;
            crate::tuning::pids_limit(&proxy, max.as_deref(), affect, cli.output).await?;
        }
        Command::SendProcessSignal {
            domain: name,
            pid,
            signal,
        } => {
            let proxy = lookup(&connection, &manager, &name).await?;
            proxy.send_process_signal(pid, &signal).await?;
        }
        Command::Domstats { domain: name } => {
            let proxy = lookup(&connection, &manager, &name).await?;
            let stats = stats_of(&proxy).await?;
            match cli.output {
                Format::Text => {
                    for (key, value) in &stats {
                        println!("{key:<24}{value}");
                    }
                }
                Format::Json => print_json(&stats)?,
            }
        }
        Command::List { all, name } => {
            let rows: Vec<DomainRow> = list(&connection)
                .await?
                .into_iter()
                .filter(|r| all || r.is_active())
                .collect();
            match cli.output {
                Format::Text if name => rows.iter().for_each(|r| println!("{}", r.name)),
                Format::Text => print!("{}", output::list_text(&rows)),
                Format::Json => print_json(&rows)?,
            }
        }
        Command::Dominfo { domain: name } => {
            let proxy = lookup(&connection, &manager, &name).await?;
            let props = properties_of(&proxy).await?;
            let info = output::DomainInfo {
                row: row_from_properties(&props),
                pid: props
                    .get("Pid")
                    .and_then(|v| u32::try_from(v.clone()).ok())
                    .filter(|p| *p != 0),
                start_time: props
                    .get("StartTime")
                    .and_then(|v| u64::try_from(v.clone()).ok())
                    .filter(|t| *t != 0),
                stats: stats_of(&proxy).await?,
            };
            match cli.output {
                Format::Text => print!("{}", output::info_text(&info)),
                Format::Json => print_json(&info)?,
            }
        }
        Command::Domstate {
            domain: name,
            reason,
        } => {
            let proxy = lookup(&connection, &manager, &name).await?;
            let (state, why) = (proxy.state().await?, proxy.state_reason().await?);
            match cli.output {
                Format::Json => print_json(&serde_json::json!({ "state": state, "reason": why }))?,
                Format::Text if reason => println!("{state} ({why})"),
                Format::Text => println!("{state}"),
            }
        }
        Command::Domuuid { domain: name } => {
            let proxy = lookup(&connection, &manager, &name).await?;
            println!("{}", proxy.uuid().await?);
        }
        Command::Domname { uuid } => {
            let path = manager.lookup_by_uuid(&uuid).await?;
            println!("{}", domain(&connection, path).await?.name().await?);
        }
        Command::Dumpxml {
            domain: name,
            inactive,
            security_info,
        } => {
            let proxy = lookup(&connection, &manager, &name).await?;
            let flags = if security_info { XmlFlags::SECURE } else { 0 }
                | if inactive { XmlFlags::INACTIVE } else { 0 };
            print!("{}", proxy.get_xml(flags).await?);
        }
        Command::Autostart {
            domain: name,
            disable,
        } => {
            let proxy = lookup(&connection, &manager, &name).await?;
            proxy.set_autostart(!disable).await?;
            let name = display_name(&proxy, &name).await?;
            if disable {
                println!("Domain '{name}' unmarked as autostarted");
            } else {
                println!("Domain '{name}' marked as autostarted");
            }
        }
        Command::Capabilities => print!("{}", manager.get_capabilities().await?),
        Command::Net(command) => {
            crate::networks::run(&connection, &manager, cli.output, command).await?
        }
        Command::DomIf(command) => {
            crate::interfaces::run(&connection, &manager, cli.output, command).await?
        }
        Command::Image { command } => crate::images::run(&connection, cli.output, command).await?,
        Command::Commit {
            domain: name,
            image,
        } => {
            let proxy = lookup(&connection, &manager, &name).await?;
            let id = proxy.commit(&image, 0).await?;
            let name = display_name(&proxy, &name).await?;
            match cli.output {
                Format::Text => println!("Domain '{name}' committed as image '{image}': {id}"),
                Format::Json => print_json(&serde_json::json!({"id": id, "name": image}))?,
            }
        }
        Command::Validate { .. }
        | Command::Completions { .. }
        | Command::Man
        | Command::Version => {}
    }
    Ok(EXIT_OK)
}

/// The socket lxvirtd serves the manager on for root (its run directory's
/// `private`).
const PRIVATE_SOCKET: &str = "/run/lxvirt/private";

/// Whether `command` is one the private socket serves: the list, and a
/// state change of a domain given by name (by UUID it needs the domain's
/// object, which only the bus has).
fn served_by_private_socket(command: &Command) -> bool {
    let name = match command {
        Command::List { .. } => return true,
        Command::Start { domain }
        | Command::Shutdown { domain, .. }
        | Command::Destroy { domain }
        | Command::Reboot { domain, .. }
        | Command::Reset { domain }
        | Command::Suspend { domain }
        | Command::Resume { domain } => domain,
        _ => return false,
    };
    uuid::Uuid::parse_str(name).is_err()
}

/// A peer-to-peer connection to lxvirtd's private socket: `socket`, else
/// the default one when no bus address was given. `None` when the default
/// socket cannot be used (not root, no daemon there): the bus then serves.
async fn private_connection(
    socket: Option<&Path>,
    address: Option<&str>,
) -> Result<Option<zbus::Connection>> {
    let (path, chosen) = match (socket, address) {
        (Some(path), _) => (path, true),
        (None, None) => (Path::new(PRIVATE_SOCKET), false),
        (None, Some(_)) => return Ok(None),
    };
    let stream = match std::os::unix::net::UnixStream::connect(path) {
        Ok(stream) => stream,
        Err(_) if !chosen => return Ok(None),
        Err(e) => {
            return Err(Failure::new(
                EXIT_CONNECT,
                format!(
                    "cannot connect to lxvirtd's private socket {}: {e}; is lxvirtd running with that run directory, and are you root? (without --socket the bus serves)",
                    path.display()
                ),
            ));
        }
    };
    let built = zbus::connection::Builder::unix_stream(stream)
        .p2p()
        .build()
        .await;
    match built {
        Ok(connection) => Ok(Some(connection)),
        Err(_) if !chosen => Ok(None),
        Err(e) => Err(Failure::new(
            EXIT_CONNECT,
            format!(
                "cannot talk to lxvirtd on its private socket {}: {e}",
                path.display()
            ),
        )),
    }
}

async fn connect(address: Option<&str>) -> Result<zbus::Connection> {
    let (builder, what) = match address {
        Some(address) => (
            zbus::connection::Builder::address(address),
            format!("bus {address}"),
        ),
        None => (
            zbus::connection::Builder::system(),
            "the system bus".to_owned(),
        ),
    };
    builder.build().await.map_err(|e| {
        Failure::new(
            EXIT_CONNECT,
            format!("cannot connect to {what}: {e}; is dbus-daemon running? (--connect ADDR or LXVIRT_BUS_ADDRESS choose another bus)"),
        )
    })
}

async fn domain(
    connection: &zbus::Connection,
    path: OwnedObjectPath,
) -> Result<DomainProxy<'static>> {
    // A command reads a property or two: a Get each is cheaper than the
    // cache's match rule and GetAll (dominfo asks for all at once).
    Ok(DomainProxy::builder(connection)
        .path(path)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?)
}

/// The name of the domain at `path`.
pub(crate) async fn domain_name(
    connection: &zbus::Connection,
    path: OwnedObjectPath,
) -> Result<String> {
    Ok(domain(connection, path).await?.name().await?)
}

/// `lxvirt version`: the client's, then the daemon's (when it answers).
async fn version(address: Option<&str>, format: Format) -> Result<u8> {
    let client = env!("CARGO_PKG_VERSION");
    let daemon = match connect(address).await {
        Ok(connection) => ManagerProxy::new(&connection).await?.version().await,
        Err(failure) => Err(zbus::Error::Failure(failure.message)),
    };
    match format {
        Format::Text => {
            println!("lxvirt (client): {client}");
            if let Ok(daemon) = &daemon {
                println!("lxvirtd (daemon): {daemon}");
            }
        }
        Format::Json => print_json(&serde_json::json!({
            "client": client,
            "daemon": daemon.as_ref().ok(),
        }))?,
    }
    daemon.map(|_| EXIT_OK).map_err(|e| match e {
        zbus::Error::Failure(message) => Failure::new(EXIT_CONNECT, message),
        other => Failure::from(other),
    })
}

/// Finds a domain by name, or by uuid when no domain has that name.
pub(crate) async fn lookup(
    connection: &zbus::Connection,
    manager: &ManagerProxy<'_>,
    name_or_uuid: &str,
) -> Result<DomainProxy<'static>> {
    let path = by_name_or_uuid(name_or_uuid, manager.lookup_by_name(name_or_uuid), || {
        manager.lookup_by_uuid(name_or_uuid)
    })
    .await?;
    domain(connection, path).await
}

/// A state change in one call to the manager by name (`by_name`:
/// `StartDomain` …); when no domain has that name and `name_or_uuid` is a
/// UUID, or the daemon is older than those methods, the domain is looked
/// up and `on_object` asks its object. Returns the domain's name, for
/// the message.
async fn change_state<G>(
    connection: &zbus::Connection,
    manager: &ManagerProxy<'_>,
    name_or_uuid: &str,
    by_name: impl Future<Output = zbus::Result<()>>,
    on_object: impl FnOnce(DomainProxy<'static>) -> G,
) -> Result<String>
where
    G: Future<Output = zbus::Result<()>>,
{
    match by_name.await {
        Ok(()) => Ok(name_or_uuid.to_owned()),
        Err(error)
            if is_error(&error, "org.freedesktop.DBus.Error.UnknownMethod")
                || (is_error(&error, "org.lxvirt.lxvirt1.Error.NoSuchDomain")
                    && uuid::Uuid::parse_str(name_or_uuid).is_ok()) =>
        {
            let proxy = lookup(connection, manager, name_or_uuid).await?;
            let name = display_name(&proxy, name_or_uuid).await?;
            on_object(proxy).await?;
            Ok(name)
        }
        Err(error) => Err(error.into()),
    }
}

/// Whether `error` is the D-Bus error `name`.
fn is_error(error: &zbus::Error, name: &str) -> bool {
    match error {
        zbus::Error::MethodError(error_name, _, _) => error_name.as_str() == name,
        zbus::Error::FDO(fdo) => zbus::DBusError::name(fdo.as_ref()).as_str() == name,
        _ => false,
    }
}

/// The path `by_name` finds, or, when that fails and `name_or_uuid` is a
/// uuid, the one `by_uuid` finds.
pub(crate) async fn by_name_or_uuid<G>(
    name_or_uuid: &str,
    by_name: impl Future<Output = zbus::Result<OwnedObjectPath>>,
    by_uuid: impl FnOnce() -> G,
) -> Result<OwnedObjectPath>
where
    G: Future<Output = zbus::Result<OwnedObjectPath>>,
{
    match by_name.await {
        Ok(path) => Ok(path),
        Err(_) if uuid::Uuid::parse_str(name_or_uuid).is_ok() => Ok(by_uuid().await?),
        Err(by_name) => Err(by_name.into()),
    }
}

/// The domain's name for a message: the argument itself when it named the
/// domain (a lookup by name is exact), else (a UUID) asked of the daemon.
async fn display_name(proxy: &DomainProxy<'_>, given: &str) -> Result<String> {
    if uuid::Uuid::parse_str(given).is_err() {
        return Ok(given.to_owned());
    }
    Ok(proxy.name().await?)
}

/// Every property of a domain in one round trip.
async fn properties_of(proxy: &DomainProxy<'_>) -> Result<HashMap<String, zbus::OwnedVariant>> {
    let properties = zbus::fdo::PropertiesProxy::builder(proxy.inner().connection())
        .destination(BUS_NAME)
        .path(proxy.inner().path().to_owned())
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    let interface = zbus::names::InterfaceName::try_from(DOMAIN_INTERFACE)?;
    Ok(properties.get_all(interface).await?)
}

/// Every domain with its summary, in one round trip: ListDomainSummaries,
/// or GetManagedObjects from a daemon of an earlier version that lacks it.
async fn list(connection: &zbus::Connection) -> Result<Vec<DomainRow>> {
    let manager = ManagerProxy::new(connection).await?;
    let mut rows = match manager.list_domain_summaries().await {
        Ok(records) => records.into_iter().map(row_from_record).collect(),
        Err(zbus::Error::MethodError(name, _, _))
            if name.as_str() == "org.freedesktop.DBus.Error.UnknownMethod" =>
        {
            managed(connection, DOMAIN_INTERFACE, row_from_properties).await?
        }
        Err(e) => return Err(e.into()),
    };
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(rows)
}

fn row_from_record(record: DomainSummaryRecord) -> DomainRow {
    DomainRow {
        name: record.name,
        uuid: record.uuid,
        domain_type: record.domain_type,
        state: record.state,
        state_reason: record.state_reason,
        persistent: record.persistent,
        autostart: record.autostart,
        security_label: record.security_label,
        user_namespace: record.user_namespace,
        host_ids: Some(record.host_ids).filter(|(_, count)| *count > 0),
    }
}

/// Every object with `interface`, made into rows from its properties by
/// `row`, in one round trip (GetManagedObjects).
pub(crate) async fn managed<T>(
    connection: &zbus::Connection,
    interface: &str,
    row: impl Fn(&HashMap<String, zbus::OwnedVariant>) -> T,
) -> Result<Vec<T>> {
    let object_manager = zbus::fdo::ObjectManagerProxy::builder(connection)
        .destination(BUS_NAME)
        .path(MANAGER_PATH)
        .build()
        .await?;
    let objects = object_manager.get_managed_objects().await?;
    Ok(objects
        .values()
        .filter_map(|interfaces| interfaces.get(interface))
        .map(row)
        .collect())
}

async fn stats_of(proxy: &DomainProxy<'_>) -> Result<std::collections::BTreeMap<String, u64>> {
    Ok(proxy
        .get_stats()
        .await?
        .into_iter()
        .filter_map(|(k, v)| u64::try_from(v).ok().map(|v| (k, v)))
        .collect())
}

/// How `enter` runs its command.
struct EnterHow {
    env: Vec<String>,
    cwd: Option<std::path::PathBuf>,
    noseclabel: bool,
    tty: bool,
}

/// Runs a command in the domain, with this process's stdio or on a
/// terminal of its own relayed to this one; exits with its status.
async fn enter(proxy: &DomainProxy<'_>, command: Vec<String>, how: EnterHow) -> Result<u8> {
    let term = std::env::var("TERM").unwrap_or_else(|_| "dumb".into());
    let mut env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        format!("TERM={term}"),
        "HOME=/root".to_owned(),
        "container=lxvirt".to_owned(),
    ];
    for var in how.env {
        if !var.contains('=') {
            return Err(Failure::new(
                EXIT_USAGE,
                format!("--env {var}: expected KEY=VALUE"),
            ));
        }
        let key = var.split('=').next().unwrap_or_default().to_owned();
        env.retain(|e| !e.starts_with(&format!("{key}=")));
        env.push(var);
    }
    let mut options = HashMap::new();
    options.insert("noseclabel", zbus::Variant::from(how.noseclabel));
    let cwd_text = how.cwd.map(|c| c.display().to_string());
    if let Some(cwd) = &cwd_text {
        options.insert("cwd", zbus::Variant::from(cwd.as_str()));
    }
    let argv: Vec<&str> = command.iter().map(String::as_str).collect();
    let envs: Vec<&str> = env.iter().map(String::as_str).collect();
    let exit = if how.tty {
        let (_pid, terminal, exit) = proxy.enter_terminal(&argv, &envs, options).await?;
        let terminal: std::os::fd::OwnedFd = terminal.into();
        tokio::task::spawn_blocking(move || crate::terminal::relay(terminal))
            .await
            .map_err(|e| Failure::new(EXIT_FAILURE, e.to_string()))?
            .map_err(|e| Failure::new(EXIT_FAILURE, format!("terminal: {e}")))?;
        exit
    } else {
        let stdin = std::io::stdin();
        let stdout = std::io::stdout();
        let stderr = std::io::stderr();
        let (_pid, exit) = proxy
            .enter(
                &argv,
                &envs,
                zbus::Fd::from(&stdin),
                zbus::Fd::from(&stdout),
                zbus::Fd::from(&stderr),
                options,
            )
            .await?;
        exit
    };
    let exit: std::os::fd::OwnedFd = exit.into();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(
            &mut std::io::BufReader::new(std::fs::File::from(exit)),
            &mut line,
        );
        line
    })
    .await
    .map_err(|e| Failure::new(EXIT_FAILURE, e.to_string()))?;
    let status: serde_json::Value = serde_json::from_str(&line).map_err(|_| {
        Failure::new(
            EXIT_FAILURE,
            "the command's exit status was lost (the domain stopped?)",
        )
    })?;
    if let Some(code) = status
        .pointer("/exited/code")
        .and_then(serde_json::Value::as_i64)
    {
        return Ok(u8::try_from(code & 0xff).unwrap_or(EXIT_FAILURE));
    }
    if let Some(signal) = status
        .pointer("/signaled/signal")
        .and_then(serde_json::Value::as_i64)
    {
        return Ok(u8::try_from((128 + signal) & 0xff).unwrap_or(EXIT_FAILURE));
    }
    Err(Failure::new(
        EXIT_FAILURE,
        format!("unexpected exit status {line}"),
    ))
}

/// The properties of one object, as `GetManagedObjects` returns them.
pub(crate) struct Props<'a>(pub &'a HashMap<String, zbus::OwnedVariant>);

impl Props<'_> {
    /// A string property; empty when missing.
    pub(crate) fn string(&self, key: &str) -> String {
        self.0
            .get(key)
            .and_then(|v| String::try_from(v.clone()).ok())
            .unwrap_or_default()
    }

    /// A boolean property; false when missing.
    pub(crate) fn boolean(&self, key: &str) -> bool {
        self.0
            .get(key)
            .and_then(|v| bool::try_from(v.clone()).ok())
            .unwrap_or_default()
    }
}

fn row_from_properties(props: &HashMap<String, zbus::OwnedVariant>) -> DomainRow {
    let string = |key: &str| Props(props).string(key);
    let boolean = |key: &str| Props(props).boolean(key);
    DomainRow {
        name: string("Name"),
        uuid: string("UUID"),
        domain_type: string("Type"),
        state: string("State"),
        state_reason: string("StateReason"),
        persistent: boolean("Persistent"),
        autostart: boolean("Autostart"),
        security_label: string("SecurityLabel"),
        user_namespace: string("UserNamespace"),
        host_ids: props
            .get("HostIds")
            .and_then(|v| <(u32, u32)>::try_from(v.clone()).ok())
            .filter(|(_, count)| *count > 0),
    }
}

pub(crate) fn read_input(file: &Path) -> Result<String> {
    let mut bytes = Vec::new();
    let read = if file == Path::new("-") {
        std::io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::File::open(file).and_then(|mut f| f.read_to_end(&mut bytes).map(|_| ()))
    };
    read.map_err(|e| Failure::new(EXIT_FAILURE, format!("cannot read {}: {e}", file.display())))?;
    String::from_utf8(bytes).map_err(|e| {
        Failure::new(
            EXIT_INVALID_XML,
            format!(
                "{}: not UTF-8 (byte {})",
                file.display(),
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// Validates each file offline; prints one line per problem.
fn validate(files: &[std::path::PathBuf]) -> u8 {
    let mut failed = false;
    let checked = problems_of_each(files, |file| match std::fs::read(file) {
        Ok(bytes) => problems_of(&bytes),
        Err(e) => vec![format!("cannot read: {e}")],
    });
    for (file, problems) in files.iter().zip(checked) {
        if problems.is_empty() {
            println!("{}: valid", file.display());
        } else {
            failed = true;
            for problem in problems {
                println!("{}:{problem}", file.display());
            }
        }
    }
    if failed { EXIT_INVALID_XML } else { EXIT_OK }
}

/// `check` of every item, in order, on every CPU: a repository of
/// thousands of documents is checked in a fraction of the time.
pub(crate) fn problems_of_each<T: Sync>(
    items: &[T],
    check: impl Fn(&T) -> Vec<String> + Sync,
) -> Vec<Vec<String>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // A few documents are not worth a thread.
    let chunk = items.len().div_ceil(threads).max(16);
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(|| part.iter().map(&check).collect::<Vec<_>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| match worker.join() {
                Ok(problems) => problems,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

/// Schema violations and semantic errors of a document, each starting with
/// `LINE:COL: ` where known. The root element says which kind of document
/// it is (`<domain>` or `<network>`), and so which schema and parser apply.
pub(crate) fn problems_of(bytes: &[u8]) -> Vec<String> {
    let root = match xml::parse_bytes(bytes) {
        Ok(root) => root,
        Err(e) => return vec![with_pos(e.pos(), &e.to_string())],
    };
    // An unknown root has no schema: the parser says what is wrong.
    if let Some(kind) = DocumentKind::of(&root)
        && let Err(errors) = schema::validate(kind, &root)
    {
        return errors
            .violations
            .iter()
            .map(|v| match v.pos {
                Some(pos) => format!("{pos}: {}: {}", v.path, v.message),
                None => format!(" {}: {}", v.path, v.message),
            })
            .collect();
    }
    let text = std::str::from_utf8(bytes).unwrap_or_default();
    match Document::from_element(&root, text) {
        Ok(_) => Vec::new(),
        Err(e) => vec![with_pos(e.pos(), &e.to_string())],
    }
}

/// Messages of the model already start with the position; others get a space.
fn with_pos(pos: Option<xml::Pos>, message: &str) -> String {
    match pos {
        Some(_) => message.to_owned(),
        None => format!(" {message}"),
    }
}

pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::new(EXIT_FAILURE, e.to_string()))?;
    println!("{text}");
    Ok(())
}

fn print_bytes(bytes: &[u8]) -> Result<()> {
    std::io::stdout()
        .write_all(bytes)
        .map_err(|e| Failure::new(EXIT_FAILURE, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::{Command, is_error, problems_of_each, served_by_private_socket};

    #[test]
    fn the_private_socket_serves_the_list_and_state_changes_by_name_only() {
        let domain = || "web".to_owned();
        assert!(served_by_private_socket(&Command::Start {
            domain: domain()
        }));
        assert!(served_by_private_socket(&Command::Destroy {
            domain: domain()
        }));
        assert!(served_by_private_socket(&Command::List {
            all: true,
            name: false
        }));
        // By UUID the CLI may need the domain's object: only the bus has it.
        assert!(!served_by_private_socket(&Command::Start {
            domain: "43fcf948-2a2d-4476-b2f2-d7391f1a8421".into()
        }));
        assert!(!served_by_private_socket(&Command::Dominfo {
            domain: domain()
        }));
        assert!(!served_by_private_socket(&Command::Undefine {
            domain: domain(),
            keep_writable_layer: false
        }));
    }

    #[test]
    fn documents_checked_on_every_cpu_keep_their_order() {
        let items: Vec<usize> = (0..1000).collect();
        let each = problems_of_each(&items, |n| {
            if n % 7 == 0 {
                vec![n.to_string()]
            } else {
                Vec::new()
            }
        });
        assert_eq!(each.len(), items.len());
        for (n, problems) in each.iter().enumerate() {
            let expected: Vec<String> = if n % 7 == 0 {
                vec![n.to_string()]
            } else {
                Vec::new()
            };
            assert_eq!(*problems, expected, "item {n}");
        }
        assert!(problems_of_each(&[] as &[usize], |_| vec!["x".into()]).is_empty());
    }

    #[test]
    fn errors_are_told_by_name_however_zbus_carries_them() {
        let unknown = "org.freedesktop.DBus.Error.UnknownMethod";
        let method_error = zbus::Error::MethodError(
            zbus::names::OwnedErrorName::try_from(unknown).unwrap(),
            Some("Unknown method 'StartDomain'".into()),
            zbus::message::Message::method_call("/", "Ping")
                .build(&())
                .unwrap(),
        );
        assert!(is_error(&method_error, unknown));
        assert!(!is_error(
            &method_error,
            "org.lxvirt.lxvirt1.Error.NoSuchDomain"
        ));
        let fdo = zbus::Error::FDO(Box::new(zbus::fdo::Error::UnknownMethod("x".into())));
        assert!(is_error(&fdo, unknown));
        assert!(!is_error(&zbus::Error::InvalidReply, unknown));
    }
}
