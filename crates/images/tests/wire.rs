//! Unit tests of the protobuf runtime: encodings, proto2 semantics, unknown
//! fields, and hostile input.

use crust_images::wire::*;

crust_images::message! {
    Inner = "inner" {
        1 a: required Uint32,
        2 s: optional Str,
    }

    Inline = "inline" {
        1 x: optional Msg<Inner>,
        2 y: repeated Msg<Inner>,
    }

    Boxed = "boxed" {
        1 x: optional BoxMsg<Inner>,
        2 y: repeated BoxMsg<Inner>,
    }

    Everything = "everything" {
        1 u32v: required Uint32,
        2 i32v: optional Int32,
        3 s32v: optional Sint32,
        4 s64v: optional Sint64,
        5 u64v: optional Uint64,
        6 i64v: optional Int64,
        7 b: optional Bool,
        8 f32v: optional Fixed32,
        9 f64v: optional Fixed64,
        10 sf32: optional Sfixed32,
        11 sf64: optional Sfixed64,
        12 d: optional Double,
        13 f: optional Float,
        14 bytes: optional Bytes,
        15 name: optional Str,
        16 inner: optional Msg<Inner>,
        17 list: repeated Uint32,
        18 inners: repeated Msg<Inner>,
        19 packed_list: packed Sint32,
        20 e: optional Enum,
        21 r#type: optional Uint32,
    }

    /// Same field 1 as Everything, nothing else: everything else is unknown.
    Small = "small" {
        1 u32v: required Uint32,
    }

    Outer = "outer" {
        1 inner: optional Msg<Inner>,
    }
}

fn sample() -> Everything {
    Everything {
        u32v: 7,
        i32v: Some(-1),
        s32v: Some(-2),
        s64v: Some(i64::MIN),
        u64v: Some(u64::MAX),
        i64v: Some(-5),
        b: Some(false),
        f32v: Some(0xdead_beef),
        f64v: Some(1 << 60),
        sf32: Some(-3),
        sf64: Some(-4),
        d: Some(1.5),
        f: Some(-0.25),
        bytes: Some(vec![0, 1, 2, 255]),
        name: Some("héllo".into()),
        inner: Some(Inner {
            a: 9,
            s: None,
            unknown: vec![],
        }),
        list: vec![1, 300, 0],
        inners: vec![
            Inner::default(),
            Inner {
                a: 1,
                ..Default::default()
            },
        ],
        packed_list: vec![-1, 0, 1, i32::MAX],
        e: Some(2),
        r#type: Some(0),
        unknown: vec![],
    }
}

#[test]
fn varint_edges() {
    for (v, len) in [
        (0u64, 1),
        (1, 1),
        (127, 1),
        (128, 2),
        (300, 2),
        (16383, 2),
        (16384, 3),
        (u32::MAX as u64, 5),
        (u64::MAX, 10),
    ] {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        assert_eq!(out.len(), len, "{v}");
        assert_eq!(varint_len(v), len, "{v}");
        let mut r = Reader::new(&out, "t");
        assert_eq!(r.varint().unwrap(), v);
        assert!(r.is_empty());
    }
    let mut out = Vec::new();
    put_varint(&mut out, 300);
    assert_eq!(out, [0xac, 0x02]);
}

#[test]
fn zigzag_edges() {
    assert_eq!(zigzag32(0), 0);
    assert_eq!(zigzag32(-1), 1);
    assert_eq!(zigzag32(1), 2);
    assert_eq!(zigzag32(-2), 3);
    assert_eq!(zigzag32(i32::MAX), u32::MAX - 1);
    assert_eq!(zigzag32(i32::MIN), u32::MAX);
    assert_eq!(zigzag64(i64::MIN), u64::MAX);
    for v in [0, 1, -1, i32::MIN, i32::MAX, 12345, -12345] {
        assert_eq!(unzigzag32(zigzag32(v)), v);
        assert_eq!(unzigzag64(zigzag64(v as i64)), v as i64);
    }
    assert_eq!(unzigzag64(zigzag64(i64::MAX)), i64::MAX);
}

