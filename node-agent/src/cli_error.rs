//! How the binary words an error: the whole chain of causes, each said
//! once. Many errors (ours and our libraries') both print their source and
//! return it from `source()`; `{:#}` would then repeat it
//! (`x: No such file: No such file`).

/// `error: cause: cause…`, skipping a cause whose text the message
/// already holds.
pub fn describe(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{path}: {source}")]
    struct Io {
        path: String,
        #[source]
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot establish the log's signer: {0}")]
    struct Signer(#[source] Io);

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(Signer(Io {
            path: "/x/identity.pub".into(),
            source: io,
        }));
        assert_eq!(
            describe(&e),
            "cannot establish the log's signer: /x/identity.pub: No such file"
        );
    }

    #[test]
    fn causes_not_in_the_message_are_appended() {
        let e = anyhow::anyhow!("disk full").context("cannot write report.json");
        assert_eq!(describe(&e), "cannot write report.json: disk full");
    }
}
