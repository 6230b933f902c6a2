#![no_main]
// See exitnet_fuzzing::receipt_and_checkpoint for what this input goes through.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    exitnet_fuzzing::receipt_and_checkpoint(data);
});
