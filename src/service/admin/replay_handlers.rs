//! The dead-letter replay endpoints: `POST /replay`, `GET` and `DELETE /replay/{id}` (the jobs
//! themselves are in [`super::replay`]).

use actix_web::{web, HttpRequest, HttpResponse};

use super::dto::ReplayStarted;
use super::{error, replay, AdminState, ApiError};

/// The answers of a refused bearer token, which every mutating replay endpoint shares
/// (documentation only).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum AuthErrors {
    /// Authorization.
    #[response(status = 401, description = "Missing or wrong token")]
    Unauthorized(ApiError),
    /// No token configured.
    #[response(status = 403, description = "No admin.token configured")]
    Forbidden(ApiError),
}

/// Starts replaying dead letters into the input topic; 202 with the job id.
#[utoipa::path(post, path = "/replay", tag = "replay",
    request_body(content = replay::ReplayRequest, description = "Filter (every field optional; an empty body replays everything)"),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Started", body = ReplayStarted),
        (status = 400, description = "Bad field", body = ApiError),
        AuthErrors,
        (status = 413, description = "Body too large", body = ApiError),
        (status = 429, description = "admin.replay_max_jobs jobs are running already", body = ApiError)))]
pub(super) async fn replay_start(
    req: HttpRequest,
    state: web::Data<AdminState>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&req)?;
    let request: replay::ReplayRequest = error::optional_json(body).await?;
    let filter = request.validate()?;
    let job = state.replays.start(state.config.clone(), filter)?;
    let report = job.report();
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("/replay/{}", report.id)))
        .json(ReplayStarted {
            id: report.id,
            state: report.state,
        }))
}

/// A replay job's progress.
#[utoipa::path(get, path = "/replay/{id}", tag = "replay",
    params(("id" = String, Path, description = "Job id from POST /replay")),
    responses(
        (status = 200, description = "The job", body = replay::JobReport),
        (status = 404, description = "No such job", body = ApiError)))]
pub(super) async fn replay_get(
    state: web::Data<AdminState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let job = state.replay_job(&id)?;
    Ok(HttpResponse::Ok().json(job.report()))
}

/// Cancels a replay job (it stops after the record at hand, withdrawing what it has not sent).
#[utoipa::path(delete, path = "/replay/{id}", tag = "replay",
    params(("id" = String, Path, description = "Job id from POST /replay")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Cancelling", body = replay::JobReport),
        AuthErrors,
        (status = 404, description = "No such job", body = ApiError)))]
pub(super) async fn replay_cancel(
    req: HttpRequest,
    state: web::Data<AdminState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&req)?;
    let id = path.into_inner();
    let job = state.replay_job(&id)?;
    job.cancel();
    Ok(HttpResponse::Accepted().json(job.report()))
}
