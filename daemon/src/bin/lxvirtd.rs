//! `lxvirtd`: the lxvirt system daemon.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, Parser};
use lxvirtd::core::host_shutdown::{HostShutdownMode, HostShutdownPolicy};
use lxvirtd::daemon::{self, Bus, Config};
use lxvirtd::domain::UsernsMode;
use lxvirtd::error_chain::error_chain;
use lxvirtd::lxc::protocol::MonitorLog;
use lxvirtd::security::detect::{DEFAULT_FILE_LABEL, DEFAULT_PROCESS_LABEL};
use lxvirtd::security::userns::IdRange;
use lxvirtd::security::{BaseLabels, SecurityConfig, SelinuxPaths};
use lxvirtd::service::journal::{self, Journal, JournalLayer, LogTarget};
use lxvirtd::service::notify::{self, Notifier};
use lxvirtd::service::settings;
use lxvirtd::storage::BackendKind;
use lxvirtd::storage::thin::{FsType, PoolSource, ThinConfig};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Manages Linux containers (and KVM guests) defined by domain XML, over D-Bus.
#[derive(Debug, Parser)]
#[command(name = "lxvirtd", version, args_override_self = true)]
struct Args {
    /// Settings file: `name = value` lines, names as the long options
    /// below; options given here win over it. A missing default file is
    /// no settings.
    #[arg(long, value_name = "FILE", env = "LXVIRTD_CONFIG_FILE", default_value = DEFAULT_SETTINGS)]
    config_file: PathBuf,
    /// Serve on this D-Bus address instead of the system bus.
    #[arg(long, value_name = "ADDR", env = "LXVIRTD_BUS_ADDRESS")]
    bus_address: Option<String>,
    /// Persistent definitions.
    #[arg(long, value_name = "DIR", default_value = "/etc/lxvirt")]
    config_dir: PathBuf,
    /// Live state, sockets and the instance lock.
    #[arg(long, value_name = "DIR", default_value = "/run/lxvirt")]
    run_dir: PathBuf,
    /// Images and writable layers.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/lxvirt")]
    state_dir: PathBuf,
    /// Group whose members may change domains besides root ("" for none).
    #[arg(long, value_name = "GROUP", default_value = "lxvirt")]
    admin_group: String,
    /// Image store backend: overlay or devicemapper. When it cannot work
    /// on this host the daemon still manages domains; image operations
    /// fail and say why.
    #[arg(long, value_name = "BACKEND", default_value = "overlay")]
    storage_backend: BackendKind,
    /// devicemapper: the directory of the thin pool's sparse data and
    /// metadata files (default STATE_DIR/storage/thin).
    #[arg(long, value_name = "DIR", conflicts_with = "dm_pool_device")]
    dm_pool_file: Option<PathBuf>,
    /// devicemapper: the pool's data size (sparse; K, M, G, T), fixed when
    /// the pool is created.
    #[arg(long, value_name = "SIZE", default_value = "20G", value_parser = parse_size)]
    dm_pool_size: u64,
    /// devicemapper: a block device given whole to the pool, instead of
    /// files.
    #[arg(long, value_name = "DEV")]
    dm_pool_device: Option<PathBuf>,
    /// devicemapper: the file system of image volumes, ext4 or xfs.
    #[arg(long, value_name = "FS", default_value = "ext4")]
    dm_fs: FsType,
    /// devicemapper: each volume's virtual size, the most a container's
    /// root holds (K, M, G, T).
    #[arg(long, value_name = "SIZE", default_value = "10G", value_parser = parse_size)]
    dm_volume_size: u64,
    /// The cgroup partition of domains without <resource><partition>.
    #[arg(long, value_name = "PATH", default_value = "/machine")]
    default_partition: PathBuf,
    /// How domains without <idmap> or <lxvirt:userns> run: "auto", in a
    /// user namespace with host ids lxvirt allocates, or "host", root
    /// inside is host root (libvirt's default).
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = parse_userns_mode)]
    default_userns: UsernsMode,
    /// Define the `default` network (NAT, DHCP, DNS, started with the
    /// host) at the first start, when there are no networks yet.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    default_network: bool,
    /// The host ids handed out to user namespaces, START:COUNT, in blocks
    /// of 65536 per container.
    #[arg(long, value_name = "START:COUNT", default_value = "1000000:1000000000")]
    userns_range: IdRange,
    /// What `lxvirt shutdown-all` (lxvirt-guests.service, at host
    /// shutdown) does with the active domains: "shutdown" (asked, in
    /// parallel, destroyed at the time limit), "destroy", or "keep".
    #[arg(long, value_name = "MODE", default_value = "shutdown", value_parser = parse_host_shutdown_mode)]
    on_host_shutdown: HostShutdownMode,
    /// The time limit of those shutdowns, for all of them together.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    host_shutdown_timeout: u64,
    /// At most this many domains shutting down at a time (0: all at once).
    #[arg(long, value_name = "N", default_value_t = 0)]
    host_shutdown_parallel: usize,
    /// Most processes in one container (cgroup pids.max; 0 for no limit).
    #[arg(long, value_name = "N", default_value_t = 16384)]
    pids_max: u64,
    /// How far lxvirtd may raise the host's kernel.pty.max (every console
    /// is a pty) when containers come near it; 0: never raise it.
    #[arg(long, value_name = "N", default_value_t = lxvirtd::daemon::DEFAULT_PTY_MAX_LIMIT)]
    pty_max_limit: u64,
    /// Set favordynmods on the host's cgroup2 mount (keeping its other
    /// options): moving a process into a cgroup then waits for no RCU
    /// grace period, most of a start's time otherwise.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    cgroup_favordynmods: bool,
    /// The per-container monitor program (default: beside lxvirtd, else
    /// /usr/libexec/lxvirt/lxvirt-monitor).
    #[arg(long, value_name = "PATH")]
    monitor: Option<PathBuf>,
    /// On an SELinux host, run domains without <seclabel> unconfined
    /// instead of giving them a dynamic label.
    #[arg(long)]
    no_default_confinement: bool,
    /// Container process context where the policy's lxc_contexts has no
    /// "process" key (the level is replaced by the domain's pair).
    #[arg(long, value_name = "CONTEXT", default_value = DEFAULT_PROCESS_LABEL)]
    default_process_label: String,
    /// Container file context where lxc_contexts has no "file" key.
    #[arg(long, value_name = "CONTEXT", default_value = DEFAULT_FILE_LABEL)]
    default_file_label: String,
    /// SELinux configuration directory (config, <type>/contexts/lxc_contexts).
    #[arg(long, value_name = "DIR", default_value = "/etc/selinux")]
    selinux_config_dir: PathBuf,
    /// Log filter (tracing EnvFilter syntax), e.g. "info" or "lxvirtd=debug".
    #[arg(
        long,
        value_name = "FILTER",
        env = "LXVIRTD_LOG",
        default_value = "info"
    )]
    log: String,
    /// Where log messages go: "journal" (systemd's, with structured
    /// fields such as LXVIRT_DOMAIN; monitors log there too), "stderr", or
    /// "auto": the journal when stderr is connected to it.
    #[arg(long, value_name = "TARGET", default_value = "auto")]
    log_target: LogTarget,
    /// Print the man page (roff) and exit: the package build installs it.
    #[arg(long, hide = true)]
    man_page: bool,
}

