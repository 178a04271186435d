//! The server's Prometheus metrics (`GET /metrics`), kept with `prometheus-client`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A request's endpoint and status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route (`/v1/chat/completions`, ...; `other` for unknown paths).
    pub endpoint: String,
    /// The HTTP status.
    pub code: u16,
}

/// A request's endpoint.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// The route.
    pub endpoint: String,
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    sync: std::sync::Mutex<()>,
    /// Requests answered, by endpoint and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Requests answered with a status of 400 or more.
    pub errors: Family<RequestLabels, Counter>,
    /// Seconds from a request's arrival to its complete answer (the last event of a stream).
    pub latency: Family<EndpointLabels, Histogram>,
    /// Tokens generated.
    pub generated_tokens: Counter,
    /// Prompt tokens processed.
    pub prompt_tokens: Counter,
    /// Requests waiting for the model (set when scraped).
    pub queue_depth: Gauge,
    /// Requests being answered or waiting.
    pub in_flight: Gauge,
    /// Requests dropped or stopped because their client went away.
    pub cancelled: Counter,
}

impl Metrics {
    /// Empty metrics, registered under `lf_`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("lf");
        let requests = Family::<RequestLabels, Counter>::default();
        let errors = Family::<RequestLabels, Counter>::default();
        let latency = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        let generated_tokens = Counter::default();
        let prompt_tokens = Counter::default();
        let queue_depth = Gauge::default();
        let in_flight = Gauge::default();
        let cancelled = Counter::default();
        registry.register("requests", "HTTP requests answered", requests.clone());
        registry.register(
            "errors",
            "HTTP requests answered with an error status",
            errors.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Seconds from a request's arrival to its complete answer",
            latency.clone(),
        );
        registry.register(
            "generated_tokens",
            "Tokens generated",
            generated_tokens.clone(),
        );
        registry.register(
            "prompt_tokens",
            "Prompt tokens processed",
            prompt_tokens.clone(),
        );
        registry.register(
            "queue_depth",
            "Requests waiting for the model",
            queue_depth.clone(),
        );
        registry.register(
            "in_flight_requests",
            "Requests being answered or waiting",
            in_flight.clone(),
        );
        registry.register(
            "cancelled_requests",
            "Requests dropped or stopped because their client went away",
            cancelled.clone(),
        );
        Metrics {
            registry,
            sync: std::sync::Mutex::new(()),
            requests,
            errors,
            latency,
            generated_tokens,
            prompt_tokens,
            queue_depth,
            in_flight,
            cancelled,
        }
    }

    /// Records one answered request.
    pub fn record(&self, endpoint: &str, code: u16, seconds: f64) {
        let labels = RequestLabels {
            endpoint: endpoint.to_owned(),
            code,
        };
        self.requests.get_or_create(&labels).inc();
        if code >= 400 {
            self.errors.get_or_create(&labels).inc();
        }
        self.latency
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_owned(),
            })
            .observe(seconds);
    }

    /// Brings `cancelled` up to the worker's count `total`.
    pub fn sync_cancelled(&self, total: u64) {
        let _one_at_a_time = self.sync.lock();
        self.cancelled
            .inc_by(total.saturating_sub(self.cancelled.get()));
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
