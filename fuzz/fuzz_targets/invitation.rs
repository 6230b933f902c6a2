#![no_main]
// See exitnet_fuzzing::invitation for what this input goes through.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    exitnet_fuzzing::invitation(data);
});
