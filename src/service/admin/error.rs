//! The one error shape of the admin API: `{"error": "…", "field": "…"?}` with a 4xx/5xx status.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;

/// An admin API error: its status, a message for a human, and the request field at fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    /// HTTP status.
    #[serde(skip)]
    #[schema(ignore)]
    pub status: StatusCode,
    /// What went wrong.
    pub error: String,
    /// The request field (body field or path parameter) at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            error: message.into(),
            field: None,
        }
    }

    /// 400 naming the field at fault.
    pub fn bad_field(field: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error: message.into(),
            field: Some(field.to_string()),
        }
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.error)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(self)
    }
}

/// The field a serde error message names (serde quotes it in backticks: "missing field
/// `offset`", "unknown field `x`, expected …", "invalid type: … for field `limit`"…).
fn field_of(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// Reads an optional JSON body (at most [`super::MAX_BODY_BYTES`]): empty → `T::default()`; too
/// large → 413; malformed → 400 naming the field at fault.
pub async fn optional_json<T: serde::de::DeserializeOwned + Default>(
    payload: actix_web::web::Payload,
) -> Result<T, ApiError> {
    json_body(payload, true).await
}

/// Reads a JSON body (at most [`super::MAX_BODY_BYTES`]); an empty one is `T::default()` when
/// `optional`, else a 400. Too large → 413; malformed → 400 naming the field at fault (its path,
/// e.g. `offset` or `kinds[1]`).
pub async fn json_body<T: serde::de::DeserializeOwned + Default>(
    payload: actix_web::web::Payload,
    optional: bool,
) -> Result<T, ApiError> {
    let body = match payload.to_bytes_limited(super::MAX_BODY_BYTES).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("cannot read request body: {e}"),
            ))
        }
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body is larger than {} bytes",
                    super::MAX_BODY_BYTES
                ),
            ))
        }
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return if optional {
            Ok(T::default())
        } else {
            Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "a JSON body is required",
            ))
        };
    }
    let mut de = serde_json::Deserializer::from_slice(&body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = format!("malformed JSON body: {inner}");
        // The path names the field whose value is wrong; at the top level (an unknown or
        // missing field) serde's message names it instead.
        let field = if path == "." {
            field_of(&inner.to_string())
        } else {
            Some(path)
        };
        match field {
            Some(field) => ApiError::bad_field(&field, message),
            None => ApiError::new(StatusCode::BAD_REQUEST, message),
        }
    })
}

/// Turns a JSON body error into a 400 (413 when too large) naming the field when serde says it.
pub fn json_error(err: actix_web::error::JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    let api = match &err {
        E::OverflowKnownLength { .. } | E::Overflow { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body too large: {err}"),
        ),
        E::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ),
        E::Deserialize(e) => {
            let message = format!("malformed JSON body: {e}");
            match field_of(&e.to_string()) {
                Some(field) => ApiError::bad_field(&field, message),
                None => ApiError::new(StatusCode::BAD_REQUEST, message),
            }
        }
        other => ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("cannot read request body: {other}"),
        ),
    };
    api.into()
}

/// Turns a bad path parameter into a 400 naming it.
pub fn path_error(err: actix_web::error::PathError, req: &HttpRequest) -> actix_web::Error {
    let field = req
        .match_info()
        .iter()
        .next()
        .map(|(name, _)| name.to_string())
        .unwrap_or_else(|| "path".to_string());
    ApiError::bad_field(&field, format!("bad path parameter `{field}`: {err}")).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_field_serde_names() {
        assert_eq!(
            field_of("missing field `offset` at line 1 column 2"),
            Some("offset".into())
        );
        assert_eq!(
            field_of("unknown field `ofset`, expected `offset` or `timestamp`"),
            Some("ofset".into())
        );
        assert_eq!(field_of("expected value at line 1 column 1"), None);
    }
}
