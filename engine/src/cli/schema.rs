//! `lf schema` and `lf kinds`: what the registered step kinds accept.

use super::App;
use super::exit::Exit;

/// `lf schema`: prints the JSON Schema of manifests.
pub(super) fn schema(app: &App) -> Exit {
    println!("{}", crate::schema::pipeline_schema_text(&app.registry));
    Exit::Ok
}

/// `lf kinds`: lists the step kinds.
pub(super) fn kinds(app: &App) -> Exit {
    for kind in app.registry.kinds() {
        println!("{:<10} {}", kind.kind(), kind.about());
    }
    Exit::Ok
}
