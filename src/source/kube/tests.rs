//! The watch loop driven by scripted watcher streams on a paused clock: re-list timing after
//! `410 Gone`, what is reported and logged while a list keeps failing, readiness.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc::{unbounded, UnboundedSender};
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use kube::core::{ObjectMeta, Status};
use kube::runtime::watcher::{self, Event};
use tokio::time::Instant;

use super::watch::{RetryDelay, Watch};
use super::*;
use crate::source::SourceError;

type Item = watcher::Result<Event<Service>>;

/// Watcher streams handed out one per `connect`, fed by the test.
#[derive(Clone, Default)]
struct Script {
    streams: Arc<Mutex<VecDeque<BoxStream<'static, Item>>>>,
}

impl Script {
    /// The feed of the next stream `connect` hands out.
    fn next_stream(&self) -> UnboundedSender<Item> {
        let (tx, rx) = unbounded();
        self.streams.lock().unwrap().push_back(rx.boxed());
        tx
    }

    fn connect(&self) -> impl FnMut() -> BoxStream<'static, Item> {
        let streams = self.streams.clone();
        move || {
            streams
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| futures::stream::pending().boxed())
        }
    }
}

fn svc(name: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shop".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn api_error(code: u16, message: &str) -> kube::Error {
    kube::Error::Api(Status::failure(message, "").with_code(code).boxed())
}

fn gone() -> watcher::Error {
    watcher::Error::WatchError(
        Status::failure("too old resource version: 100 (2000)", "Expired")
            .with_code(410)
            .boxed(),
    )
}

/// Starts a services watch on `script`; returns its events, status and readiness.
fn start(script: &Script) -> (mpsc::Receiver<CatalogEvent>, SourceStatus, Readiness) {
    let (tx, rx) = mpsc::channel(64);
    let status = SourceStatus::default();
    let readiness = Readiness::new();
    let watch = Watch {
        resource: "services",
        kind: ObjectKind::Service,
        events: tx,
        status: status.clone(),
        metrics: KubeMetrics::default(),
        shutdown: CancellationToken::new(),
        ready: Some(readiness.block("kube/services")),
    };
    tokio::spawn(watch.run(script.connect(), |s: &Service| {
        convert::service(s, "default").map(Object::Service)
    }));
    (rx, status, readiness)
}

/// The next catalog event, within a minute of (paused) time.
async fn next(events: &mut mpsc::Receiver<CatalogEvent>) -> CatalogEvent {
    tokio::time::timeout(Duration::from_secs(60), events.recv())
        .await
        .expect("a catalog event within a minute")
        .expect("the watch is running")
}

fn names(event: &CatalogEvent) -> Vec<String> {
    match event {
        CatalogEvent::Replace(_, objects) => objects
            .iter()
            .map(|o| match o {
                Object::Service(s) => s.key.name.clone(),
                other => panic!("{other:?}"),
            })
            .collect(),
        other => panic!("expected a re-list, got {other:?}"),
    }
}

fn watch_errors(status: &SourceStatus) -> Vec<SourceError> {
    status
        .errors()
        .into_iter()
        .filter(|e| e.path == "kube watch services")
        .collect()
}

#[tokio::test(start_paused = true)]
async fn after_an_outage_a_410_relists_at_once_and_recovery_waits_for_the_list() {
    let script = Script::default();
    let first = script.next_stream();
    let (mut events, status, readiness) = start(&script);
    first.unbounded_send(Ok(Event::Init)).unwrap();
    first
        .unbounded_send(Ok(Event::InitApply(svc("a"))))
        .unwrap();
    first.unbounded_send(Ok(Event::InitDone)).unwrap();
    assert_eq!(names(&next(&mut events).await), ["a"]);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(readiness.is_ready(), "the guard goes with the first list");

    // The apiserver goes away for a while: the delay grows to its cap, and each retry is a
    // fresh watcher (so the next success is a completed list).
    let mut current = first;
    for _ in 0..6 {
        let retry = script.next_stream();
        let down = api_error(503, "the apiserver is shutting down");
        current
            .unbounded_send(Err(watcher::Error::WatchStartFailed(down)))
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            script.streams.lock().unwrap().is_empty(),
            "retried on a fresh watcher within the capped delay"
        );
        current = retry;
    }
    assert_eq!(watch_errors(&status).len(), 1, "the outage is reported");

    // It is back, with a new watch cache: the old resource version is gone.
    let second = script.next_stream();
    let back = Instant::now();
    current.unbounded_send(Err(gone())).unwrap();
    second.unbounded_send(Ok(Event::Init)).unwrap();
    second
        .unbounded_send(Ok(Event::InitApply(svc("a"))))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        watch_errors(&status).len(),
        1,
        "a list that has started is no recovery yet"
    );
    second
        .unbounded_send(Ok(Event::InitApply(svc("b"))))
        .unwrap();
    second.unbounded_send(Ok(Event::InitDone)).unwrap();
    assert_eq!(names(&next(&mut events).await), ["a", "b"]);
    let took = back.elapsed();
    assert!(
        took < Duration::from_millis(100),
        "re-listed {took:?} after the 410 (no retry delay)"
    );
    assert!(watch_errors(&status).is_empty(), "recovered after the list");
}

