//! PyTorch checkpoints (zip and legacy pickle streams): refused or read, never a crash.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    retrain_fuzz::weights_file(data, "pth");
});