#[test]
fn negative_int32_is_ten_bytes_and_sint32_is_short() {
    let m = Everything {
        i32v: Some(-1),
        ..Default::default()
    };
    let enc = m.encode_to_vec();
    // field 1 (required 0) = 2 bytes, field 2 tag 1 byte + 10 bytes.
    assert_eq!(enc, [&[0x08, 0x00, 0x10][..], &[0xff; 9], &[0x01]].concat());
    assert_eq!(Everything::decode(&enc).unwrap(), m);

    let m = Everything {
        s32v: Some(-1),
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), [0x08, 0x00, 0x18, 0x01]);
}

#[test]
fn optional_presence_is_kept() {
    let none = Everything::default();
    assert_eq!(none.encode_to_vec(), [0x08, 0x00]);
    let zero = Everything {
        r#type: Some(0),
        ..Default::default()
    };
    let enc = zero.encode_to_vec();
    assert_eq!(enc, [0x08, 0x00, 0xa8, 0x01, 0x00]);
    assert_eq!(Everything::decode(&enc).unwrap().r#type, Some(0));
}

#[test]
fn full_roundtrip_and_len() {
    let m = sample();
    let enc = m.encode_to_vec();
    assert_eq!(enc.len(), m.encoded_len());
    let back = Everything::decode(&enc).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.encode_to_vec(), enc);
}

#[test]
fn fields_are_encoded_in_number_order() {
    let enc = sample().encode_to_vec();
    let mut r = Reader::new(&enc, "t");
    let mut last = 0;
    while !r.is_empty() {
        let (n, wt) = r.tag().unwrap();
        assert!(n >= last, "{n} after {last}");
        last = n;
        r.skip(wt).unwrap();
    }
}

#[test]
fn missing_required_names_message_and_field() {
    let err = Everything::decode(&[]).unwrap_err();
    assert_eq!(
        err,
        DecodeError::MissingRequired {
            message: "everything",
            field: "u32v"
        }
    );
    assert!(err.to_string().contains("everything.u32v"));
    // Nested required field missing.
    let enc = [0x08, 0x00, 0x82, 0x01, 0x00]; // inner = empty message
    let err = Everything::decode(&enc).unwrap_err();
    assert_eq!(
        err,
        DecodeError::MissingRequired {
            message: "inner",
            field: "a"
        }
    );
}

#[test]
fn unknown_fields_survive() {
    let full = sample();
    let enc = full.encode_to_vec();
    let small = Small::decode(&enc).unwrap();
    assert_eq!(small.u32v, 7);
    assert_eq!(small.unknown.len(), 23);
    assert!(small.unknown.iter().any(|u| u.number == 21));
    let re = small.encode_to_vec();
    assert_eq!(re, enc, "unknown fields re-emitted verbatim");
    assert_eq!(small.encoded_len(), enc.len());
    assert_eq!(Everything::decode(&re).unwrap(), full);
    // JSON shows them too.
    assert!(small.to_json_string().contains("\"_unknown\""));
}

#[test]
fn packed_and_unpacked_both_decode() {
    // list (17) packed: tag 17<<3|2 = 0x8a 0x01, len 3, values 1,2,3
    let packed = [0x08, 0x05, 0x8a, 0x01, 0x03, 0x01, 0x02, 0x03];
    let m = Everything::decode(&packed).unwrap();
    assert_eq!(m.list, vec![1, 2, 3]);
    // Encoded unpacked, as CRIU's schema says.
    assert_eq!(
        m.encode_to_vec(),
        [0x08, 0x05, 0x88, 0x01, 0x01, 0x88, 0x01, 0x02, 0x88, 0x01, 0x03]
    );
    // packed_list (19) unpacked on the wire is accepted; re-encoded packed.
    let unpacked = [0x08, 0x05, 0x98, 0x01, 0x01, 0x98, 0x01, 0x02];
    let m = Everything::decode(&unpacked).unwrap();
    assert_eq!(m.packed_list, vec![-1, 1]);
    assert_eq!(
        m.encode_to_vec(),
        [0x08, 0x05, 0x9a, 0x01, 0x02, 0x01, 0x02]
    );
}

