//! The ADS gRPC service, as a plain `tower` service on tonic's HTTP/2 server.
//!
//! tonic's generated server re-encodes every response into a per-stream buffer (which then
//! keeps the capacity of the largest response for the life of the stream); this one routes
//! the two ADS methods itself, decodes requests with a [`RequestDecoder`] (within the
//! first-request limit, the request limit and the server-wide budget of
//! [`super::request::RequestLimits`]) and
//! writes each response as a per-stream head plus the snapshot's shared body
//! ([`super::wire::response_head`]).

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures::Stream;
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tonic::server::NamedService;
use tonic::Status;

use super::request::{Request, RequestDecoder, RequestError};
use super::{stream, XdsContext, STREAM_QUEUE};

const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const SOTW: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// What a stream task hands to its response body.
#[derive(Debug)]
pub enum Outgoing {
    /// One `DiscoveryResponse`.
    Response(Box<Framed>),
    /// The stream ends with this status.
    End(Status),
}

/// One `DiscoveryResponse`, framed: the per-stream head and the shared body. Boxed in
/// [`Outgoing`]: the queue's memory is allocated in blocks of 32 slots per stream, so its
/// element stays pointer-sized.
#[derive(Debug)]
pub struct Framed {
    /// gRPC prefix and per-stream fields.
    pub head: Bytes,
    /// The shared `resources` entries.
    pub body: Bytes,
}

/// The sending side of a stream's response body.
pub type Out = mpsc::Sender<Outgoing>;

/// The ADS service: State-of-the-World streams, `UNIMPLEMENTED` for Delta.
#[derive(Clone, Debug)]
pub struct AdsServer {
    ctx: Arc<XdsContext>,
}

impl AdsServer {
    /// A service for `ctx`, reading requests within `ctx.requests`.
    pub fn new(ctx: Arc<XdsContext>) -> Self {
        AdsServer { ctx }
    }
}

impl NamedService for AdsServer {
    const NAME: &'static str = SERVICE;
}

impl tower::Service<http::Request<tonic::body::Body>> for AdsServer {
    type Response = http::Response<ResponseBody>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let response = match request.uri().path() {
            SOTW => {
                let (tx, rx) = mpsc::channel(STREAM_QUEUE);
                let requests = requests(request.into_body(), self.ctx.requests.decoder());
                self.ctx
                    .tasks
                    .spawn(stream::serve(self.ctx.clone(), requests, tx));
                let mut response = http::Response::new(ResponseBody::streaming(rx));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/grpc"),
                );
                response
            }
            DELTA => Status::unimplemented(
                "revplane serves state-of-the-world ADS only; configure the proxy with api_type GRPC",
            )
            .into_http(),
            other => Status::unimplemented(format!("no method {other}")).into_http(),
        };
        ready(Ok(response))
    }
}

/// The requests of a stream's body, decoded.
fn requests(
    body: tonic::body::Body,
    decoder: RequestDecoder,
) -> impl Stream<Item = Result<Request, RequestError>> + Unpin + Send {
    let state = (body, decoder, false);
    Box::pin(futures::stream::unfold(
        state,
        |(mut body, mut decoder, failed)| async move {
            if failed {
                return None;
            }
            loop {
                match decoder.next_request() {
                    Ok(Some(request)) => return Some((Ok(request), (body, decoder, false))),
                    Ok(None) => {}
                    // The budget for partly received requests is full: wait for room (not
                    // reading, so flow control holds the client), then take the chunk again.
                    Err(RequestError::BufferFull { wanted, .. })
                        if decoder.wait_for_room(wanted).await =>
                    {
                        continue
                    }
                    Err(e) => return Some((Err(e), (body, decoder, true))),
                }
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(chunk) = frame.into_data() {
                            decoder.push(chunk);
                        }
                    }
                    Some(Err(status)) => {
                        return Some((Err(RequestError::Body(status)), (body, decoder, true)))
                    }
                    None => {
                        return match decoder.finish() {
                            Ok(()) => None,
                            Err(e) => Some((Err(e), (body, decoder, true))),
                        }
                    }
                }
            }
        },
    ))
}

/// A stream's response body: the responses its task sends, then the status as trailers.
#[derive(Debug, Default)]
pub struct ResponseBody {
    rx: Option<mpsc::Receiver<Outgoing>>,
    /// The shared body of the response whose head was just yielded.
    pending: Option<Bytes>,
}

impl ResponseBody {
    fn streaming(rx: mpsc::Receiver<Outgoing>) -> Self {
        ResponseBody {
            rx: Some(rx),
            pending: None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(body) = self.pending.take() {
            return Poll::Ready(Some(Ok(Frame::data(body))));
        }
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(None);
        };
        let status = match ready!(rx.poll_recv(cx)) {
            Some(Outgoing::Response(framed)) => {
                let Framed { head, body } = *framed;
                if !body.is_empty() {
                    self.pending = Some(body);
                }
                return Poll::Ready(Some(Ok(Frame::data(head))));
            }
            Some(Outgoing::End(status)) => status,
            // The task ended without a word (its client is gone).
            None => Status::ok(""),
        };
        self.rx = None;
        let mut trailers = HeaderMap::new();
        if let Err(e) = status.add_header(&mut trailers) {
            tracing::debug!(error = %e, "status not representable as trailers");
        }
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.rx.is_none() && self.pending.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
