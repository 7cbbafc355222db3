//! `weftctl inject`: Kubernetes YAML back with Weft's sidecar in every pod template.

use crate::cli::InjectArgs;
use crate::common::fail;
use std::process::ExitCode;

pub(crate) fn run(args: InjectArgs) -> ExitCode {
    let InjectArgs { path, image, control_plane, classic } = args;
    let (name, text) = if path.as_os_str() == "-" {
        let mut text = String::new();
        ok!(std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map(|_| ()));
        ("<stdin>".to_string(), text)
    } else {
        (path.display().to_string(), ok!(std::fs::read_to_string(&path)))
    };
    let opts =
        weft_control_plane::inject::InjectOptions { image, control_plane, native: !classic, ..Default::default() };
    match weft_control_plane::inject::inject_text(&name, &text, &opts) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