#[test]
fn hostile_inputs_give_errors() {
    // Truncated varint.
    assert!(matches!(
        Everything::decode(&[0x08, 0x80]),
        Err(DecodeError::Truncated { .. })
    ));
    // Varint too long.
    let mut v = vec![0x08];
    v.extend([0xff; 11]);
    assert!(matches!(
        Everything::decode(&v),
        Err(DecodeError::VarintTooLong { .. })
    ));
    // Length past the end.
    assert!(matches!(
        Everything::decode(&[0x08, 0x00, 0x72, 0x05, b'a']),
        Err(DecodeError::LengthOutOfBounds { .. })
    ));
    // Huge length.
    assert!(matches!(
        Everything::decode(&[0x72, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        Err(DecodeError::LengthOutOfBounds { .. })
    ));
    // Wrong wire type for a known field (u32v as LEN).
    assert!(matches!(
        Everything::decode(&[0x0a, 0x00]),
        Err(DecodeError::WrongWireType { field: "u32v", .. })
    ));
    // Group wire types, unknown wire types.
    for wt in [3u8, 4, 6, 7] {
        let buf = [0x08, 0x00, (2 << 3) | wt, 0x00];
        assert!(matches!(
            Small::decode(&buf),
            Err(DecodeError::InvalidWireType { .. })
        ));
    }
    // Field number 0.
    assert!(matches!(
        Everything::decode(&[0x00, 0x00]),
        Err(DecodeError::FieldNumberZero { .. })
    ));
    // Invalid UTF-8 in a string.
    assert_eq!(
        Everything::decode(&[0x08, 0x00, 0x7a, 0x01, 0xff]).unwrap_err(),
        DecodeError::InvalidUtf8 {
            message: "everything",
            field: "name"
        }
    );
    // Truncated fixed64.
    assert!(matches!(
        Everything::decode(&[0x08, 0x00, 0x49, 0x01, 0x02]),
        Err(DecodeError::Truncated { .. })
    ));
}

#[test]
fn nesting_too_deep_is_an_error() {
    let m = Outer {
        inner: Some(Inner {
            a: 1,
            ..Default::default()
        }),
        ..Default::default()
    };
    let enc = m.encode_to_vec();
    assert_eq!(Outer::decode(&enc).unwrap(), m);
    assert!(matches!(
        Outer::decode_depth(&enc, MAX_DEPTH),
        Err(DecodeError::TooDeep { .. })
    ));
}

#[test]
fn every_prefix_and_mutation_is_safe() {
    let enc = sample().encode_to_vec();
    for n in 0..enc.len() {
        let _ = Everything::decode(&enc[..n]);
    }
    // Deterministic pseudo-random byte mutations.
    let mut seed: u64 = 0x1234_5678;
    for _ in 0..20_000 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut buf = enc.clone();
        let i = (seed >> 33) as usize % buf.len();
        buf[i] = (seed >> 17) as u8;
        if seed & 1 == 0 {
            buf.truncate((seed >> 40) as usize % (buf.len() + 1));
        }
        if let Ok(m) = Everything::decode(&buf) {
            // Whatever decodes must re-encode and decode to the same value
            // (floats may be NaN: compare bytes instead).
            let again = m.encode_to_vec();
            assert_eq!(Everything::decode(&again).unwrap().encode_to_vec(), again);
        }
    }
}

#[test]
fn json_output() {
    let m = Everything {
        u32v: 1,
        name: Some("a\"b".into()),
        bytes: Some(b"hi!?".to_vec()),
        list: vec![1, 2],
        r#type: Some(3),
        ..Default::default()
    };
    assert_eq!(
        m.to_json_string(),
        r#"{"u32v": 1, "bytes": "aGkhPw==\n", "name": "a\"b", "list": [1, 2], "type": 3}"#
    );
}

#[test]
fn boxed_message_encodes_as_inline_one() {
    let inner = |a| Inner {
        a,
        s: Some(format!("n{a}")),
        ..Default::default()
    };
    let inline = Inline {
        x: Some(inner(1)),
        y: vec![inner(2), inner(3)],
        ..Default::default()
    };
    let boxed = Boxed {
        x: Some(Box::new(inner(1))),
        y: vec![Box::new(inner(2)), Box::new(inner(3))],
        ..Default::default()
    };
    let bytes = inline.encode_to_vec();
    assert_eq!(boxed.encode_to_vec(), bytes);
    assert_eq!(boxed.encoded_len(), inline.encoded_len());
    assert_eq!(Boxed::decode(&bytes).unwrap(), boxed);
    assert_eq!(boxed.to_json_string(), inline.to_json_string());
    // Absent, it costs a pointer, whatever the message's size.
    assert_eq!(Boxed::decode(&[]).unwrap(), Boxed::default());
    assert!(std::mem::size_of::<Option<Box<Inner>>>() == std::mem::size_of::<usize>());
}
