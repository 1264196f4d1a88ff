//! model.json texts: refused or rebuilt, never a crash.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    retrain_fuzz::model_config(data);
});
