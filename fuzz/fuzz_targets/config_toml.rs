//! The configuration: any text as the TOML file plus any values of a few `AUGUR_*`
//! environment variables, through `Config::load_from` (defaults, file, environment,
//! validation) and, when it loads, the redacted rendering `augur config check` prints.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;

const VARS: &[&str] = &[
    "AUGUR_STORE",
    "AUGUR_STORE_FALLBACK",
    "AUGUR_LISTEN",
    "AUGUR_PUBLIC_URL",
    "AUGUR_CALLBACK_URL",
    "AUGUR_ADMIN_TOKEN",
    "AUGUR_MAX_BODY_BYTES",
    "AUGUR_FILES_DIR",
    "AUGUR_FILE_EXPIRY",
    "AUGUR_LEASE",
    "AUGUR_RETENTION",
    "AUGUR_WORKERS",
    "AUGUR_WEBHOOK_SECRET",
    "AUGUR_WEBHOOK_BACKOFF_BASE",
    "AUGUR_PAYMENTS_WEBHOOK_SECRET",
    "AUGUR_SIGNUP_GRANT",
];

fuzz_target!(|input: (String, Vec<(u8, String)>)| {
    let (text, vars) = input;
    let path = std::env::temp_dir().join(format!("augur-fuzz-config-{}.toml", std::process::id()));
    let mut file = std::fs::File::create(&path).expect("a temporary file");
    file.write_all(text.as_bytes()).expect("written");
    drop(file);
    let env = |key: &str| {
        vars.iter()
            .rev()
            .find(|(i, _)| VARS[usize::from(*i) % VARS.len()] == key)
            .map(|(_, v)| v.clone())
    };
    if let Ok(config) = augur_server::Config::load_from(Some(&path), env) {
        let _ = config.to_redacted_toml();
    }
});
