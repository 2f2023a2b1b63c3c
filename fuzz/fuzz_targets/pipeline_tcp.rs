#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| interceptor_fuzz::harness::pipeline_tcp(data));
