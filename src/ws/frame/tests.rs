//! Tests of the frame codec: every length class, byte-by-byte splits,
//! fragmentation, every error, and memory release when idle.

use super::*;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const MAX: usize = 1 << 20;

/// A frame with an arbitrary first byte (FIN, RSV, opcode).
fn raw(b0: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut v = Vec::new();
    encode_frame(OpCode::Binary, payload, mask, &mut v);
    v[0] = b0;
    v
}

/// A masked client frame with an arbitrary first byte.
fn cf(b0: u8, payload: &[u8]) -> Vec<u8> {
    raw(b0, payload, Some(MASK))
}

fn feed_all(r: &mut FrameReader, input: &[u8]) -> Result<Vec<Message>, FrameError> {
    let mut got = Vec::new();
    r.feed(input, &mut |m| {
        got.push(m);
        true
    })?;
    Ok(got)
}

fn server() -> FrameReader {
    FrameReader::new(Role::Server, MAX)
}

fn err(r: &mut FrameReader, input: &[u8]) -> FrameError {
    let e = feed_all(r, input).unwrap_err();
    assert!(
        r.is_idle() && r.buffered_capacity() == 0,
        "not reset after {e}"
    );
    e
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// A stream of mixed client frames and the messages it decodes to.
fn mixed_stream() -> (Vec<u8>, Vec<Message>) {
    let mut s = Vec::new();
    encode_client_text(b"hello", &mut s);
    s.extend(cf(0x82, &payload(300)));
    s.extend(cf(0x01, "h\u{e9}".as_bytes()[..2].as_ref()));
    s.extend(cf(0x89, b"ping"));
    s.extend(cf(0x80, &"h\u{e9}".as_bytes()[2..]));
    encode_client_close(1000, "bye", &mut s);
    let want = vec![
        Message::Text(Bytes::from_static(b"hello")),
        Message::Binary(Bytes::from(payload(300))),
        Message::Ping(Bytes::from_static(b"ping")),
        Message::Text(Bytes::from("h\u{e9}")),
        Message::Close(Some((1000, "bye".into()))),
    ];
    (s, want)
}

#[test]
fn every_length_class_round_trips_both_ways() {
    for len in [0, 1, 125, 126, 127, 65535, 65536, 70000] {
        let p = payload(len);
        let mut wire = Vec::new();
        encode_client_text(&p, &mut wire);
        assert_eq!(wire.len(), header_len(len, true) + len);
        let got = feed_all(&mut server(), &wire).unwrap();
        assert_eq!(
            got,
            vec![Message::Text(Bytes::from(p.clone()))],
            "len {len}"
        );

        wire.clear();
        encode_binary(&p, &mut wire);
        assert_eq!(wire.len(), header_len(len, false) + len);
        let got = feed_all(&mut FrameReader::new(Role::Client, MAX), &wire).unwrap();
        assert_eq!(got, vec![Message::Binary(Bytes::from(p))], "len {len}");
    }
}

#[test]
fn one_byte_at_a_time_and_every_split_point() {
    let (wire, want) = mixed_stream();
    let mut r = server();
    let mut got = Vec::new();
    for b in &wire {
        got.extend(feed_all(&mut r, std::slice::from_ref(b)).unwrap());
    }
    assert_eq!(got, want);
    assert!(r.is_idle() && r.buffered_capacity() == 0);
    for split in 0..=wire.len() {
        let mut r = server();
        let mut got = feed_all(&mut r, &wire[..split]).unwrap();
        got.extend(feed_all(&mut r, &wire[split..]).unwrap());
        assert_eq!(got, want, "split at {split}");
        assert_eq!(r.buffered_capacity(), 0);
    }
}

#[test]
fn large_frames_in_odd_chunks() {
    let (mut wire, mut want) = mixed_stream();
    for len in [70_000, 65_535, 126] {
        encode_client_text(&payload(len), &mut wire);
        want.push(Message::Text(Bytes::from(payload(len))));
    }
    for chunk in [1, 2, 7, 13, 1000, 4096, 65_536] {
        let mut r = server();
        let mut got = Vec::new();
        for c in wire.chunks(chunk) {
            got.extend(feed_all(&mut r, c).unwrap());
            assert!(r.buffered_capacity() <= 2 * 70_014);
        }
        assert_eq!(got, want, "chunk {chunk}");
        assert!(r.is_idle() && r.buffered_capacity() == 0);
    }
}

#[test]
fn several_frames_in_one_feed() {
    let (wire, want) = mixed_stream();
    let mut r = server();
    assert_eq!(feed_all(&mut r, &wire).unwrap(), want);
    assert!(r.is_idle() && r.buffered_capacity() == 0);
}

#[test]
fn fragmented_text_with_interleaved_ping() {
    let mut wire = cf(0x01, b"Hel");
    wire.extend(cf(0x89, b"p"));
    wire.extend(cf(0x00, b"lo "));
    wire.extend(cf(0x8A, b""));
    wire.extend(cf(0x80, "w\u{f6}rld".as_bytes()));
    let got = feed_all(&mut server(), &wire).unwrap();
    assert_eq!(
        got,
        vec![
            Message::Ping(Bytes::from_static(b"p")),
            Message::Pong(Bytes::new()),
            Message::Text(Bytes::from("Hello w\u{f6}rld")),
        ]
    );
}

#[test]
fn utf8_is_judged_at_message_end() {
    let e_acute = "\u{e9}".as_bytes();
    let mut r = server();
    assert!(feed_all(&mut r, &cf(0x01, &e_acute[..1]))
        .unwrap()
        .is_empty());
    assert!(!r.is_idle());
    let got = feed_all(&mut r, &cf(0x80, &e_acute[1..])).unwrap();
    assert_eq!(got, vec![Message::Text(Bytes::from("\u{e9}"))]);
    assert!(r.is_idle() && r.buffered_capacity() == 0);

    assert!(feed_all(&mut r, &cf(0x01, &e_acute[..1]))
        .unwrap()
        .is_empty());
    assert_eq!(err(&mut r, &cf(0x80, b"A")), FrameError::InvalidUtf8);
}

#[test]
fn every_error() {
    use FrameError::*;
    let mut unmasked = Vec::new();
    encode_text(b"x", &mut unmasked);
    assert_eq!(err(&mut server(), &unmasked), UnmaskedFrame);
    let mut masked = Vec::new();
    encode_client_text(b"x", &mut masked);
    let mut client = FrameReader::new(Role::Client, MAX);
    assert_eq!(err(&mut client, &masked), MaskedFrame);
    assert_eq!(err(&mut server(), &cf(0xC1, b"x")), ReservedBits(0b100));
    assert_eq!(err(&mut server(), &cf(0x93, b"x")), ReservedBits(0b001));
    assert_eq!(err(&mut server(), &cf(0x83, b"x")), UnknownOpcode(3));
    assert_eq!(err(&mut server(), &cf(0x8B, b"x")), UnknownOpcode(0xB));
    assert_eq!(
        err(&mut server(), &cf(0x89, &[0; 126])),
        ControlFrameTooLong
    );
    assert_eq!(err(&mut server(), &cf(0x09, b"x")), FragmentedControlFrame);
    assert_eq!(err(&mut server(), &cf(0x80, b"x")), UnexpectedContinuation);
    assert_eq!(err(&mut server(), &cf(0x00, b"x")), UnexpectedContinuation);
    let mut two_starts = cf(0x01, b"a");
    two_starts.extend(cf(0x81, b"b"));
    assert_eq!(err(&mut server(), &two_starts), ExpectedContinuation);
    let mut small = FrameReader::new(Role::Server, 10);
    assert_eq!(
        err(&mut small, &cf(0x82, &[0; 11])),
        MessageTooLarge { limit: 10 }
    );
    let mut frags = cf(0x02, &[0; 6]);
    frags.extend(cf(0x80, &[0; 5]));
    assert_eq!(err(&mut small, &frags), MessageTooLarge { limit: 10 });
    assert_eq!(err(&mut server(), &cf(0x81, &[b'a', 0xFF])), InvalidUtf8);
    assert_eq!(
        err(&mut server(), &cf(0x88, &[0x03, 0xE8, 0xC3])),
        InvalidUtf8
    );
    assert_eq!(err(&mut server(), &cf(0x88, &[0x03])), InvalidClosePayload);
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        let e = err(&mut server(), &cf(0x88, &code.to_be_bytes()));
        assert_eq!(e, InvalidCloseCode(code));
    }
    for code in [1000u16, 1003, 1007, 1011, 1014, 3000, 4999] {
        let got = feed_all(&mut server(), &cf(0x88, &code.to_be_bytes())).unwrap();
        assert_eq!(got, vec![Message::Close(Some((code, String::new())))]);
    }
    assert_eq!(
        feed_all(&mut server(), &cf(0x88, b"")).unwrap(),
        vec![Message::Close(None)]
    );

    assert_eq!(InvalidUtf8.close_code(), 1007);
    assert_eq!(MessageTooLarge { limit: 1 }.close_code(), 1009);
    for e in [
        UnmaskedFrame,
        MaskedFrame,
        ReservedBits(1),
        UnknownOpcode(3),
    ] {
        assert_eq!(e.close_code(), 1002);
    }
    assert_eq!(InvalidCloseCode(1005).close_code(), 1002);
}

