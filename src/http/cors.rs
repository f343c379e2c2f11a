//! CORS for the HTTP transports (`/connection/sse`, `/send`, `/poll`):
//! browser pages on origins in `allowed_origins` (or the node's own) may
//! call them; other origins get 403/103, preflights included.
//!
//! A tower layer rather than an axum `from_fn` middleware: a pending
//! long-poll keeps its whole call chain alive, and this layer adds a
//! header value to it where a middleware future added about 1.5 KiB.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tower_service::Service;

use crate::codes::ErrorCode;
use crate::http::error::ApiError;
use crate::node::Node;

/// How long a browser may cache a preflight answer (seconds).
const MAX_AGE: &str = "600";

/// Wraps a route with the CORS check and headers.
#[derive(Clone)]
pub struct CorsLayer {
    node: Arc<Node>,
}

impl CorsLayer {
    pub fn new(node: Arc<Node>) -> CorsLayer {
        CorsLayer { node }
    }
}

impl<S> tower_layer::Layer<S> for CorsLayer {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Cors<S> {
        Cors {
            inner,
            node: self.node.clone(),
        }
    }
}

/// The wrapped route.
#[derive(Clone)]
pub struct Cors<S> {
    inner: S,
    node: Arc<Node>,
}

impl<S> Service<Request> for Cors<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = CorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if !super::origin::allowed(&self.node.config.allowed_origins, request.headers()) {
            let refused = ApiError::new(
                ErrorCode::PermissionDenied,
                "origin not allowed (see allowed_origins)",
            )
            .into_response();
            return CorsFuture::ready(refused);
        }
        let origin = request.headers().get(header::ORIGIN).cloned();
        if request.method() == Method::OPTIONS {
            return CorsFuture::ready(with_origin(preflight(), origin));
        }
        CorsFuture {
            state: State::Inner {
                future: self.inner.call(request),
                origin,
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The route's future, whose response gets the CORS headers.
    pub struct CorsFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        Ready { response: Option<Response> },
        Inner { #[pin] future: F, origin: Option<HeaderValue> },
    }
}

impl<F> CorsFuture<F> {
    fn ready(response: Response) -> CorsFuture<F> {
        CorsFuture {
            state: State::Ready {
                response: Some(response),
            },
        }
    }
}

impl<F> Future for CorsFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Ready { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
            StateProj::Inner { future, origin } => {
                let Ok(response) = std::task::ready!(future.poll(cx));
                Poll::Ready(Ok(with_origin(response, origin.take())))
            }
        }
    }
}

/// The answer to a preflight.
fn preflight() -> Response {
    let mut preflight = StatusCode::NO_CONTENT.into_response();
    let headers = preflight.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, Last-Event-ID"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE),
    );
    preflight
}

/// `response` allowed for `origin`, when the request had one.
fn with_origin(mut response: Response, origin: Option<HeaderValue>) -> Response {
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}
