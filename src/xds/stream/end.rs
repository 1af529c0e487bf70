//! Why an ADS stream ended: the `reason` label of `revplane_xds_stream_ends_total`, and how a
//! failed request body is told apart — the proxy left (closed its side, reset the stream,
//! closed its connection) or the connection broke under the stream (a reset, a TCP timeout),
//! which is worth a warning. Requests that end cleanly are told apart in `stream.rs`
//! (`requests_ended`): hyper also ends them cleanly when the server closed the connection.

use tonic::Status;

use super::refused_request;
use crate::xds::request::RequestError;
use crate::xds::XdsContext;

/// Why a stream ends.
pub(super) enum End {
    /// With this status to the client: refused (the revision gate, a limit, a bad request).
    Status(Status),
    /// With this status to the client: the server is shutting down.
    Shutdown(Status),
    /// The client ended its side of the stream: the ordinary way to leave.
    Gone,
    /// The client reset the stream (Envoy does when it shuts down or drops a stream).
    Reset,
    /// The stream or its connection failed under the server (a keepalive timeout, a broken
    /// or reset connection): the proxy did not ask for this.
    Lost(String),
}

impl End {
    /// The `reason` label of `revplane_xds_stream_ends_total`.
    pub(super) fn reason(&self) -> &'static str {
        match self {
            End::Status(_) => "refused",
            End::Shutdown(_) => "shutdown",
            End::Gone => "client_closed",
            End::Reset => "client_reset",
            End::Lost(_) => "stream_lost",
        }
    }

    /// How a failed request body ends the stream.
    pub(super) fn of_request_error(ctx: &XdsContext, e: &RequestError) -> End {
        match e {
            RequestError::Body(status) if status.code() == tonic::Code::Cancelled => End::Reset,
            RequestError::Body(status) if peer_closed(status) => End::Gone,
            RequestError::Body(status) => End::Lost(error_chain(status)),
            _ => End::Status(refused_request(ctx, e)),
        }
    }
}

/// Whether the body failed because the client closed its connection (end of file without
/// an HTTP/2 goodbye: a proxy that exits or is killed does this), as opposed to a connection
/// that broke (reset) or that the server gave up on (keepalive timeout).
fn peer_closed(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        let io = e
            .downcast_ref::<std::io::Error>()
            .or_else(|| e.downcast_ref::<h2::Error>().and_then(h2::Error::get_io));
        if let Some(io) = io {
            // h2 reports the end of the connection's bytes as a broken pipe.
            return matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::UnexpectedEof
            );
        }
        source = e.source();
    }
    false
}

/// The status's message and what caused it, for the log.
fn error_chain(status: &Status) -> String {
    crate::errors::with_causes(
        status.message().to_string(),
        std::error::Error::source(status),
    )
}
