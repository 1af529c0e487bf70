//! How many `/debug` pages are built at once, and building them off the runtime threads.
//!
//! A `/debug` page of thousands of proxies is megabytes of JSON; a thousand of them at once
//! used to occupy the runtime threads that serve xDS and hold their copies in memory. Each
//! page now takes a permit (waiting at most a second, then 503 with `Retry-After`) and is
//! built and serialized on a blocking thread that keeps the permit until it is done, even
//! if the client left.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a `/debug` request waits for a permit before it is refused.
pub const DEBUG_QUEUE_WAIT: Duration = Duration::from_secs(1);

/// Permits to build `/debug` pages.
#[derive(Clone, Debug)]
pub struct DebugLimit {
    permits: Arc<Semaphore>,
    concurrency: usize,
    wait: Duration,
}

impl DebugLimit {
    /// At most `concurrency` pages at once; others wait up to [`DEBUG_QUEUE_WAIT`].
    pub fn new(concurrency: usize) -> Self {
        DebugLimit {
            permits: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            wait: DEBUG_QUEUE_WAIT,
        }
    }

    /// The same limit, waiting at most `wait` for a permit.
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// A permit to build `page`, or the 503 response that says why there is none.
    pub async fn enter(&self, page: &str) -> Result<OwnedSemaphorePermit, Response> {
        let permit = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned()).await;
        match permit {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err((
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                format!(
                    "{page}: {} /debug requests are being served (--debug-concurrency) and this \
                     one waited {:?} for its turn; retry in a second, and ask for less: \
                     /debug/proxies?node=<node id>, or pages with ?limit=<n>&after=<node id>\n",
                    self.concurrency, self.wait
                ),
            )
                .into_response()),
        }
    }
}

/// Runs `build` on a blocking thread holding `permit`, and answers with its JSON.
pub async fn blocking_json<F>(permit: OwnedSemaphorePermit, build: F) -> Response
where
    F: FnOnce() -> serde_json::Result<Vec<u8>> + Send + 'static,
{
    let built = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        build()
    })
    .await;
    match built {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Ok(Err(e)) => internal(format!("cannot encode the page as JSON: {e}")),
        Err(e) => internal(format!("building the page failed: {e}")),
    }
}

fn internal(message: String) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, message + "\n").into_response()
}
