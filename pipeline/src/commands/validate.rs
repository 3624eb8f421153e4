//! `ideaflow validate`: check a config file without running anything.

use anyhow::Result;

use crate::cli::ValidateArgs;
use crate::config::Config;

pub fn run(args: ValidateArgs) -> Result<()> {
    let config = Config::load(&args.config)?;
    let mut warnings = Vec::new();
    if !config.model.dir.join("model.safetensors").exists() {
        warnings.push(format!(
            "model.dir {} has no model.safetensors: run scripts/setup.sh or set IDEAFLOW_MODEL_DIR",
            config.model.dir.display()
        ));
    }
    for input in config.input_specs()? {
        if let ideaflow_sources::input::InputSpec::File(path) = &input {
            if !ideaflow_sources::replay::is_stdin(path) && !path.exists() {
                warnings.push(format!(
                    "pipeline.inputs: {} does not exist",
                    path.display()
                ));
            }
        }
    }
    if config.classifier.anchors.is_empty() {
        warnings.push("classifier.anchors is empty: classification will be skipped".into());
    }
    for w in &warnings {
        println!("warning: {w}");
    }
    println!(
        "{}: valid ({} warning(s))",
        args.config.display(),
        warnings.len()
    );
    Ok(())
}
