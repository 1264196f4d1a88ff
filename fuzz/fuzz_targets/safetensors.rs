//! Safetensors files: lying headers are errors, never a crash or a huge allocation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    retrain_fuzz::weights_file(data, "safetensors");
});
