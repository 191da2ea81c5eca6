//! `lxvirt event`: the domains' `Lifecycle` signals as lines, as
//! `virsh event` prints them.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use lxvirt_api::proxy::ManagerProxy;
use lxvirt_api::{BUS_NAME, DOMAIN_INTERFACE};
use serde::Serialize;
use zbus::{MatchRule, MessageStream, OwnedObjectPath};

use crate::cli::Format;
use crate::commands::{EXIT_CONNECT, EXIT_FAILURE, EXIT_OK, Failure, Result, domain_name, lookup};
use crate::output::{unix_now_precise, utc_text_millis};

/// Where domain objects live: the match rule covers them all.
const DOMAIN_PATHS: &str = "/org/lxvirt/lxvirt1/domain";

/// What `event` asks for.
pub struct EventOptions {
    pub domain: Option<String>,
    pub keep_going: bool,
    pub timeout: Option<u64>,
    pub timestamp: bool,
    pub format: Format,
}

/// One event as `-o json` prints it (one object per line).
#[derive(Debug, Serialize)]
struct EventLine<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<String>,
    domain: &'a str,
    event: &'a str,
    detail: &'a str,
}

pub async fn event(
    connection: &zbus::Connection,
    manager: &ManagerProxy<'_>,
    options: EventOptions,
) -> Result<u8> {
    let rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(BUS_NAME)
        .interface(DOMAIN_INTERFACE)
        .member("Lifecycle");
    let mut names: HashMap<OwnedObjectPath, String> = HashMap::new();
    let rule = match &options.domain {
        Some(name) => {
            let proxy = lookup(connection, manager, name).await?;
            let path = OwnedObjectPath::from(proxy.inner().path().to_owned());
            names.insert(path.clone(), proxy.name().await?);
            rule.path(path)
        }
        None => rule.path_namespace(DOMAIN_PATHS),
    }
    .build()?;
    // Subscribed before the names are read: no event falls between.
    let mut stream =
        MessageStream::for_match_rule(rule, connection, std::num::NonZeroUsize::new(256)).await?;
    if options.domain.is_none() {
        for record in manager.list_domain_summaries().await? {
            names.insert(record.path, record.name);
        }
    }
    let deadline = options
        .timeout
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let mut received = 0u64;
    let mut end = "";
    loop {
        let next = async {
            match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, stream.next()).await,
                None => Ok(stream.next().await),
            }
        };
        let message = tokio::select! {
            message = next => match message {
                Ok(Some(message)) => message?,
                Ok(None) => {
                    return Err(Failure::new(
                        EXIT_CONNECT,
                        "the bus closed the connection; is lxvirtd's bus still running?",
                    ));
                }
                Err(_elapsed) => {
                    end = "event loop timed out";
                    break;
                }
            },
            _ = tokio::signal::ctrl_c() => {
                end = "event loop interrupted";
                break;
            }
        };
        let body = message.body();
        let Ok((event, detail)) = body.deserialize::<(&str, &str)>() else {
            continue;
        };
        let Some(path) = message
            .header()
            .path()
            .map(|p| OwnedObjectPath::from(p.to_owned()))
        else {
            continue;
        };
        let name = match names.get(&path) {
            Some(name) => name.clone(),
            None => {
                // A domain defined after the subscription.
                let name = domain_name(connection, path.clone())
                    .await
                    .unwrap_or_else(|_| path.to_string());
                names.insert(path, name.clone());
                name
            }
        };
        received += 1;
        print_event(&options, &name, event, detail)?;
        if !options.keep_going {
            break;
        }
    }
    // As virsh: how the loop ended and the count, for a loop or a timeout.
    if options.format == Format::Text && (options.keep_going || !end.is_empty()) {
        if !end.is_empty() {
            println!("{end}");
        }
        println!("events received: {received}");
    }
    Ok(EXIT_OK)
}

fn print_event(options: &EventOptions, name: &str, event: &str, detail: &str) -> Result<()> {
    let timestamp = options
        .timestamp
        .then(|| utc_text_millis(unix_now_precise()));
    match options.format {
        Format::Text => {
            let prefix = timestamp.map(|t| format!("{t}: ")).unwrap_or_default();
            println!(
                "{prefix}event 'lifecycle' for domain '{name}': {} {}",
                capitalized(event),
                capitalized(detail)
            );
        }
        Format::Json => {
            let line = EventLine {
                timestamp,
                domain: name,
                event,
                detail,
            };
            let json = serde_json::to_string(&line)
                .map_err(|e| Failure::new(EXIT_FAILURE, e.to_string()))?;
            println!("{json}");
        }
    }
    // Each event is seen at once, also through a pipe.
    use std::io::Write;
    let _ = std::io::stdout().flush();
    Ok(())
}

/// `started` → `Started`, as virsh prints event names.
fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_words_are_capitalized_as_virsh_prints_them() {
        assert_eq!(capitalized("started"), "Started");
        assert_eq!(capitalized("booted"), "Booted");
        assert_eq!(capitalized(""), "");
    }
}
