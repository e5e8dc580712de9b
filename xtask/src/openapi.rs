//! The OpenAPI document's CI steps: a small virtualenv with the pinned
//! `openapi-spec-validator` (in the target directory, made once), and the
//! committed `crates/server/openapi/herald.openapi.json` validated as
//! OpenAPI 3.1 by it. (`cargo xtask bindings --check` already keeps the file
//! equal to what the handlers generate; this checks that what they generate
//! is a valid document.)

use std::path::PathBuf;

use anyhow::Result;

use crate::bindings::{OPENAPI_DIR, OPENAPI_FILE};
use crate::workspace::{self, Workspace};

/// The pinned validator.
const VALIDATOR: &str = "openapi-spec-validator==0.9.0";

fn venv(workspace: &Workspace) -> Result<PathBuf> {
    Ok(workspace.target_dir()?.join("openapi-venv"))
}

/// Creates the venv with the validator unless it is there.
pub fn setup(workspace: &Workspace) -> Result<()> {
    let venv = venv(workspace)?;
    let python = venv.join("bin/python");
    let stamp = venv.join(".herald-validator");
    if std::fs::read_to_string(&stamp).is_ok_and(|installed| installed == VALIDATOR) {
        println!("{} has {VALIDATOR}", venv.display());
        return Ok(());
    }
    let interpreter = std::env::var("HERALD_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    workspace::run(
        workspace
            .command(&interpreter)
            .arg("-m")
            .arg("venv")
            .arg(&venv),
    )?;
    workspace::run(workspace.command(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        VALIDATOR,
    ]))?;
    std::fs::write(&stamp, VALIDATOR)?;
    Ok(())
}

/// Validates the committed document as OpenAPI 3.1.
pub fn validate(workspace: &Workspace) -> Result<()> {
    let python = venv(workspace)?.join("bin/python");
    let document = workspace.path(OPENAPI_DIR).join(OPENAPI_FILE);
    workspace::run(
        workspace
            .command(&python)
            .arg("-c")
            .arg(
                "import json, sys\n\
         from openapi_spec_validator import OpenAPIV31SpecValidator, validate\n\
         validate(json.load(open(sys.argv[1])), cls=OpenAPIV31SpecValidator)\n\
         print(sys.argv[1], 'is a valid OpenAPI 3.1 document')",
            )
            .arg(&document),
    )
}
