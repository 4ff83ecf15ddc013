//! The HTTP side of `serve`: /metrics in the format the scraper asks for, and /healthz.

use std::sync::{Arc, Mutex};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, HeaderValue, header},
    response::IntoResponse,
    routing::get,
};

use super::{exposition::Exposition, lock};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn serve(listener: tokio::net::TcpListener, exposition: Arc<Mutex<Exposition>>) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(exposition);
    if let Err(e) = axum::serve(listener, app).await {
        log::error!("HTTP server stopped: {e}");
    }
}

/// OpenMetrics when the scraper accepts it (Prometheus does, first), else text 0.0.4.
async fn metrics(
    State(exposition): State<Arc<Mutex<Exposition>>>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    let exposition = lock(&exposition);
    let (content_type, body) = if wants_openmetrics {
        (OPENMETRICS, exposition.openmetrics())
    } else {
        (PROMETHEUS_TEXT, exposition.prometheus_text())
    };
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
}
