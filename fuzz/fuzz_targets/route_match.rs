//! Any pattern either parses or is refused, and matching any path against it finishes without
//! panicking, and agrees with itself on a second call.
#![no_main]

use floodgate_core::PathGlob;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &str)| {
    let (pattern, path) = input;
    if let Ok(glob) = PathGlob::parse(pattern) {
        let first = glob.matches(path);
        assert_eq!(first, glob.matches(path));
        assert_eq!(glob.as_str(), pattern);
    }
});