const DEFAULT_SETTINGS: &str = "/etc/lxvirt/lxvirtd.conf";

/// The command line with the settings file's options put before the
/// given ones (which therefore win).
fn args_with_settings() -> Result<Args, String> {
    let given: Vec<OsString> = std::env::args_os().collect();
    let first = Args::parse_from(&given);
    if first.man_page {
        return Ok(first);
    }
    let required = first.config_file != Path::new(DEFAULT_SETTINGS);
    let settings = settings::read(&first.config_file, required)
        .map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
    if settings.is_empty() {
        return Ok(first);
    }
    let command = Args::command();
    let mut args: Vec<OsString> = given.iter().take(1).cloned().collect();
    for setting in &settings {
        let place = format!("{}:{}", first.config_file.display(), setting.line);
        let known = command
            .get_arguments()
            .find(|a| a.get_long() == Some(setting.name.as_str()))
            .filter(|a| setting.name != "config-file" && !a.is_hide_set())
            .ok_or_else(|| {
                format!(
                    "{place}: unknown setting '{}'; settings are the long options of `lxvirtd --help`",
                    setting.name
                )
            })?;
        if known.get_action().takes_values() {
            args.push(format!("--{}={}", setting.name, setting.value).into());
        } else {
            match setting.value.as_str() {
                "true" | "yes" => args.push(format!("--{}", setting.name).into()),
                "false" | "no" => {}
                other => {
                    return Err(format!(
                        "{place}: '{}' is true or false, not '{other}'",
                        setting.name
                    ));
                }
            }
        }
    }
    args.extend(given.into_iter().skip(1));
    Args::try_parse_from(args).map_err(|error| {
        let message = error.render().to_string();
        let message = message.lines().next().unwrap_or_default();
        let message = message.strip_prefix("error: ").unwrap_or(message);
        // A value the file gave is named with the file's line.
        match settings
            .iter()
            .find(|s| message.contains(&format!("'--{} ", s.name)))
        {
            Some(s) => format!("{}:{}: {message}", first.config_file.display(), s.line),
            None => message.to_owned(),
        }
    })
}

