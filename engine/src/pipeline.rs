//! From manifest text to a validated [`Pipeline`]: every step's kind found, its parameters rendered and
//! typed, its references resolved to other steps or local files, and the steps in dependency order.
//!
//! Validation reports every problem it can find at once, each pointing at the manifest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lf_schemas::{Device, Dtype, FieldPath, Seg, Target};
use minijinja::{Environment, UndefinedBehavior};
use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::Value as Json;

use crate::diag::{Diagnostic, did_you_mean, list};
use crate::step::{AnyParams, DynStep, Problem, Registry};
use crate::yaml::{self, DeError, Node, Span, Value};

/// Top-level keys of a manifest.
const TOP_KEYS: &[&str] = &[
    "name",
    "description",
    "vars",
    "device",
    "dtype",
    "allow_outside",
    "steps",
];

/// A validated pipeline, ready to plan.
pub struct Pipeline {
    /// The pipeline's name.
    pub name: String,
    /// The manifest file (as given by the user).
    pub path: PathBuf,
    /// The folder relative paths are resolved against.
    pub dir: PathBuf,
    /// Manifest variables after `--var` overrides.
    pub vars: BTreeMap<String, Json>,
    /// Requested device.
    pub device: Device,
    /// Requested dtype.
    pub dtype: Dtype,
    /// Steps, in manifest order.
    pub steps: Vec<PipelineStep>,
    /// Step indices in dependency order (inputs first).
    pub order: Vec<usize>,
    /// Problems that do not stop the pipeline.
    pub warnings: Vec<Diagnostic>,
}

/// One step of a [`Pipeline`].
pub struct PipelineStep {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: &'static dyn DynStep,
    /// Its parameters, rendered and typed.
    pub params: AnyParams,
    /// What it reads, resolved.
    pub inputs: Vec<ResolvedInput>,
    /// Where its name is written.
    pub name_span: Span,
    /// Its parameter mapping (after rendering), for locating later problems.
    pub node: Node,
}

impl PipelineStep {
    /// The diagnostic of a problem found in this step's parameters, located in the manifest.
    pub fn diagnose(&self, problem: Problem) -> Diagnostic {
        diagnose(&self.name, &self.node, self.name_span, problem)
    }
}

/// The diagnostic of `problem` in step `step` whose parameters are `node` (`fallback` when the field
/// cannot be located).
fn diagnose(step: &str, node: &Node, fallback: Span, problem: Problem) -> Diagnostic {
    let span = locate(node, &problem.field).unwrap_or(fallback);
    let message = if problem.field.0.is_empty() {
        format!("step `{step}`: {}", problem.message)
    } else {
        format!("step `{step}`, `{}`: {}", problem.field, problem.message)
    };
    Diagnostic::error(message, Some(span)).maybe_hint(problem.hint)
}

/// A resolved input of a step.
#[derive(Clone, Debug)]
pub struct ResolvedInput {
    /// The parameter path it was written at, e.g. `datasets[1]`.
    pub field: String,
    /// What it is.
    pub source: InputSource,
    /// Only these files (glob patterns) count for the cache key; empty: all.
    pub files: Vec<String>,
}

/// Where an input comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputSource {
    /// The artifact of the step with this index.
    Step(usize),
    /// A local file or folder.
    Path(PathBuf),
}

impl Pipeline {
    /// Index of the step named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }

    /// The indices of the steps `index` depends on directly.
    pub fn upstream(&self, index: usize) -> impl Iterator<Item = usize> + '_ {
        self.steps[index]
            .inputs
            .iter()
            .filter_map(|i| match i.source {
                InputSource::Step(j) => Some(j),
                InputSource::Path(_) => None,
            })
    }

    /// The names of the steps whose artifacts step `index` reads, each once, in manifest order.
    pub fn needs(&self, index: usize) -> Vec<&str> {
        let mut ups: Vec<usize> = self.upstream(index).collect();
        ups.sort_unstable();
        ups.dedup();
        ups.into_iter()
            .map(|j| self.steps[j].name.as_str())
            .collect()
    }

    /// `index` and every step it depends on, transitively.
    pub fn closure(&self, index: usize) -> Vec<usize> {
        let mut seen = vec![false; self.steps.len()];
        let mut stack = vec![index];
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut seen[i], true) {
                stack.extend(self.upstream(i));
            }
        }
        (0..self.steps.len()).filter(|&i| seen[i]).collect()
    }
}

