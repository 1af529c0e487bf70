//! One ADS stream (state of the world): revision gate, then requests and snapshot changes
//! until the client leaves, a rule is broken, or the server shuts down.

mod end;

use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tonic::Status;

use super::admission::PUSH_ACK_TIMEOUT;
use super::ads::{Framed, Out, Outgoing};
use super::proxies::ProxyEntry;
use super::request::{Charge, Request, RequestError};
use super::state::{RequestView, Response, StreamState, Verdict};
use super::wire::response_head;
use super::XdsContext;
use crate::echo::{echo, echo_max};
use crate::snapshot::views::View;
use crate::snapshot::{ResourceType, Snapshot};
use end::End;

/// A stream that sends no request for this long is closed (it would hold a task for nothing;
/// a proxy sends its first request with the stream's headers).
const FIRST_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a stream whose requests ended cleanly waits to learn whether the connection is
/// going too (see [`requests_ended`]).
const REQUESTS_ENDED_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves one stream to its end.
pub async fn serve<S>(ctx: Arc<XdsContext>, mut requests: S, out: Out)
where
    S: Stream<Item = Result<Request, RequestError>> + Unpin + Send,
{
    // Boxed, as are request handling and pushes below: their futures are freed when done, so
    // an idle stream's task holds only the loop's own state.
    let Some(Opened {
        mut stream,
        first,
        early,
        mut snapshots,
        connected: _connected,
    }) = Box::pin(open(&ctx, &mut requests, out)).await
    else {
        return;
    };
    let node_id = stream.node_id.clone();
    // Created once: a fresh `cancelled()` per turn of the loop would join and leave the
    // token's waiter list (a lock shared by every stream) on each request and push.
    let shutdown = ctx.shutdown.cancelled();
    tokio::pin!(shutdown);
    let mut opening = Box::pin(stream.handle(first)).await;
    if let (Ok(()), Some((request, _charge))) = (&opening, early) {
        opening = Box::pin(stream.handle(request)).await;
    }
    let end = match opening {
        Err(end) => end,
        Ok(()) => loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break End::Shutdown(shutting_down(&ctx)),
                request = requests.next() => match request {
                    Some(Ok(request)) => if let Err(end) = Box::pin(stream.handle(request)).await { break end },
                    Some(Err(e)) => break End::of_request_error(&ctx, &e),
                    None => break Box::pin(requests_ended(&stream.out)).await,
                },
                _ = sleep_until(stream.push_deadline()) => {
                    tracing::debug!(node = %node_id, "no ACK within the push timeout; giving the permit back");
                    stream.push = None;
                }
                changed = snapshots.changed() => {
                    if changed.is_err() { break End::Shutdown(shutting_down(&ctx)) }
                    let next = snapshots.borrow_and_update().clone();
                    if let Some(next) = next {
                        if let Err(end) = Box::pin(stream.push(next)).await { break end }
                    }
                }
            }
        },
    };
    let reason = end.reason();
    ctx.metrics.stream_ended(reason);
    match end {
        End::Status(status) | End::Shutdown(status) => {
            tracing::info!(node = %node_id, reason, "proxy disconnected");
            let _ = stream.out.send(Outgoing::End(status)).await;
        }
        End::Lost(detail) => {
            // Not the proxy's doing: worth a warning, rate-limited (a whole connection's
            // streams, or every connection of a starved host, can go at once).
            if let Some(held_back) = ctx.end_log.allow(&[node_id.as_bytes()]) {
                tracing::warn!(
                    node = %echo(&node_id),
                    reason,
                    held_back,
                    "proxy stream ended early: {}; the proxy will reconnect",
                    echo_max(&detail, 512)
                );
            }
        }
        End::Gone | End::Reset => tracing::info!(node = %node_id, reason, "proxy disconnected"),
    }
}

/// The stream's requests ended without an error: the proxy ended its side, or the server
/// closed the connection. hyper ends request bodies the same way after its own GOAWAY, as
/// when a keepalive PING went unanswered within `--keepalive-timeout`. A half-closed stream
/// can still be answered; a closed connection's response side closes right after.
async fn requests_ended(out: &Out) -> End {
    match tokio::time::timeout(REQUESTS_ENDED_GRACE, out.closed()).await {
        Ok(()) => End::Lost(
            "the connection closed under the stream without the proxy ending it (an HTTP/2 \
             keepalive PING not answered within --keepalive-timeout)"
                .into(),
        ),
        Err(_) => End::Gone,
    }
}

