//! Generates `include/kestrel.h` with cbindgen, sets the shared library's SONAME, and writes the
//! pkg-config file next to the built library.
//!
//! The header is committed. `KESTREL_HEADER_CHECK=1` makes the build leave `include/` alone (the
//! freshness test then compares the committed header with the one generated into OUT_DIR).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

const SONAME_MAJOR: &str = "0";

fn main() {
    let root =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let version = env::var("CARGO_PKG_VERSION").expect("cargo sets CARGO_PKG_VERSION");

    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=KESTREL_HEADER_CHECK");

    let header = generate_header(&root, &version);
    fs::write(out.join("kestrel.h"), &header).expect("write OUT_DIR/kestrel.h");
    if env::var_os("KESTREL_HEADER_CHECK").is_none() {
        let committed = root.join("include/kestrel.h");
        if fs::read_to_string(&committed).ok().as_deref() != Some(header.as_str()) {
            fs::create_dir_all(root.join("include")).expect("create include/");
            fs::write(&committed, &header).expect("write include/kestrel.h");
        }
    }

    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libkestrel.so.{SONAME_MAJOR}");
    }
    write_pkg_config(&root, &out, &version);
}

fn generate_header(root: &Path, version: &str) -> String {
    let mut parts = version.split(['.', '-']);
    let mut next = || {
        parts
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let (major, minor, patch) = (next(), next(), next());
    let mut config =
        cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("read cbindgen.toml");
    config.after_includes = Some(format!(
        "\n#define KESTREL_VERSION_MAJOR {major}\n#define KESTREL_VERSION_MINOR {minor}\n\
         #define KESTREL_VERSION_PATCH {patch}\n#define KESTREL_VERSION_STRING \"{version}\"\n"
    ));
    let mut buf = Vec::new();
    cbindgen::Builder::new()
        .with_crate(root)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate the header")
        .write(&mut buf);
    String::from_utf8(buf).expect("the header is UTF-8")
}

/// Writes `kestrel.pc` into the profile directory (`target/<profile>/`), beside the library.
fn write_pkg_config(root: &Path, out: &Path, version: &str) {
    // OUT_DIR is target/<profile>/build/kestrel-<hash>/out.
    let Some(profile_dir) = out.ancestors().nth(3) else {
        return;
    };
    let pc = format!(
        "prefix={root}\nlibdir={lib}\nincludedir={root}/include\n\n\
         Name: kestrel\nDescription: Embeddable HTTP/1.1 and HTTP/2 server library\nVersion: {version}\n\
         Libs: -L${{libdir}} -lkestrel\nLibs.private: -lpthread -ldl -lm\nCflags: -I${{includedir}}\n",
        root = root.display(),
        lib = profile_dir.display(),
    );
    let _ = fs::write(profile_dir.join("kestrel.pc"), pc);
}