#[tokio::test(start_paused = true)]
async fn a_blip_on_a_quiet_resource_recovers_with_a_list_not_with_the_next_change() {
    let script = Script::default();
    let first = script.next_stream();
    let (mut events, status, _readiness) = start(&script);
    first.unbounded_send(Ok(Event::Init)).unwrap();
    first
        .unbounded_send(Ok(Event::InitApply(svc("a"))))
        .unwrap();
    first.unbounded_send(Ok(Event::InitDone)).unwrap();
    next(&mut events).await;
    // The connection drops once; the apiserver is back at once and nothing ever changes (a
    // resumed watch would send no event, and the error would stay reported for good).
    let second = script.next_stream();
    let down = api_error(503, "connection reset");
    first
        .unbounded_send(Err(watcher::Error::WatchStartFailed(down)))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(watch_errors(&status).len(), 1, "the blip is reported");
    second.unbounded_send(Ok(Event::Init)).unwrap();
    second
        .unbounded_send(Ok(Event::InitApply(svc("a"))))
        .unwrap();
    second.unbounded_send(Ok(Event::InitDone)).unwrap();
    assert_eq!(names(&next(&mut events).await), ["a"]);
    assert!(
        watch_errors(&status).is_empty(),
        "the re-list after the retry delay says it recovered"
    );
}

#[tokio::test(start_paused = true)]
async fn a_410_right_after_another_waits_instead_of_listing_in_a_loop() {
    let script = Script::default();
    let first = script.next_stream();
    let (mut events, _status, _readiness) = start(&script);
    first.unbounded_send(Ok(Event::Init)).unwrap();
    first.unbounded_send(Ok(Event::InitDone)).unwrap();
    next(&mut events).await;
    let second = script.next_stream();
    first.unbounded_send(Err(gone())).unwrap();
    second.unbounded_send(Ok(Event::Init)).unwrap();
    second.unbounded_send(Ok(Event::InitDone)).unwrap();
    next(&mut events).await;
    let third = script.next_stream();
    let again = Instant::now();
    second.unbounded_send(Err(gone())).unwrap();
    third.unbounded_send(Ok(Event::Init)).unwrap();
    third.unbounded_send(Ok(Event::InitDone)).unwrap();
    next(&mut events).await;
    assert!(
        again.elapsed() >= Duration::from_millis(500),
        "the second 410 within a minute waits: {:?}",
        again.elapsed()
    );
}

/// Captures what is logged on this thread.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(start_paused = true)]
async fn a_list_that_keeps_failing_is_reported_steadily_and_never_called_recovered() {
    let log = Log::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let log = log.clone();
            move || log.clone()
        })
        .with_ansi(false)
        .finish();
    let _log = tracing::subscriber::set_default(subscriber);
    let script = Script::default();
    let mut feed = script.next_stream();
    let (mut events, status, readiness) = start(&script);
    let forbidden = || {
        watcher::Error::InitialListFailed(api_error(
            403,
            "services is forbidden: User \"nobody\" cannot list resource \"services\"",
        ))
    };
    // As kube-runtime does: every list attempt starts with Init, then fails.
    for attempt in 0..8 {
        feed.unbounded_send(Ok(Event::Init)).unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        if attempt > 0 {
            let errors = watch_errors(&status);
            assert_eq!(errors.len(), 1, "attempt {attempt}: still reported");
            assert!(errors[0].reason.contains("rbac.yaml"), "{errors:?}");
        }
        // Each retry starts over on a fresh watcher, as kube-runtime's own retry would list.
        let retry = script.next_stream();
        feed.unbounded_send(Err(forbidden())).unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(watch_errors(&status).len(), 1, "attempt {attempt}");
        feed = retry;
    }
    let text = log.text();
    assert!(!text.contains("recovered"), "{text}");
    assert_eq!(
        text.matches("watch failed").count(),
        1,
        "a repeated failure is logged once (and counted every time): {text}"
    );
    assert!(!readiness.is_ready(), "{:?}", readiness.pending());

    // The role is granted.
    feed.unbounded_send(Ok(Event::Init)).unwrap();
    feed.unbounded_send(Ok(Event::InitApply(svc("a")))).unwrap();
    feed.unbounded_send(Ok(Event::InitDone)).unwrap();
    assert_eq!(names(&next(&mut events).await), ["a"]);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(watch_errors(&status).is_empty());
    assert_eq!(log.text().matches("watch recovered").count(), 1);
    assert!(readiness.is_ready());
}

#[test]
fn retry_delays_grow_to_a_short_cap() {
    let mut r = RetryDelay::default();
    let delays: Vec<Duration> = (0..6).map(|_| r.next_delay()).collect();
    let floors = [500, 1000, 2000, 2000, 2000, 2000];
    for (d, floor) in delays.iter().zip(floors) {
        let floor = Duration::from_millis(floor);
        assert!(
            *d >= floor && *d <= floor.mul_f64(1.25),
            "{d:?} vs {floor:?}"
        );
    }
    assert_eq!(RetryDelay::MAX, Duration::from_secs(2));
}
