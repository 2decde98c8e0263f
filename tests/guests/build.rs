//! Links the guest binaries with `link.x` when they are built for a
//! bare-metal target. Host builds of the library (unit tests, the host
//! integration tests that reuse its device-tree code) need nothing.
//!
//! The link address is 0x4000_8000 unless the environment variable
//! `TEST_GUEST_BASE` gives another one (hexadecimal, `0x` prefix optional):
//! the integration tests also link the guests at 0x4001_0000, the address at
//! which QEMU loads a raw image and enters it with the Linux boot protocol.

use std::env;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

/// Where the guests are linked and entered by default.
const DEFAULT_BASE: u32 = 0x4000_8000;
/// The guests' start-up code and vectors need word alignment at least; a
/// page keeps the image's layout the same at any base.
const BASE_ALIGN: u32 = 0x1000;

fn main() -> ExitCode {
    println!("cargo:rerun-if-changed=link.x");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=TEST_GUEST_BASE");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("none") {
        return ExitCode::SUCCESS;
    }
    match link_script() {
        Ok(script) => {
            println!("cargo:rustc-link-arg-bins=-T{}", script.display());
            ExitCode::SUCCESS
        }
        Err(message) => {
            // A build script reports errors on stderr; cargo shows them.
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `link.x` with the chosen `GUEST_BASE` in front into OUT_DIR.
fn link_script() -> Result<PathBuf, String> {
    let base = match env::var("TEST_GUEST_BASE") {
        Err(_) => DEFAULT_BASE,
        Ok(text) => {
            let digits = text.trim().trim_start_matches("0x").trim_start_matches("0X").replace('_', "");
            let base = u32::from_str_radix(&digits, 16)
                .map_err(|err| format!("TEST_GUEST_BASE={text:?} is not a hexadecimal address: {err}"))?;
            if !base.is_multiple_of(BASE_ALIGN) {
                return Err(format!("TEST_GUEST_BASE={text:?} is not {BASE_ALIGN:#x}-aligned"));
            }
            base
        }
    };
    let dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR is not set")?);
    let out = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let template = dir.join("link.x");
    let body = fs::read_to_string(&template).map_err(|err| format!("{}: {err}", template.display()))?;
    let script = out.join("link.x");
    fs::write(&script, format!("GUEST_BASE = {base:#010x};\n{body}"))
        .map_err(|err| format!("{}: {err}", script.display()))?;
    Ok(script)
}
