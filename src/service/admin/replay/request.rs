//! The body of `POST /replay` and its validation into a [`ReplayFilter`].

use std::collections::HashSet;

use chrono::DateTime;
use serde::Deserialize;

use super::KINDS;
use crate::service::admin::error::ApiError;

/// Body of `POST /replay`. Every field is optional.
#[derive(Debug, Default, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Dead-letter kinds to replay (default: all).
    pub kinds: Option<Vec<String>>,
    /// Only dead letters written at or after this RFC 3339 time (`clickpipe.failed_at`).
    pub since: Option<String>,
    /// Only dead letters written before this RFC 3339 time.
    pub until: Option<String>,
    /// Only this partition of the dead-letter topic.
    pub partition: Option<i32>,
    /// Replay at most this many records.
    pub limit: Option<u64>,
    /// Count what would be replayed without publishing anything.
    pub dry_run: Option<bool>,
    /// `last` (default): leave out the dead letters earlier jobs already replayed; `beginning`:
    /// read the whole topic and replay them again.
    pub from: Option<String>,
}

/// A validated [`ReplayRequest`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayFilter {
    pub(super) kinds: Option<HashSet<String>>,
    pub(super) since_ms: Option<i64>,
    pub(super) until_ms: Option<i64>,
    pub(super) partition: Option<i32>,
    pub(super) limit: Option<u64>,
    pub(super) dry_run: bool,
    pub(super) from_beginning: bool,
}

fn rfc3339_ms(field: &str, value: &str) -> Result<i64, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|e| ApiError::bad_field(field, format!("not an RFC 3339 time: {e}")))
}

impl ReplayRequest {
    /// Checks the request; a bad value is a 400 naming its field.
    pub fn validate(&self) -> Result<ReplayFilter, ApiError> {
        let kinds = match &self.kinds {
            None => None,
            Some(k) if k.is_empty() => {
                return Err(ApiError::bad_field(
                    "kinds",
                    "must name at least one kind (leave it out for all)",
                ))
            }
            Some(k) => {
                if let Some(bad) = k.iter().find(|k| !KINDS.contains(&k.as_str())) {
                    return Err(ApiError::bad_field(
                        "kinds",
                        format!("unknown kind {bad:?}; kinds are {}", KINDS.join(", ")),
                    ));
                }
                Some(k.iter().cloned().collect())
            }
        };
        let since_ms = self
            .since
            .as_deref()
            .map(|v| rfc3339_ms("since", v))
            .transpose()?;
        let until_ms = self
            .until
            .as_deref()
            .map(|v| rfc3339_ms("until", v))
            .transpose()?;
        if let (Some(s), Some(u)) = (since_ms, until_ms) {
            if u <= s {
                return Err(ApiError::bad_field("until", "must be after `since`"));
            }
        }
        if self.partition.is_some_and(|p| p < 0) {
            return Err(ApiError::bad_field("partition", "must be 0 or more"));
        }
        if self.limit == Some(0) {
            return Err(ApiError::bad_field("limit", "must be at least 1"));
        }
        let from_beginning = match self.from.as_deref() {
            None | Some("last") => false,
            Some("beginning") => true,
            Some(other) => {
                return Err(ApiError::bad_field(
                    "from",
                    format!(
                        "{other:?} is neither \"last\" (after what earlier jobs replayed) nor \
                         \"beginning\" (replay again)"
                    ),
                ))
            }
        };
        Ok(ReplayFilter {
            kinds,
            since_ms,
            until_ms,
            partition: self.partition,
            limit: self.limit,
            dry_run: self.dry_run.unwrap_or(false),
            from_beginning,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_validated_field_by_field() {
        let ok = ReplayRequest {
            kinds: Some(vec!["inference_failed".into()]),
            since: Some("2026-11-25T00:00:00Z".into()),
            until: Some("2026-11-26T00:00:00Z".into()),
            partition: Some(0),
            limit: Some(10),
            dry_run: Some(true),
            from: Some("beginning".into()),
        };
        let f = ok.validate().expect("valid");
        assert!(f.dry_run);
        assert!(f.from_beginning);
        assert_eq!(f.limit, Some(10));
        let field = |r: ReplayRequest| r.validate().err().and_then(|e| e.field);
        let base = ReplayRequest::default;
        for (bad, name) in [
            (
                ReplayRequest {
                    kinds: Some(vec!["nope".into()]),
                    ..base()
                },
                "kinds",
            ),
            (
                ReplayRequest {
                    kinds: Some(vec![]),
                    ..base()
                },
                "kinds",
            ),
            (
                ReplayRequest {
                    since: Some("yesterday".into()),
                    ..base()
                },
                "since",
            ),
            (
                ReplayRequest {
                    since: Some("2026-11-26T00:00:00Z".into()),
                    until: Some("2026-11-25T00:00:00Z".into()),
                    ..base()
                },
                "until",
            ),
            (
                ReplayRequest {
                    partition: Some(-1),
                    ..base()
                },
                "partition",
            ),
            (
                ReplayRequest {
                    limit: Some(0),
                    ..base()
                },
                "limit",
            ),
            (
                ReplayRequest {
                    from: Some("start".into()),
                    ..base()
                },
                "from",
            ),
        ] {
            assert_eq!(field(bad), Some(name.into()));
        }
        let last = ReplayRequest {
            from: Some("last".into()),
            ..base()
        };
        assert!(!last.validate().expect("valid").from_beginning);
        let everything = base().validate().expect("an empty body replays everything");
        assert!(
            !everything.from_beginning,
            "the default is after the last job"
        );
    }
}
