//! An error and its causes on one line, for logs and for messages that
//! cross to another process or a D-Bus client. Used by every layer, so it
//! sits at the bottom and imports nothing of the crate.

/// `error: cause: cause of the cause`, each message as its `Display`
/// shows it (messages do not repeat their source, so nothing is said twice).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot start domain 'web'")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn joins_every_cause() {
        let error = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(
            error_chain(&error),
            "cannot start domain 'web': disk on fire"
        );
    }
}
