//! Operator control of a partition: `POST /partitions/{p}/pause`, `/resume` and `/seek`
//! (bearer token).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::DateTime;
use clickpipe_actors::partition::{Control, ControlError};
use clickpipe_actors::pipeline::{CommandError, PipelineHandle};

use super::dto::{ControlResponse, SeekRequest};
use super::{error, AdminState, ApiError};

/// The pipeline behind a mutating request, after authorization.
fn pipeline_for(req: &HttpRequest, state: &AdminState) -> Result<PipelineHandle, ApiError> {
    state.authorize(req)?;
    state.pipeline.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the pipeline is not running",
        )
    })
}

fn command_error(e: CommandError) -> ApiError {
    match e {
        CommandError::NotAssigned(p) => {
            ApiError::not_found(format!("partition {p} is not assigned to this instance"))
        }
        CommandError::Refused(e @ ControlError::PastTheEnd { .. }) => {
            ApiError::bad_field("offset", e.to_string())
        }
        CommandError::Refused(e) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        CommandError::Gone(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        CommandError::Timestamp(_) => ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

/// Runs `command` on a partition and answers with its status.
async fn control(
    req: HttpRequest,
    state: web::Data<AdminState>,
    partition: i32,
    command: Control,
) -> Result<HttpResponse, ApiError> {
    let pipeline = pipeline_for(&req, &state)?;
    pipeline
        .command(partition, command)
        .await
        .map_err(command_error)?;
    let status = state
        .status
        .partitions()
        .into_iter()
        .find(|p| p.partition == partition);
    Ok(HttpResponse::Ok().json(ControlResponse { partition, status }))
}

/// The error answers every partition command shares (documentation only).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum ControlErrors {
    /// A bad partition number or body field.
    #[response(status = 400, description = "Bad partition number or body field")]
    BadRequest(ApiError),
    /// Authorization.
    #[response(status = 401, description = "Missing or wrong token")]
    Unauthorized(ApiError),
    /// No token configured.
    #[response(status = 403, description = "No admin.token configured")]
    Forbidden(ApiError),
    /// Not this instance's partition.
    #[response(status = 404, description = "Partition not assigned here")]
    NotFound(ApiError),
    /// The partition refused the command.
    #[response(status = 409, description = "Partition draining or failed")]
    Conflict(ApiError),
    /// No pipeline behind the API.
    #[response(status = 503, description = "Pipeline not running")]
    Unavailable(ApiError),
}

/// Pauses a partition at the consumer until resumed (in-flight records finish).
#[utoipa::path(post, path = "/partitions/{partition}/pause", tag = "partitions",
    params(("partition" = i32, Path, minimum = 0, example = 0, description = "Partition of the input topic")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Paused", body = ControlResponse),
        ControlErrors))]
pub(super) async fn pause(
    req: HttpRequest,
    state: web::Data<AdminState>,
    path: web::Path<i32>,
) -> Result<HttpResponse, ApiError> {
    control(req, state, path.into_inner(), Control::Pause).await
}

/// Resumes a partition paused by an operator.
#[utoipa::path(post, path = "/partitions/{partition}/resume", tag = "partitions",
    params(("partition" = i32, Path, minimum = 0, example = 0, description = "Partition of the input topic")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Resumed", body = ControlResponse),
        ControlErrors))]
pub(super) async fn resume(
    req: HttpRequest,
    state: web::Data<AdminState>,
    path: web::Path<i32>,
) -> Result<HttpResponse, ApiError> {
    control(req, state, path.into_inner(), Control::Resume).await
}

/// Where a seek goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeekTarget {
    Offset(i64),
    /// Epoch milliseconds.
    Time(i64),
}

impl SeekRequest {
    fn target(&self) -> Result<SeekTarget, ApiError> {
        match (self.offset, self.timestamp.as_deref()) {
            (Some(_), Some(_)) => Err(ApiError::bad_field(
                "offset",
                "give either `offset` or `timestamp`, not both",
            )),
            (None, None) => Err(ApiError::bad_field(
                "offset",
                "give `offset` (a number) or `timestamp` (RFC 3339)",
            )),
            (Some(o), None) if o < 0 => Err(ApiError::bad_field("offset", "must be 0 or more")),
            (Some(o), None) => Ok(SeekTarget::Offset(o)),
            (None, Some(ts)) => DateTime::parse_from_rfc3339(ts)
                .map(|at| SeekTarget::Time(at.timestamp_millis()))
                .map_err(|e| {
                    ApiError::bad_field("timestamp", format!("not an RFC 3339 time: {e}"))
                }),
        }
    }
}

/// Drops the partition's in-flight records and continues at an offset, or at the first record
/// at or after a time; the new position is committed.
#[utoipa::path(post, path = "/partitions/{partition}/seek", tag = "partitions",
    params(("partition" = i32, Path, minimum = 0, example = 0, description = "Partition of the input topic")),
    request_body(content = SeekRequest, description = "Exactly one of `offset` and `timestamp`"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Repositioned", body = ControlResponse),
        (status = 413, description = "Body too large", body = ApiError),
        (status = 502, description = "The broker could not resolve the timestamp", body = ApiError),
        ControlErrors))]
pub(super) async fn seek(
    req: HttpRequest,
    state: web::Data<AdminState>,
    path: web::Path<i32>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let partition = path.into_inner();
    state.authorize(&req)?;
    let body: SeekRequest = error::json_body(body, false).await?;
    let target = body.target()?;
    let pipeline = pipeline_for(&req, &state)?;
    let offset = match target {
        SeekTarget::Offset(o) => o,
        SeekTarget::Time(ms) => {
            if !pipeline.is_assigned(partition) {
                return Err(command_error(CommandError::NotAssigned(partition)));
            }
            let p = pipeline.clone();
            web::block(move || p.offset_for_timestamp(partition, ms))
                .await
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
                .map_err(command_error)?
        }
    };
    control(req, state, partition, Control::Seek(offset)).await
}