#[test]
fn oversized_header_is_rejected_without_allocating() {
    let mut wire = Vec::new();
    header(OpCode::Binary, 1 << 30, Some(MASK), &mut wire);
    assert_eq!(
        err(&mut server(), &wire),
        FrameError::MessageTooLarge { limit: MAX }
    );
    // Byte by byte: only the header bytes are ever buffered.
    let mut r = server();
    for b in &wire[..9] {
        feed_all(&mut r, std::slice::from_ref(b)).unwrap();
        assert!(r.buffered_capacity() <= MAX_HEADER);
    }
    // Rejected on the last length byte, without waiting for the mask.
    let e = err(&mut r, &wire[9..10]);
    assert_eq!(e, FrameError::MessageTooLarge { limit: MAX });
    // An allowed but large frame: nothing reserved for the missing payload.
    let mut r = server();
    let mut wire = Vec::new();
    header(OpCode::Binary, MAX, Some(MASK), &mut wire);
    wire.extend_from_slice(&[0; 100]);
    assert!(feed_all(&mut r, &wire).unwrap().is_empty());
    assert!(r.buffered_capacity() < 2 * wire.len());
    for _ in 0..10 {
        feed_all(&mut r, &[0; 100]).unwrap();
    }
    assert!(r.buffered_capacity() < 2 * (wire.len() + 1000));
    // A 64-bit length with the top bit set (mask not sent yet).
    let mut huge = vec![0x82, 0xFF];
    huge.extend_from_slice(&u64::MAX.to_be_bytes());
    assert!(matches!(
        err(&mut server(), &huge),
        FrameError::MessageTooLarge { .. }
    ));
}

