//! The OpenAPI document (`GET /openapi.json`), generated from the handlers' annotations and
//! the request and response types.

use actix_web::HttpResponse;
use clickpipe_actors::status::{PartitionState, PartitionStatus, Policies};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::dto::{
    ConfigSummary, ControlResponse, Counters, DeadLetterCounts, LatencyMs, LiveResponse,
    ReadyResponse, ReplayStarted, SeekRequest, StatusResponse,
};
use super::{health, partitions, replay, replay_handlers, status, ApiError};

/// The OpenAPI document, generated from the handlers' annotations and the request and response
/// types.
#[derive(OpenApi)]
#[openapi(
    info(title = "clickpipe admin API", description = "Health, status, metrics, dead-letter replay and partition control of a clickpipe instance."),
    paths(status::status_page, health::live, health::ready, status::status,
        status::metrics_text, openapi_json, partitions::pause, partitions::resume,
        partitions::seek, replay_handlers::replay_start, replay_handlers::replay_get,
        replay_handlers::replay_cancel),
    components(schemas(ApiError, LiveResponse, ReadyResponse, StatusResponse, ConfigSummary,
        Counters, DeadLetterCounts, LatencyMs, ControlResponse, ReplayStarted, SeekRequest,
        replay::ReplayRequest, replay::JobReport, replay::JobState, PartitionStatus,
        PartitionState, Policies)),
    modifiers(&BearerAuth),
    tags((name = "health"), (name = "status"), (name = "partitions"), (name = "replay"))
)]
pub struct ApiDoc;

/// Adds the bearer-token security scheme.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "status",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub(super) async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
