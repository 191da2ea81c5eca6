//! Shell completion: the shells' scripts call `lxvirt` back (clap's
//! dynamic completion), which completes subcommands and options from its
//! own definition and the names of domains, networks and images from the
//! daemon it reaches (`LXVIRT_BUS_ADDRESS`, else the system bus), as
//! virsh completes domain names.

use std::time::Duration;

use clap::CommandFactory;
use clap_complete::engine::CompletionCandidate;
use clap_complete::env::{CompleteEnv, Shells};
use lxvirt_api::proxy::{ImagesProxy, ManagerProxy, NetworkProxy};

use crate::cli::Cli;

/// The variable that asks `lxvirt` for completions (set by the scripts).
const VAR: &str = "COMPLETE";
/// How long a completion may wait for the daemon.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Answers the shell and exits when it asks for completions; returns
/// otherwise.
pub fn answer_if_asked() {
    CompleteEnv::with_factory(Cli::command)
        .var(VAR)
        .completer("lxvirt")
        .complete();
}

/// The script `shell` sources to complete `lxvirt` (what `lxvirt
/// completions SHELL` prints and the packages install).
pub fn registration(shell: &str) -> std::io::Result<Vec<u8>> {
    let shells = Shells::builtins();
    let completer = shells.completer(shell).ok_or_else(|| {
        std::io::Error::other(format!(
            "no completion for the shell '{shell}'; use bash, zsh, fish, elvish or powershell"
        ))
    })?;
    let mut script = Vec::new();
    completer.write_registration(VAR, "lxvirt", "lxvirt", "lxvirt", &mut script)?;
    Ok(script)
}

pub fn domains() -> Vec<CompletionCandidate> {
    names(|connection| async move {
        let manager = ManagerProxy::new(&connection).await.ok()?;
        let list = manager.list_domain_summaries().await.ok()?;
        Some(list.into_iter().map(|d| d.name).collect())
    })
}

pub fn networks() -> Vec<CompletionCandidate> {
    names(|connection| async move {
        let manager = ManagerProxy::new(&connection).await.ok()?;
        let mut names = Vec::new();
        for path in manager.list_networks().await.ok()? {
            let network = NetworkProxy::builder(&connection)
                .path(path)
                .build()
                .await
                .ok()?;
            names.extend(network.name().await.ok());
        }
        Some(names)
    })
}

pub fn images() -> Vec<CompletionCandidate> {
    names(|connection| async move {
        let images = ImagesProxy::new(&connection).await.ok()?;
        let list = images.list_images().await.ok()?;
        Some(list.into_iter().flat_map(|i| i.names).collect())
    })
}

/// The names `ask` finds on the daemon's bus; none when it cannot be
/// reached in time (completion must never hang a shell).
fn names<F, Fut>(ask: F) -> Vec<CompletionCandidate>
where
    F: FnOnce(zbus::Connection) -> Fut,
    Fut: std::future::Future<Output = Option<Vec<String>>>,
{
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    let found = runtime.block_on(async {
        let work = async {
            let builder = match std::env::var("LXVIRT_BUS_ADDRESS") {
                Ok(address) => zbus::connection::Builder::address(address.as_str()),
                Err(_) => zbus::connection::Builder::system(),
            };
            ask(builder.build().await.ok()?).await
        };
        tokio::time::timeout(TIMEOUT, work).await.ok().flatten()
    });
    let mut names = found.unwrap_or_default();
    names.sort();
    names.dedup();
    names.into_iter().map(CompletionCandidate::new).collect()
}
