//! The plan of an `apply` (see [`crate::core::apply`]): every document
//! checked as `define` would check it, compared with what the host holds,
//! from one snapshot of the manager's state.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::Manager;
use super::networks::check_pair;
use crate::core::apply::{Action, ApplyOptions, Source, Step, diff};
use crate::core::types::CoreError;
use crate::domain::{DocumentKind, NetworkDef, xml};
use crate::error_chain::error_chain;

/// What a plan needs to know of a domain or network the host has.
#[derive(Debug)]
pub(super) struct Held {
    pub(super) name: String,
    /// The stored definition, canonical.
    pub(super) xml: String,
    pub(super) persistent: bool,
    pub(super) autostart: bool,
    /// Running (or paused), or starting.
    pub(super) active: bool,
}

/// A document checked, with what `define` would store for it.
struct Wanted<'a> {
    source: &'a Source,
    name: String,
    uuid: Uuid,
    /// Canonical.
    xml: String,
    /// The object it updates.
    existing: Option<Uuid>,
}

/// A document the run refuses, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub origin: String,
    pub problem: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.origin, self.problem)
    }
}

/// Every document checked, by kind.
#[derive(Default)]
struct Checked<'a> {
    domains: Vec<Wanted<'a>>,
    networks: Vec<(Wanted<'a>, NetworkDef)>,
}

impl Manager {
    /// The steps that bring the host in line with `sources`, or every
    /// document that is wrong (then nothing may change).
    pub(super) fn plan(
        &self,
        sources: &[Source],
        options: &ApplyOptions,
    ) -> Result<Vec<Step>, CoreError> {
        let mut refusals = Vec::new();
        let mut checked = Checked::default();
        for source in sources {
            let refuse = |problem: String| Refusal {
                origin: source.origin.clone(),
                problem,
            };
            match self.check_source(source) {
                Ok(Prepared::Domain(wanted)) => checked.domains.push(wanted),
                Ok(Prepared::Network(wanted, def)) => checked.networks.push((wanted, *def)),
                Err(error) => refusals.push(refuse(error_chain(&error))),
            }
        }
        refusals.extend(duplicates(DocumentKind::Domain, checked.domains.iter()));
        refusals.extend(duplicates(
            DocumentKind::Network,
            checked.networks.iter().map(|(w, _)| w),
        ));
        // Networks defined together must not clash with one another either.
        for (i, (wanted, def)) in checked.networks.iter().enumerate() {
            for (_, other) in &checked.networks[..i] {
                if let Err(error) = check_pair(def, other, None) {
                    refusals.push(Refusal {
                        origin: wanted.source.origin.clone(),
                        problem: error_chain(&error),
                    });
                }
            }
        }
        if !refusals.is_empty() {
            return Err(CoreError::ApplyRefused(refusals));
        }
        let held_domains: HashMap<Uuid, Held> = self
            .domains
            .iter()
            .map(|(uuid, entry)| {
                let held = Held {
                    name: entry.name().to_owned(),
                    xml: entry.def.to_xml(),
                    persistent: entry.persistent,
                    autostart: entry.autostart,
                    active: entry.state().is_active() || entry.starting(),
                };
                (*uuid, held)
            })
            .collect();
        let held_networks = self.networks.held();
        let domains = steps_of(
            DocumentKind::Domain,
            &checked.domains,
            &held_domains,
            options,
        );
        let networks_wanted: Vec<_> = checked.networks.into_iter().map(|(w, _)| w).collect();
        let networks = steps_of(
            DocumentKind::Network,
            &networks_wanted,
            &held_networks,
            options,
        );
        // Stops before undefines (a pruned domain is stopped first) and
        // domains before their networks; networks are defined and started
        // before the domains that use them.
        let order = [
            (&domains, Phase::Stop),
            (&domains, Phase::Undefine),
            (&networks, Phase::Stop),
            (&networks, Phase::Undefine),
            (&networks, Phase::Define),
            (&networks, Phase::Autostart),
            (&domains, Phase::Define),
            (&domains, Phase::Autostart),
            (&networks, Phase::Start),
            (&domains, Phase::Start),
        ];
        Ok(order
            .into_iter()
            .flat_map(|(steps, phase)| steps.iter().filter(move |s| phase_of(s.action) == phase))
            .cloned()
            .collect())
    }

