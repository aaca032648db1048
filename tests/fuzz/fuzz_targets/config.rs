//! The configuration file reader (src/config, included from the daemon's sources): arbitrary
//! bytes as the file never panic it; an error names a line of the file and quotes only a
//! bounded part of it; a file that parses resolves into settings, and a reload to the same
//! settings does nothing.
#![no_main]
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../../../src/config/mod.rs"]
#[allow(dead_code, unused_imports)]
mod config;
#[path = "../../../src/options.rs"]
#[allow(dead_code)]
mod options;

/// Longest error message expected: a few quoted excerpts and names, never a whole long line.
const MAX_ERROR: usize = 2048;

/// A file of this process's own (the reader takes a path: it refuses FIFOs and devices).
fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("rtpmidid-fuzz-{}.conf", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    std::fs::write(path(), data).unwrap();
    match config::read(path()) {
        Err(e) => {
            let lines = data.split(|&b| b == b'\n').count();
            assert!(e.line <= lines, "line {} of {lines}", e.line);
            let shown = e.to_string();
            assert!(shown.len() <= MAX_ERROR, "{} bytes of error", shown.len());
        }
        Ok(file) => {
            let settings = config::resolve(&command_line(), &file, || "host".into());
            assert!(config::diff(&settings, &settings).is_empty());
        }
    }
});

/// A command line that says nothing.
fn command_line() -> config::CommandLine {
    config::CommandLine {
        no_alsa: true,
        no_mdns: true,
        ..Default::default()
    }
}
