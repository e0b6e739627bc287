//! Any string presented as a ticket or pass is refused or opened without panicking, and a token
//! altered in any way never opens.
#![no_main]

use floodgate_core::{DropId, Identity, Timestamp, TokenKeys, TokenKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, u64, u8)| {
    let (presented, serial, flip) = input;
    let keys = TokenKeys::new((1, b"fuzz secret".to_vec()), vec![(0, b"old".to_vec())]);
    let now = Timestamp::from_unix_millis(1_800_000_000_000);
    for kind in [TokenKind::Ticket, TokenKind::Pass] {
        let _ = keys.open(presented, kind, now);
    }
    let drop_id = DropId::parse("spring").expect("a valid id");
    let identity = Identity::of("c-1");
    let expires = now.add_millis(60_000);
    let token = keys.sign(TokenKind::Pass, &drop_id, &identity, serial, expires);
    assert!(keys.verify(&token, TokenKind::Pass, &drop_id, &identity, now).is_ok());
    let mut altered = token.into_bytes();
    let at = usize::from(flip) % altered.len();
    altered[at] ^= 1;
    if let Ok(altered) = String::from_utf8(altered) {
        assert!(keys.verify(&altered, TokenKind::Pass, &drop_id, &identity, now).is_err());
    }
});
