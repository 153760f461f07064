//! The committed C header must be exactly what cbindgen generates from the sources.
//! (`KESTREL_HEADER_CHECK=1` keeps build.rs from rewriting include/ so a stale header fails here.)

#[test]
fn committed_header_is_fresh() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/kestrel.h"));
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/kestrel.h"))
            .expect("include/kestrel.h is committed");
    assert!(
        committed == generated,
        "include/kestrel.h is stale: run `cargo build` (without KESTREL_HEADER_CHECK) and commit the result"
    );
}

#[test]
fn header_version_matches_cargo() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/kestrel.h")).unwrap();
    let line = format!(
        "#define KESTREL_VERSION_STRING \"{}\"",
        env!("CARGO_PKG_VERSION")
    );
    assert!(committed.contains(&line), "missing {line}");
}
