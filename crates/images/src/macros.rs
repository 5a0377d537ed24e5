//! Declarative message and enum definitions.
//!
//! ```ignore
//! message! {
//!     /// Optional docs.
//!     ThreadSasEntry = "thread_sas_entry" {
//!         1 ss_sp: required Uint64,
//!         2 ss_size: required Uint64,
//!         3 ss_flags: required Uint32,
//!     }
//! }
//! ```
//!
//! Each field is `NUMBER name: LABEL KIND` where LABEL is `required`,
//! `optional`, `repeated` or `packed` (repeated, encoded packed) and KIND is
//! one of the kinds in [`crate::wire`] (`Uint32`, `Sint64`, `Str`, `Bytes`,
//! `Enum`, `Msg<Other>`, ...). Fields must be listed in field-number order:
//! that is the order they are encoded in, as protobuf-c and python do.
//! Every struct also gets `pub unknown: UnknownFields`, re-emitted on encode.

#[doc(hidden)]
#[macro_export]
macro_rules! __field_ty {
    (required, $k:ty) => { <$k as $crate::wire::Kind>::T };
    (optional, $k:ty) => { ::std::option::Option<<$k as $crate::wire::Kind>::T> };
    (repeated, $k:ty) => { ::std::vec::Vec<<$k as $crate::wire::Kind>::T> };
    (packed, $k:ty) => { ::std::vec::Vec<<$k as $crate::wire::Kind>::T> };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __slot_ty {
    (required, $k:ty) => { ::std::option::Option<<$k as $crate::wire::Kind>::T> };
    (optional, $k:ty) => { ::std::option::Option<<$k as $crate::wire::Kind>::T> };
    (repeated, $k:ty) => { ::std::vec::Vec<<$k as $crate::wire::Kind>::T> };
    (packed, $k:ty) => { ::std::vec::Vec<<$k as $crate::wire::Kind>::T> };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __field_fn {
    (enc, required, $k:ty) => {
        $crate::wire::enc_required::<$k>
    };
    (enc, optional, $k:ty) => {
        $crate::wire::enc_optional::<$k>
    };
    (enc, repeated, $k:ty) => {
        $crate::wire::enc_repeated::<$k>
    };
    (enc, packed, $k:ty) => {
        $crate::wire::enc_packed::<$k>
    };
    (len, required, $k:ty) => {
        $crate::wire::len_required::<$k>
    };
    (len, optional, $k:ty) => {
        $crate::wire::len_optional::<$k>
    };
    (len, repeated, $k:ty) => {
        $crate::wire::len_repeated::<$k>
    };
    (len, packed, $k:ty) => {
        $crate::wire::len_packed::<$k>
    };
    (dec, required, $k:ty) => {
        $crate::wire::dec_single::<$k>
    };
    (dec, optional, $k:ty) => {
        $crate::wire::dec_single::<$k>
    };
    (dec, repeated, $k:ty) => {
        $crate::wire::dec_repeated::<$k>
    };
    (dec, packed, $k:ty) => {
        $crate::wire::dec_repeated::<$k>
    };
    (json, required, $k:ty) => {
        $crate::wire::json_required::<$k>
    };
    (json, optional, $k:ty) => {
        $crate::wire::json_optional::<$k>
    };
    (json, repeated, $k:ty) => {
        $crate::wire::json_repeated::<$k>
    };
    (json, packed, $k:ty) => {
        $crate::wire::json_repeated::<$k>
    };
    (from, required, $k:ty) => {
        $crate::wire::from_json_required::<$k>
    };
    (from, optional, $k:ty) => {
        $crate::wire::from_json_optional::<$k>
    };
    (from, repeated, $k:ty) => {
        $crate::wire::from_json_repeated::<$k>
    };
    (from, packed, $k:ty) => {
        $crate::wire::from_json_repeated::<$k>
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __finish {
    (required, $slot:expr, $msg:expr, $name:expr) => {
        match $slot {
            ::std::option::Option::Some(v) => v,
            ::std::option::Option::None => {
                return ::std::result::Result::Err($crate::wire::DecodeError::MissingRequired {
                    message: $msg,
                    field: $crate::wire::field_name($name),
                })
            }
        }
    };
    ($other:ident, $slot:expr, $msg:expr, $name:expr) => {
        $slot
    };
}

/// Declare protobuf messages; see the module docs for the syntax.
#[macro_export]
macro_rules! message {
    ($(
        $(#[$meta:meta])*
        $name:ident = $pname:literal {
            $( $(#[$fmeta:meta])* $num:literal $field:ident : $label:ident $kind:ty ),* $(,)?
        }
    )*) => {$(
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $crate::__field_ty!($label, $kind), )*
            /// Fields this schema does not know, kept for re-encoding.
            pub unknown: $crate::wire::UnknownFields,
        }

        impl $name {
            /// Field numbers and names, in encoding order.
            pub const FIELDS: &'static [(u32, &'static str)] = &[$( ($num, stringify!($field)) ),*];
        }

        impl $crate::wire::Message for $name {
            const NAME: &'static str = $pname;

            fn encode(&self, out: &mut ::std::vec::Vec<u8>) {
                $( $crate::__field_fn!(enc, $label, $kind)($num, &self.$field, out); )*
                $crate::wire::encode_unknown(&self.unknown, out);
            }

            fn encoded_len(&self) -> usize {
                0 $( + $crate::__field_fn!(len, $label, $kind)($num, &self.$field) )*
                    + $crate::wire::unknown_len(&self.unknown)
            }

            #[allow(unused_variables)]
            fn decode_depth(
                buf: &[u8],
                depth: u32,
            ) -> ::std::result::Result<Self, $crate::wire::DecodeError> {
                if depth > $crate::wire::MAX_DEPTH {
                    return ::std::result::Result::Err($crate::wire::DecodeError::TooDeep {
                        message: $pname,
                    });
                }
                let mut reader = $crate::wire::Reader::new(buf, $pname);
                $( let mut $field: $crate::__slot_ty!($label, $kind) = ::std::default::Default::default(); )*
                let mut unknown: $crate::wire::UnknownFields = ::std::vec::Vec::new();
                while !reader.is_empty() {
                    let (num, wt) = reader.tag()?;
                    match num {
                        $( $num => $crate::__field_fn!(dec, $label, $kind)(
                            &mut reader,
                            $crate::wire::field_name(stringify!($field)),
                            wt,
                            depth,
                            &mut $field,
                        )?, )*
                        _ => reader.unknown(num, wt, &mut unknown)?,
                    }
                }
                ::std::result::Result::Ok($name {
                    $( $field: $crate::__finish!($label, $field, $pname, stringify!($field)), )*
                    unknown,
                })
            }

            #[allow(unused_mut)]
            fn to_json(&self, cx: $crate::wire::Cx, out: &mut ::std::string::String) {
                let mut first = true;
                out.push('{');
                $( $crate::__field_fn!(json, $label, $kind)(&mut first, stringify!($field), &self.$field, cx, out); )*
                $crate::wire::json_unknown(&mut first, &self.unknown, out);
                out.push('}');
            }

            #[allow(unused_variables)]
            fn from_json(
                j: &$crate::wire::Json,
            ) -> ::std::result::Result<Self, $crate::wire::JsonErr> {
                let obj = $crate::wire::json_object(j)?;
                ::std::result::Result::Ok($name {
                    $( $field: $crate::__field_fn!(from, $label, $kind)(obj, $pname, stringify!($field))?, )*
                    unknown: $crate::wire::unknown_from_json(obj)?,
                })
            }
        }
    )*};
}

/// Declare a protobuf enum as a module of `i32` constants plus `name()`.
#[macro_export]
macro_rules! enumeration {
    ($(
        $(#[$meta:meta])*
        $name:ident { $( $var:ident = $val:literal ),* $(,)? }
    )*) => {$(
        $(#[$meta])*
        #[allow(non_upper_case_globals, non_snake_case, dead_code)]
        pub mod $name {
            $( pub const $var: i32 = $val; )*

            /// The symbolic name of a value (first one declared wins).
            #[allow(unreachable_patterns)]
            pub fn name(v: i32) -> ::std::option::Option<&'static str> {
                match v {
                    $( $val => ::std::option::Option::Some(stringify!($var)), )*
                    _ => ::std::option::Option::None,
                }
            }

            /// Type handle for `EnumOf<...>` fields.
            pub struct Names;
            impl $crate::wire::EnumNames for Names {
                fn name(v: i32) -> ::std::option::Option<&'static str> {
                    name(v)
                }
                fn value(n: &str) -> ::std::option::Option<i32> {
                    $( if n == stringify!($var) { return ::std::option::Option::Some($val); } )*
                    ::std::option::Option::None
                }
            }
        }
    )*};
}
