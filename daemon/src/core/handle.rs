//! The front ends' side of the manager: one async method per command.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::oneshot;
use uuid::Uuid;

use super::manager::{Command, ManagerHandle};
use super::types::{
    CoreError, DomainStats, DomainSummary, Lookup, NetworkSummary, Seq, UndefineFlags, XmlFlags,
};
use crate::driver::ShutdownMode;

impl ManagerHandle {
    /// The sequence number of the last event the manager published: a
    /// front end that waits for it before passing on a refusal shows the
    /// state the refusal left (a failed start's `shutoff (failed)`).
    pub fn last_event(&self) -> Seq {
        self.last_seq.load(std::sync::atomic::Ordering::Acquire)
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, CoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| CoreError::ShuttingDown)?;
        rx.await.map_err(|_| CoreError::ShuttingDown)
    }

    pub async fn define_xml(&self, xml: String) -> Result<(DomainSummary, Seq), CoreError> {
        self.ask(|reply| Command::Define { xml, reply }).await?
    }

    /// The steps that would bring the host in line with `sources` (see
    /// [`crate::core::apply`]); refused whole if any document is wrong.
    pub async fn plan(
        &self,
        sources: Vec<crate::core::apply::Source>,
        options: crate::core::apply::ApplyOptions,
    ) -> Result<Vec<crate::core::apply::Step>, CoreError> {
        self.ask(|reply| Command::Plan {
            sources,
            options,
            reply,
        })
        .await?
    }

    /// Where the domain's console output is kept (see [`crate::core::logs`]).
    pub async fn console_log(&self, uuid: Uuid) -> Result<crate::core::logs::LogSource, CoreError> {
        self.ask(|reply| Command::ConsoleLog { uuid, reply })
            .await?
    }

    /// Creates and starts a transient domain; returns its uuid.
    pub async fn create_xml(&self, xml: String) -> Result<(Uuid, Seq), CoreError> {
        self.ask(|reply| Command::Create { xml, reply }).await?
    }

    pub async fn undefine(&self, uuid: Uuid, flags: UndefineFlags) -> Result<Seq, CoreError> {
        self.ask(|reply| Command::Undefine { uuid, flags, reply })
            .await?
    }

    pub async fn set_autostart(&self, uuid: Uuid, enabled: bool) -> Result<Seq, CoreError> {
        self.ask(|reply| Command::SetAutostart {
            uuid,
            enabled,
            reply,
        })
        .await?
    }

    pub async fn start(&self, uuid: Uuid) -> Result<Seq, CoreError> {
        self.ask(|reply| Command::Start { uuid, reply }).await?
    }

    /// Asks the instance to stop as `mode` says (a container's init gets
    /// SIGTERM, a VM the power button), forcibly after `grace`; returns
    /// once it stopped.
    pub async fn shutdown(
        &self,
        uuid: Uuid,
        grace: Duration,
        mode: ShutdownMode,
    ) -> Result<Seq, CoreError> {
        self.ask(|reply| Command::Shutdown {
            uuid,
            grace,
            mode,
            reply,
        })
        .await?
    }

    /// SIGKILL to the container; returns once it stopped.
    pub async fn destroy(&self, uuid: Uuid) -> Result<Seq, CoreError> {
        self.ask(|reply| Command::Destroy { uuid, reply }).await?
    }

    /// Stops (as shutdown) and starts again; returns once it runs.
    pub async fn reboot(
        &self,
        uuid: Uuid,
        grace: Duration,
        mode: ShutdownMode,
    ) -> Result<Seq, CoreError> {
        self.ask(|reply| Command::Reboot {
            uuid,
            grace,
            mode,
            reply,
        })
        .await?
    }

    /// Resets the instance at once: a VM's machine in place, a container
    /// killed and started again; returns once it runs again.
    pub async fn reset(&self, uuid: Uuid) -> Result<Seq, CoreError> {
        self.ask(|reply| Command::Reset { uuid, reply }).await?
    }

    pub async fn suspend(&self, uuid: Uuid) -> Result<Seq, CoreError> {
        self.ask(|reply| Command::Suspend { uuid, reply }).await?
    }

    pub async fn resume(&self, uuid: Uuid) -> Result<Seq, CoreError> {
        self.ask(|reply| Command::Resume { uuid, reply }).await?
    }

    pub async fn open_console(&self, uuid: Uuid, index: u32) -> Result<OwnedFd, CoreError> {
        self.ask(|reply| Command::OpenConsole { uuid, index, reply })
            .await?
    }

    /// Runs a command in the container with `stdio`, or a terminal of its
    /// own when `None`.
    pub async fn enter(
        &self,
        uuid: Uuid,
        argv: Vec<String>,
        env: Vec<String>,
        cwd: Option<PathBuf>,
        noseclabel: bool,
        stdio: Option<[OwnedFd; 3]>,
    ) -> Result<crate::core::types::Entered, CoreError> {
        self.ask(|reply| Command::Enter {
            uuid,
            argv,
            env,
            cwd,
            noseclabel,
            stdio,
            reply,
        })
        .await?
    }

    /// Changes the domain's tuning: its running instance, its persistent
    /// definition or both, as `flags` say.
    pub async fn tune(
        &self,
        uuid: Uuid,
        tuning: crate::core::manager::Tuning,
        flags: crate::core::types::AffectFlags,
    ) -> Result<Seq, CoreError> {
        self.ask(|reply| Command::Tune {
            uuid,
            tuning,
            flags,
            reply,
        })
        .await?
    }

    /// Sends `signal` to the process numbered `pid` inside the domain.
    pub async fn send_signal(&self, uuid: Uuid, pid: i64, signal: i32) -> Result<(), CoreError> {
        self.ask(|reply| Command::SendSignal {
            uuid,
            pid,
            signal,
            reply,
        })
        .await?
    }

    pub async fn stats(&self, uuid: Uuid) -> Result<DomainStats, CoreError> {
        self.ask(|reply| Command::GetStats { uuid, reply }).await?
    }

    pub async fn lookup(&self, lookup: Lookup) -> Result<DomainSummary, CoreError> {
        self.ask(|reply| Command::Lookup { lookup, reply }).await?
    }

    pub async fn list(&self) -> Result<Vec<DomainSummary>, CoreError> {
        self.ask(|reply| Command::List { reply }).await
    }

    pub async fn get_xml(&self, uuid: Uuid, flags: XmlFlags) -> Result<String, CoreError> {
        self.ask(|reply| Command::GetXml { uuid, flags, reply })
            .await?
    }

    /// Copies a shut off or paused domain's writable layer into image `name`.
    pub async fn commit(
        &self,
        uuid: Uuid,
        name: String,
    ) -> Result<crate::storage::CommitReport, CoreError> {
        self.ask(|reply| Command::Commit { uuid, name, reply })
            .await?
    }

    /// Removes an image no domain uses; returns the ids removed.
    pub async fn remove_image(
        &self,
        reference: String,
    ) -> Result<Vec<crate::storage::ImageId>, CoreError> {
        self.ask(|reply| Command::RemoveImage { reference, reply })
            .await?
    }

    /// Starts the autostart domains (once per host boot).
    pub async fn autostart(&self) -> Result<(), CoreError> {
        self.tx
            .send(Command::Autostart)
            .await
            .map_err(|_| CoreError::ShuttingDown)
    }

    /// Defines a network, or updates the one of that name.
    pub async fn network_define_xml(
        &self,
        xml: String,
    ) -> Result<(NetworkSummary, Seq), CoreError> {
        self.ask(|reply| Command::NetworkDefine { xml, reply })
            .await?
    }

    pub async fn network_undefine(&self, uuid: Uuid) -> Result<Seq, CoreError> {
        self.ask(|reply| Command::NetworkUndefine { uuid, reply })
            .await?
    }

    pub async fn network_set_autostart(&self, uuid: Uuid, enabled: bool) -> Result<Seq, CoreError> {
        self.ask(|reply| Command::NetworkSetAutostart {
            uuid,
            enabled,
            reply,
        })
        .await?
    }

    pub async fn network_lookup(&self, lookup: Lookup) -> Result<NetworkSummary, CoreError> {
        self.ask(|reply| Command::NetworkLookup { lookup, reply })
            .await?
    }

    /// Every network, by name.
    pub async fn list_networks(&self) -> Result<Vec<NetworkSummary>, CoreError> {
        self.ask(|reply| Command::NetworkList { reply }).await
    }

    pub async fn network_get_xml(&self, uuid: Uuid, flags: XmlFlags) -> Result<String, CoreError> {
        self.ask(|reply| Command::NetworkGetXml { uuid, flags, reply })
            .await?
    }

    /// Starts a defined network; returns once it serves.
    pub async fn network_start(&self, uuid: Uuid) -> Result<Seq, CoreError> {
        self.ask(|reply| Command::NetworkStart { uuid, reply })
            .await?
    }

    /// Defines a transient network and starts it.
    pub async fn network_create_xml(&self, xml: String) -> Result<(Uuid, Seq), CoreError> {
        self.ask(|reply| Command::NetworkCreate { xml, reply })
            .await?
    }

    /// Takes a network down; `force` even with running domains on it.
    pub async fn network_destroy(&self, uuid: Uuid, force: bool) -> Result<Seq, CoreError> {
        self.ask(|reply| Command::NetworkDestroy { uuid, force, reply })
            .await?
    }

    pub async fn network_leases(
        &self,
        uuid: Uuid,
    ) -> Result<Vec<crate::net::dnsmasq::Lease>, CoreError> {
        self.ask(|reply| Command::NetworkLeases { uuid, reply })
            .await?
    }

    pub async fn interface_addresses(
        &self,
        uuid: Uuid,
        source: crate::core::types::AddressSource,
    ) -> Result<Vec<crate::core::types::InterfaceAddresses>, CoreError> {
        self.ask(|reply| Command::InterfaceAddresses {
            uuid,
            source,
            reply,
        })
        .await?
    }

    pub async fn interface_stats(
        &self,
        uuid: Uuid,
        device: String,
    ) -> Result<crate::driver::InterfaceCounters, CoreError> {
        self.ask(|reply| Command::InterfaceStats {
            uuid,
            device,
            reply,
        })
        .await?
    }

    /// Attaches or detaches a device (`xml`), live, in the definition or
    /// both as `flags` say.
    pub async fn change_device(
        &self,
        uuid: Uuid,
        change: crate::core::manager::DeviceChange,
        xml: String,
        flags: crate::core::types::AffectFlags,
    ) -> Result<Seq, CoreError> {
        self.ask(|reply| Command::ChangeDevice {
            uuid,
            change,
            xml,
            flags,
            reply,
        })
        .await?
    }
}