/// Where a manifest's steps may read local files: its folder and the folders of `allow_outside`.
struct Allowed {
    roots: Vec<PathBuf>,
}

impl Allowed {
    fn new(dir: &Path, extra: Vec<String>) -> Allowed {
        let roots = std::iter::once(dir.to_path_buf())
            .chain(extra.iter().map(|e| dir.join(e)))
            .filter_map(|p| p.canonicalize().ok())
            .collect();
        Allowed { roots }
    }

    /// Whether `path` (which exists) lies under an allowed folder, after following links: a link in
    /// the manifest's folder to a file elsewhere is outside.
    fn covers(&self, path: &Path) -> bool {
        path.canonicalize()
            .is_ok_and(|real| self.roots.iter().any(|root| real.starts_with(root)))
    }
}

fn outside(step: &str, text: &str, full: &Path, span: Span) -> Diagnostic {
    let real = full.canonicalize().unwrap_or_else(|_| full.to_path_buf());
    // Suggest the folder as the manifest names it (`../models`), unless only a link leads outside.
    let written = Path::new(text).parent().filter(|p| {
        p.is_absolute() || p.components().any(|c| c == std::path::Component::ParentDir)
    });
    let folder = written.unwrap_or_else(|| real.parent().unwrap_or(&real));
    let through_link = match written {
        Some(_) => String::new(),
        None => format!(" (a link to {})", real.display()),
    };
    Diagnostic::error(
        format!(
            "step `{step}` reads `{text}`, which is outside the manifest's folder{through_link}"
        ),
        Some(span),
    )
    .label("outside")
    .hint(format!(
        "a manifest reads only files under its own folder unless it says otherwise: add\n  \
         allow_outside: [{}]\nat its top level",
        folder.display()
    ))
}

