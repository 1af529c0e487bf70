//! A simulated proxy's ADS stream, framed by hand over a tonic [`Channel`]: requests go out
//! as encoded bytes (a shared name list is appended without a copy), and responses are
//! decoded straight from the HTTP/2 body's chunks, where they lie ([`Chunks`]), so a proxy
//! holds no buffer the size of its largest response between responses (tonic's `Streaming`
//! keeps its read buffer at that capacity for the stream's life: megabytes per proxy on a
//! large catalog) and copies none into one while reading.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::transport::Channel;
use tonic::Status;
use tower::Service;

use super::chunks::Chunks;
use super::names::NameList;
use super::summary::ResponseSummary;

const ADS_METHOD: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";

/// Compressed flag and big-endian length before every gRPC message.
const PREFIX: usize = 5;

/// Largest response accepted.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// The request side of a stream.
pub(super) struct Requests {
    frames: mpsc::Sender<Bytes>,
    /// The largest request of the run so far (shared by its proxies).
    largest: Arc<AtomicUsize>,
}

impl Requests {
    /// Sends `request`, with `names` as its `resource_names` when given (the request's own
    /// `resource_names` are sent too). `Err` when the stream is gone.
    pub async fn send(
        &self,
        request: &DiscoveryRequest,
        names: Option<&Arc<NameList>>,
    ) -> Result<(), ()> {
        let shared = names.map_or(0, |n| n.encoded.len());
        let len = request.encoded_len() + shared;
        self.largest.fetch_max(PREFIX + len, Ordering::Relaxed);
        let mut head = BytesMut::with_capacity(PREFIX + request.encoded_len());
        head.put_u8(0);
        head.put_u32(u32::try_from(len).map_err(|_| ())?);
        request.encode(&mut head).map_err(|_| ())?;
        self.frames.send(head.freeze()).await.map_err(|_| ())?;
        if let Some(names) = names.filter(|n| !n.encoded.is_empty()) {
            // Protobuf fields may come in any order: the names follow as a second chunk of
            // the same message, the shared bytes themselves.
            self.frames
                .send(names.encoded.clone())
                .await
                .map_err(|_| ())?;
        }
        Ok(())
    }
}

/// Opens an ADS stream on `channel` with `first` as its first request; returns once the
/// server answered with headers (or refused the stream).
pub(super) async fn open(
    mut channel: Channel,
    first: &DiscoveryRequest,
    first_names: Option<&Arc<NameList>>,
    largest: Arc<AtomicUsize>,
) -> Result<(Requests, Responses), Status> {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let requests = Requests {
        frames: tx,
        largest,
    };
    requests
        .send(first, first_names)
        .await
        .map_err(|_| Status::internal("request queue closed"))?;
    let body = StreamBody::new(
        ReceiverStream::new(rx).map(|b| Ok::<_, Status>(http_body::Frame::data(b))),
    );
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(ADS_METHOD)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(Body::new(body))
        .map_err(|e| Status::internal(e.to_string()))?;
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
    let response = channel
        .call(request)
        .await
        .map_err(|e| Status::unavailable(format!("connection failed: {e}")))?;
    if let Some(status) = Status::from_header_map(response.headers()) {
        // Trailers-only: the server refused the stream.
        if status.code() != tonic::Code::Ok {
            return Err(status);
        }
    }
    if response.status() != http::StatusCode::OK {
        return Err(Status::unknown(format!(
            "HTTP status {}",
            response.status()
        )));
    }
    Ok((
        requests,
        Responses {
            body: response.into_body(),
            pending: Chunks::default(),
            ended: false,
        },
    ))
}

/// The response side of a stream.
pub(super) struct Responses {
    body: Body,
    /// Received and not yet read, as the chunks it came in.
    pending: Chunks,
    ended: bool,
}

impl Responses {
    /// The next response; `None` when the stream ended with status OK (or no status).
    pub async fn message(&mut self) -> Result<Option<ResponseSummary>, Status> {
        loop {
            if let Some(message) = self.next_buffered()? {
                return ResponseSummary::read(message)
                    .map(Some)
                    .map_err(|e| Status::internal(format!("malformed response: {e}")));
            }
            if self.ended {
                return Ok(None);
            }
            match self.body.frame().await {
                None => self.ended = true,
                Some(Err(status)) => return Err(status),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.pending.push(data),
                    Err(frame) => {
                        self.ended = true;
                        let status = frame.trailers_ref().and_then(Status::from_header_map);
                        if let Some(status) = status.filter(|s| s.code() != tonic::Code::Ok) {
                            return Err(status);
                        }
                    }
                },
            }
        }
    }

    /// The next whole message received, without its prefix: the chunks it came in.
    fn next_buffered(&mut self) -> Result<Option<Chunks>, Status> {
        let Some(prefix) = self.pending.peek::<PREFIX>() else {
            return self.incomplete();
        };
        let len = message_len(&prefix)?;
        if self.pending.remaining() < PREFIX + len {
            return self.incomplete();
        }
        self.pending.advance(PREFIX);
        Ok(Some(self.pending.split_to(len)))
    }

    /// No whole message is buffered: an error if none will come.
    fn incomplete(&self) -> Result<Option<Chunks>, Status> {
        if self.ended && self.pending.has_remaining() {
            return Err(Status::internal("the stream ended inside a response"));
        }
        Ok(None)
    }
}

/// The length a message's prefix declares.
fn message_len(prefix: &[u8]) -> Result<usize, Status> {
    if prefix[0] != 0 {
        return Err(Status::unimplemented(
            "compressed responses are not supported",
        ));
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if len > MAX_RESPONSE {
        return Err(Status::out_of_range(format!(
            "a response of {len} bytes is over the {MAX_RESPONSE} this client reads"
        )));
    }
    Ok(len)
}
