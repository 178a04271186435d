//! The chat panel's model: loaded on demand from a step's artifact, answered by `lf serve`'s own
//! routes (`/api/chat/v1/chat/completions` is `lf serve`'s `/v1/chat/completions`).

use std::path::PathBuf;

use axum::Router;
use lf_model::backend::{Device, Dtype};

use crate::ServeOptions;
use crate::worker::Worker;

/// The loaded model, if any.
#[derive(Default)]
pub struct Chat {
    loaded: tokio::sync::Mutex<Option<Loaded>>,
}

struct Loaded {
    path: PathBuf,
    id: String,
    router: Router,
}

/// How many chat requests may wait for the model.
const QUEUE: usize = 4;

impl Chat {
    /// Loads the model at `path` as `id` (unless it is the one loaded), dropping the previous one first.
    pub async fn load(
        &self,
        path: PathBuf,
        id: String,
        device: Device,
        dtype: Dtype,
    ) -> anyhow::Result<()> {
        let mut loaded = self.loaded.lock().await;
        if loaded
            .as_ref()
            .is_some_and(|l| l.path == path && l.id == id)
        {
            return Ok(());
        }
        *loaded = None;
        let model = path.clone();
        let worker =
            tokio::task::spawn_blocking(move || Worker::spawn(model, device, dtype, QUEUE))
                .await??;
        let opts = ServeOptions {
            max_queue: QUEUE,
            device,
            dtype,
            ..ServeOptions::new(path.clone(), id.clone())
        };
        *loaded = Some(Loaded {
            path,
            id,
            router: crate::routes::router(opts, worker),
        });
        Ok(())
    }

    /// The loaded model's id and routes.
    pub async fn current(&self) -> Option<(String, Router)> {
        let loaded = self.loaded.lock().await;
        loaded.as_ref().map(|l| (l.id.clone(), l.router.clone()))
    }
}
