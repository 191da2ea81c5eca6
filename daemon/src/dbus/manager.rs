//! `org.lxvirt.lxvirt1.Manager`.

use lxvirt_api::{ApplyStepRecord, DomainSummaryRecord};
use uuid::Uuid;
use zbus::OwnedObjectPath;
use zbus::message::Header;
use zbus::{Connection, interface};

use std::collections::HashMap;

use zbus::OwnedVariant as OwnedValue;

use super::domain::{StateChange, change_state};
use super::options::Options;
use super::{ManagerSettings, Shared, domain_path, error::Error, network_path};
use crate::core::Lookup;
use crate::core::apply;
use crate::core::host_shutdown::{self, HostShutdownMode, HostShutdownPolicy};

/// The manager object at `/org/lxvirt/lxvirt1`.
#[derive(Debug)]
pub struct ManagerObject {
    shared: Shared,
    settings: ManagerSettings,
}

impl ManagerObject {
    pub(crate) fn new(shared: Shared, settings: ManagerSettings) -> Self {
        ManagerObject { shared, settings }
    }
}

/// `ShutdownAll`'s options over the daemon's settings.
fn host_shutdown_policy(
    defaults: HostShutdownPolicy,
    options: HashMap<String, OwnedValue>,
) -> Result<HostShutdownPolicy, Error> {
    let options = Options::new(options, &["mode", "timeout", "parallel"])?;
    let mut policy = defaults;
    if let Some(mode) = options.string("mode")? {
        policy.mode = HostShutdownMode::from_name(&mode).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "unknown mode '{mode}'; use shutdown, destroy or keep"
            ))
        })?;
    }
    if let Some(timeout) = options.unsigned("timeout")? {
        policy.timeout = std::time::Duration::from_secs(u64::from(timeout.max(1)));
    }
    if let Some(parallel) = options.unsigned("parallel")? {
        policy.parallel = parallel as usize;
    }
    Ok(policy)
}

#[interface(name = "org.lxvirt.lxvirt1.Manager")]
impl ManagerObject {
    /// Defines (or updates) a persistent domain from its XML; returns its object path.
    #[zbus(name = "DefineXML")]
    async fn define_xml(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        xml: String,
    ) -> Result<OwnedObjectPath, Error> {
        let define = self.shared.handle.define_xml(xml);
        let summary = (self.shared)
            .mutate(connection, &header, "define domains", define)
            .await?;
        Ok(domain_path(summary.uuid))
    }

    /// Creates and starts a transient domain (forgotten when it stops);
    /// returns its object path once it runs.
    #[zbus(name = "CreateXML")]
    async fn create_xml(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        xml: String,
    ) -> Result<OwnedObjectPath, Error> {
        self.shared
            .authorizer
            .check(connection, &header, "create domains")
            .await?;
        let created = self.shared.handle.create_xml(xml).await;
        // A failed start has removed the transient domain: its removal is
        // published before the caller hears of the failure.
        let seq = match &created {
            Ok((_, seq)) => *seq,
            Err(_) => self.shared.handle.last_event(),
        };
        self.shared.published(seq).await;
        Ok(domain_path(created?.0))
    }

