//! Fuzz target: the config parser (TOML syntax, `${...}` interpolation, validation) on any
//! UTF-8 text must return a config or an error, never panic or hang. Error texts are rendered
//! too, since `config check` prints them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A fixed environment: `${FUZZ}` resolves, everything else is unset. `${file:...}` is
    // resolved against no folder, as for a config given on stdin.
    let env = |name: &str| (name == "FUZZ").then(|| "fuzz-value".to_string());
    match lockstep_config::parse(text, "fuzz.toml", None, &env) {
        Ok(config) => {
            // A valid config also serializes (the coordinator hands it to workers as JSON).
            let _ = serde_json::to_string(&config);
        }
        Err(e) => {
            let _ = e.to_string();
            let _ = e.lines();
        }
    }
});
