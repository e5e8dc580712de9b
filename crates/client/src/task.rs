//! `OwnedTask`: the only way this crate spawns. A task belongs to the value
//! that holds its `OwnedTask` and is aborted when that value is dropped, so
//! no connection or flush task outlives its `Subscriber` or `BatchingPublisher`.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;

/// A spawned task, aborted on drop.
#[derive(Debug)]
pub(crate) struct OwnedTask(JoinHandle<()>);

impl OwnedTask {
    /// Spawns `future` on the current tokio runtime.
    #[allow(clippy::disallowed_methods, reason = "the one place this crate spawns")]
    pub(crate) fn spawn(future: impl Future<Output = ()> + Send + 'static) -> OwnedTask {
        OwnedTask(tokio::spawn(future))
    }

    /// Waits up to `limit` for the task to finish by itself; aborts it after that.
    pub(crate) async fn join(mut self, limit: Duration) {
        if tokio::time::timeout(limit, &mut self.0).await.is_err() {
            self.0.abort();
        }
    }
}

impl Drop for OwnedTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}