/// An admitted stream, ready for its first request.
struct Opened {
    stream: AdsStream,
    first: Request,
    /// A request that came while the stream waited for admission, charged to the request
    /// budget until it is handled.
    early: Option<(Request, Charge)>,
    snapshots: crate::pipeline::SnapshotReceiver,
    connected: Connected,
}

/// The first request, the revision gate, admission and the first snapshot; `None` when the
/// stream ended on the way (its status already sent).
async fn open<S>(ctx: &Arc<XdsContext>, requests: &mut S, out: Out) -> Option<Opened>
where
    S: Stream<Item = Result<Request, RequestError>> + Unpin + Send,
{
    let first = tokio::select! {
        first = tokio::time::timeout(FIRST_REQUEST_TIMEOUT, requests.next()) => match first {
            Ok(first) => first,
            Err(_) => {
                let _ = out.send(Outgoing::End(Status::deadline_exceeded(format!(
                    "no DiscoveryRequest within {FIRST_REQUEST_TIMEOUT:?} of opening the stream"
                )))).await;
                return None;
            }
        },
        _ = ctx.shutdown.cancelled() => return None,
    };
    let first = match first {
        Some(Ok(first)) => first,
        Some(Err(e)) => {
            let _ = out.send(Outgoing::End(refused_request(ctx, &e))).await;
            return None;
        }
        None => return None,
    };
    let identity = match ctx.gate.admit(first.node.as_ref()) {
        Ok(identity) => identity,
        Err(rejection) => {
            ctx.metrics.rejected(rejection.reason());
            ctx.rejections.log(&rejection, ctx.gate.revision().as_str());
            let _ = out.send(Outgoing::End(rejection.to_status())).await;
            return None;
        }
    };
    // Admission after the (cheap) gate, so misrouted proxies do not use up the queue. A
    // client that leaves while it waits (resets the stream, closes its side or the
    // connection) gives its place back at once instead of holding it until its turn.
    let mut early = None;
    let admitted = {
        let admit = ctx.admission.admit();
        tokio::pin!(admit);
        loop {
            tokio::select! {
                admitted = &mut admit => break admitted,
                _ = ctx.shutdown.cancelled() => return None,
                _ = out.closed() => return None,
                request = requests.next(), if early.is_none() => match request {
                    Some(Ok(request)) => match ctx.requests.budget.charge(request.encoded_len()) {
                        Ok(charge) => early = Some((request, charge)),
                        Err(e) => {
                            let _ = out.send(Outgoing::End(refused_request(ctx, &e))).await;
                            return None;
                        }
                    },
                    Some(Err(e)) => {
                        let _ = out.send(Outgoing::End(refused_request(ctx, &e))).await;
                        return None;
                    }
                    None => return None,
                },
            }
        }
    };
    if let Err(overloaded) = admitted {
        ctx.metrics.rejected("overloaded");
        tracing::warn!("{overloaded}");
        let _ = out.send(Outgoing::End(overloaded.to_status())).await;
        return None;
    }
    let entry = ctx.proxies.register(&identity);
    ctx.metrics.connected_proxies.inc();
    let connected = Connected(ctx.clone());
    tracing::info!(node = %identity.node_id, "proxy connected");

    let mut snapshots = ctx.snapshots.clone();
    // Hold the stream until the first snapshot: never answer with "nothing" before sync.
    let snapshot = loop {
        if let Some(s) = snapshots.borrow_and_update().clone() {
            break s;
        }
        tokio::select! {
            changed = snapshots.changed() => if changed.is_err() { return None },
            _ = out.closed() => return None,
            _ = ctx.shutdown.cancelled() => {
                let _ = out.send(Outgoing::End(shutting_down(ctx))).await;
                return None;
            }
        }
    };
    let stream = AdsStream {
        ctx: ctx.clone(),
        state: StreamState::new(View::of(&identity)),
        snapshot,
        out,
        entry,
        node_id: identity.node_id.clone(),
        push: None,
        unanswered: [false; 4],
        names_seen: [NO_NAMES_SEEN; 4],
    };
    Some(Opened {
        stream,
        first,
        early,
        snapshots,
        connected,
    })
}

/// Decrements the connected gauge when the stream ends, however it ends.
struct Connected(Arc<XdsContext>);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.metrics.connected_proxies.dec();
    }
}