    fn check_source<'a>(&self, source: &'a Source) -> Result<Prepared<'a>, CoreError> {
        let root = xml::parse_str(&source.xml).map_err(|e| CoreError::InvalidXml(e.into()))?;
        match DocumentKind::of(&root) {
            Some(DocumentKind::Domain) => {
                let (def, existing) = self.prepare_define(&source.xml)?;
                Ok(Prepared::Domain(Wanted {
                    source,
                    name: def.name().to_owned(),
                    uuid: def.uuid,
                    xml: def.to_xml(),
                    existing,
                }))
            }
            Some(DocumentKind::Network) => {
                let (def, existing) = self.networks.prepare(&source.xml)?;
                let wanted = Wanted {
                    source,
                    name: def.name().to_owned(),
                    uuid: def.uuid,
                    xml: def.to_xml(),
                    existing,
                };
                Ok(Prepared::Network(wanted, Box::new(def)))
            }
            None => Err(CoreError::NotADefinition {
                root: root.qname.clone(),
            }),
        }
    }
}

enum Prepared<'a> {
    Domain(Wanted<'a>),
    Network(Wanted<'a>, Box<NetworkDef>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Stop,
    Undefine,
    Define,
    Autostart,
    Start,
}

fn phase_of(action: Action) -> Phase {
    match action {
        Action::Stop => Phase::Stop,
        Action::Undefine => Phase::Undefine,
        Action::Define | Action::Update => Phase::Define,
        Action::Autostart(_) => Phase::Autostart,
        Action::Start => Phase::Start,
    }
}

/// Two documents of one kind with the same name or uuid.
fn duplicates<'a>(
    kind: DocumentKind,
    wanted: impl Iterator<Item = &'a Wanted<'a>>,
) -> Vec<Refusal> {
    let mut names: HashMap<&str, &str> = HashMap::new();
    let mut uuids: HashMap<Uuid, &str> = HashMap::new();
    let mut refusals = Vec::new();
    for w in wanted {
        let origin = w.source.origin.as_str();
        if let Some(first) = names.insert(&w.name, origin) {
            refusals.push(Refusal {
                origin: origin.to_owned(),
                problem: format!(
                    "{kind} '{}' is also defined by {first}; keep one of the two",
                    w.name
                ),
            });
        } else if let Some(first) = uuids.insert(w.uuid, origin) {
            refusals.push(Refusal {
                origin: origin.to_owned(),
                problem: format!(
                    "{kind} '{}' has uuid {}, as the document {first}; give each its own <uuid>",
                    w.name, w.uuid
                ),
            });
        }
    }
    refusals
}

/// The steps for one kind of object, unordered.
fn steps_of(
    kind: DocumentKind,
    wanted: &[Wanted<'_>],
    held: &HashMap<Uuid, Held>,
    options: &ApplyOptions,
) -> Vec<Step> {
    let mut steps = Vec::new();
    let step = |name: &str, action: Action, origin: &str| Step {
        kind,
        name: name.to_owned(),
        action,
        origin: origin.to_owned(),
        diff: String::new(),
        xml: None,
    };
    for w in wanted {
        let origin = w.source.origin.as_str();
        let current = w.existing.and_then(|u| held.get(&u));
        let label = format!("{kind} {}", w.name);
        let define = match current {
            None => Some((Action::Define, diff(&label, "", &w.xml))),
            // A transient one becomes persistent.
            Some(h) if !h.persistent => Some((Action::Define, diff(&label, &h.xml, &w.xml))),
            Some(h) if h.xml != w.xml => Some((Action::Update, diff(&label, &h.xml, &w.xml))),
            Some(_) => None,
        };
        if let Some((action, diff)) = define {
            steps.push(Step {
                diff,
                xml: Some(w.source.xml.clone()),
                ..step(&w.name, action, origin)
            });
        }
        let autostart = current.is_some_and(|h| h.persistent && h.autostart);
        if autostart != w.source.autostart {
            steps.push(step(&w.name, Action::Autostart(w.source.autostart), origin));
        }
        if options.converge_state {
            let active = current.is_some_and(|h| h.active);
            if w.source.autostart && !active {
                steps.push(step(&w.name, Action::Start, origin));
            } else if !w.source.autostart && active {
                steps.push(step(&w.name, Action::Stop, origin));
            }
        }
    }
    if options.prune {
        let kept: HashSet<Uuid> = wanted.iter().filter_map(|w| w.existing).collect();
        let mut gone: Vec<&Held> = held
            .iter()
            .filter(|(uuid, h)| h.persistent && !kept.contains(uuid))
            .map(|(_, h)| h)
            .collect();
        gone.sort_by(|a, b| a.name.cmp(&b.name));
        for h in gone {
            if options.converge_state && h.active {
                steps.push(step(&h.name, Action::Stop, ""));
            }
            steps.push(step(&h.name, Action::Undefine, ""));
        }
    }
    steps.sort_by(|a, b| a.name.cmp(&b.name));
    steps
}
