//! `outpost_control::template::parse`: a template directory's files, as a user uploads them.
//!
//! Input (UTF-8, invalid sequences replaced): `template.toml`, then for each further file a NUL,
//! its path, a newline and its contents. A bare `template.toml` is an input as it is, so the
//! templates under `templates/` seed the corpus (`cargo xtask fuzz` adds them).
//!
//! Whatever the files, `parse` answers `Ok` or an error naming a file (and a line inside it
//! when it names one); it never panics.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use outpost_control::template::{parse, MANIFEST_FILE};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let mut files = BTreeMap::new();
    files.insert(
        MANIFEST_FILE.to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    for part in parts {
        let (path, body) = part.split_once('\n').unwrap_or((part, ""));
        files.insert(path.to_string(), body.to_string());
    }
    match parse(&files) {
        Ok(m) => {
            assert!(
                ["local", "docker"].contains(&m.provisioner.as_str()),
                "accepted provisioner {:?}",
                m.provisioner
            );
        }
        Err(e) => {
            // Every error says something (toml has no message for a lone carriage return or a
            // control character in a comment: `parse` words those itself).
            assert!(!e.message.trim().is_empty(), "an error without a message: {e:?}");
            if let (Some(line), Some(src)) = (e.line, files.get(&e.file)) {
                let lines = src.split('\n').count();
                assert!(
                    (1..=lines).contains(&line),
                    "{e} names line {line} of a {lines}-line file"
                );
            }
            let _ = e.to_string();
        }
    }
});
