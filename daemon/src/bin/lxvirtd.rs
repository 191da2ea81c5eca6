//! `lxvirtd`: the lxvirt system daemon.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lxvirtd::daemon::{self, Bus, Config};
use lxvirtd::domain::UsernsMode;
use lxvirtd::security::detect::{DEFAULT_FILE_LABEL, DEFAULT_PROCESS_LABEL};
use lxvirtd::security::userns::IdRange;
use lxvirtd::security::{BaseLabels, SecurityConfig, SelinuxPaths};
use lxvirtd::storage::BackendKind;
use lxvirtd::storage::thin::{FsType, PoolSource, ThinConfig};
use tracing_subscriber::EnvFilter;

/// Manages Linux containers (and KVM guests) defined by domain XML, over D-Bus.
#[derive(Debug, Parser)]
#[command(name = "lxvirtd", version, args_override_self = true)]
struct Args {
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
}

fn parse_userns_mode(text: &str) -> Result<UsernsMode, String> {
    UsernsMode::parse(text).ok_or_else(|| format!("'{text}' is not a mode; use 'auto' or 'host'"))
}

fn parse_size(text: &str) -> Result<u64, String> {
    lxvirtd::storage::thin::parse_size(text)
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&args.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = Config {
        bus: args.bus_address.map_or(Bus::System, Bus::Address),
        config_dir: args.config_dir,
        run_dir: args.run_dir,
        state_dir: args.state_dir,
        admin_group: Some(args.admin_group).filter(|g| !g.is_empty()),
        pids_max: Some(args.pids_max).filter(|n| *n > 0),
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
        ..Config::default()
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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
