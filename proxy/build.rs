//! Code layout for the shipped sidecar (`release` and `sidecar` profiles, GNU
//! linkers on Linux): a linker script puts the functions listed in
//! `layout/hot-functions.txt` first in the binary, in one output section before
//! `.text`. The kernel maps code in 64 KiB around each page touched; spread
//! over 8 MB of text, the few hundred functions a sidecar runs kept 5 MB of it
//! resident. `WEFT_CODE_LAYOUT=0` builds without it. Debug builds never use it.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=layout/hot-functions.txt");
    println!("cargo:rerun-if-env-changed=WEFT_CODE_LAYOUT");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let wanted = env("PROFILE") == "release"
        && env("CARGO_CFG_TARGET_OS") == "linux"
        && env("CARGO_CFG_TARGET_ENV") == "gnu"
        && env("WEFT_CODE_LAYOUT") != "0";
    if !wanted {
        return;
    }
    let list = match std::fs::read_to_string("layout/hot-functions.txt") {
        Ok(list) => list,
        Err(e) => {
            println!("cargo:warning=no code layout: layout/hot-functions.txt: {e}");
            return;
        }
    };
    let mut script = String::from("SECTIONS\n{\n  .text.weft_hot :\n  {\n");
    for symbol in list.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        // Only mangled names: nothing that could close the script's braces.
        if symbol.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b == b'.') {
            let _ = writeln!(script, "    *(.text.{symbol} .text.unlikely.{symbol})");
        }
    }
    script.push_str("  }\n}\nINSERT BEFORE .text;\n");
    let out = PathBuf::from(env("OUT_DIR")).join("hot-functions.ld");
    if let Err(e) = std::fs::write(&out, script) {
        println!("cargo:warning=no code layout: writing {}: {e}", out.display());
        return;
    }
    println!("cargo:rustc-link-arg-bin=weft-proxy=-Wl,-T,{}", out.display());
}