/// Parses and validates a manifest. `path` is shown in messages and anchors relative paths.
pub fn load(
    path: &Path,
    text: &str,
    registry: &Registry,
    overrides: &BTreeMap<String, Json>,
) -> Result<Pipeline, Vec<Diagnostic>> {
    let mut cx = Loader {
        registry,
        diags: Vec::new(),
    };
    let dir = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let root = match yaml::parse(text) {
        Ok(root) => root,
        Err(e) => {
            return Err(vec![
                Diagnostic::error(format!("invalid YAML: {}", e.message), Some(e.span))
                    .label("here"),
            ]);
        }
    };
    let Some(entries) = root.as_map() else {
        return Err(vec![
            Diagnostic::error(
                format!(
                    "a manifest is a mapping with `name` and `steps`, found {}",
                    root.type_name()
                ),
                Some(root.span),
            )
            .hint("start from pipelines/quickstart.yaml"),
        ]);
    };

    // Problems of the whole file point at its first line.
    let top = Span {
        start: 0,
        end: text.find('\n').unwrap_or(text.len()).max(1).min(text.len()),
    };
    for (key, _) in entries {
        let k = key.as_scalar_text().unwrap_or_default();
        if !TOP_KEYS.contains(&k) {
            cx.unknown_key(key, k, TOP_KEYS, "the manifest");
        }
    }
    let name = match root.get("name") {
        Some(node) => match node.as_scalar_text() {
            Some(s) if valid_name(s) => s.to_string(),
            _ => {
                cx.error(
                    Diagnostic::error(
                        "the pipeline name must be letters, digits, `-` or `_`",
                        Some(node.span),
                    )
                    .label("invalid name"),
                );
                String::new()
            }
        },
        None => {
            cx.error(
                Diagnostic::error("missing key `name`", Some(top))
                    .hint("add `name: my-pipeline`: it names the `runs/<name>/` folder"),
            );
            String::new()
        }
    };
    let mut vars = BTreeMap::new();
    if let Some(node) = root.get("vars") {
        match node.as_map() {
            Some(entries) => {
                for (k, v) in entries {
                    vars.insert(
                        k.as_scalar_text().unwrap_or_default().to_string(),
                        v.to_json(),
                    );
                }
            }
            None if matches!(node.value, Value::Null) => {}
            None => cx.error(Diagnostic::error(
                format!("`vars` must be a mapping, found {}", node.type_name()),
                Some(node.span),
            )),
        }
    }
    vars.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
    let device = cx.typed(&root, "device").unwrap_or_default();
    let dtype = cx.typed(&root, "dtype").unwrap_or_default();
    let allowed = Allowed::new(
        &dir,
        cx.typed::<Vec<String>>(&root, "allow_outside")
            .unwrap_or_default(),
    );
    if let Some(node) = root.get("description")
        && !matches!(node.value, Value::Str(_) | Value::Null)
    {
        cx.error(Diagnostic::error(
            "`description` must be a string",
            Some(node.span),
        ));
    }

    let env = template_env();
    let mut steps = Vec::new();
    // Every declared name, including steps that failed validation: references to them are not errors.
    let declared: Vec<String> = root
        .get("steps")
        .and_then(Node::as_map)
        .map(|entries| {
            entries
                .iter()
                .filter_map(|(k, _)| k.as_scalar_text().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    match root.get("steps").map(|n| (n, n.as_map())) {
        None => cx.error(
            Diagnostic::error("missing key `steps`", Some(top))
                .hint("a manifest lists its steps under `steps:`, each with a `kind`"),
        ),
        Some((_, Some(entries))) => {
            for (key, body) in entries {
                if let Some(step) = cx.step(key, body, &env, &vars) {
                    if steps.iter().any(|s: &PipelineStep| s.name == step.name) {
                        cx.error(Diagnostic::error(
                            format!("step `{}` is defined twice", step.name),
                            Some(key.span),
                        ));
                        continue;
                    }
                    steps.push(step);
                }
            }
            if entries.is_empty() {
                cx.error(Diagnostic::error(
                    "the pipeline has no steps",
                    root.get("steps").map(|n| n.span),
                ));
            }
        }
        Some((node, None)) => cx.error(Diagnostic::error(
            format!(
                "`steps` must be a mapping of step names to steps, found {}",
                node.type_name()
            ),
            Some(node.span),
        )),
    }

    let names: Vec<String> = steps.iter().map(|s| s.name.clone()).collect();
    for step in &mut steps {
        let mut resolved = Vec::new();
        for input in &step.params.inputs {
            let span = locate(&step.node, &input.field).unwrap_or(step.name_span);
            let field = input.field.to_string();
            let (text, may_be_path, must_be_path) = match &input.target {
                Target::Step(n) => (n, false, false),
                Target::StepOrPath(n) => (n, true, false),
                Target::Path(p) => (p, true, true),
            };
            if !must_be_path && let Some(j) = names.iter().position(|n| n == text) {
                resolved.push(ResolvedInput {
                    field,
                    source: InputSource::Step(j),
                    files: input.files.clone(),
                });
                continue;
            }
            if !must_be_path && declared.iter().any(|n| n == text) {
                // The step exists but has errors of its own, already reported.
                continue;
            }
            if may_be_path {
                let full = dir.join(text);
                if full.exists() {
                    if !allowed.covers(&full) {
                        cx.error(outside(&step.name, text, &full, span));
                        continue;
                    }
                    resolved.push(ResolvedInput {
                        field,
                        source: InputSource::Path(full),
                        files: input.files.clone(),
                    });
                    continue;
                }
            }
            let hint = match did_you_mean(text, declared.iter().map(String::as_str)) {
                Some(near) if !must_be_path => format!("did you mean `{near}`?"),
                _ if must_be_path => format!(
                    "paths are relative to the manifest's folder `{}`",
                    dir.display()
                ),
                _ => format!("defined steps are {}", list(&declared)),
            };
            let message = match &input.target {
                Target::Step(_) => format!("step `{}` needs unknown step `{text}`", step.name),
                Target::StepOrPath(_) => format!(
                    "step `{}` reads `{text}`, which is neither a step nor an existing file",
                    step.name
                ),
                Target::Path(_) => {
                    format!("step `{}` reads `{text}`, which does not exist", step.name)
                }
            };
            cx.error(Diagnostic::error(message, Some(span)).hint(hint));
        }
        step.inputs = resolved;
    }

    let order = cx.order(&steps);
    if !cx
        .diags
        .iter()
        .any(|d| d.severity == crate::diag::Severity::Error)
    {
        let warnings = std::mem::take(&mut cx.diags);
        return Ok(Pipeline {
            name,
            path: path.to_path_buf(),
            dir,
            vars,
            device,
            dtype,
            steps,
            order,
            warnings,
        });
    }
    Err(cx.diags)
}

/// Names of pipelines and steps: letters, digits, `-`, `_`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The span of the value at `field` inside a step's parameter mapping.
pub fn locate(node: &Node, field: &FieldPath) -> Option<Span> {
    let mut current = node;
    for seg in &field.0 {
        current = match (seg, &current.value) {
            (Seg::Key(k), Value::Map(_)) => current.get(k)?,
            (Seg::Index(i), Value::Seq(items)) => items.get(*i)?,
            _ => return None,
        };
    }
    Some(current.span)
}

/// How many instructions one manifest template may run. Real templates take tens; a loop nest over a
/// long string would otherwise keep `lf validate` busy for minutes.
const TEMPLATE_FUEL: u64 = 100_000;

/// The most text one manifest value may render to. Each expression can make up to 100 MB (minijinja's
/// bound on a repeated string); this stops a loop from stacking them up.
const TEMPLATE_OUTPUT: usize = 1 << 20;

/// A sink that refuses to grow past [`TEMPLATE_OUTPUT`].
struct Bounded(Vec<u8>);

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > TEMPLATE_OUTPUT {
            return Err(std::io::Error::other("template output too large"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn template_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_keep_trailing_newline(true);
    env
}

struct Loader<'a> {
    registry: &'a Registry,
    diags: Vec<Diagnostic>,
}

impl Loader<'_> {
    fn error(&mut self, diag: Diagnostic) {
        self.diags.push(diag);
    }

    fn unknown_key(&mut self, key: &Node, text: &str, allowed: &[&str], place: &str) {
        let hint = match did_you_mean(text, allowed.iter().copied()) {
            Some(near) => format!("did you mean `{near}`?"),
            None => format!("{place} accepts {}", list(allowed)),
        };
        self.error(
            Diagnostic::error(format!("unknown key `{text}` in {place}"), Some(key.span))
                .label("unknown key")
                .hint(hint),
        );
    }

    fn typed<T: serde::de::DeserializeOwned>(&mut self, root: &Node, key: &str) -> Option<T> {
        let node = root.get(key)?;
        match yaml::from_node::<T>(node) {
            Ok(v) => Some(v),
            Err(e) => {
                self.de_error(e, node.span, &format!("`{key}`"), "the manifest");
                None
            }
        }
    }

    /// Reports a deserialization error; `subject` starts the message, `place` names where keys live.
    fn de_error(&mut self, e: DeError, fallback: Span, subject: &str, place: &str) {
        let span = e.span.unwrap_or(fallback);
        let diag = match e.unknown_field {
            Some((field, expected)) => {
                let hint = match did_you_mean(&field, expected.iter().copied()) {
                    Some(near) => format!("did you mean `{near}`?"),
                    None => format!("{place} accepts {}", list(&expected)),
                };
                Diagnostic::error(format!("unknown key `{field}` in {place}"), Some(span))
                    .label("unknown key")
                    .hint(hint)
            }
            None => Diagnostic::error(format!("{subject}: {}", e.message), Some(span)),
        };
        self.error(diag);
    }

    fn step(
        &mut self,
        key: &Node,
        body: &Node,
        env: &Environment<'static>,
        vars: &BTreeMap<String, Json>,
    ) -> Option<PipelineStep> {
        let name = key.as_scalar_text().unwrap_or_default().to_string();
        if !valid_name(&name) {
            self.error(
                Diagnostic::error(format!("invalid step name `{name}`"), Some(key.span))
                    .hint("step names are letters, digits, `-` and `_`"),
            );
            return None;
        }
        let Some(entries) = body.as_map() else {
            self.error(
                Diagnostic::error(
                    format!(
                        "step `{name}` must be a mapping with a `kind`, found {}",
                        body.type_name()
                    ),
                    Some(body.span),
                )
                .hint("for example:\n  my-step:\n    kind: command\n    run: echo hi"),
            );
            return None;
        };
        let kinds: Vec<&str> = self.registry.kinds().map(|k| k.kind()).collect();
        let Some(kind_node) = body.get("kind") else {
            self.error(
                Diagnostic::error(format!("step `{name}` has no `kind`"), Some(key.span))
                    .hint(format!("kinds are {}", list(&kinds))),
            );
            return None;
        };
        let kind_text = kind_node.as_scalar_text().unwrap_or_default();
        let Some(kind) = self.registry.get(kind_text) else {
            let hint = match did_you_mean(kind_text, kinds.iter().copied()) {
                Some(near) => format!("did you mean `{near}`?"),
                None => format!("kinds are {}", list(&kinds)),
            };
            self.error(
                Diagnostic::error(
                    format!("unknown step kind `{kind_text}`"),
                    Some(kind_node.span),
                )
                .label("unknown kind")
                .hint(hint),
            );
            return None;
        };

        // The parameters: the mapping without `kind`, with templates rendered.
        let mut params = Node {
            span: body.span,
            value: Value::Map(
                entries
                    .iter()
                    .filter(|(k, _)| k.as_scalar_text() != Some("kind"))
                    .cloned()
                    .collect(),
            ),
            raw: None,
            quoted: false,
        };
        let before = self.diags.len();
        render_templates(&mut params, env, vars, &mut self.diags);
        if self.diags.len() > before {
            return None;
        }

        // Report every unknown top-level key, then parse what remains to find type errors too.
        let allowed = param_names(kind);
        let place = format!("a `{}` step", kind.kind());
        if let Value::Map(entries) = &mut params.value {
            let mut unknown = Vec::new();
            entries.retain(|(k, _)| {
                let known = k
                    .as_scalar_text()
                    .is_some_and(|t| allowed.iter().any(|a| a == t));
                if !known {
                    unknown.push(k.clone());
                }
                known
            });
            for k in unknown {
                let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
                self.unknown_key(&k, k.as_scalar_text().unwrap_or_default(), &allowed, &place);
            }
        }
        let parsed = match kind.parse(&params) {
            Ok(parsed) => parsed,
            Err(mut e) => {
                if e.span == Some(params.span) {
                    e.span = Some(key.span);
                }
                self.de_error(e, key.span, &format!("step `{name}`"), &place);
                return None;
            }
        };
        let problems = kind.check(&parsed);
        self.problems(&name, &params, key.span, problems);
        Some(PipelineStep {
            name,
            kind,
            params: parsed,
            inputs: Vec::new(),
            name_span: key.span,
            node: params,
        })
    }

    fn problems(&mut self, step: &str, node: &Node, fallback: Span, problems: Vec<Problem>) {
        for p in problems {
            self.error(diagnose(step, node, fallback, p));
        }
    }

    /// Dependency order, or a diagnostic per cycle.
    fn order(&mut self, steps: &[PipelineStep]) -> Vec<usize> {
        let mut graph: DiGraph<usize, Span> = DiGraph::new();
        let nodes: Vec<NodeIndex> = (0..steps.len()).map(|i| graph.add_node(i)).collect();
        for (j, step) in steps.iter().enumerate() {
            for input in &step.inputs {
                if let InputSource::Step(i) = input.source {
                    let span = step
                        .params
                        .inputs
                        .iter()
                        .find(|d| d.field.to_string() == input.field)
                        .and_then(|d| locate(&step.node, &d.field))
                        .unwrap_or(step.name_span);
                    graph.add_edge(nodes[i], nodes[j], span);
                }
            }
        }
        match toposort(&graph, None) {
            Ok(order) => order.into_iter().map(|n| graph[n]).collect(),
            Err(_) => {
                for scc in tarjan_scc(&graph) {
                    let self_loop = scc.len() == 1 && graph.contains_edge(scc[0], scc[0]);
                    if scc.len() < 2 && !self_loop {
                        continue;
                    }
                    // Walk the cycle in reference order: start at the first step in manifest order.
                    let mut members: Vec<usize> = scc.iter().map(|n| graph[*n]).collect();
                    members.sort();
                    let mut cycle = vec![members[0]];
                    let mut spans = Vec::new();
                    loop {
                        let here = *cycle.last().unwrap();
                        let next = graph
                            .edges_directed(nodes[here], petgraph::Direction::Incoming)
                            .find(|e| members.contains(&graph[petgraph::visit::EdgeRef::source(e)]))
                            .map(|e| (graph[petgraph::visit::EdgeRef::source(&e)], *e.weight()));
                        let Some((next, span)) = next else { break };
                        spans.push((here, next, span));
                        if next == cycle[0] || cycle.contains(&next) {
                            cycle.push(next);
                            break;
                        }
                        cycle.push(next);
                    }
                    let path = cycle
                        .iter()
                        .map(|&i| format!("`{}`", steps[i].name))
                        .collect::<Vec<_>>()
                        .join(" needs ");
                    let mut diag = Diagnostic::error(
                        format!("dependency cycle: {path}"),
                        spans.first().map(|s| s.2),
                    )
                    .label(format!(
                        "`{}` needs `{}` here",
                        steps[spans[0].0].name, steps[spans[0].1].name
                    ))
                    .hint("a step can only read steps that do not, directly or not, read it");
                    for (from, to, span) in spans.iter().skip(1) {
                        diag = diag.related(
                            *span,
                            format!("`{}` needs `{}` here", steps[*from].name, steps[*to].name),
                        );
                    }
                    self.error(diag);
                }
                Vec::new()
            }
        }
    }
}

/// The top-level parameter names a kind accepts, from its schema.
pub fn param_names(kind: &dyn DynStep) -> Vec<String> {
    let mut generator = schemars::SchemaGenerator::default();
    let schema = kind.schema(&mut generator);
    let defs = generator.definitions().clone();
    let mut names = Vec::new();
    collect_properties(schema.as_value(), &defs, &mut names, 0);
    names.sort();
    names.dedup();
    names
}

fn collect_properties(
    schema: &Json,
    defs: &serde_json::Map<String, Json>,
    out: &mut Vec<String>,
    depth: usize,
) {
    if depth > 8 {
        return;
    }
    if let Some(r) = schema.get("$ref").and_then(Json::as_str)
        && let Some(def) = r.rsplit('/').next().and_then(|name| defs.get(name))
    {
        collect_properties(def, defs, out, depth + 1);
    }
    if let Some(props) = schema.get("properties").and_then(Json::as_object) {
        out.extend(props.keys().cloned());
    }
    for key in ["allOf", "oneOf", "anyOf"] {
        if let Some(items) = schema.get(key).and_then(Json::as_array) {
            for item in items {
                collect_properties(item, defs, out, depth + 1);
            }
        }
    }
}

/// Renders every string value holding a template (`{{ … }}`, `{% … %}`) against the manifest's vars.
///
/// A value that is a single `{{ … }}` expression is re-typed after rendering, so `lr: "{{ vars.lr }}"`
/// is a number when `vars.lr` is one.
fn render_templates(
    node: &mut Node,
    env: &Environment<'static>,
    vars: &BTreeMap<String, Json>,
    diags: &mut Vec<Diagnostic>,
) {
    let ctx = minijinja::context! { vars => vars };
    node.for_each_string_mut(&mut |n| {
        let Value::Str(text) = &n.value else { return };
        if !(text.contains("{{") || text.contains("{%") || text.contains("{#")) {
            return;
        }
        let template = match env.template_from_str(text) {
            Ok(t) => t,
            Err(e) => {
                diags.push(
                    Diagnostic::error(format!("invalid template: {}", e.detail().unwrap_or(&e.to_string())), Some(n.span))
                        .hint("write a literal `{{` as `{{ '{{' }}`, or wrap the text in `{% raw %}…{% endraw %}`"),
                );
                return;
            }
        };
        let mut sink = Bounded(Vec::new());
        let result = template
            .render_captured_to(&ctx, &mut sink)
            .map(|_| String::from_utf8_lossy(&sink.0).into_owned());
        match result {
            Ok(rendered) => {
                let trimmed = text.trim();
                let single = trimmed.starts_with("{{")
                    && trimmed.ends_with("}}")
                    && trimmed.matches("{{").count() == 1;
                n.value = if single {
                    match yaml::resolve_plain(&rendered) {
                        Value::Null => Value::Str(rendered.clone()),
                        v => v,
                    }
                } else {
                    Value::Str(rendered.clone())
                };
                n.raw = Some(rendered);
            }
            Err(e) if e.kind() == minijinja::ErrorKind::WriteFailure => {
                diags.push(
                    Diagnostic::error(
                        format!("template output too large: over {} MiB", TEMPLATE_OUTPUT >> 20),
                        Some(n.span),
                    )
                    .label("this template")
                    .hint("manifest templates are for substituting variables; compute large values outside lf"),
                );
            }
            Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel => {
                diags.push(
                    Diagnostic::error(
                        format!("template runs too long: it used up its budget of {TEMPLATE_FUEL} steps"),
                        Some(n.span),
                    )
                    .label("this template")
                    .hint("manifest templates are for substituting variables; compute large values outside lf"),
                );
            }
            Err(e) => {
                let missing: Vec<String> = template
                    .undeclared_variables(true)
                    .into_iter()
                    .filter(|name| !is_defined(name, vars))
                    .collect();
                let defined: Vec<String> = vars.keys().map(|k| format!("vars.{k}")).collect();
                let diag = if let Some(name) = missing.first() {
                    let hint = match did_you_mean(name, defined.iter().map(String::as_str)) {
                        Some(near) => format!("did you mean `{near}`?"),
                        None if defined.is_empty() => {
                            "define it under `vars:` at the top of the manifest, or pass `--var NAME=VALUE`".into()
                        }
                        None => format!("defined variables are {}", list(&defined)),
                    };
                    Diagnostic::error(format!("undefined variable `{name}`"), Some(n.span))
                        .label("used here")
                        .hint(hint)
                } else {
                    Diagnostic::error(format!("template error: {}", e.detail().unwrap_or(&e.to_string())), Some(n.span))
                };
                diags.push(diag);
            }
        }
    });
}

fn is_defined(name: &str, vars: &BTreeMap<String, Json>) -> bool {
    let mut parts = name.split('.');
    match parts.next() {
        Some("vars") => {}
        _ => return false,
    }
    let Some(first) = parts.next() else {
        return true;
    };
    let mut current = match vars.get(first) {
        Some(v) => v,
        None => return false,
    };
    for part in parts {
        current = match current.get(part) {
            Some(v) => v,
            None => return false,
        };
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::{Step, StepContext};

    /// A kind that is only loaded, never run.
    struct Command;

    impl Step for Command {
        type Params = lf_schemas::kinds::CommandParams;
        const KIND: &'static str = "command";
        const VERSION: u32 = 1;
        const ABOUT: &'static str = "test";

        fn run(&self, _: &Self::Params, _: &mut StepContext<'_>) -> anyhow::Result<()> {
            unreachable!("these tests only load manifests")
        }
    }

    /// Loads `text` as `<root>/project/p.yaml`; the messages of its errors.
    fn load_in(root: &Path, text: &str) -> Vec<String> {
        let registry = Registry::new(&[&Command]);
        match load(
            &root.join("project/p.yaml"),
            text,
            &registry,
            &BTreeMap::new(),
        ) {
            Ok(_) => Vec::new(),
            Err(diags) => diags.into_iter().map(|d| d.message).collect(),
        }
    }

    #[test]
    fn local_paths_outside_the_manifests_folder_need_allow_outside() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        std::fs::create_dir_all(root.join("project/data")).unwrap();
        std::fs::create_dir_all(root.join("elsewhere")).unwrap();
        std::fs::write(root.join("project/data/in.txt"), "in").unwrap();
        std::fs::write(root.join("elsewhere/secret.txt"), "secret").unwrap();
        let step = |input: &str| {
            format!(
                "name: p\nsteps:\n  a:\n    kind: command\n    run: cat x\n    inputs: {{x: {input}}}\n"
            )
        };

        assert!(load_in(root, &step("data/in.txt")).is_empty());
        let errors = load_in(root, &step("../elsewhere/secret.txt"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("outside the manifest's folder"),
            "{errors:?}"
        );
        // An absolute path is no way around it.
        let absolute = root.join("elsewhere/secret.txt");
        assert_eq!(
            load_in(root, &step(&absolute.display().to_string())).len(),
            1
        );

        // Nor is a link inside the folder: where it leads counts.
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&absolute, root.join("project/data/link.txt")).unwrap();
            let errors = load_in(root, &step("data/link.txt"));
            assert!(errors.iter().any(|e| e.contains("a link to")), "{errors:?}");
        }

        // `allow_outside` opens exactly the folders it names.
        let allowed = format!(
            "allow_outside: [../elsewhere]\n{}",
            step("../elsewhere/secret.txt")
        );
        assert!(load_in(root, &allowed).is_empty());
        std::fs::create_dir_all(root.join("third")).unwrap();
        std::fs::write(root.join("third/t.txt"), "t").unwrap();
        let other = format!("allow_outside: [../elsewhere]\n{}", step("../third/t.txt"));
        assert_eq!(load_in(root, &other).len(), 1);
    }

    fn render(src: &str) -> Vec<Diagnostic> {
        let mut node = yaml::parse(src).unwrap();
        let mut diags = Vec::new();
        render_templates(&mut node, &template_env(), &BTreeMap::new(), &mut diags);
        diags
    }

    #[test]
    fn a_template_that_runs_too_long_is_stopped_with_a_diagnostic_at_it() {
        // 10^10 iterations: without the budget this would run for hours.
        let src = "value: \"{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}\"\n";
        let diags = render(src);
        assert_eq!(diags.len(), 1);
        let text = format!("{diags:?}");
        assert!(text.contains("template runs too long"), "{text}");
        // Ordinary templates are far below the budget.
        assert!(render("name: \"{% for i in range(50) %}{{ i }}{% endfor %}\"\n").is_empty());
    }
}
