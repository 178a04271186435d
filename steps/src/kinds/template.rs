//! `template`: renders `{{ placeholders }}` in a dataset's rows with variables from the manifest.

use lf_engine::{Problem, Step, StepContext};
use lf_schemas::FieldPath;
use lf_schemas::kinds::TemplateParams;

use crate::data::builtin;
use crate::data::files::{Several, find};
use crate::data::render::{Renderer, check_source};

/// The `template` step kind.
pub struct Template;

impl Step for Template {
    type Params = TemplateParams;
    const KIND: &'static str = "template";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "render {{ placeholders }} in dataset rows with variables from the manifest";

    fn check(&self, params: &TemplateParams) -> Vec<Problem> {
        check_source(FieldPath::key("source"), &params.source)
            .into_iter()
            .collect()
    }

    fn run(&self, params: &TemplateParams, cx: &mut StepContext<'_>) -> anyhow::Result<()> {
        let input = if builtin::is_builtin(&params.source) {
            None
        } else {
            Some(cx.input("source")?)
        };
        let files = find(
            &params.source,
            input,
            params.file.as_deref(),
            Several::Error,
        )?;
        let renderer = Renderer::new(&params.vars);
        let mut rows = 0;
        let mut rendered = 0;
        for file in &files {
            let (name, text, n, r) = renderer.render_file(file)?;
            let dest = cx.out_dir().join(&name);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&dest, text)?;
            rows += n;
            rendered += r;
        }
        cx.metric("rows", rows);
        cx.metric("rendered_strings", rendered);
        Ok(())
    }
}
