//! The step API: what a step kind implements, what it receives when it runs, and the registry of kinds.
//!
//! A step kind is a unit struct implementing [`Step`]; its parameters are a type from `lf-schemas`. The
//! binary registers every kind in one [`Registry`]. Steps receive resolved parameters and the paths of their
//! input artifacts, never the manifest.

use std::any::Any;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use lf_schemas::{FieldPath, Input, Params};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::Value as Json;

use crate::numerics::Numerics;
use crate::progress::Progress;
use crate::yaml::{DeError, Node, from_node};

/// A problem with a step's parameters, found before anything runs.
#[derive(Clone, Debug)]
pub struct Problem {
    /// The parameter at fault.
    pub field: FieldPath,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub hint: Option<String>,
}

impl Problem {
    /// A problem with the parameter at `field`.
    pub fn new(field: FieldPath, message: impl Into<String>) -> Problem {
        Problem {
            field,
            message: message.into(),
            hint: None,
        }
    }

    /// Adds a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Problem {
        self.hint = Some(hint.into());
        self
    }
}

/// What the engine knows when it asks a step to pin its remote inputs.
pub struct PinContext<'a> {
    /// No network: resolve from local caches only.
    pub offline: bool,
    /// The manifest's folder.
    pub manifest_dir: &'a Path,
    /// What the lockfile recorded for this step last time, if anything.
    pub locked: Option<&'a Json>,
}

/// A step kind.
pub trait Step: Send + Sync + 'static {
    /// Its parameters.
    type Params: Params;
    /// The `kind:` value that selects it.
    const KIND: &'static str;
    /// Bump when a change to the implementation changes its outputs: every cached result of the kind is
    /// then recomputed.
    const VERSION: u32;
    /// One line for `lf validate --kinds` and the docs.
    const ABOUT: &'static str;
    /// Whether results depend on the device and dtype (they become part of the cache key).
    const NUMERIC: bool = false;

    /// Checks parameter values the types cannot express. Runs when the manifest is validated.
    fn check(&self, _params: &Self::Params) -> Vec<Problem> {
        Vec::new()
    }

    /// Checks parameters against the artifacts of the inputs (`inputs` maps each input's field path, as
    /// text, to its folder), when they exist: at plan time if they are cached, else just before running.
    fn check_inputs(
        &self,
        _params: &Self::Params,
        _inputs: &BTreeMap<String, PathBuf>,
    ) -> Vec<Problem> {
        Vec::new()
    }

    /// Resolves remote inputs to immutable identities (a hub revision to a commit sha). The result is part
    /// of the cache key and of the lockfile.
    fn pin(&self, _params: &Self::Params, _cx: &PinContext<'_>) -> anyhow::Result<Option<Json>> {
        Ok(None)
    }

    /// Produces the artifact into `cx.out_dir()`.
    fn run(&self, params: &Self::Params, cx: &mut StepContext<'_>) -> anyhow::Result<()>;
}

/// Parameters parsed for some step kind, type-erased.
#[derive(Clone)]
pub struct AnyParams {
    value: Arc<dyn Any + Send + Sync>,
    /// The parameters as JSON, all of them.
    pub json: Json,
    /// What the step reads.
    pub inputs: Vec<Input>,
}

/// Object-safe form of [`Step`]; implemented for every `Step`.
pub trait DynStep: Send + Sync {
    /// See [`Step::KIND`].
    fn kind(&self) -> &'static str;
    /// See [`Step::VERSION`].
    fn version(&self) -> u32;
    /// See [`Step::ABOUT`].
    fn about(&self) -> &'static str;
    /// See [`Step::NUMERIC`].
    fn numeric(&self) -> bool;
    /// Parameters left out of the cache key.
    fn volatile(&self) -> &'static [&'static str];
    /// JSON Schema of the parameters.
    fn schema(&self, generator: &mut SchemaGenerator) -> Schema;
    /// Deserializes parameters from a manifest node.
    fn parse(&self, node: &Node) -> Result<AnyParams, DeError>;
    /// See [`Step::check`].
    fn check(&self, params: &AnyParams) -> Vec<Problem>;
    /// See [`Step::check_inputs`].
    fn check_inputs(&self, params: &AnyParams, inputs: &BTreeMap<String, PathBuf>) -> Vec<Problem>;
    /// See [`Step::pin`].
    fn pin(&self, params: &AnyParams, cx: &PinContext<'_>) -> anyhow::Result<Option<Json>>;
    /// See [`Step::run`].
    fn run(&self, params: &AnyParams, cx: &mut StepContext<'_>) -> anyhow::Result<()>;
}

fn typed<S: Step>(params: &AnyParams) -> &S::Params {
    params
        .value
        .downcast_ref::<S::Params>()
        .expect("parameters were parsed by the same step kind")
}

impl<S: Step> DynStep for S {
    fn kind(&self) -> &'static str {
        S::KIND
    }
    fn version(&self) -> u32 {
        S::VERSION
    }
    fn about(&self) -> &'static str {
        S::ABOUT
    }
    fn numeric(&self) -> bool {
        S::NUMERIC
    }
    fn volatile(&self) -> &'static [&'static str] {
        <S::Params as Params>::VOLATILE
    }
    fn schema(&self, generator: &mut SchemaGenerator) -> Schema {
        <S::Params as JsonSchema>::json_schema(generator)
    }
    fn parse(&self, node: &Node) -> Result<AnyParams, DeError> {
        let params: S::Params = from_node(node)?;
        let json = serde_json::to_value(&params).map_err(|e| DeError {
            message: e.to_string(),
            span: Some(node.span),
            unknown_field: None,
        })?;
        Ok(AnyParams {
            inputs: params.inputs(),
            json,
            value: Arc::new(params),
        })
    }
    fn check(&self, params: &AnyParams) -> Vec<Problem> {
        Step::check(self, typed::<S>(params))
    }
    fn check_inputs(&self, params: &AnyParams, inputs: &BTreeMap<String, PathBuf>) -> Vec<Problem> {
        Step::check_inputs(self, typed::<S>(params), inputs)
    }
    fn pin(&self, params: &AnyParams, cx: &PinContext<'_>) -> anyhow::Result<Option<Json>> {
        Step::pin(self, typed::<S>(params), cx)
    }
    fn run(&self, params: &AnyParams, cx: &mut StepContext<'_>) -> anyhow::Result<()> {
        Step::run(self, typed::<S>(params), cx)
    }
}

