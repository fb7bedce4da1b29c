//! Errors of the pipeline, each carrying the two facts that decide routing: which stage failed and
//! whether trying again can help (`Retry`). A `Retry::Never` failure goes straight to the
//! dead-letter topic; a `Retry::Backoff` failure is retried within a budget and dead-lettered only
//! once the budget is spent.

use std::fmt;

/// Whether an operation that failed may succeed when tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The input itself is at fault: trying again gives the same answer.
    Never,
    /// A dependency is at fault (timeout, 5xx, connection refused): try again after a backoff.
    Backoff,
}

/// Declares a fieldless enum whose variants have stable names (written to headers, metrics and
/// logs), with `as_str` and `Display` giving them.
macro_rules! named_enum {
    ($(#[$meta:meta])* pub enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident = $text:literal,)*
    }) => {
        $(#[$meta])*
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// The stable name used in headers, metrics and logs.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum! {
    /// The kind of a dead letter, written to the `clickpipe.error.kind` header.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum ErrorKind {
        /// The record is not a valid input event (not UTF-8, not JSON, missing field, too large…).
        InvalidEvent = "invalid_event",
        /// The Redis lookup failed for good.
        LookupFailed = "lookup_failed",
        /// The model call failed for good (retry budget spent, or a non-retryable 4xx).
        InferenceFailed = "inference_failed",
        /// The output record could not be written (for example it is larger than the broker
        /// accepts).
        OutputFailed = "output_failed",
    }
}

named_enum! {
    /// A stage of the pipeline: where a record failed (written to `clickpipe.error.stage`), which
    /// stage actor a log line, metric or restart is about.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub enum Stage {
        /// Reading and decoding the input record.
        Decode = "decode",
        /// The Redis round trip (ZIP data and session state).
        Lookup = "lookup",
        /// Feature computation.
        Enrich = "enrich",
        /// The model call.
        Infer = "infer",
        /// Writing the output record.
        Emit = "emit",
        /// `clickpipe ingest`: a document that is no valid event, caught before Kafka.
        Ingest = "ingest",
    }
}

/// Why a record left the pipeline for the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The dead-letter kind.
    pub kind: ErrorKind,
    /// Where it failed.
    pub stage: Stage,
    /// A human-readable reason, at most [`MAX_MESSAGE_BYTES`]; never contains secrets.
    message: String,
    /// How many attempts were made (1 for input errors).
    pub attempts: u32,
}

impl Failure {
    /// Why, in words: at most [`MAX_MESSAGE_BYTES`] bytes.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// A failure on the first and only attempt; the message is cut to [`MAX_MESSAGE_BYTES`].
    pub fn new(kind: ErrorKind, stage: Stage, message: impl Into<String>) -> Self {
        Failure::after(kind, stage, message, 1)
    }

    /// A failure after `attempts` attempts; the message is cut to [`MAX_MESSAGE_BYTES`].
    pub fn after(kind: ErrorKind, stage: Stage, message: impl Into<String>, attempts: u32) -> Self {
        let message = message.into();
        let message = match bounded(&message, MAX_MESSAGE_BYTES) {
            std::borrow::Cow::Borrowed(_) => message,
            std::borrow::Cow::Owned(cut) => cut,
        };
        Failure {
            kind,
            stage,
            message,
            attempts,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}: {}", self.kind, self.stage, self.message)
    }
}

/// An error of a client call (Redis, model), with its retry hint.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ClientError {
    /// Whether the call may succeed when tried again.
    pub retry: Retry,
    /// What went wrong; never contains secrets.
    pub message: String,
}

impl ClientError {
    /// A failure that trying again may cure.
    pub fn transient(message: impl Into<String>) -> Self {
        ClientError {
            retry: Retry::Backoff,
            message: message.into(),
        }
    }

    /// A failure that trying again will not cure.
    pub fn permanent(message: impl Into<String>) -> Self {
        ClientError {
            retry: Retry::Never,
            message: message.into(),
        }
    }
}

/// The longest excerpt of an input value a reason quotes, in bytes.
pub const EXCERPT_BYTES: usize = 64;

/// The longest message a failure carries (header, log, span attribute), in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// `value` cut to at most [`EXCERPT_BYTES`] (on a character boundary), with `…` when cut.
pub fn excerpt(value: &str) -> std::borrow::Cow<'_, str> {
    bounded(value, EXCERPT_BYTES)
}

/// `text` cut to at most `max` bytes on a character boundary, with `… (N bytes)` when cut.
pub fn bounded(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}… ({} bytes)", &text[..end], text.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_cuts_on_a_character_boundary_and_says_the_size() {
        assert_eq!(bounded("short", 10), "short");
        let cut = bounded("ééééé", 3);
        assert_eq!(cut, "é… (10 bytes)");
        let long = "x".repeat(10_000);
        assert!(
            Failure::new(ErrorKind::InvalidEvent, Stage::Decode, long)
                .message()
                .len()
                < 1100
        );
    }
}
