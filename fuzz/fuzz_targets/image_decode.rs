//! Image files through decoding, EXIF orientation, resize and crop: skipped or used, never a crash.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    retrain_fuzz::image(data);
});
