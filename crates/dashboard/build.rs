//! Embeds every file under `assets/` in the library: writes `$OUT_DIR/assets.rs`, a table of
//! `(path, include_bytes!(...))` pairs, so that adding a page is adding a file, and
//! `cargo build` alone produces the dashboard (no Node, no bundler).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let root =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("assets");
    // Cargo scans a directory named here for changes to any file in it.
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    files.sort();
    let mut out = String::from("&[\n");
    for (name, path) in files {
        writeln!(out, "    ({name:?}, include_bytes!({path:?})),").expect("writes to a string");
    }
    out.push(']');
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("assets.rs");
    std::fs::write(dest, out).expect("OUT_DIR is writable");
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("assets/ is readable")
        .map(|e| e.expect("assets/ is readable").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // Editor and OS droppings are not assets.
        if name.starts_with('.') || name.ends_with('~') {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, out);
        } else {
            let relative = path
                .strip_prefix(root)
                .expect("under the root")
                .to_str()
                .expect("asset paths are UTF-8")
                .replace('\\', "/");
            out.push((relative, path.display().to_string()));
        }
    }
}