#[test]
fn reader_releases_memory_once_idle() {
    let r = FrameReader::new(Role::Server, MAX);
    assert!(r.is_idle() && r.buffered_capacity() == 0);
    let mut wire = Vec::new();
    encode_client_text(&payload(1000), &mut wire);
    let mut r = server();
    assert!(feed_all(&mut r, &wire[..600]).unwrap().is_empty());
    assert!(!r.is_idle());
    assert_eq!(r.buffered_capacity(), 600, "only what arrived");
    assert!(feed_all(&mut r, &wire[600..700]).unwrap().is_empty());
    assert_eq!(
        r.buffered_capacity(),
        wire.len(),
        "doubled, capped at frame"
    );
    assert_eq!(feed_all(&mut r, &wire[700..]).unwrap().len(), 1);
    assert!(r.is_idle());
    assert_eq!(r.buffered_capacity(), 0);
    // Fragments are released too.
    assert!(feed_all(&mut r, &cf(0x02, &[1; 100])).unwrap().is_empty());
    assert!(r.buffered_capacity() >= 100);
    assert_eq!(feed_all(&mut r, &cf(0x80, &[2; 100])).unwrap().len(), 1);
    assert!(r.is_idle() && r.buffered_capacity() == 0);
}

#[test]
fn stopping_early_keeps_the_rest() {
    fn first(r: &mut FrameReader, input: &[u8]) -> Vec<Message> {
        let mut got = Vec::new();
        r.feed(input, &mut |m| {
            got.push(m);
            false
        })
        .unwrap();
        got
    }
    let (wire, want) = mixed_stream();
    for split in [0, 3, wire.len() / 2, wire.len()] {
        let mut r = server();
        let mut got = first(&mut r, &wire[..split]);
        got.extend(first(&mut r, &wire[split..]));
        for _ in 0..want.len() {
            if r.is_idle() {
                break;
            }
            let next = first(&mut r, &[]);
            assert_eq!(next.len(), 1, "one message per call");
            got.extend(next);
        }
        assert_eq!(got, want, "split {split}");
        assert!(r.is_idle() && r.buffered_capacity() == 0);
    }
}

#[test]
fn mask_matches_naive_xor() {
    for len in 0..40 {
        let p = payload(len);
        let mut fast = p.clone();
        apply_mask(&mut fast, MASK);
        let naive: Vec<u8> = p.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]).collect();
        assert_eq!(fast, naive, "len {len}");
    }
}

#[test]
fn control_frames_round_trip() {
    let mut client = FrameReader::new(Role::Client, MAX);
    let mut wire = Vec::new();
    encode_ping(b"abc", &mut wire);
    encode_pong(&[7; 200], &mut wire);
    encode_close(1001, &"\u{e9}".repeat(100), &mut wire);
    let got = feed_all(&mut client, &wire).unwrap();
    assert_eq!(got[0], Message::Ping(Bytes::from_static(b"abc")));
    assert_eq!(got[1], Message::Pong(Bytes::from(vec![7; 125])));
    // 123 bytes would split a 2-byte character: truncated to 122.
    assert_eq!(got[2], Message::Close(Some((1001, "\u{e9}".repeat(61)))));

    wire.clear();
    encode_client_pong(b"xyz", &mut wire);
    encode_client_close(1000, "bye", &mut wire);
    let got = feed_all(&mut server(), &wire).unwrap();
    assert_eq!(got[0], Message::Pong(Bytes::from_static(b"xyz")));
    assert_eq!(got[1], Message::Close(Some((1000, "bye".into()))));
}

#[test]
fn header_len_matches_header() {
    for len in [0, 125, 126, 65535, 65536] {
        for mask in [None, Some(MASK)] {
            let mut v = Vec::new();
            header(OpCode::Text, len, mask, &mut v);
            assert_eq!(v.len(), header_len(len, mask.is_some()));
            assert_eq!(v[0], 0x81);
        }
    }
}
