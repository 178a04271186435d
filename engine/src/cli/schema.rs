//! `lf schema` and `lf kinds`: what the registered step kinds accept.

use std::process::ExitCode;

use super::App;

/// `lf schema`: prints the JSON Schema of manifests.
pub(super) fn schema(app: &App) -> ExitCode {
    println!("{}", crate::schema::pipeline_schema_text(&app.registry));
    ExitCode::SUCCESS
}

/// `lf kinds`: lists the step kinds.
pub(super) fn kinds(app: &App) -> ExitCode {
    for kind in app.registry.kinds() {
        println!("{:<10} {}", kind.kind(), kind.about());
    }
    ExitCode::SUCCESS
}