fn parse_host_shutdown_mode(text: &str) -> Result<HostShutdownMode, String> {
    HostShutdownMode::from_name(text)
        .ok_or_else(|| format!("'{text}' is not a mode; use 'shutdown', 'destroy' or 'keep'"))
}

fn parse_userns_mode(text: &str) -> Result<UsernsMode, String> {
    UsernsMode::parse(text).ok_or_else(|| format!("'{text}' is not a mode; use 'auto' or 'host'"))
}

fn parse_size(text: &str) -> Result<u64, String> {
    lxvirtd::storage::thin::parse_size(text)
}

/// The allocator's arenas: one per runtime worker; the blocking threads
/// share them (docs/benchmarks.md, "Density").
const HEAP_ARENAS: i32 = 2;

/// How long an idle blocking thread waits for work before it ends.
const BLOCKING_THREAD_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(300);

fn main() -> ExitCode {
    let args = match args_with_settings() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("lxvirtd: {error}");
            return ExitCode::from(2);
        }
    };
    if args.man_page {
        return print_man_page();
    }
    let notifier = Notifier::from_env(std::process::id());
    for var in notify::ENV_VARS {
        // SAFETY: no other thread runs yet (the runtime starts below), so
        // nothing reads the environment while it changes.
        unsafe { std::env::remove_var(var) };
    }
    let monitor_log = start_logging(&args.log, args.log_target);
    let config = Config {
        bus: args.bus_address.map_or(Bus::System, Bus::Address),
        config_dir: args.config_dir,
        run_dir: args.run_dir,
        state_dir: args.state_dir,
        admin_group: Some(args.admin_group).filter(|g| !g.is_empty()),
        pids_max: Some(args.pids_max).filter(|n| *n > 0),
        host_shutdown: HostShutdownPolicy {
            mode: args.on_host_shutdown,
            timeout: std::time::Duration::from_secs(args.host_shutdown_timeout),
            parallel: args.host_shutdown_parallel,
        },
        pty_max_limit: args.pty_max_limit,
        cgroup_favor_dynmods: args.cgroup_favordynmods,
        default_partition: args.default_partition,
        default_userns: args.default_userns,
        default_network: args.default_network,
        userns_range: args.userns_range,
        storage_backend: args.storage_backend,
        dm: ThinConfig {
            pool: match args.dm_pool_device {
                Some(device) => PoolSource::Device(device),
                None => PoolSource::Files {
                    dir: args.dm_pool_file,
                    size: args.dm_pool_size,
                },
            },
            fs: args.dm_fs,
            volume_size: args.dm_volume_size,
            ..ThinConfig::default()
        },
        monitor_exe: args
            .monitor
            .unwrap_or_else(lxvirtd::lxc::driver::LxcDriver::default_monitor_exe),
        monitor_log,
        security: SecurityConfig {
            paths: SelinuxPaths {
                etc_selinux: args.selinux_config_dir,
                ..SelinuxPaths::default()
            },
            defaults: BaseLabels {
                process: args.default_process_label,
                file: args.default_file_label,
                ..BaseLabels::default()
            },
            default_confinement: !args.no_default_confinement,
        },
        notifier: match notifier {
            Ok(notifier) => notifier.map(Arc::new),
            Err(error) => {
                tracing::warn!(%error, "NOTIFY_SOCKET is set but unusable: the service manager hears nothing");
                None
            }
        },
        ..Config::default()
    };
    lxvirtd::sys::process::limit_heap_arenas(HEAP_ARENAS);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // A start hands its blocking steps to this pool's threads; kept
        // idle for minutes rather than tokio's 10 s, a start after a pause
        // finds them instead of creating them (clone, a fresh stack).
        .thread_keep_alive(BLOCKING_THREAD_KEEP_ALIVE)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("lxvirtd: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(daemon::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let error = anyhow::Error::from(error);
            tracing::error!("{error:#}");
            eprintln!("lxvirtd: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sends log messages to the journal or to stderr; monitors log where the
/// daemon does.
fn start_logging(filter: &str, target: LogTarget) -> MonitorLog {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let unreachable = if target.wants_journal() {
        match Journal::open(Path::new(journal::SOCKET)) {
            Ok(journal) => {
                tracing_subscriber::registry()
                    .with(filter)
                    .with(JournalLayer::new(journal, "lxvirtd"))
                    .init();
                return MonitorLog::Journal;
            }
            Err(error) => Some(error),
        }
    } else {
        None
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Some(error) = unreachable {
        tracing::warn!(error = %error_chain(&error), "logging to stderr instead of the journal");
    }
    MonitorLog::File
}

/// lxvirtd(8), from the options above.
fn print_man_page() -> ExitCode {
    use std::io::Write;
    let mut page = Vec::new();
    let written = clap_mangen::Man::new(Args::command())
        .section("8")
        .render(&mut page)
        .and_then(|()| std::io::stdout().write_all(&page));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lxvirtd: cannot write the man page: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the daemon can still be stopped with SIGKILL.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// The example settings file names only real options, each with its
    /// default value: it must not drift from `--help`.
    #[test]
    fn the_example_settings_are_the_options_with_their_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/lxvirtd.conf");
        let text = std::fs::read_to_string(&path).unwrap();
        let uncommented: String = text
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .filter(|l| l.contains(" = ") && !l.starts_with(' '))
            .map(|l| format!("{l}\n"))
            .collect();
        let examples = settings::parse(&uncommented, &path).unwrap();
        assert!(examples.len() >= 10, "{examples:?}");
        let command = Args::command();
        for example in examples {
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(example.name.as_str()))
                .unwrap_or_else(|| panic!("{}: no option --{}", example.line, example.name));
            let default: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            match (arg.get_action().takes_values(), default.as_slice()) {
                (false, _) => assert_eq!(example.value, "false", "--{}", example.name),
                (true, [default]) => assert_eq!(&example.value, default, "--{}", example.name),
                // Options without a default show an example value.
                (true, _) => {}
            }
        }
    }
}