fn shutting_down(ctx: &XdsContext) -> Status {
    Status::unavailable(format!(
        "revplane revision {} is shutting down; reconnect",
        ctx.gate.revision()
    ))
}

/// Bytes of a NACK message a log line shows.
const NACK_LOG_BYTES: usize = 1024;

fn too_many_names(kind: ResourceType, names: usize, max: usize) -> Status {
    Status::resource_exhausted(format!(
        "this {} request names {names} resources; this server serves at most {max} names per \
         type on one stream (--max-subscribed-names): subscribe to fewer (a wildcard \
         subscription needs none) or raise the limit",
        kind.short().to_uppercase()
    ))
}

/// The status a stream ends with when its requests cannot be read; counted when the server
/// refused them (not when the client went away).
pub(super) fn refused_request(ctx: &XdsContext, e: &RequestError) -> Status {
    if let Some(reason) = e.reason() {
        ctx.metrics.rejected(reason);
        tracing::debug!(reason, "ending a stream: {e}");
    }
    e.to_status()
}

impl AdsStream {
    /// When the held push permit is given back without an ACK.
    fn push_deadline(&self) -> Option<Instant> {
        self.push
            .as_ref()
            .map(|(_, since)| *since + PUSH_ACK_TIMEOUT)
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

struct AdsStream {
    ctx: Arc<XdsContext>,
    state: StreamState,
    snapshot: Arc<Snapshot>,
    out: Out,
    entry: ProxyEntry,
    node_id: String,
    /// The push permit held while responses are unanswered, and when it was taken.
    push: Option<(OwnedSemaphorePermit, Instant)>,
    /// Types with a response the proxy has not answered yet.
    unanswered: [bool; 4],
    /// Per type, the fingerprint of the names the last applied request subscribed to
    /// ([`NO_NAMES_SEEN`] before one): a request naming the same list is not read again.
    names_seen: [u128; 4],
}

/// Takes a push permit into `push` unless it holds one.
async fn take_push_permit(
    ctx: &XdsContext,
    push: &mut Option<(OwnedSemaphorePermit, Instant)>,
) -> Result<(), End> {
    if push.is_none() {
        // Biased: when the permit is there at once, the shutdown future is never polled, so
        // it never joins the token's shared waiter list.
        let permit = tokio::select! {
            biased;
            permit = ctx.admission.push_permit() => permit,
            _ = ctx.shutdown.cancelled() => return Err(End::Shutdown(shutting_down(ctx))),
        };
        *push = Some((permit, Instant::now()));
    }
    Ok(())
}

/// What a request calls for once applied.
enum Next {
    /// Nothing to send.
    Nothing,
    /// The proxy answered a response: whatever waited for that answer.
    Answered,
    /// A first request or a subscription change of this type: its response.
    Consider(ResourceType),
}

/// `names_seen` of a type with no applied request.
const NO_NAMES_SEEN: u128 = 0;

impl AdsStream {
    async fn handle(&mut self, request: Request) -> Result<(), End> {
        // The request (an ACK is tens of KB) is gone before anything waits: in a connect
        // storm thousands of streams wait for a push permit at once.
        let responses = match self.apply(request)? {
            Next::Nothing => Vec::new(),
            Next::Answered => self.state.responses_for(&self.snapshot),
            Next::Consider(kind) => {
                // A new subscription's responses are built once the stream may push: streams
                // queued for a permit hold no built response.
                take_push_permit(&self.ctx, &mut self.push).await?;
                self.state
                    .responses_after_request(kind, &self.snapshot, true)
            }
        };
        for response in responses {
            self.send(response).await?;
        }
        if !self.unanswered.contains(&true) {
            // A permit taken for a subscription that needed no response goes back.
            self.push = None;
        }
        Ok(())
    }

    /// Applies a request to the stream's state; what it calls for next.
    fn apply(&mut self, request: Request) -> Result<Next, End> {
        if request.type_url.is_empty() {
            return Err(End::Status(Status::invalid_argument(
                "DiscoveryRequest.type_url is empty; ADS requests must name their resource type",
            )));
        }
        if let Err(rejection) = self.ctx.gate.recheck(request.node.as_ref()) {
            self.ctx.metrics.rejected(rejection.reason());
            self.ctx
                .rejections
                .log(&rejection, self.ctx.gate.revision().as_str());
            return Err(End::Status(rejection.to_status()));
        }
        let Some(kind) = ResourceType::from_type_url(&request.type_url) else {
            tracing::debug!(type_url = %request.type_url, "ignoring a request for a type revplane does not serve");
            return Ok(Next::Nothing);
        };
        if request.names_count() > self.ctx.max_subscribed_names {
            self.ctx.metrics.rejected("too_many_names");
            return Err(End::Status(too_many_names(
                kind,
                request.names_count(),
                self.ctx.max_subscribed_names,
            )));
        }
        // An ACK repeats the whole subscription: when it is the list the last applied request
        // named, its names are not read (nor checked, allocated, sorted or compared).
        let fingerprint = request.names_fingerprint().max(1);
        let same_names = self.names_seen[kind as usize] == fingerprint;
        let names = if same_names {
            Vec::new()
        } else {
            request
                .names()
                .map_err(|e| End::Status(refused_request(&self.ctx, &RequestError::Malformed(e))))?
        };
        let view = RequestView {
            version: &request.version_info,
            nonce: &request.response_nonce,
            names: &names,
            same_names,
            error: request.error_detail.as_ref().map(|e| e.message.as_str()),
        };
        let (verdict, consider) = self.state.on_request(kind, &view);
        if verdict != Verdict::Stale {
            // A stale request is ignored whole, its names too: they are not "seen".
            self.names_seen[kind as usize] = fingerprint;
        }
        let answered = matches!(verdict, Verdict::Ack { .. } | Verdict::Nack(_));
        if answered {
            self.unanswered[kind as usize] = false;
            if !self.unanswered.contains(&true) {
                self.push = None;
            }
        }
        match verdict {
            Verdict::Nack(nack) => {
                // Once per response (repeats are `Repeated`); logged at most once a minute
                // per node, cut short: /debug/proxies and CSDS keep the latest.
                self.ctx.metrics.nacked(kind);
                if let Some(held_back) = self.ctx.nack_log.allow(&[self.node_id.as_bytes()]) {
                    tracing::warn!(
                        node = %echo(&self.node_id),
                        r#type = kind.short(),
                        nonce = %nack.nonce,
                        kept_version = %echo(&nack.version),
                        held_back,
                        "proxy rejected config (NACK): {}",
                        echo_max(&nack.message, NACK_LOG_BYTES).of_total(nack.message_bytes)
                    );
                }
            }
            Verdict::Ack {
                since_build: Some(d),
            } => self.ctx.metrics.acked(kind, d),
            Verdict::Stale => {
                tracing::debug!(r#type = kind.short(), nonce = %request.response_nonce, "ignoring a request with a stale nonce");
            }
            _ => {}
        }
        self.entry.update(kind, &self.state);
        Ok(if consider {
            Next::Consider(kind)
        } else if answered {
            // An answer can release what waited for it (listeners and routes behind clusters,
            // clusters kept for routes).
            Next::Answered
        } else {
            Next::Nothing
        })
    }

    async fn push(&mut self, snapshot: Arc<Snapshot>) -> Result<(), End> {
        self.snapshot = snapshot;
        for response in self.state.responses_for(&self.snapshot) {
            self.send(response).await?;
        }
        Ok(())
    }

    async fn send(&mut self, response: Response) -> Result<(), End> {
        let kind = response.kind;
        // Room in the queue first, so a slow reader holds no push permit and no stale copy.
        // Biased: when the slot is there at once, the shutdown future is never polled, so it
        // never joins the token's shared waiter list.
        let slot = tokio::select! {
            biased;
            slot = self.out.reserve() => slot.map_err(|_| {
                End::Lost("the HTTP/2 stream or its connection closed while a response waited to be sent".into())
            })?,
            _ = self.ctx.shutdown.cancelled() => return Err(End::Shutdown(shutting_down(&self.ctx))),
        };
        take_push_permit(&self.ctx, &mut self.push).await?;
        self.unanswered[kind as usize] = true;
        let body = self.snapshot.response_body(kind, &response.resources);
        let head = response_head(
            &response.version,
            kind.type_url(),
            &response.nonce,
            &self.ctx.control_plane_id,
            body.len(),
        );
        slot.send(Outgoing::Response(Box::new(Framed { head, body })));
        self.ctx.metrics.pushed(kind, self.snapshot.built.elapsed());
        self.entry.update(kind, &self.state);
        Ok(())
    }
}