/// Every step kind the binary knows.
#[derive(Clone)]
pub struct Registry {
    kinds: Vec<&'static dyn DynStep>,
}

impl Registry {
    /// A registry of the given kinds.
    pub fn new(kinds: &[&'static dyn DynStep]) -> Registry {
        Registry {
            kinds: kinds.to_vec(),
        }
    }

    /// The kind named `name`.
    pub fn get(&self, name: &str) -> Option<&'static dyn DynStep> {
        self.kinds.iter().copied().find(|k| k.kind() == name)
    }

    /// All kinds, in registration order.
    pub fn kinds(&self) -> impl Iterator<Item = &'static dyn DynStep> + '_ {
        self.kinds.iter().copied()
    }
}

/// Everything a running step may use.
pub struct StepContext<'a> {
    pub(crate) step: &'a str,
    pub(crate) out_dir: &'a Path,
    pub(crate) scratch_dir: &'a Path,
    pub(crate) manifest_dir: &'a Path,
    pub(crate) inputs: &'a BTreeMap<String, PathBuf>,
    pub(crate) pin: Option<&'a Json>,
    pub(crate) numerics: &'a Numerics,
    pub(crate) offline: bool,
    pub(crate) metrics: Arc<Mutex<BTreeMap<String, Json>>>,
    pub(crate) progress: &'a Progress,
}

impl<'a> StepContext<'a> {
    /// The step's name in the manifest (for messages only: results must not depend on it).
    pub fn step_name(&self) -> &str {
        self.step
    }

    /// The folder the artifact is written into. It starts empty. Files under `logs/` are kept but are not
    /// part of the artifact's content hash (put timings there).
    pub fn out_dir(&self) -> &Path {
        self.out_dir
    }

    /// A durable folder keyed by the cache key: it survives kills and failures (keep checkpoints here) and
    /// is removed once the artifact is committed.
    pub fn scratch_dir(&self) -> &Path {
        self.scratch_dir
    }

    /// The manifest's folder (relative paths in parameters are relative to it).
    pub fn manifest_dir(&self) -> &Path {
        self.manifest_dir
    }

    /// The artifact folder (or local path) of the input at `field` (e.g. `model`, `datasets[1]`).
    pub fn input(&self, field: &str) -> anyhow::Result<&'a Path> {
        self.inputs.get(field).map(PathBuf::as_path).ok_or_else(|| {
            anyhow::anyhow!(
                "step `{}` has no input `{field}` (inputs: {})",
                self.step,
                self.inputs.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// All inputs by field path.
    pub fn inputs(&self) -> &'a BTreeMap<String, PathBuf> {
        self.inputs
    }

    /// What [`Step::pin`] returned when the step was planned.
    pub fn pin(&self) -> Option<&'a Json> {
        self.pin
    }

    /// Device and dtype.
    pub fn numerics(&self) -> &'a Numerics {
        self.numerics
    }

    /// Whether the network must not be used.
    pub fn offline(&self) -> bool {
        self.offline
    }

    /// Records a headline metric, shown in the run summary and kept in the run record.
    pub fn metric(&self, name: &str, value: impl Into<Json>) {
        self.metrics
            .lock()
            .unwrap()
            .insert(name.to_string(), value.into());
    }

    /// Progress reporting for long work.
    pub fn progress(&self) -> &'a Progress {
        self.progress
    }
}
