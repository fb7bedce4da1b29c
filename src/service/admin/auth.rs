//! Bearer-token authorization of the mutating endpoints.
//!
//! `Authorization: Bearer <admin.token>`, compared in constant time. No token configured → every
//! mutating request is refused with 403 (secure by default); a missing or wrong token → 401.
//! Read-only endpoints are open.

use actix_web::http::header::AUTHORIZATION;
use actix_web::http::StatusCode;
use actix_web::HttpRequest;

use super::error::ApiError;

/// Checks the request's bearer token against `configured`.
pub(super) fn authorize(req: &HttpRequest, configured: Option<&str>) -> Result<(), ApiError> {
    let Some(expected) = configured else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "mutating endpoints are disabled: set admin.token (or CLICKPIPE__ADMIN__TOKEN) to enable them",
        ));
    };
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match given {
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(unauthorized("wrong bearer token")),
        None => Err(unauthorized(
            "missing `Authorization: Bearer <admin.token>` header",
        )),
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message)
}

/// Equality whose time depends only on the lengths, not on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn tokens_are_checked_and_absent_configuration_forbids() {
        let refusal = |req: &HttpRequest| authorize(req, Some("s3cret")).map_err(|e| e.status);
        let ok = TestRequest::default()
            .insert_header(("Authorization", "Bearer s3cret"))
            .to_http_request();
        assert_eq!(authorize(&ok, Some("s3cret")), Ok(()));
        let lower = TestRequest::default()
            .insert_header(("Authorization", "bearer s3cret"))
            .to_http_request();
        assert_eq!(authorize(&lower, Some("s3cret")), Ok(()));
        let wrong = TestRequest::default()
            .insert_header(("Authorization", "Bearer nope"))
            .to_http_request();
        assert_eq!(refusal(&wrong), Err(StatusCode::UNAUTHORIZED));
        let basic = TestRequest::default()
            .insert_header(("Authorization", "Basic czNjcmV0"))
            .to_http_request();
        assert_eq!(refusal(&basic), Err(StatusCode::UNAUTHORIZED));
        let none = TestRequest::default().to_http_request();
        assert_eq!(refusal(&none), Err(StatusCode::UNAUTHORIZED));
        assert_eq!(
            authorize(&ok, None).map_err(|e| e.status),
            Err(StatusCode::FORBIDDEN)
        );
    }
}