    /// Object paths of every domain, sorted by name.
    async fn list_domains(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<OwnedObjectPath>, Error> {
        self.shared.may_read(connection, Some(&header)).await?;
        let list = self.shared.handle.list().await?;
        Ok(list.into_iter().map(|s| domain_path(s.uuid)).collect())
    }

    /// Every domain's properties, sorted by name: what `GetManagedObjects`
    /// says of domains, in one struct each.
    async fn list_domain_summaries(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<DomainSummaryRecord>, Error> {
        self.shared.may_read(connection, Some(&header)).await?;
        let list = self.shared.handle.list().await?;
        Ok(list.into_iter().map(super::domain::record_of).collect())
    }

    async fn lookup_by_name(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        name: String,
    ) -> Result<OwnedObjectPath, Error> {
        self.shared.may_read(connection, Some(&header)).await?;
        let summary = self.shared.handle.lookup(Lookup::Name(name)).await?;
        Ok(domain_path(summary.uuid))
    }

    /// `Domain.Start` of the domain named `name` (one call instead of a
    /// lookup and a call, as systemd's `StartUnit`); `NoSuchDomain` when
    /// no domain has that name.
    async fn start_domain(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        name: String,
    ) -> Result<(), Error> {
        change_state(&self.shared, connection, &header, name, StateChange::Start).await
    }

    /// `Domain.Shutdown` of the domain named `name`.
    async fn shutdown_domain(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        name: String,
        grace_seconds: u32,
        mode: String,
    ) -> Result<(), Error> {
        let change = StateChange::Shutdown {
            grace_seconds,
            mode,
        };
        change_state(&self.shared, connection, &header, name, change).await
    }

    /// `Domain.Destroy` of the domain named `name`.
    async fn destroy_domain(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        name: String,
    ) -> Result<(), Error> {
        change_state(
            &self.shared,
            connection,
            &header,
            name,
            StateChange::Destroy,
        )
        .await
    }

    /// `Domain.Reboot` of the domain named `name`.
    async fn reboot_domain(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        name: String,
        grace_seconds: u32,
        mode: String,
    ) -> Result<(), Error> {
        let change = StateChange::Reboot {
            grace_seconds,
            mode,
        };
        change_state(&self.shared, connection, &header, name, change).await
    }

    /// `Domain.Reset` of the domain named `name`.
    async fn reset_domain(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        name: String,
    ) -> Result<(), Error> {
        change_state(&self.shared, connection, &header, name, StateChange::Reset).await
    }

    /// `Domain.Suspend` of the domain named `name`.
    async fn suspend_domain(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        name: String,
    ) -> Result<(), Error> {
        change_state(
            &self.shared,
            connection,
            &header,
            name,
            StateChange::Suspend,
        )
        .await
    }

    /// `Domain.Resume` of the domain named `name`.
    async fn resume_domain(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        name: String,
    ) -> Result<(), Error> {
        change_state(&self.shared, connection, &header, name, StateChange::Resume).await
    }

    #[zbus(name = "LookupByUUID")]
    async fn lookup_by_uuid(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        uuid: String,
    ) -> Result<OwnedObjectPath, Error> {
        self.shared.may_read(connection, Some(&header)).await?;
        let summary = self.shared.handle.lookup(parse_uuid(&uuid)?).await?;
        Ok(domain_path(summary.uuid))
    }

    /// Defines (or updates) a network from its XML; returns its object path.
    #[zbus(name = "NetworkDefineXML")]
    async fn network_define_xml(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        xml: String,
    ) -> Result<OwnedObjectPath, Error> {
        let define = self.shared.handle.network_define_xml(xml);
        let summary = (self.shared)
            .mutate(connection, &header, "define networks", define)
            .await?;
        Ok(network_path(summary.uuid))
    }

    /// Creates and starts a transient network (forgotten when it is
    /// destroyed); returns its object path once it serves.
    #[zbus(name = "NetworkCreateXML")]
    async fn network_create_xml(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        xml: String,
    ) -> Result<OwnedObjectPath, Error> {
        self.shared
            .authorizer
            .check(connection, &header, "create networks")
            .await?;
        let (uuid, seq) = self.shared.handle.network_create_xml(xml).await?;
        self.shared.published(seq).await;
        Ok(network_path(uuid))
    }

    /// Object paths of every network, sorted by name.
    async fn list_networks(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<OwnedObjectPath>, Error> {
        self.shared.may_read(connection, Some(&header)).await?;
        let list = self.shared.handle.list_networks().await?;
        Ok(list.into_iter().map(|s| network_path(s.uuid)).collect())
    }

    async fn network_lookup_by_name(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        name: String,
    ) -> Result<OwnedObjectPath, Error> {
        self.shared.may_read(connection, Some(&header)).await?;
        let lookup = Lookup::Name(name);
        let summary = self.shared.handle.network_lookup(lookup).await?;
        Ok(network_path(summary.uuid))
    }

    #[zbus(name = "NetworkLookupByUUID")]
    async fn network_lookup_by_uuid(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        uuid: String,
    ) -> Result<OwnedObjectPath, Error> {
        self.shared.may_read(connection, Some(&header)).await?;
        let lookup = parse_uuid(&uuid)?;
        let summary = self.shared.handle.network_lookup(lookup).await?;
        Ok(network_path(summary.uuid))
    }

    /// An XML description of what this host supports.
    async fn get_capabilities(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<String, Error> {
        self.shared.may_read(connection, Some(&header)).await?;
        Ok(self.settings.capabilities_xml.clone())
    }

    /// Stops every active domain, as at host shutdown
    /// (`lxvirt-guests.service`): options `mode` (s: `shutdown`, `destroy`
    /// or `keep`), `timeout` (u: seconds for all of them; then the rest
    /// are destroyed), `parallel` (u: at most this many at a time, 0 all);
    /// absent ones are lxvirtd's settings. Returns (name, outcome, error)
    /// per domain, outcome `shutdown`, `destroyed`, `stopped`, `kept` or
    /// `failed`; answers once all have stopped.
    async fn shutdown_all(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        options: HashMap<String, OwnedValue>,
    ) -> Result<Vec<(String, String, String)>, Error> {
        self.shared
            .authorizer
            .check(connection, &header, "shut down every domain")
            .await?;
        let policy = host_shutdown_policy(self.settings.host_shutdown, options)?;
        tracing::info!(
            mode = policy.mode.as_str(),
            timeout_s = policy.timeout.as_secs(),
            parallel = policy.parallel,
            "stopping every active domain"
        );
        let outcomes = host_shutdown::stop_all(&self.shared.handle, policy).await;
        if let Some(seq) = outcomes.iter().filter_map(|o| o.seq).max() {
            self.shared.published(seq).await;
        }
        Ok(outcomes
            .into_iter()
            .map(|o| (o.name, o.result.to_owned(), o.error))
            .collect())
    }

    /// What `Apply` would change, without changing anything: the steps in
    /// order, each `planned`. Documents are (origin, xml, autostart):
    /// origin names the document in messages (a file name), autostart
    /// says whether it should start with the host. Options as `Apply`'s.
    /// Refused whole (InvalidXML, naming every wrong document) if any
    /// document would not define.
    async fn plan_apply(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        documents: Vec<(String, String, bool)>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<Vec<ApplyStepRecord>, Error> {
        let (sources, options) = apply_arguments(documents, options)?;
        self.shared.may_read(connection, Some(&header)).await?;
        let steps = self.shared.handle.plan(sources, options).await?;
        Ok(apply::planned(steps).iter().map(step_record).collect())
    }

    /// Brings the host in line with the documents: defines new domains and
    /// networks, updates changed ones (a formatting change is no change),
    /// sets autostart as each document says; with option `prune` (b)
    /// undefines the persistent ones no document names; with
    /// `converge_state` (b) starts what should autostart and stops what
    /// should not (and what `prune` undefines), a stop waiting
    /// `shutdown_timeout` (u, seconds, 60) before it kills, `parallel`
    /// (u, 8) at a time. Nothing changes unless every document is right.
    /// Returns every step with its result (`done`, `failed`, `skipped`
    /// after a failure); an empty list: the host was in line.
    async fn apply(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        documents: Vec<(String, String, bool)>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<Vec<ApplyStepRecord>, Error> {
        self.shared
            .authorizer
            .check(connection, &header, "apply definitions")
            .await?;
        let (sources, options) = apply_arguments(documents, options)?;
        let (outcomes, seq) = apply::apply(&self.shared.handle, sources, options).await?;
        if let Some(seq) = seq {
            self.shared.published(seq).await;
        }
        Ok(outcomes.iter().map(step_record).collect())
    }

    /// The daemon's version: anyone may read it (the bus's own clients
    /// ask it to tell whom they talk to).
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_owned()
    }
}

/// `PlanApply`'s and `Apply`'s arguments.
fn apply_arguments(
    documents: Vec<(String, String, bool)>,
    options: HashMap<String, OwnedValue>,
) -> Result<(Vec<apply::Source>, apply::ApplyOptions), Error> {
    let known = ["prune", "converge_state", "shutdown_timeout", "parallel"];
    let given = Options::new(options, &known)?;
    let mut options = apply::ApplyOptions {
        prune: given.boolean("prune")?,
        converge_state: given.boolean("converge_state")?,
        ..apply::ApplyOptions::default()
    };
    if let Some(seconds) = given.unsigned("shutdown_timeout")? {
        options.shutdown_timeout = std::time::Duration::from_secs(u64::from(seconds));
    }
    if let Some(parallel) = given.unsigned("parallel")? {
        options.parallel = (parallel as usize).max(1);
    }
    let sources = documents
        .into_iter()
        .map(|(origin, xml, autostart)| apply::Source {
            origin,
            xml,
            autostart,
        })
        .collect();
    Ok((sources, options))
}

fn step_record(outcome: &apply::Outcome) -> ApplyStepRecord {
    let step = &outcome.step;
    let detail = match &outcome.result {
        apply::StepResult::Failed(error) => error.clone(),
        _ => step.diff.clone(),
    };
    ApplyStepRecord {
        kind: step.kind.to_string(),
        name: step.name.clone(),
        action: step.action.as_str().to_owned(),
        origin: step.origin.clone(),
        result: outcome.result.as_str().to_owned(),
        detail,
    }
}

/// A uuid argument as a lookup.
fn parse_uuid(uuid: &str) -> Result<Lookup, Error> {
    Uuid::parse_str(uuid)
        .map(Lookup::Uuid)
        .map_err(|e| Error::InvalidArgument(format!("'{uuid}' is not a uuid: {e}")))
}
